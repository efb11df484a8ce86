//! telemetry: a robot publishing sensor feeds and taking drive commands while its camera
//! streams, and a laptop printing per-feed rates and latencies.
//!
//! ```text
//! telemetry robot --listen 0.0.0.0:1857
//! telemetry laptop ROBOT:1857 --seconds 10 [--json]
//! cargo run --release -p quicswarm-examples --bin telemetry -- demo --seconds 5
//! ```
//!
//! | feed | rate | delivery | why |
//! |---|---|---|---|
//! | `imu` | 200 Hz, 48 B | datagram | latest value wins; a lost reading is replaced 5 ms later |
//! | `odometry` | 50 Hz, 64 B | reliable | integrated downstream: every sample counts |
//! | `battery` | 1 Hz, 16 B | reliable | rare and small |
//! | `camera` | 30 fps, 40 KB | latest | fresh frames over a backlog |
//! | `drive` | on demand | sink, not replay-safe | a command must never run twice |
//!
//! Each item starts with its send time (microseconds since the Unix epoch, u64 LE), so the
//! laptop measures latency directly when both clocks agree (loopback, or NTP/PTP on a LAN).

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, Subcommand};
use quicswarm::{
    Client, ControllerConfig, Delivery, Fingerprint, Gateway, Identity, Registry, SinkData,
    SubscribeOptions, Trust,
};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(about = "Robot telemetry and commands over quicswarm")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The robot: serve the feeds and accept drive commands.
    Robot {
        #[arg(long, default_value = "0.0.0.0:1857")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = "certs")]
        cert_dir: std::path::PathBuf,
    },
    /// The laptop: subscribe to every feed, send drive commands, report.
    Laptop {
        addr: String,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        fingerprint: Option<Fingerprint>,
    },
    /// Both in one process on loopback.
    Demo {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long)]
        json: bool,
    },
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Arguments of a feed: its rate and item size (the item starts with its send time).
#[derive(Serialize, Deserialize, Clone, Copy)]
struct Feed {
    hz: f64,
    size: usize,
}

/// A drive command.
#[derive(Serialize, Deserialize, Debug)]
struct Drive {
    speed: f32,
    turn: f32,
}

fn registry(commands: Arc<AtomicU64>) -> Registry {
    let registry = Registry::new();
    registry
        .stream("feed", |feed: Feed, _ctx| {
            let period = Duration::from_secs_f64(1.0 / feed.hz.max(0.001));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            futures_util::stream::unfold((tick, 0i64), move |(mut tick, n)| async move {
                tick.tick().await;
                let mut b = BytesMut::with_capacity(feed.size.max(8));
                b.put_u64_le(now_us());
                b.resize(feed.size.max(8), 0);
                Some((Ok::<_, String>((n, b.freeze())), (tick, n + 1)))
            })
        })
        .sink("drive", move |cmd: Drive, _data: SinkData| {
            let n = commands.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                // A real robot would set its motor speeds from `cmd` here.
                let _ = cmd;
                Ok::<_, String>(n as i64)
            }
        });
    // Feeds are read-only: a reconnecting laptop may resume them from 0-RTT early data.
    // `drive` stays not replay-safe: it is refused in early data and sent after the handshake.
    registry.set_replay_safe("feed", true);
    registry
}

/// Per-feed results.
#[derive(Debug, Serialize, Default)]
struct FeedReport {
    items: u64,
    rate_hz: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
}

async fn watch_feed(
    client: Client,
    feed: Feed,
    delivery: Delivery,
    priority: i32,
    seconds: u64,
) -> Result<FeedReport> {
    let mut options = SubscribeOptions::delivery(delivery);
    options.priority = priority;
    let mut items = client.subscribe("feed", &feed, &options).await?;
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut lat = Vec::new();
    while let Ok(next) = tokio::time::timeout_at(deadline, items.next()).await {
        let Some((_, b)) = next? else { break };
        let sent = u64::from_le_bytes(b[..8].try_into()?);
        lat.push(now_us().saturating_sub(sent) as f64 / 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(FeedReport {
        items: lat.len() as u64,
        rate_hz: lat.len() as f64 / start.elapsed().as_secs_f64(),
        latency_p50_ms: pct(0.5),
        latency_p99_ms: pct(0.99),
    })
}

#[derive(Debug, Serialize)]
struct Report {
    feeds: BTreeMap<String, FeedReport>,
    commands_sent: u64,
    command_p99_ms: f64,
}

async fn laptop(client: Client, seconds: u64) -> Result<Report> {
    let feeds = [
        (
            "imu",
            Feed {
                hz: 200.0,
                size: 48,
            },
            Delivery::Datagram,
            30,
        ),
        (
            "odometry",
            Feed { hz: 50.0, size: 64 },
            Delivery::Reliable,
            20,
        ),
        (
            "battery",
            Feed { hz: 1.0, size: 16 },
            Delivery::Reliable,
            20,
        ),
        (
            "camera",
            Feed {
                hz: 30.0,
                size: 40_000,
            },
            Delivery::Latest,
            10,
        ),
    ];
    let mut tasks = Vec::new();
    for (name, feed, delivery, priority) in feeds {
        let c = client.clone();
        tasks.push((
            name,
            tokio::spawn(watch_feed(c, feed, delivery, priority, seconds)),
        ));
    }
    // Drive commands at 10 Hz meanwhile.
    let mut command_lat = Vec::new();
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while Instant::now() < end {
        tick.tick().await;
        let t = Instant::now();
        client
            .send(
                "drive",
                &Drive {
                    speed: 0.5,
                    turn: 0.1,
                },
                Bytes::new(),
            )
            .await?;
        command_lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut report = Report {
        feeds: BTreeMap::new(),
        commands_sent: command_lat.len() as u64,
        command_p99_ms: 0.0,
    };
    command_lat.sort_by(f64::total_cmp);
    report.command_p99_ms = command_lat
        .get(((command_lat.len().max(1) - 1) as f64 * 0.99) as usize)
        .copied()
        .unwrap_or(0.0);
    for (name, task) in tasks {
        report.feeds.insert(name.to_string(), task.await??);
    }
    Ok(report)
}

fn print(report: &Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    for (name, f) in &report.feeds {
        println!(
            "{name:<9} {:>6} items {:>7.1} Hz   latency p50 {:>6.2} ms  p99 {:>6.2} ms",
            f.items, f.rate_hz, f.latency_p50_ms, f.latency_p99_ms
        );
    }
    println!(
        "drive     {:>6} commands, round trip p99 {:.2} ms",
        report.commands_sent, report.command_p99_ms
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Robot { listen, cert_dir } => {
            let gateway = Gateway::builder()
                .listen(listen)
                .cert_dir(cert_dir)
                .registry(registry(Arc::default()))
                .spawn()
                .await?;
            eprintln!(
                "robot on {} ({})",
                gateway.local_addr(),
                gateway.fingerprint()
            );
            gateway.closed().await;
        }
        Command::Laptop {
            addr,
            seconds,
            json,
            fingerprint,
        } => {
            let trust = fingerprint.map_or(Trust::KnownGateways("known_gateways".into()), |fp| {
                Trust::Fingerprints(vec![fp])
            });
            let controller = quicswarm::Controller::new(ControllerConfig::with_trust(trust))?;
            let client = controller.get_client(&addr).await?;
            print(&laptop(client, seconds).await?, json)?;
        }
        Command::Demo { seconds, json } => {
            let identity = Identity::self_signed(&[])?;
            let fp = identity.fingerprint();
            let commands = Arc::new(AtomicU64::new(0));
            let gateway = Gateway::builder()
                .listen("127.0.0.1:0".parse()?)
                .identity(identity)
                .registry(registry(commands.clone()))
                .spawn()
                .await?;
            let controller = quicswarm::Controller::new(ControllerConfig::with_trust(
                Trust::Fingerprints(vec![fp]),
            ))?;
            let client = controller
                .get_client(&gateway.local_addr().to_string())
                .await?;
            let report = laptop(client, seconds).await?;
            anyhow::ensure!(
                commands.load(Ordering::SeqCst) == report.commands_sent,
                "every command ran once"
            );
            print(&report, json)?;
            gateway.shutdown(Duration::from_secs(1)).await;
        }
    }
    Ok(())
}
