//! What a link does: one [`DirSpec`] per direction, and the named robotics Wi-Fi profiles.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};

/// How packets are lost, before anything else touches them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Loss {
    /// Nothing is lost.
    #[default]
    None,
    /// Each packet is lost independently with this probability (Bernoulli).
    Random {
        /// Probability in `0.0..=1.0`.
        rate: f64,
    },
    /// Gilbert-Elliott: a good state that loses nothing and a bad state that loses everything.
    /// The long-run loss is `rate`; a bad spell lasts `mean_burst` packets on average.
    Bursty {
        /// Long-run fraction of packets lost, `0.0..1.0`.
        rate: f64,
        /// Mean number of consecutive packets lost in one burst, `>= 1`.
        mean_burst: f64,
    },
}

/// How the one-way delay varies around its base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum JitterKind {
    /// Time-correlated: the extra delay moves linearly between random points a few jitter
    /// amplitudes apart, so packets sent close together see nearly the same delay and stay in
    /// order. The mean delay does not depend on the packet rate.
    #[default]
    Smooth,
    /// Independent draw per packet, clamped to keep order. Raises the mean delay with the packet
    /// rate (a flow that sends more packets sees more delay); kept for comparison only.
    Independent,
}

/// The impairments of one direction, applied in this order: loss, rate (serialisation and tail
/// drop), delay with jitter, reordering, duplication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirSpec {
    /// Random or bursty loss.
    pub loss: Loss,
    /// Link rate in bits per second; `None` forwards as fast as packets come.
    pub rate_bit_s: Option<u64>,
    /// Longest a packet may wait for the serialiser; a packet that would wait longer is dropped
    /// (tail drop, as a router's queue does). Only used with a rate.
    pub queue: Duration,
    /// Base one-way delay.
    pub delay: Duration,
    /// Jitter amplitude: the delay varies within `delay ± jitter`.
    pub jitter: Duration,
    /// How the jitter varies.
    pub jitter_kind: JitterKind,
    /// Probability that a packet is held back by `reorder_gap`, letting later packets pass it.
    pub reorder: f64,
    /// How long a reordered packet is held back.
    pub reorder_gap: Duration,
    /// Probability that a packet is delivered twice.
    pub duplicate: f64,
}

impl Default for DirSpec {
    fn default() -> Self {
        Self {
            loss: Loss::None,
            rate_bit_s: None,
            queue: Duration::from_millis(50),
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            jitter_kind: JitterKind::Smooth,
            reorder: 0.0,
            reorder_gap: Duration::from_millis(2),
            duplicate: 0.0,
        }
    }
}

impl DirSpec {
    /// Checks that every probability is within range and a burst is at least one packet long.
    pub fn validate(&self) -> Result<(), SpecError> {
        let prob = |name: &'static str, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(SpecError::Probability(name, p))
            }
        };
        match self.loss {
            Loss::None => {}
            Loss::Random { rate } => prob("loss", rate)?,
            Loss::Bursty { rate, mean_burst } => {
                if !(0.0..1.0).contains(&rate) {
                    return Err(SpecError::Probability("bursty loss", rate));
                }
                if mean_burst.is_nan() || mean_burst < 1.0 {
                    return Err(SpecError::Burst(mean_burst));
                }
            }
        }
        prob("reorder", self.reorder)?;
        prob("duplicate", self.duplicate)?;
        if self.rate_bit_s == Some(0) {
            return Err(SpecError::ZeroRate);
        }
        Ok(())
    }
}

/// A whole link: the direction from side A to side B, the way back, and what they share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkSpec {
    /// Packets sent by side A.
    pub a_to_b: DirSpec,
    /// Packets sent by side B.
    pub b_to_a: DirSpec,
    /// Both directions share one serialiser, as Wi-Fi airtime is shared; each direction's
    /// `rate_bit_s` must then be the same.
    pub half_duplex: bool,
    /// Seed for every random draw: the same seed and the same packets give the same fate.
    pub seed: u64,
}

impl LinkSpec {
    /// The same impairments both ways.
    pub fn symmetric(dir: DirSpec) -> Self {
        Self {
            a_to_b: dir.clone(),
            b_to_a: dir,
            half_duplex: false,
            seed: 1,
        }
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Checks both directions.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.a_to_b.validate()?;
        self.b_to_a.validate()?;
        if self.half_duplex && self.a_to_b.rate_bit_s != self.b_to_a.rate_bit_s {
            return Err(SpecError::HalfDuplexRates);
        }
        Ok(())
    }
}

/// A spec that cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    /// A probability outside `0..=1`.
    #[error("{0} probability {1} is not within 0..=1")]
    Probability(&'static str, f64),
    /// A mean burst below one packet.
    #[error("mean burst {0} must be at least 1 packet")]
    Burst(f64),
    /// A zero rate would never send anything.
    #[error("a rate of 0 bit/s sends nothing; leave the rate unset for no limit")]
    ZeroRate,
    /// Half duplex with two different rates.
    #[error("half duplex shares one serialiser: both directions need the same rate")]
    HalfDuplexRates,
    /// An unknown profile name.
    #[error("unknown link profile {0:?} (known: L1, L2, L3, L4)")]
    UnknownProfile(String),
}

/// The robotics Wi-Fi profiles of the project's `LINKEM.md`, by name.
///
/// RTT and jitter are split evenly over the two directions; loss applies to each direction.
/// Every profile keeps a 50 ms tail-drop queue, chosen deliberately: a deeper queue hides loss
/// behind delay (an 80 ms queue let TCP keep 95% of the rate at 2% bursty loss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Profile {
    /// Good Wi-Fi: 100 Mbit/s, RTT 4 ± 2 ms, 0.1% random loss.
    L1,
    /// Robot Wi-Fi: 40 Mbit/s, RTT 20 ± 10 ms, 1% random loss.
    L2,
    /// Edge of range: 10 Mbit/s, RTT 60 ± 30 ms, 5% bursty loss (mean burst 3).
    L3,
    /// Outage or roam: L2, with total loss switched on and off by the user
    /// ([`crate::Link::set_down`]) for 2 / 10 / 30 s.
    L4,
}

impl Profile {
    /// Every profile, in order.
    pub const ALL: [Self; 4] = [Self::L1, Self::L2, Self::L3, Self::L4];

    /// The profile's link, with seed 1.
    pub fn spec(self) -> LinkSpec {
        let dir = |mbit: u64, rtt_ms: u64, jitter_rtt_ms: u64, loss: Loss| DirSpec {
            loss,
            rate_bit_s: Some(mbit * 1_000_000),
            queue: Duration::from_millis(50),
            delay: Duration::from_micros(rtt_ms * 500),
            jitter: Duration::from_micros(jitter_rtt_ms * 500),
            ..DirSpec::default()
        };
        LinkSpec::symmetric(match self {
            Self::L1 => dir(100, 4, 2, Loss::Random { rate: 0.001 }),
            Self::L2 | Self::L4 => dir(40, 20, 10, Loss::Random { rate: 0.01 }),
            Self::L3 => dir(
                10,
                60,
                30,
                Loss::Bursty {
                    rate: 0.05,
                    mean_burst: 3.0,
                },
            ),
        })
    }

    /// The round-trip time without jitter or queueing.
    pub fn rtt(self) -> Duration {
        let spec = self.spec();
        spec.a_to_b.delay + spec.b_to_a.delay
    }

    /// A one-line description.
    pub fn describe(self) -> &'static str {
        match self {
            Self::L1 => "good Wi-Fi: 100 Mbit/s, RTT 4 ± 2 ms, 0.1% loss",
            Self::L2 => "robot Wi-Fi: 40 Mbit/s, RTT 20 ± 10 ms, 1% loss",
            Self::L3 => "edge of range: 10 Mbit/s, RTT 60 ± 30 ms, 5% bursty loss (mean burst 3)",
            Self::L4 => "outage / roam: L2, then total loss for 2 / 10 / 30 s (set_down)",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl FromStr for Profile {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "L1" => Ok(Self::L1),
            "L2" => Ok(Self::L2),
            "L3" => Ok(Self::L3),
            "L4" => Ok(Self::L4),
            _ => Err(SpecError::UnknownProfile(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_and_match_the_table() {
        for p in Profile::ALL {
            assert_eq!(p.to_string().parse::<Profile>(), Ok(p));
            p.spec().validate().unwrap();
        }
        assert_eq!("l2".parse::<Profile>(), Ok(Profile::L2));
        assert!(matches!(
            "L9".parse::<Profile>(),
            Err(SpecError::UnknownProfile(_))
        ));
        assert_eq!(Profile::L2.rtt(), Duration::from_millis(20));
        assert_eq!(Profile::L3.spec().a_to_b.jitter, Duration::from_millis(15));
        assert_eq!(Profile::L1.spec().b_to_a.rate_bit_s, Some(100_000_000));
    }

    #[test]
    fn validation_refuses_nonsense() {
        let bad = |dir: DirSpec| LinkSpec::symmetric(dir).validate().unwrap_err();
        assert!(matches!(
            bad(DirSpec {
                loss: Loss::Random { rate: 1.5 },
                ..DirSpec::default()
            }),
            SpecError::Probability("loss", _)
        ));
        assert!(matches!(
            bad(DirSpec {
                loss: Loss::Bursty {
                    rate: 0.1,
                    mean_burst: 0.5
                },
                ..DirSpec::default()
            }),
            SpecError::Burst(_)
        ));
        assert_eq!(
            bad(DirSpec {
                rate_bit_s: Some(0),
                ..DirSpec::default()
            }),
            SpecError::ZeroRate
        );
        let mut spec = Profile::L2.spec();
        spec.half_duplex = true;
        spec.b_to_a.rate_bit_s = Some(1);
        assert_eq!(spec.validate(), Err(SpecError::HalfDuplexRates));
    }
}
