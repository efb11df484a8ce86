//! Datagram delivery: one unreliable QUIC datagram per item, never waiting for a
//! retransmission.

use quicswarm_proto::{datagram, ErrorCode, ErrorReply, StreamFrame};

use super::super::reply::log_failure;
use super::{next_or_abort, now_us};
use crate::{
    ended::{Ended, Reply},
    io::write_frame,
    metrics::ItemCounters,
    transport::{Connection, SendStream},
};

/// `Datagram` delivery: each item in one QUIC datagram; an item too large for the path is a
/// typed error that ends the subscription.
pub(in crate::gateway) async fn run_datagram(
    conn: &Connection,
    send: &mut SendStream,
    mut producer: crate::subroutine::Producer,
    name: &str,
    id: u32,
    counted: &ItemCounters,
) -> Reply {
    let end = loop {
        let Some(next) = next_or_abort(&mut producer, send).await else {
            return Err(Ended::Stopped);
        };
        match next {
            Some(Ok((ident, data))) if ident >= 0 => {
                let mut datagram = datagram::header(id, ident, now_us());
                let max = conn.max_datagram_size().unwrap_or(0);
                if datagram.len() + data.len() > max {
                    break StreamFrame::Error(ErrorReply::new(
                        ErrorCode::FrameTooLarge,
                        format!("item {ident} of {} bytes does not fit a datagram ({max} bytes with header)", data.len()),
                    ));
                }
                datagram.extend_from_slice(&data);
                counted.item();
                // A full send buffer drops the oldest datagram: latest value wins.
                if let Err(e) = conn.send_datagram(datagram.into()) {
                    break StreamFrame::Error(ErrorReply::new(
                        ErrorCode::Internal,
                        format!("datagram: {e}"),
                    ));
                }
            }
            Some(Ok(_)) | None => break StreamFrame::End,
            Some(Err(failure)) => break StreamFrame::Error(log_failure(name, failure)),
        }
    };
    drop(producer);
    write_frame(send, &end).await.map_err(Ended::from)
}
