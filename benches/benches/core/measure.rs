//! What the core bench measures with: each side's CPU, datagram counts, latency histograms,
//! and calls kept in flight.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Instant,
};

use anyhow::Result;
use hdrhistogram::Histogram;
use quicswarm::demo::CounterArgs;
use quicswarm_benches::cores;

/// CPU-seconds spent by each side's thread: the server thread (by name) and the client, which
/// is the calling thread.
#[derive(Clone, Copy)]
pub(crate) struct SideCpu {
    pub(crate) server: f64,
    pub(crate) client: f64,
}

impl SideCpu {
    /// Each side's CPU-seconds so far.
    pub(crate) fn now() -> Result<Self> {
        Ok(Self {
            server: cores::thread_cpu(cores::GATEWAY)?,
            client: cores::this_thread_cpu()?,
        })
    }

    /// Nothing spent.
    pub(crate) fn zero() -> Self {
        Self {
            server: 0.0,
            client: 0.0,
        }
    }

    /// Spent since `before`.
    pub(crate) fn minus(self, before: Self) -> Self {
        Self {
            server: self.server - before.server,
            client: self.client - before.client,
        }
    }

    /// Both spendings added.
    pub(crate) fn plus(self, other: Self) -> Self {
        Self {
            server: self.server + other.server,
            client: self.client + other.client,
        }
    }

    /// Per GB of `bytes`, since `before`.
    pub(crate) fn since(self, before: Self, bytes: u64) -> Self {
        let gb = bytes as f64 / 1e9;
        Self {
            server: (self.server - before.server) / gb,
            client: (self.client - before.client) / gb,
        }
    }
}

/// UDP datagrams a connection sent and received: how well each side batches its packets.
#[derive(Clone, Copy)]
pub(crate) struct Datagrams {
    pub(crate) sent: u64,
    pub(crate) received: u64,
}

impl Datagrams {
    /// What `conn` has sent and received so far.
    pub(crate) fn of(conn: &quinn::Connection) -> Self {
        let stats = conn.stats();
        Self {
            sent: stats.udp_tx.datagrams,
            received: stats.udp_rx.datagrams,
        }
    }

    /// Sent and received since `before`.
    pub(crate) fn minus(self, before: Self) -> Self {
        Self {
            sent: self.sent - before.sent,
            received: self.received - before.received,
        }
    }
}

/// A latency histogram, in nanoseconds.
pub(crate) fn hist() -> Histogram<u64> {
    // 1 ns .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds are valid")
}

/// Nanoseconds `fut` took, or its error.
pub(crate) async fn timed<T, E: Into<anyhow::Error>>(
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<u64> {
    let start = Instant::now();
    fut.await.map_err(Into::into)?;
    Ok(start.elapsed().as_nanos() as u64)
}

/// How many alternating rounds the calls/s figure is measured in.
pub(crate) const CALL_ROUNDS: u64 = 6;

/// Runs `total` operations with `at_once` in flight; returns the seconds they took.
pub(crate) async fn in_flight<F, Fut>(total: u64, at_once: usize, op: F) -> Result<f64>
where
    F: Fn(u64) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<()>> + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let local = tokio::task::LocalSet::new();
    let op = Arc::new(op);
    local
        .run_until(async {
            for _ in 0..at_once {
                let next = next.clone();
                let op = op.clone();
                let fut = async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return Ok::<_, anyhow::Error>(());
                        }
                        op(i).await?;
                    }
                };
                set.spawn_local(fut);
            }
            while let Some(r) = set.join_next().await {
                r??;
            }
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    Ok(start.elapsed().as_secs_f64())
}

/// Streams `count` items of `size` bytes from the demo `counter`; returns (seconds, bytes).
pub(crate) async fn stream_items(
    client: &quicswarm::Client,
    count: u64,
    size: usize,
) -> Result<(f64, u64)> {
    let start = Instant::now();
    let mut items = client
        .stream("counter", &CounterArgs { count, size })
        .await?;
    let mut bytes = 0u64;
    let mut n = 0u64;
    while let Some((_, data)) = items.next().await? {
        bytes += data.len() as u64;
        n += 1;
    }
    anyhow::ensure!(n == count, "got {n} of {count} items");
    Ok((start.elapsed().as_secs_f64(), bytes))
}
