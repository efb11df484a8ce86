//! Message types. Variant order is the wire tag: append new variants, never reorder.

use serde::{Deserialize, Serialize};

use crate::{
    transfer::{FileEntry, GetItem, Need, PutItem, Selector},
    ErrorCode,
};

/// First frame on the control stream, client → gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The client's [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
    pub version: u32,
    /// A free-form client name, for the gateway's logs.
    pub name: String,
}

/// The gateway's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The pair is established.
    Welcome(Welcome),
    /// The gateway refuses the pair; it closes the connection with `code` next.
    Refused {
        /// Why, for example [`ErrorCode::PoolFull`].
        code: ErrorCode,
        /// The handler pool's size, so a `PoolFull` refusal can say how many were allowed.
        pool_size: u32,
        /// Human-readable detail.
        message: String,
    },
}

/// Sent when a handler slot was granted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The gateway-unique id of this handler.
    pub handler_id: u64,
    /// Slots in use, this one included.
    pub pool_used: u32,
    /// Size of the handler pool.
    pub pool_size: u32,
    /// The largest frame or stream item the gateway accepts. Clients refuse a larger
    /// request themselves instead of sending it to be refused.
    pub max_frame_len: u64,
    /// The subroutines registered when the pair was made.
    #[serde(deserialize_with = "crate::limits::bounded")]
    pub subroutines: Vec<SubroutineInfo>,
}

/// One registered subroutine, as listed in [`Welcome`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubroutineInfo {
    /// The registered name.
    pub name: String,
    /// Stream, batch or sink.
    pub kind: SubroutineKind,
    /// Whether it may run from 0-RTT early data.
    pub replay_safe: bool,
}

/// The three kinds of subroutine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SubroutineKind {
    /// Yields `(ident, bytes)` items until done.
    Stream,
    /// Returns bytes once.
    Batch,
    /// Takes a byte buffer, returns an `i64`.
    Sink,
}

/// How [`Args::bytes`] is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArgsEncoding {
    /// postcard: compact, for typed Rust callers.
    Postcard,
    /// JSON: for dynamic callers (the CLI, scripts); decoded into the same registered type.
    Json,
}

/// Encoded subroutine arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Args {
    /// The encoding of `bytes`.
    pub encoding: ArgsEncoding,
    /// The encoded value. Encoded as one byte string, not a sequence of `u8`s: the same bytes
    /// on the wire in postcard, without a serde call (and a vector push) per byte.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

impl Args {
    /// Arguments already encoded with postcard.
    pub fn postcard(bytes: Vec<u8>) -> Self {
        Self {
            encoding: ArgsEncoding::Postcard,
            bytes,
        }
    }

    /// Arguments as JSON text.
    pub fn json(text: impl Into<String>) -> Self {
        Self {
            encoding: ArgsEncoding::Json,
            bytes: text.into().into_bytes(),
        }
    }
}

/// First frame of every operation stream, client → gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Round-trip probe; answered by [`Response::Pong`] with the same nonce.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Run a batch subroutine.
    Call {
        /// Subroutine name.
        name: String,
        /// Its arguments.
        args: Args,
        /// The client gives up after this many milliseconds: the gateway cancels the
        /// subroutine then.
        deadline_ms: Option<u32>,
    },
    /// Subscribe to a stream subroutine.
    Stream {
        /// Subroutine name.
        name: String,
        /// Its arguments.
        args: Args,
        /// The last ident the client already holds, when resuming a subscription.
        resume_after: Option<i64>,
        /// Priority and delivery mode.
        options: StreamOptions,
    },
    /// Feed a buffer to a sink subroutine: the raw bytes follow this frame until the
    /// client finishes its side of the stream.
    Send {
        /// Subroutine name.
        name: String,
        /// Its arguments.
        args: Args,
        /// The buffer's length when known in advance (checked by the gateway).
        len: Option<u64>,
        /// As for `Call`.
        deadline_ms: Option<u32>,
    },
    /// Release this handler's pool slot; the connection closes after [`Response::Done`].
    CloseHandler,
    /// Ask the gateway to shut down (refused unless the gateway allows it).
    CloseGateway,
    /// List files of a served root: answered by `Accepted`, then
    /// [`ListFrame`](crate::transfer::ListFrame)s.
    List {
        /// The root's name.
        root: String,
        /// Which files.
        selector: Selector,
        /// Include each file's BLAKE3 (reads every listed file).
        hash: bool,
    },
    /// Fetch files or ranges: answered by `Accepted`, then
    /// [`FileFrame`](crate::transfer::FileFrame)s.
    Get {
        /// The root's name.
        root: String,
        /// What to send, in order.
        #[serde(deserialize_with = "crate::limits::bounded")]
        items: Vec<GetItem>,
    },
    /// Which of these files does the upload folder still need? Answered by `Needs`.
    PutCheck {
        /// Folder below the upload folder.
        dest: String,
        /// The files, with hashes.
        #[serde(deserialize_with = "crate::limits::bounded")]
        entries: Vec<FileEntry>,
        /// Range size the uploader will use.
        range_size: u64,
    },
    /// Upload files or ranges; each item's raw bytes follow, in order. Answered by `Stored`.
    Put {
        /// Folder below the upload folder.
        dest: String,
        /// What follows.
        #[serde(deserialize_with = "crate::limits::bounded")]
        items: Vec<PutItem>,
        /// Range size of ranged items.
        range_size: u64,
    },
}

impl Request {
    /// Whether the request may run from 0-RTT early data, which an attacker can replay:
    /// reads (`Ping`, `List`, `Get`) always, `Call` and `Stream` when
    /// `replay_safe_subroutine(name)` says their subroutine is, nothing that writes or closes.
    /// Both sides apply it: the gateway refuses the rest with `TooEarly`, the client sends the
    /// rest only once the handshake is confirmed.
    pub fn replay_safe(&self, replay_safe_subroutine: impl FnOnce(&str) -> bool) -> bool {
        // No catch-all: a new request must be placed on one side of the rule.
        match self {
            Self::Ping { .. } | Self::List { .. } | Self::Get { .. } => true,
            Self::Call { name, .. } | Self::Stream { name, .. } => replay_safe_subroutine(name),
            Self::Send { .. }
            | Self::CloseHandler
            | Self::CloseGateway
            | Self::PutCheck { .. }
            | Self::Put { .. } => false,
        }
    }
}

/// The gateway's first (often only) frame on an operation stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to `Ping`.
    Pong {
        /// The request's nonce.
        nonce: u64,
    },
    /// A batch result: `len` raw bytes follow.
    Value {
        /// Length of the raw result that follows.
        len: u64,
    },
    /// A sink's result.
    Count {
        /// The returned integer (0 when the sink returns nothing).
        value: i64,
    },
    /// A stream subscription was accepted: [`StreamFrame`]s follow.
    Accepted,
    /// `CloseHandler` or `CloseGateway` was carried out.
    Done,
    /// The request failed.
    Error(ErrorReply),
    /// Answer to `PutCheck`, one per entry.
    Needs(#[serde(deserialize_with = "crate::limits::bounded")] Vec<Need>),
    /// Answer to `Put`: one result per item.
    Stored(#[serde(deserialize_with = "crate::limits::bounded")] Vec<Option<ErrorReply>>),
}

/// How a subscription's items travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Delivery {
    /// Every item, in order, on the request's stream.
    #[default]
    Reliable,
    /// Each item on its own unidirectional stream opened by the gateway, starting with a
    /// [`LatestHeader`]; an item not yet delivered when a newer one is ready is reset
    /// (superseded). `id` routes the streams to the subscription.
    Latest {
        /// Subscription id, chosen by the client, unique on its connection.
        id: u32,
    },
    /// Each item in one QUIC datagram ([`crate::datagram`]): unreliable, unordered, limited
    /// to the path's datagram size.
    Datagram {
        /// Subscription id, chosen by the client, unique on its connection.
        id: u32,
    },
    /// Every item, each on its own unidirectional stream as `Latest` (a [`LatestHeader`]
    /// first), none superseded: reliable, handed out as they arrive, so a lost packet delays
    /// only the items it carried. Last, so the variants before keep their wire numbers.
    Unordered {
        /// Subscription id, chosen by the client, unique on its connection.
        id: u32,
    },
    /// As `Unordered`, and each item that fits a datagram is also sent as one
    /// ([`crate::datagram`]): the client hands out whichever copy arrives first.
    Redundant {
        /// Subscription id, chosen by the client, unique on its connection.
        id: u32,
    },
    /// Each item cut into shards with Reed–Solomon recovery shards, one per datagram
    /// ([`crate::fec`]): any `originals` of the shards rebuild it, so a lost packet costs no
    /// round trip. Newer items replace waiting ones as with `Latest`; the gateway sends an
    /// item only when the path has taken the previous one.
    Fec {
        /// Subscription id, chosen by the client, unique on its connection.
        id: u32,
        /// Recovery shards, in percent of the originals (at least one; at most 100).
        percent: u8,
    },
}

/// Options of a stream subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    /// QUIC send priority of the items (higher first).
    pub priority: i32,
    /// How items travel.
    pub delivery: Delivery,
    /// `Latest` delivery: an item in flight for longer than this is cancelled (superseded)
    /// as soon as a newer one is ready.
    pub max_age_ms: Option<u32>,
}

/// First frame of a [`Delivery::Latest`] item's unidirectional stream; `len` raw bytes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestHeader {
    /// The subscription.
    pub id: u32,
    /// The item's ident.
    pub ident: i64,
    /// When the gateway sent it, microseconds since the Unix epoch (gateway clock).
    pub sent_us: u64,
    /// Bytes that follow.
    pub len: u64,
}

/// [`Delivery::Fec`]: the client's word on one item, sent on the subscription's own stream
/// (its client-to-gateway side, left open for these) once the item is rebuilt or given up.
/// The gateway sizes how many items it keeps on their way from the rate these show, as
/// `Latest` does from its streams' acknowledgements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemReport {
    /// The item.
    pub ident: i64,
    /// Its shards that arrived.
    pub shards: u32,
    /// Microseconds from its first shard's arrival to the one that completed it (zero for an
    /// item given up): the gateway reads the path's bottleneck rate from it.
    pub spread_us: u32,
    /// When the shard that completed it arrived (client clock) minus when the gateway cut it
    /// (gateway clock, the shards' `sent_us`), microseconds; zero for an item given up. The
    /// clocks' offset is unknown, so only its changes mean anything: a growing queue on the
    /// path.
    pub delay_us: i64,
}

/// Frames after [`Response::Accepted`] on a stream subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamFrame {
    /// One item: `len` raw bytes follow.
    Item {
        /// The producer's ident for this item.
        ident: i64,
        /// Length of the raw bytes that follow.
        len: u64,
    },
    /// The producer ended naturally.
    End,
    /// The producer failed.
    Error(ErrorReply),
    /// `Latest` delivery: the item `ident` was superseded (never sent, or cancelled in
    /// flight; a cancelled one may still have arrived whole).
    Superseded {
        /// The superseded item.
        ident: i64,
    },
}

/// A typed failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What kind of failure.
    pub code: ErrorCode,
    /// Human-readable detail (for example the subroutine's error message).
    pub message: String,
}

impl ErrorReply {
    /// A reply with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::Selector;

    #[test]
    fn which_requests_are_replay_safe() {
        let args = || Args::postcard(Vec::new());
        let selector = Selector::default;
        let call = |name: &str| Request::Call {
            name: name.into(),
            args: args(),
            deadline_ms: None,
        };
        let table: Vec<(Request, bool)> = vec![
            (Request::Ping { nonce: 1 }, true),
            (
                Request::List {
                    root: "logs".into(),
                    selector: selector(),
                    hash: false,
                },
                true,
            ),
            (
                Request::Get {
                    root: "logs".into(),
                    items: vec![],
                },
                true,
            ),
            (call("safe"), true),
            (call("unsafe"), false),
            (
                Request::Stream {
                    name: "safe".into(),
                    args: args(),
                    resume_after: None,
                    options: StreamOptions::default(),
                },
                true,
            ),
            (
                Request::Send {
                    name: "safe".into(),
                    args: args(),
                    len: None,
                    deadline_ms: None,
                },
                false,
            ),
            (Request::CloseHandler, false),
            (Request::CloseGateway, false),
            (
                Request::PutCheck {
                    dest: String::new(),
                    entries: vec![],
                    range_size: 1,
                },
                false,
            ),
            (
                Request::Put {
                    dest: String::new(),
                    items: vec![],
                    range_size: 1,
                },
                false,
            ),
        ];
        for (request, safe) in table {
            assert_eq!(
                request.replay_safe(|name| name == "safe"),
                safe,
                "{request:?}"
            );
        }
    }
}
