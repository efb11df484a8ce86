//! The gateway: a QUIC listener (and, with `tcp`, a TLS-over-TCP one) holding subroutines,
//! file roots and a handler pool.
//!
//! Layout, in the order a connection meets it:
//! - `builder.rs`: the [`GatewayBuilder`], which binds and starts it all;
//! - `handle.rs`: the running [`Gateway`]'s handle: addresses, counters, shutdown;
//! - `state.rs`: what every task of the gateway shares: policy, admission, lifecycle and
//!   counters;
//! - `accept.rs`: the QUIC and TCP accept loops, with the per-address and handshake limits;
//! - `conn.rs`: one handler/client pair: the hello, its operation streams, its close
//!   (`pair.rs`: what the pair's operation tasks share; `inline.rs`: operations polled
//!   first on the connection's task, and the driver's turns between them);
//! - `dispatch.rs`: one operation: the request read, admitted, and run by kind;
//! - `deliver/`: how a stream subroutine's items reach the client (reliable, latest,
//!   datagram).
//!
//! Everything depends on `state.rs`; `mod.rs` only names the parts.

mod accept;
mod builder;
mod conn;
mod deliver;
mod dispatch;
mod handle;
mod inline;
mod pair;
mod reply;
mod security;
mod state;

pub use self::{
    builder::{GatewayBuilder, DEFAULT_LISTEN, DEFAULT_POOL_SIZE},
    handle::{Gateway, GatewayStats},
};
