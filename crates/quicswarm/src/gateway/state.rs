//! What every task of a gateway shares: its policy (registry, roots, permissions, limits), its
//! admission control (handler pool, per-address slots, handshake permits), its lifecycle
//! (shutdown tokens, task tracker) and its counters.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use std::collections::HashMap;

use quicswarm_proto::ErrorCode;
use tokio::sync::{watch, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use crate::{
    config::Limits, files::serve::FileConfig, permissions::Permissions, subroutine::Registry,
};

/// State shared by the accept loop, the handlers and the [`Gateway`](super::Gateway) handle,
/// split by concern.
pub(crate) struct State {
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) policy: Policy,
    pub(crate) admission: Admission,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) counters: Counters,
    /// What `/metrics` reports (and [`GatewayStats`](super::GatewayStats) reads).
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

/// What clients may do: fixed when the gateway starts.
pub(crate) struct Policy {
    pub(crate) registry: Registry,
    pub(crate) files: FileConfig,
    pub(crate) permissions: HashMap<String, Permissions>,
    pub(crate) default_permissions: Permissions,
    pub(crate) limits: Limits,
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
    /// The permissions of a client.
    pub(crate) fn permissions_of(&self, identity: Option<&str>) -> &Permissions {
        identity
            .and_then(|id| self.policy.permissions.get(id))
            .unwrap_or(&self.policy.default_permissions)
    }

    /// Stops accepting, lets in-flight work finish within `grace`, then closes the endpoint.
    /// Idempotent: a second caller waits for the first to finish.
    pub(crate) async fn shutdown(self: &Arc<Self>, grace: Duration) {
        if self.lifecycle.shutting_down.swap(true, Ordering::SeqCst) {
            self.lifecycle.closed.cancelled().await;
            return;
        }
        info!(?grace, "gateway shutting down");
        self.lifecycle.stop_accepting.cancel();
        // Refuse new handshakes at the QUIC level.
        self.endpoint.set_server_config(None);
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
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
