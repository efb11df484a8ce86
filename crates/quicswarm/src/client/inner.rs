//! What every clone of a client and each of its item streams share: the connection, the
//! gateway's welcome, whether the handshake is confirmed, and the delivery router.

use std::{
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc, OnceLock},
};

use quicswarm_proto::{ErrorCode, Request, Welcome};
use tokio::sync::watch;

use super::deadlines::Deadlines;
use crate::{config::ControllerConfig, subscribe::Router};

pub(crate) struct ClientInner {
    pub(super) conn: crate::Connection,
    pub(super) router: Arc<Router>,
    /// Set when the gateway's `Welcome` arrived (at once for a full handshake; a little after
    /// the first requests with 0-RTT).
    pub(super) welcome: Arc<OnceLock<Welcome>>,
    /// For a 0-RTT connection: `Some(accepted)` once the handshake completed.
    pub(super) early: Option<watch::Receiver<Option<bool>>>,
    pub(super) remote: SocketAddr,
    pub(super) config: Arc<ControllerConfig>,
    pub(super) nonce: AtomicU64,
    /// The call timeout of every request, on one timer.
    pub(super) deadlines: Arc<Deadlines>,
}

impl ClientInner {
    pub(crate) fn new(
        conn: crate::Connection,
        welcome: Arc<OnceLock<Welcome>>,
        early: Option<watch::Receiver<Option<bool>>>,
        remote: SocketAddr,
        config: Arc<ControllerConfig>,
    ) -> Self {
        Self {
            conn,
            router: Arc::default(),
            welcome,
            early,
            remote,
            deadlines: Deadlines::new(config.call_timeout),
            config,
            nonce: AtomicU64::new(0),
        }
    }
}

impl ClientInner {
    /// Waits until the handshake is complete: requests sent after it never travel as early
    /// data. Immediate for connections made without 0-RTT.
    pub(crate) async fn confirmed(&self) {
        if let Some(rx) = &self.early {
            let mut rx = rx.clone();
            let _ = rx.wait_for(Option::is_some).await;
        }
    }

    /// Whether the handshake is complete (or the connection was made without 0-RTT): checked
    /// before waiting for it, as waiting (on it and on the connection's close) registers two
    /// wakers per request.
    pub(crate) fn is_confirmed(&self) -> bool {
        self.early.as_ref().is_none_or(|rx| rx.borrow().is_some())
    }

    /// Whether `request` may be answered from early data, by the gateway's rule: for a
    /// subroutine, unknown until the gateway's `Welcome` arrives (then try, and re-send on
    /// `TooEarly`).
    pub(super) fn may_run_early(&self, request: &Request) -> bool {
        request.replay_safe(|name| self.replay_safe(name).unwrap_or(true))
    }

    /// Whether the gateway registered subroutine `name` replay-safe, by its `Welcome`; `None`
    /// before the welcome arrived.
    pub(super) fn replay_safe(&self, name: &str) -> Option<bool> {
        let welcome = self.welcome.get()?;
        Some(
            welcome
                .subroutines
                .iter()
                .any(|s| s.name == name && s.replay_safe),
        )
    }
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        // The last handle (client and its streams) is gone: free the gateway's slot now
        // rather than after its idle timeout.
        self.conn
            .close(ErrorCode::NoError.to_u32(), b"client dropped");
    }
}
