//! What slow clients could otherwise hold without end: concurrency slots shared fairly
//! between client addresses, a request body that must keep arriving, and a response body
//! that keeps its download slot until it is done.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use bytes::Bytes;
use futures::Stream;
use tokio::time::{Instant, Sleep};

/// A number of slots of which one client address may hold only a share, so that a single
/// client cannot lock everyone else out.
pub struct Slots {
    total: usize,
    per_client: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

impl Slots {
    /// `total` slots, of which one client may hold `percent` percent (at least one).
    pub fn new(total: usize, percent: u8) -> Arc<Slots> {
        Slots::with_share(total, share(total, percent))
    }

    /// No limit of its own on the total (something else counts it), only the per-client
    /// share of `of`.
    pub fn per_client(of: usize, percent: u8) -> Arc<Slots> {
        Slots::with_share(usize::MAX, share(of, percent))
    }

    fn with_share(total: usize, per_client: usize) -> Arc<Slots> {
        Arc::new(Slots {
            total,
            per_client,
            held: Mutex::new(Held::default()),
        })
    }

    /// A slot for `client`, unless all are taken or the client holds its share.
    pub fn try_take(self: &Arc<Self>, client: IpAddr) -> Option<Slot> {
        // Nothing in the critical section can panic; a poisoned lock still counts right.
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.total >= self.total {
            return None;
        }
        let mine = held.by_client.entry(client).or_default();
        if *mine >= self.per_client {
            return None;
        }
        *mine += 1;
        held.total += 1;
        Some(Slot {
            slots: self.clone(),
            client,
        })
    }
}

fn share(total: usize, percent: u8) -> usize {
    (total.saturating_mul(usize::from(percent)) / 100).max(1)
}

/// Given back when dropped.
pub struct Slot {
    slots: Arc<Slots>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        held.total = held.total.saturating_sub(1);
        if let Some(mine) = held.by_client.get_mut(&self.client) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                held.by_client.remove(&self.client);
            }
        }
    }
}

/// `payload`, failing once nothing of it has arrived for `idle`: the handler then answers
/// and actix closes the connection, whose body was not read to its end.
pub fn idle_payload(payload: Payload, idle: Duration) -> Payload {
    match payload {
        Payload::None => Payload::None,
        payload => Payload::from(Box::pin(IdlePayload {
            inner: payload,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
        })
            as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>),
    }
}

struct IdlePayload {
    inner: Payload,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    /// Whether the deadline is armed: the last poll found nothing to read.
    waiting: bool,
}

impl Stream for IdlePayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(item) => {
                this.waiting = false;
                Poll::Ready(item)
            }
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    this.deadline.as_mut().reset(Instant::now() + this.idle);
                }
                match this.deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(PayloadError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client sent nothing for {:?}", this.idle),
                    ))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its slot until it ends or is dropped (the client went
    /// away, or the connection was cut for taking nothing).
    pub struct Holding {
        #[pin]
        body: BoxBody,
        slot: Option<Slot>,
    }
}

impl Holding {
    pub fn new(body: BoxBody, slot: Slot) -> Holding {
        Holding {
            body,
            slot: Some(slot),
        }
    }
}

impl MessageBody for Holding {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.project();
        let item = this.body.poll_next(cx);
        if matches!(item, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.slot.take();
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_holds_only_its_share() {
        let slots = Slots::new(4, 50);
        let (a, b) = (IpAddr::from([127, 0, 0, 2]), IpAddr::from([127, 0, 0, 3]));
        let a1 = slots.try_take(a).unwrap();
        let _a2 = slots.try_take(a).unwrap();
        assert!(slots.try_take(a).is_none(), "a holds its share");
        let _b1 = slots.try_take(b).unwrap();
        let _b2 = slots.try_take(b).unwrap();
        assert!(slots.try_take(b).is_none());
        drop(a1);
        assert!(slots.try_take(b).is_none(), "b holds its share");
        let _a3 = slots.try_take(a).unwrap();
        assert!(
            slots.try_take(IpAddr::from([10, 0, 0, 1])).is_none(),
            "all 4 taken"
        );
        assert_eq!(Slots::new(3, 25).per_client, 1, "at least one");
        assert_eq!(Slots::new(1024, 25).per_client, 256);
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_fails() {
        use futures::StreamExt;
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, PayloadError>>();
        let payload = Payload::from(Box::pin(rx) as Pin<Box<dyn Stream<Item = _>>>);
        let idle = Duration::from_millis(50);
        let mut body = idle_payload(payload, idle);
        tx.unbounded_send(Ok(Bytes::from_static(b"abc"))).unwrap();
        assert_eq!(body.next().await.unwrap().unwrap(), "abc");
        let started = Instant::now();
        let error = body.next().await.unwrap().unwrap_err();
        assert!(error.to_string().contains("sent nothing"), "{error}");
        assert!(started.elapsed() >= idle);
        drop(tx);
    }
}
