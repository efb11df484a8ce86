//! The impairment models, on virtual time: no sockets, no clocks, no root. The forwarder feeds
//! real packets through them; the unit tests feed synthetic streams.

use std::time::Duration;

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::spec::{DirSpec, JitterKind, Loss};

/// Exact per-direction counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Packets that entered the link.
    pub packets: u64,
    /// Their bytes (IP packets, headers included).
    pub bytes: u64,
    /// Dropped by the loss model.
    pub lost: u64,
    /// Dropped because the queue in front of the serialiser was full (tail drop).
    pub queue_dropped: u64,
    /// Dropped because the link was down.
    pub outage_dropped: u64,
    /// Held back so that later packets could pass them.
    pub reordered: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Packets written to the other side, duplicates included.
    pub delivered: u64,
    /// Packets the other side's device refused (the host dropped them, not the link).
    pub write_errors: u64,
    /// Largest lateness of a release behind its scheduled time, in microseconds: how well the
    /// forwarder kept time.
    pub max_late_us: u64,
}

impl Counters {
    /// Packets dropped on purpose (loss, queue, outage).
    pub fn dropped(&self) -> u64 {
        self.lost + self.queue_dropped + self.outage_dropped
    }
}

/// What happens to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Dropped by the loss model.
    Lost,
    /// Dropped at the tail of a full queue.
    QueueDropped,
    /// Dropped because the link is down.
    Outage,
    /// Delivered at `at` (virtual time), `copies` times (2 when duplicated).
    Deliver {
        /// When the packet leaves the link.
        at: Duration,
        /// 1, or 2 for a duplicated packet.
        copies: u8,
        /// Held back so later packets can pass it.
        reordered: bool,
    },
}

/// The serialiser: when the medium is free again. Shared by both directions in half duplex.
#[derive(Debug, Default, Clone)]
pub struct Serializer {
    next_free: Duration,
}

/// Time-correlated jitter: linear between random knots `period` apart.
#[derive(Debug)]
struct Smooth {
    period: Duration,
    from: (Duration, f64),
    to: (Duration, f64),
}

impl Smooth {
    /// Extra delay at `t`, in seconds, within `±amplitude`.
    fn at(&mut self, t: Duration, amplitude: f64, rng: &mut StdRng) -> f64 {
        if t >= self.to.0 + self.period {
            // Idle for a while: start afresh rather than walk every missed knot.
            self.from = (t, rng.gen_range(-amplitude..=amplitude));
            self.to = (t + self.period, rng.gen_range(-amplitude..=amplitude));
        }
        while t >= self.to.0 {
            self.from = self.to;
            self.to = (
                self.to.0 + self.period,
                rng.gen_range(-amplitude..=amplitude),
            );
        }
        let span = (self.to.0 - self.from.0).as_secs_f64();
        let frac = if span > 0.0 {
            (t.saturating_sub(self.from.0)).as_secs_f64() / span
        } else {
            0.0
        };
        self.from.1 + (self.to.1 - self.from.1) * frac
    }
}

/// One direction of the link.
#[derive(Debug)]
pub struct Direction {
    spec: DirSpec,
    // Separate random streams, so that changing the jitter does not change which packets are
    // lost: two transports over the same seed see the same loss pattern per packet index.
    loss_rng: StdRng,
    delay_rng: StdRng,
    misc_rng: StdRng,
    bad: bool,
    smooth: Smooth,
    last_arrival: Duration,
    /// What has happened so far.
    pub counters: Counters,
}

impl Direction {
    /// A direction with its own random streams derived from `seed`.
    pub fn new(spec: DirSpec, seed: u64) -> Self {
        // A knot every four amplitudes keeps the slope of the delay at most 0.5 s/s, so a
        // packet sent later never arrives earlier.
        let period = (spec.jitter * 4).max(Duration::from_millis(1));
        Self {
            spec,
            loss_rng: StdRng::seed_from_u64(seed ^ 0x6c6f_7373),
            delay_rng: StdRng::seed_from_u64(seed ^ 0x0064_656c_6179),
            misc_rng: StdRng::seed_from_u64(seed ^ 0x6d69_7363),
            bad: false,
            smooth: Smooth {
                period,
                from: (Duration::ZERO, 0.0),
                to: (period, 0.0),
            },
            last_arrival: Duration::ZERO,
            counters: Counters::default(),
        }
    }

    /// The spec this direction applies.
    pub fn spec(&self) -> &DirSpec {
        &self.spec
    }

    fn lose(&mut self) -> bool {
        match self.spec.loss {
            Loss::None => false,
            Loss::Random { rate } => rate > 0.0 && self.loss_rng.gen_bool(rate),
            Loss::Bursty { rate, mean_burst } => {
                // Gilbert-Elliott with a lossless good state and a lossy bad state: leaving bad
                // with p = 1/burst gives geometric bursts of mean `burst`; entering it with
                // rate·p/(1−rate) makes the long-run bad fraction `rate`.
                let leave = 1.0 / mean_burst;
                let enter = (rate * leave / (1.0 - rate)).clamp(0.0, 1.0);
                let lost = self.bad;
                self.bad = if self.bad {
                    !self.loss_rng.gen_bool(leave)
                } else {
                    self.loss_rng.gen_bool(enter)
                };
                lost
            }
        }
    }

    /// Decides the fate of a packet of `len` bytes offered at `now`.
    pub fn offer(&mut self, now: Duration, len: usize, down: bool, ser: &mut Serializer) -> Fate {
        self.counters.packets += 1;
        self.counters.bytes += len as u64;
        if down {
            self.counters.outage_dropped += 1;
            return Fate::Outage;
        }
        if self.lose() {
            self.counters.lost += 1;
            return Fate::Lost;
        }
        let departure = match self.spec.rate_bit_s {
            Some(rate) => {
                let start = ser.next_free.max(now);
                if start - now > self.spec.queue {
                    self.counters.queue_dropped += 1;
                    return Fate::QueueDropped;
                }
                let tx =
                    Duration::from_nanos((len as u64 * 8).saturating_mul(1_000_000_000) / rate);
                ser.next_free = start + tx;
                ser.next_free
            }
            None => now,
        };
        let amplitude = self.spec.jitter.as_secs_f64();
        let extra = if amplitude <= 0.0 {
            0.0
        } else {
            match self.spec.jitter_kind {
                JitterKind::Smooth => self.smooth.at(departure, amplitude, &mut self.delay_rng),
                JitterKind::Independent => self.delay_rng.gen_range(-amplitude..=amplitude),
            }
        };
        let delay = (self.spec.delay.as_secs_f64() + extra).max(0.0);
        let mut at = (departure + Duration::from_secs_f64(delay)).max(self.last_arrival);
        self.last_arrival = at;
        let reordered = self.spec.reorder > 0.0 && self.misc_rng.gen_bool(self.spec.reorder);
        if reordered {
            // Held back past the FIFO point: later packets (which only wait for
            // `last_arrival`) overtake it.
            at += self.spec.reorder_gap;
            self.counters.reordered += 1;
        }
        let copies = if self.spec.duplicate > 0.0 && self.misc_rng.gen_bool(self.spec.duplicate) {
            self.counters.duplicated += 1;
            2
        } else {
            1
        };
        Fate::Deliver {
            at,
            copies,
            reordered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{DirSpec, Profile};

    const MS: Duration = Duration::from_millis(1);

    /// Offers `n` packets of `len` bytes, `gap` apart; returns their fates.
    fn run(dir: &mut Direction, n: usize, len: usize, gap: Duration) -> Vec<(Duration, Fate)> {
        let mut ser = Serializer::default();
        (0..n)
            .map(|i| {
                let now = gap * i as u32;
                (now, dir.offer(now, len, false, &mut ser))
            })
            .collect()
    }

    fn delivered(fates: &[(Duration, Fate)]) -> Vec<(Duration, Duration)> {
        fates
            .iter()
            .filter_map(|(sent, f)| match f {
                Fate::Deliver { at, .. } => Some((*sent, *at)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn random_loss_hits_its_rate_and_is_reproducible() {
        let spec = DirSpec {
            loss: Loss::Random { rate: 0.02 },
            ..DirSpec::default()
        };
        let mut a = Direction::new(spec.clone(), 7);
        let fates = run(&mut a, 100_000, 100, MS);
        let lost = fates.iter().filter(|(_, f)| *f == Fate::Lost).count();
        assert!((1_800..=2_200).contains(&lost), "lost {lost} of 100000");
        assert_eq!(a.counters.lost, lost as u64);
        assert_eq!(a.counters.packets, 100_000);

        let mut b = Direction::new(spec.clone(), 7);
        assert_eq!(
            run(&mut b, 100_000, 100, MS),
            fates,
            "same seed, same fates"
        );
        let mut c = Direction::new(spec, 8);
        assert_ne!(run(&mut c, 100_000, 100, MS), fates, "another seed differs");
    }

    #[test]
    fn bursty_loss_has_its_rate_and_mean_burst() {
        let mut dir = Direction::new(
            DirSpec {
                loss: Loss::Bursty {
                    rate: 0.05,
                    mean_burst: 3.0,
                },
                ..DirSpec::default()
            },
            3,
        );
        let fates = run(&mut dir, 200_000, 100, MS);
        let lost: Vec<bool> = fates.iter().map(|(_, f)| *f == Fate::Lost).collect();
        let total = lost.iter().filter(|l| **l).count() as f64;
        let bursts = lost.windows(2).filter(|w| w[1] && !w[0]).count() as f64;
        let rate = total / lost.len() as f64;
        let mean_burst = total / bursts;
        assert!((0.045..=0.055).contains(&rate), "rate {rate}");
        assert!((2.7..=3.3).contains(&mean_burst), "mean burst {mean_burst}");
    }

    #[test]
    fn rate_serialises_and_tail_drops() {
        // 8 Mbit/s = 1 MB/s; offer 1000-byte packets at 2 MB/s for one second.
        let mut dir = Direction::new(
            DirSpec {
                rate_bit_s: Some(8_000_000),
                queue: 20 * MS,
                ..DirSpec::default()
            },
            1,
        );
        let fates = run(&mut dir, 2_000, 1_000, Duration::from_micros(500));
        let out = delivered(&fates);
        let dropped = fates
            .iter()
            .filter(|(_, f)| *f == Fate::QueueDropped)
            .count();
        // About half gets through; none waits longer than the queue plus one packet time.
        assert!(
            (980..=1_040).contains(&out.len()),
            "{} delivered",
            out.len()
        );
        assert_eq!(out.len() + dropped, 2_000);
        for (sent, at) in &out {
            assert!(*at - *sent <= 21 * MS, "waited {:?}", *at - *sent);
        }
        // Back to back at exactly the link rate: 1 ms per 1000 bytes.
        let gaps: Vec<Duration> = out.windows(2).map(|w| w[1].1 - w[0].1).collect();
        assert!(gaps[100..].iter().all(|g| *g >= MS), "faster than the rate");
        let span = out.last().unwrap().1 - out[0].1;
        let rate = (out.len() - 1) as f64 * 1_000.0 / span.as_secs_f64();
        assert!((990_000.0..=1_010_000.0).contains(&rate), "{rate} B/s");
    }

    fn delay_stats(kind: JitterKind, gap: Duration) -> (f64, f64, f64, usize) {
        let mut dir = Direction::new(
            DirSpec {
                delay: 25 * MS,
                jitter: 5 * MS,
                jitter_kind: kind,
                ..DirSpec::default()
            },
            11,
        );
        let n = (Duration::from_secs(20).as_nanos() / gap.as_nanos()) as usize;
        let out = delivered(&run(&mut dir, n, 100, gap));
        let delays: Vec<f64> = out
            .iter()
            .map(|(s, a)| (*a - *s).as_secs_f64() * 1e3)
            .collect();
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        let min = delays.iter().cloned().fold(f64::MAX, f64::min);
        let max = delays.iter().cloned().fold(0.0, f64::max);
        let inversions = out.windows(2).filter(|w| w[1].1 < w[0].1).count();
        (mean, min, max, inversions)
    }

    #[test]
    fn smooth_jitter_keeps_its_mean_at_any_packet_rate() {
        for gap in [Duration::from_millis(10), Duration::from_micros(200)] {
            let (mean, min, max, inversions) = delay_stats(JitterKind::Smooth, gap);
            assert!((24.5..=25.5).contains(&mean), "mean {mean} ms at {gap:?}");
            assert!(min >= 19.99 && max <= 30.01, "range {min}..{max}");
            assert!(max - min > 8.0, "jitter too narrow: {min}..{max}");
            assert_eq!(inversions, 0);
        }
        // The independent model's bias that smooth jitter avoids: at 5000 pps the clamp to keep
        // order pushes the mean well above the base.
        let (mean, ..) = delay_stats(JitterKind::Independent, Duration::from_micros(200));
        assert!(mean > 27.0, "independent mean {mean}");
    }

    #[test]
    fn reorder_and_duplicate_at_their_rates() {
        let mut dir = Direction::new(
            DirSpec {
                delay: 10 * MS,
                reorder: 0.05,
                reorder_gap: 3 * MS,
                duplicate: 0.02,
                ..DirSpec::default()
            },
            5,
        );
        let fates = run(&mut dir, 20_000, 100, Duration::from_micros(500));
        let out = delivered(&fates);
        assert_eq!(out.len(), 20_000);
        // A packet is out of order when some packet sent after it arrives before it.
        let mut earliest_later = Duration::MAX;
        let mut overtaken = 0;
        for (_, at) in out.iter().rev() {
            if *at > earliest_later {
                overtaken += 1;
            }
            earliest_later = earliest_later.min(*at);
        }
        assert!((800..=1_200).contains(&overtaken), "{overtaken}");
        assert_eq!(dir.counters.reordered, overtaken);
        let dups = fates
            .iter()
            .filter(|(_, f)| matches!(f, Fate::Deliver { copies: 2, .. }))
            .count();
        assert!((300..=500).contains(&dups), "{dups}");
        assert_eq!(dir.counters.duplicated as usize, dups);
    }

    #[test]
    fn half_duplex_shares_the_medium() {
        let spec = DirSpec {
            rate_bit_s: Some(8_000_000),
            queue: 50 * MS,
            ..DirSpec::default()
        };
        let mut ab = Direction::new(spec.clone(), 1);
        let mut ba = Direction::new(spec, 2);
        let mut shared = Serializer::default();
        let (mut sent_ab, mut sent_ba) = (0, 0);
        let mut last = Duration::ZERO;
        // Both sides offer 1 MB/s each for a second over a 1 MB/s medium.
        for i in 0..1_000u32 {
            let now = MS * i;
            // Whoever comes first finds the free slot; alternate, as real arrivals would.
            let mut order = [(&mut ab, &mut sent_ab), (&mut ba, &mut sent_ba)];
            if i % 2 == 1 {
                order.reverse();
            }
            for (dir, n) in order {
                if let Fate::Deliver { at, .. } = dir.offer(now, 1_000, false, &mut shared) {
                    *n += 1;
                    last = last.max(at);
                }
            }
        }
        let total = sent_ab + sent_ba;
        assert!((1_000..=1_060).contains(&total), "{total} through");
        assert!(sent_ab > 400 && sent_ba > 400, "{sent_ab} / {sent_ba}");
        assert!(last <= Duration::from_millis(1_060));
    }

    #[test]
    fn a_down_link_drops_everything() {
        let mut dir = Direction::new(Profile::L2.spec().a_to_b, 1);
        let mut ser = Serializer::default();
        for i in 0..100u32 {
            assert_eq!(dir.offer(MS * i, 1_200, true, &mut ser), Fate::Outage);
        }
        assert_eq!(dir.counters.outage_dropped, 100);
        assert_eq!(dir.counters.dropped(), 100);
    }
}
