//! A future polled only after it woke its task: for the watchers a connection's loop polls
//! beside its real work (shutdown, the idle watchdog), which almost never fire.
//!
//! Polling a pending `Notified` or `Sleep` is not free: each poll re-registers the task's
//! waker, behind locked instructions (a mutex for `Notify`'s waiter list, a compare-and-swap
//! for a timer's waker). A connection's task is polled twice per proxied request, and its two
//! watchers cost eight to ten locked instructions per request that way (~60 ns in this kind of
//! VM, where one costs ~9 ns), for an answer that is almost always "not yet". Wrapped in
//! [`OnWake`], a watcher gets a waker of its own that raises a flag and wakes the task; a poll
//! that finds the flag down answers `Pending` after a plain load.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Wraps `inner` so that it is polled only when it woke (and on the first poll).
pub fn on_wake<F: Future>(inner: F) -> OnWake<F> {
    let flag = Arc::new(Flag { woken: AtomicBool::new(true), task: AtomicWaker::new() });
    OnWake { inner, waker: Waker::from(flag.clone()), flag, task: None }
}

/// See [`on_wake`].
#[derive(Debug)]
pub struct OnWake<F> {
    inner: F,
    flag: Arc<Flag>,
    /// The waker handed to `inner`: raises the flag, then wakes the task.
    waker: Waker,
    /// The task waker registered in the flag, while it is.
    task: Option<Waker>,
}

#[derive(Debug)]
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future + Unpin> Future for OnWake<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // Registered before the flag is read, so that a wake-up between the two is not lost.
        if !this.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            this.flag.task.register(cx.waker());
            this.task = Some(cx.waker().clone());
        }
        if !this.flag.woken.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        this.flag.woken.store(false, Ordering::Relaxed);
        if let Poll::Ready(out) = Pin::new(&mut this.inner).poll(&mut Context::from_waker(&this.waker)) {
            return Poll::Ready(out);
        }
        // The wake-up took the registered task waker: register it again, and if `inner` woke
        // meanwhile, have the task polled again rather than loop here.
        this.flag.task.register(cx.waker());
        if this.flag.woken.load(Ordering::Acquire) {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

impl<F> OnWake<F> {
    /// Replaces the wrapped future; the next poll polls the new one.
    pub fn set(&mut self, inner: F) {
        self.inner = inner;
        self.flag.woken.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// Counts its polls; pending until `ready` is set, waking whoever polled it last when set.
    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: std::sync::Mutex<Option<Waker>>,
    }

    impl Probe {
        fn fire(&self) {
            self.ready.store(true, Ordering::SeqCst);
            if let Some(w) = self.waker.lock().expect("lock").take() {
                w.wake();
            }
        }
    }

    struct Watch(Arc<Probe>);

    impl Future for Watch {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.polls.fetch_add(1, Ordering::SeqCst);
            *self.0.waker.lock().expect("lock") = Some(cx.waker().clone());
            if self.0.ready.load(Ordering::SeqCst) { Poll::Ready(()) } else { Poll::Pending }
        }
    }

    #[test]
    fn the_inner_future_is_polled_once_then_only_when_it_woke() {
        let probe = Arc::new(Probe::default());
        let mut watched = on_wake(Watch(probe.clone()));
        let woken = Arc::new(Counting::default());
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        for _ in 0..100 {
            assert!(Pin::new(&mut watched).poll(&mut cx).is_pending());
        }
        assert_eq!(probe.polls.load(Ordering::SeqCst), 1, "polled on the first poll only");
        probe.fire();
        assert_eq!(woken.0.load(Ordering::SeqCst), 1, "its wake-up woke the task");
        assert!(Pin::new(&mut watched).poll(&mut cx).is_ready());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
    }

    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_timer_and_a_cancellation_still_fire_through_it() {
        let started = tokio::time::Instant::now();
        let slept = on_wake(Box::pin(tokio::time::sleep(Duration::from_millis(30))));
        tokio::time::timeout(Duration::from_secs(5), slept).await.expect("the sleep ended");
        assert!(started.elapsed() >= Duration::from_millis(30));

        let token = tokio_util::sync::CancellationToken::new();
        let cancelled = on_wake(Box::pin(token.clone().cancelled_owned()));
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            token.cancel();
        });
        tokio::time::timeout(Duration::from_secs(5), cancelled).await.expect("the cancellation came through");
        canceller.await.expect("canceller");
    }

    #[tokio::test]
    async fn a_watcher_that_wakes_and_stays_pending_is_watched_again() {
        // A repeating watchdog: wakes every 10 ms and finishes at its third tick.
        let ticks = Arc::new(AtomicUsize::new(0));
        let counted = ticks.clone();
        let watchdog = on_wake(Box::pin(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if counted.fetch_add(1, Ordering::SeqCst) == 2 {
                    return;
                }
            }
        }));
        tokio::time::timeout(Duration::from_secs(5), watchdog).await.expect("the third tick ended it");
        assert_eq!(ticks.load(Ordering::SeqCst), 3);
    }
}
