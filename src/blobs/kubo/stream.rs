//! Stream plumbing for the Kubo client: an idle timeout for download streams, a length check
//! that turns a silently cut `cat` into an error, and the progress tracker that lets `add`
//! tell "the node stopped reading / answering" apart from "our input is slow".

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::blobs::ByteStream;

pin_project! {
    /// Fails with `TimedOut` when the inner stream keeps us waiting for `timeout`.
    ///
    /// Only time spent *waiting on the inner stream* counts: the clock starts when a poll
    /// finds nothing ready, so a consumer that reads slowly (backpressure from a slow client)
    /// never trips it.
    pub(crate) struct IdleTimeout<S> {
        #[pin]
        inner: S,
        #[pin]
        sleep: Sleep,
        timeout: Duration,
        waiting: bool,
        done: bool,
    }
}

impl<S> IdleTimeout<S> {
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            sleep: tokio::time::sleep(timeout),
            timeout,
            waiting: false,
            done: false,
        }
    }
}

impl<S: Stream<Item = Result<Bytes, io::Error>>> Stream for IdleTimeout<S> {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        match this.inner.poll_next(cx) {
            Poll::Ready(item) => {
                *this.waiting = false;
                *this.done = !matches!(item, Some(Ok(_)));
                Poll::Ready(item)
            }
            Poll::Pending => {
                if !*this.waiting {
                    *this.waiting = true;
                    let deadline = Instant::now() + *this.timeout;
                    this.sleep.as_mut().reset(deadline);
                }
                ready!(this.sleep.poll(cx));
                *this.done = true;
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("IPFS node sent no data for {:?}", this.timeout),
                ))))
            }
        }
    }
}

pin_project! {
    /// Ends with `UnexpectedEof` when the inner stream ends before `expected` bytes.
    ///
    /// Kubo and js-ipfs report an error that happens after the response headers (their own
    /// `timeout=` deadline, a block that cannot be fetched) only in an `X-Stream-Error` HTTP
    /// trailer, which reqwest does not expose: the body just ends early. Counting is the only
    /// way to notice.
    pub(super) struct ExactLength<S> {
        #[pin]
        inner: S,
        expected: u64,
        seen: u64,
        done: bool,
    }
}

impl<S> ExactLength<S> {
    pub(super) fn new(inner: S, expected: u64) -> Self {
        ExactLength {
            inner,
            expected,
            seen: 0,
            done: false,
        }
    }
}

impl<S: Stream<Item = Result<Bytes, io::Error>>> Stream for ExactLength<S> {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        match ready!(this.inner.poll_next(cx)) {
            Some(Ok(chunk)) => {
                *this.seen += chunk.len() as u64;
                if *this.seen > *this.expected {
                    *this.done = true;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "IPFS node sent more than the {} bytes asked for",
                            this.expected
                        ),
                    ))));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Some(Err(e)) => {
                *this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            None => {
                *this.done = true;
                if *this.seen < *this.expected {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "IPFS node ended the stream after {} of {} bytes \
                             (node-side timeout, missing block, or range past the end)",
                            this.seen, this.expected
                        ),
                    ))));
                }
                Poll::Ready(None)
            }
        }
    }
}

/// Who an `add` in flight is waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// The HTTP client asked for the next chunk and our input has not produced it yet.
    Input,
    /// The node has to act: accept the chunk just handed over, or answer after the last one.
    Node,
}

#[derive(Debug)]
struct UploadState {
    waiting: Waiting,
    since: Instant,
    bytes: u64,
    input_error: Option<String>,
}

/// Shared between the request body (which reports progress) and the watchdog.
#[derive(Debug, Clone)]
pub(super) struct UploadTracker(Arc<Mutex<UploadState>>);

impl UploadTracker {
    pub(super) fn new() -> Self {
        UploadTracker(Arc::new(Mutex::new(UploadState {
            // Until the client first asks for body bytes, it is connecting and writing the
            // headers: that is the node's side (connect itself is bounded by connect_timeout).
            waiting: Waiting::Node,
            since: Instant::now(),
            bytes: 0,
            input_error: None,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, UploadState> {
        // A panic while holding this lock cannot leave the plain fields inconsistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set(&self, waiting: Waiting) {
        let mut state = self.lock();
        state.waiting = waiting;
        state.since = Instant::now();
    }

    /// Bytes handed to the HTTP client so far.
    pub(super) fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// The input stream's error, if it failed.
    pub(super) fn input_error(&self) -> Option<String> {
        self.lock().input_error.clone()
    }

    /// Wraps the input so every poll reports progress.
    pub(super) fn watch(&self, input: ByteStream) -> WatchedInput {
        WatchedInput {
            inner: input,
            tracker: self.clone(),
        }
    }

    /// Completes when the node has kept us waiting for `timeout` (never while we wait on
    /// the input). Race it against the request.
    pub(super) fn stalled(&self, timeout: Duration) -> impl Future<Output = ()> + Send + 'static {
        let tracker = self.clone();
        async move {
            loop {
                let (waiting, since) = {
                    let state = tracker.lock();
                    (state.waiting, state.since)
                };
                match waiting {
                    Waiting::Node => {
                        let deadline = since + timeout;
                        if Instant::now() >= deadline {
                            return;
                        }
                        tokio::time::sleep_until(deadline).await;
                    }
                    // Re-check soon: the input may deliver and hand the turn to the node.
                    Waiting::Input => tokio::time::sleep(timeout.min(Duration::from_secs(1))).await,
                }
            }
        }
    }
}

/// The input stream as the request body sees it.
pub(super) struct WatchedInput {
    inner: ByteStream,
    tracker: UploadTracker,
}

impl Stream for WatchedInput {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Being polled means the HTTP client wants more: from now on we wait on the input.
        self.tracker.set(Waiting::Input);
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                let mut state = self.tracker.lock();
                state.bytes += chunk.len() as u64;
                state.waiting = Waiting::Node;
                state.since = Instant::now();
            }
            Poll::Ready(Some(Err(e))) => {
                let mut state = self.tracker.lock();
                state.input_error = Some(e.to_string());
            }
            Poll::Ready(None) => self.tracker.set(Waiting::Node),
            Poll::Pending => {}
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{stream, StreamExt};

    fn chunk(s: &'static str) -> Result<Bytes, io::Error> {
        Ok(Bytes::from_static(s.as_bytes()))
    }

    // Real (short) time: the crate does not enable tokio's `test-util` clock control.
    const T: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn idle_timeout_fires_on_a_stalled_stream() {
        let inner = stream::iter([chunk("a")]).chain(stream::pending());
        let mut s = Box::pin(IdleTimeout::new(inner, T));
        assert_eq!(s.next().await.unwrap().unwrap(), "a");
        let start = Instant::now();
        let err = s.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= T && start.elapsed() < 5 * T);
        assert!(
            s.next().await.is_none(),
            "the stream ends after the timeout"
        );
    }

    #[tokio::test]
    async fn idle_timeout_ignores_a_slow_consumer() {
        let inner = stream::iter([chunk("a")]).chain(stream::once(async {
            tokio::time::sleep(T / 2).await;
            chunk("b")
        }));
        let mut s = Box::pin(IdleTimeout::new(inner, T));
        assert_eq!(s.next().await.unwrap().unwrap(), "a");
        tokio::time::sleep(3 * T).await;
        assert_eq!(s.next().await.unwrap().unwrap(), "b");
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn exact_length_reports_a_short_stream() {
        let s = ExactLength::new(stream::iter([chunk("abc")]), 4);
        let items: Vec<_> = s.collect().await;
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[1].as_ref().unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );

        let s = ExactLength::new(stream::iter([chunk("ab"), chunk("cd")]), 4);
        let items: Vec<_> = s.collect().await;
        assert!(items.iter().all(|i| i.is_ok()));
    }

    #[tokio::test]
    async fn watchdog_waits_on_the_node_not_on_the_input() {
        let tracker = UploadTracker::new();
        let input: ByteStream = Box::pin(
            stream::iter([chunk("abc")])
                .chain(stream::once(async {
                    tokio::time::sleep(4 * T).await;
                    chunk("de")
                }))
                .chain(stream::iter([Err(io::Error::other("client went away"))])),
        );
        let mut body = tracker.watch(input);
        let stalled = tracker.stalled(T);
        tokio::pin!(stalled);

        assert_eq!(body.next().await.unwrap().unwrap(), "abc");
        // The input takes 4 T for the next chunk: not the node's fault.
        tokio::select! {
            c = body.next() => assert_eq!(c.unwrap().unwrap(), "de"),
            () = &mut stalled => panic!("watchdog fired while waiting on the input"),
        }
        assert_eq!(tracker.bytes(), 5);
        // Now the "node" does not ask for the next chunk: the watchdog fires after T.
        let start = Instant::now();
        (&mut stalled).await;
        assert!(start.elapsed() >= T / 2 && start.elapsed() < 5 * T);

        assert!(body.next().await.unwrap().is_err());
        assert_eq!(tracker.input_error().as_deref(), Some("client went away"));
    }
}
