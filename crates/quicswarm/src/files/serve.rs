//! The gateway side of file requests: `List`, `Get`, `PutCheck` and `Put`.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use crate::{
    ended::{Ended, Reply},
    transport::SendStream,
};
use bytes::Bytes;
use quicswarm_proto::{
    limits::MAX_RANGES_PER_FILE,
    path,
    transfer::{
        check_range_size, check_ranges, FileEntry, FileFrame, GetItem, ListFrame, Need, PutItem,
        Selector, LIST_CHUNK,
    },
    ErrorCode, ErrorReply, Response,
};

use super::{
    blocking,
    dest::{Destination, FileLocks, WholeFile},
    select, source,
    tree::PieceCache,
    TransferError,
};
use crate::budget::ConnectionBudget;
use crate::io::{frame, frame_into, write_frame, FrameReader};

/// Largest whole file or range sent in one piece.
pub(crate) const MAX_PIECE: u64 = quicswarm_proto::limits::MAX_RANGE_SIZE;
/// Items read per blocking call when serving a `Get`.
const READ_GROUP: usize = 64;
/// Bytes read ahead per blocking call when serving a `Get` of small files: the client takes
/// them before more is read (a bigger item is read alone, charged at its own size).
const READ_AHEAD: u64 = 4 << 20;
/// Bytes of a listing frame, at most (estimated from its paths).
const LIST_FRAME_BYTES: usize = 1 << 20;
/// Per-entry bytes of a listing frame beyond its path.
const ENTRY_BYTES: usize = 64;

/// What one operation may use: the files, its connection's budget, the item limit.
#[derive(Clone, Copy)]
pub(crate) struct Serve<'a> {
    pub(crate) files: &'a FileConfig,
    pub(crate) budget: &'a ConnectionBudget,
    /// `Limits::max_request_items`.
    pub(crate) max_items: usize,
}

/// What a gateway serves and accepts.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileConfig {
    pub(crate) roots: BTreeMap<String, PathBuf>,
    pub(crate) upload_dir: Option<PathBuf>,
    pub(crate) locks: Arc<FileLocks>,
    /// Piece hashes of files hashed for listings, for their ranges.
    pub(crate) pieces: Arc<PieceCache>,
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(ErrorReply::new(code, message))
}

impl FileConfig {
    fn root(&self, name: &str) -> Result<PathBuf, Response> {
        self.roots
            .get(name)
            .cloned()
            .ok_or_else(|| error(ErrorCode::NotFound, format!("no root named {name:?}")))
    }

    fn upload_dest(&self, dest: &str) -> Result<Destination, Response> {
        let Some(dir) = &self.upload_dir else {
            return Err(error(
                ErrorCode::PermissionDenied,
                "this gateway accepts no uploads (no upload folder)",
            ));
        };
        let mut root = dir.clone();
        if !dest.is_empty() {
            let parts = path::validate(dest).map_err(|e| {
                error(
                    ErrorCode::PermissionDenied,
                    format!("refused destination {dest:?}: {e}"),
                )
            })?;
            // Folders on the way are checked by `Destination::target` for each file; the
            // destination itself must not be a symlink either.
            for p in parts {
                root.push(p);
                if std::fs::symlink_metadata(&root).is_ok_and(|m| !m.is_dir()) {
                    return Err(error(
                        ErrorCode::PermissionDenied,
                        format!("{dest:?} is not a folder"),
                    ));
                }
            }
        }
        Ok(Destination::new(root, self.locks.clone()))
    }
}

/// A `LimitExceeded` reply unless `asked <= max`.
fn check(limit: &'static str, asked: usize, max: usize) -> Result<(), Response> {
    TransferError::check(limit, asked as u64, max as u64).map_err(|e| Response::Error(e.to_reply()))
}

pub(crate) async fn list(
    ctx: Serve<'_>,
    send: &mut SendStream,
    root: String,
    selector: Selector,
    hash: bool,
) -> Reply {
    let dir = match ctx.files.root(&root) {
        Ok(dir) => dir,
        Err(reply) => return write_frame(send, &reply).await.map_err(Ended::from),
    };
    let max = ctx.max_items;
    let plan = match blocking(move || select::plan_list(&dir, &selector, max)).await {
        Ok(plan) => plan,
        Err(e) => {
            return write_frame(send, &Response::Error(e.to_reply()))
                .await
                .map_err(Ended::from)
        }
    };
    write_frame(send, &Response::Accepted)
        .await
        .map_err(Ended::from)?;
    // The walk runs on a blocking thread and hands over one frame at a time: it waits while
    // the client reads, and stops when the client is gone (the receiver is dropped).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ListFrame>(1);
    let pieces = hash.then(|| ctx.files.pieces.clone());
    tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::new();
        let mut bytes = 0;
        let walked = select::walk(plan, pieces.as_deref(), &mut |entry| {
            bytes += entry.path.len() + ENTRY_BYTES;
            chunk.push(entry);
            if chunk.len() < LIST_CHUNK && bytes < LIST_FRAME_BYTES {
                return true;
            }
            bytes = 0;
            tx.blocking_send(ListFrame::Entries(std::mem::take(&mut chunk)))
                .is_ok()
        });
        let last = match walked {
            Ok(skipped) => {
                if !chunk.is_empty() && tx.blocking_send(ListFrame::Entries(chunk)).is_err() {
                    return;
                }
                ListFrame::End { skipped }
            }
            Err(e) => ListFrame::Error(e.to_reply()),
        };
        let _ = tx.blocking_send(last);
    });
    while let Some(frame) = rx.recv().await {
        write_frame(send, &frame).await.map_err(Ended::from)?;
    }
    Ok(())
}

pub(crate) async fn get(
    ctx: Serve<'_>,
    send: &mut SendStream,
    root: String,
    items: Vec<GetItem>,
) -> Reply {
    let dir = match ctx.files.root(&root) {
        Ok(dir) => dir,
        Err(reply) => return write_frame(send, &reply).await.map_err(Ended::from),
    };
    if let Err(reply) = check("get items", items.len(), ctx.max_items) {
        return write_frame(send, &reply).await.map_err(Ended::from);
    }
    write_frame(send, &Response::Accepted)
        .await
        .map_err(Ended::from)?;
    let items = Arc::new(items);
    let root = Arc::new(source::Root::new(dir));
    let mut next = 0usize;
    let allowance = READ_AHEAD.min(ctx.budget.per_operation());
    while next < items.len() {
        // Read only what the budget holds now; the next group is read once this one has been
        // handed to the transport, i.e. as fast as the client takes it.
        let charge = match ctx.budget.charge("get read-ahead", allowance).await {
            Ok(charge) => charge,
            Err(reply) => {
                let _ = send.reset(reply.code);
                return Err(Ended::Reset(reply));
            }
        };
        let (items2, root2, pieces) = (items.clone(), root.clone(), ctx.files.pieces.clone());
        let group = tokio::task::spawn_blocking(move || {
            read_group(&root2, &items2[next..], allowance, &pieces)
        })
        .await
        .map_err(Ended::from)?;
        let index = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        if let Some(large) = group.large {
            // The next item alone is larger than the allowance: sent chunk by chunk.
            drop(charge);
            send_streamed(ctx, send, large, index(next)).await?;
            next += 1;
            continue;
        }
        for read in group.reads {
            match read {
                Ok(read) => {
                    let e = &read.entry;
                    let header = FileFrame::Data {
                        index: index(next),
                        len: read.data.len() as u64,
                        size: e.size,
                        mtime: e.mtime,
                        mode: e.mode,
                    };
                    let mut trailer = Vec::with_capacity(40);
                    frame_into(&FileFrame::Hash(read.hash), &mut trailer);
                    send.write_all_chunks(&mut [frame(&header), read.data, Bytes::from(trailer)])
                        .await
                        .map_err(Ended::from)?;
                }
                Err(e) => {
                    let frame = FileFrame::Failed {
                        index: index(next),
                        error: e.to_reply(),
                    };
                    write_frame(send, &frame).await.map_err(Ended::from)?;
                }
            }
            next += 1;
        }
        drop(charge);
    }
    write_frame(send, &FileFrame::End)
        .await
        .map_err(Ended::from)
}

/// Sends one item larger than an operation reads ahead, a chunk at a time: each chunk is
/// read (and charged) only when the one before is on its way.
async fn send_streamed(
    ctx: Serve<'_>,
    send: &mut SendStream,
    large: source::Streamed,
    index: u32,
) -> Reply {
    let (entry, len) = large.header();
    let header = FileFrame::Data {
        index,
        len,
        size: entry.size,
        mtime: entry.mtime,
        mode: entry.mode,
    };
    write_frame(send, &header).await.map_err(Ended::from)?;
    let chunk = READ_AHEAD.min(ctx.budget.per_operation());
    let mut large = large;
    while large.left() > 0 {
        let charge = match ctx
            .budget
            .charge("get read-ahead", chunk.min(large.left()))
            .await
        {
            Ok(charge) => charge,
            Err(reply) => {
                let _ = send.reset(reply.code);
                return Err(Ended::Reset(reply));
            }
        };
        let (back, data) = tokio::task::spawn_blocking(move || {
            let data = large.next_chunk(chunk);
            (large, data)
        })
        .await
        .map_err(Ended::from)?;
        large = back;
        match data {
            Ok(data) => send.write_chunk(data).await.map_err(Ended::from)?,
            Err(e) => {
                // The length is promised already: a file that shrank ends the request.
                let reply = e.to_reply();
                let _ = send.reset(reply.code);
                return Err(Ended::Reset(reply));
            }
        }
        drop(charge);
    }
    write_frame(send, &FileFrame::Hash(large.finish()))
        .await
        .map_err(Ended::from)
}

/// Items read by one blocking call.
struct Group {
    reads: Vec<Result<source::Read, TransferError>>,
    /// With no reads: the next item, larger than the allowance, opened.
    large: Option<source::Streamed>,
}

/// Reads the first items of `items`, up to [`READ_GROUP`] of them and `allowance` bytes.
fn read_group(
    root: &source::Root,
    items: &[GetItem],
    allowance: u64,
    pieces: &PieceCache,
) -> Group {
    let mut reads = Vec::new();
    let mut used = 0u64;
    for item in items.iter().take(READ_GROUP) {
        match source::open(root, &item.path, item.range, MAX_PIECE) {
            Err(e) => reads.push(Err(e)),
            Ok(opened) if used + opened.len > allowance => {
                if reads.is_empty() {
                    return Group {
                        reads,
                        large: Some(source::Streamed::new(opened, pieces)),
                    };
                }
                break;
            }
            Ok(opened) => {
                used += opened.len;
                reads.push(source::read_opened(opened, pieces));
            }
        }
    }
    Group { reads, large: None }
}

pub(crate) async fn put_check(
    ctx: Serve<'_>,
    send: &mut SendStream,
    dest: String,
    entries: Vec<FileEntry>,
    range_size: u64,
) -> Reply {
    let dest = match ctx.files.upload_dest(&dest) {
        Ok(d) => d,
        Err(reply) => return write_frame(send, &reply).await.map_err(Ended::from),
    };
    if let Err(reply) = check("put-check entries", entries.len(), ctx.max_items)
        .and_then(|()| check_upload(&entries, range_size))
    {
        return write_frame(send, &reply).await.map_err(Ended::from);
    }
    let needs = blocking(move || {
        let mut runs_left = MAX_RUNS_PER_ANSWER;
        entries
            .iter()
            .map(|e| {
                let need = dest.need(e, range_size)?;
                // Bounded answer: past its share of runs, a file is sent whole again.
                Ok(match need {
                    Need::Ranges(runs) if runs.len() > runs_left => Need::Whole,
                    Need::Ranges(runs) => {
                        runs_left -= runs.len();
                        Need::Ranges(runs)
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<Need>, _>>()
    })
    .await;
    let reply = match needs {
        Ok(needs) => Response::Needs(needs),
        Err(e) => Response::Error(e.to_reply()),
    };
    write_frame(send, &reply).await.map_err(Ended::from)
}

/// Most runs of missing ranges in one `Needs` answer (a few hundred KiB).
const MAX_RUNS_PER_ANSWER: usize = 65_536;

/// The declared sizes of an upload, checked before anything is planned or allocated for
/// them: a valid range size, no file cut into more ranges than the protocol allows, no path
/// twice (each would be hashed again).
fn check_upload(entries: &[FileEntry], range_size: u64) -> Result<(), Response> {
    check_ranged(entries.iter(), range_size)?;
    let mut paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    paths.sort_unstable();
    if let Some(w) = paths.windows(2).find(|w| w[0] == w[1]) {
        let message = format!("{:?} is named twice", w[0]);
        return Err(Response::Error(ErrorReply::new(
            ErrorCode::BadArgs,
            message,
        )));
    }
    Ok(())
}

/// The range size of an upload, and the declared size of each of `entries`, against the
/// protocol's bounds (before anything is planned for them).
fn check_ranged<'a>(
    mut entries: impl Iterator<Item = &'a FileEntry>,
    range_size: u64,
) -> Result<(), Response> {
    check_range_size(range_size)
        .map_err(|m| Response::Error(ErrorReply::new(ErrorCode::BadArgs, m)))?;
    entries.try_for_each(|e| {
        check_ranges(e.size, range_size).map(drop).map_err(|asked| {
            let error = TransferError::LimitExceeded {
                limit: "ranges per file",
                max: MAX_RANGES_PER_FILE,
                asked,
            };
            Response::Error(ErrorReply::new(
                ErrorCode::LimitExceeded,
                format!("{:?}: {error}", e.path),
            ))
        })
    })
}

pub(crate) async fn put(
    ctx: Serve<'_>,
    send: &mut SendStream,
    reader: &mut FrameReader,
    dest: String,
    items: Vec<PutItem>,
    range_size: u64,
) -> Reply {
    let dest = match ctx.files.upload_dest(&dest) {
        Ok(d) => d,
        Err(reply) => {
            reader.stop(ErrorCode::PermissionDenied);
            return write_frame(send, &reply).await.map_err(Ended::from);
        }
    };
    let _stop = dest.stop_guard();
    let len_of = |i: &PutItem| i.range.map_or(i.entry.size, |r| r.len);
    let total = items.iter().map(len_of).fold(0u64, u64::saturating_add);
    let checked = check("put items", items.len(), ctx.max_items).and_then(|()| {
        if let Some(big) = items.iter().find(|i| len_of(i) > MAX_PIECE) {
            let error = TransferError::LimitExceeded {
                limit: "put piece bytes",
                max: MAX_PIECE,
                asked: len_of(big),
            };
            return Err(Response::Error(error.to_reply()));
        }
        let mut ranged = items.iter().filter(|i| i.range.is_some()).peekable();
        if ranged.peek().is_none() {
            return Ok(());
        }
        check_ranged(ranged.map(|i| &i.entry), range_size)
    });
    // The bytes are held until written: charged before any is read.
    let charge = match checked {
        Ok(()) => ctx
            .budget
            .charge("put bytes", total)
            .await
            .map_err(Response::Error),
        Err(reply) => Err(reply),
    };
    let _charge = match charge {
        Ok(charge) => charge,
        Err(reply) => {
            let code = match &reply {
                Response::Error(e) => e.code,
                _ => ErrorCode::LimitExceeded,
            };
            reader.stop(code);
            return write_frame(send, &reply).await.map_err(Ended::from);
        }
    };
    let mut results: Vec<Option<ErrorReply>> = vec![None; items.len()];
    let mut whole = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let len = item.range.map_or(item.entry.size, |r| r.len);
        let data = match reader.read_bytes(len as usize).await {
            Ok(data) => data,
            // The client vanished or broke framing: nothing of this request is stored.
            Err(e) => return Err(e.into()),
        };
        match item.range {
            None => whole.push((
                i,
                WholeFile {
                    entry: item.entry,
                    data,
                    hash: item.hash,
                },
            )),
            Some(range) => {
                let d = dest.clone();
                let result = blocking(move || {
                    d.write_range(&item.entry, range, range_size, &data, &item.hash)
                })
                .await;
                results[i] = result.err().map(|e| e.to_reply());
            }
        }
    }
    if !whole.is_empty() {
        let d = dest.clone();
        let (indices, batch): (Vec<usize>, Vec<WholeFile>) = whole.into_iter().unzip();
        let stored = tokio::task::spawn_blocking(move || d.write_batch(batch))
            .await
            .map_err(Ended::from)?;
        for (i, r) in indices.into_iter().zip(stored) {
            results[i] = r.err().map(|e| e.to_reply());
        }
    }
    write_frame(send, &Response::Stored(results))
        .await
        .map_err(Ended::from)
}
