//! File transfers over a slow link: bounded by progress, not by their total time. A download
//! that keeps moving outlasts the client's call timeout and the gateway's stall timeout; one
//! that stops moving fails with a timeout, and keeps what it stored for the next run.

use std::{path::Path, sync::Arc, time::Duration};

use quicswarm::{
    files::{Selector, Swarm, TransferError, TransferOptions},
    CallError, Controller, ControllerConfig, Trust,
};
use quicswarm_tests::{link::Link, spawn_gateway, tree, within, TestGateway};

/// The call timeout of these tests' controllers, and their gateways' stall timeout: a third
/// of what the big file takes.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes per second out of the gateway.
const RATE: u64 = 1_000_000;
/// The big file: about three call timeouts at [`RATE`].
const BIG: usize = 3 << 20;
/// The small file's content.
const SMALL: &[u8] = b"small";

/// A gateway behind `link` serving a folder with the big file and a small one.
async fn served(link: &Link, root: &Path) -> TestGateway {
    tree::write_file(
        root,
        "big.bin",
        &tree::content("big.bin", BIG),
        0o644,
        1_600_000_000,
    );
    tree::write_file(root, "small.txt", SMALL, 0o644, 1_600_000_000);
    let (wrapper, served) = (link.wrapper(), root.to_path_buf());
    let mut limits = quicswarm::Limits::default();
    limits.stall_timeout = Some(CALL_TIMEOUT);
    spawn_gateway(move |b| {
        b.serve("data", served)
            .socket_wrapper(wrapper)
            .limits(limits)
    })
    .await
}

/// One test's world: the link, the served folder, a swarm behind the link.
struct Slow {
    link: Link,
    _dirs: tempfile::TempDir,
    source: std::path::PathBuf,
    dest: std::path::PathBuf,
    _gw: TestGateway,
    swarm: Swarm,
}

/// A gateway behind a [`RATE`] link (seeded with `seed`) and an impatient swarm of one.
async fn slow(seed: u64) -> Slow {
    let link = Link::new(seed);
    link.set_rate(Some(RATE), 256 * 1024);
    let dirs = tempfile::tempdir().unwrap();
    let (source, dest) = (dirs.path().join("source"), dirs.path().join("dest"));
    let gw = served(&link, &source).await;
    let swarm = impatient_swarm(&gw).await;
    Slow {
        link,
        _dirs: dirs,
        source,
        dest,
        _gw: gw,
        swarm,
    }
}

/// A swarm of one client whose controller gives every call [`CALL_TIMEOUT`].
async fn impatient_swarm(gw: &TestGateway) -> Swarm {
    let mut config = ControllerConfig::with_trust(Trust::Fingerprints(vec![gw.fingerprint]));
    config.call_timeout = Some(CALL_TIMEOUT);
    // A small window per stream: the gateway's write of a whole file or a range waits on it
    // again and again, far longer in all than the gateway's stall timeout.
    config.transport.stream_receive_window = 128 * 1024;
    let controller = Controller::new(config).unwrap();
    within("swarm", Swarm::connect(&controller, &gw.addr, 1))
        .await
        .unwrap()
}

/// `dest` holds the two files of `source`, with their content, and nothing else.
fn assert_copied(source: &Path, dest: &Path) {
    for name in ["big.bin", "small.txt"] {
        let (want, got) = (source.join(name), dest.join(name));
        assert!(
            std::fs::read(&want).unwrap() == std::fs::read(&got).unwrap(),
            "{name}: content differs"
        );
    }
    let mut present = Vec::new();
    tree::list_all(dest, dest, &mut present);
    present.sort();
    assert_eq!(
        present,
        ["big.bin", "small.txt"],
        "nothing else in {}",
        dest.display()
    );
}

/// Ranges of 1 MiB, one at a time: each takes about a call timeout on its own.
fn one_range_at_a_time() -> TransferOptions {
    let mut options = TransferOptions::default();
    options.range_size = 1 << 20;
    options.streams_per_client = 1;
    options
}

#[tokio::test]
async fn a_download_that_keeps_moving_outlasts_the_call_timeout() {
    let Slow {
        source,
        dest,
        swarm,
        ..
    } = &slow(1).await;
    // Whole, the big file is one answer that takes about three call timeouts to arrive.
    let mut whole = TransferOptions::default();
    whole.range_size = 4 << 20;
    let summary = within(
        "a whole-file download",
        swarm.download("data", &Selector::all(), dest, &whole),
    )
    .await
    .expect("a download that keeps moving is not cut by the call timeout");
    assert_eq!(summary.files, 2);
    assert!(
        summary.seconds > 2.0 * CALL_TIMEOUT.as_secs_f64(),
        "the link is slow enough for the test to mean something: {} s",
        summary.seconds
    );
    assert_copied(source, dest);
    // In ranges, several in flight sharing the link: each one outlasts the call timeout too.
    let mut ranges = one_range_at_a_time();
    ranges.streams_per_client = 3;
    let dest = dest.with_file_name("dest-ranges");
    within(
        "a download in ranges",
        swarm.download("data", &Selector::all(), &dest, &ranges),
    )
    .await
    .expect("ranges that keep moving are not cut by the call timeout");
    assert_copied(source, &dest);
}

#[tokio::test]
async fn a_download_that_stops_moving_fails_with_a_timeout() {
    let Slow {
        link,
        source,
        dest,
        swarm,
        ..
    } = &slow(2).await;
    // The link goes down once the first range is stored: the next one stops moving.
    let mut options = one_range_at_a_time();
    let cut = link.clone();
    options.progress = Some(Arc::new(move |p| {
        if p.bytes_done >= 1 << 20 {
            cut.set_down(true);
        }
    }));
    match within(
        "a stalled download",
        swarm.download("data", &Selector::all(), dest, &options),
    )
    .await
    {
        Err(TransferError::Partial { failed, .. }) => {
            let (path, error) = &failed[0];
            assert_eq!(path, "big.bin", "{failed:?}");
            assert!(
                matches!(error, TransferError::Call(CallError::Timeout(t)) if *t == CALL_TIMEOUT),
                "a stalled range is a timeout: {error:?}"
            );
        }
        other => panic!("expected the big file to time out, got {other:?}"),
    }
    assert!(
        !dest.join("big.bin").exists(),
        "no half-received file under its final name"
    );
    // What was stored stays: once the link is back, running the download again resumes.
    link.set_down(false);
    let summary = within(
        "the download again",
        swarm.download("data", &Selector::all(), dest, &one_range_at_a_time()),
    )
    .await
    .expect("the resumed download completes");
    // At most the big file's other ranges and the small file (if it was not stored yet).
    let most = (BIG - (1 << 20) + SMALL.len()) as u64;
    assert!(
        summary.bytes <= most,
        "the first range is not moved again: {} bytes moved",
        summary.bytes
    );
    assert_copied(source, dest);
}
