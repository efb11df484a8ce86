//! The client side of each workload: what it runs against the gateway, and what it measures.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use linkem::Link;
use quicswarm::{
    Client, Controller, ControllerConfig, Delivery, ReconnectPolicy, Session, SubscribeOptions,
    Trust,
};
use serde_json::{json, Map, Value};

use super::{
    charts,
    gateway::{now_us, stamp, Executed, Ticker, CAMERA_FPS, FEEDS, FRAME},
    modes::Mode,
};

/// What a client run needs.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) mode: Mode,
    pub(crate) seconds: f64,
    pub(crate) fingerprint: quicswarm::Fingerprint,
    pub(crate) addr: String,
    pub(crate) link_rate_bit_s: u64,
    /// The profile's longest one-way delay (base plus jitter), microseconds.
    pub(crate) max_one_way_us: u64,
    pub(crate) executed: Executed,
    /// The emulated link, to cut and restore.
    pub(crate) link: Arc<Link>,
    /// `--camera-max-age`.
    pub(crate) camera_max_age: Option<Duration>,
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

/// The 12 [`FEEDS`] beside a camera: each reading's age on arrival (p50, p99, p99.9).
pub(crate) async fn telemetry(ctx: Ctx) -> Result<(Map<String, Value>, charts::Series)> {
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

/// A 30 fps camera on a session, through a 2 s stall of the link halfway: frames delivered
/// per second, their age, and how long the camera took to recover.
pub(crate) async fn camera(ctx: Ctx) -> Result<(Map<String, Value>, charts::Series)> {
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

/// A call every 20 ms: call latency (its packets per call are counted from the link).
pub(crate) async fn rpc(ctx: Ctx) -> Result<(Map<String, Value>, charts::Series)> {
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

/// One stream as fast as it goes: goodput, and its fraction of the link's rate.
pub(crate) async fn bulk(ctx: Ctx) -> Result<(Map<String, Value>, charts::Series)> {
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
pub(crate) async fn outage(ctx: Ctx) -> Result<(Map<String, Value>, charts::Series)> {
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

/// The [`log_tree`] downloaded over a swarm of 4 connections: files per second, goodput.
pub(crate) async fn files(ctx: Ctx) -> Result<(Map<String, Value>, charts::Series)> {
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
pub(crate) fn log_tree(dir: &std::path::Path, seed: u64) -> Result<()> {
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
