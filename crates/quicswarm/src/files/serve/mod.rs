//! The gateway side of file requests: what it serves and may use (here), and `List`; `Get`
//! in `get.rs`; `PutCheck` and `Put` in `put.rs`.

mod get;
mod put;

pub(crate) use self::{
    get::get,
    put::{put, put_check},
};

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use crate::{
    ended::{Ended, Reply},
    transport::SendStream,
};
use quicswarm_proto::{
    path,
    transfer::{ListFrame, Selector, LIST_CHUNK},
    ErrorCode, ErrorReply, Response,
};

use super::{
    blocking,
    buffers::BufferPool,
    dest::{Destination, FileLocks},
    pieces::PieceCache,
    select, TransferError,
};
use crate::io::write_frame;
use crate::{budget::ConnectionBudget, metrics::Metrics};

/// Largest whole file or range sent in one piece.
pub(crate) const MAX_PIECE: u64 = quicswarm_proto::limits::MAX_RANGE_SIZE;
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
    /// Files moved, and limits hit.
    pub(crate) metrics: &'a Metrics,
}

/// What a gateway serves and accepts.
#[derive(Debug, Clone)]
pub(crate) struct FileConfig {
    pub(crate) roots: BTreeMap<String, PathBuf>,
    pub(crate) upload_dir: Option<PathBuf>,
    pub(crate) locks: Arc<FileLocks>,
    /// Piece hashes of files hashed for listings, for their ranges.
    pub(crate) pieces: Arc<PieceCache>,
    /// Buffers for pieces of big files read (sent) and received (uploads).
    pub(crate) buffers: Arc<BufferPool>,
}

/// Bytes of a pooled piece buffer: a piece read ahead, and a range of the default size.
const PIECE_BUFFER: usize = 4 << 20;
/// Idle piece buffers a gateway keeps (32 MiB at most).
const IDLE_BUFFERS: usize = 8;

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            roots: BTreeMap::new(),
            upload_dir: None,
            locks: Arc::default(),
            pieces: Arc::default(),
            buffers: BufferPool::new(PIECE_BUFFER, IDLE_BUFFERS),
        }
    }
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

impl Serve<'_> {
    /// A `LimitExceeded` reply (and a limit hit) unless `asked <= max_items`.
    fn check_items(&self, limit: &'static str, asked: usize) -> Result<(), Response> {
        TransferError::check(limit, asked as u64, self.max_items as u64).map_err(|e| {
            self.metrics.limit_hit("max_request_items");
            Response::Error(e.to_reply())
        })
    }
}

/// Serves a `List`: `Accepted`, then the entries in frames as a blocking walk finds them.
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
