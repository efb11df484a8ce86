//! The swarm: several clients of one gateway working on one job. A job lists or hashes,
//! plans (see [`plan`]), and hands the units to [`run_units`], whose workers on every
//! connection share one queue.

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError},
    time::Instant,
};

use quicswarm_proto::{
    limits::{DEFAULT_MAX_REQUEST_ITEMS, MAX_RANGES_PER_FILE, MAX_RANGE_SIZE},
    path,
    transfer::{check_range_size, check_ranges, is_ranged, plan, range_count, Unit},
};

use super::{
    blocking,
    buffers::BufferPool,
    dest::{Destination, FileLocks},
    job::{run_units, Job, UnitEnd},
    pieces::PieceCache,
    units::{download_unit, upload_unit, DownloadCtx, UploadCtx},
    FileEntry, Need, Selector, TransferError, TransferOptions, TransferSummary,
};
use crate::{CallError, Client, ConnectError, Controller};

/// Several clients of one gateway working on one job.
#[derive(Debug, Clone)]
pub struct Swarm {
    clients: Vec<Client>,
}

impl Swarm {
    /// Opens up to `n` clients (connections) to the gateway at `addr`. When the gateway's
    /// handler pool fills up first, the swarm goes on with the clients it got (at least one).
    ///
    /// # Errors
    /// The first client's connection failure (a full pool among them).
    pub async fn connect(
        controller: &Controller,
        addr: &str,
        n: usize,
    ) -> Result<Self, ConnectError> {
        let first = controller.get_client(addr).await?;
        Self::around(controller, addr, first, n).await
    }

    /// A swarm of `client` and up to `n - 1` more clients of its gateway at `addr`, opened
    /// now; a full pool stops the opening early (the swarm goes on with what it got).
    ///
    /// # Errors
    /// An extra client's connection failure other than a full pool.
    pub async fn around(
        controller: &Controller,
        addr: &str,
        client: Client,
        n: usize,
    ) -> Result<Self, ConnectError> {
        let mut clients = Vec::with_capacity(n.max(1));
        clients.push(client);
        while clients.len() < n {
            match controller.get_client(addr).await {
                Ok(c) => clients.push(c),
                Err(ConnectError::PoolFull { size, .. }) => {
                    tracing::warn!(
                        got = clients.len(),
                        wanted = n,
                        pool = size,
                        "handler pool full: smaller swarm"
                    );
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Self { clients })
    }

    /// A swarm of existing clients (of the same gateway).
    pub fn new(clients: Vec<Client>) -> Self {
        Self { clients }
    }

    /// The clients.
    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    /// Closes every client, freeing their handler slots.
    pub async fn close(self) {
        for c in self.clients {
            let _ = c.close().await;
        }
    }

    /// Downloads the files of gateway root `root` picked by `selector` into `dest`, keeping
    /// their relative layout, mtime and permission bits. Running it again after an
    /// interruption moves only what is missing.
    ///
    /// # Errors
    /// [`TransferError::UnsafePath`] if the gateway names a file outside `dest` (nothing is
    /// written then); [`TransferError::Partial`] if some files failed (the others are stored);
    /// [`TransferError::AllConnectionsLost`]; listing errors.
    pub async fn download(
        &self,
        root: &str,
        selector: &Selector,
        dest: impl AsRef<Path>,
        options: &TransferOptions,
    ) -> Result<TransferSummary, TransferError> {
        let start = Instant::now();
        let mut listing = self
            .first_ok(|c| async move { c.list_with(root, selector, false).await })
            .await?;
        // A hostile gateway must not steer writes: check every name before writing anything.
        for e in &listing.entries {
            path::validate(&e.path).map_err(|err| TransferError::unsafe_path(&e.path, err))?;
        }
        let destination = Destination::new(dest.as_ref().to_path_buf(), FileLocks::for_download());
        let _stop = destination.stop_guard();
        let range_size = options.range_size.max(1);
        TransferError::check("range size", range_size, MAX_RANGE_SIZE)?;
        self.fetch_hashes(root, &destination, &mut listing.entries, range_size)
            .await?;
        let entries = Arc::new(listing.entries);
        let checked = {
            let (d, e) = (destination.clone(), entries.clone());
            blocking(move || {
                Ok(e.iter()
                    .map(|entry| d.need(entry, range_size))
                    .collect::<Vec<_>>())
            })
            .await?
        };
        // A file that cannot be placed (say, a symlink on its way) fails alone.
        let mut refused = Vec::new();
        let needs: Vec<Need> = checked
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                n.unwrap_or_else(|e| {
                    refused.push((i, e));
                    Need::Skip
                })
            })
            .collect();
        check_job_ranges(&entries, &needs, range_size)?;
        let mut job = Job::new(&entries, &needs, options, start);
        for (i, e) in refused {
            job.exclude(i, e);
        }
        let ctx_dest = destination.clone();
        let ctx = DownloadCtx {
            root: root.to_string(),
            entries: entries.clone(),
            dest: destination,
            range_size,
            buffers: self.range_buffers(range_size, options),
        };
        let job = self
            .execute(job, &needs, options, ctx, download_unit)
            .await?;
        // Ranges of a file that hit a full disk may have recreated its part file after it
        // was removed: clean up once every worker is done.
        let failed: Vec<(usize, TransferError)> = job
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if !failed.is_empty() {
            let (d, e) = (ctx_dest, entries.clone());
            let _ = blocking(move || {
                for (i, err) in failed {
                    d.discard_if_disk_full(&e[i], &err);
                }
                Ok(())
            })
            .await;
        }
        job.finish()
    }

    /// Uploads local files and folders (a folder travels with its name and everything below
    /// it) into `dest` below the gateway's upload folder, keeping layout, mtime and permission
    /// bits. Running it again after an interruption moves only what is missing.
    ///
    /// # Errors
    /// [`TransferError::UnsafePath`] for a local name that is not portable (nothing is sent);
    /// `PermissionDenied` when the gateway accepts no uploads; as
    /// [`download`](Self::download) otherwise.
    pub async fn upload(
        &self,
        paths: &[PathBuf],
        dest: &str,
        options: &TransferOptions,
    ) -> Result<TransferSummary, TransferError> {
        let start = Instant::now();
        if !dest.is_empty() {
            path::validate(dest).map_err(|e| TransferError::unsafe_path(dest, e))?;
        }
        let range_size = options.range_size;
        check_range_size(range_size)
            .map_err(|m| TransferError::Call(CallError::BadArgs(format!("upload options: {m}"))))?;
        let paths = paths.to_vec();
        // Pieces of big files hashed now, so that their ranges need no second hash.
        let pieces = Arc::new(PieceCache::default());
        let cache = pieces.clone();
        let (files, _skipped) =
            blocking(move || super::source::local_files(&paths, &cache)).await?;
        let (entries, locals): (Vec<FileEntry>, Vec<PathBuf>) = files.into_iter().unzip();
        for e in &entries {
            check_ranges(e.size, range_size).map_err(|asked| TransferError::LimitExceeded {
                limit: "ranges per file",
                max: MAX_RANGES_PER_FILE,
                asked,
            })?;
        }
        let mut needs = Vec::with_capacity(entries.len());
        for chunk in request_chunks(&entries, |e| e.path.len()) {
            let answer = self
                .first_ok(|c| async move { c.put_check(dest, chunk, range_size).await })
                .await?;
            needs.extend(answer);
        }
        check_job_ranges(&entries, &needs, range_size)?;
        let entries = Arc::new(entries);
        let job = Job::new(&entries, &needs, options, start);
        let ctx = UploadCtx {
            dest: dest.to_string(),
            entries: entries.clone(),
            locals,
            range_size,
            pieces,
            buffers: self.range_buffers(range_size, options),
        };
        let job = self.execute(job, &needs, options, ctx, upload_unit).await?;
        job.finish()
    }

    /// Buffers for a job's ranges (of at most [`MAX_RANGE_SIZE`], checked by the caller): as
    /// many kept as ranges can be in flight, one per worker.
    fn range_buffers(&self, range_size: u64, options: &TransferOptions) -> Arc<BufferPool> {
        let size = usize::try_from(range_size.min(MAX_RANGE_SIZE)).unwrap_or(usize::MAX);
        BufferPool::new(size, options.streams_per_client * self.clients.len())
    }

    /// Cuts a job into units and runs them on every client with `exec`.
    async fn execute<C, F, Fut>(
        &self,
        job: Job,
        needs: &[Need],
        options: &TransferOptions,
        ctx: C,
        exec: F,
    ) -> Result<Arc<Job>, TransferError>
    where
        C: Send + Sync + 'static,
        F: Fn(Client, Arc<C>, Arc<Job>, Unit) -> Fut + Copy + Send + Sync + 'static,
        Fut: Future<Output = UnitEnd> + Send + 'static,
    {
        let rs = options.range_size.max(1);
        // A batch is one request: within what a gateway takes by default.
        let units = plan(
            &job.sizes(),
            needs,
            rs,
            options.batch_bytes.min(MAX_RANGE_SIZE),
            options.batch_files.min(DEFAULT_MAX_REQUEST_ITEMS),
        );
        let (job, ctx) = (Arc::new(job), Arc::new(ctx));
        let for_units = job.clone();
        run_units(&self.clients, units, options, move |client, unit| {
            exec(client, ctx.clone(), for_units.clone(), unit)
        })
        .await?;
        Ok(job)
    }

    /// Asks the gateway for the hashes a download needs: of files already present here with
    /// the same size (skipped if the hash matches too) and of files big enough to travel in
    /// ranges (checked whole at the end). A fresh download of small files needs none, which
    /// spares the gateway reading every file twice.
    async fn fetch_hashes(
        &self,
        root: &str,
        dest: &Destination,
        entries: &mut [FileEntry],
        range_size: u64,
    ) -> Result<(), TransferError> {
        let wanted: Vec<String> = {
            let (d, e) = (dest.clone(), entries.to_vec());
            blocking(move || {
                Ok(e.into_iter()
                    .filter(|x| is_ranged(x.size, range_size) || d.has_same_size(x))
                    .map(|x| x.path)
                    .collect())
            })
            .await?
        };
        let mut hashed = Vec::new();
        // In requests the gateway takes: at most its default item count, about 512 KiB each.
        for chunk in request_chunks(&wanted, String::len) {
            let selector = Selector {
                paths: chunk.to_vec(),
                ..Selector::all()
            };
            let listing = self
                .first_ok(|c| {
                    let selector = &selector;
                    async move { c.list_with(root, selector, true).await }
                })
                .await?;
            hashed.extend(listing.entries);
        }
        let by_path: std::collections::HashMap<&str, &FileEntry> =
            hashed.iter().map(|e| (e.path.as_str(), e)).collect();
        for e in entries.iter_mut() {
            if let Some(h) = by_path.get(e.path.as_str()) {
                // Take the newer facts too, should the file have changed in between.
                *e = (*h).clone();
            }
        }
        Ok(())
    }

    /// Runs `op` on the first client for which it does not fail with a lost connection.
    async fn first_ok<'a, T, F, Fut>(&'a self, op: F) -> Result<T, TransferError>
    where
        F: Fn(&'a Client) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let mut last = None;
        for c in &self.clients {
            match op(c).await {
                Ok(v) => return Ok(v),
                Err(e @ CallError::ConnectionLost(_)) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or(
            TransferError::AllConnectionsLost { left: 0 },
            TransferError::from,
        ))
    }
}

/// Most ranges one job may plan (40 MB of plan; 4 TiB in 4 MiB ranges): a listing or an
/// answer that needs more is refused before anything is planned.
pub const MAX_JOB_RANGES: u64 = 1 << 20;

/// Checks the ranges a job would plan against [`MAX_JOB_RANGES`].
fn check_job_ranges(
    entries: &[FileEntry],
    needs: &[Need],
    range_size: u64,
) -> Result<(), TransferError> {
    let mut total = 0u64;
    for (e, need) in entries.iter().zip(needs) {
        total = total.saturating_add(match need {
            Need::Whole if is_ranged(e.size, range_size) => range_count(e.size, range_size),
            Need::Ranges(runs) => runs.iter().map(|r| u64::from(r.count)).sum(),
            _ => 0,
        });
    }
    TransferError::check("ranges per job", total, MAX_JOB_RANGES)
}

/// Bytes of the names in one request that a client cuts its requests to.
const REQUEST_NAME_BYTES: usize = 512 * 1024;

/// `items` cut into requests of at most the gateway's default item count and about
/// [`REQUEST_NAME_BYTES`] of names each.
fn request_chunks<T>(items: &[T], name_len: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let len = name_len(item) + 64;
        if i > start && (i - start >= DEFAULT_MAX_REQUEST_ITEMS || bytes + len > REQUEST_NAME_BYTES)
        {
            chunks.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < items.len() {
        chunks.push(&items[start..]);
    }
    chunks
}
