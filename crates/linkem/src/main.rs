//! `linkem`: bring an emulated link up for as long as you need it, or run one program on each
//! side of it.

use std::{
    process::{Child, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use linkem::{DirSpec, Link, LinkSpec, Loss, Profile, Side};

/// Link emulator: two network namespaces joined through a userspace forwarder that applies
/// loss, rate, delay, jitter, reordering and duplication. Needs root.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Lists the built-in profiles.
    Profiles,
    /// Brings a link up, prints its namespaces and counters, and tears it down on Ctrl-C or
    /// after --seconds. Run programs with `ip netns exec NAMESPACE ...`.
    Up {
        #[command(flatten)]
        link: LinkArgs,
        /// Tear down after this many seconds (default: on Ctrl-C only).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Runs CMD_A in namespace A (10.77.0.1) and CMD_B in namespace B (10.77.0.2); when CMD_B
    /// ends, stops CMD_A, tears the link down and prints the counters as JSON.
    Run {
        #[command(flatten)]
        link: LinkArgs,
        /// Shell command for side A (started first; a server, typically).
        #[arg(long = "a", value_name = "CMD_A")]
        cmd_a: String,
        /// Shell command for side B (its end ends the run).
        #[arg(long = "b", value_name = "CMD_B")]
        cmd_b: String,
    },
}

#[derive(Args)]
struct LinkArgs {
    /// Start from a built-in profile (L1..L4); the flags below override it.
    #[arg(long)]
    profile: Option<Profile>,
    /// Seed for every random draw.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Rate each way, Mbit/s.
    #[arg(long)]
    rate_mbit: Option<f64>,
    /// One-way delay, ms.
    #[arg(long)]
    delay_ms: Option<f64>,
    /// One-way jitter amplitude (delay ± jitter), ms.
    #[arg(long)]
    jitter_ms: Option<f64>,
    /// Loss probability each way (0..1).
    #[arg(long)]
    loss: Option<f64>,
    /// Mean burst length in packets: makes the loss bursty (Gilbert-Elliott).
    #[arg(long)]
    burst: Option<f64>,
    /// Tail-drop queue, ms of the link rate.
    #[arg(long)]
    queue_ms: Option<f64>,
    /// Reordering probability.
    #[arg(long)]
    reorder: Option<f64>,
    /// Duplication probability.
    #[arg(long)]
    duplicate: Option<f64>,
    /// Both directions share one serialiser (Wi-Fi airtime).
    #[arg(long)]
    half_duplex: bool,
}

impl LinkArgs {
    fn spec(&self) -> LinkSpec {
        let mut spec = self
            .profile
            .map_or_else(|| LinkSpec::symmetric(DirSpec::default()), Profile::spec);
        for dir in [&mut spec.a_to_b, &mut spec.b_to_a] {
            let ms = |v: f64| Duration::from_secs_f64(v / 1e3);
            if let Some(r) = self.rate_mbit {
                dir.rate_bit_s = Some((r * 1e6) as u64);
            }
            if let Some(d) = self.delay_ms {
                dir.delay = ms(d);
            }
            if let Some(j) = self.jitter_ms {
                dir.jitter = ms(j);
            }
            if let Some(q) = self.queue_ms {
                dir.queue = ms(q);
            }
            let rate = self.loss.unwrap_or(match dir.loss {
                Loss::None => 0.0,
                Loss::Random { rate } | Loss::Bursty { rate, .. } => rate,
            });
            if self.loss.is_some() || self.burst.is_some() {
                dir.loss = match self.burst {
                    Some(mean_burst) => Loss::Bursty { rate, mean_burst },
                    None => Loss::Random { rate },
                };
            }
            if let Some(p) = self.reorder {
                dir.reorder = p;
            }
            if let Some(p) = self.duplicate {
                dir.duplicate = p;
            }
        }
        spec.half_duplex = self.half_duplex;
        spec.seed = self.seed;
        spec
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("linkem: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Profiles => {
            for p in Profile::ALL {
                println!("{p}  {}", p.describe());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Up { link, seconds } => {
            linkem::teardown_on_ctrl_c()?;
            let link = Link::up(link.spec())?;
            println!(
                "link up: A = {} ({}), B = {} ({}); realtime forwarder: {}",
                link.namespace(Side::A),
                link.addr(Side::A),
                link.namespace(Side::B),
                link.addr(Side::B),
                link.is_realtime()
            );
            println!(
                "run programs with: ip netns exec {} CMD   /   ip netns exec {} CMD",
                link.namespace(Side::A),
                link.namespace(Side::B)
            );
            let start = Instant::now();
            // Bounded by --seconds, or by Ctrl-C (whose handler removes the namespaces).
            while seconds.is_none_or(|s| start.elapsed() < Duration::from_secs(s)) {
                std::thread::sleep(Duration::from_secs(1));
                let c = link.counters();
                println!(
                    "a→b {} pkts, {} lost, {} queue-dropped | b→a {} pkts, {} lost, {} queue-dropped",
                    c.a_to_b.packets,
                    c.a_to_b.lost,
                    c.a_to_b.queue_dropped,
                    c.b_to_a.packets,
                    c.b_to_a.lost,
                    c.b_to_a.queue_dropped
                );
                if let Some(e) = link.error() {
                    bail!("forwarder stopped: {e}");
                }
            }
            println!("{}", serde_json::to_string_pretty(&link.down())?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run { link, cmd_a, cmd_b } => {
            linkem::teardown_on_ctrl_c()?;
            let link = Link::up(link.spec())?;
            let mut a: Child = link
                .command(Side::A, "sh")
                .args(["-c", &cmd_a])
                .spawn()
                .context("starting CMD_A")?;
            let status = link
                .command(Side::B, "sh")
                .args(["-c", &cmd_b])
                .status()
                .context("running CMD_B");
            let _ = a.kill();
            let _ = a.wait();
            let counters = link.down();
            println!("{}", serde_json::to_string_pretty(&counters)?);
            Ok(if status?.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
