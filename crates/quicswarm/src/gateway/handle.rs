//! The running [`Gateway`]'s handle: its addresses and counters, the registry to change
//! while it runs, and its shutdown. (`Gateway::builder` is in `builder.rs`, which makes one.)

use std::{net::SocketAddr, sync::Arc, time::Duration};

use quicswarm_proto::ErrorCode;
use tokio::sync::watch;

use tracing::{info, warn};

use crate::{error::GatewayError, subroutine::Registry, tls::Fingerprint};

use super::{
    security::{Security, SecuritySource, When},
    state::State,
};

/// Counters of a gateway; see [`Gateway::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GatewayStats {
    /// Handler/client pairs alive now.
    pub handlers: usize,
    /// Requests run from 0-RTT early data (replay-safe ones).
    pub early_served: u64,
    /// Requests refused in early data as not replay-safe (`TooEarly`; clients re-send them
    /// after the handshake).
    pub too_early: u64,
    /// Handshakes in progress now (see `Limits::max_pending_handshakes`).
    pub pending_handshakes: usize,
    /// Connection attempts answered with a QUIC Retry, to validate their address first (see
    /// `Limits::retry_above_handshakes`).
    pub retries: u64,
}

/// A running gateway.
///
/// # Drop behavior
/// Dropping the handle closes the gateway at once (connections are closed with
/// `ShuttingDown`). Call [`shutdown`](Self::shutdown) for the graceful path.
#[derive(Debug)]
pub struct Gateway {
    pub(super) shared: Arc<State>,
    pub(super) accept: tokio::task::JoinHandle<()>,
    pub(super) accept_tcp: Option<tokio::task::JoinHandle<()>>,
    pub(super) tcp_addr: Option<SocketAddr>,
    pub(super) metrics_addr: Option<SocketAddr>,
    pub(super) local_addr: SocketAddr,
    pub(super) generated_identity: bool,
}

impl Gateway {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TCP address of the TLS-over-TCP listener, if enabled
    /// ([`GatewayBuilder::tcp`](crate::GatewayBuilder::tcp)); dial it as `tcp://ADDR`.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The address of the metrics endpoint, if enabled
    /// ([`GatewayBuilder::metrics`](crate::GatewayBuilder::metrics)).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The gateway's metrics now, in the Prometheus text format: what the `/metrics`
    /// endpoint serves, for programs that publish them their own way.
    pub fn metrics(&self) -> String {
        self.shared.metrics.encode()
    }

    /// The SHA-256 fingerprint of the gateway's certificate: what controllers pin. (A
    /// [`reload`](Self::reload) may change it.)
    pub fn fingerprint(&self) -> Fingerprint {
        self.shared.security().fingerprint
    }

    /// Reads the gateway's certificate folder and client CA file again
    /// ([`GatewayBuilder::cert_dir`](crate::GatewayBuilder::cert_dir),
    /// [`client_ca_file`](crate::GatewayBuilder::client_ca_file)) and serves with what they
    /// hold now; the permissions stay (see [`reload_from`](Self::reload_from) to change them).
    /// Returns the fingerprint now served.
    ///
    /// New connections shake hands with the new certificate and CA; connections already up
    /// carry on. A client's first connection after a reload is a full handshake (no
    /// resumption across a reload), so 0-RTT waits for its second.
    ///
    /// # Errors
    /// If a file cannot be read or parsed, or rustls refuses it: the gateway goes on serving
    /// with the configuration it had, and the error says why.
    ///
    /// ```no_run
    /// # async fn demo(gateway: quicswarm::Gateway) {
    /// // After replacing certs/gateway.pem and certs/gateway.key:
    /// match gateway.reload().await {
    ///     Ok(fingerprint) => println!("now serving {fingerprint}"),
    ///     Err(e) => eprintln!("reload failed, still serving the old certificate: {e}"),
    /// }
    /// # }
    /// ```
    ///
    /// The future does not borrow the handle (for bindings and supervisors that wait on
    /// another task).
    pub fn reload(
        &self,
    ) -> impl std::future::Future<Output = Result<Fingerprint, GatewayError>> + Send + 'static {
        let source = self.shared.security().source.clone();
        install(self.shared.clone(), source)
    }

    /// Takes the certificate, the client CA and the permissions from `builder` (reading the
    /// files it names) and serves with them, as [`reload`](Self::reload) does; every other
    /// setting of `builder` (address, pool, limits, roots) is ignored. Running requests keep
    /// the permissions they were admitted with; every later request, on old connections too,
    /// is checked against the new ones. What `quicswarm gateway` does on SIGHUP, with a
    /// builder made from its configuration file and flags again.
    ///
    /// # Errors
    /// As [`reload`](Self::reload): on error nothing changes.
    pub fn reload_from(
        &self,
        builder: &crate::GatewayBuilder,
    ) -> impl std::future::Future<Output = Result<Fingerprint, GatewayError>> + Send + 'static {
        install(self.shared.clone(), builder.security_source())
    }

    /// Whether the certificate was generated at this start (first run with this cert folder).
    pub fn generated_identity(&self) -> bool {
        self.generated_identity
    }

    /// The registry: register or remove subroutines while the gateway runs.
    pub fn registry(&self) -> &Registry {
        &self.shared.policy.registry
    }

    /// Handler/client pairs alive now.
    pub fn handlers(&self) -> usize {
        *self.shared.counters.handlers.borrow()
    }

    /// Watches the number of live handlers (for monitoring, and for tests that wait for a slot
    /// to be freed).
    pub fn watch_handlers(&self) -> watch::Receiver<usize> {
        self.shared.counters.handlers.subscribe()
    }

    /// Counters of the gateway's work so far.
    pub fn stats(&self) -> GatewayStats {
        GatewayStats {
            handlers: self.handlers(),
            early_served: self.shared.metrics.early_data_count("accepted"),
            too_early: self.shared.metrics.early_data_count("refused"),
            pending_handshakes: self.shared.policy.limits.max_pending_handshakes.max(1)
                - self.shared.admission.handshakes.available_permits(),
            retries: self.shared.metrics.retries.get(),
        }
    }

    /// Watches the number of live connections (a connection outlives its handler slot
    /// until the client has closed it).
    pub fn watch_connections(&self) -> watch::Receiver<usize> {
        self.shared.counters.connections.subscribe()
    }

    /// Resolves once the gateway has closed (after `shutdown` or an allowed `close_gateway`).
    pub async fn closed(&self) {
        self.shared.lifecycle.closed.cancelled().await;
    }

    /// Like [`closed`](Self::closed), as a future that does not borrow the handle: for
    /// callers that wait on another task or thread (bindings, supervisors).
    pub fn closed_owned(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.shared.lifecycle.closed.clone().cancelled_owned()
    }

    /// Graceful shutdown: stop accepting, let in-flight operations finish within `grace`, then
    /// close every connection and the socket.
    pub async fn shutdown(self, grace: Duration) {
        self.shared.shutdown(grace).await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.accept.abort();
        if let Some(tcp) = &self.accept_tcp {
            tcp.abort();
        }
        if !self.shared.lifecycle.closed.is_cancelled() {
            self.shared.lifecycle.stop_accepting.cancel();
            self.shared.lifecycle.force_close.cancel();
            self.shared.endpoint.close(
                crate::transport::quic_code(ErrorCode::ShuttingDown),
                b"gateway dropped",
            );
        }
    }
}

/// Loads `source` and, if that worked, makes it the gateway's security (see `reload`).
async fn install(shared: Arc<State>, source: SecuritySource) -> Result<Fingerprint, GatewayError> {
    let transport = shared.security().quic.transport.clone();
    let loaded = Security::load(source, transport, When::Reload).await;
    let security = match loaded {
        Ok((security, _)) => security,
        Err(e) => {
            warn!("reload failed, keeping the configuration in force: {e}");
            return Err(e);
        }
    };
    let fingerprint = security.fingerprint;
    {
        let mut current = shared
            .security
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Shutdown clears the server config to refuse handshakes: not given back here.
        if !shared.lifecycle.stop_accepting.is_cancelled() {
            shared
                .endpoint
                .set_server_config(Some(security.quic.clone()));
        }
        *current = Arc::new(security);
    }
    info!(%fingerprint, "reloaded certificate, client CA and permissions");
    Ok(fingerprint)
}
