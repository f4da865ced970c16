//! The embedded store's block index: where every block of every stored DAG is, in a SQLite
//! file (WAL mode) with its own refinery migrations. Calls block: the store runs them on
//! the blocking pool.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use rusqlite::{params, Connection};

use crate::blobs::unixfs::Block;
use crate::blobs::BlobError;

mod migrations {
    refinery::embed_migrations!("migrations-embedded/blocks");
}

/// Where a block's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Location {
    /// `length` bytes at `offset` of the file of `root`.
    Leaf { root: Cid, offset: u64, length: u64 },
    /// An interior node of the DAG under `root`, kept whole.
    Node { root: Cid, bytes: Bytes },
}

pub(super) struct BlockIndex {
    connection: Mutex<Connection>,
}

impl std::fmt::Debug for BlockIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockIndex").finish_non_exhaustive()
    }
}

fn index_error(e: impl std::fmt::Display) -> BlobError {
    BlobError::Backend(format!("embedded block index: {e}"))
}

/// A SQLite failure of the index: a full disk (or a lock held too long by another process)
/// is the store being unavailable for now (503), not a fault of the registry.
fn index_db(e: rusqlite::Error) -> BlobError {
    match e.sqlite_error_code() {
        Some(
            rusqlite::ErrorCode::DiskFull
            | rusqlite::ErrorCode::DatabaseBusy
            | rusqlite::ErrorCode::DatabaseLocked,
        ) => BlobError::Unavailable(format!("embedded block index: {e}")),
        _ => index_error(e),
    }
}

fn parse_cid(text: &str) -> Result<Cid, BlobError> {
    Cid::try_from(text).map_err(|e| index_error(format!("stored CID {text:?}: {e}")))
}

fn to_u64(value: Option<i64>) -> Option<u64> {
    value.and_then(|v| u64::try_from(v).ok())
}

impl BlockIndex {
    pub(super) fn open(path: &Path) -> Result<BlockIndex, BlobError> {
        crate::durable::prepare_database_file(path).map_err(index_error)?;
        let mut connection = Connection::open(path).map_err(index_error)?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(index_error)?;
        // WAL: readers (gateway requests) never wait for a writer (a push). FULL: a block
        // index row is on disk before the blob it locates is acknowledged.
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(index_error)?;
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(index_error)?;
        connection
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(index_error)?;
        migrations::migrations::runner()
            .set_abort_divergent(true)
            .run(&mut connection)
            .map_err(index_error)?;
        crate::durable::sync_database_file(path).map_err(index_error)?;
        Ok(BlockIndex {
            connection: Mutex::new(connection),
        })
    }

    fn connection(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (its own
        // transaction rolls back), so a poisoned lock is still a usable connection.
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a DAG and all its blocks, in one transaction. Recording a root twice is a
    /// no-op.
    pub(super) fn insert(&self, root: &Cid, size: u64, blocks: &[Block]) -> Result<(), BlobError> {
        let mut connection = self.connection();
        let tx = connection.transaction().map_err(index_db)?;
        let root_text = root.to_string();
        let inserted = tx
            .execute(
                "INSERT OR IGNORE INTO roots (cid, size) VALUES (?1, ?2)",
                params![root_text, size as i64],
            )
            .map_err(index_db)?;
        if inserted == 1 {
            let mut statement = tx
                .prepare(
                    "INSERT OR IGNORE INTO blocks (cid, root, byte_offset, length, node) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(index_db)?;
            for block in blocks {
                match block {
                    Block::Leaf { cid, offset, len } => statement.execute(params![
                        cid.to_string(),
                        root_text,
                        *offset as i64,
                        *len as i64,
                        None::<Vec<u8>>
                    ]),
                    Block::Node { cid, bytes } => statement.execute(params![
                        cid.to_string(),
                        root_text,
                        None::<i64>,
                        None::<i64>,
                        bytes.as_ref()
                    ]),
                }
                .map_err(index_db)?;
            }
        }
        tx.commit().map_err(index_db)
    }

    /// Forgets a DAG (its blocks go with it).
    pub(super) fn remove(&self, root: &Cid) -> Result<(), BlobError> {
        self.connection()
            .execute(
                "DELETE FROM roots WHERE cid = ?1",
                params![root.to_string()],
            )
            .map(drop)
            .map_err(index_db)
    }

    /// Every stored root, in CID order.
    pub(super) fn roots(&self) -> Result<Vec<Cid>, BlobError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare("SELECT cid FROM roots ORDER BY cid")
            .map_err(index_db)?;
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(index_db)?;
        rows.map(|row| parse_cid(&row.map_err(index_db)?)).collect()
    }

    /// Where one block is, in each stored DAG that holds it (a few at most).
    pub(super) fn locate(&self, cid: &Cid) -> Result<Vec<Location>, BlobError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare_cached(
                "SELECT root, byte_offset, length, node FROM blocks WHERE cid = ?1 LIMIT 8",
            )
            .map_err(index_db)?;
        let rows = statement
            .query_map(params![cid.to_string()], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<i64>>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                    row.get::<_, Option<Vec<u8>>>(3)?,
                ))
            })
            .map_err(index_db)?;
        rows.map(|row| {
            let (root, offset, length, node) = row.map_err(index_db)?;
            location(&root, offset, length, node)
        })
        .collect()
    }

    /// Every block of the DAG under `root`, by CID; empty when the root is not stored.
    pub(super) fn dag(&self, root: &Cid) -> Result<HashMap<Cid, Location>, BlobError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare("SELECT cid, byte_offset, length, node FROM blocks WHERE root = ?1")
            .map_err(index_db)?;
        let root_text = root.to_string();
        let rows = statement
            .query_map(params![root_text], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<i64>>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                    row.get::<_, Option<Vec<u8>>>(3)?,
                ))
            })
            .map_err(index_db)?;
        let mut dag = HashMap::new();
        for row in rows {
            let (cid, offset, length, node) = row.map_err(index_db)?;
            dag.insert(
                parse_cid(&cid)?,
                location(&root_text, offset, length, node)?,
            );
        }
        Ok(dag)
    }
}

fn location(
    root: &str,
    offset: Option<i64>,
    length: Option<i64>,
    node: Option<Vec<u8>>,
) -> Result<Location, BlobError> {
    match (node, to_u64(offset), to_u64(length)) {
        (Some(node), _, _) => Ok(Location::Node {
            root: parse_cid(root)?,
            bytes: Bytes::from(node),
        }),
        (None, Some(offset), Some(length)) => Ok(Location::Leaf {
            root: parse_cid(root)?,
            offset,
            length,
        }),
        _ => Err(index_error(format!("a block of {root} has no location"))),
    }
}
