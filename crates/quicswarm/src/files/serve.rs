//! The gateway side of file requests: `List`, `Get`, `PutCheck` and `Put`.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use crate::transport::SendStream;
use bytes::Bytes;
use quicswarm_proto::{
    path,
    transfer::{FileEntry, FileFrame, GetItem, ListFrame, Need, PutItem, Selector, LIST_CHUNK},
    ErrorCode, ErrorReply, Response,
};

use super::{
    blocking,
    dest::{Destination, FileLocks, WholeFile},
    source,
    tree::PieceCache,
};
use crate::io::{frame, frame_into, write_frame, FrameReader};

/// Most items in one `Get` or `Put` request.
pub(crate) const MAX_ITEMS: usize = 4096;
/// Largest whole file or range sent in one piece.
pub(crate) const MAX_PIECE: u64 = 64 * 1024 * 1024;
/// Most bytes in one `Put` request.
pub(crate) const MAX_PUT_BYTES: u64 = 64 * 1024 * 1024;
/// Items read per blocking call when serving a `Get`.
const READ_GROUP: usize = 64;

/// What a gateway serves and accepts.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileConfig {
    pub(crate) roots: BTreeMap<String, PathBuf>,
    pub(crate) upload_dir: Option<PathBuf>,
    pub(crate) locks: Arc<FileLocks>,
    /// Piece hashes of files hashed for listings, for their ranges.
    pub(crate) pieces: Arc<PieceCache>,
}

type Reply = Result<(), ()>;

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

pub(crate) async fn list(
    files: &FileConfig,
    send: &mut SendStream,
    root: String,
    selector: Selector,
    hash: bool,
) -> Reply {
    let dir = match files.root(&root) {
        Ok(dir) => dir,
        Err(reply) => return write_frame(send, &reply).await.map_err(drop),
    };
    let pieces = hash.then(|| files.pieces.clone());
    let listing = blocking(move || source::list(&dir, &selector, pieces.as_deref())).await;
    let (entries, skipped) = match listing {
        Ok(v) => v,
        Err(e) => {
            return write_frame(send, &Response::Error(e.to_reply()))
                .await
                .map_err(drop)
        }
    };
    write_frame(send, &Response::Accepted).await.map_err(drop)?;
    for chunk in entries.chunks(LIST_CHUNK) {
        write_frame(send, &ListFrame::Entries(chunk.to_vec()))
            .await
            .map_err(drop)?;
    }
    write_frame(send, &ListFrame::End { skipped })
        .await
        .map_err(drop)
}

pub(crate) async fn get(
    files: &FileConfig,
    send: &mut SendStream,
    root: String,
    items: Vec<GetItem>,
) -> Reply {
    let dir = match files.root(&root) {
        Ok(dir) => dir,
        Err(reply) => return write_frame(send, &reply).await.map_err(drop),
    };
    if items.len() > MAX_ITEMS {
        let reply = error(
            ErrorCode::FrameTooLarge,
            format!("at most {MAX_ITEMS} items per request"),
        );
        return write_frame(send, &reply).await.map_err(drop);
    }
    write_frame(send, &Response::Accepted).await.map_err(drop)?;
    let mut index = 0u32;
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let group: Vec<GetItem> = items.by_ref().take(READ_GROUP).collect();
        let (dir, pieces) = (dir.clone(), files.pieces.clone());
        let reads = tokio::task::spawn_blocking(move || {
            let root = source::Root::new(dir);
            group
                .iter()
                .map(|item| source::read(&root, &item.path, item.range, MAX_PIECE, &pieces))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(drop)?;
        for read in reads {
            match read {
                Ok(read) => {
                    let e = &read.entry;
                    let header = FileFrame::Data {
                        index,
                        len: read.data.len() as u64,
                        size: e.size,
                        mtime: e.mtime,
                        mode: e.mode,
                    };
                    let mut trailer = Vec::with_capacity(40);
                    frame_into(&FileFrame::Hash(read.hash), &mut trailer);
                    send.write_all_chunks(&mut [frame(&header), read.data, Bytes::from(trailer)])
                        .await
                        .map_err(drop)?;
                }
                Err(e) => {
                    let frame = FileFrame::Failed {
                        index,
                        error: e.to_reply(),
                    };
                    write_frame(send, &frame).await.map_err(drop)?;
                }
            }
            index += 1;
        }
    }
    write_frame(send, &FileFrame::End).await.map_err(drop)
}

pub(crate) async fn put_check(
    files: &FileConfig,
    send: &mut SendStream,
    dest: String,
    entries: Vec<FileEntry>,
    range_size: u64,
) -> Reply {
    let dest = match files.upload_dest(&dest) {
        Ok(d) => d,
        Err(reply) => return write_frame(send, &reply).await.map_err(drop),
    };
    let needs = blocking(move || {
        entries
            .iter()
            .map(|e| dest.need(e, range_size))
            .collect::<Result<Vec<Need>, _>>()
    })
    .await;
    let reply = match needs {
        Ok(needs) => Response::Needs(needs),
        Err(e) => Response::Error(e.to_reply()),
    };
    write_frame(send, &reply).await.map_err(drop)
}

pub(crate) async fn put(
    files: &FileConfig,
    send: &mut SendStream,
    reader: &mut FrameReader,
    dest: String,
    items: Vec<PutItem>,
    range_size: u64,
) -> Reply {
    let dest = match files.upload_dest(&dest) {
        Ok(d) => d,
        Err(reply) => {
            reader.stop(ErrorCode::PermissionDenied);
            return write_frame(send, &reply).await.map_err(drop);
        }
    };
    let total: u64 = items
        .iter()
        .map(|i| i.range.map_or(i.entry.size, |r| r.len))
        .sum();
    if items.len() > MAX_ITEMS
        || total > MAX_PUT_BYTES
        || items
            .iter()
            .any(|i| i.range.map_or(i.entry.size, |r| r.len) > MAX_PIECE)
    {
        reader.stop(ErrorCode::FrameTooLarge);
        let reply = error(
            ErrorCode::FrameTooLarge,
            format!("at most {MAX_ITEMS} items and {MAX_PUT_BYTES} bytes per request"),
        );
        return write_frame(send, &reply).await.map_err(drop);
    }
    let mut results: Vec<Option<ErrorReply>> = vec![None; items.len()];
    let mut whole = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let len = item.range.map_or(item.entry.size, |r| r.len);
        let data = match reader.read_bytes(len as usize).await {
            Ok(data) => data,
            Err(e) => {
                // The client vanished or broke framing: nothing of this request is stored.
                tracing::debug!("upload cut short: {e}");
                return Err(());
            }
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
            .map_err(drop)?;
        for (i, r) in indices.into_iter().zip(stored) {
            results[i] = r.err().map(|e| e.to_reply());
        }
    }
    write_frame(send, &Response::Stored(results))
        .await
        .map_err(drop)
}
