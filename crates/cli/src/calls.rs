//! `quicswarm ping`, `call`, `stream` and `send`: one subroutine operation each, reported
//! for people or, with `--json`, as one JSON line.

use std::{path::Path, time::Instant};

use anyhow::{bail, Context, Result};
use quicswarm::{Client, Json};
use serde_json::json;

use crate::opts::{emit, ClientOpts};

fn args_json(args: Option<String>) -> Json<String> {
    Json(args.unwrap_or_default())
}

pub(crate) async fn ping(client: &Client, addr: &str, count: u32, opts: &ClientOpts) -> Result<()> {
    // Sized by what a ping run needs, not by whatever --count says.
    let mut samples = Vec::with_capacity(count.clamp(1, 10_000) as usize);
    for _ in 0..count.max(1) {
        samples.push(client.ping().await.context("ping")?);
    }
    samples.sort();
    let pct =
        |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize].as_micros() as u64;
    let (p50, p99) = (pct(0.5), pct(0.99));
    emit(
        opts,
        json!({"count": samples.len(), "p50_us": p50, "p99_us": p99}),
        || {
            println!(
                "{} pings to {addr}: p50 {p50} µs, p99 {p99} µs",
                samples.len()
            )
        },
    );
    Ok(())
}

pub(crate) async fn call(
    client: &Client,
    name: &str,
    args: Option<String>,
    opts: &ClientOpts,
) -> Result<()> {
    let reply = client
        .call(name, &args_json(args))
        .await
        .with_context(|| format!("calling {name}"))?;
    if opts.json {
        let utf8 = std::str::from_utf8(&reply).ok();
        println!("{}", json!({"len": reply.len(), "utf8": utf8}));
    } else {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(&reply)?;
        if std::io::IsTerminal::is_terminal(&out) && !reply.ends_with(b"\n") {
            writeln!(out)?;
        }
    }
    Ok(())
}

pub(crate) async fn stream(
    client: &Client,
    name: &str,
    args: Option<String>,
    max: Option<u64>,
    opts: &ClientOpts,
) -> Result<()> {
    let start = Instant::now();
    let mut items = client
        .stream(name, &args_json(args))
        .await
        .with_context(|| format!("subscribing to {name}"))?;
    let (mut count, mut bytes) = (0u64, 0u64);
    let (mut first, mut last, mut in_order) = (None, None::<i64>, true);
    while max.is_none_or(|m| count < m) {
        let Some((ident, data)) = items
            .next()
            .await
            .with_context(|| format!("streaming {name}"))?
        else {
            break;
        };
        in_order &= last.is_none_or(|l| ident > l);
        first.get_or_insert(ident);
        last = Some(ident);
        count += 1;
        bytes += data.len() as u64;
    }
    drop(items);
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let (ips, mbps) = (count as f64 / secs, bytes as f64 / secs / 1e6);
    emit(
        opts,
        json!({"items": count, "bytes": bytes, "first_ident": first, "last_ident": last,
               "in_order": in_order, "items_per_s": ips.round(), "mb_per_s": (mbps * 10.0).round() / 10.0}),
        || {
            println!("{count} items, {bytes} bytes in {secs:.3} s: {ips:.0} items/s, {mbps:.1} MB/s, in order: {in_order}")
        },
    );
    Ok(())
}

pub(crate) async fn send(
    client: &Client,
    name: &str,
    args: Option<String>,
    file: Option<&Path>,
    zeros: Option<u64>,
    opts: &ClientOpts,
) -> Result<()> {
    let args = args_json(args);
    let start = Instant::now();
    let (result, len) = match (file, zeros) {
        (Some(path), _) => {
            let f = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            let len = f.metadata().await?.len();
            (client.send_reader(name, &args, f, Some(len)).await, len)
        }
        (None, Some(n)) => {
            use tokio::io::AsyncReadExt;
            (
                client
                    .send_reader(name, &args, tokio::io::repeat(0).take(n), Some(n))
                    .await,
                n,
            )
        }
        (None, None) => bail!("give --file or --zeros"),
    };
    let result = result.with_context(|| format!("sending to {name}"))?;
    let secs = start.elapsed().as_secs_f64();
    emit(opts, json!({"result": result}), || {
        println!(
            "{name} returned {result} ({len} bytes in {secs:.3} s, {:.1} MB/s)",
            len as f64 / secs.max(1e-9) / 1e6
        )
    });
    Ok(())
}
