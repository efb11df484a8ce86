//! `Fec` delivery: each item as shards plus Reed–Solomon recovery shards, one per datagram
//! ([`crate::fec`]); a newer item replaces one still waiting, as with `Latest`.
//!
//! What sets the pace, from the item down to the packet:
//! - the client reports each item ([`ItemReport`]) on the subscription's stream, and as many
//!   items are on their way as `Latest` would keep ([`Window`], from those reports), plus one;
//! - an item's shards leave at a little above the bottleneck rate the reports show
//!   ([`Pacer`]): quinn's own pacing, with BBR kept in start-up, bursts far above it;
//! - shards are handed to quinn only while its datagram queue holds under [`LOW_WATER`]
//!   bytes, so an item waits here, where a newer one can still replace it, and other traffic
//!   on the connection (commands, telemetry, which quinn sends after queued datagrams) waits
//!   behind a few packets, not a whole frame.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use quicswarm_proto::{ErrorCode, ErrorReply, ItemReport, StreamFrame};

use super::{
    now_us,
    pacer::{Pacer, Queue, DRAIN, GAIN},
    replace_waiting,
    window::{Sent, Window},
};
use crate::{
    ended::{Ended, Reply},
    io::{write_frame, FrameReader},
    metrics::ItemCounters,
    transport::{Connection, DatagramError, SendStream},
};

/// Datagram bytes queued in quinn below which the next shards are handed over: a few
/// packets, or [`POLL`]'s worth of the path's rate twice over if more, so the path never
/// idles between two polls. (A fixed 8 KB every 2 ms held the emulated 100 Mbit/s L1 link to
/// a third of its rate: frame age p50 16 ms against `Latest`'s 7.)
const LOW_WATER: usize = 8 * 1024;
/// How often the queue is looked at while shards wait (quinn has no "drained" event; the
/// look is a lock and a subtraction). At 10 Mbit/s, 2 ms is 2.5 KB of the link.
const POLL: Duration = Duration::from_millis(2);

/// `Fec` delivery of `producer`'s items to subscription `id`, with `percent` recovery
/// shards. An item too large for 2,048 shards ends the subscription with `FrameTooLarge`.
///
/// The client's [`ItemReport`]s come on `reports`. Without them (a client that sends none),
/// items leave the window after [`EXPIRE`], and quinn alone paces the shards.
pub(in crate::gateway) async fn run_fec(
    conn: &Connection,
    (send, reports): (&mut SendStream, &mut FrameReader),
    mut producer: crate::subroutine::Producer,
    name: &str,
    (id, percent): (u32, u8),
    counted: &ItemCounters,
) -> Reply {
    // The newest item not yet cut, and the shards of the one being handed to quinn.
    let mut waiting: Option<(i64, Bytes)> = None;
    let mut shards: std::vec::IntoIter<Bytes> = Vec::new().into_iter();
    let mut in_flight = InFlight::default();
    let mut reports_open = true;
    // Reports are the client's word when it has an item to report, not a transfer that may
    // stall: a camera paused for longer than the stall timeout must not lose them for good.
    reports.set_stall_timeout(None);
    let mut end: Option<StreamFrame> = None;
    loop {
        in_flight.expire(Instant::now());
        let mut wake = None;
        let low_water = in_flight
            .pacer
            .queue_for(Instant::now(), 2 * POLL)
            .max(LOW_WATER);
        while conn.datagrams_queued() < low_water {
            if shards.len() > 0 {
                if let Some(at) = in_flight.pacer.wait(Instant::now()) {
                    wake = Some(at);
                    break;
                }
            }
            if let Some(shard) = shards.next() {
                in_flight.pacer.sent(Instant::now(), shard.len());
                match conn.send_datagram_wait(shard).await {
                    Ok(()) => continue,
                    Err(DatagramError::ConnectionLost(_)) => return Err(Ended::Closed),
                    // The path's datagrams shrank since the item was cut (quinn lowers its
                    // MTU when large packets keep being lost): the item is lost, the next one
                    // is cut to the new size.
                    Err(DatagramError::TooLarge) => {
                        shards = Vec::new().into_iter();
                        continue;
                    }
                    Err(e) => {
                        end = Some(failed(ErrorCode::Internal, format!("datagram: {e}")));
                        shards = Vec::new().into_iter();
                        break;
                    }
                }
            }
            if !in_flight.has_room(conn.min_rtt()) {
                // Only a report (or the oldest item's expiry) makes room: no polling.
                wake = in_flight.expiry();
                break;
            }
            let Some((ident, data)) = waiting.take() else {
                break;
            };
            let Some(max) = conn.max_datagram_size() else {
                let why = "the client's connection takes no datagrams".to_string();
                end = Some(failed(ErrorCode::Unsupported, why));
                break;
            };
            match crate::fec::encode((id, ident, now_us()), &data, max, percent) {
                Ok(cut) => {
                    counted.item();
                    let shard_len = cut.first().map_or(0, |d| d.len());
                    in_flight.sent(ident, cut.len(), shard_len);
                    let gain = if in_flight.queue.building() {
                        DRAIN
                    } else {
                        GAIN
                    };
                    in_flight.pacer.item(Instant::now(), gain);
                    shards = cut.into_iter();
                }
                // An item that cannot be cut ends the subscription; nothing after it is sent.
                Err(e) => {
                    let why = format!("item {ident}: {e}");
                    end = Some(failed(ErrorCode::FrameTooLarge, why));
                }
            }
        }
        let busy = waiting.is_some() || shards.len() > 0;
        if end.is_some() && !busy {
            break;
        }
        tokio::select! {
            next = producer.next(), if end.is_none() => {
                replace_waiting(next, (&mut waiting, &mut end), send, name, counted).await?;
            }
            report = reports.read_frame::<ItemReport>(), if reports_open => match report {
                Ok(Some(r)) => in_flight.reported(Instant::now(), r),
                // The client finished its side or broke it: items now leave the window by age.
                Ok(None) | Err(_) => reports_open = false,
            },
            () = tokio::time::sleep_until(wake.map_or_else(|| tokio::time::Instant::now() + POLL, Into::into)), if busy => {}
            _ = send.stopped() => return Err(Ended::Stopped),
        }
    }
    drop(producer);
    write_frame(send, &end.unwrap_or(StreamFrame::End))
        .await
        .map_err(Ended::from)
}

/// An item whose report has not come after this long left the window unmeasured: all its
/// shards were lost (a report would have said so), or the client sends none.
const EXPIRE: Duration = Duration::from_secs(1);

/// The items on their way, oldest first, and the window that bounds them.
#[derive(Debug)]
struct InFlight {
    /// `(ident, when it left, its shards, their length)`.
    items: std::collections::VecDeque<(i64, Sent, u32, u64)>,
    window: Window,
    pacer: Pacer,
    queue: Queue,
}

impl Default for InFlight {
    fn default() -> Self {
        Self {
            items: Default::default(),
            window: Window::new(),
            pacer: Pacer::new(Instant::now()),
            queue: Queue::default(),
        }
    }
}

impl InFlight {
    /// One more item than `Latest` keeps: an item's report leaves the client only once its
    /// last shard has arrived, a whole item's serialisation after a stream's first
    /// acknowledgements would. (Without the [`Pacer`], quinn's bursts overran L3's queue with
    /// that many items on their way.)
    ///
    /// While the reports show a queue on the path ([`Queue`]), one fewer: with other traffic
    /// beside the camera, three items on L3 kept its 50 ms queue full (telemetry's p99 went
    /// from 191 to 714 ms).
    fn has_room(&mut self, min_rtt: Duration) -> bool {
        let limit = self.window.limit(Instant::now(), min_rtt);
        let extra = usize::from(!self.queue.building());
        self.items.len() < limit + extra
    }

    /// Item `ident` left as `shards` datagrams of `shard_len` bytes.
    fn sent(&mut self, ident: i64, shards: usize, shard_len: usize) {
        let sent = self.window.sent(Instant::now(), shards * shard_len);
        // At most 2,048 shards (`proto::fec::MAX_SHARDS`): the cast cannot saturate.
        let shards = u32::try_from(shards).unwrap_or(u32::MAX);
        self.items
            .push_back((ident, sent, shards, shard_len as u64));
    }

    /// The client's report of one item. Items sent before it and not reported are done with
    /// too: the client reports in the order it finishes items, which is the order they left.
    fn reported(&mut self, now: Instant, report: ItemReport) {
        while let Some(&(ident, sent, count, shard_len)) = self.items.front() {
            if ident > report.ident {
                break;
            }
            self.items.pop_front();
            if ident == report.ident {
                // The client's count, no more than were sent: a larger one would inflate
                // the delivery rate and the pace taken from it.
                let shards = report.shards.min(count);
                let got = u64::from(shards) * shard_len;
                self.window.delivered_part(now, sent, got);
                let spread = Duration::from_micros(u64::from(report.spread_us));
                self.pacer.sample(now, shards, shard_len, spread);
                if report.spread_us > 0 {
                    self.queue.sample(now, report.delay_us);
                }
            }
        }
    }

    /// When the oldest item leaves the window unreported, if any is on its way.
    fn expiry(&self) -> Option<Instant> {
        self.items.front().map(|(_, sent, ..)| sent.at + EXPIRE)
    }

    fn expire(&mut self, now: Instant) {
        while self
            .items
            .front()
            .is_some_and(|(_, sent, ..)| now.saturating_duration_since(sent.at) > EXPIRE)
        {
            self.items.pop_front();
        }
    }
}

/// The error frame that ends a subscription.
fn failed(code: ErrorCode, why: String) -> StreamFrame {
    StreamFrame::Error(ErrorReply::new(code, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report is the client's word: a shard count above what left cannot raise the pace.
    #[test]
    fn a_report_counts_no_more_shards_than_were_sent() {
        let mut honest = InFlight::default();
        let mut inflated = InFlight::default();
        for flight in [&mut honest, &mut inflated] {
            flight.sent(1, 10, 1_000);
        }
        let report = |shards| ItemReport {
            ident: 1,
            shards,
            spread_us: 1_000,
            delay_us: 0,
        };
        let now = Instant::now();
        honest.reported(now, report(10));
        inflated.reported(now, report(u32::MAX));
        let rate = honest.pacer.rate(now);
        assert!(rate > 0.0);
        assert_eq!(inflated.pacer.rate(now), rate);
        assert!(inflated.items.is_empty());
    }
}
