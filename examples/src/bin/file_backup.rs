//! file_backup: the seed's Tutorial 1, conditional log backup.
//!
//! A robot's gateway serves its log folder and two subroutines: `mount_usage` (how full the
//! disk holding the logs is, as a fraction) and `remove_logs` (removes exactly the listed
//! files, returns how many). The controller checks the usage; above a threshold it downloads
//! the matching logs over a swarm of 4 connections and then removes on the robot only the
//! files whose download was verified.
//!
//! ```text
//! # everything in one process, on throwaway folders:
//! cargo run -p quicswarm-examples --bin file_backup -- demo
//! # or on two machines:
//! file_backup serve --listen 0.0.0.0:1857 --logs /var/log/robot
//! file_backup backup ROBOT:1857 --dest ./backup --threshold 0.8 --glob '**/*.log'
//! ```

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use quicswarm::{
    files::{Selector, Swarm, TransferOptions},
    proto::path,
    Controller, ControllerConfig, Gateway, Identity, Registry, Trust,
};

#[derive(Parser)]
#[command(about = "Back up a robot's logs when its disk fills up")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The robot side: serve the log folder.
    Serve {
        #[arg(long, default_value = "0.0.0.0:1857")]
        listen: std::net::SocketAddr,
        /// The log folder (served as root `logs`).
        #[arg(long)]
        logs: PathBuf,
        #[arg(long, default_value = "certs")]
        cert_dir: PathBuf,
    },
    /// The laptop side: back up and clean if the robot's disk is too full.
    Backup {
        addr: String,
        #[arg(long)]
        dest: PathBuf,
        /// Back up when the disk is fuller than this fraction.
        #[arg(long, default_value_t = 0.8)]
        threshold: f64,
        #[arg(long, default_value = "**/*.log")]
        glob: String,
        /// Trust-on-first-use pins.
        #[arg(long, default_value = "known_gateways")]
        known_gateways: PathBuf,
    },
    /// Both sides in one process on throwaway folders; prints a JSON report.
    Demo,
}

/// The robot's subroutines, bound to its log folder.
fn registry(logs: PathBuf) -> Registry {
    let registry = Registry::new();
    let root = logs.clone();
    registry
        .batch_blocking("mount_usage", move |_: ()| {
            usage(&root)
                .map(|f| f.to_string())
                .map_err(|e| e.to_string())
        })
        .batch_blocking("remove_logs", move |paths: Vec<String>| {
            let mut removed = 0u64;
            for p in &paths {
                // Only portable relative paths to regular files below the log folder.
                path::validate(p).map_err(|e| format!("refused {p:?}: {e}"))?;
                let full = logs.join(p);
                let meta = std::fs::symlink_metadata(&full).map_err(|e| format!("{p}: {e}"))?;
                if !meta.is_file() {
                    return Err(format!("{p}: not a regular file"));
                }
                std::fs::remove_file(&full).map_err(|e| format!("{p}: {e}"))?;
                removed += 1;
            }
            Ok::<_, String>(removed.to_string())
        });
    registry
}

/// Fraction of the filesystem holding `dir` that is in use.
fn usage(dir: &std::path::Path) -> std::io::Result<f64> {
    #[cfg(target_os = "linux")]
    {
        let st = rustix::fs::statvfs(dir)?;
        let total = st.f_blocks as f64;
        Ok(if total > 0.0 {
            1.0 - st.f_bavail as f64 / total
        } else {
            0.0
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        Err(std::io::Error::other(
            "mount_usage is implemented for Linux",
        ))
    }
}

/// What one backup run did.
#[derive(Debug, serde::Serialize)]
struct Report {
    usage: f64,
    backed_up: u64,
    bytes: u64,
    removed: u64,
    seconds: f64,
}

async fn backup(
    controller: &Controller,
    addr: &str,
    dest: &std::path::Path,
    threshold: f64,
    glob: &str,
) -> Result<Report> {
    let swarm = Swarm::connect(controller, addr, 4)
        .await
        .context("connecting")?;
    let first = &swarm.clients()[0];
    let usage: f64 = String::from_utf8_lossy(&first.call("mount_usage", &()).await?).parse()?;
    if usage <= threshold {
        swarm.close().await;
        return Ok(Report {
            usage,
            backed_up: 0,
            bytes: 0,
            removed: 0,
            seconds: 0.0,
        });
    }
    let selector = Selector {
        glob: Some(glob.to_string()),
        ..Selector::all()
    };
    let summary = swarm
        .download("logs", &selector, dest, &TransferOptions::default())
        .await?;
    // Only files now present and verified locally are removed on the robot.
    let removed: u64 =
        String::from_utf8_lossy(&first.call("remove_logs", &summary.verified).await?).parse()?;
    swarm.close().await;
    Ok(Report {
        usage,
        backed_up: summary.files,
        bytes: summary.bytes,
        removed,
        seconds: summary.seconds,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Serve {
            listen,
            logs,
            cert_dir,
        } => {
            let gateway = Gateway::builder()
                .listen(listen)
                .cert_dir(cert_dir)
                .serve("logs", &logs)
                .registry(registry(logs))
                .spawn()
                .await?;
            eprintln!(
                "serving on {} ({})",
                gateway.local_addr(),
                gateway.fingerprint()
            );
            gateway.closed().await;
        }
        Command::Backup {
            addr,
            dest,
            threshold,
            glob,
            known_gateways,
        } => {
            let controller = Controller::new(ControllerConfig::with_trust(Trust::KnownGateways(
                known_gateways,
            )))?;
            let report = backup(&controller, &addr, &dest, threshold, &glob).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Demo => {
            let dirs = tempfile::tempdir()?;
            let logs = dirs.path().join("robot_logs");
            for i in 0..50 {
                let sub = logs.join(format!("day{}", i % 5));
                std::fs::create_dir_all(&sub)?;
                std::fs::write(
                    sub.join(format!("run{i}.log")),
                    format!("log line {i}\n").repeat(200),
                )?;
                std::fs::write(sub.join(format!("run{i}.bag")), b"sensor data, kept")?;
            }
            let identity = Identity::self_signed(&[])?;
            let fp = identity.fingerprint();
            let gateway = Gateway::builder()
                .listen("127.0.0.1:0".parse()?)
                .identity(identity)
                .serve("logs", &logs)
                .registry(registry(logs.clone()))
                .spawn()
                .await?;
            let controller =
                Controller::new(ControllerConfig::with_trust(Trust::Fingerprints(vec![fp])))?;
            let dest = dirs.path().join("backup");
            // Threshold 0: any disk usage triggers the backup in the demo.
            let report = backup(
                &controller,
                &gateway.local_addr().to_string(),
                &dest,
                0.0,
                "**/*.log",
            )
            .await?;
            let left_logs = walk_count(&logs, "log");
            let left_bags = walk_count(&logs, "bag");
            if report.backed_up != 50
                || report.removed != 50
                || left_logs != 0
                || left_bags != 50
                || walk_count(&dest, "log") != 50
            {
                bail!("unexpected outcome: {report:?}, {left_logs} logs and {left_bags} bags left");
            }
            gateway.shutdown(Duration::from_secs(1)).await;
            println!("{}", serde_json::to_string(&report)?);
        }
    }
    Ok(())
}

fn walk_count(dir: &std::path::Path, ext: &str) -> usize {
    let Ok(read) = std::fs::read_dir(dir) else {
        return 0;
    };
    read.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk_count(&p, ext)
            } else {
                usize::from(p.extension().is_some_and(|x| x == ext))
            }
        })
        .sum()
}
