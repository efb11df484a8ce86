//! The gateway side of a run: the subroutines the workloads call (sensor feeds, the camera,
//! echo, drive commands, bulk), on a thread of its own inside the link's namespace A.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use linkem::{Link, Side};
use quicswarm::{Gateway, Identity, Registry};
use serde::{Deserialize, Serialize};

use super::modes::Mode;

/// Microseconds since the process started: gateway and client share the process, so one
/// monotonic clock stamps and reads every item.
pub(crate) fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// The gateway's port, UDP and TCP, inside namespace A.
pub(crate) const PORT: u16 = 4433;

/// The telemetry feeds: (rate Hz, payload bytes).
pub(crate) const FEEDS: [(u32, usize); 12] = [
    (200, 32),
    (200, 64),
    (100, 128),
    (100, 256),
    (50, 32),
    (50, 64),
    (50, 128),
    (20, 256),
    (20, 32),
    (10, 64),
    (10, 128),
    (10, 256),
];
/// The camera: frames per second, and bytes per frame.
pub(crate) const CAMERA_FPS: u32 = 30;
/// Bytes of one camera frame.
pub(crate) const FRAME: usize = 40_000;

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Ticker {
    hz: u32,
    size: usize,
    seconds: f64,
    /// The schedule's origin (`now_us` of the subscriber): a resumed subscription keeps it.
    epoch_us: u64,
}

impl Ticker {
    /// A feed of `hz` items of `size` bytes for `seconds`, scheduled from now.
    pub(crate) fn new(hz: u32, size: usize, seconds: f64) -> Self {
        Self {
            hz,
            size,
            seconds,
            epoch_us: now_us(),
        }
    }
}

/// Items stamped with their *scheduled* time: a producer held back by a full send buffer
/// catches up in a burst, and the items carry the time they were due, as a real sensor's
/// readings would. A resumed subscription continues with the reading due now (what was
/// missed meanwhile is gone, as with a live sensor).
pub(crate) fn ticker(
    t: Ticker,
    resume_after: Option<i64>,
) -> impl futures_util::Stream<Item = Result<(i64, Vec<u8>), String>> {
    let period_us = 1_000_000 / u64::from(t.hz.max(1));
    let count = (t.seconds * f64::from(t.hz)) as i64;
    let first = match resume_after {
        Some(last) => {
            let due_now = (now_us().saturating_sub(t.epoch_us) / period_us) as i64;
            (last + 1).max(due_now)
        }
        None => 0,
    };
    stream::unfold(first, move |i| async move {
        if i >= count {
            return None;
        }
        let due = t.epoch_us + period_us * i as u64;
        let wait = due.saturating_sub(now_us());
        if wait > 0 {
            tokio::time::sleep(Duration::from_micros(wait)).await;
        }
        let mut data = vec![0u8; t.size.max(8)];
        data[..8].copy_from_slice(&due.to_le_bytes());
        Some((Ok((i, data)), i + 1))
    })
}

/// The time an item was due (see [`ticker`]), from its first 8 bytes; 0 for a shorter one.
pub(crate) fn stamp(data: &[u8]) -> u64 {
    data.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// Commands executed by the gateway: (issued at, executed at), microseconds.
pub(crate) type Executed = Arc<Mutex<Vec<(u64, u64)>>>;

/// The subroutines: `feed` (a [`Ticker`]), `echo`, `drive` (a command, recorded in
/// `executed`) and `bulk` (64 KiB items for some seconds).
pub(crate) fn registry(executed: Executed) -> Registry {
    let r = Registry::new();
    r.stream("feed", |t: Ticker, ctx: quicswarm::StreamContext| {
        ticker(t, ctx.resume_after)
    })
    .batch("echo", |b: Vec<u8>| async move { Ok::<_, String>(b) })
    .batch("drive", move |issued: u64| {
        let executed = executed.clone();
        async move {
            executed
                .lock()
                .map_err(|_| "poisoned".to_string())?
                .push((issued, now_us()));
            Ok::<_, String>(Vec::new())
        }
    })
    .stream("bulk", |seconds: f64, _| {
        let until = Instant::now() + Duration::from_secs_f64(seconds);
        let chunk = Bytes::from(vec![7u8; 64 * 1024]);
        stream::iter(0i64..)
            .take_while(move |_| std::future::ready(Instant::now() < until))
            .map(move |i| Ok::<_, String>((i, chunk.clone())))
    });
    // Sensor readings are idempotent: a reconnecting session may re-subscribe in 0-RTT.
    r.set_replay_safe("feed", true);
    // So is an echo: it may be hedged (run twice).
    r.set_replay_safe("echo", true);
    r
}

/// The gateway side of one run, on its own thread inside namespace A.
pub(crate) struct GatewaySide {
    pub(crate) fingerprint: quicswarm::Fingerprint,
    pub(crate) stop: tokio::sync::oneshot::Sender<()>,
    pub(crate) thread: std::thread::JoinHandle<()>,
    pub(crate) executed: Executed,
}

/// Starts the gateway for `mode` inside the link's namespace A, serving `files` as `logs`;
/// waits (up to 20 s) until it listens.
pub(crate) fn start_gateway(link: &Link, mode: Mode, files: PathBuf) -> Result<GatewaySide> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let executed = Executed::default();
    let (exec, addr) = (executed.clone(), SocketAddr::new(link.addr(Side::A), PORT));
    let ns = link.namespace(Side::A).to_string();
    let thread = std::thread::spawn(move || {
        let ready = ready_tx.clone();
        let run = move || -> Result<()> {
            linkem::enter_namespace(&ns)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let identity = Identity::self_signed(&[])?;
                let gw = Gateway::builder()
                    .listen(addr)
                    .identity(identity)
                    .pool_size(64)
                    .transport(mode.tuning())
                    .tcp(mode.tcp())
                    .serve("logs", files)
                    .registry(registry(exec))
                    .spawn()
                    .await?;
                let _ = ready.send(Ok(gw.fingerprint()));
                let _ = stop_rx.await;
                gw.shutdown(Duration::from_millis(200)).await;
                Ok::<_, anyhow::Error>(())
            })
        };
        if let Err(e) = run() {
            let _ = ready_tx.send(Err(e));
        }
    });
    let fingerprint = ready_rx
        .recv_timeout(Duration::from_secs(20))
        .context("gateway start")??;
    Ok(GatewaySide {
        fingerprint,
        stop,
        thread,
        executed,
    })
}
