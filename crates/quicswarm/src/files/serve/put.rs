//! `PutCheck` (what an upload still needs) and `Put` (the upload itself, stored through
//! the destination).

use quicswarm_proto::{
    limits::MAX_RANGES_PER_FILE,
    transfer::{check_range_size, check_ranges, FileEntry, Need, PutItem},
    ErrorCode, ErrorReply, Response,
};

use super::{Serve, MAX_PIECE};
use crate::metrics::Direction;
use crate::{
    ended::{Ended, Reply},
    files::{blocking, dest::WholeFile, TransferError},
    io::{write_frame, FrameReader},
    transport::SendStream,
};

/// Serves a `PutCheck`: for each entry, whether the upload folder needs it whole, in ranges,
/// or not at all.
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
    if let Err(reply) = ctx
        .check_items("put-check entries", entries.len())
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

/// Serves a `Put`: reads each item's bytes and stores them; answers one result per item.
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
    let checked = ctx.check_items("put items", items.len()).and_then(|()| {
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
        let len = item.range.map_or(item.entry.size, |r| r.len) as usize;
        // A range goes into a page-aligned buffer: it can be written past the page cache.
        let read = match item.range {
            Some(_) => {
                let mut buf = ctx.files.buffers.take(len);
                reader
                    .read_into(buf.as_mut_slice())
                    .await
                    .map(|()| buf.freeze())
            }
            None => reader.read_bytes(len).await,
        };
        let data = match read {
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
                if result.is_ok() {
                    ctx.metrics.file(Direction::Received, range.len);
                }
                results[i] = result.err().map(|e| e.to_reply());
            }
        }
    }
    if !whole.is_empty() {
        let d = dest.clone();
        let sizes: Vec<u64> = whole.iter().map(|(_, w)| w.data.len() as u64).collect();
        let (indices, batch): (Vec<usize>, Vec<WholeFile>) = whole.into_iter().unzip();
        let stored = tokio::task::spawn_blocking(move || d.write_batch(batch))
            .await
            .map_err(Ended::from)?;
        for ((i, r), size) in indices.into_iter().zip(stored).zip(sizes) {
            if r.is_ok() {
                ctx.metrics.file(Direction::Received, size);
            }
            results[i] = r.err().map(|e| e.to_reply());
        }
    }
    write_frame(send, &Response::Stored(results))
        .await
        .map_err(Ended::from)
}
