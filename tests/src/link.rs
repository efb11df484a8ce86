//! An impaired UDP link for tests: wraps an endpoint's socket (quinn's `AsyncUdpSocket`) and
//! drops, rate-limits or cuts what it sends and receives. Seeded, so a run is repeatable.

use std::{
    fmt,
    io::{self, IoSliceMut},
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use quinn::{
    udp::{RecvMeta, Transmit},
    AsyncUdpSocket, UdpPoller,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio::sync::{mpsc, watch};

/// What the link does now; change it at any time through [`Link`].
#[derive(Debug)]
struct State {
    /// Probability that a datagram is dropped, each direction.
    loss: f64,
    /// Everything is dropped, both directions.
    down: bool,
    /// Outgoing bytes per second; `None` for unlimited.
    rate: Option<u64>,
    /// One-way delay added to outgoing datagrams.
    delay: Duration,
    /// Outgoing bytes that may wait in the queue; beyond, tail drop (like a router).
    queue_limit: usize,
    queued: usize,
    rng: StdRng,
    sent: u64,
    /// Datagrams dropped so far; tests can wait until the link has dropped some.
    dropped: watch::Sender<u64>,
}

impl State {
    /// Counts `n` datagrams dropped.
    fn count_dropped(&mut self, n: u64) {
        self.dropped.send_modify(|d| *d += n);
    }

    /// Whether the next datagram is lost.
    fn lose(&mut self) -> bool {
        let p = self.loss.clamp(0.0, 1.0);
        self.down || (p > 0.0 && self.rng.gen_bool(p))
    }
}

/// Controls an impaired link.
#[derive(Debug, Clone)]
pub struct Link {
    state: Arc<Mutex<State>>,
}

impl Link {
    /// A clean link (no loss, no rate limit) with a seeded random source.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                loss: 0.0,
                down: false,
                rate: None,
                delay: Duration::ZERO,
                queue_limit: 256 * 1024,
                queued: 0,
                rng: StdRng::seed_from_u64(seed),
                sent: 0,
                dropped: watch::Sender::new(0),
            })),
        }
    }

    /// Drops this fraction of datagrams, each direction.
    pub fn set_loss(&self, loss: f64) {
        self.state.lock().expect("link lock").loss = loss;
    }

    /// Cuts the link (both directions) or restores it.
    pub fn set_down(&self, down: bool) {
        self.state.lock().expect("link lock").down = down;
    }

    /// Limits outgoing bytes per second (`None`: unlimited), with a queue of `queue` bytes.
    pub fn set_rate(&self, rate: Option<u64>, queue: usize) {
        let mut s = self.state.lock().expect("link lock");
        s.rate = rate;
        s.queue_limit = queue;
    }

    /// Delays every outgoing datagram by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().expect("link lock").delay = delay;
    }

    /// `(datagrams sent, datagrams dropped)` so far.
    pub fn counters(&self) -> (u64, u64) {
        let s = self.state.lock().expect("link lock");
        let dropped = *s.dropped.borrow();
        (s.sent, dropped)
    }

    /// Returns once the link has dropped at least `n` datagrams in all.
    pub async fn dropped_at_least(&self, n: u64) {
        let mut drops = self.state.lock().expect("link lock").dropped.subscribe();
        // The sender lives as long as the state this link holds.
        let _ = drops.wait_for(|&d| d >= n).await;
    }

    /// A socket wrapper applying this link, for `GatewayBuilder::socket_wrapper` or
    /// `ControllerConfig::socket_wrapper`.
    pub fn wrapper(&self) -> quicswarm::testing::SocketWrapper {
        let state = self.state.clone();
        quicswarm::testing::SocketWrapper(Arc::new(move |inner: Arc<dyn AsyncUdpSocket>| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(pace(inner.clone(), state.clone(), rx));
            Arc::new(Impaired {
                inner,
                state: state.clone(),
                paced: tx,
            }) as Arc<dyn AsyncUdpSocket>
        }))
    }
}

struct Packet {
    at: tokio::time::Instant,
    data: Vec<u8>,
    destination: SocketAddr,
    src_ip: Option<IpAddr>,
}

/// Sends queued packets at the link's rate.
async fn pace(
    inner: Arc<dyn AsyncUdpSocket>,
    state: Arc<Mutex<State>>,
    mut rx: mpsc::UnboundedReceiver<Packet>,
) {
    let mut next = tokio::time::Instant::now();
    while let Some(p) = rx.recv().await {
        let (rate, delay) = {
            let mut s = state.lock().expect("link lock");
            s.queued = s.queued.saturating_sub(p.data.len());
            (s.rate, s.delay)
        };
        let mut at = p.at + delay;
        if let Some(rate) = rate {
            next = next.max(tokio::time::Instant::now())
                + Duration::from_secs_f64(p.data.len() as f64 / rate as f64);
            at = at.max(next);
        }
        tokio::time::sleep_until(at).await;
        let t = Transmit {
            destination: p.destination,
            ecn: None,
            contents: &p.data,
            segment_size: None,
            src_ip: p.src_ip,
        };
        let _ = inner.try_send(&t);
    }
}

struct Impaired {
    inner: Arc<dyn AsyncUdpSocket>,
    state: Arc<Mutex<State>>,
    paced: mpsc::UnboundedSender<Packet>,
}

impl fmt::Debug for Impaired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Impaired")
    }
}

impl AsyncUdpSocket for Impaired {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let mut s = self.state.lock().expect("link lock");
        if s.lose() {
            s.count_dropped(1);
            return Ok(());
        }
        if s.rate.is_some() || !s.delay.is_zero() {
            if s.queued + transmit.contents.len() > s.queue_limit {
                s.count_dropped(1);
                return Ok(());
            }
            s.queued += transmit.contents.len();
            s.sent += 1;
            let packet = Packet {
                at: tokio::time::Instant::now(),
                data: transmit.contents.to_vec(),
                destination: transmit.destination,
                src_ip: transmit.src_ip,
            };
            let _ = self.paced.send(packet);
            return Ok(());
        }
        s.sent += 1;
        drop(s);
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let n = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            let mut s = self.state.lock().expect("link lock");
            if !s.lose() {
                return Poll::Ready(Ok(n));
            }
            s.count_dropped(n as u64);
            // Dropped: read again (the inner socket registers the waker when it runs dry).
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        // One datagram per transmit, so every datagram is counted and paced on its own.
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
