//! `Get`: whole files and ranges, read in groups on a blocking thread and sent as the
//! client takes them.

use std::sync::Arc;

use bytes::Bytes;
use quicswarm_proto::{
    transfer::{FileFrame, GetItem},
    Response,
};

use super::{Serve, MAX_PIECE};
use crate::{
    ended::{Ended, Reply},
    files::{buffers::BufferPool, pieces::PieceCache, source, TransferError},
    io::{frame, frame_into, write_frame},
    metrics::Direction,
    transport::SendStream,
};

/// Items read per blocking call .
const READ_GROUP: usize = 64;
/// Bytes read ahead per blocking call  of small files: the client takes
/// them before more is read (a bigger item is read alone, charged at its own size).
const READ_AHEAD: u64 = 4 << 20;

/// Serves a `Get`: the items in order, each a header frame and its bytes.
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
    if let Err(reply) = ctx.check_items("get items", items.len()) {
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
        let (items2, root2) = (items.clone(), root.clone());
        let (pieces, buffers) = (ctx.files.pieces.clone(), ctx.files.buffers.clone());
        let group = tokio::task::spawn_blocking(move || {
            read_group(&root2, &items2[next..], allowance, (&pieces, &buffers))
        })
        .await
        .map_err(Ended::from)?;
        let index = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        if let Some(large) = group.large {
            // The next item alone is larger than the allowance: sent chunk by chunk.
            drop(charge);
            let len = large.header().1;
            send_streamed(ctx, send, large, index(next)).await?;
            ctx.metrics.file(Direction::Sent, len);
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
                    let len = read.data.len() as u64;
                    send.write_all_chunks(&mut [frame(&header), read.data, Bytes::from(trailer)])
                        .await
                        .map_err(Ended::from)?;
                    ctx.metrics.file(Direction::Sent, len);
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
    (pieces, buffers): (&PieceCache, &Arc<BufferPool>),
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
                        large: Some(source::Streamed::new(opened, pieces, buffers)),
                    };
                }
                break;
            }
            Ok(opened) => {
                used += opened.len;
                reads.push(source::read_opened(opened, pieces, buffers));
            }
        }
    }
    Group { reads, large: None }
}
