//! Sink operations: a request followed by a body (a buffer, or whatever a reader yields),
//! written while the gateway's answer is awaited.

use bytes::Bytes;
use quicswarm_proto::{ErrorCode, Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Client, ToArgs};
use crate::error::CallError;

impl Client {
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
                        let _ = send.reset(ErrorCode::Cancelled);
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
                let _ = send.reset(ErrorCode::Cancelled);
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
}
