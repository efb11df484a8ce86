//! Time limits that cost nothing when the work is already done.
//!
//! Most per-call steps (reading a request that arrived with its stream, writing a small reply
//! into a send buffer with room, a subroutine that answers at once) finish on their first
//! poll. `tokio::time::timeout` builds its timer entry up front, and that, with its drop, is
//! several hundred instructions per step. These poll the work once first and arm the timer
//! only if it has to wait.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::{Instant, Sleep};

/// `fut`'s output, or `None` if it is still pending at `deadline`.
pub(crate) fn until<F: Future>(deadline: Instant, fut: F) -> Lazy<F> {
    Lazy {
        fut,
        limit: Limit::At(deadline),
        sleep: None,
    }
}

/// `fut`'s output, or `None` if it is still pending `limit` after it is first polled; no
/// limit at all when `limit` is `None`.
pub(crate) fn within<F: Future>(limit: Option<Duration>, fut: F) -> Lazy<F> {
    Lazy {
        fut,
        limit: limit.map_or(Limit::Never, Limit::After),
        sleep: None,
    }
}

#[derive(Debug, Clone, Copy)]
enum Limit {
    At(Instant),
    After(Duration),
    Never,
}

pin_project_lite::pin_project! {
    /// A future with a time limit whose timer exists only once the future has had to wait.
    ///
    /// Written out rather than as an `async fn`: that would hold `fut` twice (as the argument
    /// and as the pinned local), and these nest, so every layer doubled the future's size.
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub(crate) struct Lazy<F> {
        #[pin]
        fut: F,
        limit: Limit,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<F: Future> Future for Lazy<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The work first, as tokio's `Timeout` does: an answer that is here wins over a
        // deadline that has just passed.
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Some(out));
        }
        if this.sleep.is_none() {
            let at = match *this.limit {
                Limit::At(at) => at,
                // The first poll did not wait, so from here is from the start.
                Limit::After(limit) => Instant::now() + limit,
                Limit::Never => return Poll::Pending,
            };
            this.sleep.set(Some(tokio::time::sleep_until(at)));
        }
        match this.sleep.as_pin_mut() {
            Some(sleep) => sleep.poll(cx).map(|()| None),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_work_is_returned_and_pending_work_times_out() {
        assert_eq!(
            within(Some(Duration::from_secs(1)), async { 7 }).await,
            Some(7)
        );
        let never = std::future::pending::<()>();
        assert_eq!(within(Some(Duration::from_millis(20)), never).await, None);
        let at = Instant::now() + Duration::from_millis(30);
        assert_eq!(until(at, std::future::pending::<()>()).await, None);
        assert!(Instant::now() >= at, "gave up before the deadline");
    }

    #[tokio::test]
    async fn work_that_waits_is_woken_and_finishes_in_time() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            // Sent after our first poll has found nothing: the wake-up must reach us.
            tokio::task::yield_now().await;
            let _ = tx.send(3);
        });
        let got = within(Some(Duration::from_secs(30)), rx).await;
        assert_eq!(got.map(Result::ok), Some(Some(3)));
    }
}
