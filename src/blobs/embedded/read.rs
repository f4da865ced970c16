//! A stored file (or a range of it) as a byte stream: positional reads on the blocking
//! pool, [`PREFETCH`] of them in flight, so reading the next piece from disk overlaps
//! sending this one, each piece is copied once (kernel to the buffer that is sent), and no
//! blocking thread is held for the length of a (possibly slow) download.
//!
//! Pieces start small and grow with what the client has already taken: a thread hop per
//! 32 KiB costs a fast pull half its speed, while large pieces held for thousands of
//! stalled clients cost memory. A piece is at most an eighth of the bytes sent before it
//! (between [`FIRST_PIECE`] and [`LARGEST_PIECE`]), so what a stalled pull holds,
//! PREFETCH + 1 pieces, stays below half of what it has already sent.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use crate::blobs::ByteStream;

const FIRST_PIECE: u64 = 32 * 1024;
const LARGEST_PIECE: u64 = 512 * 1024;
/// Pieces read ahead of the one being sent.
const PREFETCH: usize = 2;

/// `(offset, length)` of each read, growing from FIRST_PIECE to LARGEST_PIECE.
fn pieces(offset: u64, length: u64) -> impl Iterator<Item = (u64, usize)> {
    let mut sent = 0;
    std::iter::from_fn(move || {
        if sent >= length {
            return None;
        }
        let size = (sent / 8).clamp(FIRST_PIECE, LARGEST_PIECE) / FIRST_PIECE * FIRST_PIECE;
        let piece = (offset + sent, size.min(length - sent) as usize);
        sent += piece.1 as u64;
        Some(piece)
    })
}

pub(super) fn stream(file: std::fs::File, offset: u64, length: u64) -> ByteStream {
    let file = Arc::new(file);
    Box::pin(
        futures::stream::iter(pieces(offset, length))
            .map(move |(at, len)| {
                let file = file.clone();
                async move {
                    tokio::task::spawn_blocking(move || {
                        let mut piece = vec![0; len];
                        file.read_exact_at(&mut piece, at)?;
                        Ok(Bytes::from(piece))
                    })
                    .await
                    .map_err(io::Error::other)?
                }
            })
            .buffered(PREFETCH),
    )
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;

    fn file_of(data: &[u8]) -> std::fs::File {
        let mut file = tempfile::tempfile().unwrap();
        io::Write::write_all(&mut file, data).unwrap();
        file
    }

    async fn read(file: std::fs::File, offset: u64, length: u64) -> io::Result<Vec<u8>> {
        let pieces: Vec<Bytes> = stream(file, offset, length).try_collect().await?;
        Ok(pieces.concat())
    }

    #[test]
    fn pieces_cover_the_range_and_grow_with_what_was_sent() {
        let (offset, length) = (100, 9 * 1024 * 1024 + 5);
        let all: Vec<(u64, usize)> = pieces(offset, length).collect();
        let mut next = offset;
        for &(at, len) in &all {
            assert_eq!(at, next);
            let sent = at - offset;
            assert!(len as u64 <= LARGEST_PIECE, "{len}");
            assert!(
                len as u64 <= FIRST_PIECE.max(sent / 8),
                "{len} bytes after {sent}"
            );
            next += len as u64;
        }
        assert_eq!(next, offset + length);
        assert_eq!(all[0].1 as u64, FIRST_PIECE);
        assert!(all.iter().any(|&(_, len)| len as u64 == LARGEST_PIECE));
        assert!(pieces(7, 0).next().is_none());
    }

    #[tokio::test]
    async fn ranges_across_pieces_come_back_exactly() {
        const PIECE: u64 = FIRST_PIECE;
        let data: Vec<u8> = (0..(40 * PIECE + 17)).map(|i| (i % 251) as u8).collect();
        let whole = read(file_of(&data), 0, data.len() as u64).await.unwrap();
        assert!(whole == data);
        let (start, end) = (PIECE as usize - 5, 2 * PIECE as usize + 9);
        let range = read(file_of(&data), start as u64, (end - start) as u64)
            .await
            .unwrap();
        assert!(range == data[start..end]);
        assert!(read(file_of(&data), 7, 0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_file_shorter_than_asked_is_an_error() {
        let data = vec![1u8; FIRST_PIECE as usize + 10];
        let short = read(file_of(&data), 0, FIRST_PIECE + 11).await;
        assert_eq!(short.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
