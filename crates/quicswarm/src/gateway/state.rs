//! What every task of a gateway shares: its policy (registry, roots, permissions, limits), its
//! admission control (handler pool, per-address slots, handshake permits), its lifecycle
//! (shutdown tokens, task tracker) and its counters.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, PoisonError, RwLock,
    },
    time::Duration,
};

use std::collections::HashMap;

use quicswarm_proto::ErrorCode;
use tokio::sync::{watch, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use super::security::Security;
use crate::{
    config::{Limits, TransportTuning},
    files::serve::FileConfig,
    qlog::QlogDir,
    subroutine::Registry,
};

/// State shared by the accept loop, the handlers and the [`Gateway`](super::Gateway) handle,
/// split by concern.
pub(crate) struct State {
    pub(crate) endpoint: quinn::Endpoint,
    /// Certificate, client CA and permissions: swapped whole by a reload.
    pub(super) security: RwLock<Arc<Security>>,
    pub(super) transport: ServerTransport,
    /// Where per-connection qlog files go, if anywhere.
    pub(super) qlog: Option<QlogDir>,
    pub(crate) policy: Policy,
    pub(crate) admission: Admission,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) counters: Counters,
    /// What `/metrics` reports (and [`GatewayStats`](super::GatewayStats) reads).
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

/// What the gateway serves and within what limits: fixed when it starts (the registry's
/// contents may change; who may use them is [`Security`]'s, which a reload replaces).
pub(crate) struct Policy {
    pub(crate) registry: Registry,
    pub(crate) files: FileConfig,
    pub(crate) limits: Limits,
}

/// The QUIC transport settings of the gateway's connections.
pub(super) struct ServerTransport {
    /// Windows already capped by the connection budget.
    pub(super) tuning: TransportTuning,
    pub(super) keep_alive: Duration,
    pub(super) max_ops: u32,
}

impl ServerTransport {
    /// A fresh quinn transport config (one per connection when it logs qlog).
    pub(super) fn quinn(&self) -> quinn::TransportConfig {
        self.tuning.quinn(self.keep_alive, self.max_ops, 0)
    }
}

/// Who gets in, and what they may hold.
pub(crate) struct Admission {
    /// The handler pool: one permit per handler/client pair.
    pub(crate) pool: Arc<Semaphore>,
    pub(crate) pool_size: u32,
    /// One permit per handshake in progress (`Limits::max_pending_handshakes`).
    pub(crate) handshakes: Arc<Semaphore>,
    /// Connections (handshaking or established) per source address.
    pub(super) per_ip: std::sync::Mutex<HashMap<std::net::IpAddr, usize>>,
    /// What operations may hold in memory (`Limits::*_budget`).
    pub(crate) budget: crate::budget::Budget,
    pub(crate) next_handler_id: AtomicU64,
}

/// Starting, draining and closing.
pub(crate) struct Lifecycle {
    /// Cancelled when shutdown starts: no new connections or operations.
    pub(crate) stop_accepting: CancellationToken,
    /// Cancelled when connections must close now (grace over, or the gateway dropped): QUIC
    /// ones close with the endpoint, TCP ones watch this.
    pub(crate) force_close: CancellationToken,
    /// Cancelled when the endpoint is closed.
    pub(crate) closed: CancellationToken,
    pub(super) shutting_down: AtomicBool,
    /// Every connection and operation task.
    pub(crate) tracker: TaskTracker,
}

/// What the watchers report (the metrics read them too).
pub(crate) struct Counters {
    /// Connections alive now (handshaking or established, with or without a handler).
    pub(super) connections: watch::Sender<usize>,
    /// Handlers alive now.
    pub(crate) handlers: watch::Sender<usize>,
}

impl State {
    /// The security (certificate, client CA, permissions) in force now.
    pub(crate) fn security(&self) -> Arc<Security> {
        self.security
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops accepting, lets in-flight work finish within `grace`, then closes the endpoint.
    /// Idempotent: a second caller waits for the first to finish.
    pub(crate) async fn shutdown(self: &Arc<Self>, grace: Duration) {
        if self.lifecycle.shutting_down.swap(true, Ordering::SeqCst) {
            self.lifecycle.closed.cancelled().await;
            return;
        }
        info!(?grace, "gateway shutting down");
        {
            // Under the security lock: a reload either finished before, or sees the
            // cancellation and leaves the server config cleared.
            let _security = self
                .security
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            self.lifecycle.stop_accepting.cancel();
            // Refuse new handshakes at the QUIC level.
            self.endpoint.set_server_config(None);
        }
        self.lifecycle.tracker.close();
        if tokio::time::timeout(grace, self.lifecycle.tracker.wait())
            .await
            .is_err()
        {
            warn!("grace period over: closing with operations still running");
        }
        self.lifecycle.force_close.cancel();
        self.endpoint.close(
            crate::transport::quic_code(ErrorCode::ShuttingDown),
            b"gateway shutting down",
        );
        // Bounded: a peer that never acknowledges the close must not hold us.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.lifecycle.closed.cancel();
        info!("gateway closed");
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("pool_size", &self.admission.pool_size)
            .finish_non_exhaustive()
    }
}

/// One connection counted against its source address; released on drop.
pub(super) struct IpSlot {
    pub(super) shared: Arc<State>,
    ip: std::net::IpAddr,
}

impl IpSlot {
    pub(super) fn take(shared: &Arc<State>, ip: std::net::IpAddr) -> Option<Self> {
        let mut map = shared
            .admission
            .per_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= shared.policy.limits.max_connections_per_ip {
            return None;
        }
        *n += 1;
        drop(map);
        shared.counters.connections.send_modify(|c| *c += 1);
        Some(Self {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self
            .shared
            .admission
            .per_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        drop(map);
        self.shared
            .counters
            .connections
            .send_modify(|c| *c = c.saturating_sub(1));
    }
}
