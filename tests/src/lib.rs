//! Helpers for the integration suite: gateways on `127.0.0.1:0` with throwaway certificates,
//! controllers pinned to them, and timeouts that turn a hang into a clear failure.

use std::{future::Future, time::Duration};

use quicswarm::{
    Controller, ControllerConfig, Fingerprint, Gateway, GatewayBuilder, Identity, Trust,
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
    /// Its address as `ip:port`.
    pub addr: String,
    /// Its certificate's fingerprint.
    pub fingerprint: Fingerprint,
}

impl TestGateway {
    /// A controller that pins this gateway's fingerprint.
    pub fn controller(&self) -> Controller {
        controller(Trust::Fingerprints(vec![self.fingerprint]))
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
    init_tracing();
    let identity = Identity::self_signed(&[]).expect("self-signed identity");
    let fingerprint = identity.fingerprint();
    let builder = Gateway::builder()
        .listen("127.0.0.1:0".parse().expect("literal address"))
        .identity(identity)
        .registry(quicswarm::demo::registry());
    let gateway = configure(builder).spawn().await.expect("gateway starts");
    let addr = gateway.local_addr().to_string();
    TestGateway {
        gateway,
        addr,
        fingerprint,
    }
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
