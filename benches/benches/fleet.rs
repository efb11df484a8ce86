//! Fleet scale: one controller (one process, one UDP socket) against many gateways on
//! loopback, hosted by a few child processes so the controller's memory is its own.
//!
//! ```text
//! cargo bench -p quicswarm-benches --bench fleet                       # 1, 10, 50, 100, 200 gateways
//! cargo bench -p quicswarm-benches --bench fleet -- --gateways 1,20 --quick
//! cargo bench -p quicswarm-benches --bench fleet -- --json fleet.json --chart fleet.svg
//! ```
//!
//! For each fleet size N it reports the time to ping every gateway (a connection, a ping and
//! a close each, 64 at a time: `Fleet::ping`), a fleet download of 100 small files from each
//! (`Fleet::download` into `DEST/{name}/`, checked by count and bytes), and the controller's
//! resident memory per connection with N connections open at once (VmRSS before and after
//! `Fleet::connect` and a ping on each). Reference rows: **one** gateway serving all
//! 20,000 files (200 × 100), downloaded by a swarm of 1 and of 4 connections: the target is the
//! 200-gateway download in less than 3× the faster of the two. Not part of CI.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use futures_util::StreamExt;
use plotters::prelude::*;
use quicswarm::{
    files::{Selector, Swarm, TransferOptions},
    fleet::{Fleet, Member},
    Controller, ControllerConfig, Fingerprint, Gateway, Identity, Trust,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::json;

/// Files each fleet gateway serves.
const FILES_PER_GATEWAY: usize = 100;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let n: usize = args.get(i + 1).context("--child N DIR")?.parse()?;
        let dir = PathBuf::from(args.get(i + 2).context("--child N DIR")?);
        return child(n, &dir);
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let quick = args.iter().any(|a| a == "--quick");
    let sizes: Vec<usize> = match value("--gateways") {
        Some(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<usize>()
                    .map_err(|e| anyhow!("--gateways: {e}"))
            })
            .collect::<Result<_>>()?,
        None if quick => vec![1, 5, 20],
        None => vec![1, 10, 50, 100, 200],
    };
    let processes: usize = value("--processes").map_or(Ok(2), |p| p.parse())?;
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(parent(&sizes, processes.max(1)))?;
    print_table(&report);
    if let Some(path) = value("--json") {
        std::fs::write(&path, serde_json::to_string_pretty(&report.json())?)?;
        eprintln!("wrote {path}");
    }
    if let Some(path) = value("--chart") {
        chart(Path::new(&path), &report)?;
        eprintln!("wrote {path}");
    }
    Ok(())
}

/// A child process: `n` gateways serving `dir` as root `logs`; prints `addr fingerprint`
/// per gateway, then serves until its stdin closes (the parent is done or gone).
fn child(n: usize, dir: &Path) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut gateways = Vec::with_capacity(n);
        for _ in 0..n {
            let gateway = Gateway::builder()
                .listen("127.0.0.1:0".parse()?)
                .identity(Identity::self_signed(&[])?)
                .pool_size(4)
                .serve("logs", dir)
                .spawn()
                .await?;
            gateways.push(gateway);
        }
        let mut out = std::io::stdout().lock();
        for g in &gateways {
            writeln!(out, "{} {}", g.local_addr(), g.fingerprint())?;
        }
        out.flush()?;
        drop(out);
        // Blocks a worker thread until the parent closes our stdin: fine, it is the end.
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            let _ = std::io::stdin().read_line(&mut sink);
        })
        .await;
        Ok(())
    })
}

/// Child processes hosting gateways; killed on drop.
struct Hosts {
    children: Vec<Child>,
    gateways: Vec<(String, Fingerprint)>,
}

impl Hosts {
    fn start(total: usize, processes: usize, dir: &Path) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let per = total.div_ceil(processes);
        let (mut children, mut gateways) = (Vec::new(), Vec::new());
        let mut left = total;
        while left > 0 {
            let n = per.min(left);
            left -= n;
            let mut child = Command::new(&exe)
                .args(["--child", &n.to_string()])
                .arg(dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let stdout = child.stdout.take().context("child stdout")?;
            children.push(child);
            for line in BufReader::new(stdout).lines().take(n) {
                let line = line?;
                let (addr, fp) = line.split_once(' ').context("child line")?;
                gateways.push((addr.to_string(), fp.parse()?));
            }
        }
        ensure!(
            gateways.len() == total,
            "children started {} gateways",
            gateways.len()
        );
        Ok(Self { children, gateways })
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for c in &mut self.children {
            drop(c.stdin.take());
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes `n` small files (0.5 to 4 KiB, fixed seed) below `dir`, 100 per folder; returns
/// their total size.
fn small_files(dir: &Path, n: usize, seed: u64) -> Result<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut total = 0;
    for i in 0..n {
        let sub = dir.join(format!("d{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        let len = rng.gen_range(512..4096);
        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        std::fs::write(sub.join(format!("f{i:05}.bin")), &data)?;
        total += len as u64;
    }
    Ok(total)
}

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

struct Point {
    gateways: usize,
    ping_s: f64,
    download_s: f64,
    files: u64,
    rss_per_conn: f64,
}

struct Report {
    points: Vec<Point>,
    /// One gateway, every file: (swarm size, seconds).
    reference: Vec<(usize, f64)>,
    reference_files: usize,
}

impl Report {
    fn json(&self) -> serde_json::Value {
        json!({
            "points": self.points.iter().map(|p| json!({
                "gateways": p.gateways, "ping_all_s": p.ping_s, "download_s": p.download_s,
                "files": p.files, "controller_rss_per_connection_bytes": p.rss_per_conn,
            })).collect::<Vec<_>>(),
            "reference": self.reference.iter().map(|(swarm, s)| json!({
                "gateways": 1, "swarm": swarm, "files": self.reference_files, "download_s": s,
            })).collect::<Vec<_>>(),
        })
    }
}

fn controller() -> Result<Controller> {
    // Every member is pinned by its fingerprint; the controller's own trust is never used.
    let nobody = Identity::self_signed(&[])?.fingerprint();
    let mut config = ControllerConfig::with_trust(Trust::Fingerprints(vec![nobody]));
    config.connect_timeout = Duration::from_secs(30);
    config.bind = Some("127.0.0.1:0".parse()?);
    Ok(Controller::new(config)?)
}

async fn parent(sizes: &[usize], processes: usize) -> Result<Report> {
    let max = sizes.iter().copied().max().unwrap_or(1);
    let work = tempfile::tempdir()?;
    let (fleet_src, one_src) = (work.path().join("fleet-src"), work.path().join("one-src"));
    let per_bytes = small_files(&fleet_src, FILES_PER_GATEWAY, 1)?;
    let reference_files = max * FILES_PER_GATEWAY;
    small_files(&one_src, reference_files, 2)?;
    eprintln!(
        "starting {max} gateways in {processes} processes ({FILES_PER_GATEWAY} files, {per_bytes} bytes each)"
    );
    let hosts = Hosts::start(max, processes, &fleet_src)?;
    let one = Hosts::start(1, 1, &one_src)?;
    let controller = controller()?;

    let mut points = Vec::new();
    for &n in sizes {
        let members: Vec<Member> = hosts.gateways[..n]
            .iter()
            .enumerate()
            .map(|(i, (addr, fp))| Member::new(format!("g{i:03}"), addr.clone(), Some(*fp)))
            .collect::<Result<_, _>>()?;
        let fleet = Fleet::new(controller.clone(), members)?;

        let start = Instant::now();
        let pings: Vec<_> = fleet.ping().collect().await;
        let ping_s = start.elapsed().as_secs_f64();
        if let Some(bad) = pings.iter().find(|r| r.result.is_err()) {
            bail!("ping {}: {:?}", bad.gateway, bad.result);
        }

        let before = rss();
        let clients: Vec<_> = fleet.connect().collect().await;
        let mut open = Vec::new();
        for c in clients {
            let client = c
                .result
                .map_err(|e| anyhow!("connect {}: {e}", c.gateway))?;
            client.ping().await?;
            open.push(client);
        }
        let rss_per_conn = rss().saturating_sub(before) as f64 / n as f64;
        for c in open {
            let _ = c.close().await;
        }

        let dest = work.path().join(format!("dest-{n}"));
        let start = Instant::now();
        let done: Vec<_> = fleet
            .download("logs", &Selector::all(), &dest, &TransferOptions::default())
            .collect()
            .await;
        let download_s = start.elapsed().as_secs_f64();
        let mut files = 0;
        for d in done {
            let summary = d
                .result
                .map_err(|e| anyhow!("download {}: {e}", d.gateway))?;
            ensure!(
                summary.bytes == per_bytes,
                "{}: {} bytes",
                d.gateway,
                summary.bytes
            );
            files += summary.files;
        }
        ensure!(files == (n * FILES_PER_GATEWAY) as u64, "{files} files");
        std::fs::remove_dir_all(&dest)?;
        eprintln!("{n:>4} gateways: ping all {ping_s:.3} s, download {download_s:.3} s, {:.0} KiB per connection", rss_per_conn / 1024.0);
        points.push(Point {
            gateways: n,
            ping_s,
            download_s,
            files,
            rss_per_conn,
        });
    }

    let mut reference = Vec::new();
    let (addr, fp) = one.gateways[0].clone();
    for swarm_size in [1usize, 4] {
        let dest = work.path().join(format!("one-dest-{swarm_size}"));
        let start = Instant::now();
        let mut clients = Vec::new();
        for _ in 0..swarm_size {
            clients.push(controller.get_client_pinned(&addr, fp).await?);
        }
        let swarm = Swarm::new(clients);
        let summary = swarm
            .download("logs", &Selector::all(), &dest, &TransferOptions::default())
            .await?;
        let seconds = start.elapsed().as_secs_f64();
        swarm.close().await;
        ensure!(
            summary.files == reference_files as u64,
            "{} files",
            summary.files
        );
        std::fs::remove_dir_all(&dest)?;
        eprintln!("   1 gateway, swarm {swarm_size}: {reference_files} files in {seconds:.3} s");
        reference.push((swarm_size, seconds));
    }
    controller.close().await;
    drop((hosts, one));
    Ok(Report {
        points,
        reference,
        reference_files,
    })
}

fn print_table(report: &Report) {
    println!();
    println!(
        "{:>9} {:>12} {:>14} {:>9} {:>16}",
        "gateways", "ping all s", "download s", "files", "RSS / conn KiB"
    );
    for p in &report.points {
        println!(
            "{:>9} {:>12.3} {:>14.3} {:>9} {:>16.0}",
            p.gateways,
            p.ping_s,
            p.download_s,
            p.files,
            p.rss_per_conn / 1024.0
        );
    }
    for (swarm, s) in &report.reference {
        println!(
            "{:>9} {:>12} {:>14.3} {:>9}   (reference: one gateway, swarm {swarm})",
            1, "", s, report.reference_files
        );
    }
    let best = report
        .reference
        .iter()
        .map(|r| r.1)
        .fold(f64::INFINITY, f64::min);
    if let Some(last) = report.points.last() {
        if last.gateways * FILES_PER_GATEWAY == report.reference_files {
            println!(
                "\n{} gateways x {FILES_PER_GATEWAY} files: {:.2}x the best one-gateway time (target < 3x); \
                 controller RSS {:.0} KiB per connection (target < 1024)",
                last.gateways,
                last.download_s / best,
                last.rss_per_conn / 1024.0
            );
        }
    }
}

/// A named line of the chart.
type Line<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

/// Time against fleet size: ping all and download, with the one-gateway reference and the
/// 3× target as horizontal lines.
fn chart(path: &Path, report: &Report) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("chart: {e}");
    let root = SVGBackend::new(path, (760, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let x_max = report.points.iter().map(|p| p.gateways).max().unwrap_or(1) as f64;
    let best = report
        .reference
        .iter()
        .map(|r| r.1)
        .fold(f64::INFINITY, f64::min);
    let y_max = report
        .points
        .iter()
        .map(|p| p.download_s.max(p.ping_s))
        .chain(best.is_finite().then_some(best * 3.0))
        .fold(0.1, f64::max)
        * 1.1;
    let mut c = ChartBuilder::on(&root)
        .caption("one controller, N gateways on loopback", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max * 1.05, 0.0..y_max)
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .x_desc("gateways")
        .y_desc("seconds")
        .draw()
        .map_err(|e| err(&e))?;
    let line = |f: fn(&Point) -> f64| -> Vec<(f64, f64)> {
        report
            .points
            .iter()
            .map(|p| (p.gateways as f64, f(p)))
            .collect()
    };
    let series: [Line<'_>; 2] = [
        (
            "download, 100 files each",
            line(|p| p.download_s),
            RGBColor(31, 119, 180),
        ),
        ("ping all", line(|p| p.ping_s), RGBColor(255, 127, 14)),
    ];
    for (name, points, color) in series {
        c.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        c.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )
        .map_err(|e| err(&e))?;
    }
    if best.is_finite() {
        for (name, y, color) in [
            (
                format!("1 gateway, {} files (best swarm)", report.reference_files),
                best,
                RGBColor(44, 160, 44),
            ),
            (
                "target: 3x that".to_string(),
                best * 3.0,
                RGBColor(214, 39, 40),
            ),
        ] {
            c.draw_series(LineSeries::new(
                vec![(0.0, y), (x_max * 1.05, y)],
                color.stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
