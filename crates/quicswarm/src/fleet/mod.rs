//! Fleets: one operation on many gateways at once.
//!
//! A [`Fleet`] is a set of named gateways ([`Member`]s, usually read from a fleet file, see
//! [`load`]) and one [`Controller`], so one UDP socket, for all of them. Each operation runs
//! on every member with at most [`FleetOptions::concurrency`] at a time and yields one
//! [`FleetResult`] per member *as it finishes*: a gateway that is down, slow or refusing
//! gives its own typed [`FleetError`] and holds back nobody else. Every member gets its own
//! connection for the operation, closed when it is done (so its handler slot is free again).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use futures_util::StreamExt;
//! use quicswarm::{fleet::Fleet, Controller, ControllerConfig};
//!
//! let controller = Controller::new(ControllerConfig::default())?;
//! let fleet = Fleet::from_file(controller, "fleet.txt".as_ref())?;
//! let mut pings = fleet.ping();
//! while let Some(done) = pings.next().await {
//!     match done.result {
//!         Ok(rtt) => println!("{:<12} {:>8.2} ms", done.gateway, rtt.as_secs_f64() * 1e3),
//!         Err(e) => println!("{:<12} {e}", done.gateway),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! A fleet download puts each gateway's files in `DEST/{name}/`; run again, it moves only
//! what each gateway's folder still lacks (see [`Swarm::download`](crate::files::Swarm::download)).

mod members;
mod merged;
mod ops;

pub use self::members::{load, parse, FleetFileError, Member, MAX_MEMBERS, MAX_NAME_LEN};
pub use self::merged::FleetItem;

use std::{
    future::Future,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{stream, Stream, StreamExt};

use crate::{
    files::{Progress, TransferError},
    CallError, Client, ConnectError, Controller,
};

/// How a fleet runs its operations.
#[derive(Clone)]
pub struct FleetOptions {
    /// Gateways worked on at once. Default 64.
    pub concurrency: usize,
    /// Most time one gateway's part may take, connection included; past it the gateway's
    /// result is [`FleetError::Timeout`]. Default `None`: the controller's connect and call
    /// timeouts bound each step, and transfers run as long as they move.
    pub timeout: Option<Duration>,
    /// Connections per gateway for downloads and uploads (a [`Swarm`](crate::files::Swarm)). Default 1: with many
    /// gateways at once, the gateways are the parallelism.
    pub swarm: usize,
    /// Told what each gateway is doing (for live displays).
    pub observer: Option<FleetObserver>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            concurrency: 64,
            timeout: None,
            swarm: 1,
            observer: None,
        }
    }
}

impl std::fmt::Debug for FleetOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetOptions")
            .field("concurrency", &self.concurrency)
            .field("timeout", &self.timeout)
            .field("swarm", &self.swarm)
            .finish_non_exhaustive()
    }
}

/// What a gateway's part of an operation is doing; see [`FleetOptions::observer`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum FleetEvent {
    /// Its turn came: dialling.
    Connecting,
    /// Connected: the operation runs.
    Running,
    /// A transfer's progress.
    Progress(Progress),
}

/// Receives each gateway's [`FleetEvent`]s, with its name. Keep it cheap: it runs on the
/// operation's tasks.
pub type FleetObserver = Arc<dyn Fn(&str, FleetEvent) + Send + Sync>;

/// Why one gateway's part failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// It could not be reached or refused the connection (down, pool full, wrong
    /// certificate).
    #[error("connecting: {0}")]
    Connect(#[from] ConnectError),
    /// The operation failed on it.
    #[error(transparent)]
    Call(#[from] CallError),
    /// A download or upload failed on it.
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// Its part took longer than [`FleetOptions::timeout`].
    #[error("no result within {0:?}")]
    Timeout(Duration),
}

/// One gateway's result.
#[derive(Debug)]
#[non_exhaustive]
pub struct FleetResult<T> {
    /// The member's name.
    pub gateway: Arc<str>,
    /// Its address.
    pub addr: Arc<str>,
    /// What it did.
    pub result: Result<T, FleetError>,
    /// How long its part took, connection included.
    pub elapsed: Duration,
}

/// Many gateways and one controller; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Fleet {
    controller: Controller,
    members: Arc<[Arc<Member>]>,
    options: FleetOptions,
}

impl Fleet {
    /// A fleet of `members`, reached through `controller`.
    ///
    /// # Errors
    /// [`FleetFileError::Invalid`] if two members share a name or there are more than
    /// [`MAX_MEMBERS`].
    pub fn new(controller: Controller, members: Vec<Member>) -> Result<Self, FleetFileError> {
        let mut names = std::collections::HashSet::new();
        if members.len() > MAX_MEMBERS {
            return Err(invalid(format!("more than {MAX_MEMBERS} gateways")));
        }
        for m in &members {
            if !names.insert(m.name.as_str()) {
                return Err(invalid(format!("{:?} is listed twice", m.name)));
            }
        }
        Ok(Self {
            controller,
            members: members.into_iter().map(Arc::new).collect(),
            options: FleetOptions::default(),
        })
    }

    /// A fleet of the gateways a fleet file lists (see [`load`]).
    ///
    /// # Errors
    /// As [`load`].
    pub fn from_file(controller: Controller, path: &Path) -> Result<Self, FleetFileError> {
        Self::new(controller, load(path)?)
    }

    /// The same fleet with other options.
    #[must_use]
    pub fn with_options(mut self, options: FleetOptions) -> Self {
        self.options = options;
        self
    }

    /// The members, in the file's order.
    pub fn members(&self) -> impl ExactSizeIterator<Item = &Member> {
        self.members.iter().map(|m| &**m)
    }

    /// The controller every connection goes through.
    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// Runs `op` with a client of each member (connected for it and closed after it) and
    /// yields each member's result as it finishes: the building block of the other
    /// operations, for anything they do not cover.
    ///
    /// ```no_run
    /// # async fn demo(fleet: quicswarm::fleet::Fleet) {
    /// use futures_util::StreamExt;
    /// // Which subroutines each robot offers.
    /// let mut offers = fleet.each(|client, _member| async move {
    ///     Ok(client.subroutines().iter().map(|s| s.name.clone()).collect::<Vec<_>>())
    /// });
    /// while let Some(done) = offers.next().await {
    ///     println!("{}: {:?}", done.gateway, done.result);
    /// }
    /// # }
    /// ```
    pub fn each<T, F, Fut>(&self, op: F) -> impl Stream<Item = FleetResult<T>> + Send + 'static
    where
        F: Fn(Client, Arc<Member>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, FleetError>> + Send + 'static,
        T: Send + 'static,
    {
        let op = Arc::new(op);
        self.per_member(move |controller, member, options| {
            let op = op.clone();
            async move {
                let client = connect(&controller, &member).await?;
                observe(&options, &member, FleetEvent::Running);
                let result = op(client.clone(), member.clone()).await;
                // Free the handler slot now, whatever the result.
                let _ = client.close().await;
                result
            }
        })
    }

    /// Connects to every member and yields the clients: for programs that send many
    /// requests to the whole fleet and keep the connections (closing them is theirs).
    pub fn connect(&self) -> impl Stream<Item = FleetResult<Client>> + Send + 'static {
        self.per_member(|controller, member, _| async move { connect(&controller, &member).await })
    }

    /// Runs `part` for each member, at most `concurrency` at once, each bounded by the
    /// fleet's timeout, and yields the results as they come.
    fn per_member<T, F, Fut>(&self, part: F) -> impl Stream<Item = FleetResult<T>> + Send + 'static
    where
        F: Fn(Controller, Arc<Member>, FleetOptions) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, FleetError>> + Send + 'static,
        T: Send + 'static,
    {
        let (controller, options) = (self.controller.clone(), self.options.clone());
        let members = self.members.clone();
        let concurrency = options.concurrency.max(1);
        stream::iter(0..members.len())
            .map(move |i| {
                let member = members[i].clone();
                observe(&options, &member, FleetEvent::Connecting);
                let work = part(controller.clone(), member.clone(), options.clone());
                let timeout = options.timeout;
                async move {
                    let start = Instant::now();
                    let result = bounded(timeout, work).await;
                    FleetResult {
                        gateway: member.name.as_str().into(),
                        addr: member.addr.as_str().into(),
                        result,
                        elapsed: start.elapsed(),
                    }
                }
            })
            .buffer_unordered(concurrency)
    }
}

fn invalid(message: String) -> FleetFileError {
    FleetFileError::Invalid {
        path: None,
        line: 0,
        message,
    }
}

fn observe(options: &FleetOptions, member: &Member, event: FleetEvent) {
    if let Some(observer) = &options.observer {
        observer(&member.name, event);
    }
}

/// `work`, or [`FleetError::Timeout`] once it has run for `limit`.
async fn bounded<T>(
    limit: Option<Duration>,
    work: impl Future<Output = Result<T, FleetError>>,
) -> Result<T, FleetError> {
    // `None` only when there is a limit.
    crate::deadline::within(limit, work)
        .await
        .unwrap_or_else(|| Err(FleetError::Timeout(limit.unwrap_or_default())))
}

/// Dials `member`: pinned to its fingerprint when the fleet file gives one.
async fn connect(controller: &Controller, member: &Member) -> Result<Client, FleetError> {
    let client = match member.fingerprint {
        Some(fp) => controller.get_client_pinned(&member.addr, fp).await?,
        None => controller.get_client(&member.addr).await?,
    };
    Ok(client)
}
