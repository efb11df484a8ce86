//! How many `Latest` items may be on their way at once: sized from the rate at which the
//! path delivers them and its round trip, not a constant. Sans-IO: the caller passes the
//! time and the path's minimum RTT, so tests drive it with made-up clocks.
//!
//! Why not quinn's congestion window: with BBR, a camera that never fills the link keeps
//! quinn's controller in startup, whose window only grows (measured on the emulated L3 link:
//! 12 MB after 12 s of a 10 Mbit/s path), and loss-based controllers shrink it on Wi-Fi's
//! random loss. The delivery rate of the items themselves is what the path gives them.
//!
//! The rule, as in BBR: items whose bytes fill the path's bandwidth-delay product (rounded
//! up, which probes for more), plus the one being serialised. A queue of a frame or so builds at most;
//! with a rate-limited link the items in flight are what keep it busy. The rate is the
//! highest delivery-rate sample of the last [`RATE_WINDOW`] (a sample made while the sender
//! had too few items to fill the path is low, so the maximum is the estimate).

use std::time::{Duration, Instant};

use super::recent::Recent;

/// Fewest items in flight: one being acknowledged while the next is sent.
const MIN_IN_FLIGHT: usize = 2;
/// Most items in flight, whatever the path: bounds the memory and the queue a subscription
/// can build (40 KB frames: 640 KB).
const MAX_IN_FLIGHT: usize = 16;
/// How long a delivery-rate sample counts (BBR keeps its maximum over about ten round
/// trips; a Wi-Fi link's rate moves within seconds).
const RATE_WINDOW: Duration = Duration::from_secs(2);
/// Delivery-rate samples kept (at 30 items/s, [`RATE_WINDOW`] holds 60; the maximum of the
/// newest is what matters).
const SAMPLES: usize = 64;

/// The state at an item's send, to measure the delivery rate when it is acknowledged.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sent {
    /// When the item left.
    pub(super) at: Instant,
    len: u64,
    /// Bytes delivered when this item left.
    delivered: u64,
}

/// The in-flight limit of one `Latest` subscription.
#[derive(Debug)]
pub(super) struct Window {
    /// Bytes of items acknowledged so far.
    delivered: u64,
    /// Recent delivery-rate samples, bytes per second.
    samples: Recent<f64>,
    /// Mean item size (exponentially weighted), bytes.
    mean_len: f64,
}

impl Window {
    pub(super) fn new() -> Self {
        Self {
            delivered: 0,
            samples: Recent::new(RATE_WINDOW, SAMPLES),
            mean_len: 0.0,
        }
    }

    /// An item of `len` bytes leaves now; hand the result back to [`Window::acked`].
    pub(super) fn sent(&mut self, now: Instant, len: usize) -> Sent {
        let len = len as u64;
        self.mean_len = if self.mean_len == 0.0 {
            len as f64
        } else {
            0.875 * self.mean_len + 0.125 * len as f64
        };
        Sent {
            at: now,
            len,
            delivered: self.delivered,
        }
    }

    /// The item sent as `sent` was acknowledged whole at `now`: one delivery-rate sample, the
    /// bytes delivered while it was on its way over the time they took.
    pub(super) fn acked(&mut self, now: Instant, sent: Sent) {
        self.delivered_part(now, sent, sent.len);
    }

    /// As [`acked`](Self::acked), for an item of which only `len` bytes arrived (`Fec`:
    /// the shards the client got).
    pub(super) fn delivered_part(&mut self, now: Instant, sent: Sent, len: u64) {
        self.delivered += len;
        // Over its own trip: an item sent into an idle path measures itself, one sent behind
        // others also the deliveries made meanwhile.
        let elapsed = now.saturating_duration_since(sent.at).as_secs_f64();
        if elapsed > 0.0 {
            let bytes = (self.delivered - sent.delivered) as f64;
            self.samples.push(now, bytes / elapsed);
        }
    }

    /// The path's delivery rate, bytes per second: the highest sample of the last
    /// [`RATE_WINDOW`]; zero before the first.
    pub(super) fn rate(&mut self, now: Instant) -> f64 {
        self.samples.values(now).fold(0.0, f64::max)
    }

    /// How many items may be in flight now, on a path whose minimum RTT is `min_rtt`.
    pub(super) fn limit(&mut self, now: Instant, min_rtt: Duration) -> usize {
        let rate = self.rate(now);
        if rate == 0.0 || self.mean_len == 0.0 {
            return MIN_IN_FLIGHT;
        }
        // The path's bandwidth-delay product in items, rounded up, plus the one being
        // serialised. Rounding up probes: on a path faster than the estimate, the extra item
        // raises the next samples.
        let pipe = (rate * min_rtt.as_secs_f64() / self.mean_len).ceil();
        (pipe as usize + 1).clamp(MIN_IN_FLIGHT, MAX_IN_FLIGHT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Simulates a path of `rate` bytes/s and round trip `rtt` carrying `len`-byte items as
    /// fast as the window allows, for `items` items; returns the limits seen.
    fn drive(rate: f64, rtt: Duration, len: usize, items: usize) -> Vec<usize> {
        let start = Instant::now();
        let mut w = Window::new();
        let mut now = start;
        // The link: when it is free next; items in flight with their ack times.
        let mut link_free = start;
        let mut in_flight: Vec<(Instant, Sent)> = Vec::new();
        let mut limits = Vec::new();
        let serialise = Duration::from_secs_f64(len as f64 / rate);
        for _ in 0..items {
            let limit = w.limit(now, rtt);
            limits.push(limit);
            while in_flight.len() >= limit {
                in_flight.sort_by_key(|(at, _)| *at);
                let (at, sent) = in_flight.remove(0);
                now = now.max(at);
                w.acked(now, sent);
            }
            let sent = w.sent(now, len);
            link_free = link_free.max(now) + serialise;
            in_flight.push((link_free + rtt, sent));
        }
        limits
    }

    #[test]
    fn a_new_subscription_starts_at_the_minimum() {
        let mut w = Window::new();
        assert_eq!(w.limit(Instant::now(), 20 * MS), MIN_IN_FLIGHT);
    }

    #[test]
    fn a_slow_short_path_keeps_few_items_in_flight() {
        // 10 Mbit/s, 40 ms: a 40 KB frame is 32 ms of link, the BDP 1.25 frames: two to fill
        // it and one being serialised. More would only queue.
        let limits = drive(1.25e6, 40 * MS, 40_000, 200);
        assert_eq!(limits.last(), Some(&3), "limits {limits:?}");
    }

    #[test]
    fn a_long_fat_path_grows_the_window() {
        // 100 Mbit/s, 100 ms: a BDP of 31 frames; the window grows to use it, bounded.
        let limits = drive(12.5e6, 100 * MS, 40_000, 400);
        let last = *limits.last().unwrap_or(&0);
        assert!(last >= 10, "limits {limits:?}");
        assert!(limits.iter().all(|&l| l <= MAX_IN_FLIGHT));
    }

    #[test]
    fn old_samples_expire() {
        let start = Instant::now();
        let mut w = Window::new();
        let sent = w.sent(start, 40_000);
        // 40 KB in 1 ms: a fast sample, which would allow many items.
        w.acked(start + MS, sent);
        assert!(w.limit(start + 2 * MS, 100 * MS) > MIN_IN_FLIGHT);
        // After the rate window, it no longer counts.
        assert_eq!(
            w.limit(start + RATE_WINDOW + 10 * MS, 100 * MS),
            MIN_IN_FLIGHT
        );
    }
}
