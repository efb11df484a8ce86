//! The two transports behind one connection type: QUIC (quinn) and TLS 1.3 over TCP with
//! operations multiplexed by yamux.
//!
//! Everything above this module speaks the crate's own vocabulary (`error.rs`): stream
//! errors, [`Disconnect`], and [`ErrorCode`]s for stops and resets. quinn's errors are
//! translated there; the TCP side makes ours directly, stream stops and resets with their
//! codes included. What TCP cannot do is spelled out on each method: no 0-RTT, no datagrams
//! or unidirectional streams, no per-stream priorities, and one lost packet delays every
//! stream behind it.

mod error;
pub(crate) mod tcp;

pub use self::error::Disconnect;
pub(crate) use self::error::{quic_code, DatagramError, ReadError, WriteError};

use std::{future::Future, net::SocketAddr, time::Duration};

use bytes::Bytes;
use quicswarm_proto::ErrorCode;
use rustls::pki_types::CertificateDer;

/// Which transport a connection runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    /// QUIC over UDP: the default.
    Quic,
    /// TLS 1.3 over one TCP connection, operations multiplexed by yamux. For networks that
    /// block UDP, and for comparisons. Dialled as `tcp://host:port`.
    Tcp,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Quic => "quic",
            Self::Tcp => "tcp",
        })
    }
}

/// One handler/client connection, over QUIC or TLS-over-TCP. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Connection(Conn);

#[derive(Debug, Clone)]
enum Conn {
    Quic(quinn::Connection),
    Tcp(tcp::TcpConnection),
}

impl From<quinn::Connection> for Connection {
    fn from(c: quinn::Connection) -> Self {
        Self(Conn::Quic(c))
    }
}

impl From<tcp::TcpConnection> for Connection {
    fn from(c: tcp::TcpConnection) -> Self {
        Self(Conn::Tcp(c))
    }
}

impl Connection {
    /// The transport.
    pub fn kind(&self) -> TransportKind {
        match &self.0 {
            Conn::Quic(_) => TransportKind::Quic,
            Conn::Tcp(_) => TransportKind::Tcp,
        }
    }

    /// The QUIC connection, for raw streams, statistics and tools; `None` over TCP.
    pub fn quic(&self) -> Option<&quinn::Connection> {
        match &self.0 {
            Conn::Quic(c) => Some(c),
            Conn::Tcp(_) => None,
        }
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        match &self.0 {
            Conn::Quic(c) => c.remote_address(),
            Conn::Tcp(c) => c.remote_address(),
        }
    }

    /// Why the connection ended, or `None` while it is alive.
    pub fn close_reason(&self) -> Option<Disconnect> {
        match &self.0 {
            Conn::Quic(c) => c.close_reason().map(Disconnect::from),
            Conn::Tcp(c) => c.close_reason(),
        }
    }

    /// The smoothed round-trip time. Over TCP: zero (the kernel's estimate is not read).
    pub fn rtt(&self) -> Duration {
        match &self.0 {
            Conn::Quic(c) => c.rtt(),
            Conn::Tcp(_) => Duration::ZERO,
        }
    }

    /// The lowest round-trip time seen on the path. Over TCP: zero.
    pub(crate) fn min_rtt(&self) -> Duration {
        self.stats().map_or(Duration::ZERO, |s| s.path.min_rtt)
    }

    /// QUIC statistics; `None` over TCP.
    pub(crate) fn stats(&self) -> Option<quinn::ConnectionStats> {
        self.quic().map(quinn::Connection::stats)
    }

    /// Bytes sent and received on a TCP connection's socket; `None` over QUIC.
    pub(crate) fn tcp_bytes(&self) -> Option<(u64, u64)> {
        match &self.0 {
            Conn::Quic(_) => None,
            Conn::Tcp(c) => Some(c.bytes()),
        }
    }

    /// Closes the connection at once with an application `code` and `reason`; the peer sees
    /// them (over TCP too: they travel on a stream of their own before the TCP close).
    pub fn close(&self, code: u32, reason: &[u8]) {
        match &self.0 {
            Conn::Quic(c) => c.close(quinn::VarInt::from_u32(code), reason),
            Conn::Tcp(c) => c.close(code, reason),
        }
    }

    /// Waits until the connection ends; returns why.
    pub async fn closed(&self) -> Disconnect {
        match &self.0 {
            Conn::Quic(c) => c.closed().await.into(),
            Conn::Tcp(c) => c.closed().await,
        }
    }

    pub(crate) async fn open_bi(&self) -> Result<(SendStream, RecvStream), Disconnect> {
        match &self.0 {
            Conn::Quic(c) => {
                let (s, r) = c.open_bi().await?;
                Ok((SendInner::Quic(s).into(), RecvInner::Quic(r).into()))
            }
            Conn::Tcp(c) => {
                let (s, r) = c.open_bi().await?;
                Ok((SendInner::Tcp(s).into(), RecvInner::Tcp(r).into()))
            }
        }
    }

    pub(crate) async fn accept_bi(&self) -> Result<(SendStream, RecvStream), Disconnect> {
        match &self.0 {
            Conn::Quic(c) => {
                let (s, r) = c.accept_bi().await?;
                Ok((SendInner::Quic(s).into(), RecvInner::Quic(r).into()))
            }
            Conn::Tcp(c) => {
                let (s, r) = c.accept_bi().await?;
                Ok((SendInner::Tcp(s).into(), RecvInner::Tcp(r).into()))
            }
        }
    }

    /// A unidirectional stream (latest-value delivery). `None` over TCP, where the gateway
    /// refuses those subscriptions up front.
    pub(crate) async fn open_uni(&self) -> Option<Result<SendStream, Disconnect>> {
        match &self.0 {
            Conn::Quic(c) => Some(
                c.open_uni()
                    .await
                    .map(|s| SendInner::Quic(s).into())
                    .map_err(Disconnect::from),
            ),
            Conn::Tcp(_) => None,
        }
    }

    /// The next unidirectional stream; over TCP, none ever comes: waits for the end.
    pub(crate) async fn accept_uni(&self) -> Result<RecvStream, Disconnect> {
        match &self.0 {
            Conn::Quic(c) => Ok(RecvInner::Quic(c.accept_uni().await?).into()),
            Conn::Tcp(c) => Err(c.closed().await),
        }
    }

    /// The next datagram; over TCP, none ever comes: waits for the end.
    pub(crate) async fn read_datagram(&self) -> Result<Bytes, Disconnect> {
        match &self.0 {
            Conn::Quic(c) => Ok(c.read_datagram().await?),
            Conn::Tcp(c) => Err(c.closed().await),
        }
    }

    pub(crate) fn send_datagram(&self, data: Bytes) -> Result<(), DatagramError> {
        match &self.0 {
            Conn::Quic(c) => Ok(c.send_datagram(data)?),
            Conn::Tcp(_) => Err(DatagramError::Unsupported),
        }
    }

    /// Sends a datagram, waiting for room in the send queue instead of dropping the oldest.
    pub(crate) async fn send_datagram_wait(&self, data: Bytes) -> Result<(), DatagramError> {
        match &self.0 {
            Conn::Quic(c) => Ok(c.send_datagram_wait(data).await?),
            Conn::Tcp(_) => Err(DatagramError::Unsupported),
        }
    }

    /// Bytes of datagrams queued for sending and not yet in packets.
    pub(crate) fn datagrams_queued(&self) -> usize {
        match &self.0 {
            Conn::Quic(c) => DATAGRAM_SEND_BUFFER.saturating_sub(c.datagram_send_buffer_space()),
            Conn::Tcp(_) => 0,
        }
    }

    pub(crate) fn max_datagram_size(&self) -> Option<usize> {
        match &self.0 {
            Conn::Quic(c) => c.max_datagram_size(),
            Conn::Tcp(_) => None,
        }
    }

    /// The certificate chain the peer presented (mutual TLS).
    pub(crate) fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        match &self.0 {
            Conn::Quic(c) => c
                .peer_identity()?
                .downcast::<Vec<CertificateDer<'static>>>()
                .ok()
                .map(|b| *b),
            Conn::Tcp(c) => c.peer_certificates(),
        }
    }
}

/// Bytes of datagrams quinn queues for sending (its default, set explicitly in the transport
/// config so the queue's fill can be told from its free space: `Fec` delivery paces by it).
pub(crate) const DATAGRAM_SEND_BUFFER: usize = 1 << 20;

/// The sending half of an operation's stream.
#[derive(Debug)]
pub(crate) struct SendStream {
    inner: SendInner,
    /// A write that cannot proceed for this long fails, and the stream is reset with
    /// `Timeout` (the gateway's defence against clients that stop reading).
    stall: Option<Duration>,
    /// The error code of the last error reply written ([`crate::io::Frame`]): how the
    /// gateway's operation metrics learn an answer's result without every writer saying so.
    answered: Option<ErrorCode>,
    /// Bytes handed to the transport so far.
    written: u64,
}

#[derive(Debug)]
enum SendInner {
    Quic(quinn::SendStream),
    Tcp(tcp::TcpSend),
}

impl From<SendInner> for SendStream {
    fn from(inner: SendInner) -> Self {
        Self {
            inner,
            stall: None,
            answered: None,
            written: 0,
        }
    }
}

/// Bytes written to a TLS-over-TCP stream per wait bounded by the stall timeout.
const TCP_PIECE: usize = 64 * 1024;

/// Runs `fut`, giving up after `stall` (if any): `None` when it gave up. A plain function
/// returning the future: as an `async fn` it held `fut` twice (argument and awaitee).
fn within_stall<F: Future>(stall: Option<Duration>, fut: F) -> crate::deadline::Lazy<F> {
    crate::deadline::within(stall, fut)
}

impl SendStream {
    /// Sets the stall timeout of writes (see [`crate::Limits::stall_timeout`]).
    pub(crate) fn set_stall_timeout(&mut self, stall: Option<Duration>) {
        self.stall = stall;
    }

    /// Notes that an error reply with `code` was written on this stream.
    pub(crate) fn note_error(&mut self, code: ErrorCode) {
        self.answered = Some(code);
    }

    /// The code of the last error reply written on this stream, if any.
    pub(crate) fn answered_error(&self) -> Option<ErrorCode> {
        self.answered
    }

    /// The peer read nothing for the stall timeout: give up on the stream.
    fn stalled(&mut self) -> WriteError {
        let _ = self.reset(ErrorCode::Timeout);
        WriteError::Stalled(self.stall.unwrap_or_default())
    }

    /// Bytes handed to the transport on this stream so far (whether or not they have left).
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// A write of `len` bytes ended as `written` (`None`: it stalled); counted if it took.
    fn handed(
        &mut self,
        len: u64,
        written: Option<Result<(), WriteError>>,
    ) -> Result<(), WriteError> {
        match written {
            Some(Ok(())) => {
                self.written += len;
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Err(self.stalled()),
        }
    }

    pub(crate) async fn write_chunk(&mut self, data: Bytes) -> Result<(), WriteError> {
        self.write_all_chunks(&mut [data]).await
    }

    /// Writes all of `data`. The stall timeout bounds each wait for the peer to take more,
    /// not the whole write: a big write to a slow reader goes on while it keeps moving.
    pub(crate) async fn write_all_chunks(&mut self, data: &mut [Bytes]) -> Result<(), WriteError> {
        let len = data.iter().map(|b| b.len() as u64).sum::<u64>();
        let stall = self.stall;
        let written = match &mut self.inner {
            SendInner::Quic(s) => {
                let mut rest = data;
                loop {
                    // Fully written chunks are left empty: skip them.
                    let done = rest.iter().take_while(|b| b.is_empty()).count();
                    rest = &mut rest[done..];
                    if rest.is_empty() {
                        break Some(Ok(()));
                    }
                    match within_stall(stall, s.write_chunks(rest)).await {
                        Some(Ok(w)) => rest = &mut rest[w.chunks..],
                        Some(Err(e)) => break Some(Err(e.into())),
                        None => break None,
                    }
                }
            }
            SendInner::Tcp(s) => {
                let mut out = Some(Ok(()));
                for piece in data.iter().flat_map(|chunk| chunk.chunks(TCP_PIECE)) {
                    out = within_stall(stall, s.write(piece)).await;
                    if !matches!(out, Some(Ok(()))) {
                        break;
                    }
                }
                out
            }
        };
        self.handed(len, written)
    }

    /// Ends the stream after what was written. `ClosedStream` if it was already finished
    /// or reset.
    pub(crate) fn finish(&mut self) -> Result<(), WriteError> {
        match &mut self.inner {
            SendInner::Quic(s) => s.finish().map_err(|_| WriteError::ClosedStream),
            SendInner::Tcp(s) => s.finish(),
        }
    }

    /// Abandons the stream; the peer's reads fail with `code`. `ClosedStream` if it was
    /// already finished or reset.
    pub(crate) fn reset(&mut self, code: ErrorCode) -> Result<(), WriteError> {
        match &mut self.inner {
            SendInner::Quic(s) => s
                .reset(quic_code(code))
                .map_err(|_| WriteError::ClosedStream),
            SendInner::Tcp(s) => s.reset(code),
        }
    }

    /// Resolves when the peer stopped the stream (`Some(code)`) or, after `finish`, has
    /// everything (over TCP: once the end is flushed to the kernel).
    pub(crate) async fn stopped(&self) -> Result<Option<ErrorCode>, WriteError> {
        match &self.inner {
            SendInner::Quic(s) => Ok(s
                .stopped()
                .await?
                .map(|code| ErrorCode::from_wire(code.into_inner()))),
            SendInner::Tcp(s) => Ok(s.stopped().await),
        }
    }

    /// The stream's priority; TCP has none (one byte stream carries everything in order).
    pub(crate) fn set_priority(&self, priority: i32) {
        if let SendInner::Quic(s) = &self.inner {
            let _ = s.set_priority(priority);
        }
    }
}

/// The receiving half of an operation's stream.
#[derive(Debug)]
pub(crate) struct RecvStream {
    inner: RecvInner,
    /// A read that gets nothing for this long fails, and the peer is told to stop with
    /// `Timeout` (the gateway's defence against clients that send too slowly).
    stall: Option<Duration>,
}

#[derive(Debug)]
enum RecvInner {
    Quic(quinn::RecvStream),
    Tcp(tcp::TcpRecv),
}

impl From<RecvInner> for RecvStream {
    fn from(inner: RecvInner) -> Self {
        Self { inner, stall: None }
    }
}

impl RecvStream {
    /// Sets the stall timeout of reads (see [`crate::Limits::stall_timeout`]).
    pub(crate) fn set_stall_timeout(&mut self, stall: Option<Duration>) {
        self.stall = stall;
    }

    /// Nothing arrived for the stall timeout: give up on the stream.
    fn stalled(&mut self) -> ReadError {
        self.stop(ErrorCode::Timeout);
        ReadError::Stalled(self.stall.unwrap_or_default())
    }

    async fn read_chunk_now(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        match &mut self.inner {
            RecvInner::Quic(r) => Ok(r.read_chunk(max, true).await?.map(|c| c.bytes)),
            RecvInner::Tcp(r) => r.read_chunk(max).await,
        }
    }

    /// The next bytes in order, at most `max`; `None` at the end of the stream.
    pub(crate) async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        let stall = self.stall;
        match within_stall(stall, self.read_chunk_now(max)).await {
            Some(read) => read,
            None => Err(self.stalled()),
        }
    }

    /// Whether the stream has ended, without waiting (and without the stall timer, so it
    /// may run in `Drop`).
    pub(crate) fn ended_now(&mut self) -> bool {
        use futures_util::FutureExt;
        matches!(self.read_chunk_now(1).now_or_never(), Some(Ok(None)))
    }

    pub(crate) async fn read_chunks(
        &mut self,
        bufs: &mut [Bytes],
    ) -> Result<Option<usize>, ReadError> {
        let read = within_stall(self.stall, async {
            match &mut self.inner {
                RecvInner::Quic(r) => Ok(r.read_chunks(bufs).await?),
                RecvInner::Tcp(r) => {
                    let Some(slot) = bufs.first_mut() else {
                        return Ok(Some(0));
                    };
                    Ok(r.read_chunk(64 * 1024).await?.map(|chunk| {
                        *slot = chunk;
                        1
                    }))
                }
            }
        })
        .await;
        match read {
            Some(read) => read,
            None => Err(self.stalled()),
        }
    }

    /// Asks the peer to stop sending; what still arrives is dropped.
    pub(crate) fn stop(&mut self, code: ErrorCode) {
        match &mut self.inner {
            RecvInner::Quic(r) => {
                let _ = r.stop(quic_code(code));
            }
            RecvInner::Tcp(r) => r.stop(code),
        }
    }

    pub(crate) fn is_0rtt(&self) -> bool {
        match &self.inner {
            RecvInner::Quic(r) => r.is_0rtt(),
            RecvInner::Tcp(_) => false,
        }
    }
}
