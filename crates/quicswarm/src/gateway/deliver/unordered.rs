//! Unordered delivery: every item on a unidirectional stream of its own, none superseded, so
//! a lost packet holds back only the items it carried.

use std::time::Duration;

use futures_util::{stream::FuturesUnordered, StreamExt};
use quicswarm_proto::{datagram, ErrorCode, StreamFrame};
use tokio_util::sync::CancellationToken;

use super::super::reply::log_failure;
use super::latest::send_latest;
use crate::{
    ended::{Ended, Reply},
    io::write_frame,
    metrics::ItemCounters,
    transport::{Connection, SendStream},
};

/// Items on their way at most; past it the producer waits. (The client grants 1,024
/// unidirectional streams per connection, shared by its subscriptions.)
const MAX_IN_FLIGHT: usize = 256;

/// How long the items still in flight at the producer's end may take before the end is
/// reported anyway (late ones are still handed out by the client for a while).
const DRAIN: Duration = Duration::from_secs(5);

/// `Unordered` delivery: each item on its own unidirectional stream as soon as the producer
/// yields it, at most [`MAX_IN_FLIGHT`] unacknowledged. The end (or error) frame follows on
/// the subscription's stream once they are acknowledged. With `copy` (`Redundant`), an item
/// that fits a datagram goes as one first, best effort: the stream copy is the reliable one.
pub(in crate::gateway) async fn run_unordered(
    conn: &Connection,
    send: &mut SendStream,
    mut producer: crate::subroutine::Producer,
    name: &str,
    id: u32,
    (priority, copy): (i32, bool),
    counted: &ItemCounters,
) -> Reply {
    // Each in-flight item owns its stream and ends when it is acknowledged (or stopped, or
    // the connection is lost), or resets it when the subscription is cancelled.
    let cancel = CancellationToken::new();
    let mut in_flight = FuturesUnordered::new();
    let mut end: Option<StreamFrame> = None;
    while end.is_none() {
        tokio::select! {
            next = producer.next(), if in_flight.len() < MAX_IN_FLIGHT => match next {
                Some(Ok((ident, data))) if ident >= 0 => {
                    counted.item();
                    if copy {
                        datagram_copy(conn, id, ident, &data);
                    }
                    if let Some(stream) = send_latest(conn, id, ident, data, priority).await? {
                        in_flight.push(until_acknowledged(stream, cancel.clone()));
                    }
                }
                Some(Ok(_)) | None => end = Some(StreamFrame::End),
                Some(Err(failure)) => end = Some(StreamFrame::Error(log_failure(name, failure))),
            },
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            _ = send.stopped() => {
                cancel.cancel();
                while in_flight.next().await.is_some() {}
                return Err(Ended::Stopped);
            }
        }
    }
    drop(producer);
    let _ = tokio::time::timeout(DRAIN, async { while in_flight.next().await.is_some() {} }).await;
    write_frame(send, &end.unwrap_or(StreamFrame::End))
        .await
        .map_err(Ended::from)
}

/// Sends `data` as a datagram too, if it fits; a full datagram buffer or a path without
/// datagrams just means this item has only its stream copy.
fn datagram_copy(conn: &Connection, id: u32, ident: i64, data: &[u8]) {
    let mut datagram = datagram::header(id, ident, super::now_us());
    if datagram.len() + data.len() <= conn.max_datagram_size().unwrap_or(0) {
        datagram.extend_from_slice(data);
        let _ = conn.send_datagram(datagram.into());
    }
}

/// Waits until `stream`'s item is acknowledged; resets it if `cancel` fires first.
async fn until_acknowledged(mut stream: SendStream, cancel: CancellationToken) {
    let cancelled = {
        let acknowledged = stream.stopped();
        tokio::select! {
            _ = acknowledged => false,
            () = cancel.cancelled() => true,
        }
    };
    if cancelled {
        let _ = stream.reset(ErrorCode::Cancelled);
    }
}
