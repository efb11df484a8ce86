//! The client side of a handler/client pair: every operation is its own QUIC stream.
//!
//! `mod.rs` has the operations, each a few lines on `request.rs`'s one request function;
//! `send.rs` the sink operations, which stream a body; `inner.rs` what the client's clones
//! share; `args.rs` how arguments travel; `items.rs` the
//! items of a subscription.

mod args;
mod deadlines;
mod inner;
mod items;
mod request;
mod send;

pub use self::{
    args::{Json, ToArgs},
    items::{ItemStream, StreamOutcome},
};
pub(crate) use self::{inner::ClientInner, request::Body};

use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use bytes::Bytes;
use quicswarm_proto::{self as proto, ErrorCode, Request, Response, SubroutineInfo};

use crate::{
    config::ControllerConfig,
    error::CallError,
    io::FrameReader,
    subscribe::{Delivery, RoutedState, SubscribeOptions, FEC_PERCENT},
};

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

    /// Waits for the handshake (see [`ClientInner::confirmed`]); returns at once unless the
    /// connection was made with 0-RTT and the handshake is still under way. A connection lost
    /// meanwhile also ends the wait.
    pub(crate) async fn inner_confirmed(&self) {
        if self.inner.is_confirmed() {
            return;
        }
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

    /// Measures one round trip on a new stream.
    ///
    /// # Errors
    /// [`CallError::ConnectionLost`], [`CallError::Timeout`].
    pub async fn ping(&self) -> Result<Duration, CallError> {
        let nonce = self.inner.nonce.fetch_add(1, Ordering::Relaxed);
        self.rpc(&Request::Ping { nonce }, |response, _, sent| async move {
            match response {
                Response::Pong { nonce: n } if n == nonce => Ok(sent.elapsed()),
                other => Err(CallError::Protocol(format!(
                    "expected Pong({nonce}), got {other:?}"
                ))),
            }
        })
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
        self.call_with(name, args, None).await
    }

    /// Like [`call`](Self::call), sent again on a stream of its own when no answer has come
    /// `after` the first sending; the first answer wins and the other stream is reset (a
    /// sending that has not reached the gateway then never runs; one already running runs on
    /// to its end or the call's deadline, its answer dropped). A lost packet then costs
    /// `after` and a round trip instead of QUIC's probe timeout, which on a jittery Wi-Fi
    /// link is several round trips. Keep `after` above zero (a few milliseconds at least):
    /// two copies sent at once often share one packet and are lost together.
    ///
    /// Measured on the emulated robot Wi-Fi (`tcp-vs-quic`, rpc workload, L2: 20 ± 10 ms,
    /// 1% loss; one run): call p99 69 ms plain, 44 ms hedged after 25 ms (9% more packets:
    /// only the slow calls go twice), 27 ms hedged after 5 ms (nearly every call goes twice).
    /// Hedged after 0 ms, another run gave p99 29 ms but p99.9 64 ms, against 32 after 5.
    ///
    /// Only for subroutines the gateway registered replay-safe
    /// ([`Registry::set_replay_safe`](crate::Registry::set_replay_safe)): a hedged call may
    /// run twice.
    ///
    /// ```no_run
    /// # async fn pose(client: quicswarm::Client) -> Result<(), quicswarm::CallError> {
    /// use std::time::Duration;
    ///
    /// // A query that may run twice: hedge it after 5 ms.
    /// let pose = client.call_hedged("get_pose", &(), Duration::from_millis(5)).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`CallError::BadArgs`] when this client does not know `name` as replay-safe (from the
    /// gateway's list when it connected); otherwise as [`call`](Self::call).
    pub async fn call_hedged(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
        after: Duration,
    ) -> Result<Bytes, CallError> {
        if self.inner.replay_safe(name) != Some(true) {
            return Err(CallError::BadArgs(format!(
                "{name:?} is not a replay-safe subroutine of this gateway: a hedged call may \
                 run twice"
            )));
        }
        self.call_with(name, args, Some(after)).await
    }

    /// A call, hedged after `hedge` when given.
    async fn call_with(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
        hedge: Option<Duration>,
    ) -> Result<Bytes, CallError> {
        let request = Request::Call {
            name: name.into(),
            args: args.to_args()?,
            deadline_ms: self.deadline_ms(),
        };
        let max = self.inner.config.max_frame_len as u64 * 64;
        self.rpc_hedged(&request, hedge, |response, mut reader, _| async move {
            match response {
                Response::Value { len } => {
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
        })
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
        let mut routed = match options.delivery {
            Delivery::Reliable => None,
            _ => {
                let registered = self.inner.router.register(&self.inner.conn, max_item);
                let router = self.inner.router.clone();
                Some(RoutedState::new(registered, router, options, max_item))
            }
        };
        let delivery = match (options.delivery, &routed) {
            (Delivery::Latest, Some(r)) => proto::Delivery::Latest { id: r.id },
            (Delivery::Datagram, Some(r)) => proto::Delivery::Datagram { id: r.id },
            (Delivery::Unordered, Some(r)) => proto::Delivery::Unordered { id: r.id },
            (Delivery::Redundant, Some(r)) => proto::Delivery::Redundant { id: r.id },
            (Delivery::Fec, Some(r)) => proto::Delivery::Fec {
                id: r.id,
                percent: options.fec_percent.unwrap_or(FEC_PERCENT),
            },
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
        let accepted = |response| match response {
            Response::Accepted => Ok(()),
            other => Err(CallError::Protocol(format!(
                "expected Accepted, got {other:?}"
            ))),
        };
        let reader = match routed.as_mut() {
            // `Fec`: the stream's sending side stays open for the client's reports.
            Some(r) if r.fec.is_some() => {
                let (response, reader, send) = self.rpc_open(&request).await?;
                accepted(response)?;
                let (tx, rx) = tokio::sync::mpsc::channel(crate::subscribe::REPORTS);
                r.reports = Some(tx);
                tokio::spawn(crate::subscribe::send_reports(send, rx));
                reader
            }
            _ => {
                self.rpc(&request, |response, reader, _| async move {
                    accepted(response).map(|()| reader)
                })
                .await?
            }
        };
        Ok(ItemStream::new(
            reader,
            max_item,
            routed,
            self.inner.clone(),
        ))
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

    /// Releases this handler's slot on the gateway and closes the connection (the seed's
    /// `close_handler`).
    ///
    /// # Errors
    /// If the gateway could not be told (the slot is then freed by its idle timeout).
    #[doc(alias = "close_handler")]
    pub async fn close(self) -> Result<(), CallError> {
        let result = self.rpc(&Request::CloseHandler, expect_done).await;
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
        self.rpc(&Request::CloseGateway, expect_done).await
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

/// The answer to a close: `Done`.
async fn expect_done(
    response: Response,
    _: FrameReader,
    _: std::time::Instant,
) -> Result<(), CallError> {
    match response {
        Response::Done => Ok(()),
        other => Err(CallError::Protocol(format!("expected Done, got {other:?}"))),
    }
}
