//! A stored file (or a range of it) as a byte stream: positional reads of [`PIECE`] bytes
//! on the blocking pool, [`PREFETCH`] of them in flight, so reading the next piece from
//! disk overlaps sending this one, each piece is copied once (kernel to the buffer that
//! is sent), and no blocking thread is held for the length of a (possibly slow) download.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use crate::blobs::ByteStream;

/// Bytes per read: large enough that a thread hop per piece costs little, small because
/// every pull holds a few pieces (and actix's write buffer one more) while its client is
/// slow, and thousands of pulls may be.
const PIECE: u64 = 32 * 1024;
/// Pieces read ahead of the one being sent; PIECE × (PREFETCH + 1) is a pull's buffer.
const PREFETCH: usize = 2;

pub(super) fn stream(file: std::fs::File, offset: u64, length: u64) -> ByteStream {
    let file = Arc::new(file);
    let pieces = (0..length.div_ceil(PIECE)).map(move |i| {
        let start = i * PIECE;
        (offset + start, (length - start).min(PIECE) as usize)
    });
    Box::pin(
        futures::stream::iter(pieces)
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

    #[tokio::test]
    async fn ranges_across_pieces_come_back_exactly() {
        let data: Vec<u8> = (0..(3 * PIECE + 17)).map(|i| (i % 251) as u8).collect();
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
        let data = vec![1u8; PIECE as usize + 10];
        let short = read(file_of(&data), 0, PIECE + 11).await;
        assert_eq!(short.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
