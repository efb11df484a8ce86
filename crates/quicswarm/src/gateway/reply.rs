//! Error replies on an operation's stream, shared by the dispatch and the delivery modes.

use quicswarm_proto::{ErrorReply, Response};
use tracing::warn;

use crate::{
    ended::{Ended, Reply},
    io::write_frame,
    subroutine::Failure,
    transport::SendStream,
};

/// Writes `reply` as the operation's answer.
pub(super) async fn write_error(send: &mut SendStream, reply: ErrorReply) -> Reply {
    write_frame(send, &Response::Error(reply))
        .await
        .map_err(Ended::from)
}

/// The wire reply for a subroutine's failure, logged.
pub(super) fn log_failure(name: &str, failure: Failure) -> ErrorReply {
    let reply = ErrorReply::from(failure);
    warn!(subroutine = name, code = %reply.code, "subroutine failed: {}", reply.message);
    reply
}
