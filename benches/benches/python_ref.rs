//! The Rust API on the workloads of `benches/python/bench.py`, for its "Rust API" column:
//! a Rust gateway and a Rust client with the same subroutines, counts and data, each in a
//! process of its own as the Python side runs them (this binary starts itself again as the
//! gateway), so the column differs from the Python one only by the Python layer.
//!
//! ```text
//! cargo bench -p quicswarm-benches --bench python_ref -- --data DIR [--quick]
//! ```
//! `DIR` holds `small/` and `big/` as the Python bench makes them. Prints one JSON object.

use std::{
    io::BufRead,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result};
use futures_util::stream;
use quicswarm::{
    files::{Selector, Swarm, TransferOptions},
    Controller, ControllerConfig, Fingerprint, Gateway, Identity, Json, Registry, SinkData, Trust,
};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let data: PathBuf = args
        .iter()
        .position(|a| a == "--data")
        .and_then(|i| args.get(i + 1))
        .context("--data DIR")?
        .into();
    if args.iter().any(|a| a == "--gateway") {
        return gateway(&data).await;
    }
    // The gateway in a process of its own; it prints its address and fingerprint.
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["--gateway", "--data"])
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("the gateway's stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let (addr, fingerprint) = (
        words.next().context("the gateway's address")?.to_string(),
        words.next().context("the gateway's fingerprint")?.parse()?,
    );
    let result = client(&addr, fingerprint, quick).await;
    child.kill()?;
    child.wait()?;
    result
}

/// Serves the bench's subroutines and `small/`, `big/` until killed.
async fn gateway(data: &Path) -> Result<()> {
    let registry = Registry::new();
    registry
        .batch("echo64", |_: serde_json::Value| async {
            Ok::<_, String>(vec![b'x'; 64])
        })
        .stream("items", |(n, size): (u64, usize), _ctx| {
            let chunk = bytes::Bytes::from(vec![b'y'; size]);
            stream::iter((0..n).map(move |i| Ok::<_, String>((i as i64, chunk.clone()))))
        })
        .sink(
            "sink",
            |_: serde_json::Value, mut data: SinkData| async move {
                let mut total = 0i64;
                while let Some(chunk) = data.chunk().await.map_err(|e| e.to_string())? {
                    total += chunk.len() as i64;
                }
                Ok::<_, String>(total)
            },
        );
    let identity = Identity::self_signed(&[])?;
    let fingerprint = identity.fingerprint();
    let gateway = Gateway::builder()
        .listen("127.0.0.1:0".parse()?)
        .identity(identity)
        .registry(registry)
        .serve("small", data.join("small"))
        .serve("big", data.join("big"))
        .spawn()
        .await?;
    println!("{} {}", gateway.local_addr(), fingerprint);
    std::future::pending::<()>().await;
    Ok(())
}

/// The workloads, against the gateway at `addr`; prints them as one JSON object.
async fn client(addr: &str, fingerprint: Fingerprint, quick: bool) -> Result<()> {
    // The quicswarm counts of bench.py.
    let (pings, calls, items1k, items64k, sends) = if quick {
        (200, 200, 20_000, 500, 5)
    } else {
        (2000, 2000, 200_000, 5000, 50)
    };
    let controller = Controller::new(ControllerConfig::with_trust(Trust::Fingerprints(vec![
        fingerprint,
    ])))?;
    let client = controller.get_client(addr).await?;

    let mut samples = Vec::with_capacity(pings);
    for _ in 0..pings {
        let t = Instant::now();
        client.ping().await?;
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    let ping_p50_us = samples[samples.len() / 2] * 1e6;

    let t = Instant::now();
    for _ in 0..calls {
        anyhow::ensure!(client.call("echo64", &Json("null")).await?.len() == 64);
    }
    let call_per_s = calls as f64 / t.elapsed().as_secs_f64();

    let mut rates = Vec::new();
    for (n, size) in [(items1k, 1024), (items64k, 65536)] {
        let t = Instant::now();
        let mut items = client
            .stream("items", &Json(format!("[{n}, {size}]")))
            .await?;
        let mut count = 0;
        while items.next().await?.is_some() {
            count += 1;
        }
        anyhow::ensure!(count == n);
        rates.push(n as f64 / t.elapsed().as_secs_f64());
    }

    let buffer = bytes::Bytes::from(vec![7u8; 4 << 20]);
    let t = Instant::now();
    for _ in 0..sends {
        anyhow::ensure!(client.send("sink", &Json("null"), buffer.clone()).await? == 4 << 20);
    }
    let send_mb_per_s = (sends * buffer.len()) as f64 / t.elapsed().as_secs_f64() / 1e6;

    let dest = tempfile::tempdir()?;
    let mut seconds = Vec::new();
    for root in ["small", "big"] {
        // As bench.py does: what others left dirty is flushed first, so the download's
        // own syncfs pays only for its own files.
        rustix::fs::sync();
        // As the Python API does per download: the swarm's connections are part of it.
        let t = Instant::now();
        let swarm = Swarm::connect(&controller, addr, 4).await?;
        swarm
            .download(
                root,
                &Selector::all(),
                dest.path().join(root),
                &TransferOptions::default(),
            )
            .await?;
        swarm.close().await;
        seconds.push(t.elapsed().as_secs_f64());
    }
    client.close().await?;
    println!(
        "{}",
        serde_json::json!({
            "ping_p50_us": ping_p50_us,
            "call_per_s": call_per_s,
            "stream1k_items_per_s": rates[0],
            "stream64k_items_per_s": rates[1],
            "send_mb_per_s": send_mb_per_s,
            "files_s": seconds[0],
            "big_s": seconds[1],
        })
    );
    Ok(())
}
