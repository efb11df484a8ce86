//! `quicswarm gateway`: flags (over an optional configuration file) into a builder, then
//! serve until Ctrl-C or an allowed close-gateway.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::Args;
use quicswarm::Gateway;

/// Arguments of `quicswarm gateway`.
#[derive(Args, Debug)]
pub(crate) struct GatewayArgs {
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
    /// Serve Prometheus metrics on http://ADDR/metrics (no authentication: keep it on
    /// loopback or a monitoring network), e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Write a qlog file per QUIC connection into this folder (open them in qvis).
    #[arg(long, value_name = "DIR")]
    qlog_dir: Option<PathBuf>,
}

fn parse_root(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((name, dir)) if !name.is_empty() && !dir.is_empty() => {
            Ok((name.to_string(), dir.into()))
        }
        _ => Err(format!("expected NAME=DIR, got {text:?}")),
    }
}

/// The builder the flags (over the configuration file) describe, and its pool size. Made
/// again on SIGHUP: what a reload takes its certificate, CA and permissions from.
fn builder(
    args: &GatewayArgs,
    registry: quicswarm::Registry,
) -> Result<(quicswarm::GatewayBuilder, usize)> {
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
        // Read now for a clear error at start, and again on every reload.
        quicswarm::tls::load_certs(ca)?;
        builder = builder.client_ca_file(ca);
    }
    if args.tcp {
        builder = builder.tcp(true);
    }
    if let Some(addr) = args.metrics {
        builder = builder.metrics(addr);
    }
    if let Some(dir) = &args.qlog_dir {
        builder = qlog_dir(builder, dir)?;
    }
    Ok((builder, pool))
}

pub(crate) async fn run(args: GatewayArgs) -> Result<()> {
    let registry = if args.demo {
        quicswarm::demo::registry()
    } else {
        quicswarm::Registry::new()
    };
    let (builder, pool) = builder(&args, registry.clone())?;
    // Before anything is printed: whoever reads our output may send SIGHUP straight away,
    // and its default action ends the process.
    let mut hangups = hangups()?;
    let gateway = builder.spawn().await?;
    eprintln!(
        "quicswarm gateway on {} (pool {pool})",
        gateway.local_addr()
    );
    if let Some(tcp) = gateway.tcp_addr() {
        eprintln!("TLS over TCP on tcp://{tcp}");
    }
    if let Some(addr) = gateway.metrics_addr() {
        eprintln!("metrics on http://{addr}/metrics");
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
    loop {
        tokio::select! {
            _ = gateway.closed() => break,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("Ctrl-C: shutting down (in-flight operations get 5 s)");
                gateway.shutdown(Duration::from_secs(5)).await;
                break;
            }
            Some(()) = next_hangup(&mut hangups) => reload(&gateway, &args, &registry).await,
        }
    }
    Ok(())
}

/// SIGHUP: the configuration file and flags are read again, and the certificate, client CA
/// and permissions they give replace the running ones. Anything wrong keeps the old ones.
async fn reload(gateway: &Gateway, args: &GatewayArgs, registry: &quicswarm::Registry) {
    let reloaded = match builder(args, registry.clone()) {
        Ok((builder, _)) => gateway
            .reload_from(&builder)
            .await
            .map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    match reloaded {
        Ok(fingerprint) => eprintln!("SIGHUP: reloaded; certificate fingerprint {fingerprint}"),
        Err(e) => eprintln!("SIGHUP: reload failed, keeping the old configuration: {e:#}"),
    }
}

#[cfg(unix)]
type Hangups = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangups = ();

#[cfg(unix)]
fn hangups() -> Result<Hangups> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup()).context("listening for SIGHUP")
}

#[cfg(not(unix))]
fn hangups() -> Result<Hangups> {
    Ok(())
}

#[cfg(unix)]
async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    hangups.recv().await
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) -> Option<()> {
    std::future::pending().await
}

#[cfg(feature = "qlog")]
fn qlog_dir(
    builder: quicswarm::GatewayBuilder,
    dir: &std::path::Path,
) -> Result<quicswarm::GatewayBuilder> {
    Ok(builder.qlog_dir(dir))
}

#[cfg(not(feature = "qlog"))]
fn qlog_dir(
    _: quicswarm::GatewayBuilder,
    _: &std::path::Path,
) -> Result<quicswarm::GatewayBuilder> {
    anyhow::bail!("--qlog-dir: this quicswarm was built without the qlog feature")
}
