//! Sink operations: a request followed by a body (a buffer, or whatever a reader yields),
//! written while the gateway's answer is awaited.

use bytes::Bytes;
use quicswarm_proto::{Request, Response};
use tokio::io::AsyncRead;

use super::{request::Body, Client, ToArgs};
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
        self.rpc_with_body(&request, Body::chunks(vec![data]), count)
            .await
    }

    /// Feeds everything `reader` yields to a *sink* subroutine (a file, a pipe), streamed in
    /// chunks: the buffer never has to fit in memory. `len`, when known, is checked by the
    /// gateway.
    ///
    /// # Errors
    /// As [`send`](Self::send), plus [`CallError::Io`] if `reader` fails (the gateway's sink
    /// then sees a cancelled buffer). If the sink answers before the input ends, the rest of
    /// the input is not read and its answer is returned.
    pub async fn send_reader(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
        reader: impl AsyncRead + Unpin,
        len: Option<u64>,
    ) -> Result<i64, CallError> {
        let args = args.to_args()?;
        let request = Request::Send {
            name: name.into(),
            args,
            len,
            deadline_ms: self.deadline_ms(),
        };
        self.rpc_with_body(&request, Body::Reader(reader), count)
            .await
    }
}

/// A sink's answer: the integer it returned.
fn count(response: Response) -> Result<i64, CallError> {
    match response {
        Response::Count { value } => Ok(value),
        other => Err(CallError::Protocol(format!(
            "expected Count, got {other:?}"
        ))),
    }
}
