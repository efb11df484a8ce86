//! Core benchmark: quicswarm operations against raw quinn streams, in one run, on loopback.
//!
//! ```text
//! cargo bench -p quicswarm-benches --bench core            # full run (~1 min)
//! cargo bench -p quicswarm-benches --bench core -- --quick # smoke run
//! cargo bench -p quicswarm-benches --bench core -- --json report.json
//! cargo bench -p quicswarm-benches --bench core -- --cores 1 # each side pinned to one core
//! cargo bench -p quicswarm-benches --bench core -- --only calls --side ours # one side, to profile
//! cargo bench -p quicswarm-benches --bench core -- --only calls --in-flight 8 # default 64
//! ```
//!
//! The server side (a quicswarm gateway and a raw quinn echo/bulk server) runs on one thread
//! with a single-threaded tokio runtime, the client side on another: the same setup as the
//! reference figures in `QUINN-NOTES.md` ("2 cores"). Both use the same socket buffers and
//! flow-control windows, so the ratio shows what quicswarm's framing, dispatch and typing cost
//! over bare QUIC streams. Figures are this machine's; compare ratios, not absolutes.
//!
//! The bulk rows also give what each side's thread spent per GB (CPU-seconds): on the robot's
//! small board, that is the transfer speed. `--cores 1` pins the server thread to the first
//! core and the client to the second, so neither borrows the other's.
//!
//! This file runs the rows and prints them; `core/measure.rs` has what they are measured
//! with (each side's CPU, datagrams, histograms, calls in flight), `core/raw.rs` the raw quinn
//! baseline.

#[path = "core/measure.rs"]
mod measure;
#[path = "core/raw.rs"]
mod raw;

use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use quicswarm::{Controller, ControllerConfig, Gateway, Identity, Trust};
use quicswarm_benches::cores;

use self::{
    measure::{hist, in_flight, stream_items, timed, Datagrams, SideCpu, CALL_ROUNDS},
    raw::{raw_bulk, raw_client, raw_echo, raw_server, serve_raw, ITEM_BIG, ITEM_SMALL},
};

struct Sizes {
    latency_calls: u64,
    throughput_calls: u64,
    bulk_bytes: u64,
    small_items: u64,
}

const FULL: Sizes = Sizes {
    latency_calls: 10_000,
    throughput_calls: 300_000,
    bulk_bytes: 1 << 30,
    small_items: 1_000_000,
};
const QUICK: Sizes = Sizes {
    latency_calls: 500,
    throughput_calls: 10_000,
    bulk_bytes: 64 << 20,
    small_items: 50_000,
};
const IN_FLIGHT: usize = 64;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // cargo bench passes --bench; ignore flags we do not know.
    let sizes = if args.iter().any(|a| a == "--quick") {
        QUICK
    } else {
        FULL
    };
    let json_path = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let side = args
        .iter()
        .position(|a| a == "--side")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let calls_in_flight = match args.iter().position(|a| a == "--in-flight") {
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .context("--in-flight takes a count above zero")?,
        None => IN_FLIGHT,
    };
    let pinned = cores::from_args(&args)?.is_some();

    let identity = Identity::self_signed(&[])?;
    let fingerprint = identity.fingerprint();
    let raw_cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;

    // Server thread: the gateway and the raw quinn server.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let cert_der = raw_cert.cert.der().clone();
    let key_der = raw_cert.signing_key.serialize_der();
    let server = std::thread::Builder::new()
        .name(cores::GATEWAY.into())
        .spawn(move || -> Result<()> {
            if pinned {
                cores::pin_current(cores::core_of(cores::GATEWAY))?;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let gateway = Gateway::builder()
                    .listen("127.0.0.1:0".parse()?)
                    .identity(identity)
                    .registry(quicswarm::demo::registry())
                    .spawn()
                    .await?;
                let raw = raw_server(cert_der, key_der)?;
                addr_tx.send((gateway.local_addr(), raw.local_addr()?))?;
                tokio::spawn(serve_raw(raw));
                let _ = stop_rx.await;
                gateway.shutdown(Duration::from_millis(100)).await;
                Ok(())
            })
        })?;
    let (gw_addr, raw_addr) = addr_rx.recv().context("server thread failed to start")?;

    // The client side runs on this thread.
    if pinned {
        cores::pin_current(cores::core_of(cores::CLIENT))?;
        println!("pinned: server thread on core 0, client thread on core 1");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let rows = rt.block_on(async {
        let controller = Controller::new(ControllerConfig::with_trust(Trust::Fingerprints(vec![
            fingerprint,
        ])))?;
        let client = controller.get_client(&gw_addr.to_string()).await?;
        let raw = raw_client(raw_addr, raw_cert.cert.der().clone()).await?;
        run_all(
            &sizes,
            &Options {
                only: only.as_deref(),
                side: side.as_deref(),
                calls_in_flight,
            },
            &client,
            &raw,
        )
        .await
    })?;
    let _ = stop_tx.send(());
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;

    println!();
    println!(
        "{:<36} {:>14} {:>14} {:>8}   target",
        "workload", "quicswarm", "raw quinn", "ratio"
    );
    for r in &rows {
        println!(
            "{:<36} {:>14} {:>14} {:>8}   {}",
            r.name,
            fmt_num(r.ours),
            r.raw.map(fmt_num).unwrap_or_else(|| "-".into()),
            r.raw
                .map(|raw| format!("{:.2}x", r.ours / raw))
                .unwrap_or_else(|| "-".into()),
            r.target
        );
    }
    if let Some(path) = json_path {
        let json: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({"workload": r.name, "quicswarm": r.ours, "raw_quinn": r.raw,
                                        "ratio": r.raw.map(|raw| r.ours / raw), "target": r.target})
            })
            .collect();
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
        println!("wrote {path}");
    }
    Ok(())
}

fn fmt_num(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

struct Row {
    name: String,
    ours: f64,
    raw: Option<f64>,
    target: &'static str,
}

/// What to run, from the command line.
struct Options<'a> {
    /// `--only`: one group of rows.
    only: Option<&'a str>,
    /// `--side ours|raw|none`: one side of the calls rows alone, for a profiler.
    side: Option<&'a str>,
    /// `--in-flight`: calls kept in flight by the calls rows.
    calls_in_flight: usize,
}

async fn run_all(
    sizes: &Sizes,
    options: &Options<'_>,
    client: &quicswarm::Client,
    raw: &quinn::Connection,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let want = |group: &str| options.only.is_none_or(|o| o == group);
    let (side, in_flight_calls) = (options.side, options.calls_in_flight);

    // Latency: sequential small request/response, a new stream each.
    if want("latency") {
        let mut ours = hist();
        let mut theirs = hist();
        for _ in 0..sizes.latency_calls / 10 {
            client.call("echo", "warm").await?;
            raw_echo(raw, 64).await?;
        }
        for i in 0..sizes.latency_calls {
            // Interleave so both see the same machine noise.
            if i % 2 == 0 {
                ours.record(
                    timed(client.call(
                        "echo",
                        "0123456789abcdef0123456789abcdef0123456789abcdef01234567",
                    ))
                    .await?,
                )?;
                theirs.record(timed(raw_echo(raw, 64)).await?)?;
            } else {
                theirs.record(timed(raw_echo(raw, 64)).await?)?;
                ours.record(
                    timed(client.call(
                        "echo",
                        "0123456789abcdef0123456789abcdef0123456789abcdef01234567",
                    ))
                    .await?,
                )?;
            }
        }
        rows.extend(percentiles("call latency", &ours, &theirs, "<= 1.3x raw"));
        let mut pings = hist();
        for _ in 0..sizes.latency_calls {
            pings.record(client.ping().await?.as_nanos() as u64)?;
        }
        rows.extend(percentiles("ping", &pings, &theirs, "-"));
    }

    // Throughput: 64 calls in flight (`--in-flight`). In alternating rounds (which side goes first swaps
    // too), so both sides see the same machine noise: this machine is shared.
    if want("calls") {
        let per_round = sizes.throughput_calls / CALL_ROUNDS;
        let (mut ours_s, mut theirs_s) = (0.0, 0.0);
        let (mut ours_cpu, mut theirs_cpu) = (SideCpu::zero(), SideCpu::zero());
        let ours_conn = client
            .connection()
            .quic()
            .context("the core bench runs over QUIC")?;
        let (ours_dgrams, theirs_dgrams) = (Datagrams::of(ours_conn), Datagrams::of(raw));
        for round in 0..CALL_ROUNDS {
            for ours_now in [round % 2 == 0, round % 2 == 1] {
                // `--side`: one side alone, for a profiler (callgrind's per-call counts are
                // the totals minus a `--side none` run's).
                if side.is_some_and(|s| s == "none" || (s == "ours") != ours_now) {
                    continue;
                }
                let before = SideCpu::now()?;
                if ours_now {
                    let owned = client.clone();
                    ours_s += in_flight(per_round, in_flight_calls, move |_| {
                        let c = owned.clone();
                        async move {
                            c.call(
                                "echo",
                                "0123456789abcdef0123456789abcdef0123456789abcdef01234567",
                            )
                            .await
                            .map(drop)
                            .map_err(anyhow::Error::from)
                        }
                    })
                    .await?;
                } else {
                    let owned = raw.clone();
                    theirs_s += in_flight(per_round, in_flight_calls, move |_| {
                        let c = owned.clone();
                        async move { raw_echo(&c, 64).await.map(drop) }
                    })
                    .await?;
                }
                let spent = SideCpu::now()?.minus(before);
                if ours_now {
                    ours_cpu = ours_cpu.plus(spent);
                } else {
                    theirs_cpu = theirs_cpu.plus(spent);
                }
            }
        }
        let total = (per_round * CALL_ROUNDS) as f64;
        let (ours, theirs) = (total / ours_s, total / theirs_s);
        rows.push(Row {
            name: format!("calls/s, {in_flight_calls} in flight"),
            ours,
            raw: Some(theirs),
            target: ">= 150000",
        });
        let (ours_dgrams, theirs_dgrams) = (
            Datagrams::of(ours_conn).minus(ours_dgrams),
            Datagrams::of(raw).minus(theirs_dgrams),
        );
        rows.push(Row {
            name: "  UDP datagrams per call, sent".into(),
            ours: ours_dgrams.sent as f64 / total,
            raw: Some(theirs_dgrams.sent as f64 / total),
            target: "-",
        });
        rows.push(Row {
            name: "  UDP datagrams per call, received".into(),
            ours: ours_dgrams.received as f64 / total,
            raw: Some(theirs_dgrams.received as f64 / total),
            target: "-",
        });
        // CPU per call on each side: which side bounds the rate, and by how much.
        let per_call_us = |cpu: f64| cpu / total * 1e6;
        rows.push(Row {
            name: "  server CPU-µs per call".into(),
            ours: per_call_us(ours_cpu.server),
            raw: Some(per_call_us(theirs_cpu.server)),
            target: "-",
        });
        rows.push(Row {
            name: "  client CPU-µs per call".into(),
            ours: per_call_us(ours_cpu.client),
            raw: Some(per_call_us(theirs_cpu.client)),
            target: "-",
        });
    }

    // Bulk: 64 KiB items vs one raw stream of the same bytes.
    if want("bulk") {
        let count = sizes.bulk_bytes / ITEM_BIG as u64;
        let before = SideCpu::now()?;
        let (secs, bytes) = stream_items(client, count, ITEM_BIG).await?;
        let ours_cpu = SideCpu::now()?.since(before, bytes);
        let ours = bytes as f64 / secs / 1e6;
        let before = SideCpu::now()?;
        let theirs = raw_bulk(raw, b'B', sizes.bulk_bytes).await?;
        let theirs_cpu = SideCpu::now()?.since(before, sizes.bulk_bytes);
        rows.push(Row {
            name: "stream 64 KiB items (MB/s)".into(),
            ours,
            raw: Some(theirs),
            target: ">= 0.85x raw",
        });
        rows.push(Row {
            name: "  server CPU-s per GB".into(),
            ours: ours_cpu.server,
            raw: Some(theirs_cpu.server),
            target: "-",
        });
        rows.push(Row {
            name: "  client CPU-s per GB".into(),
            ours: ours_cpu.client,
            raw: Some(theirs_cpu.client),
            target: "-",
        });
    }

    // Small items: 1 KiB each.
    if want("items") {
        let (secs, _) = stream_items(client, sizes.small_items, ITEM_SMALL).await?;
        let ours = sizes.small_items as f64 / secs;
        let raw_mbs = raw_bulk(raw, b'I', sizes.small_items * ITEM_SMALL as u64).await?;
        let theirs = raw_mbs * 1e6 / (ITEM_SMALL as f64 + 4.0);
        rows.push(Row {
            name: "stream 1 KiB items (items/s)".into(),
            ours,
            raw: Some(theirs),
            target: ">= 200000",
        });
    }
    Ok(rows)
}

/// p50 and p99 rows, in microseconds, of two latency histograms.
fn percentiles(
    what: &str,
    ours: &Histogram<u64>,
    raw: &Histogram<u64>,
    target: &'static str,
) -> [Row; 2] {
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    [0.5, 0.99].map(|q| Row {
        name: format!("{what} p{} (µs)", (q * 100.0) as u32),
        ours: us(ours, q),
        raw: Some(us(raw, q)),
        target: if q == 0.5 { target } else { "-" },
    })
}
