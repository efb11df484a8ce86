//! Time limits that cost nothing when the work is already done.
//!
//! Most per-call steps (reading a request that arrived with its stream, writing a small reply
//! into a send buffer with room, a subroutine that answers at once) finish on their first
//! poll. `tokio::time::timeout` builds its timer entry up front, and that, with its drop, is
//! several hundred instructions per step. These poll the work once first and arm the timer
//! only if it has to wait.

use std::{future::Future, pin::pin, task::Poll, time::Duration};

use tokio::time::Instant;

/// `fut`'s output, or `None` if it is still pending at `deadline`.
pub(crate) async fn until<F: Future>(deadline: Instant, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    // Polled with this task's own waker: if it is pending, it wakes us as usual.
    if let Poll::Ready(out) = futures_util::poll!(fut.as_mut()) {
        return Some(out);
    }
    tokio::time::timeout_at(deadline, fut).await.ok()
}

/// `fut`'s output, or `None` if it is still pending `limit` after this call.
pub(crate) async fn within<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    if let Poll::Ready(out) = futures_util::poll!(fut.as_mut()) {
        return Some(out);
    }
    // The first poll did not wait, so measuring from here is measuring from the call.
    tokio::time::timeout(limit, fut).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_work_is_returned_and_pending_work_times_out() {
        assert_eq!(within(Duration::from_secs(1), async { 7 }).await, Some(7));
        let never = std::future::pending::<()>();
        assert_eq!(within(Duration::from_millis(20), never).await, None);
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
        let got = within(Duration::from_secs(30), rx).await;
        assert_eq!(got.map(Result::ok), Some(Some(3)));
    }
}
