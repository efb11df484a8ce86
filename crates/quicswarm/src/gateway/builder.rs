//! [`GatewayBuilder`]: what a gateway serves and how, then `spawn`, which binds the sockets,
//! builds the shared state and starts the accept loops.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64},
        Arc,
    },
};

use rustls::pki_types::CertificateDer;
use tokio::sync::{watch, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, Instrument};

use crate::{
    config::{self, Limits, SocketWrapper, TransportTuning},
    error::GatewayError,
    files::serve::FileConfig,
    metrics::{serve_http, LimitHits, Live, Metrics},
    permissions::Permissions,
    qlog::QlogDir,
    subroutine::Registry,
    tls::Identity,
};

use super::{
    accept::{accept_loop, accept_tcp_loop},
    security::{CaSource, IdentitySource, Security, SecuritySource, When},
    state::{Admission, Counters, Lifecycle, Policy, ServerTransport, State},
};

use super::handle::Gateway;

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:1857";
/// The default handler pool size.
pub const DEFAULT_POOL_SIZE: usize = 5;

/// Configures and starts a [`Gateway`].
///
/// # Examples
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use quicswarm::{Gateway, Registry};
///
/// let registry = Registry::new();
/// registry.batch("echo", |s: String| async move { Ok::<_, String>(s.into_bytes()) });
/// let gateway = Gateway::builder()
///     .listen("127.0.0.1:1857".parse()?)
///     .pool_size(5)
///     .registry(registry)
///     .spawn()
///     .await?;
/// println!("listening on {}, fingerprint {}", gateway.local_addr(), gateway.fingerprint());
/// gateway.closed().await; // until a controller calls close_gateway (if allowed)
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `spawn` or `run`"]
pub struct GatewayBuilder {
    listen: SocketAddr,
    pool_size: usize,
    security: SecuritySource,
    limits: Limits,
    transport: TransportTuning,
    registry: Registry,
    files: FileConfig,
    socket_wrapper: Option<SocketWrapper>,
    tcp: bool,
    metrics: Option<SocketAddr>,
    qlog: Option<PathBuf>,
}

impl Gateway {
    /// A builder with the defaults.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1857)),
            pool_size: DEFAULT_POOL_SIZE,
            security: SecuritySource::default(),
            limits: Limits::default(),
            transport: TransportTuning::default(),
            registry: Registry::new(),
            files: FileConfig::default(),
            socket_wrapper: None,
            tcp: false,
            metrics: None,
            qlog: None,
        }
    }
}

impl GatewayBuilder {
    /// The UDP address to listen on. Default `0.0.0.0:1857`; port 0 picks a free port.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// How many handler/client pairs may exist at once. Default 5.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// Folder holding `gateway.pem` and `gateway.key`; a self-signed pair is generated there on
    /// first start. Default `certs/`.
    pub fn cert_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.security.identity = IdentitySource::CertDir(dir.into());
        self
    }

    /// Use this identity instead of a cert folder.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.security.identity = IdentitySource::Given(identity);
        self
    }

    /// Whether controllers may shut the gateway down with `close_gateway`. Default `false`:
    /// such requests get [`CallError::PermissionDenied`](crate::CallError::PermissionDenied).
    /// (Shorthand for `close_gateway` in the default permissions.)
    pub fn allow_close(mut self, allow: bool) -> Self {
        self.security.default_permissions.close_gateway = allow;
        self
    }

    /// Permissions of the client whose certificate is named `identity` (mutual TLS, see
    /// [`client_ca`](Self::client_ca)).
    pub fn permissions(mut self, identity: impl Into<String>, permissions: Permissions) -> Self {
        self.security
            .permissions
            .insert(identity.into(), permissions);
        self
    }

    /// Permissions of anonymous clients and of identities without their own. Default:
    /// [`Permissions::all_but_close`] (everything but `close_gateway`).
    pub fn default_permissions(mut self, permissions: Permissions) -> Self {
        self.security.default_permissions = permissions;
        self
    }

    /// Limits; see [`Limits`] for the defaults.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// QUIC transport settings (timeouts, loss detection, congestion control, windows); see
    /// [`TransportTuning::preset`]. Default: the `Lan` preset.
    pub fn transport(mut self, transport: TransportTuning) -> Self {
        self.transport = transport;
        self
    }

    /// Requires mutual TLS: clients must present a certificate issued by one of these CAs, or
    /// the handshake fails. The certificate's common name is the client's identity (see
    /// [`tls::certificate_name`](crate::tls::certificate_name)).
    pub fn client_ca(mut self, roots: Vec<CertificateDer<'static>>) -> Self {
        self.security.client_ca = Some(CaSource::Given(roots));
        self
    }

    /// Like [`client_ca`](Self::client_ca), with the CA certificates read from a PEM file:
    /// when the gateway starts, and again on every [`Gateway::reload`].
    pub fn client_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.security.client_ca = Some(CaSource::File(path.into()));
        self
    }

    /// Also accepts TLS-over-TCP (the same protocol, operations multiplexed by yamux) on the
    /// same port number, for networks that block UDP. Controllers dial it as `tcp://host:port`.
    /// Default `false`.
    pub fn tcp(mut self, enable: bool) -> Self {
        self.tcp = enable;
        self
    }

    /// Serves the gateway's metrics in the Prometheus text format on `http://ADDR/metrics`
    /// (port 0 picks a free port; see [`Gateway::metrics_addr`]). Default: off.
    ///
    /// The endpoint has no authentication: bind it to loopback, or to an address only your
    /// monitoring can reach. It reports connections, the handler pool, operations by kind and
    /// result, limit hits, handshakes, 0-RTT, stream items, files, transport bytes, and per
    /// client the RTT, congestion window and lost packets. [`Gateway::metrics`] returns the
    /// same text without a server.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), quicswarm::GatewayError> {
    /// let gateway = quicswarm::Gateway::builder()
    ///     .listen("127.0.0.1:1857".parse().unwrap())
    ///     .metrics("127.0.0.1:9464".parse().unwrap())
    ///     .spawn()
    ///     .await?;
    /// println!("scrape http://{}/metrics", gateway.metrics_addr().unwrap());
    /// # Ok(()) }
    /// ```
    pub fn metrics(mut self, addr: SocketAddr) -> Self {
        self.metrics = Some(addr);
        self
    }

    /// Writes a qlog file per QUIC connection into `dir` (created if needed), to open in qvis:
    /// see the README's "Debugging a link with qlog". Needs the `qlog` feature. For debugging
    /// sessions: nothing bounds the files' size.
    #[cfg(feature = "qlog")]
    pub fn qlog_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.qlog = Some(dir.into());
        self
    }

    /// Wraps the gateway's UDP socket (link emulation in tests and tools).
    pub fn socket_wrapper(mut self, wrapper: SocketWrapper) -> Self {
        self.socket_wrapper = Some(wrapper);
        self
    }

    /// Serves the files below `dir` as the read root `name`: controllers may list and
    /// download them (never anything outside `dir`, never through a symlink).
    pub fn serve(mut self, name: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        self.files.roots.insert(name.into(), dir.into());
        self
    }

    /// Accepts uploads into `dir` (and only there). Without it, uploads are refused with
    /// `PermissionDenied`.
    pub fn upload_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.files.upload_dir = Some(dir.into());
        self
    }

    /// Serve the subroutines of this registry (shared: later registrations are seen).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// The certificate, client CA and permissions this builder would start with: what
    /// [`Gateway::reload_from`] takes from it.
    pub(super) fn security_source(&self) -> SecuritySource {
        self.security.clone()
    }

    /// Binds the socket and starts serving in the background.
    ///
    /// # Errors
    /// If the identity cannot be loaded or generated, or the address cannot be bound.
    pub async fn spawn(self) -> Result<Gateway, GatewayError> {
        // The gateway pings too, so an idle client keeps its slot whatever keep-alive it
        // chose; a vanished one still times out (RFC 9000 §10.1: our own pings restart the
        // idle timer only once per packet received).
        let keep_alive = self
            .transport
            .keep_alive
            .min(self.transport.idle_timeout / 3);
        // What the transport buffers per connection counts against the connection's memory
        // too: its windows are capped at an eighth of the connection budget each.
        let mut tuning = self.transport.clone();
        let cap = self.limits.connection_budget / 8;
        tuning.send_window = tuning.send_window.min(cap);
        tuning.receive_window = tuning
            .receive_window
            .min(u32::try_from(cap).unwrap_or(u32::MAX));
        let transport = ServerTransport {
            tuning,
            keep_alive,
            max_ops: self.limits.max_concurrent_ops,
        };
        let (security, generated) =
            Security::load(self.security, Arc::new(transport.quinn()), When::Start).await?;
        let fingerprint = security.fingerprint;
        let qlog = match self.qlog {
            Some(dir) => Some(QlogDir::new(dir.clone()).map_err(|source| {
                GatewayError::Tls(crate::tls::TlsError::Io {
                    action: "creating",
                    path: dir,
                    source,
                })
            })?),
            None => None,
        };
        let bind_err = |source| GatewayError::Bind {
            addr: self.listen,
            source,
        };
        let (socket, tcp) = bind(self.listen, self.tcp).await.map_err(bind_err)?;
        let endpoint = config::endpoint(
            socket,
            Some(security.quic.clone()),
            self.socket_wrapper.as_ref(),
        )
        .map_err(bind_err)?;
        let local_addr = endpoint.local_addr().map_err(bind_err)?;
        info!(%local_addr, %fingerprint, pool = self.pool_size, tcp = self.tcp, "gateway listening");

        let (handlers, connections) = (watch::channel(0usize).0, watch::channel(0usize).0);
        let pool = Arc::new(Semaphore::new(self.pool_size));
        let handshakes = Arc::new(Semaphore::new(self.limits.max_pending_handshakes.max(1)));
        let limit_hits = LimitHits::default();
        let live = Live::new(
            connections.subscribe(),
            handlers.subscribe(),
            self.pool_size as u32,
            handshakes.clone(),
            self.limits.max_pending_handshakes,
        );
        let metrics = Arc::new(Metrics::new(live, limit_hits.clone()));
        let metrics_listener = match self.metrics {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| GatewayError::Bind { addr, source })?;
                let addr = listener
                    .local_addr()
                    .map_err(|source| GatewayError::Bind { addr, source })?;
                info!(%addr, "metrics on http://{addr}/metrics");
                Some((listener, addr))
            }
            None => None,
        };
        let shared = Arc::new(State {
            endpoint,
            security: std::sync::RwLock::new(Arc::new(security)),
            transport,
            qlog,
            admission: Admission {
                pool,
                pool_size: self.pool_size as u32,
                handshakes,
                per_ip: std::sync::Mutex::default(),
                budget: self.limits.budget(limit_hits),
                next_handler_id: AtomicU64::new(1),
            },
            policy: Policy {
                registry: self.registry,
                files: self.files,
                limits: self.limits,
            },
            lifecycle: Lifecycle {
                stop_accepting: CancellationToken::new(),
                force_close: CancellationToken::new(),
                closed: CancellationToken::new(),
                shutting_down: AtomicBool::new(false),
                tracker: TaskTracker::new(),
            },
            counters: Counters {
                connections,
                handlers,
            },
            metrics,
        });
        // The root of every line the gateway logs (a process may run several).
        let span = tracing::error_span!("gateway", addr = %local_addr);
        let metrics_addr = metrics_listener.map(|(listener, addr)| {
            let stop = shared.lifecycle.force_close.clone();
            tokio::spawn(
                serve_http(listener, shared.metrics.clone(), stop).instrument(span.clone()),
            );
            addr
        });
        let accept = tokio::spawn(accept_loop(shared.clone()).instrument(span.clone()));
        let tcp_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());
        let accept_tcp = tcp.map(|listener| {
            tokio::spawn(
                accept_tcp_loop(shared.clone(), listener, self.transport.clone()).instrument(span),
            )
        });
        Ok(Gateway {
            shared,
            accept,
            accept_tcp,
            tcp_addr,
            metrics_addr,
            local_addr,
            generated_identity: generated,
        })
    }

    /// Starts the gateway and serves until it is shut down (by `close_gateway` or Ctrl-C is the
    /// caller's business): the blocking-style entry point.
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn).
    pub async fn run(self) -> Result<(), GatewayError> {
        let gateway = self.spawn().await?;
        gateway.closed().await;
        Ok(())
    }
}

/// Binds the UDP socket and, with `tcp`, a TCP listener on the same port. With port 0 the
/// kernel picks a UDP port whose TCP twin may be taken: then another port is tried, a few
/// times at most.
async fn bind(
    listen: SocketAddr,
    tcp: bool,
) -> std::io::Result<(std::net::UdpSocket, Option<tokio::net::TcpListener>)> {
    const ATTEMPTS: usize = 8;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let socket = config::udp_socket(listen)?;
        if !tcp {
            return Ok((socket, None));
        }
        let addr = socket.local_addr()?;
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return Ok((socket, Some(listener))),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && listen.port() == 0
                    && attempt < ATTEMPTS =>
            {
                tracing::debug!(%addr, "TCP port taken: another UDP port");
            }
            Err(e) => return Err(e),
        }
    }
}
