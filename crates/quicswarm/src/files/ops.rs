//! Client-side file requests: one QUIC stream each.

use bytes::Bytes;
use quicswarm_proto::{
    transfer::{
        range_count, FileEntry, FileFrame, GetItem, Hash, ListFrame, Mtime, Need, PutItem, Selector,
    },
    ErrorCode, ErrorReply, Request, Response,
};

use std::sync::Arc;

use super::{buffers::BufferPool, serve::MAX_PIECE};
use crate::{client::Body, CallError, Client};

/// The answer to [`Client::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Matching regular files, sorted by path.
    pub entries: Vec<FileEntry>,
    /// Entries left out: symlinks, special files, names that are not portable.
    pub skipped: u64,
}

/// One item received by `get_files`.
#[derive(Debug)]
pub(crate) struct Received {
    pub(crate) data: Bytes,
    pub(crate) hash: Hash,
    pub(crate) size: u64,
    pub(crate) mtime: Mtime,
    pub(crate) mode: u32,
}

impl Client {
    /// Lists the files of the gateway root `root` that `selector` picks, without moving data.
    ///
    /// # Errors
    /// [`CallError::Remote`] with `NotFound` for an unknown root, `BadArgs` for a bad glob or
    /// regex, `PermissionDenied` for a path outside the root; transport errors.
    pub async fn list(&self, root: &str, selector: &Selector) -> Result<Listing, CallError> {
        self.list_with(root, selector, false).await
    }

    /// Like [`list`](Self::list), with each file's BLAKE3 (the gateway reads every file).
    ///
    /// The controller's call timeout bounds the wait for the gateway's first answer, and then
    /// each pause in the listing: a long listing is not cut short while it keeps coming, but
    /// a gateway hashing one file for longer than the call timeout sends nothing meanwhile.
    ///
    /// # Errors
    /// As [`list`](Self::list); [`CallError::Timeout`] when nothing arrived for the call
    /// timeout.
    pub async fn list_with(
        &self,
        root: &str,
        selector: &Selector,
        hash: bool,
    ) -> Result<Listing, CallError> {
        let request = Request::List {
            root: root.into(),
            selector: selector.clone(),
            hash,
        };
        let max = self.config().max_listing_entries;
        self.rpc_moving(&request, |response, mut reader, _| async move {
            expect_accepted(response)?;
            let mut listing = Listing::default();
            loop {
                match reader.expect_frame::<ListFrame>().await? {
                    ListFrame::Entries(mut entries) => {
                        // A gateway that never ends its listing must not grow us without bound.
                        if listing.entries.len() + entries.len() > max {
                            reader.stop(ErrorCode::LimitExceeded);
                            return Err(CallError::LimitExceeded(format!(
                                "listing: more than {max} entries (ControllerConfig::max_listing_entries)"
                            )));
                        }
                        listing.entries.append(&mut entries);
                    }
                    ListFrame::End { skipped } => {
                        listing.skipped = skipped;
                        // Gateways send folder by folder; callers get one sorted list.
                        listing.entries.sort_by(|a, b| a.path.cmp(&b.path));
                        listing.entries.dedup_by(|a, b| a.path == b.path);
                        return Ok(listing);
                    }
                    ListFrame::Error(reply) => return Err(reply.into()),
                }
            }
        })
        .await
    }

    /// Fetches items; one result per item, in order. With `buffers`, each item's bytes are
    /// received into a buffer of that pool (page-aligned and reused: for pieces of big files).
    /// Bounded by progress, not total time: see [`Client::rpc_moving`].
    pub(crate) async fn get_files(
        &self,
        root: &str,
        items: &[GetItem],
        buffers: Option<&Arc<BufferPool>>,
    ) -> Result<Vec<Result<Received, ErrorReply>>, CallError> {
        let request = Request::Get {
            root: root.into(),
            items: items.to_vec(),
        };
        self.rpc_moving(&request, |response, mut reader, _| async move {
            expect_accepted(response)?;
            let mut out = Vec::with_capacity(items.len());
            loop {
                let next = out.len() as u32;
                match reader.expect_frame::<FileFrame>().await? {
                    FileFrame::Data {
                        index,
                        len,
                        size,
                        mtime,
                        mode,
                    } => {
                        let want = items
                            .get(index as usize)
                            .map(|i| i.range.map_or(size, |r| r.len));
                        if index != next || want != Some(len) || len > MAX_PIECE {
                            reader.stop(ErrorCode::Protocol);
                            return Err(CallError::Protocol(format!(
                                "unexpected data for item {index} ({len} bytes)"
                            )));
                        }
                        let data = match buffers {
                            Some(pool) => {
                                let mut buf = pool.take(len as usize);
                                reader.read_into(buf.as_mut_slice()).await?;
                                buf.freeze()
                            }
                            None => reader.read_bytes(len as usize).await?,
                        };
                        let FileFrame::Hash(hash) = reader.expect_frame::<FileFrame>().await?
                        else {
                            return Err(CallError::Protocol("data without its hash".into()));
                        };
                        out.push(Ok(Received {
                            data,
                            hash,
                            size,
                            mtime,
                            mode,
                        }));
                    }
                    FileFrame::Failed { index, error } if index == next => out.push(Err(error)),
                    FileFrame::End if out.len() == items.len() => return Ok(out),
                    other => return Err(CallError::Protocol(format!("unexpected {other:?}"))),
                }
            }
        })
        .await
    }

    /// Asks the upload folder what it still needs of `entries`.
    pub(crate) async fn put_check(
        &self,
        dest: &str,
        entries: &[FileEntry],
        range_size: u64,
    ) -> Result<Vec<Need>, CallError> {
        let request = Request::PutCheck {
            dest: dest.into(),
            entries: entries.to_vec(),
            range_size,
        };
        self.rpc(&request, |response, _, _| async move {
            match response {
                Response::Needs(needs) if needs.len() == entries.len() => {
                    // A gateway's answer is planned from: every run must fit its file.
                    for (need, entry) in needs.iter().zip(entries) {
                        if let Need::Ranges(runs) = need {
                            let count = range_count(entry.size, range_size);
                            let fits = runs
                                .iter()
                                .all(|r| u64::from(r.first) + u64::from(r.count) <= count);
                            let total: u64 = runs.iter().map(|r| u64::from(r.count)).sum();
                            if !fits || total > count {
                                return Err(CallError::Protocol(format!(
                                    "needs of {:?} name ranges the file does not have",
                                    entry.path
                                )));
                            }
                        }
                    }
                    Ok(needs)
                }
                other => Err(CallError::Protocol(format!(
                    "expected Needs, got {other:?}"
                ))),
            }
        })
        .await
    }

    /// Uploads items with their bytes; one result per item.
    pub(crate) async fn put_files(
        &self,
        dest: &str,
        items: Vec<PutItem>,
        data: Vec<Bytes>,
        range_size: u64,
    ) -> Result<Vec<Option<ErrorReply>>, CallError> {
        let count = items.len();
        let request = Request::Put {
            dest: dest.into(),
            items,
            range_size,
        };
        self.rpc_with_body(&request, Body::chunks(data), |response| match response {
            Response::Stored(results) if results.len() == count => Ok(results),
            other => Err(CallError::Protocol(format!(
                "expected Stored of {count}, got {other:?}"
            ))),
        })
        .await
    }
}

fn expect_accepted(response: Response) -> Result<(), CallError> {
    match response {
        Response::Accepted => Ok(()),
        other => Err(CallError::Protocol(format!(
            "expected Accepted, got {other:?}"
        ))),
    }
}
