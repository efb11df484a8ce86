//! The call timeout of all of a client's requests, on one timer.
//!
//! A tokio timer per request (made, entered in the runtime's timer wheel, taken out again)
//! cost the client's thread about a fifth of its CPU per call with many calls in flight: core
//! bench, `--only calls --in-flight 256`, client CPU per call 1.49-1.54x raw quinn's with it
//! and 1.22-1.36x with no call timeout (three alternating runs). Here a request answered on
//! its first poll costs nothing; one that waits takes a slot in a table under a lock; and one
//! task per client sleeps until the earliest deadline. All of a client's requests have the
//! same limit, so a deadline taken later is never earlier than those already waiting: that
//! task's sleep never needs cutting short.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    task::{Context, Poll, Waker},
    time::Duration,
};

use slab::Slab;
use tokio::{sync::Notify, time::Instant};

/// The waiting requests of one client and their deadlines.
#[derive(Debug)]
pub(crate) struct Deadlines {
    limit: Option<Duration>,
    waiting: Mutex<Slab<Waiting>>,
    /// Wakes the watchdog: a first request waiting, or this table gone.
    wake: Arc<Notify>,
}

#[derive(Debug)]
struct Waiting {
    deadline: Instant,
    waker: Waker,
    expired: bool,
}

impl Deadlines {
    /// Deadlines `limit` after each request starts waiting (none at all for `None`). With a
    /// limit, its watchdog task is spawned on the current runtime.
    pub(crate) fn new(limit: Option<Duration>) -> Arc<Self> {
        let wake = Arc::new(Notify::new());
        let deadlines = Arc::new(Self {
            limit,
            waiting: Mutex::default(),
            wake: wake.clone(),
        });
        if limit.is_some() {
            tokio::spawn(watch(Arc::downgrade(&deadlines), wake));
        }
        deadlines
    }

    /// The limit every request has, if any.
    pub(crate) fn limit(&self) -> Option<Duration> {
        self.limit
    }

    /// `fut`'s output, or `None` once it has waited the limit.
    pub(crate) fn bound<F: Future>(&self, fut: F) -> Bounded<'_, F> {
        Bounded {
            fut,
            deadlines: self,
            key: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slab<Waiting>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the requests past their deadline at `now` and wakes them; returns the earliest
    /// deadline still ahead.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        {
            let mut waiting = self.lock();
            for (_, w) in waiting.iter_mut().filter(|(_, w)| !w.expired) {
                if w.deadline <= now {
                    w.expired = true;
                    due.push(std::mem::replace(&mut w.waker, Waker::noop().clone()));
                } else {
                    next = Some(next.map_or(w.deadline, |n| n.min(w.deadline)));
                }
            }
        }
        // Woken outside the lock: a woken request takes it again.
        due.into_iter().for_each(Waker::wake);
        next
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        // The watchdog may be waiting for a first request: let it see the table is gone.
        self.wake.notify_one();
    }
}

/// Sleeps until the earliest deadline, expires what is due, and again; waits for a request
/// while none waits. Ends as soon as its table is dropped, asleep or not.
async fn watch(deadlines: Weak<Deadlines>, wake: Arc<Notify>) {
    loop {
        let next = match deadlines.upgrade() {
            Some(deadlines) => deadlines.expire(Instant::now()),
            None => return,
        };
        match next {
            // A notice meanwhile (a first request, which has a later deadline, or the table
            // dropped) costs one look at the table.
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request bounded by its client's call timeout (see [`Deadlines::bound`]).
    pub(crate) struct Bounded<'a, F> {
        #[pin]
        fut: F,
        deadlines: &'a Deadlines,
        // Its slot in the table, once it has had to wait.
        key: Option<usize>,
    }

    impl<F> PinnedDrop for Bounded<'_, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(key) = this.key.take() {
                this.deadlines.lock().try_remove(key);
            }
        }
    }
}

impl<F: Future> Future for Bounded<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The work first: an answer that is here wins over a deadline just passed.
        if let Poll::Ready(out) = this.fut.poll(cx) {
            if let Some(key) = this.key.take() {
                this.deadlines.lock().try_remove(key);
            }
            return Poll::Ready(Some(out));
        }
        let Some(limit) = this.deadlines.limit else {
            return Poll::Pending;
        };
        let mut waiting = this.deadlines.lock();
        match *this.key {
            None => {
                let first = waiting.is_empty();
                *this.key = Some(waiting.insert(Waiting {
                    deadline: Instant::now() + limit,
                    waker: cx.waker().clone(),
                    expired: false,
                }));
                drop(waiting);
                if first {
                    this.deadlines.wake.notify_one();
                }
                Poll::Pending
            }
            Some(key) => match waiting.get_mut(key) {
                Some(w) if !w.expired => {
                    if !w.waker.will_wake(cx.waker()) {
                        w.waker = cx.waker().clone();
                    }
                    Poll::Pending
                }
                // Expired (the slot cannot be missing while we hold its key).
                _ => {
                    waiting.try_remove(key);
                    *this.key = None;
                    Poll::Ready(None)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_that_waits_past_the_limit_ends_then() {
        let deadlines = Deadlines::new(Some(Duration::from_secs(2)));
        let started = Instant::now();
        let out = deadlines.bound(std::future::pending::<()>()).await;
        assert_eq!(out, None);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!(deadlines.lock().is_empty(), "its slot is freed");
    }

    #[tokio::test(start_paused = true)]
    async fn answers_before_the_limit_win_and_leave_nothing_behind() {
        let deadlines = Deadlines::new(Some(Duration::from_secs(2)));
        assert_eq!(deadlines.bound(async { 1 }).await, Some(1));
        let late = async {
            tokio::time::sleep(Duration::from_millis(1_999)).await;
            2
        };
        assert_eq!(deadlines.bound(late).await, Some(2));
        assert!(deadlines.lock().is_empty());
        // A request given up (dropped) frees its slot too.
        let dropped = deadlines.bound(std::future::pending::<()>());
        let mut dropped = Box::pin(dropped);
        assert!(futures_util::poll!(dropped.as_mut()).is_pending());
        assert_eq!(deadlines.lock().len(), 1);
        drop(dropped);
        assert!(deadlines.lock().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_started_apart_expire_apart() {
        let deadlines = Deadlines::new(Some(Duration::from_secs(1)));
        let started = Instant::now();
        let first = async {
            deadlines.bound(std::future::pending::<()>()).await;
            started.elapsed()
        };
        let second = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            deadlines.bound(std::future::pending::<()>()).await;
            started.elapsed()
        };
        let (a, b) = tokio::join!(first, second);
        assert_eq!(a, Duration::from_secs(1));
        assert_eq!(b, Duration::from_millis(1_300));
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_never_expires_and_its_watchdog_ends_with_the_table() {
        let none = Deadlines::new(None);
        let waited = tokio::time::timeout(
            Duration::from_secs(3600),
            none.bound(std::future::pending::<()>()),
        )
        .await;
        assert!(waited.is_err(), "no limit: still waiting after an hour");
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        let alive = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        // Idle, its watchdog ends with its table.
        let idle = Deadlines::new(Some(Duration::from_secs(1)));
        tokio::task::yield_now().await;
        assert_eq!(alive(), tasks + 1);
        drop(idle);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(alive(), tasks, "the idle watchdog ended");
        // Asleep until a request's deadline an hour away, too, without waiting for it.
        let limited = Deadlines::new(Some(Duration::from_secs(3600)));
        let mut waiting = Box::pin(limited.bound(std::future::pending::<()>()));
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let before = Instant::now();
        drop(waiting);
        drop(limited);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(alive(), tasks, "the sleeping watchdog ended");
        assert_eq!(Instant::now(), before, "without waiting for the deadline");
    }
}
