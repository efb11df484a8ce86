//! The accept loops: QUIC connections from the endpoint, TLS-over-TCP ones from the listener,
//! each admitted against the per-address and handshake limits, then served by `conn`.

use std::{sync::Arc, time::Duration};

use tracing::{debug, warn, Instrument};

use super::{
    conn,
    state::{IpSlot, State},
};
use crate::config::TransportTuning;

pub(super) async fn accept_loop(shared: Arc<State>) {
    loop {
        let incoming = tokio::select! {
            _ = shared.lifecycle.stop_accepting.cancelled() => break,
            incoming = shared.endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { break };
        let ip = incoming.remote_address().ip();
        let Some(slot) = IpSlot::take(&shared, ip) else {
            // One address may not take every connection the gateway can hold.
            warn!(%ip, "too many connections from one address: refused");
            shared.metrics.limit_hit("max_connections_per_ip");
            incoming.refuse();
            continue;
        };
        let in_progress = shared.policy.limits.max_pending_handshakes.max(1)
            - shared.admission.handshakes.available_permits();
        if in_progress >= shared.policy.limits.retry_above_handshakes
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            // Many handshakes at once: make a sender prove its address (one round trip of
            // Retry) before it costs us a handshake. Spoofed floods never come back.
            shared.metrics.retries.inc();
            if let Err(e) = incoming.retry() {
                debug!("retry refused: {e}");
            }
            drop(slot);
            continue;
        }
        let Ok(handshake) = shared.admission.handshakes.clone().try_acquire_owned() else {
            // Many addresses at once (a flood): handshakes cost CPU, so bound them.
            warn!(%ip, "too many handshakes in progress: refused");
            shared.metrics.limit_hit("max_pending_handshakes");
            incoming.refuse();
            continue;
        };
        debug!(remote = %incoming.remote_address(), "incoming connection");
        shared.lifecycle.tracker.spawn(
            async move {
                conn::serve_connection(slot.shared.clone(), incoming, handshake).await;
                drop(slot);
            }
            .in_current_span(),
        );
    }
}

pub(super) async fn accept_tcp_loop(
    shared: Arc<State>,
    listener: tokio::net::TcpListener,
    transport: TransportTuning,
) {
    loop {
        let accepted = tokio::select! {
            _ = shared.lifecycle.stop_accepting.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, remote) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors, say: back off briefly rather than spin.
                warn!("TCP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = IpSlot::take(&shared, remote.ip()) else {
            warn!(ip = %remote.ip(), "too many connections from one address: refused");
            shared.metrics.limit_hit("max_connections_per_ip");
            continue;
        };
        let Ok(handshake) = shared.admission.handshakes.clone().try_acquire_owned() else {
            warn!(ip = %remote.ip(), "too many handshakes in progress: refused");
            shared.metrics.limit_hit("max_pending_handshakes");
            continue;
        };
        if let Err(e) = crate::transport::tcp::tune_socket(&socket, &transport) {
            debug!(%remote, "TCP socket options: {e}");
        }
        debug!(%remote, "incoming TCP connection");
        // The certificate of now: a reload between two accepts applies to the second.
        let acceptor = shared.security().tcp.clone();
        shared.lifecycle.tracker.spawn(
            async move {
                conn::serve_tcp(slot.shared.clone(), socket, acceptor, handshake).await;
                drop(slot);
            }
            .in_current_span(),
        );
    }
}
