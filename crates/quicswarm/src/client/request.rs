//! One request, the way every client operation makes it: the per-operation policy (may it
//! ride in 0-RTT early data, the call timeout, a reset when given up on) applied in one
//! place, as irpc's `rpc()` does. Each `Client` method is a few lines on top of [`rpc`], or
//! of [`rpc_with_body`] for the requests followed by bytes (sinks, uploads).
//!
//! [`rpc`]: Client::rpc
//! [`rpc_with_body`]: Client::rpc_with_body

use std::{
    future::Future,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use quicswarm_proto::{codec, ErrorCode, Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::Client;
use futures_util::FutureExt;

use crate::{
    error::CallError,
    io::{frame, FrameReader},
    transport::SendStream,
};

/// Whether a request's stream is reset when it is given up on before its answer (a timeout,
/// a dropped future): for commands, which must not run later, when a stalled link recovers
/// and delivers them. Whether a request may ride in early data is [`Request::replay_safe`]'s
/// rule, the gateway's own; every request is bounded by the call timeout.
fn reset_on_give_up(request: &Request) -> bool {
    // No catch-all: a new request must be placed on one side.
    match request {
        Request::Call { .. } | Request::CloseGateway => true,
        Request::Ping { .. }
        | Request::Stream { .. }
        | Request::Send { .. }
        | Request::List { .. }
        | Request::Get { .. }
        | Request::PutCheck { .. }
        | Request::Put { .. }
        | Request::CloseHandler => false,
    }
}

/// What follows a request on its stream.
pub(crate) enum Body<R> {
    /// Buffers already in memory, written without a copy.
    Chunks(Vec<Bytes>),
    /// Whatever a reader yields, in chunks of [`READ_CHUNK`]: it never has to fit in memory.
    Reader(R),
}

impl Body<tokio::io::Empty> {
    /// A body from memory.
    pub(crate) fn chunks(chunks: Vec<Bytes>) -> Self {
        Self::Chunks(chunks)
    }
}

/// How much of a [`Body::Reader`] is read per write.
const READ_CHUNK: usize = 256 * 1024;

impl Client {
    /// Sends `request` on a stream of its own and hands its first response, the rest of the
    /// stream and the moment this attempt was sent to `then`. Waits for the handshake unless
    /// the request may run from early data; re-sends once after it if the gateway refused
    /// the early attempt; bounded by the call timeout; resets the stream if given up on
    /// before the answer when the request is a command.
    pub(crate) async fn rpc<T, F, Fut>(&self, request: &Request, then: F) -> Result<T, CallError>
    where
        F: FnOnce(Response, FrameReader, Instant) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        self.rpc_hedged(request, None, then).await
    }

    /// [`rpc`](Self::rpc), with a second sending when the first has no answer after `hedge`
    /// (see [`hedged`](Self::hedged)). The caller has checked that the request may run twice.
    pub(crate) async fn rpc_hedged<T, F, Fut>(
        &self,
        request: &Request,
        hedge: Option<Duration>,
        then: F,
    ) -> Result<T, CallError>
    where
        F: FnOnce(Response, FrameReader, Instant) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        self.handshake_for(request).await;
        let reset = reset_on_give_up(request);
        self.timed(async {
            let (response, reader, sent) = match hedge {
                None => self.early(|| self.attempt(request, reset)).await?,
                // Boxed: a plain request's future stays the size it was.
                Some(after) => Box::pin(self.early(|| self.hedged(request, reset, after))).await?,
            };
            then(response, reader, sent).await
        })
        .await
    }

    /// [`rpc`](Self::rpc) for a transfer, whose answer may take long to arrive whole (files
    /// over a slow link): the call timeout bounds the wait for its first response, and then
    /// each read of the rest. A transfer that keeps moving is never cut short; one that stops
    /// moving fails with [`CallError::Timeout`] once nothing has arrived for the call timeout.
    pub(crate) async fn rpc_moving<T, F, Fut>(
        &self,
        request: &Request,
        then: F,
    ) -> Result<T, CallError>
    where
        F: FnOnce(Response, FrameReader, Instant) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        self.handshake_for(request).await;
        let reset = reset_on_give_up(request);
        let (response, mut reader, sent) = self
            .timed(self.early(|| self.attempt(request, reset)))
            .await?;
        reader.set_stall_timeout(self.inner.deadlines.limit());
        then(response, reader, sent).await
    }

    /// Waits for the handshake, unless `request` may run from early data.
    async fn handshake_for(&self, request: &Request) {
        if !self.inner.is_confirmed() && !self.inner.may_run_early(request) {
            self.inner_confirmed().await;
        }
    }

    /// Sends `request` and waits for its first response, keeping the stream's sending side
    /// open for what the client says later (a `Fec` subscription's reports). Waits for the
    /// handshake; bounded by the call timeout.
    pub(crate) async fn rpc_open(
        &self,
        request: &Request,
    ) -> Result<(Response, FrameReader, SendStream), CallError> {
        self.inner_confirmed().await;
        self.timed(async {
            let (send, mut reader) = self.open(request).await?;
            let response = Self::response(&mut reader).await?;
            Ok((response, reader, send))
        })
        .await
    }

    /// Sends `request` followed by `body`, writing the body while the answer is awaited (the
    /// gateway may refuse or answer early), and hands the answer to `then`. A body is never
    /// replay-safe: it waits for the handshake and is sent once. Bounded by the call timeout;
    /// a body given up on before its end is reset, never left to look complete.
    ///
    /// Which error wins: our reader's failure (the gateway only saw a cancelled body), then
    /// the gateway's refusal (it stopped our upload, and says why), then the answer, which
    /// stands even when the gateway stopped reading before the end (a sink that returned
    /// early).
    pub(crate) async fn rpc_with_body<T, R>(
        &self,
        request: &Request,
        body: Body<R>,
        then: impl FnOnce(Response) -> Result<T, CallError>,
    ) -> Result<T, CallError>
    where
        R: AsyncRead + Unpin,
    {
        debug_assert!(!self.inner.may_run_early(request), "a body is sent once");
        self.inner_confirmed().await;
        let reset = reset_on_give_up(request);
        self.timed(async {
            let (send, mut reader) = self.open(request).await?;
            let mut unanswered = Unanswered::new(send, reset);
            let (written, answer) = {
                let mut write = std::pin::pin!(unanswered.write(body));
                let mut answer = std::pin::pin!(Self::response(&mut reader));
                tokio::select! {
                    answer = &mut answer => (None, answer),
                    written = &mut write => (Some(written), answer.await),
                }
                // A write still pending ends here; the guard resets what it did not finish.
            };
            let written = written.unwrap_or(Err(CallError::Cancelled(
                "the gateway answered before the body's end".into(),
            )));
            match (written, answer) {
                (Err(e @ CallError::Io(_)), _) | (_, Err(e)) => Err(e),
                (written, Ok(response)) => {
                    unanswered.answered();
                    if let Err(e) = written {
                        tracing::debug!("the gateway answered before reading everything: {e}");
                    }
                    then(response)
                }
            }
        })
        .await
    }

    /// One sending of `request`, and a second one on a new stream when the first has no
    /// answer `after` it. The first answer (or error) wins; the other attempt is dropped,
    /// which resets its stream when the request is a command.
    async fn hedged(
        &self,
        request: &Request,
        reset: bool,
        after: Duration,
    ) -> Result<(Response, FrameReader, Instant), CallError> {
        let first = self.attempt(request, reset);
        tokio::pin!(first);
        tokio::select! {
            answer = &mut first => return answer,
            () = tokio::time::sleep(after) => {}
        }
        let second = self.attempt(request, reset);
        tokio::pin!(second);
        tokio::select! {
            answer = &mut first => answer,
            answer = &mut second => answer,
        }
    }

    /// One sending of `request`, up to its first response.
    async fn attempt(
        &self,
        request: &Request,
        reset: bool,
    ) -> Result<(Response, FrameReader, Instant), CallError> {
        let sent = Instant::now();
        let (mut send, mut reader) = self.open(request).await?;
        let _ = send.finish();
        let mut unanswered = Unanswered::new(send, reset);
        let response = Self::response(&mut reader).await;
        unanswered.answered();
        Ok((response?, reader, sent))
    }

    /// Bounds `fut` by the controller's call timeout (see `client/deadlines.rs`).
    ///
    /// Not an `async fn`: that would hold `fut` twice (as its argument and inside the
    /// bound), and `fut` is most of a call's future. A call's future was 3 KB, copied
    /// several times per call.
    pub(crate) fn timed<'a, T: 'a>(
        &'a self,
        fut: impl Future<Output = Result<T, CallError>> + 'a,
    ) -> impl Future<Output = Result<T, CallError>> + 'a {
        let deadlines = &self.inner.deadlines;
        let limit = deadlines.limit().unwrap_or_default();
        deadlines
            .bound(fut)
            .map(move |out| out.unwrap_or(Err(CallError::Timeout(limit))))
    }

    /// Runs a request that may travel as 0-RTT early data; when the gateway refuses it there
    /// (`TooEarly`) or rejects early data altogether, re-sends it once after the handshake.
    async fn early<T, F, Fut>(&self, mut op: F) -> Result<T, CallError>
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

    /// Opens an operation stream and sends its request. A request over the frame limit the
    /// gateway announced in its `Welcome` is refused here, without spending a stream on the
    /// gateway's certain refusal (before the welcome, in early data, the gateway checks).
    pub(crate) async fn open(
        &self,
        request: &Request,
    ) -> Result<(SendStream, FrameReader), CallError> {
        let frame = frame(request);
        if let Some(welcome) = self.inner.welcome.get() {
            let max = usize::try_from(welcome.max_frame_len).unwrap_or(usize::MAX);
            codec::frame_len(&frame, max)
                .map_err(|e| CallError::TooLarge(format!("request refused by the gateway: {e}")))?;
        }
        let (mut send, recv) = self.inner.conn.open_bi().await?;
        send.write_chunk(frame).await?;
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
}

/// A request stream awaiting its answer. Dropped before the answer (a timeout, a cancelled
/// future), it resets the stream when `reset` is set: a command given up on must not run
/// later. Over QUIC the reset also stops the retransmission of the request; over TCP what the
/// kernel already holds still goes out, with the reset after it.
///
/// A body not written to its end is reset whatever `reset` says: a dropped QUIC stream
/// finishes itself, and a cut body must not arrive looking whole.
struct Unanswered {
    send: Option<SendStream>,
    /// The request's policy: reset when given up on before the answer.
    reset: bool,
    /// A body is being written and has not reached its end.
    body_open: bool,
}

impl Unanswered {
    fn new(send: SendStream, reset: bool) -> Self {
        Self {
            send: Some(send),
            reset,
            body_open: false,
        }
    }

    fn answered(&mut self) {
        self.reset = false;
    }

    /// Writes `body` and finishes the stream; on failure, resets it.
    async fn write<R: AsyncRead + Unpin>(&mut self, body: Body<R>) -> Result<(), CallError> {
        let Some(send) = self.send.as_mut() else {
            return Ok(());
        };
        self.body_open = true;
        let result = write_body(send, body).await;
        match &result {
            Ok(()) => {
                let _ = send.finish();
                self.body_open = false;
            }
            Err(_) => {
                let _ = send.reset(ErrorCode::Cancelled);
            }
        }
        result
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(mut send) = self.send.take() {
            if self.reset || self.body_open {
                let _ = send.reset(ErrorCode::Cancelled);
            }
        }
    }
}

async fn write_body<R: AsyncRead + Unpin>(
    send: &mut SendStream,
    body: Body<R>,
) -> Result<(), CallError> {
    match body {
        Body::Chunks(mut chunks) => Ok(send.write_all_chunks(&mut chunks).await?),
        Body::Reader(mut reader) => {
            let mut buf = BytesMut::with_capacity(READ_CHUNK);
            loop {
                buf.reserve(READ_CHUNK);
                let n = reader
                    .read_buf(&mut buf)
                    .await
                    .map_err(|e| CallError::Io(e.to_string()))?;
                if n == 0 {
                    return Ok(());
                }
                send.write_chunk(buf.split().freeze()).await?;
            }
        }
    }
}
