//! A stream subroutine on every member at once, merged into one stream of tagged items.
//!
//! One task per member subscribes (connections limited by the fleet's concurrency) and
//! forwards its items into one bounded channel: a slow reader slows the producers down
//! rather than letting items pile up. Dropping the merged stream aborts every task, and so
//! every subscription.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::{sync::Semaphore, task::JoinSet};

use super::{bounded, connect, observe, FleetError, FleetEvent, FleetOptions, Member};
use crate::{CallError, Controller, ToArgs};

/// Items buffered between the members' tasks and the reader.
const CHANNEL: usize = 256;

/// What a fleet stream yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum FleetItem {
    /// An item from a member's stream.
    Item {
        /// The member's name.
        gateway: Arc<str>,
        /// The item's ident.
        ident: i64,
        /// Its bytes.
        data: Bytes,
    },
    /// A member's stream ended: `Ok` with its item count when the producer finished, or why
    /// it stopped. The last thing said about that member.
    Ended {
        /// The member's name.
        gateway: Arc<str>,
        /// Items received, or the failure.
        result: Result<u64, FleetError>,
    },
}

/// The merged stream of `name(args)` on every member.
pub(super) fn merged(
    controller: Controller,
    members: Arc<[Arc<Member>]>,
    options: FleetOptions,
    name: Arc<str>,
    args: Encoded,
) -> impl Stream<Item = FleetItem> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL);
    let dialling = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for member in members.iter().cloned() {
        let (tx, controller, options) = (tx.clone(), controller.clone(), options.clone());
        let (name, args, dialling) = (name.clone(), args.clone(), dialling.clone());
        tasks.spawn(async move {
            let gateway: Arc<str> = member.name.as_str().into();
            let result =
                forward(&controller, &member, &options, &name, &args, &dialling, &tx).await;
            let _ = tx.send(FleetItem::Ended { gateway, result }).await;
        });
    }
    // The tasks live as long as the stream: the set is dropped (aborting them) with it.
    futures_util::stream::unfold((rx, tasks), |(mut rx, tasks)| async move {
        let item = rx.recv().await?;
        Some((item, (rx, tasks)))
    })
}

/// Subscribes on one member and forwards its items; returns how many.
async fn forward(
    controller: &Controller,
    member: &Member,
    options: &FleetOptions,
    name: &str,
    args: &Encoded,
    dialling: &Semaphore,
    tx: &tokio::sync::mpsc::Sender<FleetItem>,
) -> Result<u64, FleetError> {
    let gateway: Arc<str> = member.name.as_str().into();
    let (client, mut items) = {
        // Held while connecting and subscribing only: the subscriptions all run at once.
        // (Never closed: `acquire` cannot fail.)
        let _turn = dialling.acquire().await.ok();
        let connecting = async {
            observe(options, member, FleetEvent::Connecting);
            let client = connect(controller, member).await?;
            let items = client.stream(name, args).await?;
            Ok::<_, FleetError>((client, items))
        };
        bounded(options.timeout, connecting).await?
    };
    observe(options, member, FleetEvent::Running);
    let mut count = 0u64;
    let result = loop {
        match items.next().await {
            Ok(Some((ident, data))) => {
                count += 1;
                let item = FleetItem::Item {
                    gateway: gateway.clone(),
                    ident,
                    data,
                };
                if tx.send(item).await.is_err() {
                    // Nobody reads any more.
                    break Ok(count);
                }
            }
            Ok(None) => break Ok(count),
            Err(e) => break Err(FleetError::Call(e)),
        }
    };
    drop(items);
    let _ = client.close().await;
    result
}

/// Arguments encoded once for every member (or the encoding error, for each of them).
#[derive(Debug, Clone)]
pub(super) struct Encoded(Result<crate::proto::Args, String>);

impl Encoded {
    pub(super) fn of(args: &(impl ToArgs + ?Sized)) -> Self {
        Self(args.to_args().map_err(|e| match e {
            CallError::BadArgs(message) => message,
            other => other.to_string(),
        }))
    }
}

impl ToArgs for Encoded {
    fn to_args(&self) -> Result<crate::proto::Args, CallError> {
        self.0.clone().map_err(CallError::BadArgs)
    }
}
