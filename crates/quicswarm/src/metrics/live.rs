//! What a scrape reads from the gateway as it is now: connections, the handler pool,
//! handshakes in progress, transport bytes, and per client its RTT, congestion window and
//! loss (from quinn's path statistics).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Unit,
};
use tokio::sync::{watch, Semaphore};

use crate::transport::Connection;

/// The live state a scrape reads, and the connections it reports on.
#[derive(Debug)]
pub(crate) struct Live {
    connections: watch::Receiver<usize>,
    handlers: watch::Receiver<usize>,
    pool_size: u32,
    handshakes: Arc<Semaphore>,
    max_handshakes: usize,
    clients: Mutex<HashMap<u64, Tracked>>,
    next: AtomicU64,
    /// Transport bytes of connections that have ended (live ones are read at each scrape).
    ended_in: AtomicU64,
    ended_out: AtomicU64,
}

#[derive(Debug)]
struct Tracked {
    client: String,
    remote: String,
    conn: Connection,
}

/// Keeps a connection in the per-client metrics until dropped; its bytes then count into the
/// gateway's totals.
#[derive(Debug)]
pub(crate) struct LiveGuard {
    live: Arc<Live>,
    key: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

/// One client's figures, read at a scrape.
struct Reading {
    client: String,
    remote: String,
    rtt: f64,
    cwnd: u64,
    lost: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Live {
    pub(crate) fn new(
        connections: watch::Receiver<usize>,
        handlers: watch::Receiver<usize>,
        pool_size: u32,
        handshakes: Arc<Semaphore>,
        max_handshakes: usize,
    ) -> Self {
        Self {
            connections,
            handlers,
            pool_size,
            handshakes,
            max_handshakes,
            clients: Mutex::default(),
            next: AtomicU64::new(0),
            ended_in: AtomicU64::new(0),
            ended_out: AtomicU64::new(0),
        }
    }

    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Self::new(
            watch::channel(0).1,
            watch::channel(0).1,
            1,
            Arc::new(Semaphore::new(1)),
            1,
        )
    }

    /// Reports on `conn` (from `client` at `remote`) until the guard is dropped.
    pub(crate) fn track(self: &Arc<Self>, conn: &Connection, client: &str) -> LiveGuard {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let tracked = Tracked {
            client: client.to_string(),
            remote: conn.remote_address().to_string(),
            conn: conn.clone(),
        };
        self.lock().insert(key, tracked);
        LiveGuard {
            live: self.clone(),
            key,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Tracked>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every tracked connection's figures; the lock is held only while they are read.
    fn readings(&self) -> Vec<Reading> {
        self.lock()
            .values()
            .map(|t| {
                let (bytes_in, bytes_out) = bytes_of(&t.conn);
                let path = t.conn.stats().map(|s| s.path);
                Reading {
                    client: t.client.clone(),
                    remote: t.remote.clone(),
                    rtt: path.map_or(0.0, |p| p.rtt.as_secs_f64()),
                    cwnd: path.map_or(0, |p| p.cwnd),
                    lost: path.map_or(0, |p| p.lost_packets),
                    bytes_in,
                    bytes_out,
                }
            })
            .collect()
    }
}

/// Bytes received and sent by a connection's transport (UDP datagrams, or the TCP socket).
fn bytes_of(conn: &Connection) -> (u64, u64) {
    match (conn.stats(), conn.tcp_bytes()) {
        (Some(s), _) => (s.udp_rx.bytes, s.udp_tx.bytes),
        (None, Some((sent, received))) => (received, sent),
        (None, None) => (0, 0),
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let Some(tracked) = self.live.lock().remove(&self.key) else {
            return;
        };
        let (bytes_in, bytes_out) = bytes_of(&tracked.conn);
        self.live.ended_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.live.ended_out.fetch_add(bytes_out, Ordering::Relaxed);
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let gauge = |encoder: &mut DescriptorEncoder<'_>, name, help, value: i64| {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(metric)
        };
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        gauge(
            &mut encoder,
            "connections",
            "Connections alive now (handshaking or established)",
            count(*self.connections.borrow()),
        )?;
        gauge(
            &mut encoder,
            "handlers",
            "Handler pool slots in use",
            count(*self.handlers.borrow()),
        )?;
        gauge(
            &mut encoder,
            "pool_size",
            "Handler pool size",
            i64::from(self.pool_size),
        )?;
        let pending = self.max_handshakes.max(1) - self.handshakes.available_permits();
        gauge(
            &mut encoder,
            "pending_handshakes",
            "Handshakes in progress now",
            count(pending),
        )?;

        let readings = self.readings();
        let (mut bytes_in, mut bytes_out) = (
            self.ended_in.load(Ordering::Relaxed),
            self.ended_out.load(Ordering::Relaxed),
        );
        for r in &readings {
            bytes_in += r.bytes_in;
            bytes_out += r.bytes_out;
        }
        let mut family = encoder.encode_descriptor(
            "transport",
            "Bytes received (in) and sent (out) by the transport, headers and retransmissions included",
            Some(&Unit::Bytes),
            MetricType::Counter,
        )?;
        for (direction, value) in [("in", bytes_in), ("out", bytes_out)] {
            let labels = DirectionLabels { direction };
            let metric = family.encode_family(&labels)?;
            ConstCounter::new(value).encode(metric)?;
        }

        let per_client = |encoder: &mut DescriptorEncoder<'_>,
                          (name, help, unit, kind): (&str, &str, Option<&Unit>, MetricType),
                          value: &dyn Fn(&Reading) -> f64|
         -> Result<(), std::fmt::Error> {
            let mut family = encoder.encode_descriptor(name, help, unit, kind)?;
            for r in &readings {
                let labels = [("client", r.client.as_str()), ("remote", r.remote.as_str())];
                let metric = family.encode_family(&labels)?;
                if kind == MetricType::Counter {
                    ConstCounter::new(value(r) as u64).encode(metric)?;
                } else {
                    ConstGauge::new(value(r)).encode(metric)?;
                }
            }
            Ok(())
        };
        per_client(
            &mut encoder,
            (
                "client_rtt",
                "Smoothed round-trip time per client connection (QUIC; 0 over TCP)",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            ),
            &|r| r.rtt,
        )?;
        per_client(
            &mut encoder,
            (
                "client_cwnd",
                "Congestion window per client connection (QUIC; 0 over TCP)",
                Some(&Unit::Bytes),
                MetricType::Gauge,
            ),
            &|r| r.cwnd as f64,
        )?;
        per_client(
            &mut encoder,
            (
                "client_lost_packets",
                "Packets declared lost per client connection (QUIC)",
                None,
                MetricType::Counter,
            ),
            &|r| r.lost as f64,
        )
    }
}
