//! Unordered delivery: every item on a unidirectional stream of its own, none superseded, so
//! a lost packet holds back only the items it carried.

use std::time::Duration;

use futures_util::{stream::FuturesUnordered, StreamExt};
use quicswarm_proto::{ErrorCode, StreamFrame};
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
/// the subscription's stream once they are acknowledged.
pub(in crate::gateway) async fn run_unordered(
    conn: &Connection,
    send: &mut SendStream,
    mut producer: crate::subroutine::Producer,
    name: &str,
    id: u32,
    priority: i32,
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
