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
//!
//! This file runs the rows and prints them; `tcp_vs_quic/modes.rs` has the workloads and the
//! transports each runs over, `gateway.rs` the gateway side and its subroutines, `workloads.rs`
//! the client side of each workload and what it measures, `charts.rs` the SVG charts.

#[path = "tcp_vs_quic/charts.rs"]
mod charts;
#[path = "tcp_vs_quic/gateway.rs"]
mod gateway;
#[path = "tcp_vs_quic/modes.rs"]
mod modes;
#[path = "tcp_vs_quic/workloads.rs"]
mod workloads;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Result};
use clap::Parser;
use linkem::{Link, LinkCounters, Profile, Side};
use serde::Serialize;
use serde_json::{json, Map, Value};

use self::{
    gateway::{start_gateway, PORT},
    modes::{modes, Mode, Workload},
    workloads::{bulk, camera, files, log_tree, outage, rpc, telemetry, Ctx},
};

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
