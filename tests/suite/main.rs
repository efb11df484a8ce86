//! The integration suite: one binary, real gateways on loopback, clients over QUIC.
//! `suite/tcp.rs` runs the core modules again with clients over TLS-over-TCP.

mod delivery;
mod early;
mod errors;
mod fec;
mod files;
mod fleet;
mod hedge;
mod hostile;
mod lifecycle;
mod logs;
mod metrics;
mod ops;
mod pool;
mod qlog;
mod raw;
mod reload;
mod security;
mod session;
mod slow_link;
mod transport;

/// What the shared modules use to start gateways: here, for QUIC clients.
mod harness {
    pub(crate) use quicswarm_tests::spawn_gateway;

    /// The transport of this binary's clients.
    pub(crate) const TRANSPORT: quicswarm::TransportKind = quicswarm::TransportKind::Quic;
}
