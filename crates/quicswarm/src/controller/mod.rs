//! The controller: one QUIC endpoint that opens clients to any number of gateways.
//!
//! `mod.rs` dials (resolve, handshake, then the hello); `dial.rs` decides whom to trust and
//! pins a gateway seen for the first time; `hello.rs` asks the gateway for a handler.

mod dial;
mod hello;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use quicswarm_proto::ErrorCode;
use tracing::debug;

use self::dial::TlsCache;
use crate::{
    client::Client,
    config::{self, ControllerConfig},
    error::ConnectError,
    qlog::QlogDir,
    transport::{tcp, Connection, TransportKind},
};

/// Opens [`Client`]s to gateways over one UDP socket.
///
/// # Examples
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use quicswarm::{Controller, ControllerConfig, Trust};
///
/// let controller = Controller::new(ControllerConfig::with_trust(
///     Trust::KnownGateways("known_gateways".into()),
/// ))?;
/// let client = controller.get_client("127.0.0.1:1857").await?;
/// println!("rtt {:?}", client.ping().await?);
/// let reply = client.call("echo", &"hello").await?;
/// assert_eq!(&reply[..], b"hello");
/// client.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Controller {
    endpoint: quinn::Endpoint,
    config: Arc<ControllerConfig>,
    /// One ticket store for every gateway, so reconnects can resume sessions.
    resumption: rustls::client::Resumption,
    /// Serialises trust-on-first-use writes to the known-gateways file.
    pin_lock: Arc<Mutex<()>>,
    /// TLS configs by gateway and pin (see `tls_for`).
    tls_cache: Arc<Mutex<TlsCache>>,
    /// Where per-connection qlog files go (`ControllerConfig::qlog_dir`).
    qlog: Option<QlogDir>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// A controller with its own UDP socket.
    ///
    /// # Errors
    /// If the socket cannot be bound (or the qlog folder created).
    pub fn new(config: ControllerConfig) -> Result<Self, ConnectError> {
        #[cfg(feature = "qlog")]
        let qlog = config.qlog_dir.clone().map(QlogDir::new).transpose()?;
        #[cfg(not(feature = "qlog"))]
        let qlog = None;
        let socket = match config.bind {
            Some(addr) => config::udp_socket(addr)?,
            None => config::udp_socket(SocketAddr::from(([0u16; 8], 0)))
                .or_else(|_| config::udp_socket(SocketAddr::from(([0u8; 4], 0))))?,
        };
        let endpoint = config::endpoint(socket, None, config.socket_wrapper.as_ref())?;
        Ok(Self {
            endpoint,
            config: Arc::new(config),
            resumption: rustls::client::Resumption::in_memory_sessions(256),
            pin_lock: Arc::new(Mutex::new(())),
            tls_cache: Arc::default(),
            qlog,
        })
    }

    /// The controller's settings.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The local UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Asks the gateway at `addr` (`host:port`) for a handler and returns the client of the new
    /// pair: one QUIC connection.
    ///
    /// # Errors
    /// [`ConnectError::PoolFull`] when the gateway's pool is full;
    /// [`ConnectError::FingerprintMismatch`] when a pinned gateway shows another certificate;
    /// others for resolution, handshake and timeout failures.
    pub async fn get_client(&self, addr: &str) -> Result<Client, ConnectError> {
        self.get_client_with(addr, false, None).await
    }

    /// Like [`get_client`](Self::get_client), trusting only the gateway whose certificate
    /// has `fingerprint`, whatever the controller's [`Trust`](crate::Trust) (nothing is
    /// written to a known-gateways file): for fleets, whose file pins each gateway.
    ///
    /// # Errors
    /// As [`get_client`](Self::get_client); [`ConnectError::FingerprintMismatch`] when the
    /// gateway shows another certificate.
    pub async fn get_client_pinned(
        &self,
        addr: &str,
        fingerprint: crate::Fingerprint,
    ) -> Result<Client, ConnectError> {
        self.get_client_with(addr, false, Some(fingerprint)).await
    }

    /// Like [`get_client`](Self::get_client), but without a round trip when this controller
    /// holds a TLS session ticket for the gateway (it connected before): the connection
    /// resumes with 0-RTT and the client is returned at once, before the gateway has answered.
    /// Requests made right away travel as early data. The gateway runs the replay-safe ones
    /// from it (ping, file listings and downloads, subroutines registered replay-safe) and
    /// refuses the others with `TooEarly`; the client then re-sends them after the handshake,
    /// automatically. If the gateway rejects 0-RTT (it restarted, say), everything is re-sent.
    /// Without a ticket it is the same as `get_client`.
    ///
    /// A full pool is then seen as a closed connection by the first requests (the gateway's
    /// refusal comes after them), not as [`ConnectError::PoolFull`].
    ///
    /// # Errors
    /// As [`get_client`](Self::get_client).
    pub async fn get_client_0rtt(&self, addr: &str) -> Result<Client, ConnectError> {
        self.get_client_with(addr, true, None).await
    }

    async fn get_client_with(
        &self,
        addr: &str,
        early: bool,
        pin: Option<crate::Fingerprint>,
    ) -> Result<Client, ConnectError> {
        let (kind, addr) = transport_of(addr);
        if early && kind == TransportKind::Tcp {
            return Err(ConnectError::Unsupported {
                feature: "0-RTT",
                transport: kind,
            });
        }
        let (remote, server_name) = resolve(addr).await?;
        let timeout = self.config.connect_timeout;
        let connect = self.connect(kind, addr, remote, &server_name, early, pin);
        match tokio::time::timeout(timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout {
                gateway: remote,
                after: timeout,
            }),
        }
    }

    /// Dials a gateway: its trust, the handshake (TCP or QUIC, 0-RTT when asked), the
    /// first-use pin, then the hello.
    async fn connect(
        &self,
        kind: TransportKind,
        label: &str,
        remote: SocketAddr,
        server_name: &str,
        early: bool,
        pin: Option<crate::Fingerprint>,
    ) -> Result<Client, ConnectError> {
        let trusted = self.trust(label, pin).await?;
        let conn = if kind == TransportKind::Tcp {
            let name =
                rustls::pki_types::ServerName::try_from(server_name.to_string()).map_err(|e| {
                    ConnectError::Address {
                        addr: label.to_string(),
                        reason: e.to_string(),
                    }
                })?;
            let transport = &self.config.transport;
            let conn = tcp::connect(remote, name, trusted.tls.clone(), transport, 4096)
                .await
                .map_err(|source| {
                    trusted.mismatch(label).unwrap_or(ConnectError::Tcp {
                        gateway: remote,
                        source,
                    })
                })?;
            Connection::from(conn)
        } else {
            let mut client_config = quinn::ClientConfig::new(trusted.quic.clone());
            // The gateway opens no bidirectional streams towards us; unidirectional ones carry
            // `Latest` items, one each.
            let transport = &self.config.transport;
            let mut transport = transport.quinn(transport.keep_alive, 0, 1024);
            if let Some(qlog) = &self.qlog {
                qlog.attach(&mut transport, "controller", remote);
            }
            client_config.transport_config(Arc::new(transport));
            let mut connecting = self
                .endpoint
                .connect_with(client_config, remote, server_name)
                .map_err(|e| ConnectError::Connect {
                    gateway: remote,
                    reason: e.to_string(),
                })?;
            if early {
                match connecting.into_0rtt() {
                    // A ticket means this gateway was verified (and pinned) before.
                    Ok((conn, accepted)) => return self.hello_early(conn, accepted, remote).await,
                    // No ticket for this gateway: a full handshake.
                    Err(full) => {
                        debug!(gateway = %remote, "no session ticket: full handshake");
                        connecting = full;
                    }
                }
            }
            match connecting.await {
                Ok(conn) => Connection::from(conn),
                Err(source) => {
                    return Err(trusted.mismatch(label).unwrap_or(ConnectError::Connection {
                        gateway: remote,
                        source: source.into(),
                    }))
                }
            }
        };
        self.pin_if_first_use(&trusted, label, &conn).await?;
        self.hello(conn, remote).await
    }

    /// Moves every connection of this controller to a new local UDP socket bound to `addr`
    /// (port 0 for any): what happens when a robot's address changes as it roams. The
    /// connections carry on (QUIC connection migration); gateways accept it by default.
    /// TLS-over-TCP clients are not moved (TCP has no migration): they live on their own
    /// sockets, and a [`Session`](crate::Session) reconnects them when the old address dies.
    ///
    /// # Errors
    /// If the new socket cannot be bound.
    pub fn rebind(&self, addr: SocketAddr) -> std::io::Result<()> {
        use quinn::Runtime;
        let socket = config::udp_socket(addr)?;
        let mut udp = quinn::TokioRuntime.wrap_udp_socket(socket)?;
        if let Some(wrap) = &self.config.socket_wrapper {
            udp = (wrap.0)(udp);
        }
        self.endpoint.rebind_abstract(udp)
    }

    /// Closes every connection at once and waits (bounded) for the socket to go idle.
    pub async fn close(&self) {
        self.endpoint.close(
            crate::transport::quic_code(ErrorCode::NoError),
            b"controller closed",
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// Splits an optional `tcp://` or `quic://` scheme off a gateway address.
pub(crate) fn transport_of(addr: &str) -> (TransportKind, &str) {
    if let Some(rest) = addr.strip_prefix("tcp://") {
        (TransportKind::Tcp, rest)
    } else {
        (
            TransportKind::Quic,
            addr.strip_prefix("quic://").unwrap_or(addr),
        )
    }
}

/// Resolves `host:port`; the host becomes the TLS server name (an IP address is checked
/// against the certificate's IP SANs under CA trust).
async fn resolve(addr: &str) -> Result<(SocketAddr, String), ConnectError> {
    let bad = |reason: String| ConnectError::Address {
        addr: addr.to_string(),
        reason,
    };
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok((sa, sa.ip().to_string()));
    }
    let (host, _port) = addr
        .rsplit_once(':')
        .ok_or_else(|| bad("expected host:port".into()))?;
    let mut found = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| bad(e.to_string()))?;
    let sa = found.next().ok_or_else(|| bad("no address found".into()))?;
    Ok((sa, host.trim_matches(['[', ']']).to_string()))
}
