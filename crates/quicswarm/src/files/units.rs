//! One unit of a transfer, on one connection: a batch of small files or a range of a big
//! one, downloaded or uploaded and stored.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use quicswarm_proto::transfer::{ByteRange, FileEntry, GetItem, PutItem, Unit};

use super::{
    blocking,
    buffers::BufferPool,
    dest::{Destination, WholeFile},
    job::{Job, UnitEnd},
    join_error,
    pieces::PieceCache,
    range_hash, source, TransferError,
};
use crate::{CallError, Client};

/// Whether an error means the connection is gone (retry elsewhere) rather than a failure of
/// this unit's files.
fn is_lost(e: &CallError) -> bool {
    matches!(e, CallError::ConnectionLost(_) | CallError::ShuttingDown)
}

pub(super) struct DownloadCtx {
    pub(super) root: String,
    pub(super) entries: Arc<Vec<FileEntry>>,
    pub(super) dest: Destination,
    pub(super) range_size: u64,
    /// What ranges are received into: one buffer per range in flight.
    pub(super) buffers: Arc<BufferPool>,
}

pub(super) async fn download_unit(
    client: Client,
    ctx: Arc<DownloadCtx>,
    job: Arc<Job>,
    unit: Unit,
) -> UnitEnd {
    match unit {
        Unit::Batch(indices) => {
            let items: Vec<GetItem> = indices
                .iter()
                .map(|&i| GetItem {
                    path: ctx.entries[i].path.clone(),
                    range: None,
                })
                .collect();
            let received = match client.get_files(&ctx.root, &items, None).await {
                Ok(r) => r,
                Err(e) if is_lost(&e) => return UnitEnd::Lost,
                Err(e) => {
                    for &i in &indices {
                        job.fail(i, e.clone());
                    }
                    return UnitEnd::Done;
                }
            };
            let mut batch = Vec::new();
            let mut batch_indices = Vec::new();
            for (&i, r) in indices.iter().zip(received) {
                match r {
                    Ok(r) => {
                        // The file as it was when read (it may have changed since the listing).
                        let entry = FileEntry {
                            path: ctx.entries[i].path.clone(),
                            size: r.size,
                            mtime: r.mtime,
                            mode: r.mode,
                            hash: Some(r.hash),
                        };
                        batch_indices.push(i);
                        batch.push(WholeFile {
                            entry,
                            data: r.data,
                            hash: r.hash,
                        });
                    }
                    Err(reply) => job.fail(i, CallError::from(reply)),
                }
            }
            let sizes: Vec<u64> = batch.iter().map(|f| f.data.len() as u64).collect();
            let dest = ctx.dest.clone();
            let results = match tokio::task::spawn_blocking(move || dest.write_batch(batch)).await {
                Ok(r) => r,
                Err(e) => {
                    for &i in &batch_indices {
                        job.fail(i, join_error(&e));
                    }
                    return UnitEnd::Done;
                }
            };
            for ((i, size), result) in batch_indices.into_iter().zip(sizes).zip(results) {
                match result {
                    Ok(()) => job.stored(i, size),
                    Err(e) => job.fail(i, e),
                }
            }
            UnitEnd::Done
        }
        Unit::Range { file, range } => {
            let entry = &ctx.entries[file];
            let items = [GetItem {
                path: entry.path.clone(),
                range: Some(range),
            }];
            let received = match client
                .get_files(&ctx.root, &items, Some(&ctx.buffers))
                .await
            {
                Ok(mut r) => r.pop(),
                Err(e) if is_lost(&e) => return UnitEnd::Lost,
                Err(e) => {
                    job.fail(file, e.clone());
                    return UnitEnd::Done;
                }
            };
            match received {
                Some(Ok(r)) if r.size == entry.size => {
                    let (dest, entry2, rs) = (ctx.dest.clone(), entry.clone(), ctx.range_size);
                    let stored =
                        blocking(move || dest.write_range(&entry2, range, rs, &r.data, &r.hash))
                            .await;
                    match stored {
                        Ok(_complete) => job.range_stored(file, range.len),
                        Err(e) => job.fail(file, e),
                    }
                }
                Some(Ok(r)) => job.fail(
                    file,
                    TransferError::Integrity {
                        path: entry.path.clone(),
                        detail: format!(
                            "changed during the transfer ({} → {} bytes)",
                            entry.size, r.size
                        ),
                    },
                ),
                Some(Err(reply)) => job.fail(file, CallError::from(reply)),
                None => job.fail(file, CallError::Protocol("no answer for the range".into())),
            }
            UnitEnd::Done
        }
    }
}

pub(super) struct UploadCtx {
    pub(super) dest: String,
    pub(super) entries: Arc<Vec<FileEntry>>,
    pub(super) locals: Vec<PathBuf>,
    pub(super) range_size: u64,
    pub(super) pieces: Arc<PieceCache>,
    /// What ranges are read into: one buffer per range in flight.
    pub(super) buffers: Arc<BufferPool>,
}

/// Reads local bytes for an upload unit (a whole file, or one range) with their hash: BLAKE3
/// of a whole file, [`range_hash`] of a range (from `pieces` when they know the file).
fn read_local(
    path: &Path,
    range: Option<ByteRange>,
    (pieces, buffers): (&PieceCache, &Arc<BufferPool>),
) -> Result<(Bytes, quicswarm_proto::transfer::Hash), TransferError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(TransferError::io("opening", path))?;
    match range {
        None => {
            let mut data = Vec::new();
            f.read_to_end(&mut data)
                .map_err(TransferError::io("reading", path))?;
            let hash = *blake3::hash(&data).as_bytes();
            Ok((data.into(), hash))
        }
        Some(r) => {
            let meta = f
                .metadata()
                .map_err(TransferError::io("inspecting", path))?;
            let data = source::read_exact_at(&f, r.offset, r.len, buffers)
                .map_err(TransferError::io("reading", path))?;
            let hash = pieces
                .range(path, &meta, r.offset, r.len)
                .unwrap_or_else(|| range_hash(r.offset, &data));
            Ok((data, hash))
        }
    }
}

pub(super) async fn upload_unit(
    client: Client,
    ctx: Arc<UploadCtx>,
    job: Arc<Job>,
    unit: Unit,
) -> UnitEnd {
    let (indices, range) = match unit {
        Unit::Batch(indices) => (indices, None),
        Unit::Range { file, range } => (vec![file], Some(range)),
    };
    let reads: Vec<(usize, PathBuf)> = indices
        .iter()
        .map(|&i| (i, ctx.locals[i].clone()))
        .collect();
    let (pieces, buffers) = (ctx.pieces.clone(), ctx.buffers.clone());
    let read = blocking(move || {
        Ok(reads
            .into_iter()
            .map(|(i, p)| (i, read_local(&p, range, (&pieces, &buffers))))
            .collect::<Vec<_>>())
    })
    .await;
    let Ok(read) = read else { return UnitEnd::Done };
    let mut items = Vec::new();
    let mut data = Vec::new();
    let mut sent = Vec::new();
    for (i, bytes) in read {
        let entry = &ctx.entries[i];
        match bytes {
            Ok((bytes, hash)) => {
                let mut entry = entry.clone();
                if range.is_none() {
                    // Whole files carry what was read now, should the file have changed.
                    entry.size = bytes.len() as u64;
                    entry.hash = Some(hash);
                }
                items.push(PutItem { entry, range, hash });
                sent.push((i, bytes.len() as u64));
                data.push(bytes);
            }
            Err(e) => job.fail(i, e),
        }
    }
    if items.is_empty() {
        return UnitEnd::Done;
    }
    match client
        .put_files(&ctx.dest, items, data, ctx.range_size)
        .await
    {
        Ok(results) => {
            for ((i, len), result) in sent.into_iter().zip(results) {
                match result {
                    None if range.is_some() => job.range_stored(i, len),
                    None => job.stored(i, len),
                    Some(reply) => job.fail(i, CallError::from(reply)),
                }
            }
            UnitEnd::Done
        }
        Err(e) if is_lost(&e) => UnitEnd::Lost,
        Err(e) => {
            for (i, _) in sent {
                job.fail(i, e.clone());
            }
            UnitEnd::Done
        }
    }
}
