//! What only the embedded blob store shows: its files (renamed into place only when
//! complete, `tmp/` and `trash/`), blocks checked against the bytes on disk, and CARs the
//! IPFS node itself accepts. What every blob store promises is in contract_blobs.rs.

mod common;

use std::io;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::{stream, StreamExt};
use ipfs_registry::blobs::embedded::EmbeddedStore;
use ipfs_registry::blobs::kubo::{KuboStore, DAG_PB_CODEC, RAW_CODEC};
use ipfs_registry::blobs::unixfs::{Block, DagBuilder};
use ipfs_registry::blobs::{BlobError, BlobStore, ByteStream, ImportProfile};
use sha2::{Digest, Sha256};

fn kubo() -> KuboStore {
    common::kubo::store(Duration::from_secs(60), ImportProfile::default())
}

fn embedded(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, ImportProfile::default()).expect("open the embedded store")
}

fn random(len: usize) -> Bytes {
    Bytes::from(common::oci::random_bytes(len))
}

use common::kubo::read_all;

/// The files of adds in progress (or left behind) under `tmp/`, in any store's directory.
fn tmp_files(data_dir: &Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_none_or(|e| e != "lock") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&data_dir.join("tmp"), &mut found);
    found
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_failing_input_leaves_no_file_and_no_block() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path());
    let data = random(700_000);
    let input: ByteStream = Box::pin(
        stream::iter(vec![
            Ok(data.slice(..400_000)),
            Err(io::Error::other("client went away")),
        ])
        .chain(stream::iter(vec![Ok(data.slice(400_000..))])),
    );
    assert!(matches!(store.add(input).await, Err(BlobError::Input(_))));
    assert!(tmp_files(dir.path()).is_empty(), "temporary file kept");
    assert!(
        files_in(&dir.path().join("data")).is_empty(),
        "partial blob visible"
    );
    // The leaves written before the failure were never recorded.
    let mut builder = DagBuilder::new(262_144);
    let mut blocks = Vec::new();
    builder.push(&data[..400_000], &mut blocks);
    let first_leaf = *blocks[0].cid();
    assert!(matches!(
        store.block(&first_leaf).await,
        Err(BlobError::NotFound(_))
    ));
}

/// Blocks are read from the blob's file and checked against their CID as they are served
/// (contract_blobs.rs checks what every store serves): a block whose bytes changed on disk
/// is refused, never served.
#[tokio::test]
async fn a_block_changed_on_disk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path());
    let data = random(3 * 262_144 + 5);
    let stored = store.add(common::odd_pieces(&data)).await.unwrap();
    assert_eq!(stored.cid.codec(), DAG_PB_CODEC);
    let mut builder = DagBuilder::new(262_144);
    let mut blocks = Vec::new();
    builder.push(&data, &mut blocks);
    builder.finish(&mut blocks);

    // Flip one byte of the second leaf on disk: that block is refused, never served.
    let file = dir.path().join("data").join(stored.cid.to_string());
    let mut on_disk = std::fs::read(&file).unwrap();
    on_disk[262_144 + 10] ^= 0xff;
    std::fs::write(&file, on_disk).unwrap();
    let Block::Leaf { cid: second, .. } = &blocks[1] else {
        panic!("leaf")
    };
    assert!(matches!(
        store.block(second).await,
        Err(BlobError::Backend(_))
    ));
    assert!(store.block(blocks[0].cid()).await.is_ok());
}

#[tokio::test]
async fn unpin_removes_the_file_and_its_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path());
    let data = random(300_000);
    let stored = store.add(common::odd_pieces(&data)).await.unwrap();
    // Adding the same bytes again stores them once.
    assert_eq!(store.add(common::odd_pieces(&data)).await.unwrap(), stored);
    assert_eq!(files_in(&dir.path().join("data")).len(), 1);

    store.unpin(&stored.cid).await.unwrap();
    assert!(!store.is_pinned(&stored.cid).await.unwrap());
    assert!(matches!(
        store.cat(&stored.cid, 0, None).await,
        Err(BlobError::NotFound(_))
    ));
    assert!(matches!(
        store.block(&stored.cid).await,
        Err(BlobError::NotFound(_))
    ));
    store.unpin(&stored.cid).await.expect("unpin twice is fine");

    // A reopened store keeps what it had, and drops what a crash left in tmp/ (files
    // untouched for an hour), but not another process's add in progress.
    let kept = store.add(common::odd_pieces(&random(10))).await.unwrap();
    let leftover = dir.path().join("tmp").join("leftover");
    std::fs::write(&leftover, b"partial").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&leftover)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let in_progress = dir.path().join("tmp").join("in-progress");
    std::fs::write(&in_progress, b"still arriving").unwrap();
    drop(store);
    let reopened = embedded(dir.path());
    assert!(reopened.is_pinned(&kept.cid).await.unwrap());
    assert!(!leftover.exists(), "a crash's leftover stays in tmp/");
    assert!(in_progress.exists(), "another process's add was deleted");
}

#[tokio::test]
async fn concurrent_adds_of_the_same_bytes_agree() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path());
    let data = random(2 * 262_144 + 1);
    let adds = (0..4).map(|_| store.add(common::odd_pieces(&data)));
    let results = futures::future::join_all(adds).await;
    let first = results[0].as_ref().unwrap().clone();
    for result in results {
        assert_eq!(result.unwrap(), first);
    }
    let back = read_all(store.cat(&first.cid, 0, None).await.unwrap()).await;
    assert_eq!(back, data);
    assert!(tmp_files(dir.path()).is_empty());
}

/// The CAR of a stored DAG imports into the real node under the same root, and the node
/// then serves the same bytes.
#[tokio::test]
async fn a_car_export_imports_into_the_ipfs_node() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path());
    let data = random(5 * 262_144 + 123);
    let stored = store.add(common::odd_pieces(&data)).await.unwrap();
    let car = read_all(store.car(&stored.cid).await.unwrap()).await;

    let root = common::ipfs_dag_import(car).await;
    assert_eq!(root, stored.cid);
    let node = kubo();
    let back = read_all(node.cat(&root, 0, Some(data.len() as u64)).await.unwrap()).await;
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data));
    node.unpin(&root).await.unwrap();

    let missing = ipfs_registry::blobs::unixfs::cid_of(RAW_CODEC, b"never stored");
    assert!(matches!(
        store.car(&missing).await,
        Err(BlobError::NotFound(_))
    ));
}

/// An unpinned blob can be pinned back until the trash is purged (what the registry's pin
/// check after a commit relies on when GC unpins the same bytes meanwhile); after the grace
/// period its file and index rows are gone.
#[tokio::test]
async fn unpinned_blobs_can_be_pinned_back_until_purged() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path());
    let data = random(3 * 262_144);
    let stored = store.add(common::odd_pieces(&data)).await.unwrap();
    store.unpin(&stored.cid).await.unwrap();
    assert!(!store.is_pinned(&stored.cid).await.unwrap());
    assert!(matches!(
        store.car(&stored.cid).await,
        Err(BlobError::NotFound(_))
    ));
    store
        .pin(&stored.cid)
        .await
        .expect("restored from the trash");
    assert!(store.is_pinned(&stored.cid).await.unwrap());
    let back = read_all(store.cat(&stored.cid, 0, None).await.unwrap()).await;
    assert_eq!(back, data);
    assert!(store.block(&stored.cid).await.is_ok());

    // With no grace the trash is purged at once: nothing left to restore, no index rows.
    drop(store);
    let store = embedded(dir.path()).with_trash_grace(Duration::ZERO);
    store.unpin(&stored.cid).await.unwrap();
    assert!(matches!(
        store.pin(&stored.cid).await,
        Err(BlobError::NotFound(_))
    ));
    assert!(files_in(&dir.path().join("trash")).is_empty());
    assert!(files_in(&dir.path().join("data")).is_empty());
    assert!(matches!(
        store.block(&stored.cid).await,
        Err(BlobError::NotFound(_))
    ));
    // Stored again, it is whole again (index rows included).
    let again = store.add(common::odd_pieces(&data)).await.unwrap();
    assert_eq!(again.cid, stored.cid);
    assert!(store.block(&stored.cid).await.is_ok());
}

/// A power cut between the two directory syncs of an unpin (trash/ synced, data/ not) leaves
/// one file under both names. Renaming a file onto another name of itself does nothing, so
/// unpinning it again must still take it out of data/, or it stays there with no record.
#[tokio::test]
async fn unpinning_a_file_left_under_both_names_takes_it_out_of_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path());
    let stored = store.add(common::odd_pieces(&random(1000))).await.unwrap();
    let name = stored.cid.to_string();
    std::fs::hard_link(
        dir.path().join("data").join(&name),
        dir.path().join("trash").join(&name),
    )
    .unwrap();

    store.unpin(&stored.cid).await.unwrap();
    assert!(!store.is_pinned(&stored.cid).await.unwrap());
    assert!(files_in(&dir.path().join("data")).is_empty());
    store.pin(&stored.cid).await.expect("still in the trash");
    assert!(store.is_pinned(&stored.cid).await.unwrap());
}

/// A chunked upload's chunks joined by the store itself: the blob gets the CID the node
/// gives the whole (the parts' leaves reused, new interior nodes two levels deep), its
/// bytes and blocks are served from the joined file, also once the parts are unpinned;
/// parts with a partial leaf before the last are left to the caller.
#[tokio::test]
async fn leaf_aligned_parts_join_into_the_blob_of_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path());
    let chunk = ImportProfile::default().chunk_size as usize;
    // 180 whole leaves and a partial one: more than one node's 174 links.
    let sizes = [100 * chunk, 80 * chunk, chunk / 3];
    let data = random(sizes.iter().sum());
    let mut parts = Vec::new();
    let mut at = 0;
    for size in sizes {
        let part = data.slice(at..at + size);
        at += size;
        parts.push(store.add(common::odd_pieces(&part)).await.unwrap().cid);
    }

    let joined = store
        .concat(&parts)
        .await
        .unwrap()
        .expect("leaf-aligned parts are joined");
    assert_eq!(joined.stored.cid, common::cid_of_blob(&data));
    assert_eq!(joined.stored.size, data.len() as u64);
    for part in &parts {
        store.unpin(part).await.unwrap();
    }
    let whole = read_all(store.cat(&joined.stored.cid, 0, None).await.unwrap()).await;
    assert!(whole == data, "the joined blob's bytes");
    // block() checks every block against its CID: the root node, and a leaf now read from
    // the joined file.
    store.block(&joined.stored.cid).await.unwrap();
    let last_whole_leaf = &data[179 * chunk..180 * chunk];
    let leaf = ipfs_registry::blobs::unixfs::cid_of(RAW_CODEC, last_whole_leaf);
    assert!(store.block(&leaf).await.unwrap() == last_whole_leaf);
    let car = read_all(store.car(&joined.stored.cid).await.unwrap()).await;
    assert!(!car.is_empty());

    let a = data.slice(..chunk + 1);
    let b = data.slice(chunk + 1..3 * chunk);
    let a = store.add(common::odd_pieces(&a)).await.unwrap().cid;
    let b = store.add(common::odd_pieces(&b)).await.unwrap().cid;
    assert!(store.concat(&[a, b]).await.unwrap().is_none());
}

/// An add whose request is dropped mid-way (the client went away) leaves no file behind.
#[tokio::test]
async fn a_dropped_add_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path());
    let (sender, receiver) = futures::channel::mpsc::unbounded::<io::Result<Bytes>>();
    sender.unbounded_send(Ok(random(600_000))).unwrap();
    let input: ByteStream = Box::pin(receiver);
    let mut add = Box::pin(store.add(input));
    // Written once the first piece is through; then the input stalls.
    let written = async {
        while tmp_files(dir.path()).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        _ = &mut add => panic!("the add finished without its input ending"),
        () = written => {}
    }
    drop(add);
    assert!(
        tmp_files(dir.path()).is_empty(),
        "{:?}",
        tmp_files(dir.path())
    );
    drop(sender);
}

/// What a crashed store left in `tmp/` goes when the directory is next opened; the files of
/// a store still open (another process's adds in progress) stay.
#[tokio::test]
async fn a_crashed_stores_temporary_files_go_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let open = embedded(dir.path());
    let live = std::fs::read_dir(dir.path().join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("the open store's tmp directory");
    std::fs::write(live.join("arriving"), b"an add in progress").unwrap();
    // A store that crashed: its directory and its lock file, which nobody holds.
    let crashed = dir.path().join("tmp").join("6c1f0f2e-crashed");
    std::fs::create_dir(&crashed).unwrap();
    std::fs::write(crashed.join("partial"), b"cut short").unwrap();
    std::fs::write(crashed.with_extension("lock"), b"").unwrap();

    let next = embedded(dir.path());
    assert!(!crashed.exists(), "a crashed add's file stays in tmp/");
    assert!(!crashed.with_extension("lock").exists());
    assert!(
        live.join("arriving").exists(),
        "an open store's add was deleted"
    );
    drop((open, next));
}

/// Unpinned blobs go once their grace period is over, even when nothing is unpinned after
/// them (a chunked upload's chunks, released once the blob is assembled).
#[tokio::test]
async fn the_trash_is_emptied_on_time_without_further_unpins() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(dir.path()).with_trash_grace(Duration::from_millis(300));
    let first = store.add(common::odd_pieces(&random(1000))).await.unwrap();
    let second = store.add(common::odd_pieces(&random(2000))).await.unwrap();
    store.unpin(&first.cid).await.unwrap();
    store.unpin(&second.cid).await.unwrap();
    assert_eq!(files_in(&dir.path().join("trash")).len(), 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !files_in(&dir.path().join("trash")).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "trash not emptied: {:?}",
            files_in(&dir.path().join("trash"))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(
        store.block(&second.cid).await,
        Err(BlobError::NotFound(_))
    ));
}
