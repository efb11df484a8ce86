//! Soak: 5 clients mixing streams, calls, sends and file downloads for a long time over an
//! impaired link, checking every result, and the process's memory at start and end.
//!
//! ```text
//! cargo bench -p quicswarm-benches --bench soak             # 10 minutes
//! cargo bench -p quicswarm-benches --bench soak -- 1        # minutes
//! ```
//!
//! The link approximates profile L3 of `LINKEM.md` ("edge of range": 10 Mbit/s, 60 ± 30 ms,
//! 5% bursty loss) with the seeded socket wrapper of the test suite: each side's outgoing
//! datagrams are delayed 30 ms and paced at 10 Mbit/s, and 2.5% are dropped each way (no
//! jitter, no bursts) — until the namespace emulator of issue 5 replaces it. Not run in CI.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{ensure, Result};
use quicswarm::{
    demo::CounterArgs,
    files::{Selector, Swarm, TransferOptions},
    Controller, ControllerConfig, Gateway, Identity, Trust,
};
use quicswarm_tests::link::Link;

#[derive(Default)]
struct Counts {
    streams: AtomicU64,
    items: AtomicU64,
    calls: AtomicU64,
    sends: AtomicU64,
    downloads: AtomicU64,
    files: AtomicU64,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn l3(seed: u64) -> Link {
    let link = Link::new(seed);
    link.set_delay(Duration::from_millis(30));
    link.set_rate(Some(1_250_000), 256 * 1024);
    link.set_loss(0.025);
    link
}

/// One client's loop: every round checks each kind of operation.
async fn worker(
    id: u64,
    controller: Controller,
    addr: String,
    until: Instant,
    counts: Arc<Counts>,
    data: std::path::PathBuf,
) -> Result<()> {
    let client = controller.get_client(&addr).await?;
    let mut round = 0u64;
    while Instant::now() < until {
        round += 1;
        // Reliable stream: every item, in order, once.
        let mut s = client
            .stream(
                "counter",
                &CounterArgs {
                    count: 50,
                    size: 512,
                },
            )
            .await?;
        let mut next = 0;
        while let Some((ident, data)) = s.next().await? {
            ensure!(
                ident == next && data.len() == 512,
                "client {id}: item {ident} where {next} was due"
            );
            next += 1;
        }
        ensure!(next == 50, "client {id}: {next} of 50 items");
        counts.streams.fetch_add(1, Ordering::Relaxed);
        counts.items.fetch_add(50, Ordering::Relaxed);
        // Call.
        let text = format!("client {id} round {round}");
        ensure!(
            client.call("echo", text.as_str()).await? == text.as_bytes(),
            "echo mismatch"
        );
        counts.calls.fetch_add(1, Ordering::Relaxed);
        // Send.
        let buf = vec![(round % 200) as u8; 20_000];
        let want: i64 = buf.iter().map(|&b| i64::from(b)).sum();
        ensure!(
            client.send("byte_sum", &(), buf).await? == want,
            "byte_sum mismatch"
        );
        counts.sends.fetch_add(1, Ordering::Relaxed);
        // A file download every tenth round, checked file by file.
        if round.is_multiple_of(10) {
            let dest = tempfile::tempdir()?;
            let summary = Swarm::new(vec![client.clone()])
                .download(
                    "data",
                    &Selector::all(),
                    dest.path(),
                    &TransferOptions::default(),
                )
                .await?;
            for entry in std::fs::read_dir(&data)? {
                let p = entry?.path();
                let name = p.file_name().unwrap_or_default();
                ensure!(
                    std::fs::read(&p)? == std::fs::read(dest.path().join(name))?,
                    "{} differs",
                    p.display()
                );
            }
            counts.downloads.fetch_add(1, Ordering::Relaxed);
            counts.files.fetch_add(summary.files, Ordering::Relaxed);
        }
    }
    client.close().await?;
    Ok(())
}

fn main() -> Result<()> {
    let minutes: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let data = tempfile::tempdir()?;
        for i in 0..20 {
            std::fs::write(data.path().join(format!("f{i}.log")), format!("line {i}\n").repeat(100 + i * 50))?;
        }
        let identity = Identity::self_signed(&[])?;
        let fp = identity.fingerprint();
        let gw_link = l3(1);
        let gateway = Gateway::builder()
            .listen("127.0.0.1:0".parse()?)
            .identity(identity)
            .registry(quicswarm::demo::registry())
            .serve("data", data.path())
            .socket_wrapper(gw_link.wrapper())
            .spawn()
            .await?;
        let addr = gateway.local_addr().to_string();
        let rss_start = rss_kib();
        let start = Instant::now();
        let until = start + Duration::from_secs_f64(minutes * 60.0);
        let counts = Arc::new(Counts::default());
        let mut tasks = Vec::new();
        let mut links = Vec::new();
        for id in 0..5u64 {
            let link = l3(100 + id);
            let mut config = ControllerConfig::with_trust(Trust::Fingerprints(vec![fp]));
            config.socket_wrapper = Some(link.wrapper());
            config.call_timeout = Some(Duration::from_secs(60));
            links.push(link);
            let controller = Controller::new(config)?;
            tasks.push(tokio::spawn(worker(id, controller, addr.clone(), until, counts.clone(), data.path().to_path_buf())));
        }
        // Memory over time: one sample every 30 s.
        let sampler = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                samples.push(rss_kib());
                if Instant::now() >= until {
                    return samples;
                }
            }
        });
        let mut failures = 0;
        for t in tasks {
            if let Err(e) = t.await? {
                eprintln!("worker failed: {e:#}");
                failures += 1;
            }
        }
        let rss_end = rss_kib();
        let samples = sampler.await?;
        // The gateway still answers.
        let controller = Controller::new(ControllerConfig::with_trust(Trust::Fingerprints(vec![fp])))?;
        let rtt = controller.get_client(&addr).await?.ping().await?;
        let dropped: u64 = links.iter().map(|l| l.counters().1).sum::<u64>() + gw_link.counters().1;
        let c = &counts;
        println!(
            "soak {:.1} min, 5 clients over L3-like link: {} streams ({} items, none lost or duplicated), {} calls, {} sends, {} downloads ({} files verified), {} datagrams dropped by the link, {} worker failures",
            start.elapsed().as_secs_f64() / 60.0,
            c.streams.load(Ordering::Relaxed),
            c.items.load(Ordering::Relaxed),
            c.calls.load(Ordering::Relaxed),
            c.sends.load(Ordering::Relaxed),
            c.downloads.load(Ordering::Relaxed),
            c.files.load(Ordering::Relaxed),
            dropped,
            failures
        );
        println!(
            "process RSS (gateway and clients): {rss_start} KiB before the clients, {rss_end} KiB at the end; every 30 s: {samples:?} KiB"
        );
        println!("the gateway still answers: ping {rtt:?}");
        ensure!(failures == 0, "{failures} workers failed");
        Ok(())
    })
}
