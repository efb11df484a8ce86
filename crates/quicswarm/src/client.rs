//! The client side of a handler/client pair: every operation is its own QUIC stream.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::Stream;
use quicswarm_proto::{
    self as proto, Args, ErrorCode, Request, Response, StreamFrame, SubroutineInfo, Welcome,
};
use serde::Serialize;
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    sync::watch,
};

use crate::{
    config::ControllerConfig,
    error::CallError,
    io::{varint, write_frame, FrameReader},
    subscribe::{Delivery, RoutedState, Router, SubscribeOptions},
};

/// Subroutine arguments: any `Serialize` value travels as postcard; wrap text in [`Json`] to
/// send JSON that the gateway decodes into the subroutine's registered type.
pub trait ToArgs {
    /// Encodes the arguments.
    ///
    /// # Errors
    /// [`CallError::BadArgs`] if the value cannot be serialised.
    fn to_args(&self) -> Result<Args, CallError>;
}

impl<T: Serialize + ?Sized> ToArgs for T {
    fn to_args(&self) -> Result<Args, CallError> {
        postcard::to_stdvec(self)
            .map(Args::postcard)
            .map_err(|e| CallError::BadArgs(e.to_string()))
    }
}

/// JSON-encoded arguments, for dynamic callers: `client.call("add", &Json(r#"{"a":1,"b":2}"#))`.
#[derive(Debug, Clone, Copy)]
pub struct Json<S>(pub S);

impl<S: AsRef<str>> ToArgs for Json<S> {
    fn to_args(&self) -> Result<Args, CallError> {
        Ok(Args::json(self.0.as_ref()))
    }
}

pub(crate) struct ClientInner {
    conn: crate::Connection,
    router: Arc<Router>,
    /// Set when the gateway's `Welcome` arrived (at once for a full handshake; a little after
    /// the first requests with 0-RTT).
    welcome: Arc<OnceLock<Welcome>>,
    /// For a 0-RTT connection: `Some(accepted)` once the handshake completed.
    early: Option<watch::Receiver<Option<bool>>>,
    remote: SocketAddr,
    config: Arc<ControllerConfig>,
    nonce: AtomicU64,
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

    /// Whether `request` may be answered from early data, by the gateway's rule: for a
    /// subroutine, unknown until the gateway's `Welcome` arrives (then try, and re-send on
    /// `TooEarly`).
    fn may_run_early(&self, request: &Request) -> bool {
        request.replay_safe(|name| {
            self.welcome.get().is_none_or(|w| {
                w.subroutines
                    .iter()
                    .any(|s| s.name == name && s.replay_safe)
            })
        })
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

/// One handler/client pair: a QUIC connection to a gateway. Cheap to clone; every clone and
/// every [`ItemStream`] share the connection.
///
/// Operations run concurrently: each is its own QUIC stream, so a ping is answered while a
/// large stream is in flight on the same client.
///
/// # Drop behavior
/// When the last clone and the last `ItemStream` are dropped, the connection is closed at once
/// (code 0) and the gateway frees the handler slot. [`close`](Self::close) does the same
/// politely, waiting for the gateway to confirm.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("gateway", &self.inner.remote)
            .field("handler_id", &self.handler_id())
            .finish()
    }
}

impl Client {
    pub(crate) fn new(inner: ClientInner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The gateway's address.
    pub fn gateway(&self) -> SocketAddr {
        self.inner.remote
    }

    /// The gateway-assigned handler id.
    pub fn handler_id(&self) -> u64 {
        self.inner.welcome.get().map_or(0, |w| w.handler_id)
    }

    /// The gateway's handler pool: `(in use when we joined, size)`.
    pub fn pool(&self) -> (u32, u32) {
        self.inner
            .welcome
            .get()
            .map_or((0, 0), |w| (w.pool_used, w.pool_size))
    }

    /// The subroutines the gateway had registered when this client connected.
    pub fn subroutines(&self) -> &[SubroutineInfo] {
        self.inner.welcome.get().map_or(&[], |w| &w.subroutines)
    }

    /// Connection statistics now.
    ///
    /// ```no_run
    /// # fn show(client: &quicswarm::Client) {
    /// let s = client.stats();
    /// println!("rtt {:?}, lost {} packets, cwnd {} B", s.rtt, s.lost_packets, s.cwnd);
    /// # }
    /// ```
    ///
    /// Over TLS-over-TCP only the byte counts are kept (the socket's, TLS records included);
    /// the packet-level figures are not read from the kernel and stay zero.
    pub fn stats(&self) -> ClientStats {
        let Some(s) = self.inner.conn.stats() else {
            let (sent, received) = self.inner.conn.tcp_bytes().unwrap_or_default();
            return ClientStats {
                bytes_sent: sent,
                bytes_received: received,
                ..ClientStats::default()
            };
        };
        ClientStats {
            rtt: self.inner.conn.rtt(),
            lost_packets: s.path.lost_packets,
            sent_packets: s.path.sent_packets,
            congestion_events: s.path.congestion_events,
            cwnd: s.path.cwnd,
            mtu: s.path.current_mtu,
            bytes_sent: s.udp_tx.bytes,
            bytes_received: s.udp_rx.bytes,
        }
    }

    /// The transport this client runs on.
    pub fn transport(&self) -> crate::TransportKind {
        self.inner.conn.kind()
    }

    /// The underlying connection: its QUIC side ([`Connection::quic`](crate::Connection::quic))
    /// gives statistics and raw streams for tools and tests.
    pub fn connection(&self) -> &crate::Connection {
        &self.inner.conn
    }

    /// The controller configuration this client was made with.
    pub(crate) fn config(&self) -> &ControllerConfig {
        &self.inner.config
    }

    pub(crate) async fn timed<T>(
        &self,
        fut: impl Future<Output = Result<T, CallError>>,
    ) -> Result<T, CallError> {
        match self.inner.config.call_timeout {
            Some(limit) => tokio::time::timeout(limit, fut)
                .await
                .map_err(|_| CallError::Timeout(limit))?,
            None => fut.await,
        }
    }

    /// Waits for the handshake (see [`ClientInner::confirmed`]); returns at once unless the
    /// connection was made with 0-RTT and the handshake is still under way. A connection lost
    /// meanwhile also ends the wait.
    pub(crate) async fn inner_confirmed(&self) {
        tokio::select! {
            () = self.inner.confirmed() => {}
            _ = self.inner.conn.closed() => {}
        }
    }

    /// The call timeout, told to the gateway so that it cancels the subroutine when we give up.
    fn deadline_ms(&self) -> Option<u32> {
        self.inner
            .config
            .call_timeout
            .map(|t| t.as_millis().min(u128::from(u32::MAX)) as u32)
    }

    /// Runs a request that may travel as 0-RTT early data; when the gateway refuses it there
    /// (`TooEarly`) or rejects early data altogether, re-sends it once after the handshake.
    pub(crate) async fn early<T, F, Fut>(&self, mut op: F) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        match op().await {
            Err(CallError::TooEarly) => {
                self.inner.confirmed().await;
                op().await
            }
            other => other,
        }
    }

    /// Opens an operation stream and sends its request.
    pub(crate) async fn open(
        &self,
        request: &Request,
    ) -> Result<(crate::transport::SendStream, FrameReader), CallError> {
        let (mut send, recv) = self.inner.conn.open_bi().await?;
        write_frame(&mut send, request).await?;
        Ok((
            send,
            FrameReader::new(recv, self.inner.config.max_frame_len),
        ))
    }

    pub(crate) async fn response(reader: &mut FrameReader) -> Result<Response, CallError> {
        match reader.expect_frame::<Response>().await? {
            Response::Error(reply) => Err(reply.into()),
            other => Ok(other),
        }
    }

    /// Measures one round trip on a new stream.
    ///
    /// # Errors
    /// [`CallError::ConnectionLost`], [`CallError::Timeout`].
    pub async fn ping(&self) -> Result<Duration, CallError> {
        self.timed(self.early(|| async {
            let nonce = self.inner.nonce.fetch_add(1, Ordering::Relaxed);
            let start = Instant::now();
            let (mut send, mut reader) = self.open(&Request::Ping { nonce }).await?;
            let _ = send.finish();
            match Self::response(&mut reader).await? {
                Response::Pong { nonce: n } if n == nonce => Ok(start.elapsed()),
                other => Err(CallError::Protocol(format!(
                    "expected Pong({nonce}), got {other:?}"
                ))),
            }
        }))
        .await
    }

    /// Calls a *batch* subroutine and returns its bytes.
    ///
    /// # Errors
    /// Typed errors for an unknown subroutine, bad arguments, a failing or panicking
    /// subroutine, a lost connection or a timeout.
    pub async fn call(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
    ) -> Result<Bytes, CallError> {
        let request = Request::Call {
            name: name.into(),
            args: args.to_args()?,
            deadline_ms: self.deadline_ms(),
        };
        if !self.inner.may_run_early(&request) {
            self.inner.confirmed().await;
        }
        self.timed(self.early(|| async {
            let (mut send, mut reader) = self.open(&request).await?;
            let _ = send.finish();
            let mut unanswered = Unanswered(Some(send));
            let response = Self::response(&mut reader).await;
            unanswered.answered();
            match response? {
                Response::Value { len } => {
                    let max = self.inner.config.max_frame_len as u64 * 64;
                    if len > max {
                        reader.stop(ErrorCode::FrameTooLarge);
                        return Err(CallError::TooLarge(format!(
                            "result of {len} bytes exceeds {max}"
                        )));
                    }
                    Ok(reader.read_bytes(len as usize).await?)
                }
                other => Err(CallError::Protocol(format!(
                    "expected Value, got {other:?}"
                ))),
            }
        }))
        .await
    }

    /// Subscribes to a *stream* subroutine. Returns once the gateway accepted the
    /// subscription; items then arrive through the returned [`ItemStream`].
    ///
    /// # Errors
    /// As [`call`](Self::call), for the subscription itself.
    pub async fn stream(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
    ) -> Result<ItemStream, CallError> {
        self.stream_from(name, args, None).await
    }

    /// Like [`stream`](Self::stream), telling the producer the last ident already held.
    ///
    /// # Errors
    /// As [`stream`](Self::stream).
    pub async fn stream_from(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
        resume_after: Option<i64>,
    ) -> Result<ItemStream, CallError> {
        self.subscribe_from(name, args, resume_after, &SubscribeOptions::default())
            .await
    }

    /// Subscribes with a delivery mode and a priority: `Reliable` (every item, in order),
    /// `Latest` (fresh items first; late ones are superseded) or `Datagram` (small items in
    /// unreliable datagrams).
    ///
    /// ```no_run
    /// # async fn cam(client: quicswarm::Client) -> Result<(), quicswarm::CallError> {
    /// use quicswarm::{Delivery, SubscribeOptions};
    /// use std::time::Duration;
    ///
    /// let mut options = SubscribeOptions::delivery(Delivery::Latest);
    /// options.max_age = Some(Duration::from_millis(200));
    /// let mut frames = client.subscribe("camera", &(), &options).await?;
    /// while let Some((ident, jpeg)) = frames.next().await? {
    ///     // show the frame
    /// }
    /// println!("{} frames superseded", frames.superseded());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`stream`](Self::stream).
    pub async fn subscribe(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
        options: &SubscribeOptions,
    ) -> Result<ItemStream, CallError> {
        self.subscribe_from(name, args, None, options).await
    }

    /// [`subscribe`](Self::subscribe), telling the producer the last ident already held.
    ///
    /// # Errors
    /// As [`stream`](Self::stream).
    pub async fn subscribe_from(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
        resume_after: Option<i64>,
        options: &SubscribeOptions,
    ) -> Result<ItemStream, CallError> {
        if options.delivery != Delivery::Reliable && self.transport() == crate::TransportKind::Tcp {
            return Err(CallError::Unsupported(format!(
                "{:?} delivery needs QUIC (per-item streams or datagrams); use Delivery::Reliable \
                 over TCP",
                options.delivery
            )));
        }
        let args = args.to_args()?;
        let max_item = self.inner.config.max_frame_len;
        let routed = match options.delivery {
            Delivery::Reliable => None,
            delivery => {
                let (id, rx) = self.inner.router.register(&self.inner.conn, max_item);
                Some(RoutedState {
                    id,
                    rx,
                    router: self.inner.router.clone(),
                    latest: delivery == Delivery::Latest,
                    max_age: options.max_age,
                    last: None,
                    superseded: 0,
                    stale: 0,
                    delivered: Default::default(),
                    counted: Default::default(),
                    end_seen: None,
                })
            }
        };
        let delivery = match (options.delivery, &routed) {
            (Delivery::Latest, Some(r)) => proto::Delivery::Latest { id: r.id },
            (Delivery::Datagram, Some(r)) => proto::Delivery::Datagram { id: r.id },
            _ => proto::Delivery::Reliable,
        };
        let request = Request::Stream {
            name: name.into(),
            args,
            resume_after,
            options: proto::StreamOptions {
                priority: options.priority,
                delivery,
                max_age_ms: options
                    .max_age
                    .map(|a| a.as_millis().min(u128::from(u32::MAX)) as u32),
            },
        };
        if !self.inner.may_run_early(&request) {
            self.inner.confirmed().await;
        }
        let reader = self
            .timed(self.early(|| async {
                let (mut send, mut reader) = self.open(&request).await?;
                let _ = send.finish();
                match Self::response(&mut reader).await? {
                    Response::Accepted => Ok(reader),
                    other => Err(CallError::Protocol(format!(
                        "expected Accepted, got {other:?}"
                    ))),
                }
            }))
            .await?;
        Ok(ItemStream {
            reader,
            max_item,
            state: StreamState::Open,
            routed,
            pending: None,
            _client: self.inner.clone(),
        })
    }

    /// Subscribes and feeds every item to `on_item`; returning `false` from it aborts the
    /// stream (the gateway stops the producer). `on_end` is called only on a natural end.
    ///
    /// # Errors
    /// As [`stream`](Self::stream), and any error that ends the stream early.
    pub async fn stream_with(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
        mut on_item: impl FnMut(i64, Bytes) -> bool,
        on_end: impl FnOnce(),
    ) -> Result<StreamOutcome, CallError> {
        let mut stream = self.stream(name, args).await?;
        let mut items = 0u64;
        while let Some((ident, data)) = stream.next().await? {
            items += 1;
            if !on_item(ident, data) {
                stream.abort();
                return Ok(StreamOutcome {
                    items,
                    completed: false,
                });
            }
        }
        on_end();
        Ok(StreamOutcome {
            items,
            completed: true,
        })
    }

    /// Feeds `data` to a *sink* subroutine and returns its integer.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub async fn send(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
        data: impl Into<Bytes>,
    ) -> Result<i64, CallError> {
        let data = data.into();
        let args = args.to_args()?;
        let request = Request::Send {
            name: name.into(),
            args,
            len: Some(data.len() as u64),
            deadline_ms: self.deadline_ms(),
        };
        // Never replay-safe: do not spend a round trip on a refusal.
        self.inner.confirmed().await;
        self.timed(async {
            let (mut send, mut reader) = self.open(&request).await?;
            let (written, reply) = tokio::join!(
                async {
                    send.write_chunk(data).await?;
                    let _ = send.finish();
                    Ok::<_, CallError>(())
                },
                Self::response(&mut reader)
            );
            Self::sink_reply(written, reply)
        })
        .await
    }

    /// Feeds everything `reader` yields to a *sink* subroutine (a file, a pipe), streamed in
    /// chunks: the buffer never has to fit in memory. `len`, when known, is checked by the
    /// gateway.
    ///
    /// # Errors
    /// As [`send`](Self::send), plus [`CallError::Io`] if `reader` fails (the gateway's sink
    /// then sees a cancelled buffer).
    pub async fn send_reader(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
        mut reader: impl AsyncRead + Unpin,
        len: Option<u64>,
    ) -> Result<i64, CallError> {
        let args = args.to_args()?;
        let request = Request::Send {
            name: name.into(),
            args,
            len,
            deadline_ms: self.deadline_ms(),
        };
        self.inner.confirmed().await;
        self.timed(async {
            let (mut send, mut frames) = self.open(&request).await?;
            let mut write = Box::pin(async {
                let mut buf = bytes::BytesMut::with_capacity(256 * 1024);
                loop {
                    buf.reserve(256 * 1024);
                    let n = reader.read_buf(&mut buf).await.map_err(|e| {
                        let _ = send.reset(varint(ErrorCode::Cancelled));
                        CallError::Io(e.to_string())
                    })?;
                    if n == 0 {
                        break;
                    }
                    send.write_chunk(buf.split().freeze()).await?;
                }
                let _ = send.finish();
                Ok::<_, CallError>(())
            });
            let mut reply = Box::pin(Self::response(&mut frames));
            // The gateway may answer before the input ends (the sink returned early, or gave
            // up on a reader that stalled): then stop reading the input.
            let (written, reply) = tokio::select! {
                reply = &mut reply => (None, reply),
                written = &mut write => (Some(written), reply.await),
            };
            drop(write);
            let written = written.unwrap_or_else(|| {
                let _ = send.reset(varint(ErrorCode::Cancelled));
                Err(CallError::Cancelled("the gateway answered first".into()))
            });
            Self::sink_reply(written, reply)
        })
        .await
    }

    /// The gateway's answer wins over our write error: when it refuses early (unknown sink,
    /// too large) it stops our upload, and the refusal says why; when the sink returned
    /// without reading everything, its answer stands.
    fn sink_reply(
        written: Result<(), CallError>,
        reply: Result<Response, CallError>,
    ) -> Result<i64, CallError> {
        match reply {
            // The sink answered: it ran. If it returned before reading the whole buffer, the
            // gateway stopped our upload, which is no error of ours.
            Ok(Response::Count { value }) => {
                if let Err(e) = written {
                    tracing::debug!("sink answered before reading everything: {e}");
                }
                Ok(value)
            }
            Ok(other) => Err(CallError::Protocol(format!(
                "expected Count, got {other:?}"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Releases this handler's slot on the gateway and closes the connection (the seed's
    /// `close_handler`).
    ///
    /// # Errors
    /// If the gateway could not be told (the slot is then freed by its idle timeout).
    #[doc(alias = "close_handler")]
    pub async fn close(self) -> Result<(), CallError> {
        self.inner.confirmed().await;
        let result = self
            .timed(async {
                let (mut send, mut reader) = self.open(&Request::CloseHandler).await?;
                let _ = send.finish();
                match Self::response(&mut reader).await? {
                    Response::Done => Ok(()),
                    other => Err(CallError::Protocol(format!("expected Done, got {other:?}"))),
                }
            })
            .await;
        self.inner
            .conn
            .close(ErrorCode::NoError.to_u32(), b"client closed");
        result
    }

    /// Asks the gateway to shut down. Refused with [`CallError::PermissionDenied`] unless the
    /// gateway was started with `allow_close`.
    ///
    /// # Errors
    /// [`CallError::PermissionDenied`], or transport errors.
    pub async fn close_gateway(&self) -> Result<(), CallError> {
        self.inner.confirmed().await;
        self.timed(async {
            let (mut send, mut reader) = self.open(&Request::CloseGateway).await?;
            let _ = send.finish();
            match Self::response(&mut reader).await? {
                Response::Done => Ok(()),
                other => Err(CallError::Protocol(format!("expected Done, got {other:?}"))),
            }
        })
        .await
    }
}

/// A request stream awaiting its answer. Dropped before the answer (a timeout, a cancelled
/// future), it resets the stream: a command given up on must not run later, when a stalled
/// link recovers and delivers it. Over QUIC the reset also stops the retransmission of the
/// request; over TCP what the kernel already holds still goes out, with the reset after it.
struct Unanswered(Option<crate::transport::SendStream>);

impl Unanswered {
    fn answered(&mut self) {
        self.0 = None;
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(mut send) = self.0.take() {
            let _ = send.reset(varint(ErrorCode::Cancelled));
        }
    }
}

/// Per-client statistics; see [`Client::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ClientStats {
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// Packets sent.
    pub sent_packets: u64,
    /// Times the congestion controller reacted to loss.
    pub congestion_events: u64,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Current path MTU, bytes.
    pub mtu: u16,
    /// UDP bytes sent, all packets included.
    pub bytes_sent: u64,
    /// UDP bytes received.
    pub bytes_received: u64,
}

/// How [`Client::stream_with`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOutcome {
    /// Items received.
    pub items: u64,
    /// `true` for a natural end, `false` when the callback aborted.
    pub completed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Open,
    Ended,
    Failed,
}

/// Items of a stream subscription, in order.
///
/// # Drop behavior
/// Dropping an unfinished `ItemStream` aborts the subscription: the gateway is told to stop
/// (`STOP_SENDING` with `Cancelled`) and drops the producer before it yields another item.
///
/// # Cancel safety
/// [`next`](Self::next) is not cancel-safe: if its future is dropped part-way, the stream's
/// framing is lost; drop the whole `ItemStream` instead.
pub struct ItemStream {
    reader: FrameReader,
    max_item: usize,
    state: StreamState,
    /// Set for `Latest` and `Datagram` deliveries.
    routed: Option<RoutedState>,
    /// An item whose header was read and whose bytes have not all arrived: kept here so that
    /// a `next` dropped while waiting for them loses nothing.
    pending: Option<(i64, usize)>,
    _client: Arc<ClientInner>,
}

impl std::fmt::Debug for ItemStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemStream")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ItemStream {
    /// The next `(ident, bytes)` item; `None` once the producer ended naturally.
    ///
    /// # Cancel safety
    /// Cancel-safe: a `next` dropped before it completes (in `select!`, a timeout, polled
    /// once) loses no item; the next call carries on where it stood.
    ///
    /// # Errors
    /// The producer's failure or panic, a lost connection, or a protocol violation. After an
    /// error the stream is finished.
    pub async fn next(&mut self) -> Result<Option<(i64, Bytes)>, CallError> {
        if self.state != StreamState::Open {
            return Ok(None);
        }
        let result = self.read_item().await;
        match &result {
            Ok(None) => self.state = StreamState::Ended,
            Err(_) => self.state = StreamState::Failed,
            Ok(Some(_)) => {}
        }
        result
    }

    async fn read_item(&mut self) -> Result<Option<(i64, Bytes)>, CallError> {
        if let Some(routed) = &mut self.routed {
            if let Some(deadline) = routed.end_seen {
                // The end overtook items still on their way (they travel apart from it): hand
                // out what arrives until the deadline.
                while let Ok(Some(item)) = tokio::time::timeout_at(deadline, routed.rx.recv()).await
                {
                    if let Some(item) = routed.accept(item) {
                        return Ok(Some(item));
                    }
                }
                return Ok(None);
            }
            loop {
                // Items arrive beside the subscription's stream, which carries only its end.
                tokio::select! {
                    item = routed.rx.recv() => match item {
                        Some(item) => {
                            if let Some(item) = routed.accept(item) {
                                return Ok(Some(item));
                            }
                        }
                        None => return Err(CallError::Protocol("item router stopped".into())),
                    },
                    frame = self.reader.read_frame::<StreamFrame>() => match frame? {
                        Some(StreamFrame::End) => {
                            // Stragglers sent before the end get two round trips to arrive.
                            let grace = (self._client.conn.rtt() * 2).clamp(Duration::from_millis(10), Duration::from_millis(250));
                            routed.end_seen = Some(tokio::time::Instant::now() + grace);
                            return Box::pin(self.read_item()).await;
                        }
                        Some(StreamFrame::Error(reply)) => return Err(reply.into()),
                        Some(StreamFrame::Superseded { ident }) => routed.gateway_superseded(ident),
                        Some(StreamFrame::Item { .. }) => {
                            return Err(CallError::Protocol("inline item on a routed subscription".into()))
                        }
                        None => return Err(CallError::Protocol("stream ended without End".into())),
                    },
                }
            }
        }
        if let Some((ident, len)) = self.pending {
            let data = self.reader.read_bytes(len).await?;
            self.pending = None;
            return Ok(Some((ident, data)));
        }
        match self.reader.read_frame::<StreamFrame>().await? {
            Some(StreamFrame::Item { ident, len }) => {
                if len > self.max_item as u64 {
                    self.reader.stop(ErrorCode::FrameTooLarge);
                    return Err(CallError::TooLarge(format!(
                        "item of {len} bytes exceeds {}",
                        self.max_item
                    )));
                }
                // Cannot truncate: len <= max_item, a usize.
                self.pending = Some((ident, len as usize));
                let data = self.reader.read_bytes(len as usize).await?;
                self.pending = None;
                Ok(Some((ident, data)))
            }
            Some(StreamFrame::End) => Ok(None),
            Some(StreamFrame::Error(reply)) => Err(reply.into()),
            Some(StreamFrame::Superseded { .. }) => Err(CallError::Protocol(
                "superseded items on a reliable stream".into(),
            )),
            None => Err(CallError::Protocol("stream ended without End".into())),
        }
    }

    /// Items superseded so far (`Latest` delivery): cancelled in flight by a newer item, or
    /// arriving after a newer one.
    pub fn superseded(&self) -> u64 {
        self.routed.as_ref().map_or(0, |r| r.superseded)
    }

    /// Items dropped so far for being older than `max_age`.
    pub fn stale(&self) -> u64 {
        self.routed.as_ref().map_or(0, |r| r.stale)
    }

    /// Whether the producer ended naturally (as opposed to still running, failed or aborted).
    pub fn is_complete(&self) -> bool {
        self.state == StreamState::Ended
    }

    /// Aborts the subscription now (same as dropping it).
    pub fn abort(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.state == StreamState::Open {
            self.reader.stop(ErrorCode::Cancelled);
            self.state = StreamState::Failed;
        }
    }

    /// The items as a `futures` [`Stream`]; it ends after the first error.
    pub fn into_stream(self) -> impl Stream<Item = Result<(i64, Bytes), CallError>> + Send {
        futures_util::stream::unfold(self, |mut s| async move {
            match s.next().await {
                Ok(Some(item)) => Some((Ok(item), s)),
                Ok(None) => None,
                // `next` marks the stream failed, so the following poll ends it.
                Err(e) => Some((Err(e), s)),
            }
        })
    }
}

impl Drop for ItemStream {
    fn drop(&mut self) {
        self.stop();
    }
}
