//! quicswarm: a swarm of encrypted QUIC connections for remote subroutines.
//!
//! # The model
//! A [`Gateway`] listens on one UDP port and holds named *subroutines* in a [`Registry`]:
//!
//! | kind | the gateway runs | the client calls |
//! |---|---|---|
//! | **stream** | a producer of `(ident, bytes)` items | [`Client::stream`] → [`ItemStream`] |
//! | **batch** | a function returning bytes once | [`Client::call`] |
//! | **sink** | a consumer of a byte buffer returning an `i64` | [`Client::send`] |
//!
//! A [`Controller`] is one QUIC endpoint that can reach many gateways. Each
//! [`Controller::get_client`] asks a gateway for a *handler*: one handler/client pair is one
//! QUIC connection, and the gateway's handler pool (default 5) refuses more with
//! [`ConnectError::PoolFull`]. Every operation opens its own QUIC stream, so a big transfer
//! never holds back a small reading: there is no head-of-line blocking between operations.
//!
//! Arguments are any `serde` type, sent as postcard; dynamic callers may send JSON
//! ([`Json`]) that the gateway decodes into the same type. A subroutine that fails or
//! panics fails only its caller's request, with a typed [`CallError`].
//!
//! # Security
//! TLS 1.3 always (rustls). A gateway without certificates generates a self-signed one on
//! first start and prints its SHA-256 fingerprint; controllers trust gateways by a private CA
//! or by pinned fingerprints, including trust-on-first-use pins in a `known_gateways` file
//! ([`Trust`]). A changed certificate is a hard [`ConnectError::FingerprintMismatch`].
//! `close_gateway` is refused unless the gateway allows it.
//!
//! Budgets, not trust: every count or size a peer sends (items, paths, a pattern's length,
//! ranges, a declared file size) is checked against [`Limits`] or the protocol's
//! [`proto::limits`] before anything is allocated or planned for it, and what a gateway's
//! operations buffer is charged to a per-operation, per-connection and gateway-wide byte
//! budget. Past a limit the request gets a typed error naming it
//! ([`CallError::LimitExceeded`]); everyone else carries on. Clients hold a hostile gateway to
//! the same rule.
//!
//! # Lossy links
//! [`TransportTuning`] presets tune timeouts and loss detection for LAN, Wi-Fi or cellular;
//! a [`Session`] reconnects by itself (0-RTT) and resumes subscriptions after the last item
//! received; [`Client::subscribe`] picks a [`Delivery`] (reliable; latest-value, or every
//! item unordered, on per-item streams, optionally with datagram copies; latest-value over
//! datagrams with forward error correction; or datagrams) and a priority; [`Controller::get_client_0rtt`] runs replay-safe requests from early data, and
//! [`Client::call_hedged`] sends a replay-safe call again when its answer is late, so that a
//! lost packet does not wait for QUIC's probe timeout.
//!
//! # Metrics
//! [`GatewayBuilder::metrics`] serves the gateway's counters and gauges in the Prometheus
//! text format on `/metrics` (operations by kind and result, limit hits, handshakes, 0-RTT,
//! items, files, bytes, and per client its RTT, congestion window and loss);
//! [`Gateway::metrics`] returns the same text.
//!
//! # Fleets
//! A [`fleet::Fleet`] runs one operation (ping, call, send, list, download, upload, stream,
//! or any closure) on many named gateways through one controller, a bounded number at a
//! time, and yields each gateway's own result as it finishes.
//!
//! # Observability and operations
//! Every line a gateway logs (through `tracing`) sits in spans naming the gateway, the
//! handler (id, client address and identity) and the operation's kind. With the `qlog`
//! feature, `GatewayBuilder::qlog_dir` and `ControllerConfig::qlog_dir` write one qlog file
//! per connection for qvis. [`Gateway::reload`] and [`Gateway::reload_from`] replace the
//! certificate, client CA and permissions of a running gateway; a reload that fails changes
//! nothing.
//!
//! # TLS over TCP
//! Where UDP is blocked, a gateway built with [`GatewayBuilder::tcp`] also serves the same
//! protocol over TLS 1.3 on TCP (operations multiplexed by yamux); controllers dial
//! `tcp://host:port`. QUIC-only features (0-RTT, latest-value and datagram delivery) return
//! typed `Unsupported` errors there. See [`TransportKind`].
//!
//! # Layout
//! - `gateway/`: the [`Gateway`] (`handle.rs`) and its builder (`builder.rs`), the state its tasks share
//!   (`state.rs`: policy, admission, lifecycle, counters), what a reload replaces
//!   (`security.rs`: certificate, client CA, permissions), the accept loops (`accept.rs`), one
//!   handler/client pair (`conn.rs`, `pair.rs`), one operation (`dispatch.rs`: read, admit,
//!   run; `reply.rs`: error replies), and how stream items travel (`deliver/`: reliable,
//!   latest and its in-flight `window.rs`, datagram, unordered, fec and its `pacer.rs`).
//! - `controller/`: the [`Controller`] dials (`mod.rs`), trusts and pins (`dial.rs`) and asks
//!   for a handler (`hello.rs`).
//! - `client/`: the [`Client`]'s operations (`mod.rs`, `send.rs`), each a few lines on one
//!   request function that applies the per-operation policy (`request.rs`); what its clones
//!   share (`inner.rs`), how arguments are encoded (`args.rs`), a subscription's items
//!   (`items.rs`); beside it, the non-reliable deliveries' client side (`subscribe.rs`) and
//!   forward error correction's shards (`fec.rs`: cut on the gateway, rebuilt here).
//! - [`Session`] for links that drop; [`blocking`] for programs without async; [`Registry`]
//!   of subroutines (`subroutine/`: registry, stream emitter, sink input); configuration
//!   (`config.rs`, [`gateway_config`]); [`Permissions`] (`permissions.rs`); memory budgets
//!   (`budget.rs`); the gateway's metrics (`metrics/`: counters, the live gauges, the
//!   `/metrics` endpoint); frames on streams (`io.rs`); why an operation ended early (`ended.rs`);
//!   error types (`error.rs`); qlog files (`qlog.rs`); the demo subroutines (`demo.rs`).
//! - [`files`]: swarm file transfer: the [`Swarm`](files::Swarm) and its jobs (`swarm.rs`,
//!   `job.rs`, `units.rs`), the client's requests (`ops.rs`), the gateway's side (`serve/`:
//!   what is served and `List`, `get.rs`, `put.rs`; `select.rs`, `source.rs`), the
//!   receiver's store (`dest/`: whole files in `commit.rs`, big files' parts in `part.rs`,
//!   how a range is written in `direct.rs`, their locks in `locks.rs`), range hashes
//!   (`tree.rs`), the piece hashes kept per file (`pieces.rs`) and the reused buffers of big
//!   pieces (`buffers.rs`).
//! - [`fleet`]: many gateways at once: members and fleet files (`members.rs`), the generic
//!   per-member runner (`mod.rs`), the operations (`ops.rs`), merged streams (`merged.rs`).
//! - [`tls`]: identities, fingerprints, trust, `certs init`.
//! - `transport/`: QUIC, or TLS over TCP with yamux (`tcp/`: dialling, the driver, the
//!   streams), behind one connection type (`mod.rs`), with errors of our own (`error.rs`) so
//!   that a quinn upgrade changes no public type.
//! - The wire protocol and its pure rules (replay safety, error codes, the TLS-over-TCP
//!   control messages) live in the sans-IO crate [`quicswarm_proto`].
//!
//! # Example
//! ```
//! use quicswarm::{Controller, ControllerConfig, Gateway, Identity, Registry, Trust};
//! use futures_util::stream;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Registry::new();
//! registry
//!     .batch("echo", |s: String| async move { Ok::<_, String>(s.into_bytes()) })
//!     .stream("count", |n: i64, _ctx| {
//!         stream::iter((0..n).map(|i| Ok::<_, String>((i, vec![0u8; 16]))))
//!     })
//!     .sink("sum", |_: (), data: quicswarm::SinkData| async move {
//!         let buf = data.collect().await.map_err(|e| e.to_string())?;
//!         Ok::<_, String>(buf.iter().map(|&b| b as i64).sum::<i64>())
//!     });
//!
//! let identity = Identity::self_signed(&[])?;
//! let pin = identity.fingerprint();
//! let gateway = Gateway::builder()
//!     .listen("127.0.0.1:0".parse()?)
//!     .identity(identity)
//!     .registry(registry)
//!     .spawn()
//!     .await?;
//!
//! let controller = Controller::new(ControllerConfig::with_trust(Trust::Fingerprints(vec![pin])))?;
//! let client = controller.get_client(&gateway.local_addr().to_string()).await?;
//! assert_eq!(&client.call("echo", "hi").await?[..], b"hi");
//! let mut items = client.stream("count", &3i64).await?;
//! while let Some((ident, bytes)) = items.next().await? {
//!     assert_eq!(bytes.len(), 16);
//!     println!("item {ident}");
//! }
//! assert_eq!(client.send("sum", &(), vec![1u8, 2, 3]).await?, 6);
//! client.close().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs, missing_debug_implementations)]

pub mod blocking;
mod budget;
mod client;
mod config;
mod controller;
mod deadline;
pub mod demo;
mod ended;
mod error;
mod fec;
pub mod files;
pub mod fleet;
mod gateway;
pub mod gateway_config;
mod io;
mod metrics;
mod permissions;
mod qlog;
mod session;
mod subroutine;
mod subscribe;
pub mod tls;
mod transport;

/// For tests and benchmarks: sockets that a link emulator can wrap, and the UDP socket the
/// library makes (its buffer sizes included), for a raw quinn endpoint to compare against.
pub mod testing {
    pub use crate::config::{udp_socket, SocketWrapper, WrapFn};
}

pub use client::{Client, ClientStats, ItemStream, Json, StreamOutcome, ToArgs};
pub use config::{Congestion, ControllerConfig, Limits, LinkPreset, TransportTuning};
pub use controller::Controller;
pub use error::{CallError, ConnectError, GatewayError};
pub use gateway::{Gateway, GatewayBuilder, GatewayStats, DEFAULT_LISTEN, DEFAULT_POOL_SIZE};
pub use permissions::{Allow, Permissions};
pub use quicswarm_proto as proto;
pub use quicswarm_proto::{ErrorCode, SubroutineInfo, SubroutineKind};
pub use session::{LinkState, ReconnectPolicy, ResumingStream, Session};
pub use subroutine::{Aborted, Emitter, Registry, SinkData, SinkError, SinkOutput, StreamContext};
pub use subscribe::{Delivery, SubscribeOptions, FEC_PERCENT};
pub use tls::{Fingerprint, Identity, Trust};
pub use transport::{Connection, Disconnect, TransportKind};

/// The README's Rust examples compile as doctests, so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
