//! Samples that count for a while: the delivery rates, arrival spreads and delays the
//! `Latest` and `Fec` senders steer by. Sans-IO: the caller passes the time.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// At most `cap` samples, each counting for `keep` after it was taken.
#[derive(Debug)]
pub(super) struct Recent<T> {
    samples: VecDeque<(Instant, T)>,
    keep: Duration,
    cap: usize,
}

impl<T: Copy> Recent<T> {
    pub(super) fn new(keep: Duration, cap: usize) -> Self {
        Self {
            samples: VecDeque::with_capacity(cap),
            keep,
            cap,
        }
    }

    /// A sample taken at `now`; the oldest goes if there are `cap` already.
    pub(super) fn push(&mut self, now: Instant, value: T) {
        if self.samples.len() == self.cap {
            self.samples.pop_front();
        }
        self.samples.push_back((now, value));
    }

    /// The samples that still count at `now`, oldest first.
    pub(super) fn values(&mut self, now: Instant) -> impl Iterator<Item = T> + '_ {
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > self.keep)
        {
            self.samples.pop_front();
        }
        self.samples.iter().map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_expire_and_are_capped() {
        let now = Instant::now();
        let mut r = Recent::new(Duration::from_secs(1), 3);
        for i in 0..5 {
            r.push(now + Duration::from_millis(i * 100), i);
        }
        assert_eq!(r.values(now).collect::<Vec<_>>(), vec![2, 3, 4]);
        let later = now + Duration::from_millis(1_350);
        assert_eq!(r.values(later).collect::<Vec<_>>(), vec![4]);
    }
}
