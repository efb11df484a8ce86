//! TLS 1.3 over one TCP connection, with operations multiplexed by yamux.
//!
//! A driver task owns the yamux connection; handles talk to it over channels. Every stream
//! starts with one byte naming its kind: `B` for an operation (bidirectional), or a control
//! message that gives TCP what QUIC has and yamux lacks:
//! - `C`: close the connection (`code: u32` big-endian, then the reason);
//! - `S`: stop sending on stream `id` (`id: u32`, `code: u32`), QUIC's `STOP_SENDING`;
//! - `R`: stream `id` was reset (`id: u32`, `code: u32`), QUIC's `RESET_STREAM`.
//!
//! Control messages travel on the same TCP connection, after what was written before them.

use std::{
    collections::{HashMap, VecDeque},
    future::poll_fn,
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, PoisonError, Weak,
    },
    task::Poll,
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures_util::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use quinn::{ApplicationClose, Chunk, ConnectionError, ReadError, VarInt, WriteError};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::{
    net::TcpStream,
    sync::{mpsc, oneshot, watch, Mutex},
};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use crate::config::TransportTuning;

const KIND_BI: u8 = b'B';
const KIND_CLOSE: u8 = b'C';
const KIND_STOP: u8 = b'S';
const KIND_RESET: u8 = b'R';
/// Longest close reason read from a peer.
const MAX_REASON: usize = 1024;
/// How long a closing side waits for the peer to read the close message and hang up.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Operation streams the peer opened that wait for `accept_bi`.
const ACCEPT_QUEUE: usize = 64;
/// The shortest TCP user timeout (see [`tune_socket`]).
pub(crate) const MIN_USER_TIMEOUT: Duration = Duration::from_secs(20);
/// Streams allowed beyond the operation limit, for control messages.
const CONTROL_HEADROOM: usize = 64;

type Io = Compat<tokio_rustls::TlsStream<Counted>>;

/// Bytes through a TCP socket (TLS records included), for [`crate::Client::stats`].
#[derive(Debug, Default)]
pub(crate) struct ByteCounts {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
}

/// A TCP stream that counts what passes.
#[derive(Debug)]
pub(crate) struct Counted {
    inner: TcpStream,
    counts: Arc<ByteCounts>,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let n = (buf.filled().len() - before) as u64;
            self.counts.received.fetch_add(n, Ordering::Relaxed);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.counts.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.counts.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Counted {
    fn new(inner: TcpStream) -> Self {
        Self {
            inner,
            counts: Arc::default(),
        }
    }
}
type Reason = Arc<watch::Sender<Option<ConnectionError>>>;
type StreamMap = std::sync::Mutex<HashMap<u32, Weak<Signals>>>;
type Registry = Arc<StreamMap>;

/// What the peer said about one stream through control messages.
#[derive(Debug)]
struct Signals {
    id: u32,
    /// The peer stopped reading (its code): our writes fail with `Stopped`.
    stopped: watch::Sender<Option<u32>>,
    /// The peer reset its sending side (its code): our reads fail with `Reset`.
    reset: watch::Sender<Option<u32>>,
    registry: Weak<StreamMap>,
}

impl Signals {
    fn register(registry: &Registry, id: u32) -> Arc<Self> {
        let signals = Arc::new(Self {
            id,
            stopped: watch::channel(None).0,
            reset: watch::channel(None).0,
            registry: Arc::downgrade(registry),
        });
        registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::downgrade(&signals));
        signals
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            let mut map = registry.lock().unwrap_or_else(PoisonError::into_inner);
            // Only our own entry: yamux does not reuse ids, but be exact anyway.
            if map.get(&self.id).is_some_and(|w| w.strong_count() == 0) {
                map.remove(&self.id);
            }
        }
    }
}

enum Cmd {
    Open(oneshot::Sender<yamux::Stream>),
    /// A control message to send on a stream of its own.
    Control(Vec<u8>),
}

enum Pending {
    Open(oneshot::Sender<yamux::Stream>),
    Control(Vec<u8>),
}

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

/// Sets the close reason unless one is set already; the first reason wins.
fn set_reason(reason: &Reason, why: ConnectionError) {
    reason.send_if_modified(|r| {
        if r.is_none() {
            *r = Some(why);
            true
        } else {
            false
        }
    });
}

fn lost(reason: &Reason) -> ConnectionError {
    reason.borrow().clone().unwrap_or(ConnectionError::Reset)
}

/// Where the driver sends what arrives.
#[derive(Clone)]
struct Routes {
    accept: mpsc::Sender<(yamux::Stream, Arc<Signals>)>,
    reason: Reason,
    registry: Registry,
    /// Operation streams the peer may have open at once.
    max_streams: usize,
}

/// Owns the yamux connection: opens streams asked for, hands out streams the peer opens,
/// and closes when asked or when every handle is gone.
async fn drive(
    mut conn: yamux::Connection<Io>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    routes: Routes,
) {
    let reason = routes.reason.clone();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let (shutdown_tx, mut shutdown_rx) = mpsc::unbounded_channel::<()>();
    let mut closing = false;
    let outcome = poll_fn(|cx| {
        if !closing {
            loop {
                match cmds.poll_recv(cx) {
                    Poll::Ready(Some(Cmd::Open(tx))) => pending.push_back(Pending::Open(tx)),
                    Poll::Ready(Some(Cmd::Control(msg))) => {
                        pending.push_back(Pending::Control(msg));
                    }
                    // Every handle is gone: nobody can use the connection any more.
                    Poll::Ready(None) => {
                        set_reason(&reason, ConnectionError::LocallyClosed);
                        closing = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if shutdown_rx.poll_recv(cx).is_ready() {
                closing = true;
            }
        }
        if closing {
            return conn.poll_close(cx);
        }
        while !pending.is_empty() {
            match conn.poll_new_outbound(cx) {
                Poll::Ready(Ok(stream)) => match pending.pop_front() {
                    Some(Pending::Open(tx)) => {
                        // The opener may have given up meanwhile: the stream is dropped.
                        let _ = tx.send(stream);
                    }
                    Some(Pending::Control(msg)) => {
                        tokio::spawn(send_control(stream, msg, shutdown_tx.clone()));
                    }
                    None => {}
                },
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        loop {
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    tokio::spawn(classify(stream, routes.clone(), shutdown_tx.clone()));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    let why = match outcome {
        // The peer hung up without a close message (or after ours).
        Ok(()) => ConnectionError::Reset,
        Err(yamux::ConnectionError::Io(e)) => io_reason(&e),
        Err(_) => ConnectionError::Reset,
    };
    set_reason(&reason, why);
}

/// What an I/O error on the connection means: a timeout, a TLS alert (the peer refused our
/// certificate, say: kept with its text, as QUIC reports it), or a reset.
fn io_reason(e: &io::Error) -> ConnectionError {
    if e.kind() == io::ErrorKind::TimedOut {
        return ConnectionError::TimedOut;
    }
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => {
            let alert = match tls {
                rustls::Error::AlertReceived(alert) => u8::from(*alert),
                // internal_error
                _ => 80,
            };
            ConnectionError::ConnectionClosed(quinn::ConnectionClose {
                error_code: quinn::TransportErrorCode::crypto(alert),
                frame_type: None,
                reason: Bytes::from(tls.to_string()),
            })
        }
        None => ConnectionError::Reset,
    }
}

/// Writes a control message on its own stream. After a close message, waits a little for
/// the peer to hang up before closing the connection ourselves.
async fn send_control(
    mut stream: yamux::Stream,
    msg: Vec<u8>,
    shutdown: mpsc::UnboundedSender<()>,
) {
    let closing = msg.first() == Some(&KIND_CLOSE);
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        let _ = stream.write_all(&msg).await;
        let _ = stream.close().await;
        if closing {
            // The peer closes the connection once it has read the message.
            let mut rest = [0u8; 1];
            let _ = stream.read(&mut rest).await;
        }
    })
    .await;
    if closing {
        let _ = shutdown.send(());
    }
}

/// A stop or reset message for stream `id`.
fn stream_signal(kind: u8, id: u32, code: u32) -> Vec<u8> {
    let mut msg = Vec::with_capacity(9);
    msg.push(kind);
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&code.to_be_bytes());
    msg
}

/// Reads a new inbound stream's kind byte and routes it.
async fn classify(mut stream: yamux::Stream, routes: Routes, shutdown: mpsc::UnboundedSender<()>) {
    let mut kind = [0u8; 1];
    if stream.read_exact(&mut kind).await.is_err() {
        return;
    }
    let reason = &routes.reason;
    match kind[0] {
        KIND_BI => {
            let open = routes
                .registry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len();
            if open >= routes.max_streams {
                // Over the limit. QUIC would make the peer wait for a stream credit; yamux
                // cannot, so the stream is refused: dropping it resets it.
                return;
            }
            // Registered before it is accepted: a reset may come before the accept.
            let signals = Signals::register(&routes.registry, stream.id().val());
            // Full queue: the peer opens faster than the gateway accepts; it waits (yamux
            // bounds the streams it may open).
            let _ = routes.accept.send((stream, signals)).await;
        }
        kind @ (KIND_STOP | KIND_RESET) => {
            let mut msg = [0u8; 8];
            if stream.read_exact(&mut msg).await.is_err() {
                return;
            }
            let id = u32::from_be_bytes([msg[0], msg[1], msg[2], msg[3]]);
            let code = u32::from_be_bytes([msg[4], msg[5], msg[6], msg[7]]);
            let signals = routes
                .registry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&id)
                .and_then(Weak::upgrade);
            // Unknown: the stream is already gone here, nothing to tell.
            if let Some(signals) = signals {
                let target = if kind == KIND_STOP {
                    &signals.stopped
                } else {
                    &signals.reset
                };
                target.send_replace(Some(code));
            }
        }
        KIND_CLOSE => {
            let mut msg = Vec::new();
            let _ = (&mut stream)
                .take((4 + MAX_REASON) as u64)
                .read_to_end(&mut msg)
                .await;
            if msg.len() >= 4 {
                let code = u32::from_be_bytes([msg[0], msg[1], msg[2], msg[3]]);
                set_reason(
                    reason,
                    ConnectionError::ApplicationClosed(ApplicationClose {
                        error_code: VarInt::from_u32(code),
                        reason: Bytes::copy_from_slice(&msg[4..]),
                    }),
                );
            }
            let _ = shutdown.send(());
        }
        // Not ours: dropping the stream resets it.
        _ => {}
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

    pub(crate) fn close_reason(&self) -> Option<ConnectionError> {
        self.inner.reason.borrow().clone()
    }

    pub(crate) fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.inner.peer_certs.clone()
    }

    pub(crate) fn close(&self, code: u32, why: &[u8]) {
        if self.close_reason().is_some() {
            return;
        }
        set_reason(&self.inner.reason, ConnectionError::LocallyClosed);
        let mut msg = Vec::with_capacity(5 + why.len().min(MAX_REASON));
        msg.push(KIND_CLOSE);
        msg.extend_from_slice(&code.to_be_bytes());
        msg.extend_from_slice(&why[..why.len().min(MAX_REASON)]);
        let _ = self.inner.cmds.send(Cmd::Control(msg));
    }

    pub(crate) async fn closed(&self) -> ConnectionError {
        let mut rx = self.inner.reason.subscribe();
        let why = match rx.wait_for(Option::is_some).await {
            Ok(r) => r.clone().unwrap_or(ConnectionError::Reset),
            Err(_) => ConnectionError::Reset,
        };
        why
    }

    pub(crate) async fn open_bi(&self) -> Result<(TcpSend, TcpRecv), ConnectionError> {
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
            .write_all(&[KIND_BI])
            .await
            .map_err(|_| lost(&self.inner.reason))?;
        let signals = Signals::register(&self.inner.registry, stream.id().val());
        Ok(self.halves(stream, signals))
    }

    pub(crate) async fn accept_bi(&self) -> Result<(TcpSend, TcpRecv), ConnectionError> {
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
        let (r, w) = stream.split();
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
                offset: 0,
                eof: false,
                signals,
            },
        )
    }

    /// Tells the peer about stream `id` (a stop or a reset) on a control stream.
    fn signal(&self, kind: u8, id: u32, code: u32) {
        if self.close_reason().is_none() {
            let _ = self
                .inner
                .cmds
                .send(Cmd::Control(stream_signal(kind, id, code)));
        }
    }

    fn write_error(&self) -> WriteError {
        match self.close_reason() {
            Some(why) => WriteError::ConnectionLost(why),
            // The stream is gone but the connection lives: the peer dropped its end.
            None => WriteError::Stopped(VarInt::from_u32(0)),
        }
    }
}

/// The sending half of a TCP operation stream.
#[derive(Debug)]
pub(crate) struct TcpSend {
    conn: TcpConnection,
    w: Option<WriteHalf<yamux::Stream>>,
    /// Becomes true once `finish` has flushed the end of the stream.
    finished: watch::Sender<bool>,
    signals: Arc<Signals>,
}

impl TcpSend {
    pub(crate) async fn write(&mut self, data: &[u8]) -> Result<(), WriteError> {
        let mut stopped = self.signals.stopped.subscribe();
        if let Some(code) = *stopped.borrow() {
            return Err(WriteError::Stopped(VarInt::from_u32(code)));
        }
        let Some(w) = self.w.as_mut() else {
            return Err(WriteError::ClosedStream);
        };
        // A write blocked on a full window must still see the peer's stop.
        tokio::select! {
            biased;
            written = w.write_all(data) => written.map_err(|_| self.conn.write_error()),
            code = stopped.wait_for(Option::is_some) => Err(match code.ok().and_then(|c| *c) {
                Some(code) => WriteError::Stopped(VarInt::from_u32(code)),
                None => self.conn.write_error(),
            }),
        }
    }

    pub(crate) fn finish(&mut self) {
        let Some(mut w) = self.w.take() else {
            return;
        };
        let done = self.finished.clone();
        // quinn's finish does not wait; neither does this one (the FIN is flushed behind).
        tokio::spawn(async move {
            let _ = w.close().await;
            done.send_replace(true);
        });
    }

    /// Abandons the stream: the peer's reads fail with `Reset(code)`.
    pub(crate) fn reset(&mut self, code: u32) {
        if self.w.take().is_some() {
            self.conn.signal(KIND_RESET, self.signals.id, code);
        }
    }

    /// Resolves when the peer stopped the stream (`Some(code)`) or once a `finish` has
    /// flushed the end of the stream (`None`).
    pub(crate) async fn stopped(&self) -> Option<u32> {
        let mut finished = self.finished.subscribe();
        let mut stopped = self.signals.stopped.subscribe();
        tokio::select! {
            _ = finished.wait_for(|done| *done) => None,
            code = stopped.wait_for(Option::is_some) => code.ok().and_then(|c| *c),
        }
    }
}

/// The receiving half of a TCP operation stream.
#[derive(Debug)]
pub(crate) struct TcpRecv {
    conn: TcpConnection,
    r: Option<ReadHalf<yamux::Stream>>,
    offset: u64,
    eof: bool,
    signals: Arc<Signals>,
}

impl Drop for TcpRecv {
    fn drop(&mut self) {
        // As quinn does for a receive stream dropped before its end: tell the sender (code 0)
        // so a writer blocked on a full window is released.
        if !self.eof {
            self.stop(0);
        }
    }
}

impl TcpRecv {
    pub(crate) async fn read_chunk(&mut self, max: usize) -> Result<Option<Chunk>, ReadError> {
        let mut reset = self.signals.reset.subscribe();
        let Some(r) = self.r.as_mut() else {
            return Err(ReadError::ClosedStream);
        };
        let mut buf = BytesMut::zeroed(max.clamp(1, 64 * 1024));
        let read = tokio::select! {
            biased;
            read = r.read(&mut buf) => read,
            code = reset.wait_for(Option::is_some) => {
                let code = code.ok().and_then(|c| *c).unwrap_or(0);
                return Err(ReadError::Reset(VarInt::from_u32(code)));
            }
        };
        let reset_code = *reset.borrow();
        match read {
            // The end of the stream, unless the peer reset it (its message may still be on
            // its way; it was sent after the data, so it is here or close behind).
            Ok(0) => match reset_code {
                Some(code) => Err(ReadError::Reset(VarInt::from_u32(code))),
                None => {
                    // yamux ends every stream of a failed connection as if it had finished;
                    // the driver records the failure as it happens, so check it (after
                    // letting the driver run) to report a lost connection, not a short
                    // stream. An orderly close by the peer keeps the clean end.
                    tokio::task::yield_now().await;
                    match self.conn.close_reason() {
                        Some(
                            why @ (ConnectionError::Reset
                            | ConnectionError::TimedOut
                            | ConnectionError::ConnectionClosed(_)),
                        ) => Err(ReadError::ConnectionLost(why)),
                        _ => {
                            self.eof = true;
                            Ok(None)
                        }
                    }
                }
            },
            Ok(n) => {
                buf.truncate(n);
                let offset = self.offset;
                self.offset += n as u64;
                Ok(Some(Chunk {
                    offset,
                    bytes: buf.freeze(),
                }))
            }
            Err(_) => Err(ReadError::ConnectionLost(
                self.conn.close_reason().unwrap_or(ConnectionError::Reset),
            )),
        }
    }

    /// Stops reading: the peer's writes fail with `Stopped(code)`; what still arrives is
    /// dropped.
    pub(crate) fn stop(&mut self, code: u32) {
        if self.r.take().is_some() {
            self.conn.signal(KIND_STOP, self.signals.id, code);
        }
    }
}
