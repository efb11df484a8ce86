//! A client that stays connected: it notices a lost link, reconnects with capped backoff
//! (resuming the TLS session with 0-RTT), reports every state change, and resumes stream
//! subscriptions after the last ident received.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use bytes::Bytes;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{CallError, Client, ConnectError, Controller, ItemStream, SubscribeOptions, ToArgs};

/// How a [`Session`] reconnects.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// First wait before a new attempt. Default 50 ms.
    pub initial_backoff: Duration,
    /// Longest wait between attempts (the wait doubles up to it). Default 2 s.
    pub max_backoff: Duration,
    /// Give up after this many failed attempts in a row; `None` never gives up (the default).
    pub max_attempts: Option<u32>,
    /// An attempt whose handshake has not completed in this time is abandoned for a fresh
    /// one (bounded by the controller's connect timeout). During an outage a handshake's
    /// retransmissions back off exponentially, so a link that returns is reached sooner by a
    /// new attempt than by the old one's next retransmission. Default 1 s.
    pub attempt_timeout: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            max_attempts: None,
            attempt_timeout: Duration::from_secs(1),
        }
    }
}

/// The state of a [`Session`]'s link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkState {
    /// A connection is up.
    Connected,
    /// The connection was lost; this is the `attempt`-th try to reconnect.
    Reconnecting {
        /// Attempt number, from 1.
        attempt: u32,
    },
    /// Closed: by [`Session::close`], or after `max_attempts` failures.
    Closed,
}

struct Shared {
    controller: Controller,
    addr: String,
    current: Mutex<Client>,
    state: watch::Sender<LinkState>,
    reconnects: AtomicU64,
}

/// A client to one gateway that survives outages.
///
/// Operations run on the current connection. One in flight when the link drops fails with
/// [`CallError::ConnectionLost`] and is **not** repeated (it may or may not have run); the
/// caller decides. Subscriptions made with [`subscribe`](Self::subscribe) continue by
/// themselves after a reconnect, from the item after the last one received (the stream
/// subroutine gets it as `StreamContext::resume_after`).
///
/// # Drop behavior
/// Dropping the session stops reconnecting and closes the connection.
///
/// # Examples
/// ```no_run
/// # async fn demo(controller: quicswarm::Controller) -> Result<(), Box<dyn std::error::Error>> {
/// use quicswarm::{ReconnectPolicy, Session, SubscribeOptions};
///
/// let session = Session::connect(&controller, "robot.local:1857", ReconnectPolicy::default()).await?;
/// let mut states = session.watch_state();
/// tokio::spawn(async move {
///     while states.changed().await.is_ok() {
///         println!("link: {:?}", *states.borrow());
///     }
/// });
/// let mut odometry = session.subscribe("odometry", &(), &SubscribeOptions::default()).await?;
/// while let Some((ident, reading)) = odometry.next().await? {
///     // gaps never happen: after an outage the stream resumes after `ident`
/// }
/// # Ok(()) }
/// ```
pub struct Session {
    shared: Arc<Shared>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("gateway", &self.shared.addr)
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

impl Session {
    /// Connects (a full handshake) and starts watching the link.
    ///
    /// # Errors
    /// As [`Controller::get_client`]: the first connection must succeed.
    pub async fn connect(
        controller: &Controller,
        addr: &str,
        policy: ReconnectPolicy,
    ) -> Result<Self, ConnectError> {
        let client = controller.get_client(addr).await?;
        let (state, _) = watch::channel(LinkState::Connected);
        let shared = Arc::new(Shared {
            controller: controller.clone(),
            addr: addr.to_string(),
            current: Mutex::new(client),
            state,
            reconnects: AtomicU64::new(0),
        });
        let supervisor = tokio::spawn(supervise(shared.clone(), policy));
        Ok(Self { shared, supervisor })
    }

    /// The current client (it changes after a reconnect).
    pub fn client(&self) -> Client {
        self.shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The link state now.
    pub fn state(&self) -> LinkState {
        *self.shared.state.borrow()
    }

    /// Watches the link state: every change (connected, reconnecting, closed) is seen.
    pub fn watch_state(&self) -> watch::Receiver<LinkState> {
        self.shared.state.subscribe()
    }

    /// Reconnections so far.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// Waits until connected (at once if already) and returns the client.
    ///
    /// # Errors
    /// [`CallError::ShuttingDown`] once the session is closed for good.
    pub async fn connected(&self) -> Result<Client, CallError> {
        let mut rx = self.shared.state.subscribe();
        loop {
            let state = *rx.borrow_and_update();
            if state == LinkState::Closed {
                return Err(CallError::ShuttingDown);
            }
            let client = self.client();
            // The state may lag a connection that just died: wait for the supervisor then.
            if state == LinkState::Connected && client.connection().close_reason().is_none() {
                return Ok(client);
            }
            if rx.changed().await.is_err() {
                return Err(CallError::ShuttingDown);
            }
        }
    }

    /// Calls a batch subroutine on the current connection (waiting for one if reconnecting).
    ///
    /// # Errors
    /// As [`Client::call`]; a call in flight when the link drops fails with
    /// `ConnectionLost` and is not repeated.
    pub async fn call(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
    ) -> Result<Bytes, CallError> {
        self.connected().await?.call(name, args).await
    }

    /// [`Client::call_hedged`] on the current connection (waiting for one if reconnecting).
    ///
    /// # Errors
    /// As [`Client::call_hedged`]; a call in flight when the link drops fails with
    /// `ConnectionLost` and is not repeated.
    pub async fn call_hedged(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
        after: Duration,
    ) -> Result<Bytes, CallError> {
        self.connected().await?.call_hedged(name, args, after).await
    }

    /// Subscribes to a stream subroutine; the subscription resumes by itself after a
    /// reconnect, from the item after the last one received.
    ///
    /// # Errors
    /// As [`Client::subscribe`], for the first subscription.
    pub async fn subscribe(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
        options: &SubscribeOptions,
    ) -> Result<ResumingStream, CallError> {
        let args = args.to_args()?;
        let stream = self
            .connected()
            .await?
            .subscribe(name, &RawArgs(args.clone()), options)
            .await?;
        Ok(ResumingStream {
            shared: self.shared.clone(),
            name: name.to_string(),
            args,
            options: *options,
            last: None,
            stream,
            resumed: 0,
            superseded_before: 0,
        })
    }

    /// Stops reconnecting and closes the connection politely. Other holders of the session
    /// (a call in flight on another task) see it closed.
    pub async fn close(&self) {
        self.supervisor.abort();
        let _ = self.shared.state.send(LinkState::Closed);
        let _ = self.client().close().await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.supervisor.abort();
        let _ = self.shared.state.send(LinkState::Closed);
    }
}

/// Already-encoded arguments, re-sent as they are.
struct RawArgs(quicswarm_proto::Args);

impl ToArgs for RawArgs {
    fn to_args(&self) -> Result<quicswarm_proto::Args, CallError> {
        Ok(self.0.clone())
    }
}

/// Waits for the connection to drop, then reconnects with backoff, forever (or up to the
/// policy's limit).
async fn supervise(shared: Arc<Shared>, policy: ReconnectPolicy) {
    loop {
        let conn = shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .connection()
            .clone();
        let reason = conn.closed().await;
        warn!(gateway = %shared.addr, "connection lost: {reason}");
        let mut backoff = policy.initial_backoff;
        let mut attempt = 0u32;
        let client = loop {
            attempt += 1;
            if policy.max_attempts.is_some_and(|max| attempt > max) {
                let _ = shared.state.send(LinkState::Closed);
                return;
            }
            let _ = shared.state.send(LinkState::Reconnecting { attempt });
            // 0-RTT: with the ticket of the lost connection, the first requests need no
            // handshake round trip. TCP has no 0-RTT: a full handshake there.
            let limit = shared
                .controller
                .config()
                .connect_timeout
                .min(policy.attempt_timeout);
            let tcp = crate::controller::transport_of(&shared.addr).0 == crate::TransportKind::Tcp;
            let dial = async {
                if tcp {
                    shared.controller.get_client(&shared.addr).await
                } else {
                    shared.controller.get_client_0rtt(&shared.addr).await
                }
            };
            match tokio::time::timeout(limit, dial).await {
                // Connected only once the handshake completed: with 0-RTT the client exists
                // before the gateway has heard of it (and the link may still be down).
                Ok(Ok(client)) => {
                    match tokio::time::timeout(limit, client.inner_confirmed()).await {
                        Ok(()) if client.connection().close_reason().is_none() => break client,
                        _ => warn!(gateway = %shared.addr, attempt, "reconnect: no handshake"),
                    }
                }
                Ok(Err(e)) => warn!(gateway = %shared.addr, attempt, "reconnect failed: {e}"),
                Err(_) => warn!(gateway = %shared.addr, attempt, "reconnect: no handshake"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(policy.max_backoff);
        };
        *shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = client;
        shared.reconnects.fetch_add(1, Ordering::Relaxed);
        info!(gateway = %shared.addr, attempt, "reconnected");
        let _ = shared.state.send(LinkState::Connected);
    }
}

/// A subscription of a [`Session`] that resumes after reconnects.
pub struct ResumingStream {
    shared: Arc<Shared>,
    name: String,
    args: quicswarm_proto::Args,
    options: SubscribeOptions,
    last: Option<i64>,
    stream: ItemStream,
    resumed: u64,
    /// Superseded items counted by streams replaced at a resume.
    superseded_before: u64,
}

impl std::fmt::Debug for ResumingStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumingStream")
            .field("name", &self.name)
            .field("last", &self.last)
            .field("resumed", &self.resumed)
            .finish_non_exhaustive()
    }
}

impl ResumingStream {
    /// The next item; `None` at the producer's natural end.
    ///
    /// # Errors
    /// The producer's failure, or [`CallError::ShuttingDown`] once the session is closed.
    pub async fn next(&mut self) -> Result<Option<(i64, Bytes)>, CallError> {
        loop {
            match self.stream.next().await {
                Ok(Some((ident, data))) => {
                    self.last = Some(ident);
                    return Ok(Some((ident, data)));
                }
                Ok(None) => return Ok(None),
                // The link dropped or the gateway went down (it may come back): resume.
                Err(
                    CallError::ConnectionLost(_) | CallError::TooEarly | CallError::ShuttingDown,
                ) => self.resubscribe().await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Items superseded so far (`Latest` delivery), across resumes.
    pub fn superseded(&self) -> u64 {
        self.superseded_before + self.stream.superseded()
    }

    /// How many times the subscription was resumed after a reconnect.
    pub fn resumed(&self) -> u64 {
        self.resumed
    }

    /// Subscribes again on the next connection, after the last ident received.
    async fn resubscribe(&mut self) -> Result<(), CallError> {
        let mut rx = self.shared.state.subscribe();
        loop {
            if *rx.borrow_and_update() == LinkState::Closed {
                return Err(CallError::ShuttingDown);
            }
            let client = self
                .shared
                .current
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            // Still the lost connection: wait for the supervisor to replace it.
            if client.connection().close_reason().is_none() {
                let args = RawArgs(self.args.clone());
                match client
                    .subscribe_from(&self.name, &args, self.last, &self.options)
                    .await
                {
                    Ok(stream) => {
                        self.superseded_before += self.stream.superseded();
                        self.stream = stream;
                        self.resumed += 1;
                        return Ok(());
                    }
                    Err(
                        CallError::ConnectionLost(_)
                        | CallError::TooEarly
                        | CallError::ShuttingDown,
                    ) => {}
                    Err(e) => return Err(e),
                }
            }
            if rx.changed().await.is_err() {
                return Err(CallError::ShuttingDown);
            }
        }
    }
}
