//! `quicswarm demo`: a gateway and a controller in one process on loopback, every operation,
//! a short report with the timings.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use quicswarm::{
    demo::{CounterArgs, TickerArgs},
    CallError, ConnectError, Controller, ControllerConfig, Gateway, Identity, Trust,
};
use serde_json::json;

const POOL: usize = 5;

/// The figures the demo prints (and, with `--json`, prints again as one object).
#[derive(Default)]
struct Report {
    connect_ms: f64,
    ping_p50_us: u64,
    ping_p99_us: u64,
    call_ms: f64,
    stream_1k_items_per_s: f64,
    stream_64k_mb_per_s: f64,
    send_mb_per_s: f64,
    ping_during_stream_us: u64,
    aborted_after: u64,
}

pub(crate) async fn run(as_json: bool) -> Result<()> {
    // The `panic` subroutine panics on purpose: one line instead of a backtrace.
    std::panic::set_hook(Box::new(|_| {
        eprintln!("  (a subroutine panicked on purpose; the gateway caught it)")
    }));
    let identity = Identity::self_signed(&[]).context("making a throwaway certificate")?;
    let fingerprint = identity.fingerprint();
    let gateway = Gateway::builder()
        .listen("127.0.0.1:0".parse()?)
        .pool_size(POOL)
        .identity(identity)
        .registry(quicswarm::demo::registry())
        .spawn()
        .await?;
    let addr = gateway.local_addr().to_string();
    let controller = Controller::new(ControllerConfig::with_trust(Trust::Fingerprints(vec![
        fingerprint,
    ])))?;

    println!("quicswarm demo: gateway on {addr} (pool {POOL}), certificate {fingerprint}");
    let start = Instant::now();
    let client = controller.get_client(&addr).await?;
    let mut report = Report {
        connect_ms: ms(start.elapsed()),
        ..Report::default()
    };
    println!("  connect + handler        {:>10.2} ms", report.connect_ms);
    timings(&client, &mut report).await?;
    report.ping_during_stream_us = no_head_of_line_blocking(&client).await?;
    typed_errors(&client).await?;
    let reused = pool_overflow(&controller, &addr).await?;
    report.aborted_after = abort(&client).await?;

    reused.close().await?;
    client.close().await?;
    gateway.shutdown(Duration::from_secs(1)).await;
    println!("done: every operation worked; see README.md for the library and CLI.");
    if as_json {
        let r = &report;
        println!(
            "{}",
            json!({
                "connect_ms": r.connect_ms, "ping_p50_us": r.ping_p50_us, "ping_p99_us": r.ping_p99_us,
                "call_ms": r.call_ms, "stream_1k_items_per_s": r.stream_1k_items_per_s.round(),
                "stream_64k_mb_per_s": r.stream_64k_mb_per_s.round(), "send_mb_per_s": r.send_mb_per_s.round(),
                "ping_during_stream_us": r.ping_during_stream_us, "pool_full": true,
                "aborted_after": r.aborted_after,
            })
        );
    }
    Ok(())
}

/// Ping, call, streams and a send, timed.
async fn timings(client: &quicswarm::Client, report: &mut Report) -> Result<()> {
    let mut rtts = Vec::new();
    for _ in 0..200 {
        rtts.push(client.ping().await?);
    }
    rtts.sort();
    let (p50, p99) = (rtts[rtts.len() / 2], rtts[rtts.len() * 99 / 100]);
    (report.ping_p50_us, report.ping_p99_us) = (p50.as_micros() as u64, p99.as_micros() as u64);
    println!(
        "  ping x200                p50 {:>6} µs   p99 {:>6} µs",
        report.ping_p50_us, report.ping_p99_us
    );

    let start = Instant::now();
    let reply = client.call("echo", "hello from the controller").await?;
    report.call_ms = ms(start.elapsed());
    ensure!(
        &reply[..] == b"hello from the controller",
        "echo returned something else"
    );
    println!(
        "  call echo                {:>10.2} ms   -> {:?}",
        report.call_ms,
        String::from_utf8_lossy(&reply)
    );

    let (small_ips, small_mbps) = stream(client, 100_000, 1024).await?;
    report.stream_1k_items_per_s = small_ips;
    println!(
        "  stream 100k x 1 KiB      {:>10.0} items/s {:>8.1} MB/s",
        small_ips, small_mbps
    );
    let (_, big_mbps) = stream(client, 2_048, 64 * 1024).await?;
    report.stream_64k_mb_per_s = big_mbps;
    println!("  stream 2048 x 64 KiB     {:>19.1} MB/s", big_mbps);

    let data = vec![1u8; 64 << 20];
    let start = Instant::now();
    let sum = client.send("byte_sum", &(), data).await?;
    let send = start.elapsed();
    ensure!(sum == 64 << 20, "byte_sum returned {sum}");
    report.send_mb_per_s = 64.0 * 1.048_576 / send.as_secs_f64();
    println!(
        "  send 64 MiB to byte_sum  {:>10.2} ms {:>8.1} MB/s  -> {sum}",
        ms(send),
        report.send_mb_per_s
    );
    Ok(())
}

/// A ping while a big stream runs on the same client: its round trip in µs.
async fn no_head_of_line_blocking(client: &quicswarm::Client) -> Result<u64> {
    let big = client
        .stream(
            "counter",
            &CounterArgs {
                count: 4096,
                size: 64 * 1024,
            },
        )
        .await?;
    let reader = tokio::spawn(drain(big));
    let during = client.ping().await?;
    reader.await??;
    println!(
        "  ping during 256 MiB stream {:>8} µs   (no head-of-line blocking)",
        during.as_micros()
    );
    Ok(during.as_micros() as u64)
}

/// Errors are typed, and the gateway carries on.
async fn typed_errors(client: &quicswarm::Client) -> Result<()> {
    let failed = client.call("fail", &()).await.unwrap_err();
    let panicked = client.call("panic", &()).await.unwrap_err();
    let unknown = client.call("no_such_thing", &()).await.unwrap_err();
    ensure!(
        matches!(failed, CallError::Failed(_)),
        "fail gave {failed:?}"
    );
    ensure!(
        matches!(panicked, CallError::Panicked(_)),
        "panic gave {panicked:?}"
    );
    println!("  fail                     -> {failed}");
    println!("  panic                    -> {panicked}");
    println!("  unknown                  -> {unknown}");
    Ok(())
}

/// Fills the pool, is refused one more, frees four slots and gets a new client.
async fn pool_overflow(controller: &Controller, addr: &str) -> Result<quicswarm::Client> {
    let mut extra = Vec::new();
    for _ in 1..POOL {
        extra.push(controller.get_client(addr).await?);
    }
    let overflow = controller.get_client(addr).await;
    let overflow_msg = match overflow {
        Err(e @ ConnectError::PoolFull { .. }) => e.to_string(),
        other => anyhow::bail!("expected a full pool, got {other:?}"),
    };
    println!("  client #{}                -> {overflow_msg}", POOL + 1);
    for c in extra.drain(..) {
        c.close().await?;
    }
    let reused = controller.get_client(addr).await?;
    println!(
        "  after 4 closes           -> a new client gets handler {}",
        reused.handler_id()
    );
    Ok(reused)
}

/// A stream aborted from its callback; the items it got.
async fn abort(client: &quicswarm::Client) -> Result<u64> {
    let ticks = TickerArgs {
        count: 1_000,
        interval_ms: 10,
    };
    let outcome = client
        .stream_with("ticker", &ticks, |ident, _| ident < 2, || {})
        .await?;
    ensure!(
        !outcome.completed && outcome.items == 3,
        "abort gave {outcome:?}"
    );
    println!(
        "  ticker aborted after {} items (callback returned false); gateway still answers in {} µs",
        outcome.items,
        client.ping().await?.as_micros()
    );
    Ok(outcome.items)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn stream(client: &quicswarm::Client, count: u64, size: usize) -> Result<(f64, f64)> {
    let start = Instant::now();
    let items = client
        .stream("counter", &CounterArgs { count, size })
        .await?;
    let (n, bytes) = drain(items).await?;
    ensure!(n == count, "stream delivered {n} of {count} items");
    let secs = start.elapsed().as_secs_f64();
    Ok((n as f64 / secs, bytes as f64 / secs / 1e6))
}

async fn drain(mut items: quicswarm::ItemStream) -> Result<(u64, u64), CallError> {
    let (mut n, mut bytes) = (0u64, 0u64);
    while let Some((_, data)) = items.next().await? {
        n += 1;
        bytes += data.len() as u64;
    }
    Ok((n, bytes))
}
