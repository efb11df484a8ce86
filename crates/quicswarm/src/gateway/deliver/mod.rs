//! How a stream subroutine's items reach the client: `reliable` (in order, on the
//! operation's stream), `latest` (each item on a stream of its own, newer replacing waiting
//! ones) and `datagram` (one unreliable datagram each).

mod datagram;
mod latest;
mod reliable;
mod window;

pub(super) use self::{datagram::run_datagram, latest::run_latest, reliable::run_stream};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::{subroutine::Failure, transport::SendStream};

/// Microseconds since the Unix epoch, for item timestamps.
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The next item, or `None` when the client stopped the subscription.
async fn next_or_abort(
    producer: &mut crate::subroutine::Producer,
    send: &mut SendStream,
) -> Option<Option<Result<(i64, Bytes), Failure>>> {
    tokio::select! {
        next = producer.next() => Some(next),
        _ = send.stopped() => None,
    }
}
