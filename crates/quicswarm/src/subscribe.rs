//! Non-reliable deliveries of stream items (`Latest`, `Datagram`): the client side.
//!
//! Their items do not travel on the subscription's own stream: `Latest` items come on
//! unidirectional streams the gateway opens, `Datagram` items in QUIC datagrams. One router
//! task per connection reads both and hands each item to its subscription by id.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use bytes::Bytes;
use quicswarm_proto::{datagram, ErrorCode, ItemReport, LatestHeader};
use tokio::sync::mpsc;

use crate::io::FrameReader;

/// How a subscription's items travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Delivery {
    /// Every item, in order, on one QUIC stream (the default).
    #[default]
    Reliable,
    /// Each item on its own QUIC stream, as many in flight as the path carries (its delivery
    /// rate times its round trip); an item not yet sent when a newer one is ready is
    /// superseded. Older items arriving after newer ones are dropped, unless
    /// [`SubscribeOptions::deliver_late`]. For camera frames.
    /// QUIC only: over TLS-over-TCP, `CallError::Unsupported`.
    Latest,
    /// Each item in one QUIC datagram: unreliable, unordered, at most the path's datagram size
    /// (about 1,200 bytes; larger items end the subscription with `TooLarge`). For small,
    /// high-rate sensor readings. QUIC only: over TLS-over-TCP, `CallError::Unsupported`.
    Datagram,
    /// Every item (reliable), each on its own QUIC stream, handed out as it arrives: a lost
    /// packet delays only the items it carried, not every later one as on a single stream.
    /// Idents may come out of order. For sensor readings that must all arrive but should not
    /// wait behind each other: on the emulated L3 link (5% bursty loss) a reading's p99 went
    /// from 176–180 ms (`Reliable`) to 139–144 ms. QUIC only: over TLS-over-TCP,
    /// `CallError::Unsupported`.
    Unordered,
    /// As [`Unordered`](Self::Unordered), and each item that fits a QUIC datagram (about
    /// 1,200 bytes) is also sent as one: whichever copy arrives first is handed out, the
    /// other dropped, so a reading whose packet is lost usually needs no repair at all. Costs
    /// small items twice on the link. For sensor readings that must arrive, and soon: on the
    /// emulated L2 link (1% loss) a reading's p99 went from 38 ms (`Reliable`) to 23 ms.
    /// A second copy is recognised within 4,096 idents of the newest (a later one would be
    /// handed out again). QUIC only: over TLS-over-TCP, `CallError::Unsupported`.
    Redundant,
    /// As [`Latest`](Self::Latest), over datagrams with forward error correction: each item is
    /// cut into datagram-sized shards plus Reed–Solomon recovery shards
    /// ([`SubscribeOptions::fec_percent`] of them, 25% by default), and any set of shards as
    /// large as the item rebuilds it. A lost packet thus costs no round trip, only the
    /// recovery shards' share of the link; an item that loses more shards than it has
    /// recovery shards is lost ([`ItemStream::lost`](crate::ItemStream::lost)). The client
    /// reports each item on the subscription's stream; from those reports the gateway keeps
    /// as many items on their way as the path carries, paces their shards at the rate the
    /// path delivers them, and slows down while the reports show a queue building. A newer
    /// item replaces one still waiting, so the rate follows the link. For camera frames on a
    /// lossy link, where `Latest`'s repairs make frames late: on the emulated L3 link (10
    /// Mbit/s, 5% bursty loss, RTT 60 ± 30 ms), 40 KB frames at 30 fps came through at
    /// 20.6–21.4 fps with frame age p99 121–128 ms, against `Latest`'s 13–15 fps at
    /// 180–290 ms (`tcp-vs-quic --profile L3 --workload camera`, several seeds). Items up to
    /// about 2.8 MB (2,048 shards). QUIC only: over TLS-over-TCP, `CallError::Unsupported`.
    Fec,
}

/// Recovery shards of `Fec` delivery when [`SubscribeOptions::fec_percent`] is `None`. Chosen
/// from a simulation of the link emulator's loss model (5% in bursts of three packets, as on
/// L3), not a bench: a 40 KB frame in 29 shards was lost about one time in 27 with 8
/// recovery shards (25%), one in ten with 5; on the emulated L3 link itself 25% gave
/// 21.4 fps (`tcp-vs-quic --profile L3 --workload camera --seed 5`).
pub const FEC_PERCENT: u8 = 25;

/// Options of a subscription; see [`Client::subscribe`](crate::Client::subscribe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// QUIC send priority of the items on the gateway (higher first): commands above
    /// telemetry above camera above files. Ignored over TLS-over-TCP (one ordered byte
    /// stream carries everything).
    pub priority: i32,
    /// How items travel.
    pub delivery: Delivery,
    /// Items older than this are not worth having (`Latest` and `Datagram` only). On arrival
    /// they are dropped (measured against the gateway's send timestamp, so both clocks must
    /// agree); with `Latest`, the gateway also cancels an item that has been in flight longer
    /// than this as soon as a newer one is ready.
    pub max_age: Option<Duration>,
    /// `Latest` only: hand out an item that arrives after a newer one (its ident is lower)
    /// instead of dropping it. On a lossy link a large item often loses a packet, and its
    /// repair takes a round trip in which the next item may arrive whole: on the emulated
    /// L3 link (5% bursty loss, RTT 60 ms), about 30% of 40 KB frames (a probe counted 281
    /// arriving whole in 12 s, of which 199 were handed out). A consumer that
    /// uses every frame it can get (a detector, a recorder) wants them; a display, which
    /// must not go back in time, does not. Default `false`.
    pub deliver_late: bool,
    /// `Fec` only: recovery shards in percent of an item's shards, at least one per item and
    /// at most as many as its shards; `None` for 25%. More survives burstier loss, at that
    /// share of the link.
    pub fec_percent: Option<u8>,
}

impl SubscribeOptions {
    /// Options with this delivery and defaults otherwise.
    pub fn delivery(delivery: Delivery) -> Self {
        Self {
            delivery,
            ..Self::default()
        }
    }
}

/// One routed item.
#[derive(Debug)]
pub(crate) struct Routed {
    ident: i64,
    data: Bytes,
    /// Gateway send time, microseconds since the Unix epoch.
    sent_us: u64,
    /// When it arrived (read off the connection, before any queue).
    arrived: std::time::Instant,
}

/// Routes items of non-reliable subscriptions on one connection.
#[derive(Debug, Default)]
pub(crate) struct Router {
    subs: Mutex<HashMap<u32, mpsc::Sender<Routed>>>,
    next_id: AtomicU32,
    running: AtomicBool,
}

/// Items buffered per subscription before new ones are dropped.
const QUEUE: usize = 256;

impl Router {
    /// Registers a subscription and starts the router task if needed.
    pub(crate) fn register(
        self: &Arc<Self>,
        conn: &crate::Connection,
        max_frame: usize,
    ) -> (u32, mpsc::Receiver<Routed>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE);
        self.subs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        if !self.running.swap(true, Ordering::SeqCst) {
            tokio::spawn(route(conn.clone(), self.clone(), max_frame));
        }
        (id, rx)
    }

    pub(crate) fn unregister(&self, id: u32) {
        self.subs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    fn deliver(&self, id: u32, item: Routed) {
        let tx = self
            .subs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned();
        // Unknown id (ended subscription) or a consumer far behind: the item is dropped.
        if let Some(tx) = tx {
            let _ = tx.try_send(item);
        }
    }
}

/// Reads unidirectional streams and datagrams until the connection ends.
async fn route(conn: crate::Connection, router: Arc<Router>, max_frame: usize) {
    loop {
        tokio::select! {
            uni = conn.accept_uni() => match uni {
                Ok(recv) => {
                    tokio::spawn(read_latest(FrameReader::new(recv, max_frame), router.clone(), max_frame));
                }
                Err(_) => break,
            },
            dg = conn.read_datagram() => match dg {
                Ok(bytes) => {
                    if let Ok(item) = datagram::decode(&bytes) {
                        let data = bytes.slice_ref(item.payload);
                        router.deliver(item.id, Routed { ident: item.ident, data, sent_us: item.sent_us, arrived: std::time::Instant::now() });
                    }
                }
                Err(_) => break,
            },
        }
    }
    router.running.store(false, Ordering::SeqCst);
}

async fn read_latest(mut reader: FrameReader, router: Arc<Router>, max_frame: usize) {
    let Ok(header) = reader.expect_frame::<LatestHeader>().await else {
        return;
    };
    if header.len > max_frame as u64 {
        reader.stop(ErrorCode::FrameTooLarge);
        return;
    }
    // A reset (superseded) item is counted by the gateway, which reports every reset.
    if let Ok(data) = reader.read_bytes(header.len as usize).await {
        let item = Routed {
            ident: header.ident,
            data,
            sent_us: header.sent_us,
            arrived: std::time::Instant::now(),
        };
        router.deliver(header.id, item);
    }
}

/// Reports queued for the gateway before the newest are dropped.
pub(crate) const REPORTS: usize = 64;

/// Writes a `Fec` subscription's reports on its stream until the subscription is dropped,
/// then finishes that side. A task of its own, so handing out items never waits on a write.
pub(crate) async fn send_reports(
    mut send: crate::transport::SendStream,
    mut reports: mpsc::Receiver<ItemReport>,
) {
    while let Some(report) = reports.recv().await {
        if send.write_chunk(crate::io::frame(&report)).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

/// Per-subscription state of a routed delivery.
#[derive(Debug)]
pub(crate) struct RoutedState {
    pub(crate) id: u32,
    pub(crate) rx: mpsc::Receiver<Routed>,
    pub(crate) router: Arc<Router>,
    pub(crate) latest: bool,
    /// Items come as shards (`Fec`), rebuilt here before the `Latest` rules apply.
    pub(crate) fec: Option<crate::fec::Assembler>,
    /// Where reports on `Fec` items go to the gateway ([`send_reports`]).
    pub(crate) reports: Option<mpsc::Sender<ItemReport>>,
    /// Items come twice (`Redundant`): hand out the first copy only.
    pub(crate) redundant: bool,
    /// Hand out items older than the newest one handed out (`Latest` only).
    pub(crate) deliver_late: bool,
    pub(crate) max_age: Option<Duration>,
    pub(crate) last: Option<i64>,
    pub(crate) superseded: u64,
    pub(crate) stale: u64,
    /// Recent items that arrived whole (`Latest`), and recent items counted as superseded.
    pub(crate) delivered: std::collections::HashSet<i64>,
    pub(crate) counted: std::collections::HashSet<i64>,
    /// The subscription's stream carried its end: items still arriving are handed out until
    /// this deadline.
    pub(crate) end_seen: Option<tokio::time::Instant>,
}

/// Idents remembered below the newest one, for exact superseded counts.
const WINDOW: i64 = 4096;

impl RoutedState {
    /// The state of a new subscription registered with `router` as `id`.
    pub(crate) fn new(
        (id, rx): (u32, mpsc::Receiver<Routed>),
        router: Arc<Router>,
        options: &SubscribeOptions,
        max_item: usize,
    ) -> Self {
        let fec = options.delivery == Delivery::Fec;
        Self {
            id,
            rx,
            router,
            latest: options.delivery == Delivery::Latest || fec,
            fec: fec.then(|| crate::fec::Assembler::new(max_item)),
            reports: None,
            redundant: options.delivery == Delivery::Redundant,
            deliver_late: options.deliver_late,
            max_age: options.max_age,
            last: None,
            superseded: 0,
            stale: 0,
            delivered: Default::default(),
            counted: Default::default(),
            end_seen: None,
        }
    }

    /// The gateway reports `ident` superseded. An item cancelled in flight may still have
    /// arrived whole: then it was delivered, and it is not counted.
    pub(crate) fn gateway_superseded(&mut self, ident: i64) {
        if !self.delivered.contains(&ident) && self.counted.insert(ident) {
            self.superseded += 1;
        }
    }

    /// Applies ordering and age rules: `Some` for an item to hand out.
    pub(crate) fn accept(&mut self, routed: Routed) -> Option<(i64, Bytes)> {
        let Routed {
            ident,
            mut data,
            sent_us,
            arrived,
        } = routed;
        if let Some(fec) = &mut self.fec {
            // A shard: the item goes on once enough have come.
            let whole = fec.push(ident, &data, arrived);
            for (done, shards, spread) in fec.finished.drain(..) {
                // A full queue means the gateway is far behind reading them: it then sizes
                // its window without this one.
                if let Some(tx) = &self.reports {
                    let spread_us = spread.as_micros().min(u128::from(u32::MAX)) as u32;
                    let delay_us = if done == ident && !spread.is_zero() {
                        let ago = arrived.elapsed().as_micros() as i64;
                        (datagram::now_us() as i64 - ago).saturating_sub(sent_us as i64)
                    } else {
                        0
                    };
                    let _ = tx.try_send(ItemReport {
                        ident: done,
                        shards,
                        spread_us,
                        delay_us,
                    });
                }
            }
            data = whole?;
        }
        if self.latest && !self.deliver_late && self.last.is_some_and(|l| ident <= l) {
            // Overtaken by a newer item: superseded, counted once whoever noticed first.
            if self.counted.insert(ident) {
                self.superseded += 1;
            }
            return None;
        }
        // The second copy of an item. (One that comes more than the window after its first
        // is handed out again rather than risk dropping an item's only copy.)
        if self.redundant && !self.delivered.insert(ident) {
            return None;
        }
        if self.counted.remove(&ident) {
            // Reported superseded, yet it arrived whole before the cancel took effect.
            self.superseded -= 1;
        }
        if self.latest {
            // Arrived whole: a later report of it as superseded is not counted.
            self.delivered.insert(ident);
        }
        if let Some(max) = self.max_age {
            if datagram::now_us().saturating_sub(sent_us) > max.as_micros() as u64 {
                self.stale += 1;
                return None;
            }
        }
        self.last = Some(self.last.map_or(ident, |l| l.max(ident)));
        // Pruned once the sets hold twice the window, not on every item: a `retain` over
        // thousands of idents per item was quadratic work at high item rates.
        if (self.latest || self.redundant)
            && self.delivered.len() + self.counted.len() > 2 * WINDOW as usize
        {
            let floor = self.last.unwrap_or(0).saturating_sub(WINDOW);
            self.delivered.retain(|&i| i > floor);
            self.counted.retain(|&i| i > floor);
        }
        Some((ident, data))
    }
}

impl Drop for RoutedState {
    fn drop(&mut self) {
        self.router.unregister(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(deliver_late: bool) -> RoutedState {
        let options = SubscribeOptions {
            deliver_late,
            ..SubscribeOptions::delivery(Delivery::Latest)
        };
        let router = Arc::new(Router::default());
        RoutedState::new((0, mpsc::channel(1).1), router, &options, 1 << 20)
    }

    fn item(ident: i64) -> Routed {
        Routed {
            ident,
            data: Bytes::from_static(b"frame"),
            sent_us: 0,
            arrived: std::time::Instant::now(),
        }
    }

    #[test]
    fn a_redundant_item_is_handed_out_once_whichever_copy_comes_first() {
        let options = SubscribeOptions::delivery(Delivery::Redundant);
        let mut s = RoutedState::new(
            (0, mpsc::channel(1).1),
            Arc::new(Router::default()),
            &options,
            1 << 20,
        );
        assert!(s.accept(item(2)).is_some(), "the datagram copy");
        assert!(s.accept(item(1)).is_some(), "out of order is fine");
        assert!(s.accept(item(2)).is_none(), "the stream copy of 2");
        assert!(s.accept(item(1)).is_none());
        assert_eq!(s.superseded, 0);
        // Far below the newest, an item is handed out rather than risk dropping it.
        assert!(s.accept(item(WINDOW + 10)).is_some());
        assert!(s.accept(item(3)).is_some());
    }

    #[test]
    fn a_late_item_is_dropped_and_counted_by_default() {
        let mut s = state(false);
        assert!(s.accept(item(5)).is_some());
        assert!(s.accept(item(3)).is_none());
        assert_eq!(s.superseded, 1);
        // The newest handed out stays the floor.
        assert!(s.accept(item(4)).is_none());
        assert!(s.accept(item(6)).is_some());
    }

    #[test]
    fn deliver_late_hands_out_late_items_without_counting_them() {
        let mut s = state(true);
        // The gateway reported 3 superseded (cancelled in flight) but it arrived whole.
        s.gateway_superseded(3);
        assert_eq!(s.superseded, 1);
        assert_eq!(s.accept(item(5)).map(|(i, _)| i), Some(5));
        assert_eq!(s.accept(item(3)).map(|(i, _)| i), Some(3));
        assert_eq!(s.superseded, 0);
        // The newest ident stays 5: a report about 4 still counts, 3 is not counted again.
        s.gateway_superseded(3);
        s.gateway_superseded(4);
        assert_eq!(s.superseded, 1);
        assert_eq!(s.last, Some(5));
    }
}
