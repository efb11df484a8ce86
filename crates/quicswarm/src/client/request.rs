//! One request, the way every client operation makes it: the per-operation policy (may it
//! ride in 0-RTT early data, the call timeout, a reset when given up on) applied in one
//! function, as irpc's `rpc()` does. Each `Client` method is a few lines on top of [`rpc`].
//!
//! [`rpc`]: Client::rpc

use std::{future::Future, time::Instant};

use quicswarm_proto::{ErrorCode, Request, Response};

use super::Client;
use crate::{
    error::CallError,
    io::{write_frame, FrameReader},
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
        if !self.inner.may_run_early(request) {
            self.inner_confirmed().await;
        }
        let reset = reset_on_give_up(request);
        self.timed(async {
            let (response, reader, sent) = self.early(|| self.attempt(request, reset)).await?;
            then(response, reader, sent).await
        })
        .await
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
        let mut unanswered = Unanswered {
            send: Some(send),
            reset,
        };
        let response = Self::response(&mut reader).await;
        unanswered.answered();
        Ok((response?, reader, sent))
    }

    /// Bounds `fut` by the controller's call timeout.
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

    /// Opens an operation stream and sends its request.
    pub(crate) async fn open(
        &self,
        request: &Request,
    ) -> Result<(SendStream, FrameReader), CallError> {
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
}

/// A request stream awaiting its answer. Dropped before the answer (a timeout, a cancelled
/// future), it resets the stream when `reset` is set: a command given up on must not run
/// later. Over QUIC the reset also stops the retransmission of the request; over TCP what the
/// kernel already holds still goes out, with the reset after it.
pub(super) struct Unanswered {
    pub(super) send: Option<SendStream>,
    pub(super) reset: bool,
}

impl Unanswered {
    pub(super) fn answered(&mut self) {
        self.send = None;
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(mut send) = self.send.take() {
            if self.reset {
                let _ = send.reset(ErrorCode::Cancelled);
            }
        }
    }
}
