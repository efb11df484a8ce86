//! `quicswarm`: run a gateway, call one, manage certificates, or watch the demo.
//!
//! Thin by design: it parses arguments, sets up logging and calls the library.

mod demo;
mod files;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use quicswarm::{Client, Controller, ControllerConfig, Fingerprint, Gateway, Json, Trust};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "quicswarm",
    version,
    about = "Remote subroutines over a swarm of QUIC connections"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a gateway until Ctrl-C (graceful) or an allowed close-gateway.
    Gateway(GatewayArgs),
    /// List files of a gateway root.
    Ls(files::LsArgs),
    /// Download files from a gateway root over a swarm of connections.
    Get(files::GetArgs),
    /// Upload files and folders into the gateway's upload folder over a swarm.
    Put(files::PutArgs),
    /// Measure round trips.
    Ping {
        /// Gateway address, host:port.
        addr: String,
        /// Number of pings.
        #[arg(long, default_value_t = 10)]
        count: u32,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Call a batch subroutine; its bytes go to stdout.
    Call {
        /// Gateway address, host:port.
        addr: String,
        /// Subroutine name.
        name: String,
        /// Arguments as JSON (decoded by the gateway into the subroutine's type).
        args: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Subscribe to a stream subroutine and report what arrived.
    Stream {
        /// Gateway address, host:port.
        addr: String,
        /// Subroutine name.
        name: String,
        /// Arguments as JSON.
        args: Option<String>,
        /// Abort after this many items.
        #[arg(long)]
        max: Option<u64>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Send a buffer to a sink subroutine.
    Send {
        /// Gateway address, host:port.
        addr: String,
        /// Subroutine name.
        name: String,
        /// Arguments as JSON.
        args: Option<String>,
        /// Send this file's contents (streamed).
        #[arg(long, conflicts_with = "zeros", required_unless_present = "zeros")]
        file: Option<PathBuf>,
        /// Send this many zero bytes (streamed).
        #[arg(long)]
        zeros: Option<u64>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Ask a gateway to shut down (it must allow it).
    CloseGateway {
        /// Gateway address, host:port.
        addr: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Gateway and controller in one process on loopback: every operation, with timings.
    Demo {
        /// Print the report as one JSON object too.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `quicswarm gateway`.
#[derive(Args, Debug)]
struct GatewayArgs {
    /// Configuration file (TOML; see the `quicswarm::gateway_config` docs). Flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// UDP address to listen on [default: 0.0.0.0:1857].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Handler pool size: how many clients at once [default: 5].
    #[arg(long)]
    pool: Option<usize>,
    /// Folder with gateway.pem/gateway.key; a self-signed pair is generated there if absent
    /// [default: certs].
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// Register the demo subroutines (echo, counter, ticker, byte_sum, fail, panic).
    #[arg(long)]
    demo: bool,
    /// Let clients shut the gateway down with close-gateway.
    #[arg(long)]
    allow_close: bool,
    /// Serve a folder as a named read root: NAME=DIR (repeatable).
    #[arg(long, value_name = "NAME=DIR", value_parser = parse_root)]
    serve: Vec<(String, PathBuf)>,
    /// Accept uploads into this folder (uploads are refused without it).
    #[arg(long, value_name = "DIR")]
    upload_dir: Option<PathBuf>,
    /// Require mutual TLS: clients need a certificate issued by this CA (PEM).
    #[arg(long, value_name = "FILE")]
    client_ca: Option<PathBuf>,
    /// Also accept TLS-over-TCP on the same port (clients dial tcp://HOST:PORT), for
    /// networks that block UDP.
    #[arg(long)]
    tcp: bool,
}

fn parse_root(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((name, dir)) if !name.is_empty() && !dir.is_empty() => {
            Ok((name.to_string(), dir.into()))
        }
        _ => Err(format!("expected NAME=DIR, got {text:?}")),
    }
}

#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// Make a private CA plus gateway and client certificates.
    Init {
        /// Where to write ca.pem, gateway.pem/.key, client.pem/.key.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Extra DNS names or IPs for the gateway certificate (localhost, 127.0.0.1 and ::1
        /// are always included).
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// Issue another client certificate from the CA made by `certs init`.
    Client {
        /// The client's name: its identity for the gateway's permissions.
        name: String,
        /// The folder holding ca.pem and ca.key; NAME.pem and NAME.key are written there.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
}

/// Options shared by every client command.
#[derive(Args, Debug, Clone)]
pub(crate) struct ClientOpts {
    /// Trust-on-first-use pins (default: the user config dir + /quicswarm/known_gateways).
    #[arg(long, value_name = "FILE")]
    known_gateways: Option<PathBuf>,
    /// Trust gateways whose certificate chains to this CA instead of pinning.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["known_gateways", "fingerprint"])]
    ca: Option<PathBuf>,
    /// Accept only a gateway with this certificate fingerprint.
    #[arg(long, value_name = "SHA256", conflicts_with = "known_gateways")]
    fingerprint: Option<Fingerprint>,
    /// Client certificate (PEM) for gateways that require mutual TLS; with --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Seconds to wait for a connection or an answer.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Print exactly one JSON object on stdout, as the last line.
    #[arg(long)]
    pub(crate) json: bool,
}

impl ClientOpts {
    pub(crate) fn controller(&self) -> Result<Controller> {
        let trust = if let Some(ca) = &self.ca {
            Trust::ca_file(ca)?
        } else if let Some(fp) = self.fingerprint {
            Trust::Fingerprints(vec![fp])
        } else {
            Trust::KnownGateways(
                self.known_gateways
                    .clone()
                    .unwrap_or_else(Trust::default_known_gateways),
            )
        };
        let mut config = ControllerConfig::with_trust(trust);
        config.connect_timeout = Duration::from_secs(self.timeout);
        config.call_timeout = Some(Duration::from_secs(self.timeout));
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            config.identity = Some(quicswarm::Identity::from_pem_files(cert, key)?);
        }
        Ok(Controller::new(config)?)
    }

    async fn connect(&self, addr: &str) -> Result<(Controller, Client)> {
        let controller = self.controller()?;
        let client = controller
            .get_client(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        Ok((controller, client))
    }
}

/// Closes the client politely whatever the command returned, so a failed command does not
/// hold a handler slot until the gateway's idle timeout.
async fn finish(controller: Controller, client: Client, result: Result<()>) -> Result<()> {
    let _ = client.close().await;
    controller.close().await;
    result
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Gateway { .. } => "info",
        // The demo provokes failures on purpose; its report says what happened.
        Command::Demo { .. } => "error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Gateway(args) => gateway(args).await,
        Command::Ls(args) => files::ls(args).await,
        Command::Get(args) => files::get(args).await,
        Command::Put(args) => files::put(args).await,
        Command::Ping {
            addr,
            count,
            client: opts,
        } => {
            let (ctl, c) = opts.connect(&addr).await?;
            let result = ping(&c, &addr, count, &opts).await;
            finish(ctl, c, result).await
        }
        Command::Call {
            addr,
            name,
            args,
            client: opts,
        } => {
            let (ctl, c) = opts.connect(&addr).await?;
            let result = call(&c, &name, args, &opts).await;
            finish(ctl, c, result).await
        }
        Command::Stream {
            addr,
            name,
            args,
            max,
            client: opts,
        } => {
            let (ctl, c) = opts.connect(&addr).await?;
            let result = stream(&c, &name, args, max, &opts).await;
            finish(ctl, c, result).await
        }
        Command::Send {
            addr,
            name,
            args,
            file,
            zeros,
            client: opts,
        } => {
            let (ctl, c) = opts.connect(&addr).await?;
            let result = send(&c, &name, args, file.as_deref(), zeros, &opts).await;
            finish(ctl, c, result).await
        }
        Command::CloseGateway { addr, client: opts } => {
            let (ctl, c) = opts.connect(&addr).await?;
            let result = c.close_gateway().await.context("close-gateway");
            if result.is_ok() {
                emit(&opts, json!({"closed": true}), || {
                    println!("gateway {addr} is shutting down")
                });
            }
            finish(ctl, c, result).await
        }
        Command::Certs {
            command: CertsCommand::Init { dir, names },
        } => {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let made = quicswarm::tls::certs_init(&dir, &names)?;
            println!("wrote CA {}", made.ca_cert.display());
            println!(
                "wrote gateway certificate {} ({})",
                made.gateway_cert.display(),
                made.gateway_fingerprint
            );
            println!("wrote client certificate {}", made.client_cert.display());
            println!("run: quicswarm gateway --cert-dir {}", dir.display());
            println!("then: quicswarm ping ADDR --ca {}", made.ca_cert.display());
            Ok(())
        }
        Command::Certs {
            command: CertsCommand::Client { name, dir },
        } => {
            let (cert, key) = quicswarm::tls::certs_client(&dir, &name)?;
            println!(
                "wrote client certificate {} and key {}",
                cert.display(),
                key.display()
            );
            println!(
                "use: quicswarm ping ADDR --ca {} --cert {} --key {}",
                dir.join("ca.pem").display(),
                cert.display(),
                key.display()
            );
            Ok(())
        }
        Command::Demo { json } => demo::run(json).await,
    }
}

/// Prints `value` as the single JSON line in `--json` mode, otherwise runs `human`.
pub(crate) fn emit(opts: &ClientOpts, value: serde_json::Value, human: impl FnOnce()) {
    if opts.json {
        println!("{value}");
    } else {
        human();
    }
}

async fn gateway(args: GatewayArgs) -> Result<()> {
    let registry = if args.demo {
        quicswarm::demo::registry()
    } else {
        quicswarm::Registry::new()
    };
    let mut builder = Gateway::builder().registry(registry);
    let mut pool = quicswarm::DEFAULT_POOL_SIZE;
    if let Some(path) = &args.config {
        let config = quicswarm::gateway_config::GatewayConfig::load(path)?;
        pool = config.pool.unwrap_or(pool);
        builder = config.apply(builder)?;
    }
    if let Some(listen) = args.listen {
        builder = builder.listen(listen);
    }
    if let Some(n) = args.pool {
        pool = n;
        builder = builder.pool_size(n);
    }
    if let Some(dir) = &args.cert_dir {
        builder = builder.cert_dir(dir);
    }
    if args.allow_close {
        builder = builder.allow_close(true);
    }
    for (name, dir) in &args.serve {
        anyhow::ensure!(
            dir.is_dir(),
            "--serve {name}={}: not a folder",
            dir.display()
        );
        builder = builder.serve(name.clone(), dir.clone());
    }
    if let Some(dir) = &args.upload_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        builder = builder.upload_dir(dir.clone());
    }
    if let Some(ca) = &args.client_ca {
        builder = builder.client_ca(quicswarm::tls::load_certs(ca)?);
    }
    if args.tcp {
        builder = builder.tcp(true);
    }
    let gateway = builder.spawn().await?;
    eprintln!(
        "quicswarm gateway on {} (pool {pool})",
        gateway.local_addr()
    );
    if let Some(tcp) = gateway.tcp_addr() {
        eprintln!("TLS over TCP on tcp://{tcp}");
    }
    for (name, dir) in &args.serve {
        eprintln!("serving root {name} = {}", dir.display());
    }
    if let Some(dir) = &args.upload_dir {
        eprintln!("accepting uploads into {}", dir.display());
    }
    eprintln!("certificate fingerprint {}", gateway.fingerprint());
    let names: Vec<String> = gateway
        .registry()
        .list()
        .into_iter()
        .map(|s| format!("{} ({:?})", s.name, s.kind))
        .collect();
    eprintln!(
        "subroutines: {}",
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    );
    tokio::select! {
        _ = gateway.closed() => {}
        _ = tokio::signal::ctrl_c() => {
            eprintln!("Ctrl-C: shutting down (in-flight operations get 5 s)");
            gateway.shutdown(Duration::from_secs(5)).await;
        }
    }
    Ok(())
}

fn args_json(args: Option<String>) -> Json<String> {
    Json(args.unwrap_or_default())
}

async fn ping(client: &Client, addr: &str, count: u32, opts: &ClientOpts) -> Result<()> {
    let mut samples = Vec::with_capacity(count as usize);
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

async fn call(client: &Client, name: &str, args: Option<String>, opts: &ClientOpts) -> Result<()> {
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

async fn stream(
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

async fn send(
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
