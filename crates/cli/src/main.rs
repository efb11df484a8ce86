//! `quicswarm`: run a gateway, call one, manage certificates, or watch the demo.
//!
//! Thin by design: it parses arguments, sets up logging and calls the library. `main.rs`
//! names the commands and hands each to its file: `gateway.rs`, `calls.rs` (ping, call,
//! stream, send), `files.rs` (ls, get, put), `fleet.rs` (the same on many gateways),
//! `certs.rs`, `demo.rs`; `opts.rs` has the
//! options every client command shares.

mod calls;
mod certs;
mod demo;
mod files;
mod fleet;
mod gateway;
mod opts;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::opts::{emit, finish, ClientOpts};

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
    Gateway(gateway::GatewayArgs),
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
    /// One operation on every gateway of a fleet file (ping, call, get, put), with a live
    /// table; `--json`: one line per gateway.
    Fleet(fleet::FleetArgs),
    /// Certificates.
    Certs {
        #[command(subcommand)]
        command: certs::CertsCommand,
    },
    /// Gateway and controller in one process on loopback: every operation, with timings.
    Demo {
        /// Print the report as one JSON object too.
        #[arg(long)]
        json: bool,
    },
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
        Command::Gateway(args) => gateway::run(args).await,
        Command::Ls(args) => files::ls(args).await,
        Command::Get(args) => files::get(args).await,
        Command::Put(args) => files::put(args).await,
        Command::Ping {
            addr,
            count,
            client: opts,
        } => {
            let (ctl, c) = opts.connect(&addr).await?;
            let result = calls::ping(&c, &addr, count, &opts).await;
            finish(ctl, c, result).await
        }
        Command::Call {
            addr,
            name,
            args,
            client: opts,
        } => {
            let (ctl, c) = opts.connect(&addr).await?;
            let result = calls::call(&c, &name, args, &opts).await;
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
            let result = calls::stream(&c, &name, args, max, &opts).await;
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
            let result = calls::send(&c, &name, args, file.as_deref(), zeros, &opts).await;
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
        Command::Fleet(args) => fleet::run(args).await,
        Command::Certs { command } => certs::run(command),
        Command::Demo { json } => demo::run(json).await,
    }
}
