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

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use quicswarm::{demo::CounterArgs, Controller, ControllerConfig, Gateway, Identity, Trust};
use quicswarm_benches::cores;
use quinn::{crypto::rustls::QuicClientConfig, Endpoint, TransportConfig, VarInt};

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
const ITEM_SMALL: usize = 1024;
const ITEM_BIG: usize = 64 * 1024;

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

/// CPU-seconds spent by each side's thread: the server thread (by name) and the client, which
/// is the calling thread.
#[derive(Clone, Copy)]
struct SideCpu {
    server: f64,
    client: f64,
}

impl SideCpu {
    fn now() -> Result<Self> {
        Ok(Self {
            server: cores::thread_cpu(cores::GATEWAY)?,
            client: cores::this_thread_cpu()?,
        })
    }

    fn zero() -> Self {
        Self {
            server: 0.0,
            client: 0.0,
        }
    }

    fn minus(self, before: Self) -> Self {
        Self {
            server: self.server - before.server,
            client: self.client - before.client,
        }
    }

    fn plus(self, other: Self) -> Self {
        Self {
            server: self.server + other.server,
            client: self.client + other.client,
        }
    }

    /// Per GB of `bytes`, since `before`.
    fn since(self, before: Self, bytes: u64) -> Self {
        let gb = bytes as f64 / 1e9;
        Self {
            server: (self.server - before.server) / gb,
            client: (self.client - before.client) / gb,
        }
    }
}

/// UDP datagrams a connection sent and received: how well each side batches its packets.
#[derive(Clone, Copy)]
struct Datagrams {
    sent: u64,
    received: u64,
}

impl Datagrams {
    fn of(conn: &quinn::Connection) -> Self {
        let stats = conn.stats();
        Self {
            sent: stats.udp_tx.datagrams,
            received: stats.udp_rx.datagrams,
        }
    }

    fn minus(self, before: Self) -> Self {
        Self {
            sent: self.sent - before.sent,
            received: self.received - before.received,
        }
    }
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

fn hist() -> Histogram<u64> {
    // 1 ns .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds are valid")
}

async fn timed<T, E: Into<anyhow::Error>>(
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<u64> {
    let start = Instant::now();
    fut.await.map_err(Into::into)?;
    Ok(start.elapsed().as_nanos() as u64)
}

/// How many alternating rounds the calls/s figure is measured in.
const CALL_ROUNDS: u64 = 6;

/// Runs `total` operations with `at_once` in flight; returns the seconds they took.
async fn in_flight<F, Fut>(total: u64, at_once: usize, op: F) -> Result<f64>
where
    F: Fn(u64) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<()>> + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let local = tokio::task::LocalSet::new();
    let op = Arc::new(op);
    local
        .run_until(async {
            for _ in 0..at_once {
                let next = next.clone();
                let op = op.clone();
                let fut = async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return Ok::<_, anyhow::Error>(());
                        }
                        op(i).await?;
                    }
                };
                set.spawn_local(fut);
            }
            while let Some(r) = set.join_next().await {
                r??;
            }
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    Ok(start.elapsed().as_secs_f64())
}

async fn stream_items(client: &quicswarm::Client, count: u64, size: usize) -> Result<(f64, u64)> {
    let start = Instant::now();
    let mut items = client
        .stream("counter", &CounterArgs { count, size })
        .await?;
    let mut bytes = 0u64;
    let mut n = 0u64;
    while let Some((_, data)) = items.next().await? {
        bytes += data.len() as u64;
        n += 1;
    }
    anyhow::ensure!(n == count, "got {n} of {count} items");
    Ok((start.elapsed().as_secs_f64(), bytes))
}

// ---- raw quinn baseline ----

fn transport() -> Arc<TransportConfig> {
    // The same windows quicswarm uses.
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(1024));
    t.receive_window(VarInt::from_u32(64 * 1024 * 1024));
    t.stream_receive_window(VarInt::from_u32(8 * 1024 * 1024));
    t.send_window(64 * 1024 * 1024);
    Arc::new(t)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn raw_server(cert: rustls::pki_types::CertificateDer<'static>, key: Vec<u8>) -> Result<Endpoint> {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.into());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    tls.alpn_protocols = vec![b"raw".to_vec()];
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(tls)?,
    ));
    config.transport_config(transport());
    let socket = quicswarm::testing::udp_socket("127.0.0.1:0".parse()?)?;
    Ok(Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?)
}

async fn serve_raw(endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(raw_handle(send, recv));
            }
        });
    }
}

/// Request: one tag byte and a u64. `E`: echo that many bytes back; `B`: send that many bytes
/// in 64 KiB writes; `I`: send that many bytes as 1 KiB items, each after a 4-byte length.
async fn raw_handle(mut send: quinn::SendStream, mut recv: quinn::RecvStream) -> Result<()> {
    let mut header = [0u8; 9];
    recv.read_exact(&mut header).await?;
    let n = u64::from_le_bytes(header[1..].try_into()?);
    match header[0] {
        b'E' => {
            let mut buf = vec![0u8; n as usize];
            recv.read_exact(&mut buf).await?;
            send.write_all(&buf).await?;
        }
        b'B' => {
            let chunk = Bytes::from(vec![7u8; ITEM_BIG]);
            let mut left = n;
            while left > 0 {
                let len = left.min(ITEM_BIG as u64) as usize;
                send.write_chunk(chunk.slice(..len)).await?;
                left -= len as u64;
            }
        }
        b'I' => {
            let item = Bytes::from(vec![7u8; ITEM_SMALL]);
            let len = Bytes::copy_from_slice(&(ITEM_SMALL as u32).to_le_bytes());
            for _ in 0..n / ITEM_SMALL as u64 {
                send.write_all_chunks(&mut [len.clone(), item.clone()])
                    .await?;
            }
        }
        _ => {}
    }
    send.finish()?;
    let _ = send.stopped().await;
    Ok(())
}

async fn raw_client(
    addr: SocketAddr,
    cert: rustls::pki_types::CertificateDer<'static>,
) -> Result<quinn::Connection> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"raw".to_vec()];
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    config.transport_config(transport());
    let socket = quicswarm::testing::udp_socket("127.0.0.1:0".parse()?)?;
    let endpoint = Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    Ok(endpoint.connect_with(config, addr, "localhost")?.await?)
}

async fn raw_echo(conn: &quinn::Connection, size: usize) -> Result<()> {
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut req = vec![b'E'];
    req.extend_from_slice(&(size as u64).to_le_bytes());
    req.resize(9 + size, 1);
    send.write_all(&req).await?;
    send.finish()?;
    let reply = recv.read_to_end(size + 1).await?;
    anyhow::ensure!(reply.len() == size, "short echo");
    Ok(())
}

/// Reads a whole raw stream; returns MB/s.
async fn raw_bulk(conn: &quinn::Connection, tag: u8, bytes: u64) -> Result<f64> {
    let start = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut req = vec![tag];
    req.extend_from_slice(&bytes.to_le_bytes());
    send.write_all(&req).await?;
    send.finish()?;
    let mut got = 0u64;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        got += chunk.bytes.len() as u64;
    }
    anyhow::ensure!(got >= bytes, "raw stream short: {got} of {bytes}");
    Ok(got as f64 / start.elapsed().as_secs_f64() / 1e6)
}
