//! Helpers for the integration suite: gateways on `127.0.0.1:0` with throwaway certificates,
//! controllers pinned to them, and timeouts that turn a hang into a clear failure.

pub mod link;
pub mod wire;

use std::{future::Future, time::Duration};

use quicswarm::{
    Controller, ControllerConfig, Fingerprint, Gateway, GatewayBuilder, Identity, TransportKind,
    Trust,
};

/// Upper bound for any single wait in the suite.
pub const WAIT: Duration = Duration::from_secs(30);

/// Awaits `fut`, failing the test with `what` if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for: {what}"),
    }
}

/// A gateway for one test.
#[derive(Debug)]
pub struct TestGateway {
    /// The running gateway.
    pub gateway: Gateway,
    /// The address to dial: `ip:port` for QUIC, `tcp://ip:port` for TLS-over-TCP.
    pub addr: String,
    /// The transport the test's clients use.
    pub transport: TransportKind,
    /// Its certificate's fingerprint.
    pub fingerprint: Fingerprint,
}

impl TestGateway {
    /// A controller that pins this gateway's fingerprint.
    pub fn controller(&self) -> Controller {
        controller(Trust::Fingerprints(vec![self.fingerprint]))
    }

    /// A client of this gateway from a fresh pinned controller (failing the test if it
    /// cannot connect in time).
    pub async fn client(&self) -> quicswarm::Client {
        within("connect", self.controller().get_client(&self.addr))
            .await
            .expect("the test gateway accepts a client")
    }

    /// The address without its `tcp://` scheme: the name gateways are pinned under in a
    /// `known_gateways` file (one pin whatever the transport).
    pub fn label(&self) -> &str {
        self.addr.strip_prefix("tcp://").unwrap_or(&self.addr)
    }

    /// A pinned controller that gives up connecting after one second: for tests that expect
    /// a connection to fail.
    pub fn impatient_controller(&self) -> Controller {
        let mut config = ControllerConfig::with_trust(Trust::Fingerprints(vec![self.fingerprint]));
        config.connect_timeout = Duration::from_secs(1);
        Controller::new(config).expect("controller socket")
    }

    /// Waits until at most `n` handlers are alive.
    pub async fn wait_handlers_at_most(&self, n: usize) {
        let mut rx = self.gateway.watch_handlers();
        within("handler slots to be freed", rx.wait_for(|&h| h <= n))
            .await
            .expect("gateway alive");
    }
}

/// Starts a gateway with the demo subroutines and a fresh self-signed identity on
/// `127.0.0.1:0`; `configure` may change anything else.
pub async fn spawn_gateway(
    configure: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
) -> TestGateway {
    spawn_gateway_on(TransportKind::Quic, configure).await
}

/// [`spawn_gateway`] whose clients use `transport`: over TCP the gateway also listens for
/// TLS-over-TCP and [`TestGateway::addr`] is its `tcp://` address.
pub async fn spawn_gateway_on(
    transport: TransportKind,
    configure: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
) -> TestGateway {
    init_tracing();
    let identity = Identity::self_signed(&[]).expect("self-signed identity");
    let fingerprint = identity.fingerprint();
    let builder = Gateway::builder()
        .listen("127.0.0.1:0".parse().expect("literal address"))
        .identity(identity)
        .registry(quicswarm::demo::registry())
        .tcp(transport == TransportKind::Tcp);
    let gateway = configure(builder).spawn().await.expect("gateway starts");
    let addr = match gateway.tcp_addr() {
        Some(tcp) if transport == TransportKind::Tcp => format!("tcp://{tcp}"),
        _ => gateway.local_addr().to_string(),
    };
    TestGateway {
        gateway,
        addr,
        transport,
        fingerprint,
    }
}

/// Gateway settings for frame-limit tests: frames of at most 4,096 bytes.
pub fn small_frames(builder: GatewayBuilder) -> GatewayBuilder {
    let mut limits = quicswarm::Limits::default();
    limits.max_frame_len = 4096;
    builder.limits(limits)
}

/// Gateway settings for stall tests: an operation that makes no progress for 300 ms ends.
pub fn short_stall(builder: GatewayBuilder) -> GatewayBuilder {
    let mut limits = quicswarm::Limits::default();
    limits.stall_timeout = Some(Duration::from_millis(300));
    builder.limits(limits)
}

/// A controller with short timeouts and the given trust.
pub fn controller(trust: Trust) -> Controller {
    let mut config = ControllerConfig::with_trust(trust);
    config.connect_timeout = Duration::from_secs(10);
    config.call_timeout = Some(Duration::from_secs(30));
    config.bind = Some("127.0.0.1:0".parse().expect("literal address"));
    Controller::new(config).expect("controller socket")
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A tree of test files: nested folders, assorted sizes (an empty one, one big enough to be
/// sent in ranges), modes and mtimes.
/// Asserts that a transfer failed only because a file did not match its sender's whole-file
/// hash (after every range checked out), naming `what` in the message.
pub fn assert_whole_file_mismatch(
    result: Result<quicswarm::files::TransferSummary, quicswarm::files::TransferError>,
    what: &str,
) {
    use quicswarm::files::TransferError;
    match result {
        Err(TransferError::Partial { failed, .. }) => match &failed[0].1 {
            TransferError::Integrity { detail, .. } => {
                assert!(detail.contains("assembled file"), "{what}: {detail}")
            }
            other => panic!("{what}: expected an integrity failure, got {other:?}"),
        },
        other => panic!("{what}: expected an integrity failure, got {other:?}"),
    }
}

pub mod tree {
    use std::{
        fs,
        path::{Path, PathBuf},
    };

    /// `(relative path, size, mode, mtime seconds)` of the standard tree.
    pub const FILES: &[(&str, usize, u32, i64)] = &[
        ("a.log", 1000, 0o644, 1_600_000_000),
        ("empty.txt", 0, 0o600, 1_500_000_000),
        ("sub/b.log", 20_000, 0o640, 1_650_000_000),
        ("sub/c.bin", 5_000, 0o755, 1_650_000_100),
        ("sub/deep/d.log", 77, 0o444, 1_700_000_000),
        (
            "sub/deep/big.bin",
            3 * 1024 * 1024 + 17,
            0o600,
            1_700_000_500,
        ),
        ("other/e.txt", 300, 0o664, 1_690_000_000),
    ];

    /// Deterministic content of a test file.
    pub fn content(path: &str, size: usize) -> Vec<u8> {
        let seed = path
            .bytes()
            .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        (0..size)
            .map(|i| (seed.wrapping_add(i as u32).wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect()
    }

    /// Writes the standard tree below `root`.
    pub fn write(root: &Path) {
        for &(rel, size, mode, mtime) in FILES {
            write_file(root, rel, &content(rel, size), mode, mtime);
        }
    }

    /// Writes one file with mode and mtime.
    pub fn write_file(root: &Path, rel: &str, data: &[u8], mode: u32, mtime: i64) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = root.join(rel);
        fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        fs::write(&path, data).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        filetime::set_file_mtime(
            &path,
            filetime::FileTime::from_unix_time(mtime, 123_000_000),
        )
        .expect("mtime");
        path
    }

    /// Asserts that `got` holds exactly `files` of the standard tree with their content,
    /// mode and mtime, and nothing else (no temp or part files either).
    pub fn assert_same(got: &Path, files: &[&str]) {
        use std::os::unix::fs::PermissionsExt;
        for &(rel, size, mode, mtime) in FILES.iter().filter(|f| files.contains(&f.0)) {
            let path = got.join(rel);
            let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(data == content(rel, size), "{rel}: content differs");
            let meta = fs::metadata(&path).expect("metadata");
            assert_eq!(meta.permissions().mode() & 0o7777, mode, "{rel}: mode");
            let m = filetime::FileTime::from_last_modification_time(&meta);
            assert_eq!(
                (m.unix_seconds(), m.nanoseconds()),
                (mtime, 123_000_000),
                "{rel}: mtime"
            );
        }
        let mut present = Vec::new();
        list_all(got, got, &mut present);
        present.sort();
        let mut want: Vec<String> = files.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(present, want, "files present under {}", got.display());
    }

    /// Every file below `dir`, relative to `root`.
    pub fn list_all(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(read) = fs::read_dir(dir) else { return };
        for entry in read.flatten() {
            let p = entry.path();
            if p.is_dir() {
                list_all(root, &p, out);
            } else {
                out.push(
                    p.strip_prefix(root)
                        .expect("below root")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }

    /// Every path of the standard tree.
    pub fn all() -> Vec<&'static str> {
        FILES.iter().map(|f| f.0).collect()
    }
}
