//! The pace of `Fec` shards: a little above the path's bottleneck rate, measured from how
//! fast an item's shards arrived at the client (the spread its report carries), and under it
//! while the reports' delays show a queue building ([`Queue`]). Sans-IO: the caller passes
//! the time.
//!
//! Why our own pacing: quinn's BBR, kept in its start-up by a sender that never fills the
//! path, paces at up to 2.9 times the path's rate; an item's shards then reach the link as a
//! burst, and on the emulated L3 link (10 Mbit/s, a 50 ms queue) a tenth to a quarter of them
//! were dropped at the queue once three items were on their way.
//!
//! Why the arrival spread: shards leaving faster than the bottleneck arrive spaced by it, so
//! `(shards - 1) * size / spread` is its rate; shards paced slower arrive at their own pace,
//! and pacing at [`GAIN`] times the estimate raises it by that much per round until the
//! bottleneck caps it. Traffic sharing the bottleneck stretches the spread: the estimate is
//! the share left to the shards.
//!
//! Measured on L3 (`tcp-vs-quic --profile L3 --workload camera|telemetry`): as built, the
//! camera alone 20.6–21.4 fps at frame age p99 121–128 ms, and beside the telemetry feeds
//! 20.6–21.1 fps with the feeds' p99 at 171–192 ms (175–177 beside a `Latest` camera at
//! 15.1–15.5 fps). A
//! gain of 1.1 without the queue check gave the camera alone 20.5–23.3 fps at p99 150–155
//! ms, but beside the feeds kept the queue full (their p99 714 ms against 203); a gain of 1.0
//! left the camera at 18.4–18.8 fps; the samples' maximum instead of their median overran
//! the queue (850–1,025 packets dropped there, 17 fps); pacing each shard to the
//! microsecond, without [`BURST`], halved the rate.

use std::time::{Duration, Instant};

use super::recent::Recent;

/// How long a rate sample counts: the median of this window is the estimate.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// Samples kept (about 25 items a second).
const SAMPLES: usize = 64;
/// Fewest shards for a sample: the spread of fewer is mostly timer noise.
const MIN_SHARDS: u32 = 4;
/// How far behind its pace the sender may fall and catch up in a burst: tokio's timers fire
/// up to a millisecond late, about one shard's time at 10 Mbit/s, so pacing each shard to the
/// microsecond without this credit sent at half the rate (and measured itself there).
const BURST: Duration = Duration::from_millis(4);
/// Shards leave at this many times the estimated rate: enough to find a faster path, little
/// enough that the queue it builds drains between items.
pub(super) const GAIN: f64 = 1.1;
/// The gain while the reports show a queue building: under the rate, so that it drains.
pub(super) const DRAIN: f64 = 0.9;
/// Queueing delay over which the path counts as queueing: above what the jitter of the
/// emulated L3 link (±15 ms one way) shows alone, under its 50 ms queue. At 20 ms the jitter
/// (and a busy client's scheduling) tripped it: the camera beside the telemetry feeds fell
/// from 30 to 22.6 fps on L2, and alone to 17.2 fps on L3 in one run of four.
const QUEUE_TARGET: Duration = Duration::from_millis(30);
/// How long the lowest delay seen counts as the path's empty-queue delay.
const DELAY_WINDOW: Duration = Duration::from_secs(4);

/// The pacing state of one `Fec` subscription.
#[derive(Debug)]
pub(super) struct Pacer {
    samples: Recent<f64>,
    /// When the next shard may leave.
    next_at: Instant,
    /// This item's rate, bytes per second; zero while no rate is known (quinn paces alone).
    rate: f64,
}

impl Pacer {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            samples: Recent::new(RATE_WINDOW, SAMPLES),
            next_at: now,
            rate: 0.0,
        }
    }

    /// A report: `shards` of `len` bytes arrived over `spread`.
    pub(super) fn sample(&mut self, now: Instant, shards: u32, len: u64, spread: Duration) {
        if shards < MIN_SHARDS || spread.is_zero() {
            return;
        }
        let bytes = f64::from(shards - 1) * len as f64;
        self.samples.push(now, bytes / spread.as_secs_f64());
    }

    /// The bottleneck's estimated rate, bytes per second; zero before the first sample.
    pub(super) fn rate(&mut self, now: Instant) -> f64 {
        // The median: a sample taken while the path's delay shrank reads high, one while it
        // grew reads low (±30% on L3's jitter); their maximum overran the queue.
        let mut rates: Vec<f64> = self.samples.values(now).collect();
        if rates.is_empty() {
            return 0.0;
        }
        let mid = rates.len() / 2;
        rates.select_nth_unstable_by(mid, f64::total_cmp);
        rates[mid]
    }

    /// Bytes the path carries in `time` at the estimated rate (zero before any estimate).
    pub(super) fn queue_for(&mut self, now: Instant, time: Duration) -> usize {
        (self.rate(now) * time.as_secs_f64()) as usize
    }

    /// A new item starts: its shards leave at the estimate times `gain`.
    pub(super) fn item(&mut self, now: Instant, gain: f64) {
        self.rate = self.rate(now) * gain;
    }

    /// When the next shard may leave, if not now.
    pub(super) fn wait(&self, now: Instant) -> Option<Instant> {
        (self.next_at > now).then_some(self.next_at)
    }

    /// A shard of `len` bytes leaves at `now`.
    pub(super) fn sent(&mut self, now: Instant, len: usize) {
        if self.rate > 0.0 {
            // Credit for at most `BURST` of lateness, none for idling longer.
            let floor = now.checked_sub(BURST).unwrap_or(now);
            self.next_at =
                self.next_at.max(floor) + Duration::from_secs_f64(len as f64 / self.rate);
        }
    }
}

/// Whether a queue is building on the path: the reports' delay against the lowest of the
/// last [`DELAY_WINDOW`] (the clocks' offset cancels out).
#[derive(Debug)]
pub(super) struct Queue {
    /// Recent delays, microseconds.
    delays: Recent<i64>,
    /// The newest delay over the lowest.
    queued: Duration,
}

impl Default for Queue {
    fn default() -> Self {
        Self {
            delays: Recent::new(DELAY_WINDOW, SAMPLES * 4),
            queued: Duration::ZERO,
        }
    }
}

impl Queue {
    pub(super) fn sample(&mut self, now: Instant, delay_us: i64) {
        self.delays.push(now, delay_us);
        let lowest = self.delays.values(now).min().unwrap_or(delay_us);
        self.queued = Duration::from_micros(delay_us.saturating_sub(lowest).unsigned_abs());
    }

    pub(super) fn building(&self) -> bool {
        self.queued > QUEUE_TARGET
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_queue_is_a_delay_over_the_lowest_recent_one() {
        let now = Instant::now();
        let mut q = Queue::default();
        // The clocks' offset (here -5 s) cancels out.
        q.sample(now, -5_000_000 + 60_000);
        q.sample(now + MS, -5_000_000 + 75_000);
        assert!(!q.building(), "15 ms over the lowest: jitter");
        q.sample(now + 2 * MS, -5_000_000 + 100_000);
        assert!(q.building(), "40 ms over the lowest");
        // Once the low sample is older than the window, the floor moves up.
        q.sample(now + DELAY_WINDOW + 2 * MS, -5_000_000 + 100_000);
        assert!(!q.building());
    }

    #[test]
    fn no_sample_no_pacing() {
        let now = Instant::now();
        let mut p = Pacer::new(now);
        p.item(now, GAIN);
        p.sent(now, 1_400);
        assert_eq!(p.wait(now), None);
        // Too few shards, or no spread, is no sample.
        p.sample(now, 3, 1_400, 10 * MS);
        p.sample(now, 30, 1_400, Duration::ZERO);
        assert_eq!(p.rate(now), 0.0);
    }

    #[test]
    fn shards_leave_a_little_above_the_measured_rate() {
        let now = Instant::now();
        let mut p = Pacer::new(now);
        // 30 shards of 1,250 bytes over 29 ms: 1.25 MB/s; the median of three samples.
        p.sample(now, 30, 1_250, 29 * MS);
        p.sample(now, 30, 1_250, 10 * MS);
        p.sample(now, 30, 1_250, 40 * MS);
        assert!((p.rate(now) - 1.25e6).abs() < 1.0);
        // At 1.1x: a 1,250-byte shard every 0.91 ms, after a burst of BURST's worth (4 ms,
        // 4 shards) when the sender was idle.
        let t0 = now + 100 * MS;
        p.item(t0, GAIN);
        let mut sent = 0;
        while p.wait(t0).is_none() && sent < 100 {
            p.sent(t0, 1_250);
            sent += 1;
        }
        assert_eq!(sent, 5, "a burst of 4 ms and one shard");
        let gap = p.wait(t0).unwrap() - t0;
        assert!((500..=950).contains(&gap.as_micros()), "{gap:?}");
        // A timer that fired 1 ms late loses no rate: the credit covers it.
        let late = t0 + 2 * MS;
        p.sent(late, 1_250);
        p.sent(late, 1_250);
        assert!(p.wait(late).is_some_and(|at| at - late < MS));
        // Samples expire.
        assert_eq!(p.rate(now + RATE_WINDOW + MS), 0.0);
    }
}
