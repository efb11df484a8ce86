//! Limits and transport settings, each with a documented default.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use quinn::{IdleTimeout, TransportConfig, VarInt};

/// Gateway-side limits. Each protects the gateway from one kind of overload; hitting one
/// affects only the offending request or client.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Largest frame and largest stream item accepted, in bytes. Default 16 MiB.
    pub max_frame_len: usize,
    /// Largest buffer a collecting sink (`sink_blocking`, [`SinkData::collect`]) takes.
    /// Default 1 GiB.
    ///
    /// [`SinkData::collect`]: crate::SinkData::collect
    pub max_sink_len: u64,
    /// Concurrent operations (QUIC streams) per client. Default 1024.
    pub max_concurrent_ops: u32,
    /// A client silent for this long is gone and its handler slot is freed. Default 10 s.
    pub idle_timeout: Duration,
    /// Time a new connection has to send its `Hello`, and a new operation its request. Default 10 s.
    pub request_header_timeout: Duration,
    /// How long in-flight operations may run on after a shutdown starts. Default 5 s.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: quicswarm_proto::DEFAULT_MAX_FRAME_LEN,
            max_sink_len: 1 << 30,
            max_concurrent_ops: 1024,
            idle_timeout: Duration::from_secs(10),
            request_header_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// UDP socket buffers: the kernel default (~208 KB) overflowed even on loopback, read by QUIC
/// as loss. 4 MB removed the drops here.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Binds a UDP socket with 4 MB send and receive buffers (best effort), dual-stack for `[::]`,
/// ready for a quinn endpoint. The gateway and the controller bind theirs this way; it is
/// public for tools that build raw quinn endpoints to compare against.
///
/// # Errors
/// If the socket cannot be created or bound.
pub fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack where the OS allows, so one controller reaches v4 and v6 gateways.
        let _ = socket.set_only_v6(false);
    }
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Transport settings shared by both sides.
pub(crate) fn transport(
    idle: Duration,
    keep_alive: Option<Duration>,
    max_ops: u32,
) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    // A bad idle value (over 2^62 ms) falls back to quinn's default.
    if let Ok(idle) = IdleTimeout::try_from(idle) {
        t.max_idle_timeout(Some(idle));
    }
    t.keep_alive_interval(keep_alive);
    t.max_concurrent_bidi_streams(VarInt::from_u32(max_ops));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    // Bound the per-connection receive buffer (quinn's default is unbounded): 64 MB covers a
    // 1 Gbit/s x 500 ms path.
    t.receive_window(VarInt::from_u32(64 * 1024 * 1024));
    t.stream_receive_window(VarInt::from_u32(8 * 1024 * 1024));
    t.send_window(64 * 1024 * 1024);
    Arc::new(t)
}
