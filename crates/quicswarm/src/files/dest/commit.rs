//! Whole files: written under a temporary name, synced in batches (one `syncfs` per batch on
//! Linux), then renamed into place.

use super::no_follow;
use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Condvar, Mutex, OnceLock, PoisonError,
    },
};

use super::TransferError;

/// A temporary file beside its target, removed on drop unless committed.
#[derive(Debug)]
pub(super) struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    /// A new empty temporary file beside `target`, open for writing.
    pub(super) fn create(target: &Path) -> Result<(Self, File), TransferError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        static PID: OnceLock<u32> = OnceLock::new();
        let dir = target.parent().unwrap_or(Path::new("."));
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Unique per writer: concurrent writers of one name never share a temp file.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = *PID.get_or_init(std::process::id);
        let path = dir.join(format!(".{name}.{pid}-{n}.qs-tmp"));
        // Exclusive and not through a symlink: a name planted in the folder is never written.
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        no_follow(&mut options);
        let file = options
            .open(&path)
            .map_err(TransferError::io("creating", &path))?;
        Ok((Self { path: Some(path) }, file))
    }

    pub(super) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    pub(super) fn commit(mut self, target: &Path) -> Result<(), TransferError> {
        let path = self.path.take().unwrap_or_default();
        fs::rename(&path, target).map_err(|e| {
            let _ = fs::remove_file(&path);
            TransferError::io("renaming", &path)(e)
        })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

type Staged = Result<(TempFile, PathBuf), TransferError>;

/// Group commit of staged files: whoever arrives while no commit runs becomes the leader and
/// commits every batch waiting (one sync for all of them, then the renames); the others wait
/// for their results. Concurrent batches thus share their syncs instead of queueing on them.
#[derive(Debug, Default)]
pub(super) struct Committer {
    state: Mutex<CommitState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct CommitState {
    waiting: Vec<(u64, Vec<Staged>)>,
    busy: bool,
    next_ticket: u64,
    results: HashMap<u64, Vec<Result<(), TransferError>>>,
}

impl Committer {
    pub(super) fn commit(&self, staged: Vec<Staged>) -> Vec<Result<(), TransferError>> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.waiting.push((ticket, staged));
        loop {
            if let Some(results) = st.results.remove(&ticket) {
                return results;
            }
            if st.busy {
                st = self.done.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            st.busy = true;
            let group = std::mem::take(&mut st.waiting);
            drop(st);
            let done = commit_group(group);
            st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            st.results.extend(done);
            st.busy = false;
            self.done.notify_all();
        }
    }
}

/// Syncs every staged file (one `syncfs` per filesystem on Linux), renames them, then syncs
/// their folders.
fn commit_group(group: Vec<(u64, Vec<Staged>)>) -> Vec<(u64, Vec<Result<(), TransferError>>)> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (_, staged) in &group {
        for (_, target) in staged.iter().flatten() {
            if let Some(dir) = target.parent() {
                if !dirs.iter().any(|d| d == dir) {
                    dirs.push(dir.to_path_buf());
                }
            }
        }
    }
    let synced = sync_data_in(&dirs);
    let results = group
        .into_iter()
        .map(|(ticket, staged)| {
            let results = staged
                .into_iter()
                .map(|s| {
                    let (temp, target) = s?;
                    // Never rename unsynced data into place.
                    synced.clone()?;
                    temp.commit(&target)
                })
                .collect();
            (ticket, results)
        })
        .collect();
    for dir in &dirs {
        sync_dir(dir);
    }
    results
}

/// Makes the data of files written in `dirs` durable: one `syncfs` per filesystem on Linux,
/// an `fsync` of every file elsewhere.
fn sync_data_in(dirs: &[PathBuf]) -> Result<(), TransferError> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let mut devices = Vec::new();
        for dir in dirs {
            let f = File::open(dir).map_err(TransferError::io("opening", dir))?;
            let dev = f
                .metadata()
                .map_err(TransferError::io("inspecting", dir))?
                .dev();
            if !devices.contains(&dev) {
                devices.push(dev);
                rustix::fs::syncfs(&f).map_err(|e| TransferError::io("syncing", dir)(e.into()))?;
            }
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        for dir in dirs {
            for entry in fs::read_dir(dir)
                .map_err(TransferError::io("listing", dir))?
                .flatten()
            {
                let p = entry.path();
                if p.extension().is_some_and(|x| x == "qs-tmp") {
                    File::open(&p)
                        .and_then(|f| f.sync_all())
                        .map_err(TransferError::io("syncing", &p))?;
                }
            }
        }
        Ok(())
    }
}

/// Makes renames in `dir` durable; best effort (not every platform can sync a folder).
pub(super) fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}
