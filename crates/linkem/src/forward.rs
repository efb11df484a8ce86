//! The forwarder: one thread per direction moves raw IP packets from one namespace's TUN device
//! to the other's, holding each back until the model says it leaves the link.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    io,
    os::fd::OwnedFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use rustix::{
    event::{PollFd, PollFlags, Timespec},
    io::Errno,
};

use crate::model::{Counters, Direction, Fate, Serializer};

/// State shared between the [`crate::Link`] handle and its two forwarding threads.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    pub(crate) down: AtomicBool,
    /// Latest counters of each direction: `[a_to_b, b_to_a]`.
    pub(crate) counters: [Mutex<Counters>; 2],
    /// The first error a forwarding thread met, if it had to stop.
    pub(crate) error: Mutex<Option<String>>,
}

/// The longest a thread sleeps before looking at the stop flag.
const TICK: Duration = Duration::from_millis(20);
/// Packets read per wakeup before releasing due ones again, so a flood cannot delay releases.
const BATCH: usize = 64;

/// A packet waiting for its release time; ordered by time, then arrival order.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    at: Duration,
    seq: u64,
    data: Vec<u8>,
}

/// Everything one direction's thread needs.
pub(crate) struct Pipe {
    pub(crate) index: usize,
    pub(crate) src: Arc<OwnedFd>,
    pub(crate) dst: Arc<OwnedFd>,
    pub(crate) model: Direction,
    pub(crate) serializer: Arc<Mutex<Serializer>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) start: Instant,
}

impl Pipe {
    /// Runs until the stop flag is set or a device fails.
    pub(crate) fn run(mut self) {
        if let Err(e) = self.forward() {
            let mut slot = self
                .shared
                .error
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            slot.get_or_insert_with(|| format!("direction {}: {e}", self.index));
        }
        self.publish();
    }

    fn publish(&self) {
        *self.shared.counters[self.index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self.model.counters;
    }

    fn forward(&mut self) -> io::Result<()> {
        let mut held: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
        let mut pool: Vec<Vec<u8>> = Vec::new();
        let mut scratch = vec![0u8; 65_536];
        let mut seq = 0u64;
        while !self.shared.stop.load(Ordering::Relaxed) {
            // Release everything that is due.
            let now = self.start.elapsed();
            while held.peek().is_some_and(|h| h.0.at <= now) {
                let Some(Reverse(packet)) = held.pop() else {
                    break;
                };
                let c = &mut self.model.counters;
                match rustix::io::write(&*self.dst, &packet.data) {
                    Ok(_) => c.delivered += 1,
                    // The receiving device's queue is full or it went away: the host dropped
                    // it, not the emulated link, so it is counted apart.
                    Err(_) => c.write_errors += 1,
                }
                let late = now.saturating_sub(packet.at).as_micros() as u64;
                c.max_late_us = c.max_late_us.max(late);
                pool.push(packet.data);
            }
            self.publish();

            let wait = held
                .peek()
                .map_or(TICK, |h| h.0.at.saturating_sub(self.start.elapsed()))
                .min(TICK);
            let timeout = Timespec {
                tv_sec: wait.as_secs() as _,
                tv_nsec: wait.subsec_nanos() as _,
            };
            let mut fds = [PollFd::new(&*self.src, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            for _ in 0..BATCH {
                let n = match rustix::io::read(&*self.src, &mut scratch) {
                    Ok(n) => n,
                    Err(Errno::AGAIN) | Err(Errno::INTR) => break,
                    Err(e) => return Err(e.into()),
                };
                let now = self.start.elapsed();
                let down = self.shared.down.load(Ordering::Relaxed);
                let fate = {
                    let mut ser = self
                        .serializer
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    self.model.offer(now, n, down, &mut ser)
                };
                if let Fate::Deliver { at, copies, .. } = fate {
                    for _ in 0..copies {
                        let mut data = pool.pop().unwrap_or_default();
                        data.clear();
                        data.extend_from_slice(&scratch[..n]);
                        seq += 1;
                        held.push(Reverse(Held { at, seq, data }));
                    }
                }
            }
        }
        Ok(())
    }
}
