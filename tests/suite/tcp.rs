//! The core integration modules again, with every client on TLS-over-TCP (yamux): the same
//! tests, the same assertions, except where a test is about a QUIC-only feature and checks
//! what TCP does instead (see `harness::TRANSPORT` in those tests).

mod errors;
mod files;
mod hedge;
mod lifecycle;
mod ops;
mod pool;
mod security;

/// What the shared modules use to start gateways: here, with clients dialling `tcp://`.
mod harness {
    use quicswarm::{GatewayBuilder, TransportKind};
    use quicswarm_tests::TestGateway;

    /// The transport of this binary's clients.
    pub(crate) const TRANSPORT: TransportKind = TransportKind::Tcp;

    pub(crate) async fn spawn_gateway(
        configure: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
    ) -> TestGateway {
        quicswarm_tests::spawn_gateway_on(TRANSPORT, configure).await
    }
}
