//! The fleet's operations: each a few lines on [`Fleet::each`] (or, for streams, on the
//! merged subscription in `merged.rs`).

use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::Stream;

use super::{
    connect,
    merged::{self, Encoded},
    Fleet, FleetError, FleetEvent, FleetItem, FleetOptions, FleetResult, Member,
};
use crate::{
    files::{Listing, Progress, Selector, Swarm, TransferOptions, TransferSummary},
    Client, ConnectError, Controller, ToArgs,
};

impl Fleet {
    /// Pings every member: the round trip of one ping on a fresh connection.
    pub fn ping(&self) -> impl Stream<Item = FleetResult<Duration>> + Send + 'static {
        self.each(|client, _| async move { Ok(client.ping().await?) })
    }

    /// Calls the batch subroutine `name` on every member. The arguments are encoded once.
    pub fn call(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
    ) -> impl Stream<Item = FleetResult<Bytes>> + Send + 'static {
        let (name, args) = (Arc::<str>::from(name), Arc::new(Encoded::of(args)));
        self.each(move |client, _| {
            let (name, args) = (name.clone(), args.clone());
            async move { Ok(client.call(&name, &*args).await?) }
        })
    }

    /// Feeds `data` to the sink subroutine `name` on every member.
    pub fn send(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
        data: Bytes,
    ) -> impl Stream<Item = FleetResult<i64>> + Send + 'static {
        let (name, args) = (Arc::<str>::from(name), Arc::new(Encoded::of(args)));
        self.each(move |client, _| {
            let (name, args, data) = (name.clone(), args.clone(), data.clone());
            async move { Ok(client.send(&name, &*args, data).await?) }
        })
    }

    /// Lists root `root` of every member.
    pub fn list(
        &self,
        root: &str,
        selector: &Selector,
    ) -> impl Stream<Item = FleetResult<Listing>> + Send + 'static {
        let (root, selector) = (Arc::<str>::from(root), Arc::new(selector.clone()));
        self.each(move |client, _| {
            let (root, selector) = (root.clone(), selector.clone());
            async move { Ok(client.list(&root, &selector).await?) }
        })
    }

    /// Downloads root `root` of every member into `dest/{name}/`. Run again, each gateway
    /// moves only what its folder lacks.
    pub fn download(
        &self,
        root: &str,
        selector: &Selector,
        dest: impl Into<PathBuf>,
        options: &TransferOptions,
    ) -> impl Stream<Item = FleetResult<TransferSummary>> + Send + 'static {
        let (root, selector) = (Arc::<str>::from(root), Arc::new(selector.clone()));
        let (dest, transfer) = (Arc::new(dest.into()), options.clone());
        let (controller, fleet) = (self.controller.clone(), self.options.clone());
        self.each(move |client, member| {
            let (root, selector, dest) = (root.clone(), selector.clone(), dest.clone());
            let transfer = with_progress(&transfer, &fleet, &member);
            let (controller, fleet) = (controller.clone(), fleet.clone());
            async move {
                let into = dest.join(&member.name);
                let swarm = swarm_of(&controller, &member, &fleet, client).await?;
                let done = swarm.download(&root, &selector, &into, &transfer).await;
                close_extra(swarm).await;
                Ok(done?)
            }
        })
    }

    /// Uploads local files and folders into `dest` below every member's upload folder.
    pub fn upload(
        &self,
        paths: &[PathBuf],
        dest: &str,
        options: &TransferOptions,
    ) -> impl Stream<Item = FleetResult<TransferSummary>> + Send + 'static {
        let (paths, dest) = (Arc::<[PathBuf]>::from(paths), Arc::<str>::from(dest));
        let (transfer, controller, fleet) = (
            options.clone(),
            self.controller.clone(),
            self.options.clone(),
        );
        self.each(move |client, member| {
            let (paths, dest) = (paths.clone(), dest.clone());
            let transfer = with_progress(&transfer, &fleet, &member);
            let (controller, fleet) = (controller.clone(), fleet.clone());
            async move {
                let swarm = swarm_of(&controller, &member, &fleet, client).await?;
                let done = swarm.upload(&paths, &dest, &transfer).await;
                close_extra(swarm).await;
                Ok(done?)
            }
        })
    }

    /// Subscribes to the stream subroutine `name` on every member and merges their items,
    /// each tagged with its gateway; a member's end (or failure) is an item too. Connections
    /// are made at most [`FleetOptions::concurrency`] at a time; the subscriptions then all
    /// run together. Dropping the stream ends every subscription.
    pub fn stream(
        &self,
        name: &str,
        args: &(impl ToArgs + ?Sized),
    ) -> impl Stream<Item = FleetItem> + Send + 'static {
        merged::merged(
            self.controller.clone(),
            self.members.clone(),
            self.options.clone(),
            name.into(),
            Encoded::of(args),
        )
    }
}

/// `client` and up to `options.swarm - 1` more clients of `member`, dialled as `client` was
/// (pinned when the member is); a full pool ends the opening early.
async fn swarm_of(
    controller: &Controller,
    member: &Member,
    options: &FleetOptions,
    client: Client,
) -> Result<Swarm, FleetError> {
    let mut clients = vec![client];
    while clients.len() < options.swarm {
        match connect(controller, member).await {
            Ok(more) => clients.push(more),
            Err(FleetError::Connect(ConnectError::PoolFull { .. })) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(Swarm::new(clients))
}

/// Closes the clients `swarm_of` added; the first is `each`'s, which closes it.
async fn close_extra(swarm: Swarm) {
    for client in swarm.clients().iter().skip(1) {
        let _ = client.clone().close().await;
    }
}

/// `transfer` reporting its progress to the fleet's observer, under `member`'s name.
fn with_progress(
    transfer: &TransferOptions,
    fleet: &FleetOptions,
    member: &Arc<Member>,
) -> TransferOptions {
    let mut transfer = transfer.clone();
    if let Some(observer) = fleet.observer.clone() {
        let (member, inner) = (member.clone(), transfer.progress.take());
        transfer.progress = Some(Arc::new(move |p: &Progress| {
            observer(&member.name, FleetEvent::Progress(*p));
            if let Some(inner) = &inner {
                inner(p);
            }
        }));
    }
    transfer
}
