//! What the bench runs: its workloads, and the transports (modes) each is run over.

use quicswarm::{Congestion, Delivery, LinkPreset, TransportTuning};
use serde::Serialize;

/// Workloads of the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Workload {
    /// 12 small feeds (32-256 B, 10-200 Hz) beside a 30 fps camera: small-message latency.
    Telemetry,
    /// 30 fps x 40 KB frames: fps delivered and frame age (latest-value delivery on QUIC).
    Camera,
    /// A call every 20 ms: call latency.
    Rpc,
    /// The link goes down for 2 s and for 10 s: time to the first message after it returns,
    /// stale commands executed.
    Outage,
    /// One stream as fast as it goes: goodput as a fraction of the link rate.
    Bulk,
    /// 2,000 log-like files (median ~15 KB) over a swarm of 4 connections.
    Files,
}

/// How the client reaches the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One QUIC connection, a stream per feed.
    Quic(Congestion),
    /// One QUIC connection, telemetry feeds as datagrams (each reading once, unreliable).
    QuicDatagram(Congestion),
    /// One QUIC connection, reliable telemetry, and the camera's late frames handed out
    /// (`SubscribeOptions::deliver_late`) instead of dropped.
    QuicLate(Congestion),
    /// One QUIC connection, reliable telemetry, and the camera's frames as datagrams with
    /// recovery shards (`Delivery::Fec`).
    QuicFec(Congestion),
    /// One QUIC connection, telemetry feeds `Unordered`: every reading, each on a stream of
    /// its own (a lost packet delays only the readings it carried).
    QuicUnordered(Congestion),
    /// One QUIC connection, telemetry feeds `Redundant`: `Unordered` plus a datagram copy.
    QuicRedundant(Congestion),
    /// One QUIC connection, calls hedged (`Client::call_hedged`) after this many ms.
    QuicHedged(Congestion, u64),
    /// One TLS-over-TCP connection, feeds multiplexed (yamux).
    TcpMux(&'static str),
    /// One TLS-over-TCP connection per feed.
    TcpPerFeed(&'static str),
}

impl Mode {
    /// The QUIC congestion controller; `None` over TLS-over-TCP.
    fn quic(self) -> Option<Congestion> {
        match self {
            Self::Quic(cc)
            | Self::QuicDatagram(cc)
            | Self::QuicLate(cc)
            | Self::QuicFec(cc)
            | Self::QuicUnordered(cc)
            | Self::QuicRedundant(cc)
            | Self::QuicHedged(cc, _) => Some(cc),
            Self::TcpMux(_) | Self::TcpPerFeed(_) => None,
        }
    }

    /// The TCP congestion controller's name; `None` over QUIC.
    fn tcp_cc(self) -> Option<&'static str> {
        match self {
            Self::TcpMux(cc) | Self::TcpPerFeed(cc) => Some(cc),
            _ => None,
        }
    }

    /// The transport's name in the table: quic, tcp-mux or tcp-per-feed.
    pub(crate) fn transport(self) -> &'static str {
        match self {
            Self::TcpMux(_) => "tcp-mux",
            Self::TcpPerFeed(_) => "tcp-per-feed",
            _ => "quic",
        }
    }

    /// The congestion controller's name.
    pub(crate) fn cc(self) -> &'static str {
        match self.quic() {
            Some(Congestion::Cubic) => "cubic",
            Some(Congestion::NewReno) => "newreno",
            Some(_) => "bbr",
            None => self.tcp_cc().unwrap_or_default(),
        }
    }

    /// Whether it runs over TLS-over-TCP.
    pub(crate) fn tcp(self) -> bool {
        self.quic().is_none()
    }

    /// The `Wifi` preset with this mode's congestion controller.
    pub(crate) fn tuning(self) -> TransportTuning {
        let mut t = TransportTuning::preset(LinkPreset::Wifi);
        if let Some(cc) = self.quic() {
            t.congestion = cc;
        }
        if let Some(cc) = self.tcp_cc() {
            t.tcp_congestion = Some(cc.to_string());
        }
        t
    }

    /// How the camera's frames travel.
    pub(crate) fn camera(self) -> Delivery {
        match self {
            _ if self.tcp() => Delivery::Reliable,
            Self::QuicFec(_) => Delivery::Fec,
            _ => Delivery::Latest,
        }
    }

    /// How telemetry items travel.
    pub(crate) fn delivery(self) -> &'static str {
        match self {
            Self::QuicDatagram(_) => "datagram",
            Self::QuicLate(_) => "reliable, late frames",
            Self::QuicFec(_) => "reliable, fec frames",
            Self::QuicUnordered(_) => "unordered",
            Self::QuicRedundant(_) => "redundant",
            Self::QuicHedged(_, 5) => "hedged after 5 ms",
            Self::QuicHedged(_, 25) => "hedged after 25 ms",
            Self::QuicHedged(..) => "hedged",
            _ => "reliable",
        }
    }

    /// Transport, congestion controller and delivery, for a failed row.
    pub(crate) fn label(self) -> String {
        format!("{} ({}, {})", self.transport(), self.cc(), self.delivery())
    }
}

/// The transports each workload is run over.
pub(crate) fn modes(workload: Workload) -> Vec<Mode> {
    use Mode::*;
    let tcp = |m: fn(&'static str) -> Mode| [m("cubic"), m("bbr")];
    let mut v = vec![Quic(Congestion::Cubic)];
    match workload {
        Workload::Telemetry => {
            v.push(Quic(Congestion::BbrExperimental));
            v.push(QuicDatagram(Congestion::BbrExperimental));
            v.push(QuicLate(Congestion::BbrExperimental));
            v.push(QuicFec(Congestion::BbrExperimental));
            v.push(QuicUnordered(Congestion::BbrExperimental));
            v.push(QuicRedundant(Congestion::BbrExperimental));
            v.extend(tcp(TcpMux));
            v.extend(tcp(TcpPerFeed));
        }
        Workload::Camera => {
            v.push(Quic(Congestion::NewReno));
            v.push(Quic(Congestion::BbrExperimental));
            v.push(QuicLate(Congestion::BbrExperimental));
            v.push(QuicFec(Congestion::BbrExperimental));
            v.extend(tcp(TcpMux));
        }
        Workload::Bulk => {
            v.push(Quic(Congestion::BbrExperimental));
            v.extend(tcp(TcpMux));
        }
        Workload::Rpc => {
            v.push(Quic(Congestion::BbrExperimental));
            // Hedged after 5 ms: nearly every call goes twice; after 25 ms (above most
            // round trips on L2): only the slow ones.
            v.push(QuicHedged(Congestion::BbrExperimental, 5));
            v.push(QuicHedged(Congestion::BbrExperimental, 25));
            v.extend(tcp(TcpMux));
        }
        Workload::Files => {
            v.push(Quic(Congestion::BbrExperimental));
            v.extend(tcp(TcpMux));
        }
        Workload::Outage => v.extend(tcp(TcpMux)),
    }
    v
}
