//! Hashing and metering of byte streams as they pass, and the persisted sha256 state
//! that lets any replica continue an upload begun elsewhere.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256, Sha512};

use crate::blobs::ByteStream;
use crate::oci::{Algorithm, Digest};

/// Restores a sha256 state saved by [`save_sha256`].
pub fn restore_sha256(state: &[u8]) -> Option<Sha256> {
    let state = SerializedState::<Sha256>::try_from(state).ok()?;
    Sha256::deserialize(&state).ok()
}

pub fn save_sha256(hasher: &Sha256) -> Vec<u8> {
    hasher.serialize().to_vec()
}

/// A hasher for either supported algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest::from_hash(Algorithm::Sha256, &h.finalize()),
            Hasher::Sha512(h) => Digest::from_hash(Algorithm::Sha512, &h.finalize()),
        }
    }
}

/// What a [`Meter`] saw once its stream ended.
#[derive(Default)]
struct MeterState {
    hasher: Option<Hasher>,
    bytes: u64,
    /// Set when the meter itself cut the stream (limit exceeded).
    overflow: bool,
}

/// Hashes and counts the bytes of a stream as they pass, and cuts the stream with an error
/// once it exceeds `limit` bytes. The stream goes to the blob store; the meter stays here.
#[derive(Clone)]
pub struct Meter {
    state: Arc<Mutex<MeterState>>,
}

impl Meter {
    /// Wraps `input`. `limit` = None means unlimited.
    pub fn wrap(
        input: ByteStream,
        hasher: Option<Hasher>,
        limit: Option<u64>,
    ) -> (Meter, ByteStream) {
        let meter = Meter {
            state: Arc::new(Mutex::new(MeterState {
                hasher,
                ..MeterState::default()
            })),
        };
        let state = meter.state.clone();
        let stream = input.map(move |item: io::Result<Bytes>| {
            let chunk = item?;
            let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
            s.bytes += chunk.len() as u64;
            if limit.is_some_and(|limit| s.bytes > limit) {
                s.overflow = true;
                return Err(io::Error::other("upload exceeds the allowed size"));
            }
            if let Some(h) = s.hasher.as_mut() {
                h.update(&chunk);
            }
            Ok(chunk)
        });
        (meter, Box::pin(stream))
    }

    pub fn bytes(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }

    pub fn overflowed(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .overflow
    }

    /// Takes the hasher out (after the stream has ended).
    pub fn take_hasher(&self) -> Option<Hasher> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .hasher
            .take()
    }
}

/// Passes a stream through while checking it hashes to `expected` and has `size` bytes.
/// The latest piece is held back until the next arrives, and the last one until the digest
/// is checked: on a mismatch the stream ends with an error before the final bytes, so the
/// response falls short of its Content-Length, the connection is aborted, and no client
/// takes a corrupt blob for a complete one.
pub struct Verified {
    inner: ByteStream,
    hasher: Option<Hasher>,
    held: Option<Bytes>,
    expected: Digest,
    size: u64,
    seen: u64,
}

impl Verified {
    pub fn new(inner: ByteStream, expected: Digest, size: u64) -> Verified {
        Verified {
            inner,
            hasher: Some(Hasher::new(expected.algorithm())),
            held: None,
            expected,
            size,
            seen: 0,
        }
    }

    /// Ends the stream with an error (and logs why).
    fn fail(&mut self, actual: &str) -> Poll<Option<io::Result<Bytes>>> {
        self.hasher = None;
        self.held = None;
        tracing::error!(
            event = "blob_corrupt",
            digest = %self.expected,
            actual,
            size = self.size,
            received = self.seen,
            "stored blob does not match its digest; aborting the response"
        );
        Poll::Ready(Some(Err(io::Error::other(format!(
            "stored content does not match {}",
            self.expected
        )))))
    }
}

impl Stream for Verified {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.hasher.is_none() {
                return Poll::Ready(None);
            }
            match ready!(this.inner.as_mut().poll_next(cx)) {
                Some(Ok(chunk)) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    this.seen += chunk.len() as u64;
                    if this.seen > this.size {
                        return this.fail("longer than its recorded size");
                    }
                    if let Some(hasher) = this.hasher.as_mut() {
                        hasher.update(&chunk);
                    }
                    if let Some(previous) = this.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Some(Err(e)) => {
                    this.hasher = None;
                    this.held = None;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    let actual = this.hasher.take().map(Hasher::finish);
                    match actual {
                        Some(actual) if actual == this.expected && this.seen == this.size => {
                            return Poll::Ready(this.held.take().map(Ok));
                        }
                        Some(actual) => return this.fail(&actual.to_string()),
                        None => return Poll::Ready(None),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    fn pieces(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures::stream::iter(items))
    }

    fn collect(stream: Verified) -> (Vec<u8>, bool) {
        block_on(async {
            let mut stream = stream;
            let mut out = Vec::new();
            while let Some(item) = stream.next().await {
                match item {
                    Ok(b) => out.extend_from_slice(&b),
                    Err(_) => return (out, true),
                }
            }
            (out, false)
        })
    }

    #[test]
    fn verified_passes_matching_content() {
        let digest = Digest::sha256_of(b"hello world");
        let (out, failed) = collect(Verified::new(
            pieces(&[b"hello", b" ", b"world"]),
            digest,
            11,
        ));
        assert_eq!(out, b"hello world");
        assert!(!failed);
    }

    #[test]
    fn verified_withholds_the_end_of_corrupt_content() {
        let digest = Digest::sha256_of(b"hello world");
        let (out, failed) = collect(Verified::new(
            pieces(&[b"hello", b" ", b"wOrld"]),
            digest,
            11,
        ));
        assert!(failed);
        assert!(out.len() < 11, "the final piece must not be sent");
    }

    #[test]
    fn verified_rejects_wrong_lengths() {
        let digest = Digest::sha256_of(b"hello");
        let (_, failed) = collect(Verified::new(pieces(&[b"hello", b"!"]), digest.clone(), 5));
        assert!(failed);
        let (out, failed) = collect(Verified::new(pieces(&[b"hel"]), digest, 5));
        assert!(failed && out.is_empty());
    }

    #[test]
    fn hash_state_round_trips() {
        let mut hasher = Sha256::new();
        hasher.update(b"hello ");
        let mut restored = restore_sha256(&save_sha256(&hasher)).unwrap();
        restored.update(b"world");
        assert_eq!(
            Hasher::Sha256(restored).finish(),
            Digest::sha256_of(b"hello world")
        );
        assert!(restore_sha256(b"short").is_none());
    }
}
