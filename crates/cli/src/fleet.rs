//! `quicswarm fleet FILE ping|call|get|put`: one operation on every gateway a fleet file
//! lists, with a live table on stderr (one row per gateway: state, progress, rate, error)
//! and, with `--json`, one JSON line per gateway on stdout as each finishes.

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use futures_util::{Stream, StreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use quicswarm::{
    files::TransferOptions,
    fleet::{Fleet, FleetEvent, FleetOptions, FleetResult},
    Json,
};
use serde_json::{json, Value};

use crate::{files::Selection, opts::ClientOpts};

/// Arguments of `quicswarm fleet`.
#[derive(Args, Debug)]
pub(crate) struct FleetArgs {
    /// Fleet file: one `name address [fingerprint]` line per gateway (`#` comments).
    file: PathBuf,
    #[command(subcommand)]
    op: FleetOp,
}

/// Options of every fleet operation (after the operation's name).
#[derive(Args, Debug)]
struct FleetOpts {
    /// Gateways worked on at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Give up on a gateway after this many seconds (its row says so; the others go on).
    #[arg(long, value_name = "SECONDS")]
    gateway_timeout: Option<f64>,
    #[command(flatten)]
    client: ClientOpts,
}

#[derive(Subcommand, Debug)]
enum FleetOp {
    /// One ping to every gateway.
    Ping {
        #[command(flatten)]
        opts: FleetOpts,
    },
    /// Call a batch subroutine on every gateway.
    Call {
        /// Subroutine name.
        name: String,
        /// Arguments as JSON.
        args: Option<String>,
        #[command(flatten)]
        opts: FleetOpts,
    },
    /// Download a root of every gateway into DEST/{name}/ (run again: only what is missing).
    Get {
        /// Root name.
        root: String,
        /// Local folder; each gateway's files go to DEST/{name}/.
        dest: PathBuf,
        /// Explicit paths relative to the root.
        paths: Vec<String>,
        #[command(flatten)]
        selection: Selection,
        /// Connections per gateway.
        #[arg(long, default_value_t = 1)]
        swarm: usize,
        #[command(flatten)]
        opts: FleetOpts,
    },
    /// Upload files and folders into DEST below every gateway's upload folder.
    Put {
        /// Folder below the upload folder ("" for the folder itself).
        dest: String,
        /// Local files and folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Connections per gateway.
        #[arg(long, default_value_t = 1)]
        swarm: usize,
        #[command(flatten)]
        opts: FleetOpts,
    },
}

impl FleetOp {
    fn opts(&self) -> &FleetOpts {
        match self {
            Self::Ping { opts }
            | Self::Call { opts, .. }
            | Self::Get { opts, .. }
            | Self::Put { opts, .. } => opts,
        }
    }
}

pub(crate) async fn run(args: FleetArgs) -> Result<()> {
    let opts = args.op.opts();
    let controller = opts.client.controller()?;
    let fleet = Fleet::from_file(controller.clone(), &args.file)?;
    let transfer = matches!(args.op, FleetOp::Get { .. } | FleetOp::Put { .. });
    let table = Table::new(&fleet, transfer);
    let mut options = FleetOptions {
        concurrency: opts.concurrency.max(1),
        observer: Some(table.observer()),
        ..FleetOptions::default()
    };
    if let Some(secs) = opts.gateway_timeout {
        options.timeout = Some(Duration::try_from_secs_f64(secs)?);
    }
    let json = opts.client.json;
    let (ok, failed) = match args.op {
        FleetOp::Ping { .. } => {
            let fleet = fleet.with_options(options);
            report(&table, json, fleet.ping(), |rtt| {
                let us = rtt.as_micros() as u64;
                (format!("{:.2} ms", us as f64 / 1e3), json!({"rtt_us": us}))
            })
            .await
        }
        FleetOp::Call { name, args, .. } => {
            let fleet = fleet.with_options(options);
            let args = Json(args.unwrap_or_default());
            report(&table, json, fleet.call(&name, &args), |reply| {
                let utf8 = std::str::from_utf8(&reply).ok().map(str::to_string);
                let shown = match &utf8 {
                    Some(text) if text.len() <= 40 => text.clone(),
                    _ => format!("{} bytes", reply.len()),
                };
                (shown, json!({"len": reply.len(), "utf8": utf8}))
            })
            .await
        }
        FleetOp::Get {
            root,
            dest,
            paths,
            selection,
            swarm,
            ..
        } => {
            options.swarm = swarm.max(1);
            let fleet = fleet.with_options(options);
            let selector = selection.selector(paths);
            let done = fleet.download(&root, &selector, &dest, &TransferOptions::default());
            report(&table, json, done, summary).await
        }
        FleetOp::Put {
            dest, paths, swarm, ..
        } => {
            options.swarm = swarm.max(1);
            let fleet = fleet.with_options(options);
            let done = fleet.upload(&paths, &dest, &TransferOptions::default());
            report(&table, json, done, summary).await
        }
    };
    controller.close().await;
    eprintln!("{ok} gateways ok, {failed} failed");
    if failed > 0 {
        bail!("{failed} of {} gateways failed", ok + failed);
    }
    Ok(())
}

fn summary(s: quicswarm::files::TransferSummary) -> (String, Value) {
    (
        format!(
            "{} files, {} bytes, {:.1} MB/s; {} already present",
            s.files,
            s.bytes,
            s.mb_per_s(),
            s.skipped
        ),
        json!({"files": s.files, "bytes": s.bytes, "seconds": s.seconds,
               "mb_per_s": (s.mb_per_s() * 10.0).round() / 10.0, "skipped": s.skipped}),
    )
}

/// Shows each result as it arrives (its row, and its JSON line); returns (ok, failed).
async fn report<T>(
    table: &Table,
    json: bool,
    results: impl Stream<Item = FleetResult<T>>,
    describe: impl Fn(T) -> (String, Value),
) -> (usize, usize) {
    let (mut ok, mut failed) = (0, 0);
    let mut results = std::pin::pin!(results);
    while let Some(done) = results.next().await {
        let seconds = done.elapsed.as_secs_f64();
        let line = match done.result {
            Ok(value) => {
                ok += 1;
                let (shown, mut fields) = describe(value);
                table.finish(&done.gateway, &format!("ok     {shown}"));
                fields["ok"] = json!(true);
                fields
            }
            Err(e) => {
                failed += 1;
                table.finish(&done.gateway, &format!("FAILED {e}"));
                json!({"ok": false, "error": e.to_string()})
            }
        };
        if json {
            let mut line = line;
            line["gateway"] = json!(&*done.gateway);
            line["addr"] = json!(&*done.addr);
            line["seconds"] = json!((seconds * 1e4).round() / 1e4);
            // Printed above the live table, which stays at the bottom of the terminal.
            table.println(&line.to_string());
        }
    }
    (ok, failed)
}

/// The live table: one row per gateway on stderr (hidden when stderr is not a terminal).
struct Table {
    multi: MultiProgress,
    rows: Arc<HashMap<String, ProgressBar>>,
    /// A finished row's style: the name and its outcome.
    finished: ProgressStyle,
}

impl Table {
    /// With `transfer`, rows have byte and rate columns.
    fn new(fleet: &Fleet, transfer: bool) -> Self {
        let multi = MultiProgress::new();
        let width = fleet.members().map(|m| m.name.len()).max().unwrap_or(4);
        let template = if transfer {
            format!("{{prefix:<{width}}} {{msg:<12.bold}} {{bytes:>10}}/{{total_bytes:<10}} {{bytes_per_sec:>12}}")
        } else {
            format!("{{prefix:<{width}}} {{msg:.bold}}")
        };
        let style_of = |template: &str| {
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
        };
        let style = style_of(&template);
        let finished = style_of(&format!("{{prefix:<{width}}} {{msg}}"));
        let rows = fleet
            .members()
            .map(|m| {
                let row = multi.add(ProgressBar::new(0).with_style(style.clone()));
                row.set_prefix(m.name.clone());
                row.set_message("waiting");
                (m.name.clone(), row)
            })
            .collect();
        Self {
            multi,
            rows: Arc::new(rows),
            finished,
        }
    }

    /// What the fleet tells about each gateway, onto its row.
    fn observer(&self) -> quicswarm::fleet::FleetObserver {
        let rows = self.rows.clone();
        Arc::new(move |name: &str, event: FleetEvent| {
            let Some(row) = rows.get(name) else { return };
            match event {
                FleetEvent::Connecting => row.set_message("connecting"),
                FleetEvent::Running => row.set_message("running"),
                FleetEvent::Progress(p) => {
                    row.set_length(p.bytes_total);
                    row.set_position(p.bytes_done);
                    row.set_message(format!("{}/{} files", p.files_done, p.files_total));
                }
                _ => {}
            }
        })
    }

    /// A gateway's final state: its row keeps it, without the byte columns.
    fn finish(&self, name: &str, text: &str) {
        if let Some(row) = self.rows.get(name) {
            row.set_style(self.finished.clone());
            row.finish_with_message(text.to_string());
        }
    }

    fn println(&self, line: &str) {
        if self.multi.is_hidden() {
            println!("{line}");
        } else {
            // Keeps the table intact; the line goes to stdout all the same.
            self.multi.suspend(|| println!("{line}"));
        }
    }
}
