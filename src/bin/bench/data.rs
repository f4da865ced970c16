//! Incompressible test bytes, generated fast enough that the client is never what a
//! throughput number measures, and their digests.

use bytes::Bytes;
use futures::Stream;
use sha2::{Digest as _, Sha256};

/// Piece size of generated streams.
const PIECE: usize = 1024 * 1024;

/// xorshift64: not cryptographic, but its output does not compress, so no layer of the
/// stack (HTTP, a filesystem, the IPFS node) can shortcut it.
struct Xorshift(u64);

impl Xorshift {
    fn new(seed: u64) -> Xorshift {
        // Zero is xorshift's fixed point; mix the seed so consecutive seeds diverge at once.
        Xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn fill(&mut self, out: &mut [u8]) {
        let mut words = out.chunks_exact_mut(8);
        for word in &mut words {
            word.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = words.into_remainder();
        if !rest.is_empty() {
            let last = self.next().to_le_bytes();
            rest.copy_from_slice(&last[..rest.len()]);
        }
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `len` random bytes, held whole (layers pushed from memory, so reading them costs
/// nothing).
pub fn random_bytes(seed: u64, len: usize) -> Bytes {
    let mut data = vec![0; len];
    Xorshift::new(seed).fill(&mut data);
    Bytes::from(data)
}

/// The same bytes as [`random_bytes`] would give, as a stream of pieces never held whole
/// (for layers too large to keep in the client's memory).
pub fn random_stream(seed: u64, len: u64) -> impl Stream<Item = std::io::Result<Bytes>> {
    let mut rng = Xorshift::new(seed);
    let pieces = len.div_ceil(PIECE as u64);
    futures::stream::iter((0..pieces).map(move |i| {
        let size = (len - i * PIECE as u64).min(PIECE as u64) as usize;
        let mut piece = vec![0; size];
        rng.fill(&mut piece);
        Ok(Bytes::from(piece))
    }))
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The digest of [`random_stream`]`(seed, len)`, computed piece by piece.
pub fn sha256_of_stream(seed: u64, len: u64) -> String {
    let mut rng = Xorshift::new(seed);
    let mut hasher = Sha256::new();
    let mut piece = vec![0; PIECE];
    let mut left = len;
    while left > 0 {
        let size = left.min(PIECE as u64) as usize;
        rng.fill(&mut piece[..size]);
        hasher.update(&piece[..size]);
        left -= size as u64;
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn the_stream_and_the_whole_agree() {
        let len = 3 * PIECE as u64 + 5;
        let whole = random_bytes(7, len as usize);
        let mut streamed = Vec::new();
        let mut stream = Box::pin(random_stream(7, len));
        while let Some(piece) = stream.next().await {
            streamed.extend_from_slice(&piece.unwrap());
        }
        assert!(whole.as_ref() == streamed.as_slice(), "the stream differs");
        assert_eq!(sha256_digest(&whole), sha256_of_stream(7, len));
        assert_ne!(random_bytes(8, 64), random_bytes(7, 64));
    }
}
