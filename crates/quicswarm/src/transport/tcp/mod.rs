//! TLS 1.3 over one TCP connection, with operations multiplexed by yamux.
//!
//! A driver task owns the yamux connection; handles talk to it over channels. Every stream
//! starts with one byte naming its kind: an operation, or a control message that gives TCP
//! what QUIC has and yamux lacks (a stop, a reset, a close with a code). The bytes are in
//! [`quicswarm_proto::tcp`], with their tests; this module only moves them.
//!
//! `mod.rs` dials and accepts (`counted.rs`: the socket under TLS); `driver.rs` runs the
//! multiplexer; `stream.rs` has the operation streams; `signals.rs` what those two share.

mod counted;
mod driver;
mod signals;
mod stream;

pub(crate) use self::{
    counted::{ByteCounts, Counted},
    stream::{TcpRecv, TcpSend},
};

use self::{
    driver::{drive, Cmd, Routes},
    signals::{lost, set_reason, Reason, Registry, Signals},
};

use std::{
    io,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use futures_util::io::AsyncWriteExt;
use quicswarm_proto::{
    tcp::{Control, OPERATION},
    ErrorCode,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::{
    net::TcpStream,
    sync::{mpsc, oneshot, watch, Mutex},
};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use crate::{
    config::TransportTuning,
    transport::{Disconnect, WriteError},
};

/// How long a closing side waits for the peer to read the close message and hang up.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Operation streams the peer opened that wait for `accept_bi`.
const ACCEPT_QUEUE: usize = 64;
/// The shortest TCP user timeout (see [`tune_socket`]).
pub(crate) const MIN_USER_TIMEOUT: Duration = Duration::from_secs(20);
/// Streams allowed beyond the operation limit, for control messages.
const CONTROL_HEADROOM: usize = 64;

type Io = Compat<tokio_rustls::TlsStream<Counted>>;

#[derive(Debug)]
struct Inner {
    cmds: mpsc::UnboundedSender<Cmd>,
    accept: Mutex<mpsc::Receiver<(yamux::Stream, Arc<Signals>)>>,
    reason: Reason,
    registry: Registry,
    counts: Arc<ByteCounts>,
    remote: SocketAddr,
    peer_certs: Option<Vec<CertificateDer<'static>>>,
}

/// One TLS-over-TCP connection. Cheap to clone; the connection closes (code 0) when the last
/// clone and the last of its streams are gone.
#[derive(Debug, Clone)]
pub(crate) struct TcpConnection {
    inner: Arc<Inner>,
}

/// Sets the socket options every TCP connection gets: no Nagle delay (small messages are the
/// point), keep-alives and a user timeout so a dead link is noticed, and the congestion
/// controller if one is named.
///
/// The user timeout is the idle timeout but at least [`MIN_USER_TIMEOUT`]: the kernel aborts a
/// connection whose data stays unacknowledged that long, and on a lossy link the doubling
/// retransmission timer gets there long before the link is dead (1 s, and even 5 s, aborted
/// connections on the emulated L3 link: 5% bursty loss, RTT 60 ± 30 ms, a full queue). So TCP
/// notices a dead link far later than QUIC, whose idle timer counts silence, not lateness.
pub(crate) fn tune_socket(socket: &TcpStream, tuning: &TransportTuning) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let sock = socket2::SockRef::from(socket);
    // The kernel counts keep-alive time in whole seconds; the user timeout below (in ms) is
    // what notices a dead link quickly.
    let every = tuning.keep_alive.max(Duration::from_secs(1));
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(every)
        .with_interval(every)
        .with_retries(3);
    sock.set_tcp_keepalive(&keepalive)?;
    #[cfg(target_os = "linux")]
    sock.set_tcp_user_timeout(Some(tuning.idle_timeout.max(MIN_USER_TIMEOUT)))?;
    #[cfg(target_os = "linux")]
    if let Some(cc) = &tuning.tcp_congestion {
        sock.set_tcp_congestion(cc.as_bytes())?;
    }
    Ok(())
}

/// Dials `addr`, runs the TLS handshake and starts the multiplexer.
pub(crate) async fn connect(
    addr: SocketAddr,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    tuning: &TransportTuning,
    max_streams: usize,
) -> io::Result<TcpConnection> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(target_os = "linux")]
    if let Some(cc) = &tuning.tcp_congestion {
        // Before connecting, so the handshake already uses it.
        socket2::SockRef::from(&socket).set_tcp_congestion(cc.as_bytes())?;
    }
    let tcp = socket.connect(addr).await?;
    tune_socket(&tcp, tuning)?;
    let tls = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, Counted::new(tcp))
        .await?;
    let peer_certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
    Ok(start(
        tokio_rustls::TlsStream::Client(tls),
        yamux::Mode::Client,
        addr,
        peer_certs,
        max_streams,
    ))
}

/// Runs the server side of the TLS handshake on an accepted socket and starts the
/// multiplexer.
pub(crate) async fn accept(
    tcp: TcpStream,
    tls: tokio_rustls::TlsAcceptor,
    max_streams: usize,
) -> io::Result<TcpConnection> {
    let remote = tcp.peer_addr()?;
    let tls = tls.accept(Counted::new(tcp)).await?;
    let peer_certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
    Ok(start(
        tokio_rustls::TlsStream::Server(tls),
        yamux::Mode::Server,
        remote,
        peer_certs,
        max_streams,
    ))
}

fn start(
    tls: tokio_rustls::TlsStream<Counted>,
    mode: yamux::Mode,
    remote: SocketAddr,
    peer_certs: Option<Vec<CertificateDer<'static>>>,
    max_streams: usize,
) -> TcpConnection {
    let counts = tls.get_ref().0.counts.clone();
    let max_streams = max_streams.clamp(1, 4096 - CONTROL_HEADROOM);
    let mut config = yamux::Config::default();
    // Headroom over the operations for the short control streams (stops, resets, close).
    let streams = max_streams + CONTROL_HEADROOM;
    config.set_max_num_streams(streams);
    // yamux requires (and asserts) at least its 256 KiB default window per stream; a single
    // busy stream may grow its window into the rest.
    config.set_max_connection_receive_window(Some(streams * 256 * 1024));
    let conn = yamux::Connection::new(tls.compat(), config, mode);
    let (cmds_tx, cmds_rx) = mpsc::unbounded_channel();
    let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_QUEUE);
    let reason: Reason = Arc::new(watch::channel(None).0);
    let registry = Registry::default();
    let routes = Routes {
        accept: accept_tx,
        reason: reason.clone(),
        registry: registry.clone(),
        max_streams,
    };
    tokio::spawn(drive(conn, cmds_rx, routes));
    TcpConnection {
        inner: Arc::new(Inner {
            cmds: cmds_tx,
            accept: Mutex::new(accept_rx),
            reason,
            registry,
            counts,
            remote,
            peer_certs,
        }),
    }
}

impl TcpConnection {
    pub(crate) fn remote_address(&self) -> SocketAddr {
        self.inner.remote
    }

    /// Bytes sent and received on the socket so far.
    pub(crate) fn bytes(&self) -> (u64, u64) {
        let c = &self.inner.counts;
        (
            c.sent.load(Ordering::Relaxed),
            c.received.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn close_reason(&self) -> Option<Disconnect> {
        self.inner.reason.borrow().clone()
    }

    pub(crate) fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.inner.peer_certs.clone()
    }

    pub(crate) fn close(&self, code: u32, why: &[u8]) {
        if self.close_reason().is_some() {
            return;
        }
        set_reason(&self.inner.reason, Disconnect::Local);
        let msg = Control::Close {
            code: ErrorCode::from(code),
            reason: why.to_vec(),
        };
        let _ = self.inner.cmds.send(Cmd::Control(msg));
    }

    pub(crate) async fn closed(&self) -> Disconnect {
        let mut rx = self.inner.reason.subscribe();
        let why = match rx.wait_for(Option::is_some).await {
            Ok(r) => r.clone().unwrap_or(Disconnect::Reset),
            Err(_) => Disconnect::Reset,
        };
        why
    }

    pub(crate) async fn open_bi(&self) -> Result<(TcpSend, TcpRecv), Disconnect> {
        if let Some(why) = self.close_reason() {
            return Err(why);
        }
        let (tx, rx) = oneshot::channel();
        self.inner
            .cmds
            .send(Cmd::Open(tx))
            .map_err(|_| lost(&self.inner.reason))?;
        let mut stream = tokio::select! {
            stream = rx => stream.map_err(|_| lost(&self.inner.reason))?,
            why = self.closed() => return Err(why),
        };
        stream
            .write_all(&[OPERATION])
            .await
            .map_err(|_| lost(&self.inner.reason))?;
        let signals = Signals::register(&self.inner.registry, stream.id().val());
        Ok(self.halves(stream, signals))
    }

    pub(crate) async fn accept_bi(&self) -> Result<(TcpSend, TcpRecv), Disconnect> {
        let mut accept = self.inner.accept.lock().await;
        tokio::select! {
            stream = accept.recv() => match stream {
                Some((stream, signals)) => Ok(self.halves(stream, signals)),
                None => Err(lost(&self.inner.reason)),
            },
            why = self.closed() => Err(why),
        }
    }

    fn halves(&self, stream: yamux::Stream, signals: Arc<Signals>) -> (TcpSend, TcpRecv) {
        let (r, w) = stream::Half::pair(stream);
        (
            TcpSend {
                conn: self.clone(),
                w: Some(w),
                finished: watch::channel(false).0,
                signals: signals.clone(),
            },
            TcpRecv {
                conn: self.clone(),
                r: Some(r),
                eof: false,
                signals,
                buf: bytes::BytesMut::new(),
            },
        )
    }

    /// Tells the peer about one of its streams (a stop or a reset) on a control stream.
    fn signal(&self, msg: Control) {
        if self.close_reason().is_none() {
            let _ = self.inner.cmds.send(Cmd::Control(msg));
        }
    }

    fn write_error(&self) -> WriteError {
        match self.close_reason() {
            Some(why) => WriteError::ConnectionLost(why),
            // The stream is gone but the connection lives: the peer dropped its end.
            None => WriteError::Stopped(ErrorCode::NoError),
        }
    }
}
