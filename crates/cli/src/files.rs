//! `quicswarm ls`, `get` and `put`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use quicswarm::files::{Progress, Selector, Swarm, TransferOptions, TransferSummary};
use serde_json::json;

use crate::opts::{emit, ClientOpts};

/// Which files: shared by `ls` and `get`.
#[derive(Args, Debug, Clone)]
pub(crate) struct Selection {
    /// Glob matched against paths relative to the root, e.g. '**/*.log'.
    #[arg(long)]
    glob: Option<String>,
    /// Regular expression matched against paths relative to the root.
    #[arg(long)]
    regex: Option<String>,
    /// Start in this folder of the root.
    #[arg(long, default_value = "")]
    dir: String,
    /// Do not descend into sub-folders.
    #[arg(long)]
    no_recursive: bool,
}

impl Selection {
    pub(crate) fn selector(&self, paths: Vec<String>) -> Selector {
        Selector {
            dir: self.dir.clone(),
            glob: self.glob.clone(),
            regex: self.regex.clone(),
            paths,
            recursive: !self.no_recursive,
        }
    }
}

/// Arguments of `quicswarm ls`.
#[derive(Args, Debug)]
pub(crate) struct LsArgs {
    /// Gateway address, host:port.
    addr: String,
    /// Root name (as served with --serve NAME=DIR).
    root: String,
    /// Explicit paths relative to the root.
    paths: Vec<String>,
    #[command(flatten)]
    selection: Selection,
    #[command(flatten)]
    client: ClientOpts,
}

/// Arguments of `quicswarm get`.
#[derive(Args, Debug)]
pub(crate) struct GetArgs {
    /// Gateway address, host:port.
    addr: String,
    /// Root name.
    root: String,
    /// Local destination folder.
    dest: PathBuf,
    /// Explicit paths relative to the root (default: everything the selection picks).
    paths: Vec<String>,
    #[command(flatten)]
    selection: Selection,
    /// Connections to spread the transfer over.
    #[arg(long, default_value_t = 4)]
    swarm: usize,
    #[command(flatten)]
    client: ClientOpts,
}

/// Arguments of `quicswarm put`.
#[derive(Args, Debug)]
pub(crate) struct PutArgs {
    /// Gateway address, host:port.
    addr: String,
    /// Folder below the gateway's upload folder ("" for the upload folder itself).
    dest: String,
    /// Local files and folders (a folder travels with its name).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Connections to spread the transfer over.
    #[arg(long, default_value_t = 4)]
    swarm: usize,
    #[command(flatten)]
    client: ClientOpts,
}

pub(crate) async fn ls(args: LsArgs) -> Result<()> {
    let controller = args.client.controller()?;
    let client = controller
        .get_client(&args.addr)
        .await
        .with_context(|| format!("connecting to {}", args.addr))?;
    let result = client
        .list(&args.root, &args.selection.selector(args.paths.clone()))
        .await;
    let _ = client.close().await;
    controller.close().await;
    let listing = result.with_context(|| format!("listing {}", args.root))?;
    let entries: Vec<_> = listing
        .entries
        .iter()
        .map(|e| {
            json!({"path": e.path, "size": e.size, "mode": e.mode,
                   "mtime": e.mtime.secs as f64 + f64::from(e.mtime.nanos) / 1e9})
        })
        .collect();
    emit(
        &args.client,
        json!({"entries": entries, "skipped": listing.skipped}),
        || {
            for e in &listing.entries {
                println!("{:>12}  {:o}  {}", e.size, e.mode, e.path);
            }
            eprintln!(
                "{} files ({} entries skipped: symlinks, special files, non-portable names)",
                listing.entries.len(),
                listing.skipped
            );
        },
    );
    Ok(())
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
fn progress_bar() -> (ProgressBar, TransferOptions) {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    let mut options = TransferOptions::default();
    options.progress = Some(std::sync::Arc::new(move |p: &Progress| {
        b.set_length(p.bytes_total);
        b.set_position(p.bytes_done);
        b.set_message(format!("{}/{} files", p.files_done, p.files_total));
    }));
    (bar, options)
}

fn report(opts: &ClientOpts, what: &str, s: &TransferSummary) {
    emit(
        opts,
        json!({"files": s.files, "bytes": s.bytes, "seconds": s.seconds, "files_per_s": s.files_per_s().round(),
               "mb_per_s": (s.mb_per_s() * 10.0).round() / 10.0, "skipped": s.skipped}),
        || {
            println!(
                "{what} {} files, {} bytes in {:.2} s ({:.0} files/s, {:.1} MB/s); {} already present",
                s.files, s.bytes, s.seconds, s.files_per_s(), s.mb_per_s(), s.skipped
            )
        },
    );
}

/// Opens the swarm; on failure the clients already opened are closed before returning.
async fn connect(controller: &quicswarm::Controller, addr: &str, n: usize) -> Result<Swarm> {
    match Swarm::connect(controller, addr, n).await {
        Ok(swarm) => Ok(swarm),
        Err(e) => {
            controller.close().await;
            Err(e).with_context(|| format!("connecting {n} clients to {addr}"))
        }
    }
}

pub(crate) async fn get(args: GetArgs) -> Result<()> {
    let controller = args.client.controller()?;
    let swarm = connect(&controller, &args.addr, args.swarm).await?;
    let (bar, options) = progress_bar();
    let selector = args.selection.selector(args.paths.clone());
    let result = swarm
        .download(&args.root, &selector, &args.dest, &options)
        .await;
    bar.finish_and_clear();
    swarm.close().await;
    controller.close().await;
    let summary = result
        .with_context(|| format!("downloading {} into {}", args.root, args.dest.display()))?;
    report(&args.client, "downloaded", &summary);
    Ok(())
}

pub(crate) async fn put(args: PutArgs) -> Result<()> {
    let controller = args.client.controller()?;
    let swarm = connect(&controller, &args.addr, args.swarm).await?;
    let (bar, options) = progress_bar();
    let result = swarm.upload(&args.paths, &args.dest, &options).await;
    bar.finish_and_clear();
    swarm.close().await;
    controller.close().await;
    let summary = result.context("uploading")?;
    report(&args.client, "uploaded", &summary);
    Ok(())
}
