//! The quicswarm wire protocol, version 3 (ALPN `quicswarm/3`) — sans-IO.
//!
//! This crate holds everything two quicswarm peers must agree on, and nothing that touches a
//! socket, a clock or a runtime: the message types, the framing codec, the error codes and the
//! ALPN. The async library (`quicswarm`) drives it over QUIC; tests and fuzzers drive it with byte
//! vectors.
//!
//! # Participants
//! - A **gateway** listens on one UDP port and serves registered subroutines.
//! - A **controller** opens QUIC connections to gateways. Each connection is one
//!   *handler/client pair* and holds one slot of the gateway's handler pool.
//!
//! # Streams
//! - **Control stream.** The client opens the first bidirectional stream and sends a
//!   [`Hello`]. The gateway answers [`HelloReply::Welcome`] (the pair is established) or
//!   [`HelloReply::Refused`] and then closes the connection with the refusal's [`ErrorCode`]
//!   (for example [`ErrorCode::PoolFull`]).
//! - **One stream per operation.** Every later operation opens a new bidirectional stream
//!   whose first frame is a [`Request`]. A slow operation therefore never holds back another
//!   one: QUIC streams do not block each other.
//!   - `Ping` → [`Response::Pong`].
//!   - `Call` (batch) → [`Response::Value`] `{ len }`, then `len` raw bytes.
//!   - `Stream` → [`Response::Accepted`], then [`StreamFrame`]s: each `Item { ident, len }`
//!     is followed by `len` raw bytes; `End` closes a natural end. The client stops the
//!     stream (QUIC `STOP_SENDING` with [`ErrorCode::Cancelled`]) to abort.
//!   - `Send` (sink) → the client writes the raw buffer after the request and finishes its
//!     side; the gateway answers [`Response::Count`].
//!   - `CloseHandler`, `CloseGateway` → [`Response::Done`].
//!   - Any request may instead be answered by [`Response::Error`].
//!
//! # Framing
//! A frame is a LEB128 varint length followed by a postcard body ([`codec`]). The length is
//! checked against the receiver's limit *before* anything is allocated. Bulk bytes (items,
//! batch results, sink buffers) never go through postcard: they follow their header raw.
//!
//! # Limits
//! [`DEFAULT_MAX_FRAME_LEN`] bounds a frame and a stream item. A peer that exceeds the limit
//! has its stream reset with [`ErrorCode::FrameTooLarge`]. [`limits`] holds the protocol's
//! maxima: the longest sequence any message may carry (checked while decoding, before
//! anything is allocated for it), pattern lengths, range sizes and ranges per file. A request
//! over a receiver's configured limit is answered with [`ErrorCode::LimitExceeded`].
//!
//! # Over TLS-over-TCP
//! The same streams run on yamux; [`tcp`] holds the one byte that starts each stream and
//! the control messages that stand in for QUIC's stream stops, resets and close.
//!
//! # Non-goals
//! No negotiation beyond the ALPN: a peer speaking another version fails the TLS handshake.
//!
//! # Example
//! ```
//! use quicswarm_proto::{codec, Request, Args};
//!
//! let req = Request::Call { name: "echo".into(), args: Args::postcard(vec![1, 2, 3]), deadline_ms: None };
//! let frame = codec::encode_to_vec(&req).unwrap();
//! let (back, used) = codec::decode::<Request>(&frame, 1024).unwrap();
//! assert_eq!(back, req);
//! assert_eq!(used, frame.len());
//! ```
#![warn(missing_docs, missing_debug_implementations)]

mod code;
pub mod codec;
pub mod datagram;
pub mod fec;
pub mod limits;
mod message;
pub mod path;
pub mod tcp;
pub mod transfer;

pub use code::ErrorCode;
pub use message::{
    Args, ArgsEncoding, Delivery, ErrorReply, Hello, HelloReply, ItemReport, LatestHeader, Request,
    Response, StreamFrame, StreamOptions, SubroutineInfo, SubroutineKind, Welcome,
};

/// The ALPN protocol identifier. The version lives here so a mismatched peer fails the handshake.
/// Version 2: a range's hash is its BLAKE3 chaining value (see [`transfer::PutItem::hash`]).
/// Version 3: [`transfer::Need::Ranges`] carries runs of indices; [`ErrorCode::LimitExceeded`].
pub const ALPN: &[u8] = b"quicswarm/3";

/// The protocol version carried in [`Hello`]: the ALPN's.
pub const PROTOCOL_VERSION: u32 = 3;

/// Default limit for one frame and for one stream item: 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

#[cfg(test)]
mod tests {
    #[test]
    fn the_hello_version_is_the_alpn_version() {
        let alpn = std::str::from_utf8(super::ALPN).unwrap();
        assert_eq!(alpn, format!("quicswarm/{}", super::PROTOCOL_VERSION));
    }
}
