//! The files bench's results: the rows, the table, W2's floors and the rounds summary.

use std::path::Path;

use anyhow::Result;
use quicswarm_benches::cores::Cpu;

/// A reference row: a local copy with the receiver's guarantees (temporary names, mode and
/// mtime, one sync, renames) on two threads, without network, encryption or hashing.
pub(crate) const LOCAL: &str = "local atomic copy";
/// What a first download's listing adds: the files read and hashed once
/// ([`file_work`](super::references::file_work)).
pub(crate) const HASH_ONCE: &str = "read and hash once";
/// The least file work of any download: read, copied, hashed and stored once
/// ([`file_work`](super::references::file_work)).
pub(crate) const STORE_ONCE: &str = "read, copy, hash, store once";
/// The rounds summary's [`Floor`] rows: a known file's, a first download's.
const FLOORS: [&str; 2] = ["floor, known file", "floor, first download"];
/// The transport's ceiling for W2: as many bytes as a quicswarm stream, memory to memory, each
/// item the same 64 KiB buffer (always in the CPU's cache).
pub(crate) const MEMORY: &str = "stream, no files";
/// The same stream with distinct bytes: items sliced in turn from a buffer bigger than the
/// CPU's caches, so each is read from memory, as a file's bytes are.
pub(crate) const MEMORY_COLD: &str = "stream, distinct bytes";

/// One measured run.
pub(crate) struct Row {
    workload: &'static str,
    what: &'static str,
    tool: String,
    files: u64,
    bytes: u64,
    secs: f64,
    /// CPU seconds this process spent on the row (all threads); `None` for other processes.
    cpu: Option<f64>,
    /// With `--cores 1`: CPU seconds of the gateway's and the client's threads.
    sides: Option<(f64, f64)>,
}

impl Row {
    /// A run of `tool` on the workload named `workload` (`what` it holds), moving `files` and
    /// `bytes` in `secs` seconds.
    pub(crate) fn new(
        (workload, what): (&'static str, &'static str),
        tool: String,
        (files, bytes): (u64, u64),
        secs: f64,
    ) -> Self {
        Self {
            workload,
            what,
            tool,
            files,
            bytes,
            secs,
            cpu: None,
            sides: None,
        }
    }

    /// With the CPU time it took.
    pub(crate) fn cpu(mut self, cpu: Cpu) -> Self {
        self.cpu = Some(cpu.process);
        self.sides = cpu.sides;
        self
    }
}

/// Prints the table of `rows`, W2's floors, with `rounds` the rounds summary, and with
/// `pinned` what each side spent per GB; with `json`, writes the rows there too.
pub(crate) fn print(
    rows: &[Row],
    rounds: u64,
    cores: f64,
    pinned: bool,
    json: Option<&Path>,
) -> Result<()> {
    println!();
    println!(
        "{:<4} {:<16} {:<20} {:>8} {:>7} {:>10} {:>8} {:>9} {:>13}",
        "", "workload", "tool", "seconds", "CPU s", "files/s", "MB/s", "vs rsync", "vs local copy"
    );
    let find = |r: &Row, tool: &str| {
        rows.iter()
            .find(|b| b.workload == r.workload && b.tool.starts_with(tool))
    };
    let versus = |r: &Row, tool: &str| {
        find(r, tool).map_or("-".to_string(), |b| format!("{:.2}x", b.secs / r.secs))
    };
    for r in rows {
        println!(
            "{:<4} {:<16} {:<20} {:>8.2} {:>7} {:>10.0} {:>8.1} {:>9} {:>13}",
            r.workload,
            r.what,
            r.tool,
            r.secs,
            r.cpu.map_or("-".to_string(), |c| format!("{c:.2}")),
            r.files as f64 / r.secs,
            r.bytes as f64 / 1e6 / r.secs,
            versus(r, "rsync"),
            versus(r, LOCAL),
        );
    }
    for (round, floor) in floors(rows).iter().enumerate() {
        println!(
            "W2 floor, round {}: moving the bytes from memory {:.2} (the distinct-bytes stream) + reading, copying, hashing and storing {:.2} CPU-seconds per GB = {:.2}x the stream's CPU (+ reading and hashing for the listing {:.2}: {:.2}x for a first download); at the distinct stream's use of the cores, a download runs at most {:.2}x the stream's rate ({:.2}x)",
            round + 1,
            floor.moving,
            floor.work,
            floor.cpu[0],
            floor.listing,
            floor.cpu[1],
            floor.rate[0],
            floor.rate[1],
        );
    }
    if rounds > 1 {
        println!();
        print_rounds(rows, cores);
    }
    if pinned {
        println!();
        println!("one core per side: CPU-seconds per GB");
        println!("{:<4} {:<24} {:>9} {:>9}", "", "tool", "gateway", "client");
        // The local copy runs on threads of its own, not the sides'.
        for r in rows.iter().filter(|r| r.sides.is_some() && r.tool != LOCAL) {
            let gb = r.bytes as f64 / 1e9;
            let (g, c) = r.sides.unwrap_or_default();
            println!(
                "{:<4} {:<24} {:>9.2} {:>9.2}",
                r.workload,
                r.tool,
                g / gb,
                c / gb
            );
        }
    }
    println!("targets: W1 >= 10,000 files/s and >= 3x rsync; W2 >= 600 MB/s and >= 1.8x rsync; W3 >= 2x rsync");
    if let Some(path) = json {
        let json: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({"workload": r.workload, "tool": r.tool, "seconds": r.secs, "cpu_seconds": r.cpu,
                                   "gateway_cpu_seconds": r.sides.map(|s| s.0), "client_cpu_seconds": r.sides.map(|s| s.1), "files": r.files,
                                   "bytes": r.bytes, "files_per_s": r.files as f64 / r.secs,
                                   "mb_per_s": r.bytes as f64 / 1e6 / r.secs})
            })
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}

/// The least a W2 download can cost in one round, from that round's streams and the run's file
/// work. A file's bytes come from memory, not the cache, when quinn copies them into packets,
/// so moving them costs what the distinct-bytes stream costs; beyond that, a download must
/// read the file (the gateway), copy it out of the transport's buffers into its own, hash it
/// and store it (the client): [`STORE_ONCE`]. A first download also reads and hashes it for
/// the listing: [`HASH_ONCE`].
struct Floor {
    /// CPU-seconds per GB: moving the bytes, the file work, the listing.
    moving: f64,
    work: f64,
    listing: f64,
    /// A known file's and a first download's: seconds at the distinct stream's use of the
    /// cores, and CPU-seconds, for all the bytes.
    secs: [f64; 2],
    cpu_secs: [f64; 2],
    /// Against the stream without files of the round: CPU and rate.
    cpu: [f64; 2],
    rate: [f64; 2],
}

/// One [`Floor`] per round that ran both streams, with the file work measured.
fn floors(rows: &[Row]) -> Vec<Floor> {
    let w2 = |tool: &'static str| {
        rows.iter()
            .filter(move |r| r.workload == "W2" && r.tool == tool)
    };
    let once = |tool: &'static str| w2(tool).next().and_then(|r| r.cpu);
    let (Some(work), Some(listing)) = (once(STORE_ONCE), once(HASH_ONCE)) else {
        return Vec::new();
    };
    w2(MEMORY)
        .zip(w2(MEMORY_COLD))
        .filter_map(|(hot, cold)| {
            let (hot_cpu, cold_cpu) = (hot.cpu?, cold.cpu?);
            let gb = hot.bytes as f64 / 1e9;
            let cpu_secs = [cold_cpu + work, cold_cpu + work + listing];
            // At the distinct stream's share of the cores, time goes with CPU time.
            let secs = cpu_secs.map(|c| c * cold.secs / cold_cpu);
            Some(Floor {
                moving: cold_cpu / gb,
                work: work / gb,
                listing: listing / gb,
                secs,
                cpu_secs,
                cpu: cpu_secs.map(|c| c / hot_cpu),
                rate: secs.map(|s| hot.secs / s),
            })
        })
        .collect()
}

/// With `--rounds`: per quicswarm tool of W2, the median over the rounds of its rate, of the
/// share of the `cores` it kept busy (its CPU time over the cores' time; the rate is this
/// share over the CPU time per byte), and of its rate and CPU time against each stream row of
/// the same round (the k-th run of a tool pairs with the k-th run of the stream).
fn print_rounds(rows: &[Row], cores: f64) {
    // Each round's floors, as rows of their own, at the distinct stream's use of the cores.
    let floors: Vec<Row> = floors(rows)
        .into_iter()
        .zip(
            rows.iter()
                .filter(|r| r.workload == "W2" && r.tool == MEMORY),
        )
        .flat_map(|(floor, stream)| {
            FLOORS.into_iter().enumerate().map(move |(i, tool)| Row {
                tool: tool.into(),
                secs: floor.secs[i],
                cpu: Some(floor.cpu_secs[i]),
                sides: None,
                ..*stream
            })
        })
        .collect();
    let runs_of = |tool: &str| -> Vec<&Row> {
        rows.iter()
            .chain(&floors)
            .filter(|r| r.workload == "W2" && r.tool == tool)
            .collect()
    };
    let references = [MEMORY, MEMORY_COLD].map(runs_of);
    let rounds = references[0].len();
    if rounds == 0 {
        return;
    }
    let median = |mut v: Vec<f64>| -> f64 {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let rate = |r: &Row| r.bytes as f64 / 1e6 / r.secs;
    println!("W2 over {rounds} rounds, medians (each run against the streams of its round):");
    println!(
        "{:<24} {:>8} {:>11} {:>22} {:>22}",
        "tool", "MB/s", "cores busy", "vs stream: rate, CPU", "vs distinct: rate, CPU"
    );
    let mut tools: Vec<&str> = rows
        .iter()
        .filter(|r| r.workload == "W2" && r.tool.starts_with("quicswarm"))
        .map(|r| r.tool.as_str())
        .collect();
    tools.sort_unstable();
    tools.dedup();
    for tool in [MEMORY, MEMORY_COLD].into_iter().chain(FLOORS).chain(tools) {
        let runs = runs_of(tool);
        let per_round = (runs.len() / rounds).max(1);
        let mut columns = String::new();
        for reference in &references {
            let (mut rates, mut cpus) = (Vec::new(), Vec::new());
            for (group, stream) in runs.chunks(per_round).zip(reference) {
                for r in group {
                    rates.push(stream.secs / r.secs);
                    if let (Some(a), Some(b)) = (r.cpu, stream.cpu) {
                        cpus.push(a / b);
                    }
                }
            }
            columns += &format!(
                " {:>22}",
                format!("{:.2}x, {:.2}x", median(rates), median(cpus))
            );
        }
        let busy = median(
            runs.iter()
                .filter_map(|r| r.cpu.map(|c| c / (cores * r.secs)))
                .collect(),
        );
        println!(
            "{:<24} {:>8.0} {:>11.2}{columns}",
            tool,
            median(runs.iter().map(|r| rate(r)).collect()),
            busy,
        );
    }
}
