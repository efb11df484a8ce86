//! `tcp-vs-quic`: robot workloads over an emulated Wi-Fi link (the `linkem` namespaces), each
//! over QUIC and over TLS-over-TCP (one multiplexed connection, and one connection per feed as
//! the original pynetwork did), in one run. Prints a table, writes JSON and SVG charts.
//!
//! ```text
//! cargo bench -p quicswarm-benches --bench tcp-vs-quic -- --profile L2 --workload telemetry
//! cargo bench -p quicswarm-benches --bench tcp-vs-quic -- --seconds 30 --json report.json --chart-dir charts
//! cargo bench -p quicswarm-benches --bench tcp-vs-quic -- --profile L3 --workload telemetry --transport quic --camera-max-age 200
//! ```
//!
//! Needs root (network namespaces, TUN devices). Not run in CI.

#[path = "tcp_vs_quic/charts.rs"]
mod charts;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use clap::Parser;
use futures_util::{stream, StreamExt};
use hdrhistogram::Histogram;
use linkem::{Link, LinkCounters, Profile, Side};
use quicswarm::{
    Client, Congestion, Controller, ControllerConfig, Delivery, Gateway, Identity, LinkPreset,
    ReconnectPolicy, Registry, Session, SubscribeOptions, TransportTuning, Trust,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Workloads of the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
enum Workload {
    /// 12 small feeds (32-256 B, 10-200 Hz) beside a 30 fps camera: small-message latency.
    Telemetry,
    /// 30 fps x 40 KB frames: fps delivered and frame age (latest-value delivery on QUIC).
    Camera,
    /// A call every 20 ms: call latency.
    Rpc,
    /// The link goes down for 2 s and for 10 s: time to the first message after it returns,
    /// stale commands executed.
    Outage,
    /// One stream as fast as it goes: goodput as a fraction of the link rate.
    Bulk,
    /// 2,000 log-like files (median ~15 KB) over a swarm of 4 connections.
    Files,
}

#[derive(Parser, Debug)]
#[command(about = "QUIC vs TLS-over-TCP over an emulated Wi-Fi link")]
struct Args {
    /// Link profiles (L1..L4); default L2. L4 is L2 with the outages of the outage workload.
    #[arg(long = "profile", value_delimiter = ',')]
    profiles: Vec<Profile>,
    /// Workloads; default all.
    #[arg(long = "workload", value_delimiter = ',', value_enum)]
    workloads: Vec<Workload>,
    /// Transports to run (quic, tcp-mux, tcp-per-feed); default all.
    #[arg(long = "transport", value_delimiter = ',')]
    transports: Vec<String>,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seed of the link's random draws (the same loss pattern for every transport).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the result rows as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write one SVG chart per workload here.
    #[arg(long)]
    chart_dir: Option<PathBuf>,
    /// `max_age` of the QUIC camera subscriptions, milliseconds: frames older are dropped on
    /// arrival, and one in flight that long is cancelled for a newer one. Default none.
    #[arg(long, value_name = "MS")]
    camera_max_age: Option<u64>,
    /// cargo bench passes this; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// How the client reaches the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One QUIC connection, a stream per feed.
    Quic(Congestion),
    /// One QUIC connection, telemetry feeds as datagrams (each reading once, unreliable).
    QuicDatagram(Congestion),
    /// One QUIC connection, reliable telemetry, and the camera's late frames handed out
    /// (`SubscribeOptions::deliver_late`) instead of dropped.
    QuicLate(Congestion),
    /// One QUIC connection, reliable telemetry, and the camera's frames as datagrams with
    /// recovery shards (`Delivery::Fec`).
    QuicFec(Congestion),
    /// One QUIC connection, telemetry feeds `Unordered`: every reading, each on a stream of
    /// its own (a lost packet delays only the readings it carried).
    QuicUnordered(Congestion),
    /// One QUIC connection, telemetry feeds `Redundant`: `Unordered` plus a datagram copy.
    QuicRedundant(Congestion),
    /// One QUIC connection, calls hedged (`Client::call_hedged`) after this many ms.
    QuicHedged(Congestion, u64),
    /// One TLS-over-TCP connection, feeds multiplexed (yamux).
    TcpMux(&'static str),
    /// One TLS-over-TCP connection per feed.
    TcpPerFeed(&'static str),
}

impl Mode {
    fn transport(self) -> &'static str {
        match self {
            Self::Quic(_)
            | Self::QuicDatagram(_)
            | Self::QuicLate(_)
            | Self::QuicFec(_)
            | Self::QuicUnordered(_)
            | Self::QuicRedundant(_)
            | Self::QuicHedged(..) => "quic",
            Self::TcpMux(_) => "tcp-mux",
            Self::TcpPerFeed(_) => "tcp-per-feed",
        }
    }

    fn cc(self) -> &'static str {
        match self {
            Self::Quic(cc)
            | Self::QuicDatagram(cc)
            | Self::QuicLate(cc)
            | Self::QuicFec(cc)
            | Self::QuicUnordered(cc)
            | Self::QuicRedundant(cc)
            | Self::QuicHedged(cc, _) => match cc {
                Congestion::Cubic => "cubic",
                Congestion::NewReno => "newreno",
                _ => "bbr",
            },
            Self::TcpMux(cc) | Self::TcpPerFeed(cc) => cc,
        }
    }

    fn tcp(self) -> bool {
        !matches!(
            self,
            Self::Quic(_)
                | Self::QuicDatagram(_)
                | Self::QuicLate(_)
                | Self::QuicFec(_)
                | Self::QuicUnordered(_)
                | Self::QuicRedundant(_)
                | Self::QuicHedged(..)
        )
    }

    fn tuning(self) -> TransportTuning {
        let mut t = TransportTuning::preset(LinkPreset::Wifi);
        match self {
            Self::Quic(cc)
            | Self::QuicDatagram(cc)
            | Self::QuicLate(cc)
            | Self::QuicFec(cc)
            | Self::QuicUnordered(cc)
            | Self::QuicRedundant(cc)
            | Self::QuicHedged(cc, _) => t.congestion = cc,
            Self::TcpMux(cc) | Self::TcpPerFeed(cc) => t.tcp_congestion = Some(cc.to_string()),
        }
        t
    }

    /// How the camera's frames travel.
    fn camera(self) -> Delivery {
        match self {
            _ if self.tcp() => Delivery::Reliable,
            Self::QuicFec(_) => Delivery::Fec,
            _ => Delivery::Latest,
        }
    }

    /// How telemetry items travel.
    fn delivery(self) -> &'static str {
        match self {
            Self::QuicDatagram(_) => "datagram",
            Self::QuicLate(_) => "reliable, late frames",
            Self::QuicFec(_) => "reliable, fec frames",
            Self::QuicUnordered(_) => "unordered",
            Self::QuicRedundant(_) => "redundant",
            Self::QuicHedged(_, 5) => "hedged after 5 ms",
            Self::QuicHedged(_, 25) => "hedged after 25 ms",
            Self::QuicHedged(..) => "hedged",
            _ => "reliable",
        }
    }

    fn label(self) -> String {
        format!("{} ({}, {})", self.transport(), self.cc(), self.delivery())
    }
}

/// The transports each workload is run over.
fn modes(workload: Workload) -> Vec<Mode> {
    use Mode::*;
    let tcp = |m: fn(&'static str) -> Mode| [m("cubic"), m("bbr")];
    let mut v = vec![Quic(Congestion::Cubic)];
    match workload {
        Workload::Telemetry => {
            v.push(Quic(Congestion::BbrExperimental));
            v.push(QuicDatagram(Congestion::BbrExperimental));
            v.push(QuicLate(Congestion::BbrExperimental));
            v.push(QuicFec(Congestion::BbrExperimental));
            v.push(QuicUnordered(Congestion::BbrExperimental));
            v.push(QuicRedundant(Congestion::BbrExperimental));
            v.extend(tcp(TcpMux));
            v.extend(tcp(TcpPerFeed));
        }
        Workload::Camera => {
            v.push(Quic(Congestion::NewReno));
            v.push(Quic(Congestion::BbrExperimental));
            v.push(QuicLate(Congestion::BbrExperimental));
            v.push(QuicFec(Congestion::BbrExperimental));
            v.extend(tcp(TcpMux));
        }
        Workload::Bulk => {
            v.push(Quic(Congestion::BbrExperimental));
            v.extend(tcp(TcpMux));
        }
        Workload::Rpc => {
            v.push(Quic(Congestion::BbrExperimental));
            // Hedged after 5 ms: nearly every call goes twice; after 25 ms (above most
            // round trips on L2): only the slow ones.
            v.push(QuicHedged(Congestion::BbrExperimental, 5));
            v.push(QuicHedged(Congestion::BbrExperimental, 25));
            v.extend(tcp(TcpMux));
        }
        Workload::Files => {
            v.push(Quic(Congestion::BbrExperimental));
            v.extend(tcp(TcpMux));
        }
        Workload::Outage => v.extend(tcp(TcpMux)),
    }
    v
}

/// One result row of the JSON report.
#[derive(Debug, Serialize)]
struct Row {
    workload: Workload,
    profile: String,
    transport: &'static str,
    cc: &'static str,
    /// How the telemetry items travelled (`reliable` or `datagram`).
    delivery: &'static str,
    seconds: f64,
    link: LinkCounters,
    #[serde(flatten)]
    metrics: Map<String, Value>,
    /// Raw series for the charts (not in the JSON).
    #[serde(skip)]
    series: charts::Series,
}

/// Microseconds since the process started: gateway and client share the process, so one
/// monotonic clock stamps and reads every item.
fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

const PORT: u16 = 4433;

/// The telemetry feeds: (rate Hz, payload bytes).
const FEEDS: [(u32, usize); 12] = [
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
const CAMERA_FPS: u32 = 30;
const FRAME: usize = 40_000;

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Ticker {
    hz: u32,
    size: usize,
    seconds: f64,
    /// The schedule's origin (`now_us` of the subscriber): a resumed subscription keeps it.
    epoch_us: u64,
}

impl Ticker {
    fn new(hz: u32, size: usize, seconds: f64) -> Self {
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
fn ticker(
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

fn stamp(data: &[u8]) -> u64 {
    data.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// Commands executed by the gateway: (issued at, executed at), microseconds.
type Executed = Arc<Mutex<Vec<(u64, u64)>>>;

fn registry(executed: Executed) -> Registry {
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
struct GatewaySide {
    fingerprint: quicswarm::Fingerprint,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
    executed: Executed,
}

fn start_gateway(link: &Link, mode: Mode, files: PathBuf) -> Result<GatewaySide> {
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

/// What a client run needs.
#[derive(Clone)]
struct Ctx {
    mode: Mode,
    seconds: f64,
    fingerprint: quicswarm::Fingerprint,
    addr: String,
    link_rate_bit_s: u64,
    /// The profile's longest one-way delay (base plus jitter), microseconds.
    max_one_way_us: u64,
    executed: Executed,
    /// The emulated link, to cut and restore.
    link: Arc<Link>,
    /// `--camera-max-age`.
    camera_max_age: Option<Duration>,
}

impl Ctx {
    fn controller(&self) -> Result<Controller> {
        self.controller_with(Duration::from_secs(30))
    }

    /// A controller whose calls may take up to `timeout` (a file batch on a slow link).
    fn controller_with(&self, timeout: Duration) -> Result<Controller> {
        let mut config = ControllerConfig::with_trust(Trust::Fingerprints(vec![self.fingerprint]));
        config.transport = self.mode.tuning();
        config.connect_timeout = Duration::from_secs(5);
        config.call_timeout = Some(timeout);
        Ok(Controller::new(config)?)
    }

    async fn client(&self, controller: &Controller) -> Result<Client> {
        Ok(controller.get_client(&self.addr).await?)
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        f64::NAN
    } else {
        h.value_at_quantile(q) as f64 / 1e3
    }
}

fn percentiles(m: &mut Map<String, Value>, prefix: &str, h: &Histogram<u64>) {
    m.insert(format!("{prefix}p50_ms"), json!(ms(h, 0.5)));
    m.insert(format!("{prefix}p99_ms"), json!(ms(h, 0.99)));
    m.insert(format!("{prefix}p999_ms"), json!(ms(h, 0.999)));
}

/// Reads a subscription to its end, recording each item's age; returns (items, ages).
async fn drain(mut s: quicswarm::ItemStream, ages: Arc<Mutex<Vec<(u64, u64)>>>) -> Result<u64> {
    let mut n = 0;
    while let Some((_, data)) = s.next().await? {
        let now = now_us();
        if let Ok(mut a) = ages.lock() {
            a.push((now, now.saturating_sub(stamp(&data))));
        }
        n += 1;
    }
    Ok(n)
}

async fn telemetry(ctx: Ctx) -> Result<(Map<String, Value>, charts::Series)> {
    let controller = ctx.controller()?;
    let shared = ctx.client(&controller).await?;
    let client_for = |i: usize| {
        let (controller, shared, ctx) = (controller.clone(), shared.clone(), ctx.clone());
        async move {
            Ok::<_, anyhow::Error>(match ctx.mode {
                Mode::TcpPerFeed(_) if i > 0 => ctx.client(&controller).await?,
                _ => shared,
            })
        }
    };
    let telemetry_ages = Arc::new(Mutex::new(Vec::new()));
    let camera_ages = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // The camera first, at low priority (latest-value delivery over QUIC).
    // Each schedule starts when its subscription is made (after its connection, for the
    // connection-per-feed case), so handshakes are not counted as latency.
    let cam_client = client_for(FEEDS.len() + 1).await?;
    let camera = Ticker::new(CAMERA_FPS, FRAME, ctx.seconds);
    let mut cam_opts = SubscribeOptions::delivery(ctx.mode.camera());
    cam_opts.priority = 0;
    cam_opts.deliver_late = matches!(ctx.mode, Mode::QuicLate(_));
    cam_opts.max_age = ctx.camera_max_age.filter(|_| !ctx.mode.tcp());
    let cam = cam_client.subscribe("feed", &camera, &cam_opts).await?;
    tasks.push(tokio::spawn(drain(cam, camera_ages.clone())));
    for (i, &(hz, size)) in FEEDS.iter().enumerate() {
        let client = client_for(i + 1).await?;
        let feed = Ticker::new(hz, size, ctx.seconds);
        let delivery = match ctx.mode {
            Mode::QuicDatagram(_) => Delivery::Datagram,
            Mode::QuicUnordered(_) => Delivery::Unordered,
            Mode::QuicRedundant(_) => Delivery::Redundant,
            _ => Delivery::Reliable,
        };
        let mut opts = SubscribeOptions::delivery(delivery);
        opts.priority = 10;
        let s = client.subscribe("feed", &feed, &opts).await?;
        tasks.push(tokio::spawn(drain(s, telemetry_ages.clone())));
    }
    for t in tasks {
        t.await??;
    }
    let mut m = Map::new();
    let tel = telemetry_ages
        .lock()
        .map_err(|_| anyhow!("poisoned"))?
        .clone();
    let cam = camera_ages.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let mut h = hist();
    for (_, age) in &tel {
        let _ = h.record(*age.max(&1));
    }
    percentiles(&mut m, "", &h);
    let expected: f64 = FEEDS
        .iter()
        .map(|&(hz, _)| f64::from(hz) * ctx.seconds)
        .sum();
    m.insert("items".into(), json!(tel.len()));
    m.insert("items_expected".into(), json!(expected as u64));
    let mut hc = hist();
    for (_, age) in &cam {
        let _ = hc.record(*age.max(&1));
    }
    m.insert("camera_fps".into(), json!(cam.len() as f64 / ctx.seconds));
    m.insert("camera_age_p99_ms".into(), json!(ms(&hc, 0.99)));
    let series = charts::Series {
        latencies_us: tel.iter().map(|(_, a)| *a).collect(),
        ..Default::default()
    };
    Ok((m, series))
}

async fn camera(ctx: Ctx) -> Result<(Map<String, Value>, charts::Series)> {
    anyhow::ensure!(
        ctx.seconds >= 6.0,
        "the camera workload needs --seconds 6 or more (it stalls the link for 2 s halfway)"
    );
    let controller = ctx.controller()?;
    // A session: the stall outlasts the Wi-Fi preset's 1 s idle timeout, and the camera
    // resumes on a new connection (0-RTT over QUIC, a full handshake over TCP).
    let session = Session::connect(&controller, &ctx.addr, quick_reconnect()).await?;
    let camera = Ticker::new(CAMERA_FPS, FRAME, ctx.seconds);
    let mut opts = SubscribeOptions::delivery(ctx.mode.camera());
    opts.deliver_late = matches!(ctx.mode, Mode::QuicLate(_));
    opts.max_age = ctx.camera_max_age.filter(|_| !ctx.mode.tcp());
    let ages = Arc::new(Mutex::new(Vec::new()));
    let start = now_us();
    // A 2 s stall in the middle: the link goes down, then comes back.
    let stall_at = ctx.seconds * 0.5;
    let link = ctx.link.clone();
    let staller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs_f64(stall_at)).await;
        link.set_down(true);
        let down_us = now_us();
        tokio::time::sleep(Duration::from_secs(2)).await;
        link.set_down(false);
        (down_us, now_us())
    });
    let mut s = session.subscribe("feed", &camera, &opts).await?;
    let mut frames = 0u64;
    while let Some((_, data)) = s.next().await? {
        let now = now_us();
        if let Ok(mut a) = ages.lock() {
            a.push((now, now.saturating_sub(stamp(&data))));
        }
        frames += 1;
    }
    let (_, up_us) = staller.await?;
    let ages = ages.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let mut h = hist();
    for (_, age) in &ages {
        let _ = h.record(*age.max(&1));
    }
    // Recovery: after the link is back, the first frame no older than 150 ms.
    let recovery = ages
        .iter()
        .find(|(at, age)| *at >= up_us && *age <= 150_000)
        .map(|(at, _)| (at - up_us) as f64 / 1e3);
    let mut m = Map::new();
    // Frames delivered per second the link was up (30 at most).
    m.insert("fps".into(), json!(frames as f64 / (ctx.seconds - 2.0)));
    m.insert("age_p50_ms".into(), json!(ms(&h, 0.5)));
    m.insert("age_p99_ms".into(), json!(ms(&h, 0.99)));
    m.insert("recovery_ms".into(), json!(recovery));
    let per_second = charts::per_second(ages.iter().map(|(at, _)| at.saturating_sub(start)));
    let series = charts::Series {
        latencies_us: ages.iter().map(|(_, a)| *a).collect(),
        fps: per_second,
        ..Default::default()
    };
    Ok((m, series))
}

async fn rpc(ctx: Ctx) -> Result<(Map<String, Value>, charts::Series)> {
    let controller = ctx.controller()?;
    let client = ctx.client(&controller).await?;
    let mut h = hist();
    let mut lat = Vec::new();
    let until = Instant::now() + Duration::from_secs_f64(ctx.seconds);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let payload = vec![1u8; 64];
    while Instant::now() < until {
        tick.tick().await;
        let t = Instant::now();
        match ctx.mode {
            Mode::QuicHedged(_, ms) => {
                let after = Duration::from_millis(ms);
                client.call_hedged("echo", &payload, after).await?
            }
            _ => client.call("echo", &payload).await?,
        };
        let us = t.elapsed().as_micros() as u64;
        let _ = h.record(us.max(1));
        lat.push(us);
    }
    let mut m = Map::new();
    percentiles(&mut m, "", &h);
    m.insert("calls".into(), json!(lat.len()));
    Ok((
        m,
        charts::Series {
            latencies_us: lat,
            ..Default::default()
        },
    ))
}

async fn bulk(ctx: Ctx) -> Result<(Map<String, Value>, charts::Series)> {
    let controller = ctx.controller()?;
    let client = ctx.client(&controller).await?;
    let mut s = client.stream("bulk", &ctx.seconds).await?;
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut arrivals = Vec::new();
    while let Some((_, data)) = s.next().await? {
        bytes += data.len() as u64;
        arrivals.push(start.elapsed().as_micros() as u64);
    }
    let secs = start.elapsed().as_secs_f64();
    let mbit = bytes as f64 * 8.0 / secs / 1e6;
    let mut m = Map::new();
    m.insert("goodput_mbit_s".into(), json!(mbit));
    m.insert(
        "fraction_of_link".into(),
        json!(mbit * 1e6 / ctx.link_rate_bit_s as f64),
    );
    Ok((
        m,
        charts::Series {
            goodput_mbit_s: vec![mbit],
            ..Default::default()
        },
    ))
}

/// Reconnect attempts every 20-100 ms, each given 250 ms: recovery is measured, not the
/// backoff.
fn quick_reconnect() -> ReconnectPolicy {
    let mut policy = ReconnectPolicy::default();
    policy.initial_backoff = Duration::from_millis(20);
    policy.max_backoff = Duration::from_millis(100);
    policy.attempt_timeout = Duration::from_millis(250);
    policy
}

/// Two outages (2 s and 10 s) while a 50 Hz feed and 20 Hz commands run through a reconnecting
/// session.
async fn outage(ctx: Ctx) -> Result<(Map<String, Value>, charts::Series)> {
    let controller = ctx.controller()?;
    let session = Arc::new(Session::connect(&controller, &ctx.addr, quick_reconnect()).await?);
    let total = 3.0 + 2.0 + 4.0 + 10.0 + 4.0;
    let feed = Ticker::new(50, 64, total + 5.0);
    let mut items = session
        .subscribe(
            "feed",
            &feed,
            &SubscribeOptions::delivery(Delivery::Reliable),
        )
        .await?;
    let arrivals = Arc::new(Mutex::new(Vec::<u64>::new()));
    let arr = arrivals.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(_)) = items.next().await {
            if let Ok(mut a) = arr.lock() {
                a.push(now_us());
            }
        }
    });
    // Commands every 50 ms, each given up after 200 ms.
    let s2 = session.clone();
    let issued = Arc::new(Mutex::new(0u64));
    let iss = issued.clone();
    let commander = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_secs_f64(total);
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while Instant::now() < until {
            tick.tick().await;
            let s = s2.clone();
            if let Ok(mut n) = iss.lock() {
                *n += 1;
            }
            tokio::spawn(async move {
                let issued_at = now_us();
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), s.call("drive", &issued_at))
                        .await;
            });
        }
    });
    let mut recoveries = Vec::new();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (down, after) in [(2.0, 4.0), (10.0, 4.0)] {
        ctx.link.set_down(true);
        tokio::time::sleep(Duration::from_secs_f64(down)).await;
        ctx.link.set_down(false);
        let up = now_us();
        tokio::time::sleep(Duration::from_secs_f64(after)).await;
        let first = arrivals
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .iter()
            .find(|&&t| t >= up)
            .map(|&t| (t - up) as f64 / 1e3);
        recoveries.push(first);
    }
    commander.await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    reader.abort();
    let executed = ctx
        .executed
        .lock()
        .map_err(|_| anyhow!("poisoned"))?
        .clone();
    // Stale: run after the client gave up (200 ms) and after a request sent just before that
    // could have arrived (the profile's longest one-way delay, plus 10 ms of scheduling).
    let allowance = 200_000 + ctx.max_one_way_us + 10_000;
    let ages: Vec<u64> = executed.iter().map(|(i, e)| e.saturating_sub(*i)).collect();
    let stale = ages.iter().filter(|&&a| a > allowance).count();
    let oldest = ages.iter().max().map_or(0.0, |&a| a as f64 / 1e3);
    let mut m = Map::new();
    m.insert(
        "recovery_2s_ms".into(),
        json!(recoveries.first().copied().flatten()),
    );
    m.insert(
        "recovery_10s_ms".into(),
        json!(recoveries.get(1).copied().flatten()),
    );
    m.insert(
        "commands_issued".into(),
        json!(*issued.lock().map_err(|_| anyhow!("poisoned"))?),
    );
    m.insert("commands_executed".into(), json!(executed.len()));
    m.insert("stale_commands".into(), json!(stale));
    m.insert("oldest_command_executed_ms".into(), json!(oldest));
    m.insert("reconnects".into(), json!(session.reconnects()));
    Ok((m, charts::Series::default()))
}

async fn files(ctx: Ctx) -> Result<(Map<String, Value>, charts::Series)> {
    use quicswarm::files::{Selector, Swarm, TransferOptions};
    let controller = ctx.controller_with(Duration::from_secs(300))?;
    let dest = tempfile::tempdir()?;
    let swarm = Swarm::connect(&controller, &ctx.addr, 4).await?;
    let start = Instant::now();
    let report = swarm
        .download(
            "logs",
            &Selector::all(),
            dest.path(),
            &TransferOptions::default(),
        )
        .await?;
    let secs = start.elapsed().as_secs_f64();
    let mut m = Map::new();
    m.insert("files".into(), json!(report.files));
    m.insert("seconds_taken".into(), json!(secs));
    m.insert("files_per_s".into(), json!(report.files as f64 / secs));
    m.insert(
        "goodput_mbit_s".into(),
        json!(report.bytes as f64 * 8.0 / secs / 1e6),
    );
    Ok((m, charts::Series::default()))
}

/// Deterministic W3-like tree: 2,000 log-like files, median ~15 KB, largest ~2 MB.
fn log_tree(dir: &std::path::Path, seed: u64) -> Result<()> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..2_000 {
        let size = if i % 200 == 0 {
            2_000_000
        } else {
            (rng.gen_range(8.0f64..10.5).exp()) as usize
        };
        let sub = dir.join(format!("d{:02}", i % 20));
        std::fs::create_dir_all(&sub)?;
        let line = format!("{i:06} robot log line with some text and numbers 3.14159\n");
        let content: Vec<u8> = line.bytes().cycle().take(size).collect();
        std::fs::write(sub.join(format!("f{i:05}.log")), content)?;
    }
    Ok(())
}

fn run_row(
    workload: Workload,
    profile: Profile,
    mode: Mode,
    args: &Args,
    tree: &std::path::Path,
) -> Result<Row> {
    let link = Link::up(profile.spec().seed(args.seed))?;
    let gw = start_gateway(&link, mode, tree.to_path_buf())?;
    let addr = if mode.tcp() {
        format!("tcp://{}:{PORT}", link.addr(Side::A))
    } else {
        format!("{}:{PORT}", link.addr(Side::A))
    };
    let link = Arc::new(link);
    let ctx = Ctx {
        mode,
        seconds: args.seconds as f64,
        fingerprint: gw.fingerprint,
        addr,
        link_rate_bit_s: profile.spec().a_to_b.rate_bit_s.unwrap_or(1),
        max_one_way_us: (profile.spec().a_to_b.delay + profile.spec().a_to_b.jitter).as_micros()
            as u64,
        executed: gw.executed.clone(),
        link: link.clone(),
        camera_max_age: args.camera_max_age.map(Duration::from_millis),
    };
    let ns = link.namespace(Side::B).to_string();
    let started = Instant::now();
    let outcome = std::thread::spawn(move || -> Result<(Map<String, Value>, charts::Series)> {
        linkem::enter_namespace(&ns)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let fut = async {
                match workload {
                    Workload::Telemetry => telemetry(ctx).await,
                    Workload::Camera => camera(ctx).await,
                    Workload::Rpc => rpc(ctx).await,
                    Workload::Outage => outage(ctx).await,
                    Workload::Bulk => bulk(ctx).await,
                    Workload::Files => files(ctx).await,
                }
            };
            tokio::time::timeout(Duration::from_secs(300), fut)
                .await
                .map_err(|_| anyhow!("workload timed out"))?
        })
    })
    .join()
    .map_err(|_| anyhow!("client thread panicked"))?;
    let seconds = started.elapsed().as_secs_f64();
    let _ = gw.stop.send(());
    let _ = gw.thread.join();
    let counters = link.counters();
    drop(link);
    let (mut metrics, series) = outcome?;
    if let Some(calls) = metrics
        .get("calls")
        .and_then(Value::as_u64)
        .filter(|&n| n > 0)
    {
        // What a call costs the link: both directions' packets (a hedged call sends more).
        let packets = counters.a_to_b.packets + counters.b_to_a.packets;
        metrics.insert(
            "packets_per_call".into(),
            json!(packets as f64 / calls as f64),
        );
    }
    Ok(Row {
        workload,
        profile: profile.to_string(),
        transport: mode.transport(),
        cc: mode.cc(),
        delivery: if workload == Workload::Camera && matches!(mode, Mode::QuicLate(_)) {
            "latest, late frames"
        } else if workload == Workload::Camera && matches!(mode, Mode::QuicFec(_)) {
            "fec"
        } else if workload == Workload::Camera && !mode.tcp() {
            "latest"
        } else {
            mode.delivery()
        },
        seconds,
        link: counters,
        metrics,
        series,
    })
}

fn summary(row: &Row) -> String {
    let keys: &[&str] = match row.workload {
        Workload::Telemetry => &["p50_ms", "p99_ms", "p999_ms", "items", "camera_fps"],
        Workload::Camera => &["fps", "age_p50_ms", "age_p99_ms", "recovery_ms"],
        Workload::Rpc => &["p50_ms", "p99_ms", "p999_ms", "packets_per_call"],
        Workload::Outage => &[
            "recovery_2s_ms",
            "recovery_10s_ms",
            "stale_commands",
            "oldest_command_executed_ms",
        ],
        Workload::Bulk => &["goodput_mbit_s", "fraction_of_link"],
        Workload::Files => &["files_per_s", "goodput_mbit_s"],
    };
    keys.iter()
        .map(|k| match row.metrics.get(*k) {
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if f.fract() != 0.0 => format!("{k} {f:.1}"),
                _ => format!("{k} {n}"),
            },
            Some(v) => format!("{k} {v}"),
            None => format!("{k} -"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if !linkem::can_run() {
        eprintln!("tcp-vs-quic needs root (network namespaces and TUN devices): skipped");
        return Ok(());
    }
    linkem::teardown_on_ctrl_c()?;
    if args.profiles.is_empty() {
        args.profiles = vec![Profile::L2];
    }
    if args.workloads.is_empty() {
        args.workloads = vec![
            Workload::Telemetry,
            Workload::Camera,
            Workload::Rpc,
            Workload::Outage,
            Workload::Bulk,
            Workload::Files,
        ];
    }
    let files_dir = tempfile::tempdir()?;
    if args.workloads.contains(&Workload::Files) {
        log_tree(files_dir.path(), 3)?;
    }
    let mut rows = Vec::new();
    println!("| workload | profile | transport | cc | delivery | results | link a→b lost/queue-dropped | b→a lost/queue-dropped |");
    println!("|---|---|---|---|---|---|---|---|");
    for &workload in &args.workloads {
        for &profile in &args.profiles {
            // Outages are the L4 profile's point; other workloads skip it.
            if (workload == Workload::Outage) != (profile == Profile::L4) && args.profiles.len() > 1
            {
                continue;
            }
            for mode in modes(workload) {
                if !args.transports.is_empty()
                    && !args.transports.iter().any(|t| t == mode.transport())
                {
                    continue;
                }
                match run_row(workload, profile, mode, &args, files_dir.path()) {
                    Ok(row) => {
                        println!(
                            "| {:?} | {} | {} | {} | {} | {} | {}/{} | {}/{} |",
                            row.workload,
                            row.profile,
                            row.transport,
                            row.cc,
                            row.delivery,
                            summary(&row),
                            row.link.a_to_b.lost,
                            row.link.a_to_b.queue_dropped,
                            row.link.b_to_a.lost,
                            row.link.b_to_a.queue_dropped,
                        );
                        rows.push(row);
                    }
                    Err(e) => println!(
                        "| {workload:?} | {profile} | {} | failed: {e:#} | | |",
                        mode.label()
                    ),
                }
            }
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&rows)?)?;
        println!("JSON report: {}", path.display());
    }
    if let Some(dir) = &args.chart_dir {
        std::fs::create_dir_all(dir)?;
        for path in charts::write_all(dir, &rows)? {
            println!("chart: {}", path.display());
        }
    }
    if rows.is_empty() {
        bail!("no run succeeded");
    }
    Ok(())
}
