//! How a stream subroutine's items reach the client: `reliable` (in order, on the
//! operation's stream), `latest` (each item on a stream of its own, newer replacing waiting
//! ones), `datagram` (one unreliable datagram each), and `unordered` and `redundant` (each
//! item on a stream of its own, none replaced; `redundant` adds a datagram copy), and `fec`
//! (each item as datagrams with recovery shards, newer replacing waiting ones).

mod datagram;
mod fec;
mod latest;
mod pacer;
mod recent;
mod reliable;
mod unordered;
mod window;

use bytes::Bytes;
use futures_util::StreamExt;
use quicswarm_proto::{datagram::now_us, Delivery, StreamOptions};

use self::{
    datagram::run_datagram, fec::run_fec, latest::run_latest, reliable::run_stream,
    unordered::run_unordered,
};
use crate::{
    ended::Reply,
    io::FrameReader,
    metrics::{ItemCounters, Metrics},
    subroutine::{Failure, Producer},
    transport::{Connection, SendStream},
};

/// Delivers `producer`'s items as `options` ask, counting them in `metrics`; `reader` is the
/// subscription's stream from the client (only `Fec` reads it: the client's reports).
pub(super) async fn run(
    conn: &Connection,
    (send, reader): (&mut SendStream, &mut FrameReader),
    producer: Producer,
    name: &str,
    options: StreamOptions,
    metrics: &Metrics,
) -> Reply {
    match options.delivery {
        Delivery::Reliable => run_stream(send, producer, name, &metrics.items("reliable")).await,
        Delivery::Latest { id } => {
            let max_age = options
                .max_age_ms
                .map(|ms| std::time::Duration::from_millis(u64::from(ms)));
            let p = (options.priority, max_age);
            let counted = metrics.items("latest");
            run_latest(conn, send, producer, name, id, p, &counted).await
        }
        Delivery::Datagram { id } => {
            run_datagram(conn, send, producer, name, id, &metrics.items("datagram")).await
        }
        Delivery::Unordered { id } => {
            let counted = metrics.items("unordered");
            let how = (options.priority, false);
            run_unordered(conn, send, producer, name, id, how, &counted).await
        }
        Delivery::Redundant { id } => {
            let counted = metrics.items("redundant");
            let how = (options.priority, true);
            run_unordered(conn, send, producer, name, id, how, &counted).await
        }
        Delivery::Fec { id, percent } => {
            let counted = metrics.items("fec");
            run_fec(
                conn,
                (send, reader),
                producer,
                name,
                (id, percent),
                &counted,
            )
            .await
        }
    }
}

/// A newest-item-wins producer's next step (`Latest`, `Fec`): a new item replaces the one
/// waiting, which the client is told was superseded; the end or a failure is noted in `end`.
async fn replace_waiting(
    next: Option<Result<(i64, Bytes), Failure>>,
    (waiting, end): (
        &mut Option<(i64, Bytes)>,
        &mut Option<quicswarm_proto::StreamFrame>,
    ),
    send: &mut SendStream,
    name: &str,
    counted: &ItemCounters,
) -> Result<(), crate::ended::Ended> {
    use quicswarm_proto::StreamFrame;
    match next {
        Some(Ok((ident, data))) if ident >= 0 => {
            if let Some((old, _)) = waiting.replace((ident, data)) {
                counted.superseded();
                let frame = StreamFrame::Superseded { ident: old };
                crate::io::write_frame(send, &frame).await?;
            }
        }
        Some(Ok(_)) | None => *end = Some(StreamFrame::End),
        Some(Err(failure)) => {
            *end = Some(StreamFrame::Error(super::reply::log_failure(name, failure)));
        }
    }
    Ok(())
}

/// The next item, or `None` when the client stopped the subscription.
async fn next_or_abort(
    producer: &mut Producer,
    send: &mut SendStream,
) -> Option<Option<Result<(i64, Bytes), Failure>>> {
    tokio::select! {
        next = producer.next() => Some(next),
        _ = send.stopped() => None,
    }
}
