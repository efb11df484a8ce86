//! One transfer's shared state: what is planned, stored and failed, the progress it
//! reports, and the queue of units every connection's workers take from.

use std::{
    collections::VecDeque,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Instant,
};

use quicswarm_proto::transfer::{is_ranged, range_count, FileEntry, Need, Unit};
use tokio::sync::Notify;

use super::{Progress, ProgressFn, TransferError, TransferOptions, TransferSummary};
use crate::Client;

/// Counters and results shared by a job's workers.
pub(super) struct Job {
    /// The job's files, by index.
    pub(super) entries: Arc<Vec<FileEntry>>,
    pub(super) files_total: u64,
    pub(super) bytes_total: u64,
    pub(super) skipped: u64,
    pub(super) files_done: AtomicU64,
    pub(super) bytes_done: AtomicU64,
    pub(super) start: Instant,
    /// Index of each stored file.
    pub(super) stored: Mutex<Vec<usize>>,
    /// Index of each skipped file.
    pub(super) already: Vec<usize>,
    /// Index and error of each failed file.
    pub(super) failed: Mutex<Vec<(usize, TransferError)>>,
    /// Ranges still to store, per ranged file.
    pub(super) ranges_left: Mutex<std::collections::HashMap<usize, usize>>,
    pub(super) progress: Option<ProgressFn>,
}

impl Job {
    pub(super) fn new(
        entries: &Arc<Vec<FileEntry>>,
        needs: &[Need],
        options: &TransferOptions,
        start: Instant,
    ) -> Self {
        let mut job = Self {
            entries: entries.clone(),
            files_total: 0,
            bytes_total: 0,
            skipped: 0,
            files_done: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            start,
            stored: Mutex::new(Vec::new()),
            already: Vec::new(),
            failed: Mutex::new(Vec::new()),
            ranges_left: Mutex::new(std::collections::HashMap::new()),
            progress: options.progress.clone(),
        };
        let rs = options.range_size.max(1);
        let mut ranges_left = std::collections::HashMap::new();
        for (i, (e, n)) in entries.iter().zip(needs).enumerate() {
            match n {
                Need::Skip => {
                    job.skipped += 1;
                    job.already.push(i);
                }
                Need::Whole => {
                    job.files_total += 1;
                    job.bytes_total += e.size;
                    if is_ranged(e.size, rs) {
                        ranges_left.insert(i, range_count(e.size, rs) as usize);
                    }
                }
                Need::Ranges(missing) => {
                    job.files_total += 1;
                    job.bytes_total += missing
                        .iter()
                        .flat_map(|r| r.indices())
                        .map(|r| rs.min(e.size.saturating_sub(u64::from(r) * rs)))
                        .sum::<u64>();
                    let count: u64 = missing.iter().map(|r| u64::from(r.count)).sum();
                    ranges_left.insert(i, count as usize);
                }
            }
        }
        job.ranges_left = Mutex::new(ranges_left);
        job
    }

    /// A range of file `index` was stored; the file counts as stored with its last range.
    pub(super) fn range_stored(&self, index: usize, len: u64) {
        self.bytes_done.fetch_add(len, Ordering::Relaxed);
        let mut left = self
            .ranges_left
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = left.get_mut(&index) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                left.remove(&index);
                drop(left);
                return self.stored(index, 0);
            }
        }
        drop(left);
        self.report();
    }

    /// File `index` (planned as skipped) failed before the transfer began.
    pub(super) fn exclude(&mut self, index: usize, error: TransferError) {
        self.already.retain(|&i| i != index);
        self.skipped = self.skipped.saturating_sub(1);
        self.fail(index, error);
    }

    pub(super) fn sizes(&self) -> Vec<u64> {
        self.entries.iter().map(|e| e.size).collect()
    }

    pub(super) fn progress(&self) -> Progress {
        Progress {
            files_done: self.files_done.load(Ordering::Relaxed),
            files_total: self.files_total,
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total,
            skipped: self.skipped,
            elapsed: self.start.elapsed(),
        }
    }

    pub(super) fn stored(&self, index: usize, bytes: u64) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
        self.stored
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(index);
        self.report();
    }

    pub(super) fn report(&self) {
        if let Some(cb) = &self.progress {
            cb(&self.progress());
        }
    }

    pub(super) fn fail(&self, index: usize, error: impl Into<TransferError>) {
        let error = error.into();
        tracing::warn!(path = self.entries[index].path, "transfer failed: {error}");
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((index, error));
    }

    pub(super) fn finish(&self) -> Result<TransferSummary, TransferError> {
        let entries = &self.entries;
        let p = self.progress();
        self.report();
        let failed =
            std::mem::take(&mut *self.failed.lock().unwrap_or_else(PoisonError::into_inner));
        if !failed.is_empty() {
            // A ranged file can fail once per range: it is one failed file, with its first
            // error (every error stays in `failed` until here, for the disk-full cleanup).
            let mut seen = std::collections::HashSet::new();
            return Err(TransferError::Partial {
                total: entries.len(),
                failed: failed
                    .into_iter()
                    .filter(|(i, _)| seen.insert(*i))
                    .map(|(i, e)| (entries[i].path.clone(), e))
                    .collect(),
            });
        }
        let mut verified: Vec<String> = self
            .already
            .iter()
            .map(|&i| entries[i].path.clone())
            .collect();
        verified.extend(
            self.stored
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|&i| entries[i].path.clone()),
        );
        verified.sort();
        Ok(TransferSummary {
            files: p.files_done,
            bytes: p.bytes_done,
            skipped: self.skipped,
            seconds: p.elapsed.as_secs_f64(),
            verified,
        })
    }
}

/// How one unit ended.
pub(super) enum UnitEnd {
    /// Done (its files' failures, if any, are recorded in the job).
    Done,
    /// The connection is gone: give the unit to another connection.
    Lost,
}

/// The shared work queue.
pub(super) struct Queue {
    pub(super) units: VecDeque<Unit>,
    pub(super) in_flight: usize,
}

/// Runs `units` on every client's workers until all are done or every connection is lost.
pub(super) async fn run_units<F, Fut>(
    clients: &[Client],
    units: Vec<Unit>,
    options: &TransferOptions,
    exec: F,
) -> Result<(), TransferError>
where
    F: Fn(Client, Unit) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = UnitEnd> + Send + 'static,
{
    let queue = Arc::new((
        Mutex::new(Queue {
            units: units.into(),
            in_flight: 0,
        }),
        Notify::new(),
    ));
    let mut workers = tokio::task::JoinSet::new();
    for client in clients {
        for _ in 0..options.streams_per_client.max(1) {
            let (queue, exec, client) = (queue.clone(), exec.clone(), client.clone());
            workers.spawn(async move {
                loop {
                    let (lock, notify) = &*queue;
                    let notified = notify.notified();
                    let unit = {
                        let mut q = lock.lock().unwrap_or_else(PoisonError::into_inner);
                        match q.units.pop_front() {
                            Some(u) => {
                                q.in_flight += 1;
                                Some(u)
                            }
                            None if q.in_flight == 0 => return,
                            None => None,
                        }
                    };
                    let Some(unit) = unit else {
                        // Others are still working: one of them may hand a unit back.
                        notified.await;
                        continue;
                    };
                    if client.connection().close_reason().is_some() {
                        let mut q = lock.lock().unwrap_or_else(PoisonError::into_inner);
                        q.units.push_front(unit);
                        q.in_flight -= 1;
                        drop(q);
                        notify.notify_waiters();
                        return;
                    }
                    let end = exec(client.clone(), unit.clone()).await;
                    let lost = matches!(end, UnitEnd::Lost);
                    {
                        let mut q = lock.lock().unwrap_or_else(PoisonError::into_inner);
                        q.in_flight -= 1;
                        if lost {
                            q.units.push_front(unit);
                        }
                    }
                    notify.notify_waiters();
                    if lost {
                        return;
                    }
                }
            });
        }
    }
    while let Some(result) = workers.join_next().await {
        if let Err(e) = result {
            if e.is_panic() {
                tracing::error!("transfer worker panicked: {e}");
            }
        }
    }
    let left = queue
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .units
        .len();
    if left > 0 {
        return Err(TransferError::AllConnectionsLost { left });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_whose_ranges_fail_counts_once() {
        let entry = |path: &str| FileEntry {
            path: path.into(),
            size: 10,
            mtime: Default::default(),
            mode: 0o644,
            hash: None,
        };
        let entries = Arc::new(vec![entry("a"), entry("b")]);
        let job = Job::new(
            &entries,
            &[Need::Whole, Need::Whole],
            &TransferOptions::default(),
            Instant::now(),
        );
        job.fail(0, TransferError::Cancelled);
        job.fail(
            0,
            crate::CallError::Timeout(std::time::Duration::from_secs(1)),
        );
        job.stored(1, 10);
        match job.finish() {
            Err(TransferError::Partial { total, failed }) => {
                assert_eq!(total, 2);
                assert_eq!(failed.len(), 1, "{failed:?}");
                assert!(
                    matches!(failed[0].1, TransferError::Cancelled),
                    "first error kept"
                );
            }
            other => panic!("expected Partial, got {other:?}"),
        }
    }
}
