//! A gateway's metrics, in the Prometheus text format: counters that the gateway's tasks bump
//! as work happens (`Metrics`), and gauges read from the live state at each scrape
//! (`live.rs`: connections, the pool, per-client RTT, congestion window and loss), served on
//! `/metrics` by `http.rs`.
//!
//! Every label value comes from a closed set (kinds, result codes, limit names, delivery
//! modes) or from a live connection (client name and address), so a peer cannot grow the
//! number of series beyond what the pool holds.

mod http;
mod live;

pub(crate) use self::{http::serve as serve_http, live::Live};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family},
    registry::{Registry, Unit},
};
use quicswarm_proto::{ErrorCode, Request};

use crate::{
    ended::{Ended, Reply},
    io::FrameError,
    transport::{ReadError, WriteError},
};

/// How an operation ended: the label `result` of `quicswarm_operations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Outcome {
    /// Answered without an error.
    Ok,
    /// Answered with this error code (or reset with it).
    Error(ErrorCode),
    /// The client stopped the stream before the answer was complete.
    Stopped,
    /// The stream or connection was lost before the answer was complete.
    Disconnected,
}

impl Outcome {
    /// How an operation that ran ended: the error code of its answer (`answered`, from
    /// `SendStream::answered_error`) or of the reset that cut it, else whether the client
    /// stopped it or the stream was lost; and the limit that ended it, if one did (a client
    /// that stopped reading, an oversized frame).
    pub(crate) fn of(ran: &Reply, answered: Option<ErrorCode>) -> (Self, Option<&'static str>) {
        let (code, limit) = match ran {
            Ok(()) => (answered, None),
            Err(Ended::Reset(reply)) => (Some(reply.code), None),
            // The client stopped reading, or stopped sending, for the stall timeout.
            Err(
                Ended::Write(WriteError::Stalled(_))
                | Ended::Read(FrameError::Read(ReadError::Stalled(_))),
            ) => (Some(ErrorCode::Timeout), Some("stall_timeout")),
            Err(Ended::Read(e)) if e.code() == ErrorCode::FrameTooLarge => {
                (Some(ErrorCode::FrameTooLarge), Some("max_frame_len"))
            }
            Err(Ended::Task(_)) => (Some(ErrorCode::Internal), None),
            Err(Ended::Stopped | Ended::Write(WriteError::Stopped(_))) => {
                return (Self::Stopped, None)
            }
            Err(_) => return (Self::Disconnected, None),
        };
        (code.map_or(Self::Ok, Self::Error), limit)
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        match self {
            Self::Ok => encoder.write_str("ok"),
            Self::Error(code) => write!(encoder, "{code:?}"),
            Self::Stopped => encoder.write_str("stopped"),
            Self::Disconnected => encoder.write_str("disconnected"),
        }
    }
}

/// An operation's kind: the label `kind` of `quicswarm_operations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Ping,
    Call,
    Stream,
    Send,
    List,
    Get,
    PutCheck,
    Put,
    CloseHandler,
    CloseGateway,
    /// A request that could not be read.
    Invalid,
}

impl OpKind {
    /// A request's kind.
    pub(crate) fn of(request: &Request) -> Self {
        match request {
            Request::Ping { .. } => Self::Ping,
            Request::Call { .. } => Self::Call,
            Request::Stream { .. } => Self::Stream,
            Request::Send { .. } => Self::Send,
            Request::List { .. } => Self::List,
            Request::Get { .. } => Self::Get,
            Request::PutCheck { .. } => Self::PutCheck,
            Request::Put { .. } => Self::Put,
            Request::CloseHandler => Self::CloseHandler,
            Request::CloseGateway => Self::CloseGateway,
        }
    }

    const ALL: [Self; 11] = [
        Self::Ping,
        Self::Call,
        Self::Stream,
        Self::Send,
        Self::List,
        Self::Get,
        Self::PutCheck,
        Self::Put,
        Self::CloseHandler,
        Self::CloseGateway,
        Self::Invalid,
    ];

    /// Its label: in the metrics, and the `kind` of every log line of the operation.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Call => "call",
            Self::Stream => "stream",
            Self::Send => "send",
            Self::List => "list",
            Self::Get => "get",
            Self::PutCheck => "put_check",
            Self::Put => "put",
            Self::CloseHandler => "close_handler",
            Self::CloseGateway => "close_gateway",
            Self::Invalid => "invalid",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    kind: &'static str,
    result: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeliveryLabels {
    delivery: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

/// The gateway's counters. Cheap to bump (one atomic add, after a read-locked lookup for a
/// labelled family), and cloned handles share their values.
#[derive(Debug)]
pub(crate) struct Metrics {
    operations: Family<OperationLabels, Counter>,
    /// Each kind's `ok` series, looked up once: the common case costs one atomic add.
    ok: [Counter; OpKind::ALL.len()],
    limit_hits: LimitHits,
    handshakes: Family<ResultLabels, Counter>,
    early_data: Family<ResultLabels, Counter>,
    items: Family<DeliveryLabels, Counter>,
    superseded: Counter,
    files: Family<DirectionLabels, Counter>,
    file_bytes: Family<DirectionLabels, Counter>,
    /// Connection attempts answered with a QUIC Retry.
    pub(crate) retries: Counter,
    /// What the scrape reads from the live state.
    pub(crate) live: std::sync::Arc<Live>,
}

/// Counts limit hits by limit: a handle for the parts that enforce limits without the rest of
/// the metrics (the memory budget). Clones count into the same series.
#[derive(Debug, Clone, Default)]
pub(crate) struct LimitHits(Family<LimitLabels, Counter>);

impl LimitHits {
    /// A limit (named as its [`Limits`](crate::Limits) field, or as the error names it)
    /// refused something.
    pub(crate) fn hit(&self, limit: &'static str) {
        self.0.get_or_create(&LimitLabels { limit }).inc();
    }

    /// Hits of `limit` so far.
    #[cfg(test)]
    pub(crate) fn count(&self, limit: &'static str) -> u64 {
        self.0.get_or_create(&LimitLabels { limit }).get()
    }
}

/// Counters of one subscription's items, by its delivery mode.
#[derive(Debug, Clone)]
pub(crate) struct ItemCounters {
    items: Counter,
    superseded: Counter,
}

impl ItemCounters {
    /// One item handed to the transport.
    pub(crate) fn item(&self) {
        self.items.inc();
    }

    /// One item replaced by a newer one before it was delivered.
    pub(crate) fn superseded(&self) {
        self.superseded.inc();
    }
}

/// Which way a file moved, as the gateway sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    /// Served to a client (`Get`).
    Sent,
    /// Stored from a client (`Put`).
    Received,
}

impl Metrics {
    pub(crate) fn new(live: Live, limit_hits: LimitHits) -> Self {
        let operations = Family::<OperationLabels, Counter>::default();
        let ok = OpKind::ALL.map(|kind| {
            let labels = OperationLabels {
                kind: kind.name(),
                result: Outcome::Ok,
            };
            operations.get_or_create(&labels).clone()
        });
        Self {
            operations,
            ok,
            limit_hits,
            handshakes: Family::default(),
            early_data: Family::default(),
            items: Family::default(),
            superseded: Counter::default(),
            files: Family::default(),
            file_bytes: Family::default(),
            retries: Counter::default(),
            live: std::sync::Arc::new(live),
        }
    }

    /// A registry holding (handles to) every metric, for one scrape or for the server.
    pub(crate) fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("quicswarm");
        r.register(
            "operations",
            "Operations by kind and result (ok, an error code's name, stopped, disconnected)",
            self.operations.clone(),
        );
        r.register(
            "limit_hits",
            "Requests and connections refused or cut by a limit, by limit",
            self.limit_hits.0.clone(),
        );
        r.register(
            "handshakes",
            "Handshakes by result (established, failed, timeout)",
            self.handshakes.clone(),
        );
        r.register(
            "early_data_requests",
            "Requests that arrived in 0-RTT early data, by result (accepted, refused)",
            self.early_data.clone(),
        );
        r.register(
            "retries",
            "Connection attempts answered with a QUIC Retry (address validation)",
            self.retries.clone(),
        );
        r.register(
            "stream_items",
            "Stream items handed to the transport, by delivery",
            self.items.clone(),
        );
        r.register(
            "superseded_items",
            "Latest-delivery items replaced by a newer one before delivery",
            self.superseded.clone(),
        );
        r.register(
            "files",
            "Files served (sent) and stored (received)",
            self.files.clone(),
        );
        r.register_with_unit(
            "file",
            "File bytes served (sent) and stored (received)",
            Unit::Bytes,
            self.file_bytes.clone(),
        );
        r.register_collector(Box::new(self.live.clone()));
        r
    }

    /// The text of one scrape.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a `String` cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry());
        out
    }

    /// An operation of `kind` ended with `result`.
    pub(crate) fn operation(&self, kind: OpKind, result: Outcome) {
        if result == Outcome::Ok {
            // `ALL` lists every kind at its discriminant.
            self.ok[kind as usize].inc();
            return;
        }
        let labels = OperationLabels {
            kind: kind.name(),
            result,
        };
        self.operations.get_or_create(&labels).inc();
    }

    /// A limit (named as its [`Limits`](crate::Limits) field, or as the error names it)
    /// refused something.
    pub(crate) fn limit_hit(&self, limit: &'static str) {
        self.limit_hits.hit(limit);
    }

    /// A handshake ended: `established`, `failed` or `timeout`.
    pub(crate) fn handshake(&self, result: &'static str) {
        self.handshakes
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// A request arrived in early data and was `accepted` or `refused`.
    pub(crate) fn early_data(&self, result: &'static str) {
        self.early_data
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// How many early-data requests ended with `result` so far.
    pub(crate) fn early_data_count(&self, result: &'static str) -> u64 {
        self.early_data
            .get_or_create(&ResultLabels { result })
            .get()
    }

    /// The counters of a subscription delivered as `delivery`.
    pub(crate) fn items(&self, delivery: &'static str) -> ItemCounters {
        ItemCounters {
            items: self
                .items
                .get_or_create(&DeliveryLabels { delivery })
                .clone(),
            superseded: self.superseded.clone(),
        }
    }

    /// A file of `bytes` moved `direction`.
    pub(crate) fn file(&self, direction: Direction, bytes: u64) {
        let labels = DirectionLabels {
            direction: match direction {
                Direction::Sent => "sent",
                Direction::Received => "received",
            },
        };
        self.files.get_or_create(&labels).inc();
        self.file_bytes.get_or_create(&labels).inc_by(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(Live::for_tests(), LimitHits::default())
    }

    #[test]
    fn outcomes_read_the_answer_or_why_it_ended() {
        let code = ErrorCode::UnknownSubroutine;
        assert_eq!(Outcome::of(&Ok(()), None), (Outcome::Ok, None));
        assert_eq!(
            Outcome::of(&Ok(()), Some(code)),
            (Outcome::Error(code), None)
        );
        let stalled = Err(Ended::Write(WriteError::Stalled(
            std::time::Duration::from_secs(30),
        )));
        assert_eq!(
            Outcome::of(&stalled, None),
            (Outcome::Error(ErrorCode::Timeout), Some("stall_timeout"))
        );
        let silent = Err(Ended::Read(FrameError::Read(ReadError::Stalled(
            std::time::Duration::from_secs(30),
        ))));
        assert_eq!(
            Outcome::of(&silent, None),
            (Outcome::Error(ErrorCode::Timeout), Some("stall_timeout"))
        );
        let cancelled = Err(Ended::Write(WriteError::Stopped(ErrorCode::Cancelled)));
        assert_eq!(Outcome::of(&cancelled, None), (Outcome::Stopped, None));
        assert_eq!(
            Outcome::of(&Err(Ended::Closed), None),
            (Outcome::Disconnected, None)
        );
    }

    #[test]
    fn op_kinds_sit_at_their_discriminants() {
        for (i, kind) in OpKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{kind:?}");
        }
    }

    #[test]
    fn counters_appear_with_their_labels() {
        let m = metrics();
        m.operation(OpKind::Call, Outcome::Ok);
        m.operation(OpKind::Call, Outcome::Ok);
        m.operation(OpKind::Call, Outcome::Error(ErrorCode::LimitExceeded));
        m.limit_hit("max_frame_len");
        m.items("latest").item();
        m.items("latest").superseded();
        m.file(Direction::Received, 10);
        let text = m.encode();
        for line in [
            "quicswarm_operations_total{kind=\"call\",result=\"ok\"} 2",
            "quicswarm_operations_total{kind=\"call\",result=\"LimitExceeded\"} 1",
            "quicswarm_operations_total{kind=\"put_check\",result=\"ok\"} 0",
            "quicswarm_limit_hits_total{limit=\"max_frame_len\"} 1",
            "quicswarm_stream_items_total{delivery=\"latest\"} 1",
            "quicswarm_superseded_items_total 1",
            "quicswarm_files_total{direction=\"received\"} 1",
            "quicswarm_file_bytes_total{direction=\"received\"} 10",
            "quicswarm_connections 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
