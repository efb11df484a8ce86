//! The controller: one QUIC endpoint that opens clients to any number of gateways.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use tokio::sync::watch;

use quicswarm_proto::{ErrorCode, Hello, HelloReply, PROTOCOL_VERSION};
use tracing::{debug, info};

use crate::{
    client::{Client, ClientInner},
    config::{self, ControllerConfig},
    error::ConnectError,
    io::{varint, write_frame, FrameReader},
    tls::{self, Fingerprint, PinRecord, PinVerifier, Trust},
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
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The TLS configs of one gateway: for QUIC, for TLS-over-TCP, and the pin record their
/// shared verifier fills in.
type TlsEntry = (
    Arc<quinn::crypto::rustls::QuicClientConfig>,
    Arc<rustls::ClientConfig>,
    Arc<Mutex<PinRecord>>,
);

type TlsCache = std::collections::HashMap<(String, Option<Vec<Fingerprint>>), TlsEntry>;

impl Controller {
    /// A controller with its own UDP socket.
    ///
    /// # Errors
    /// If the socket cannot be bound.
    pub fn new(config: ControllerConfig) -> Result<Self, ConnectError> {
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
        self.get_client_with(addr, false).await
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
        self.get_client_with(addr, true).await
    }

    async fn get_client_with(&self, addr: &str, early: bool) -> Result<Client, ConnectError> {
        let (kind, addr) = transport_of(addr);
        if early && kind == TransportKind::Tcp {
            return Err(ConnectError::Unsupported {
                feature: "0-RTT",
                transport: kind,
            });
        }
        let (remote, server_name) = resolve(addr).await?;
        let timeout = self.config.connect_timeout;
        let connect = self.connect(kind, addr, remote, &server_name, early);
        match tokio::time::timeout(timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout {
                gateway: remote,
                after: timeout,
            }),
        }
    }

    async fn connect(
        &self,
        kind: TransportKind,
        label: &str,
        remote: SocketAddr,
        server_name: &str,
        early: bool,
    ) -> Result<Client, ConnectError> {
        let (allowed, pinned) = match &self.config.trust {
            Trust::Ca(_) => (None, None),
            Trust::Fingerprints(allowed) => (Some(allowed.clone()), None),
            Trust::KnownGateways(file) => {
                let (f, l) = (file.clone(), label.to_string());
                let expected = blocking(move || tls::known_gateway(&f, &l)).await?;
                (expected.map(|fp| vec![fp]), Some((file.clone(), expected)))
            }
        };
        let (quic, tls_config, record) = self.tls_for(label, allowed)?;
        let expected = match (&self.config.trust, &pinned) {
            (_, Some((_, Some(fp)))) => Some(*fp),
            (Trust::Fingerprints(list), _) => list.first().copied(),
            _ => None,
        };
        // A handshake that failed on a pinned gateway showing another certificate.
        let mismatch = || {
            let seen = record.lock().ok().and_then(|r| r.seen);
            match (expected, seen) {
                (Some(expected), Some(actual)) if expected != actual => {
                    Some(ConnectError::FingerprintMismatch {
                        gateway: label.to_string(),
                        expected,
                        actual,
                    })
                }
                _ => None,
            }
        };
        if kind == TransportKind::Tcp {
            let name =
                rustls::pki_types::ServerName::try_from(server_name.to_string()).map_err(|e| {
                    ConnectError::Address {
                        addr: label.to_string(),
                        reason: e.to_string(),
                    }
                })?;
            let transport = &self.config.transport;
            let conn = tcp::connect(remote, name, tls_config, transport, 4096)
                .await
                .map_err(|source| {
                    mismatch().unwrap_or(ConnectError::Tcp {
                        gateway: remote,
                        source,
                    })
                })?;
            let conn = Connection::from(conn);
            if let Some((file, None)) = pinned {
                self.pin_presented(file, label, &conn).await?;
            }
            return self.hello(conn, remote).await;
        }
        let mut client_config = quinn::ClientConfig::new(quic);
        // The gateway opens no bidirectional streams towards us; unidirectional ones carry
        // `Latest` items, one each.
        let transport = &self.config.transport;
        client_config.transport_config(transport.quinn(transport.keep_alive, 0, 1024));
        let mut connecting = self
            .endpoint
            .connect_with(client_config, remote, server_name)
            .map_err(|source| ConnectError::Connect {
                gateway: remote,
                source,
            })?;
        if early {
            match connecting.into_0rtt() {
                Ok((conn, accepted)) => return self.hello_early(conn, accepted, remote).await,
                // No ticket for this gateway: a full handshake.
                Err(full) => {
                    debug!(gateway = %remote, "no session ticket: full handshake");
                    connecting = full;
                }
            }
        }
        let conn = match connecting.await {
            Ok(conn) => conn,
            Err(source) => {
                if let Some(e) = mismatch() {
                    return Err(e);
                }
                return Err(ConnectError::Connection {
                    gateway: remote,
                    source,
                });
            }
        };
        let conn = Connection::from(conn);
        if let Some((file, None)) = pinned {
            self.pin_presented(file, label, &conn).await?;
        }
        self.hello(conn, remote).await
    }

    /// Trust on first use: pins the certificate this connection's finished handshake
    /// presented. Not the verifier's last sight: its record is shared by every connection to
    /// the gateway, and two first connections at once could swap what each saw.
    async fn pin_presented(
        &self,
        file: std::path::PathBuf,
        label: &str,
        conn: &Connection,
    ) -> Result<(), ConnectError> {
        let presented = conn
            .peer_certificates()
            .and_then(|certs| certs.first().map(Fingerprint::of));
        match presented {
            Some(fp) => self.pin_first_use(file, label, fp, conn).await,
            None => Err(ConnectError::Tls(
                rustls::Error::NoCertificatesPresented.into(),
            )),
        }
    }

    /// The TLS config for a gateway, made once per gateway and pin: rustls resumes a session
    /// (and so allows 0-RTT) only with the very verifier that verified it.
    fn tls_for(
        &self,
        label: &str,
        allowed: Option<Vec<Fingerprint>>,
    ) -> Result<TlsEntry, ConnectError> {
        let key = (label.to_string(), allowed.clone());
        let mut cache = self
            .tls_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(hit) = cache.get(&key) {
            return Ok(hit.clone());
        }
        let record = Arc::new(Mutex::new(PinRecord::default()));
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match &self.config.trust
        {
            Trust::Ca(roots) => tls::ca_verifier(roots).map_err(tls::TlsError::from)?,
            _ => self.pin_verifier(allowed, &record),
        };
        let tls = tls::client_config(verifier, &self.resumption, self.config.identity.as_ref())
            .map_err(tls::TlsError::from)?;
        let tls = Arc::new(tls);
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls.clone())
            .map_err(|e| tls::TlsError::from(rustls::Error::General(e.to_string())))?;
        let entry = (Arc::new(quic), tls, record);
        cache.insert(key, entry.clone());
        Ok(entry)
    }

    fn pin_verifier(
        &self,
        allowed: Option<Vec<Fingerprint>>,
        record: &Arc<Mutex<PinRecord>>,
    ) -> Arc<PinVerifier> {
        Arc::new(PinVerifier {
            allowed,
            record: record.clone(),
            algorithms: tls::provider().signature_verification_algorithms,
        })
    }

    /// Records a gateway seen for the first time. If another task pinned it meanwhile, the
    /// pin must match.
    async fn pin_first_use(
        &self,
        file: std::path::PathBuf,
        label: &str,
        fp: Fingerprint,
        conn: &Connection,
    ) -> Result<(), ConnectError> {
        let (lock, l) = (self.pin_lock.clone(), label.to_string());
        // File reads, writes and an fsync: off the runtime's workers.
        let pinned = blocking(move || {
            let _guard = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match tls::known_gateway(&file, &l)? {
                Some(expected) => Ok(Some(expected)),
                None => {
                    info!(gateway = %l, %fp, file = %file.display(), "pinned new gateway (trust on first use)");
                    tls::pin_gateway(&file, &l, fp)?;
                    Ok(None)
                }
            }
        })
        .await?;
        match pinned {
            Some(expected) if expected != fp => {
                conn.close(ErrorCode::NoError.to_u32(), b"untrusted");
                Err(ConnectError::FingerprintMismatch {
                    gateway: label.to_string(),
                    expected,
                    actual: fp,
                })
            }
            _ => Ok(()),
        }
    }

    async fn hello(&self, conn: Connection, remote: SocketAddr) -> Result<Client, ConnectError> {
        let protocol = |detail: String| ConnectError::Protocol {
            gateway: remote,
            detail,
        };
        let lost = |source| ConnectError::Connection {
            gateway: remote,
            source,
        };
        let (mut send, recv) = conn.open_bi().await.map_err(lost)?;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            name: self.config.name.clone(),
        };
        if let Err(e) = write_frame(&mut send, &hello).await {
            return Err(match e {
                quinn::WriteError::ConnectionLost(source) => refused_by_close(remote, source),
                other => protocol(other.to_string()),
            });
        }
        let _ = send.finish();
        let mut reader = FrameReader::new(recv, self.config.max_frame_len);
        let reply: HelloReply = match reader.expect_frame().await {
            Ok(reply) => reply,
            Err(crate::io::FrameError::Read(quinn::ReadError::ConnectionLost(source))) => {
                return Err(refused_by_close(remote, source))
            }
            Err(e) => {
                // Over TCP a refused connection shows as the stream ending: the reason comes
                // with the connection's end, a moment later.
                let closed = tokio::time::timeout(Duration::from_millis(200), conn.closed()).await;
                return Err(match closed {
                    Ok(source) => refused_by_close(remote, source),
                    Err(_) => protocol(e.to_string()),
                });
            }
        };
        match reply {
            HelloReply::Welcome(welcome) => {
                debug!(gateway = %remote, handler = welcome.handler_id, used = welcome.pool_used, "handler granted");
                let known = Arc::new(OnceLock::new());
                let _ = known.set(welcome);
                Ok(Client::new(ClientInner::new(
                    conn,
                    known,
                    None,
                    remote,
                    self.config.clone(),
                )))
            }
            HelloReply::Refused {
                code,
                pool_size,
                message,
            } => {
                conn.close(code.to_u32(), code.reason().as_bytes());
                Err(match code {
                    ErrorCode::PoolFull => ConnectError::PoolFull {
                        gateway: remote,
                        size: pool_size,
                    },
                    code => ConnectError::Refused {
                        gateway: remote,
                        code,
                        message,
                    },
                })
            }
        }
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

    /// Sends `Hello` as early data and returns the client at once; the `Welcome` is read in
    /// the background. If the gateway rejects early data, `Hello` is sent again first, before
    /// any request waiting for the handshake.
    async fn hello_early(
        &self,
        conn: quinn::Connection,
        accepted: quinn::ZeroRttAccepted,
        remote: SocketAddr,
    ) -> Result<Client, ConnectError> {
        let lost = |source| ConnectError::Connection {
            gateway: remote,
            source,
        };
        let hello = Hello {
            version: PROTOCOL_VERSION,
            name: self.config.name.clone(),
        };
        let conn = Connection::from(conn);
        let (mut send, recv) = conn.open_bi().await.map_err(lost)?;
        let _ = write_frame(&mut send, &hello).await;
        let _ = send.finish();
        let (tx, rx) = watch::channel(None);
        let welcome = Arc::new(OnceLock::new());
        let (c, w, max) = (conn.clone(), welcome.clone(), self.config.max_frame_len);
        tokio::spawn(async move {
            let accepted = accepted.await;
            let mut reader = FrameReader::new(recv, max);
            if !accepted {
                // Everything sent early was dropped, the Hello too.
                let Ok((mut send, recv)) = c.open_bi().await else {
                    return;
                };
                let _ = write_frame(&mut send, &hello).await;
                let _ = send.finish();
                reader = FrameReader::new(recv, max);
            }
            let _ = tx.send(Some(accepted));
            debug!(gateway = %remote, accepted, "0-RTT handshake complete");
            match reader.expect_frame::<HelloReply>().await {
                Ok(HelloReply::Welcome(welcome)) => {
                    let _ = w.set(welcome);
                }
                Ok(HelloReply::Refused { code, .. }) => {
                    c.close(code.to_u32(), code.reason().as_bytes())
                }
                Err(e) => debug!(gateway = %remote, "no welcome: {e}"),
            }
        });
        Ok(Client::new(ClientInner::new(
            conn,
            welcome,
            Some(rx),
            remote,
            self.config.clone(),
        )))
    }

    /// Closes every connection at once and waits (bounded) for the socket to go idle.
    pub async fn close(&self) {
        self.endpoint
            .close(varint(ErrorCode::NoError), b"controller closed");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

/// Runs file work for the trust store on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, tls::TlsError> + Send + 'static,
) -> Result<T, ConnectError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ConnectError::Io(std::io::Error::other(e)))?
        .map_err(ConnectError::from)
}

/// A connection the gateway closed during hello: map its code to a typed refusal.
fn refused_by_close(remote: SocketAddr, source: quinn::ConnectionError) -> ConnectError {
    if let quinn::ConnectionError::ApplicationClosed(close) = &source {
        let code = ErrorCode::from_wire(close.error_code.into_inner());
        if code == ErrorCode::PoolFull {
            return ConnectError::PoolFull {
                gateway: remote,
                size: 0,
            };
        }
        if code != ErrorCode::NoError {
            let message = String::from_utf8_lossy(&close.reason).into_owned();
            return ConnectError::Refused {
                gateway: remote,
                code,
                message,
            };
        }
    }
    ConnectError::Connection {
        gateway: remote,
        source,
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
