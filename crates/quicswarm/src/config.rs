//! Configuration, each setting with a documented default: the gateway's [`Limits`], the
//! controller's [`ControllerConfig`], and the [`TransportTuning`] both use.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use quinn::{IdleTimeout, TransportConfig, VarInt};

use crate::tls::{Identity, Trust};

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
    /// Concurrent operations (QUIC streams) per client; a client beyond it waits for one to
    /// end. Default 256.
    ///
    /// Memory: quinn keeps one receive state per stream a client may open and reuses it, with
    /// the largest buffer it has needed, so a connection's memory grows towards this limit
    /// times the size of its largest requests (in packets) and then stays flat. Measured in
    /// the soak bench (5 clients on a lossy link): with 1024, the gateway's heap was still
    /// growing after 8 minutes (3.1 to 6.6 MB); with 64 it was flat after one (3.8-4.0 MB).
    pub max_concurrent_ops: u32,
    /// Connections (including handshakes in progress) from one IP address; more are refused
    /// at once. Default 64.
    pub max_connections_per_ip: usize,
    /// Time a new connection has to send its `Hello`, and a new operation its request. Default 10 s.
    pub request_header_timeout: Duration,
    /// An operation whose client reads nothing of what the gateway writes (or sends nothing
    /// of what it announced) for this long is ended: its stream is reset with `Timeout`.
    /// It bounds each wait for progress, not a whole write: a big file to a slow client goes
    /// on for as long as the client keeps taking it. `None` waits forever. Default 30 s.
    pub stall_timeout: Option<Duration>,
    /// Handshakes (QUIC or TLS over TCP) in progress at once, from all addresses; more are
    /// refused at once until some finish. Default 256.
    pub max_pending_handshakes: usize,
    /// With this many handshakes in progress, a new QUIC connection attempt from an address
    /// not yet validated is answered with a Retry: it must echo a token (one round trip)
    /// before the gateway spends a handshake on it, so a flood from spoofed addresses costs
    /// next to nothing. Default 64; 0 validates every address.
    pub retry_above_handshakes: usize,
    /// How long in-flight operations may run on after a shutdown starts. Default 5 s.
    pub shutdown_grace: Duration,
    /// Most items in one `Get` or `Put`, entries in one `PutCheck` and paths in one `List`
    /// selector. Default 4096 ([`DEFAULT_MAX_REQUEST_ITEMS`]; at most the protocol's
    /// [`MAX_SEQ_LEN`]). Clients cut their requests to the default.
    ///
    /// [`DEFAULT_MAX_REQUEST_ITEMS`]: quicswarm_proto::limits::DEFAULT_MAX_REQUEST_ITEMS
    /// [`MAX_SEQ_LEN`]: quicswarm_proto::limits::MAX_SEQ_LEN
    pub max_request_items: usize,
    /// Bytes one operation may hold in memory at once: its decoded request, file data read
    /// ahead of the client (a `Get` reads as fast as the client takes it), the items of a
    /// `Put` before they reach the disk. A request that needs more is refused with
    /// `LimitExceeded`. Default 32 MiB (two of the largest ranges).
    pub operation_budget: u64,
    /// Bytes all operations of one connection may hold at once, drawn from the gateway's
    /// budget; an operation waits for room (up to `stall_timeout`). Default 128 MiB. The
    /// transport's own buffers come on top: a gateway caps its connections' send and receive
    /// windows ([`TransportTuning::send_window`], [`TransportTuning::receive_window`]) at an
    /// eighth of this each (16 MiB by default).
    ///
    /// A gateway's memory for its clients is thus at most `gateway_budget` plus, per handler,
    /// a quarter of `connection_budget` (256 + 5 × 32 MiB with the defaults).
    pub connection_budget: u64,
    /// Bytes all operations of the gateway may hold at once. Default 256 MiB.
    pub gateway_budget: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: quicswarm_proto::DEFAULT_MAX_FRAME_LEN,
            max_sink_len: 1 << 30,
            max_concurrent_ops: 256,
            max_connections_per_ip: 64,
            request_header_timeout: Duration::from_secs(10),
            stall_timeout: Some(Duration::from_secs(30)),
            max_pending_handshakes: 256,
            retry_above_handshakes: 64,
            shutdown_grace: Duration::from_secs(5),
            max_request_items: quicswarm_proto::limits::DEFAULT_MAX_REQUEST_ITEMS,
            operation_budget: 32 << 20,
            connection_budget: 128 << 20,
            gateway_budget: 256 << 20,
        }
    }
}

impl Limits {
    /// The byte budget these limits describe.
    pub(crate) fn budget(&self, hits: crate::metrics::LimitHits) -> crate::budget::Budget {
        crate::budget::Budget::new(
            self.gateway_budget,
            self.connection_budget,
            self.operation_budget,
            self.stall_timeout,
            hits,
        )
    }

    /// `max_request_items`, within the protocol's maximum.
    pub(crate) fn request_items(&self) -> usize {
        self.max_request_items
            .clamp(1, quicswarm_proto::limits::MAX_SEQ_LEN)
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

/// Link presets: timeouts and loss detection tuned for a kind of network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LinkPreset {
    /// Wired or loopback: low RTT, rare loss. The default.
    #[default]
    Lan,
    /// Wi-Fi: tens of ms RTT, bursty loss and reordering, stalls. Frequent keep-alives so a
    /// dead link is noticed within about a second.
    Wifi,
    /// Cellular: high and variable RTT; patient timeouts.
    Cellular,
}

/// Congestion controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Congestion {
    /// CUBIC (quinn's default).
    #[default]
    Cubic,
    /// NewReno.
    NewReno,
    /// BBR. quinn marks its BBR experimental; it misbehaved on loopback here (heavy
    /// self-induced loss), hence the name. On lossy emulated Wi-Fi it kept far more of the
    /// link than Cubic or NewReno: the `Wifi` preset's default.
    BbrExperimental,
}

/// QUIC transport settings, for a gateway ([`GatewayBuilder::transport`]) or a controller
/// ([`ControllerConfig::transport`]). Start from a [`LinkPreset`].
///
/// [`GatewayBuilder::transport`]: crate::GatewayBuilder::transport
/// [`ControllerConfig::transport`]: crate::ControllerConfig::transport
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TransportTuning {
    /// The preset these values came from.
    pub preset: LinkPreset,
    /// A peer silent for this long is gone (the smaller of both peers' values wins): a
    /// gateway frees the client's handler slot.
    pub idle_timeout: Duration,
    /// Keep-alive interval of an idle connection. A gateway pings at most every third of its
    /// idle timeout whatever this says, so idle clients keep their slots.
    pub keep_alive: Duration,
    /// RTT assumed before the first measurement.
    pub initial_rtt: Duration,
    /// Packets that may arrive after a packet before it is declared lost (raise for
    /// reordering links).
    pub packet_threshold: u32,
    /// Time (in RTTs) after which an unacknowledged packet is declared lost.
    pub time_threshold: f32,
    /// Longest the peer may wait before acknowledging, asked of it with QUIC's ACK frequency
    /// extension; `None` leaves the peer's own (25 ms for quinn). It is part of every probe
    /// timeout, so a lone lost packet — a request with nothing after it — is resent sooner
    /// with a small value, at the cost of more acknowledgements.
    pub ack_delay: Option<Duration>,
    /// The congestion controller.
    pub congestion: Congestion,
    /// Receive window per stream, bytes.
    pub stream_receive_window: u32,
    /// Receive window per connection, bytes (bounded, unlike quinn's default).
    pub receive_window: u32,
    /// Send window per connection, bytes.
    pub send_window: u64,
    /// UDP segmentation offload (GSO). Some VMs fail with it; it cut bulk CPU ~3.5x here.
    pub segmentation_offload: bool,
    /// TLS-over-TCP only: the kernel congestion controller (`TCP_CONGESTION`, e.g. `"bbr"`,
    /// `"cubic"`); `None` keeps the system default. Linux only.
    pub tcp_congestion: Option<String>,
}

impl Default for TransportTuning {
    fn default() -> Self {
        Self::preset(LinkPreset::Lan)
    }
}

impl TransportTuning {
    /// The settings of a preset.
    ///
    /// | preset | idle timeout | keep-alive | initial RTT | packet / time threshold | congestion | peer ACK delay |
    /// |---|---|---|---|---|---|---|
    /// | `Lan` | 10 s | 2 s | 333 ms (quinn's default) | 3 / 9/8 RTT | Cubic | its own |
    /// | `Wifi` | 1 s | 250 ms | 50 ms | 5 / 1.5 RTT | BBR | 1 ms |
    /// | `Cellular` | 20 s | 2 s | 200 ms | 5 / 1.5 RTT | Cubic | its own |
    pub fn preset(preset: LinkPreset) -> Self {
        let lan = Self {
            preset,
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
            initial_rtt: Duration::from_millis(333),
            packet_threshold: 3,
            time_threshold: 9.0 / 8.0,
            ack_delay: None,
            congestion: Congestion::Cubic,
            stream_receive_window: 8 * 1024 * 1024,
            // 64 MB covers a 1 Gbit/s x 500 ms path.
            receive_window: 64 * 1024 * 1024,
            send_window: 64 * 1024 * 1024,
            segmentation_offload: true,
            tcp_congestion: None,
        };
        match preset {
            LinkPreset::Lan => lan,
            LinkPreset::Wifi => Self {
                // A dead link is noticed within about a second; a `Session` then reconnects.
                idle_timeout: Duration::from_secs(1),
                keep_alive: Duration::from_millis(250),
                initial_rtt: Duration::from_millis(50),
                packet_threshold: 5,
                time_threshold: 1.5,
                // A lost request with nothing after it waits for the probe timeout, which
                // includes the peer's ACK delay. Measured with the `tcp-vs-quic` bench (rpc, L2,
                // 20 s): call p99 93-94 ms with quinn's 25 ms, 69-72 ms with 1 ms; bulk goodput
                // on L1 unchanged (95.8 vs 95.6 Mbit/s with BBR).
                ack_delay: Some(Duration::from_millis(1)),
                // Random Wi-Fi loss is not congestion: loss-based controllers back off on it.
                // Measured with the `tcp-vs-quic` bench on the emulated L2 link (1% loss, RTT
                // 20 ms): a 30 fps camera got 19 fps with Cubic and 29.5 with BBR beside the
                // telemetry feeds, whose latency stayed the same.
                congestion: Congestion::BbrExperimental,
                ..lan
            },
            LinkPreset::Cellular => Self {
                idle_timeout: Duration::from_secs(20),
                keep_alive: Duration::from_secs(2),
                initial_rtt: Duration::from_millis(200),
                packet_threshold: 5,
                time_threshold: 1.5,
                ..lan
            },
        }
    }

    /// The quinn transport config: `keep_alive` overrides the tuning's own (the gateway's
    /// rule), `max_bidi` and `max_uni` bound the streams the peer may open.
    pub(crate) fn quinn(
        &self,
        keep_alive: Duration,
        max_bidi: u32,
        max_uni: u32,
    ) -> TransportConfig {
        let mut t = TransportConfig::default();
        // A bad idle value (over 2^62 ms) falls back to quinn's default.
        if let Ok(idle) = IdleTimeout::try_from(self.idle_timeout) {
            t.max_idle_timeout(Some(idle));
        }
        t.keep_alive_interval(Some(keep_alive));
        t.initial_rtt(self.initial_rtt);
        t.packet_threshold(self.packet_threshold.max(3));
        t.time_threshold(self.time_threshold.max(1.0));
        if let Some(delay) = self.ack_delay {
            let mut ack = quinn::AckFrequencyConfig::default();
            ack.max_ack_delay(Some(delay));
            t.ack_frequency_config(Some(ack));
        }
        t.max_concurrent_bidi_streams(VarInt::from_u32(max_bidi));
        t.max_concurrent_uni_streams(VarInt::from_u32(max_uni));
        t.receive_window(VarInt::from_u32(self.receive_window));
        t.stream_receive_window(VarInt::from_u32(self.stream_receive_window));
        t.send_window(self.send_window);
        t.datagram_send_buffer_size(crate::transport::DATAGRAM_SEND_BUFFER);
        t.enable_segmentation_offload(self.segmentation_offload);
        match self.congestion {
            Congestion::Cubic => {
                t.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()))
            }
            Congestion::NewReno => t.congestion_controller_factory(Arc::new(
                quinn::congestion::NewRenoConfig::default(),
            )),
            Congestion::BbrExperimental => {
                t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()))
            }
        };
        t
    }
}

/// Wraps an endpoint's UDP socket: for link emulation in tests and tools (drop, delay or
/// rate-limit datagrams). Given the real socket, returns the one the endpoint uses.
#[derive(Clone)]
pub struct SocketWrapper(pub Arc<WrapFn>);

/// The function inside a [`SocketWrapper`].
pub type WrapFn =
    dyn Fn(Arc<dyn quinn::AsyncUdpSocket>) -> Arc<dyn quinn::AsyncUdpSocket> + Send + Sync;

impl std::fmt::Debug for SocketWrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SocketWrapper(..)")
    }
}

/// A quinn endpoint on `socket`, wrapped if asked.
pub(crate) fn endpoint(
    socket: std::net::UdpSocket,
    server: Option<quinn::ServerConfig>,
    wrapper: Option<&SocketWrapper>,
) -> std::io::Result<quinn::Endpoint> {
    use quinn::Runtime;
    let runtime = Arc::new(quinn::TokioRuntime);
    let mut udp = runtime.wrap_udp_socket(socket)?;
    if let Some(wrap) = wrapper {
        udp = (wrap.0)(udp);
    }
    quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        server,
        udp,
        runtime,
    )
}

/// Controller settings, each with a documented default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ControllerConfig {
    /// How gateways are authenticated. Default: the user's `known_gateways` file
    /// ([`Trust::default_known_gateways`]).
    pub trust: Trust,
    /// Local UDP address. Default `[::]:0` (dual-stack), falling back to `0.0.0.0:0`.
    pub bind: Option<SocketAddr>,
    /// The name sent in `Hello`, shown in gateway logs (a few thousand bytes at most: gateways
    /// refuse a hello over 4 KiB). Default `"quicswarm"`.
    pub name: String,
    /// Time allowed for handshake plus hello. Default 10 s.
    pub connect_timeout: Duration,
    /// Time allowed for a ping, call or send to be answered; `None` waits forever.
    /// Default 60 s. Stream subscriptions are not bounded by it. File listings and
    /// downloads are bounded by progress instead of their total time: it bounds the wait for
    /// the gateway's first answer, and then each pause in what follows, so a big file over a
    /// slow link is never cut short while it keeps moving, and fails with
    /// [`CallError::Timeout`](crate::CallError::Timeout) once nothing has arrived for this
    /// long.
    pub call_timeout: Option<Duration>,
    /// QUIC transport settings: timeouts, keep-alive, loss detection, congestion control.
    /// Default: the `Lan` preset ([`TransportTuning::preset`]).
    pub transport: TransportTuning,
    /// Largest frame, stream item or batch result accepted from a gateway. Default 16 MiB
    /// (batch results may be up to 64 times that).
    pub max_frame_len: usize,
    /// Wraps the controller's UDP socket (link emulation in tests and tools). Default none.
    pub socket_wrapper: Option<SocketWrapper>,
    /// Client certificate and key, for gateways that require mutual TLS. Default none.
    pub identity: Option<Identity>,
    /// Most entries accepted in one listing (a download's plan starts from one): a gateway
    /// that lists more gets [`CallError::LimitExceeded`](crate::CallError::LimitExceeded).
    /// Default 262,144, about 40 MB of entries in memory.
    pub max_listing_entries: usize,
    /// Writes a qlog file per QUIC connection into this folder (created if needed), to open
    /// in qvis: see the README's "Debugging a link with qlog". Needs the `qlog` feature.
    /// Default none.
    #[cfg(feature = "qlog")]
    pub qlog_dir: Option<std::path::PathBuf>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            trust: Trust::KnownGateways(Trust::default_known_gateways()),
            bind: None,
            name: "quicswarm".into(),
            connect_timeout: Duration::from_secs(10),
            call_timeout: Some(Duration::from_secs(60)),
            transport: TransportTuning::default(),
            max_frame_len: quicswarm_proto::DEFAULT_MAX_FRAME_LEN,
            socket_wrapper: None,
            identity: None,
            max_listing_entries: 1 << 18,
            #[cfg(feature = "qlog")]
            qlog_dir: None,
        }
    }
}

impl ControllerConfig {
    /// The defaults with the given trust mode.
    pub fn with_trust(trust: Trust) -> Self {
        Self {
            trust,
            ..Self::default()
        }
    }
}
