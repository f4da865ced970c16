//! The `BlobStore` contract, on every blob store (common::backends): the CIDs of the UnixFS
//! importer for a profile (so every store names the same bytes alike), ranges, pins and
//! re-pins, joins, blocks and CARs, and the errors. What one store alone shows is in
//! kubo_client.rs (RPC, timeouts, a damaged node) and embedded_files.rs (files on disk).
//! On the shared IPFS node every test stores bytes no other test (or run) uses.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::io;
use std::time::Instant;

use bytes::Bytes;
use cid::Cid;
use common::backends::BlobBackend;
use common::kubo::read_all;
use futures::{stream, StreamExt};
use ipfs_registry::blobs::kubo::{DAG_PB_CODEC, RAW_CODEC};
use ipfs_registry::blobs::unixfs::{Block, DagBuilder};
use ipfs_registry::blobs::{BlobError, BlobStore, ByteStream, ImportProfile, Joined, UploadFile};
use sha2::{Digest, Sha256};

on_every_blob_store!(
    hello_world_has_its_golden_cid,
    cids_are_those_of_the_unixfs_importer,
    fifty_mib_stream_in_and_out,
    cat_serves_ranges_and_never_a_short_body,
    unpin_is_idempotent_and_pinned_lists_the_roots,
    unpinned_content_is_pinned_back_or_added_again,
    missing_content_is_not_found,
    a_failing_input_stores_and_pins_nothing,
    leaf_aligned_parts_join_into_the_blob_of_their_bytes,
    every_block_is_served_as_its_cid_names_it,
    a_car_holds_the_whole_dag,
    an_upload_file_becomes_the_blob_of_its_bytes,
    an_upload_file_cuts_what_an_uncounted_append_left,
    an_upload_file_is_held_by_one_holder_and_idle_ones_expire,
    evicted_content_is_gone_and_added_afresh,
    a_dag_put_links_stored_blobs_and_pins_the_whole,
    a_dag_put_refuses_bad_blocks_and_unstored_links,
    an_index_replaces_the_one_before_and_is_published_by_name,
);

type Open = fn(ImportProfile) -> BlobBackend;

const CHUNK: usize = 256 * 1024;

fn random(len: usize) -> Bytes {
    Bytes::from(common::oci::random_bytes(len))
}

/// The CID and blocks the UnixFS importer gives `data` under `chunk_size`.
fn imported(data: &[u8], chunk_size: u32) -> (Cid, Vec<Block>) {
    let mut builder = DagBuilder::new(chunk_size);
    let mut blocks = Vec::new();
    builder.push(data, &mut blocks);
    let root = builder.finish(&mut blocks).root;
    (root, blocks)
}

async fn cat_all(store: &dyn BlobStore, cid: &Cid, offset: u64, length: Option<u64>) -> Vec<u8> {
    read_all(store.cat(cid, offset, length).await.expect("cat")).await
}

/// Drops what a test stored, so the shared node does not keep it pinned.
async fn forget(store: &dyn BlobStore, cids: &[Cid]) {
    for cid in cids {
        store.unpin(cid).await.expect("unpin");
    }
}

async fn hello_world_has_its_golden_cid(open: Open) {
    let backend = open(ImportProfile::default());
    let store = &*backend.store;
    store.ping().await.expect("ping");
    let stored = store
        .add(common::odd_pieces(&Bytes::from_static(b"hello world\n")))
        .await
        .unwrap();
    assert_eq!(
        stored.cid,
        Cid::try_from("bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4").unwrap()
    );
    assert_eq!(stored.size, 12);
    assert_eq!(cat_all(store, &stored.cid, 0, None).await, b"hello world\n");
}

/// Sizes around the chunk size: the empty blob, one byte, exactly one chunk (a raw leaf,
/// the CID of its sha256), one byte more (a dag-pb node), several chunks.
async fn cids_are_those_of_the_unixfs_importer(open: Open) {
    let backend = open(ImportProfile::default());
    let store = &*backend.store;
    let mut stored_cids = Vec::new();
    for len in [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5] {
        let data = random(len);
        let stored = store.add(common::odd_pieces(&data)).await.expect("add");
        let (expected, _) = imported(&data, CHUNK as u32);
        assert_eq!(stored.cid, expected, "{len} bytes");
        assert_eq!(
            stored.size, len as u64,
            "the byte count, not the DAG's size"
        );
        let codec = if len <= CHUNK {
            RAW_CODEC
        } else {
            DAG_PB_CODEC
        };
        assert_eq!(stored.cid.codec(), codec, "{len} bytes");
        assert_eq!(stored.cid.version(), cid::Version::V1);
        assert!(store.is_pinned(&stored.cid).await.unwrap());
        let back = cat_all(store, &stored.cid, 0, Some(len as u64)).await;
        assert!(back == data, "{len} bytes back");
        stored_cids.push(stored.cid);
    }
    assert!(cat_all(store, &stored_cids[0], 0, None).await.is_empty());
    forget(store, &stored_cids).await;
}

/// 50 MiB, generated while streaming: more leaves than one node links (174), so the DAG
/// has two levels of nodes.
async fn fifty_mib_stream_in_and_out(open: Open) {
    const LEN: usize = 50 * 1024 * 1024;
    const PIECE: usize = 64 * 1024;
    let backend = open(ImportProfile::default());
    let store = &*backend.store;
    let seed = random(PIECE);
    let piece = move |i: usize| {
        let mut bytes = seed.to_vec();
        bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
        Bytes::from(bytes)
    };
    let mut hasher = Sha256::new();
    let mut builder = DagBuilder::new(CHUNK as u32);
    let mut blocks = Vec::new();
    for i in 0..LEN / PIECE {
        let bytes = piece(i);
        hasher.update(&bytes);
        builder.push(&bytes, &mut blocks);
        blocks.clear();
    }
    let expected_cid = builder.finish(&mut blocks).root;
    let expected = hasher.finalize();
    let input = stream::iter(0..LEN / PIECE).map(move |i| Ok::<_, io::Error>(piece(i)));

    let start = Instant::now();
    let stored = store.add(Box::pin(input)).await.unwrap();
    let add_time = start.elapsed();
    assert_eq!(stored.cid, expected_cid);
    assert_eq!(stored.size, LEN as u64);
    assert!(store.is_pinned(&stored.cid).await.unwrap());

    let start = Instant::now();
    let mut body = store.cat(&stored.cid, 0, Some(LEN as u64)).await.unwrap();
    let mut hasher = Sha256::new();
    let mut read = 0usize;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        read += chunk.len();
        hasher.update(&chunk);
    }
    let cat_time = start.elapsed();
    assert_eq!(read, LEN);
    assert_eq!(hasher.finalize(), expected);
    let mib = LEN as f64 / (1024.0 * 1024.0);
    eprintln!(
        "50 MiB: add {:.2} s ({:.0} MiB/s), cat {:.2} s ({:.0} MiB/s)",
        add_time.as_secs_f64(),
        mib / add_time.as_secs_f64(),
        cat_time.as_secs_f64(),
        mib / cat_time.as_secs_f64()
    );
    forget(store, &[stored.cid]).await;
}

async fn cat_serves_ranges_and_never_a_short_body(open: Open) {
    let backend = open(ImportProfile::default());
    let store = &*backend.store;
    let data = random(3 * CHUNK + 1000);
    let cid = store.add(common::odd_pieces(&data)).await.unwrap().cid;
    // Across chunk boundaries.
    let (offset, length) = (CHUNK - 10, CHUNK + 20);
    assert_eq!(
        cat_all(store, &cid, offset as u64, Some(length as u64)).await,
        &data[offset..offset + length]
    );
    // The tail, without a length.
    let offset = 2 * CHUNK + 5;
    assert_eq!(
        cat_all(store, &cid, offset as u64, None).await,
        &data[offset..]
    );
    // Exactly to the end.
    let offset = data.len() - 7;
    assert_eq!(
        cat_all(store, &cid, offset as u64, Some(7)).await,
        &data[offset..]
    );
    // A length past the end is an error (at once, or at the end of the body), never a
    // silently short body.
    match store.cat(&cid, offset as u64, Some(100)).await {
        Err(BlobError::Backend(_)) => {}
        Err(other) => panic!("expected Backend, got {other:?}"),
        Ok(mut body) => {
            let mut failed = false;
            while let Some(chunk) = body.next().await {
                if let Err(e) = chunk {
                    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
                    failed = true;
                }
            }
            assert!(failed, "a short body must end with an error");
        }
    }
    forget(store, &[cid]).await;
}

async fn unpin_is_idempotent_and_pinned_lists_the_roots(open: Open) {
    let backend = open(ImportProfile::default());
    let store = &*backend.store;
    let data = random(2 * CHUNK);
    let stored = store.add(common::odd_pieces(&data)).await.unwrap();
    // Adding the same bytes again answers the same, and pinning what is pinned is fine.
    assert_eq!(store.add(common::odd_pieces(&data)).await.unwrap(), stored);
    store.pin(&stored.cid).await.expect("pin again");
    assert!(store.is_pinned(&stored.cid).await.unwrap());
    let pinned: HashSet<Cid> = store.pinned().await.unwrap().into_iter().collect();
    assert!(pinned.contains(&stored.cid));
    assert!(pinned.iter().all(|c| c.version() == cid::Version::V1));

    store.unpin(&stored.cid).await.unwrap();
    assert!(!store.is_pinned(&stored.cid).await.unwrap());
    assert!(!store.pinned().await.unwrap().contains(&stored.cid));
    store
        .unpin(&stored.cid)
        .await
        .expect("unpinning something not pinned is fine");
}

/// What `Registry::ensure_pinned` relies on when an unpin (GC, a released upload) finished
/// between an add and the commit that recorded the same bytes: a pin of the CID brings the
/// content back, or, when it answers NotFound, the bytes added again do.
async fn unpinned_content_is_pinned_back_or_added_again(open: Open) {
    let backend = open(ImportProfile::default());
    let store = &*backend.store;
    let data = random(3 * CHUNK);
    let stored = store.add(common::odd_pieces(&data)).await.unwrap();
    store.unpin(&stored.cid).await.unwrap();
    assert!(!store.is_pinned(&stored.cid).await.unwrap());

    match store.pin(&stored.cid).await {
        Ok(()) => {}
        Err(BlobError::NotFound(cid)) => {
            assert_eq!(cid, stored.cid);
            assert_eq!(store.add(common::odd_pieces(&data)).await.unwrap(), stored);
        }
        Err(other) => panic!("a re-pin failed: {other:?}"),
    }
    assert!(store.is_pinned(&stored.cid).await.unwrap());
    assert!(cat_all(store, &stored.cid, 0, None).await == data);
    assert!(store.block(&stored.cid).await.is_ok());

    // Added again after an unpin, the bytes are whole and pinned too.
    store.unpin(&stored.cid).await.unwrap();
    assert_eq!(store.add(common::odd_pieces(&data)).await.unwrap(), stored);
    assert!(store.is_pinned(&stored.cid).await.unwrap());
    assert!(cat_all(store, &stored.cid, 0, None).await == data);
    forget(store, &[stored.cid]).await;
}

async fn missing_content_is_not_found(open: Open) {
    let backend = open(ImportProfile::default());
    let store = &*backend.store;
    let (missing, _) = imported(&random(100), CHUNK as u32);
    match store.cat(&missing, 0, None).await {
        Err(BlobError::NotFound(cid)) => assert_eq!(cid, missing),
        Err(other) => panic!("expected NotFound, got {other:?}"),
        Ok(_) => panic!("cat of a missing CID must fail"),
    }
    assert!(matches!(
        store.block(&missing).await,
        Err(BlobError::NotFound(cid)) if cid == missing
    ));
    assert!(!store.is_pinned(&missing).await.unwrap());
    store.unpin(&missing).await.expect("unpin of a missing CID");
}

async fn a_failing_input_stores_and_pins_nothing(open: Open) {
    let backend = open(ImportProfile::default());
    let store = &*backend.store;
    let data = random(4 * CHUNK);
    let (full, _) = imported(&data, CHUNK as u32);
    let (half, _) = imported(&data[..2 * CHUNK], CHUNK as u32);
    let before: HashSet<Cid> = store.pinned().await.unwrap().into_iter().collect();

    let input: ByteStream = Box::pin(stream::iter([
        Ok(data.slice(..CHUNK)),
        Ok(data.slice(CHUNK..2 * CHUNK)),
        Err(io::Error::other("client disconnected")),
        Ok(data.slice(2 * CHUNK..)),
    ]));
    match store.add(input).await {
        Err(BlobError::Input(message)) => {
            assert!(message.contains("client disconnected"), "{message}")
        }
        other => panic!("expected Input, got {other:?}"),
    }

    // Give a node a moment to finish whatever it would do with the cut request.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!store.is_pinned(&full).await.unwrap());
    assert!(!store.is_pinned(&half).await.unwrap());
    // Other tests pin concurrently on a shared node: no new pin holds our (unique) bytes.
    let prefix = &data[..64];
    let after: HashSet<Cid> = store.pinned().await.unwrap().into_iter().collect();
    for cid in after.difference(&before) {
        let Ok(body) = store.cat(cid, 0, Some(64)).await else {
            continue;
        };
        let mut start = Vec::new();
        let mut body = body;
        while let Some(Ok(chunk)) = body.next().await {
            start.extend_from_slice(&chunk);
        }
        assert_ne!(start, prefix, "a pin {cid} holds the aborted add");
    }
}

/// Adds `data` in parts of `sizes`, as a chunked upload stores its chunks.
async fn add_parts(store: &dyn BlobStore, data: &Bytes, sizes: &[usize]) -> Vec<Cid> {
    let mut parts = Vec::new();
    let mut offset = 0;
    for size in sizes {
        let part = data.slice(offset..offset + size);
        parts.push(store.add(common::odd_pieces(&part)).await.unwrap().cid);
        offset += size;
    }
    assert_eq!(offset, data.len());
    parts
}

/// Parts made of whole leaves are joined from their leaves into exactly the DAG one `add`
/// of the whole builds: 1 KiB leaves, so that a small blob crosses the 174-link boundary
/// (180 leaves: a two-level tree), a first part that is a single raw leaf, and a last part
/// ending in a partial leaf. A part other than the last ending in a partial leaf cannot
/// lend its leaves (the importer would cut the joined bytes elsewhere): the caller then
/// re-adds the bytes. A store may pin the joined blob only in part (its root and nodes
/// directly, the leaves by the parts' pins, listed by `direct_pins`): `pin` of the root then
/// makes it whole, and `unpin` of those nodes drops their direct pins. A store that joins
/// whole lists no direct pin.
async fn leaf_aligned_parts_join_into_the_blob_of_their_bytes(open: Open) {
    const LEAF: usize = 1024;
    let backend = open(ImportProfile {
        chunk_size: LEAF as u32,
    });
    let store = &*backend.store;
    let mut sizes = vec![LEAF];
    sizes.extend([16 * LEAF; 11]);
    sizes.push(2 * LEAF + 17);
    let data = random(sizes.iter().sum());
    let parts = add_parts(store, &data, &sizes).await;
    assert_eq!(parts[0].codec(), RAW_CODEC);

    let Joined {
        stored: joined,
        direct,
    } = store
        .concat(&parts)
        .await
        .expect("join")
        .expect("leaf-aligned parts are joined");
    let (whole, _) = imported(&data, LEAF as u32);
    assert_eq!(joined.cid, whole, "the joined root is the root of one add");
    assert_eq!(joined.size, data.len() as u64);
    if let Some(direct) = direct {
        // Readable at once; pinned as a whole only once asked.
        assert!(!store.is_pinned(&joined.cid).await.unwrap());
        assert!(cat_all(store, &joined.cid, 0, None).await == data);
        assert_eq!(
            direct.len(),
            2,
            "a two-level tree: two nodes under the root"
        );
        let listed = store.direct_pins().await.unwrap();
        for cid in direct.iter().chain([&joined.cid]) {
            assert!(listed.contains(cid), "{cid} not among {listed:?}");
        }
        store.pin(&joined.cid).await.expect("pin the joined root");
        forget(store, &direct).await;
        let listed = store.direct_pins().await.unwrap();
        for cid in direct.iter().chain([&joined.cid]) {
            assert!(!listed.contains(cid), "{cid} still among {listed:?}");
        }
    } else {
        assert_eq!(store.direct_pins().await.unwrap(), vec![]);
    }
    assert!(store.is_pinned(&joined.cid).await.unwrap());
    // The joined blob is pinned as a whole: without the parts' pins it stays whole.
    forget(store, &parts).await;
    assert!(store.is_pinned(&joined.cid).await.unwrap());
    assert!(cat_all(store, &joined.cid, 0, None).await == data);
    // Blocks are served from the joined blob: the root, and its last whole leaf.
    store.block(&joined.cid).await.unwrap();
    let last_whole_leaf = &data[178 * LEAF..179 * LEAF];
    let leaf = ipfs_registry::blobs::unixfs::cid_of(RAW_CODEC, last_whole_leaf);
    assert!(store.block(&leaf).await.unwrap() == last_whole_leaf);

    let unaligned = add_parts(
        store,
        &data,
        &[LEAF + 100, 16 * LEAF, data.len() - 17 * LEAF - 100],
    )
    .await;
    assert!(store.concat(&unaligned).await.expect("no error").is_none());
    forget(store, &unaligned).await;
    forget(store, &[joined.cid]).await;
}

async fn every_block_is_served_as_its_cid_names_it(open: Open) {
    let backend = open(ImportProfile::default());
    let store = &*backend.store;
    let data = random(3 * CHUNK + 5);
    let stored = store.add(common::odd_pieces(&data)).await.unwrap();
    let (root, blocks) = imported(&data, CHUNK as u32);
    assert_eq!(stored.cid, root);
    for block in &blocks {
        let served = store.block(block.cid()).await.expect("stored block");
        // A block held here is what fetching it (which may ask the network) gives too.
        let fetched = store.fetch_block(block.cid()).await.expect("stored block");
        assert_eq!(fetched, served);
        match block {
            Block::Leaf { offset, len, cid } => {
                assert_eq!(cid.codec(), RAW_CODEC);
                assert_eq!(
                    &served[..],
                    &data[*offset as usize..(*offset + *len) as usize]
                );
            }
            Block::Node { bytes, .. } => assert_eq!(&served, bytes),
        }
    }
    forget(store, &[stored.cid]).await;
}

async fn a_car_holds_the_whole_dag(open: Open) {
    let backend = open(ImportProfile::default());
    let store = &*backend.store;
    let data = random(5 * CHUNK + 123);
    let stored = store.add(common::odd_pieces(&data)).await.unwrap();
    // Checked as it passes: every block against its CID, every link's block present.
    let car = ipfs_registry::blobs::verified_car::verified(
        stored.cid,
        store.car(&stored.cid).await.unwrap(),
    );
    let car = read_all(car).await;
    let (_, blocks) = imported(&data, CHUNK as u32);
    let block_bytes: usize = blocks
        .iter()
        .map(|b| match b {
            Block::Leaf { len, .. } => *len as usize,
            Block::Node { bytes, .. } => bytes.len(),
        })
        .sum();
    assert!(car.len() > block_bytes, "{} bytes of CAR", car.len());
    forget(store, &[stored.cid]).await;
}

/// Appends `data` to a session's file in `sizes`, each at the offset the session counts.
async fn append_parts(file: &mut dyn UploadFile, data: &Bytes, sizes: &[usize]) {
    let mut offset = 0;
    for size in sizes {
        let part = data.slice(offset..offset + size);
        let len = file
            .append(offset as u64, common::odd_pieces(&part))
            .await
            .expect("append");
        offset += size;
        assert_eq!(len, offset as u64);
        assert_eq!(file.size(), offset as u64);
    }
}

/// A session's bytes appended in chunks of any size (partial leaves across appends) are
/// stored as the DAG one `add` of the whole builds: 1 KiB leaves, 180 of them (two levels).
/// A store that does not keep sessions says so, and the caller stores chunks with `add`.
async fn an_upload_file_becomes_the_blob_of_its_bytes(open: Open) {
    const LEAF: usize = 1024;
    let backend = open(ImportProfile {
        chunk_size: LEAF as u32,
    });
    let store = &*backend.store;
    let id = uuid::Uuid::new_v4();
    let Some(mut file) = store.upload_file(id).await.expect("open a session") else {
        return;
    };
    assert_eq!(file.size(), 0);
    let sizes = [LEAF + 100, 16 * LEAF, 1, 150 * LEAF, 12 * LEAF - 101 + 17];
    let data = random(sizes.iter().sum());
    append_parts(file.as_mut(), &data, &sizes).await;
    drop(file);

    // Another holder (a restarted server, another replica) continues where it stopped.
    let mut file = store.upload_file(id).await.unwrap().expect("the session");
    assert_eq!(file.size(), data.len() as u64);
    let more = random(3 * LEAF);
    let len = file
        .append(data.len() as u64, common::odd_pieces(&more))
        .await
        .unwrap();
    let whole = Bytes::from([data.as_ref(), more.as_ref()].concat());
    assert_eq!(len, whole.len() as u64);
    let stored = file.finish(len).await.expect("finish");
    let (expected, _) = imported(&whole, LEAF as u32);
    assert_eq!(stored.cid, expected, "the root of one add of the bytes");
    assert_eq!(stored.size, whole.len() as u64);
    assert!(store.is_pinned(&stored.cid).await.unwrap());
    assert!(cat_all(store, &stored.cid, 0, None).await == whole);
    let leaf = ipfs_registry::blobs::unixfs::cid_of(RAW_CODEC, &whole[7 * LEAF..8 * LEAF]);
    assert!(store.block(&leaf).await.unwrap() == whole[7 * LEAF..8 * LEAF]);
    // Finished: the session starts afresh under that id.
    let file = store.upload_file(id).await.unwrap().expect("a new session");
    assert_eq!(file.size(), 0);
    file.discard().await.unwrap();

    // One leaf exactly stays a raw leaf; one byte is its own raw leaf.
    for len in [LEAF, 1] {
        let data = random(len);
        let mut file = store
            .upload_file(uuid::Uuid::new_v4())
            .await
            .unwrap()
            .unwrap();
        append_parts(file.as_mut(), &data, &[len]).await;
        let stored = file.finish(len as u64).await.unwrap();
        assert_eq!(stored.cid, imported(&data, LEAF as u32).0);
        assert_eq!(stored.cid.codec(), RAW_CODEC);
        forget(store, &[stored.cid]).await;
    }
    forget(store, &[stored.cid]).await;
}

/// An append whose bytes the session never counted (its commit failed, or the input broke
/// midway) is cut off by the next append at the counted offset, and by `finish`.
async fn an_upload_file_cuts_what_an_uncounted_append_left(open: Open) {
    const LEAF: usize = 1024;
    let backend = open(ImportProfile {
        chunk_size: LEAF as u32,
    });
    let store = &*backend.store;
    let Some(mut file) = store
        .upload_file(uuid::Uuid::new_v4())
        .await
        .expect("open a session")
    else {
        return;
    };
    let data = random(10 * LEAF + 300);
    append_parts(file.as_mut(), &data, &[2 * LEAF + 300]).await;
    // Written, never counted.
    file.append(2 * LEAF as u64 + 300, common::odd_pieces(&random(5 * LEAF)))
        .await
        .unwrap();
    // Broken input midway.
    let broken: ByteStream = Box::pin(stream::iter([
        Ok(random(LEAF + 5)),
        Err(io::Error::other("client disconnected")),
    ]));
    match file.append(2 * LEAF as u64 + 300, broken).await {
        Err(BlobError::Input(message)) => assert!(message.contains("disconnected")),
        other => panic!("expected Input, got {other:?}"),
    }
    let len = file
        .append(
            2 * LEAF as u64 + 300,
            common::odd_pieces(&data.slice(2 * LEAF + 300..)),
        )
        .await
        .unwrap();
    assert_eq!(len, data.len() as u64);
    file.append(len, common::odd_pieces(&random(77)))
        .await
        .unwrap();
    let stored = file.finish(data.len() as u64).await.unwrap();
    assert_eq!(stored.cid, imported(&data, LEAF as u32).0);
    assert!(cat_all(store, &stored.cid, 0, None).await == data);
    forget(store, &[stored.cid]).await;
}

/// One holder at a time (a second request on the session is told it is busy, after waiting
/// a moment for a holder that is letting go); a session's file left idle goes with
/// `expire_upload_files`, one in use or recent stays.
async fn an_upload_file_is_held_by_one_holder_and_idle_ones_expire(open: Open) {
    let backend = open(ImportProfile::default());
    let store = &*backend.store;
    let (idle, held) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let Some(mut file) = store.upload_file(idle).await.expect("open a session") else {
        assert_eq!(
            store
                .expire_upload_files(std::time::Duration::ZERO)
                .await
                .unwrap(),
            0
        );
        return;
    };
    append_parts(file.as_mut(), &random(1000), &[1000]).await;
    match store.upload_file(idle).await {
        Err(BlobError::Busy(_)) => {}
        other => panic!(
            "expected Busy, got {:?}",
            other.map(|f| f.map(|f| f.size()))
        ),
    }
    // A holder letting go while the next request waits: that request gets the session.
    let letting_go = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        drop(file);
    });
    let file = store
        .upload_file(idle)
        .await
        .expect("the session once its holder let go")
        .expect("a session file");
    letting_go.await.unwrap();
    assert_eq!(file.size(), 1000);
    drop(file);
    let mut other = store.upload_file(held).await.unwrap().unwrap();
    append_parts(other.as_mut(), &random(10), &[10]).await;

    let an_hour = std::time::Duration::from_secs(3600);
    assert_eq!(store.expire_upload_files(an_hour).await.unwrap(), 0);
    assert_eq!(
        store
            .expire_upload_files(std::time::Duration::ZERO)
            .await
            .unwrap(),
        1,
        "the idle session goes, the held one stays"
    );
    assert_eq!(other.size(), 10);
    drop(other);
    let file = store.upload_file(idle).await.unwrap().unwrap();
    assert_eq!(file.size(), 0, "the expired session's bytes are gone");
    file.discard().await.unwrap();
    let file = store.upload_file(held).await.unwrap().unwrap();
    assert_eq!(file.size(), 10);
    file.discard().await.unwrap();
}

/// Evicted content is not pinned and its blocks are gone (nothing for a pin to restore);
/// the same bytes added again are stored whole under the same CID. An IPFS node is one of
/// the test's own: on js-ipfs a `block/rm` can leave the repository lock held, which would
/// stall every other test's `add` on the shared node (see common::private_node).
async fn evicted_content_is_gone_and_added_afresh(open: Open) {
    let backend = open(ImportProfile::default());
    let node = backend
        .shared
        .then(common::private_node::PrivateNode::start);
    let private: Option<Box<dyn BlobStore>> = node.as_ref().map(|node| {
        Box::new(common::kubo::store_at(
            node.url.clone(),
            std::time::Duration::from_secs(10),
            ImportProfile::default(),
        )) as Box<dyn BlobStore>
    });
    let store = match &private {
        Some(store) => &**store,
        None => &*backend.store,
    };
    let data = random(2 * CHUNK + 7);
    let stored = store.add(common::odd_pieces(&data)).await.unwrap();
    let (_, blocks) = imported(&data, CHUNK as u32);
    let leaf = *blocks[0].cid();

    store.evict(&stored.cid).await.expect("evict");
    assert!(!store.is_pinned(&stored.cid).await.unwrap());
    assert!(!store.pinned().await.unwrap().contains(&stored.cid));
    match store.block(&leaf).await {
        Err(BlobError::NotFound(cid)) => assert_eq!(cid, leaf),
        other => panic!("an evicted block must be gone, got {other:?}"),
    }
    store.evict(&stored.cid).await.expect("evicting again");

    assert_eq!(store.add(common::odd_pieces(&data)).await.unwrap(), stored);
    assert!(store.is_pinned(&stored.cid).await.unwrap());
    assert!(cat_all(store, &stored.cid, 0, None).await == data);
    forget(store, &[stored.cid]).await;
}

/// An image layout over a layer and a config `add`ed before: its blocks and the root pin.
async fn layout_over(
    store: &dyn BlobStore,
    manifest: &[u8],
    blobs: &[&Bytes],
) -> (ipfs_registry::blobs::layout::Layout, Vec<Cid>) {
    use ipfs_registry::blobs::layout::{build, Content, Image};
    use ipfs_registry::oci::Digest as OciDigest;
    let mut contents = std::collections::BTreeMap::new();
    let mut stored = Vec::new();
    for data in blobs {
        let added = store.add(common::odd_pieces(data)).await.unwrap();
        let root_block = store.block(&added.cid).await.unwrap();
        let dag_size =
            ipfs_registry::blobs::unixfs::cumulative_size(&added.cid, &root_block).unwrap();
        contents.insert(
            OciDigest::sha256_of(data),
            Content::Stored {
                cid: added.cid,
                dag_size,
            },
        );
        stored.push(added.cid);
    }
    let digest = OciDigest::sha256_of(manifest);
    contents.insert(
        digest.clone(),
        Content::Bytes(Bytes::copy_from_slice(manifest)),
    );
    let image = Image {
        tag: "latest".into(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest,
        size: manifest.len() as u64,
        blobs: contents,
    };
    let layout = build(&image, store.profile().chunk_size).unwrap();
    (layout, stored)
}

async fn a_dag_put_links_stored_blobs_and_pins_the_whole(open: Open) {
    let backend = open(ImportProfile::default());
    let store = &*backend.store;
    let layer = random(3 * CHUNK + 5);
    let config = random(300);
    // A manifest over one chunk: a file node of its own among the new blocks.
    let manifest = random(CHUNK + 7);
    let (layout, stored) = layout_over(store, &manifest, &[&layer, &config]).await;
    assert!(!store.is_pinned(&layout.root).await.unwrap());

    store
        .put_dag(&layout.root, layout.blocks.clone())
        .await
        .expect("put_dag");
    assert!(store.is_pinned(&layout.root).await.unwrap());
    assert!(store.pinned().await.unwrap().contains(&layout.root));
    for (cid, bytes) in &layout.blocks {
        assert_eq!(&store.block(cid).await.expect("new block"), bytes);
    }
    // Again: nothing changes.
    store
        .put_dag(&layout.root, layout.blocks.clone())
        .await
        .expect("put_dag again");

    // The CAR of the root is the whole image: the new blocks and every block of the linked
    // layer, each checked against its CID and every link followed.
    let car = ipfs_registry::blobs::verified_car::verified(
        layout.root,
        store.car(&layout.root).await.expect("car"),
    );
    let car = read_all(car).await;
    let (_, layer_blocks) = imported(&layer, CHUNK as u32);
    let least: usize =
        layout.blocks.iter().map(|(_, b)| b.len()).sum::<usize>() + layer.len() + config.len();
    assert!(
        car.len() > least,
        "{} bytes of CAR, {least} of blocks",
        car.len()
    );
    assert!(layer_blocks.len() > 1);

    // Unpinning the layout leaves the blobs it linked pinned and whole.
    store.unpin(&layout.root).await.unwrap();
    assert!(!store.is_pinned(&layout.root).await.unwrap());
    assert_eq!(cat_all(store, &stored[0], 0, None).await, layer);
    forget(store, &stored).await;
}

async fn a_dag_put_refuses_bad_blocks_and_unstored_links(open: Open) {
    let backend = open(ImportProfile::default());
    let store = &*backend.store;
    let (layout, stored) = layout_over(store, &random(500), &[&random(2 * CHUNK + 1)]).await;

    // A block that is not what its CID names.
    let mut tampered = layout.blocks.clone();
    let (cid, _) = tampered[0];
    tampered[0] = (cid, Bytes::from_static(b"not this block"));
    assert!(matches!(
        store.put_dag(&layout.root, tampered).await,
        Err(BlobError::Input(_))
    ));
    // A root that is not among the blocks.
    let without_root = layout.blocks[..layout.blocks.len() - 1].to_vec();
    assert!(matches!(
        store.put_dag(&layout.root, without_root).await,
        Err(BlobError::Input(_))
    ));
    assert!(!store.is_pinned(&layout.root).await.unwrap());

    // A linked blob that is not stored: refused before anything is pinned (on a node,
    // without asking the network for it).
    forget(store, &stored).await;
    match store.put_dag(&layout.root, layout.blocks.clone()).await {
        Err(BlobError::NotFound(missing)) => assert_eq!(missing, stored[0]),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(!store.is_pinned(&layout.root).await.unwrap());
}

/// The public index's DAG (directories over image layouts) stored over the one before: the
/// new root pinned with every block, the old one left to the caller to unpin. An IPFS node
/// publishes a root under an IPNS name and resolves it; the embedded store has none.
async fn an_index_replaces_the_one_before_and_is_published_by_name(open: Open) {
    use ipfs_registry::blobs::public_index::{build, Entry};
    let backend = open(ImportProfile::default());
    let store = &*backend.store;
    let (one, mut stored) = layout_over(store, &random(400), &[&random(CHUNK + 3)]).await;
    let (two, more) = layout_over(store, &random(401), &[&random(CHUNK + 4)]).await;
    stored.extend(more);
    let mut entries = Vec::new();
    for (tag, layout) in [("v1", &one), ("v2", &two)] {
        store
            .put_dag(&layout.root, layout.blocks.clone())
            .await
            .unwrap();
        let root_block = store.block(&layout.root).await.unwrap();
        entries.push(Entry {
            repository: "team/app".into(),
            tag: tag.into(),
            layout: layout.root,
            dag_size: ipfs_registry::blobs::unixfs::cumulative_size(&layout.root, &root_block)
                .unwrap(),
        });
    }
    let first = build(entries[..1].to_vec());
    store
        .put_dag_replacing(None, &first.root, first.blocks.clone())
        .await
        .expect("first index");
    let second = build(entries.clone());
    store
        .put_dag_replacing(Some(&first.root), &second.root, second.blocks.clone())
        .await
        .expect("second index");
    assert!(store.is_pinned(&second.root).await.unwrap());
    assert!(
        store.is_pinned(&first.root).await.unwrap(),
        "the caller unpins"
    );
    store.unpin(&first.root).await.unwrap();
    assert!(store.is_pinned(&second.root).await.unwrap());
    for (cid, bytes) in &second.blocks {
        assert_eq!(&store.block(cid).await.expect("index block"), bytes);
    }

    let key = format!("contract-{}", common::unique_name());
    // The node (shared) has IPNS, the embedded store not.
    // The node (shared) has IPNS, the embedded store not; a published name resolves to its
    // root (what a follow rule on an /ipns/ source asks).
    match (backend.shared, store.publish_name(&key, &second.root).await) {
        (true, Ok(Some(name))) => {
            let resolved = store.resolve_name(&name).await.expect("name/resolve");
            assert_eq!(resolved.hash(), second.root.hash());
        }
        (false, Ok(None)) => {
            let refused = store.resolve_name("k51qzi5uqu5dexample").await;
            assert!(
                matches!(&refused, Err(BlobError::Backend(m)) if m.contains("unsupported")),
                "{refused:?}"
            );
        }
        (node, other) => panic!("node: {node}: {other:?}"),
    }

    store.unpin(&second.root).await.unwrap();
    for layout in [&one, &two] {
        store.unpin(&layout.root).await.unwrap();
    }
    forget(store, &stored).await;
}
