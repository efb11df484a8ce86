//! pi_camera: stream camera frames from a robot to a laptop, fresh first.
//!
//! ```text
//! # the robot (a Raspberry Pi; the test source needs no camera):
//! pi_camera serve --listen 0.0.0.0:1857 --fps 30 --source test
//! rpicam-vid -t 0 --codec mjpeg --width 640 --height 480 --framerate 30 -o - \
//!     | pi_camera serve --listen 0.0.0.0:1857 --source stdin
//! # the laptop:
//! pi_camera view ROBOT:1857 --seconds 30 --json
//! # both on loopback, for a quick look:
//! cargo run --release -p quicswarm-examples --bin pi_camera -- demo --seconds 10
//! ```
//!
//! Frames travel in `Latest` delivery: each frame on its own QUIC stream, as many in flight as
//! the path carries, a frame that waited behind a newer one is superseded. On a slow or lossy link the
//! viewer gets fewer but fresh frames instead of an ever older backlog. The viewer runs a
//! `Session`: it reconnects by itself after an outage or a gateway restart.
//!
//! Wire format of a frame: capture time (microseconds since the Unix epoch, u64 LE), frame
//! number (u64 LE), then the JPEG bytes (or a test pattern).

use std::{
    io::Read,
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use clap::{Parser, Subcommand, ValueEnum};
use quicswarm::{
    ControllerConfig, Delivery, Fingerprint, Gateway, Identity, LinkPreset, ReconnectPolicy,
    Registry, Session, SubscribeOptions, TransportTuning, Trust,
};
use serde::Serialize;
use tokio::sync::watch;

#[derive(Parser)]
#[command(about = "Stream camera frames over quicswarm, freshest first")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Source {
    /// A generated test pattern with a frame counter and capture time.
    Test,
    /// An MJPEG byte stream on standard input (e.g. `rpicam-vid --codec mjpeg -o -`).
    Stdin,
}

#[derive(Subcommand)]
enum Command {
    /// The robot side: serve the `camera` stream.
    Serve {
        #[arg(long, default_value = "0.0.0.0:1857")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value_t = 30)]
        fps: u32,
        #[arg(long, value_enum, default_value = "test")]
        source: Source,
        /// Frame size of the test source, bytes (~40 KB is a 640x480 JPEG).
        #[arg(long, default_value_t = 40_000)]
        size: usize,
        #[arg(long, default_value = "certs")]
        cert_dir: PathBuf,
    },
    /// The laptop side: watch the stream and report fps, frame age and losses.
    View {
        addr: String,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
        /// Trust this gateway fingerprint (default: trust on first use).
        #[arg(long)]
        fingerprint: Option<Fingerprint>,
        #[arg(long, default_value = "known_gateways")]
        known_gateways: PathBuf,
    },
    /// Both sides in one process on loopback.
    Demo {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 30)]
        fps: u32,
        #[arg(long, default_value_t = 40_000)]
        size: usize,
        #[arg(long)]
        json: bool,
    },
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A frame as it travels: capture time, frame number, image.
fn frame(number: u64, image: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(16 + image.len());
    b.put_u64_le(now_us());
    b.put_u64_le(number);
    b.put_slice(image);
    b.freeze()
}

/// The test camera: `fps` frames a second of `size` bytes.
fn test_camera(fps: u32, size: usize) -> watch::Receiver<Option<(u64, Bytes)>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(fps.max(1))));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let pattern: Vec<u8> = (0..size.saturating_sub(16))
            .map(|i| (i % 251) as u8)
            .collect();
        for n in 0u64.. {
            tick.tick().await;
            if tx.send(Some((n, frame(n, &pattern)))).is_err() {
                break;
            }
        }
    });
    rx
}

/// Splits an MJPEG byte stream into JPEG images (start marker `FF D8`, end marker `FF D9`).
#[derive(Default)]
struct MjpegSplitter {
    buf: Vec<u8>,
}

impl MjpegSplitter {
    /// Feeds bytes; returns the complete images found.
    fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            let Some(start) = self.buf.windows(2).position(|w| w == [0xFF, 0xD8]) else {
                // Keep a trailing 0xFF: it may start the next marker.
                let keep = usize::from(self.buf.last() == Some(&0xFF));
                self.buf.drain(..self.buf.len() - keep);
                return out;
            };
            let Some(end) = self.buf[start + 2..]
                .windows(2)
                .position(|w| w == [0xFF, 0xD9])
            else {
                self.buf.drain(..start);
                return out;
            };
            let end = start + 2 + end + 2;
            out.push(self.buf[start..end].to_vec());
            self.buf.drain(..end);
        }
    }
}

/// The stdin camera: JPEG images of an MJPEG stream, as they come.
fn stdin_camera() -> watch::Receiver<Option<(u64, Bytes)>> {
    let (tx, rx) = watch::channel(None);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut splitter = MjpegSplitter::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0u64;
        while let Ok(read) = stdin.read(&mut buf) {
            if read == 0 {
                break;
            }
            for image in splitter.push(&buf[..read]) {
                if tx.send(Some((n, frame(n, &image)))).is_err() {
                    return;
                }
                n += 1;
            }
        }
    });
    rx
}

/// The gateway's `camera` stream: every subscriber gets the newest frame each time one is
/// captured.
fn registry(camera: watch::Receiver<Option<(u64, Bytes)>>) -> Registry {
    let registry = Registry::new();
    registry.stream("camera", move |_: (), _ctx| {
        let mut rx = camera.clone();
        rx.mark_unchanged();
        futures_util::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            let (n, bytes) = rx.borrow_and_update().clone()?;
            Some((Ok::<_, String>((n as i64, bytes)), rx))
        })
    });
    // Watching is read-only: a reconnecting viewer may resume it from 0-RTT early data.
    registry.set_replay_safe("camera", true);
    registry
}

/// What a viewer saw.
#[derive(Debug, Serialize)]
struct Report {
    frames: u64,
    fps: f64,
    age_p50_ms: f64,
    age_p99_ms: f64,
    superseded: u64,
    reconnects: u64,
}

async fn view(controller: &quicswarm::Controller, addr: &str, seconds: u64) -> Result<Report> {
    let session = Session::connect(controller, addr, ReconnectPolicy::default())
        .await
        .context("connecting")?;
    let mut options = SubscribeOptions::delivery(Delivery::Latest);
    options.priority = 1;
    let mut frames = session.subscribe("camera", &(), &options).await?;
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut ages = Vec::new();
    while let Ok(next) = tokio::time::timeout_at(deadline, frames.next()).await {
        let Some((_, bytes)) = next? else { break };
        if bytes.len() >= 16 {
            let captured = u64::from_le_bytes(bytes[..8].try_into()?);
            ages.push(now_us().saturating_sub(captured) as f64 / 1000.0);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    ages.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        ages.get(((ages.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let report = Report {
        frames: ages.len() as u64,
        fps: ages.len() as f64 / elapsed,
        age_p50_ms: pct(0.5),
        age_p99_ms: pct(0.99),
        superseded: frames.superseded(),
        reconnects: session.reconnects(),
    };
    session.close().await;
    Ok(report)
}

fn print(report: &Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!(
            "{} frames, {:.1} fps, frame age p50 {:.2} ms p99 {:.2} ms, {} superseded, {} reconnects",
            report.frames, report.fps, report.age_p50_ms, report.age_p99_ms, report.superseded, report.reconnects
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Serve {
            listen,
            fps,
            source,
            size,
            cert_dir,
        } => {
            let camera = match source {
                Source::Test => test_camera(fps, size),
                Source::Stdin => stdin_camera(),
            };
            let gateway = Gateway::builder()
                .listen(listen)
                .cert_dir(cert_dir)
                .transport(TransportTuning::preset(LinkPreset::Wifi))
                .registry(registry(camera))
                .spawn()
                .await?;
            eprintln!(
                "camera on {} ({})",
                gateway.local_addr(),
                gateway.fingerprint()
            );
            gateway.closed().await;
        }
        Command::View {
            addr,
            seconds,
            json,
            fingerprint,
            known_gateways,
        } => {
            let trust = fingerprint.map_or(Trust::KnownGateways(known_gateways), |fp| {
                Trust::Fingerprints(vec![fp])
            });
            let mut config = ControllerConfig::with_trust(trust);
            config.transport = TransportTuning::preset(LinkPreset::Wifi);
            let controller = quicswarm::Controller::new(config)?;
            print(&view(&controller, &addr, seconds).await?, json)?;
        }
        Command::Demo {
            seconds,
            fps,
            size,
            json,
        } => {
            let identity = Identity::self_signed(&[])?;
            let fp = identity.fingerprint();
            let gateway = Gateway::builder()
                .listen("127.0.0.1:0".parse()?)
                .identity(identity)
                .registry(registry(test_camera(fps, size)))
                .spawn()
                .await?;
            let controller = quicswarm::Controller::new(ControllerConfig::with_trust(
                Trust::Fingerprints(vec![fp]),
            ))?;
            print(
                &view(&controller, &gateway.local_addr().to_string(), seconds).await?,
                json,
            )?;
            gateway.shutdown(Duration::from_secs(1)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mjpeg_splitter_finds_images_across_reads() {
        let a = [0xFF, 0xD8, 1, 2, 0xFF, 0xD9];
        let b = [0xFF, 0xD8, 3, 0xFF, 0x00, 4, 0xFF, 0xD9];
        let mut stream = vec![0u8, 7];
        stream.extend_from_slice(&a);
        stream.extend_from_slice(&b);
        let mut s = MjpegSplitter::default();
        let mut images = Vec::new();
        // Byte by byte: markers split across reads.
        for byte in &stream {
            images.extend(s.push(std::slice::from_ref(byte)));
        }
        assert_eq!(images, vec![a.to_vec(), b.to_vec()]);
        assert!(
            s.push(&[0xFF, 0xD8, 9]).is_empty(),
            "an unfinished image waits"
        );
    }
}
