//! The scale data set (docs/performance.md, "Scale"): registry metadata written straight
//! into the database by bulk SQL, shaped as pushes would leave it. Every row keeps the
//! schema's invariants: a manifest's blobs are linked in its repository and recorded as its
//! references, tags point at manifests of their repository, digests and CIDs parse. GC
//! therefore walks a real graph, and some of it is garbage on purpose (see [`Shape`]).

use std::path::Path;

use anyhow::{ensure, Context, Result};
use bytes::{BufMut, BytesMut};
use futures::SinkExt;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// Every table holds at least this many rows of each kind, so that a page of 100 taken
/// from the middle of the catalog or the big repository's tags is a full page even in the
/// "empty" registry the larger ones are compared with.
pub const MIN_SET: u64 = 250;

/// Old enough for every grace period: rows pushed long ago.
const OLD_PG: &str = "2020-01-01 00:00:00+00";
const OLD_MS: i64 = 1_577_836_800_000;

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// What the embedded store records for its blobs (src/blobs/profile.rs, default profile).
const IMPORT_PROFILE: &str = "unixfs-v1;cid-version=1;raw-leaves=true;chunker=size-262144;\
     hash=sha2-256;layout=balanced;max-links=174";

/// How N blob rows are laid out. Manifest `i` (an OCI image manifest) lives in repository
/// `i % repositories` and owns blob slots `10i..10i+9`: slot 0 is its config, slots 1–8 its
/// layers (all linked in its repository, long ago), slot 9 is not referenced by any
/// manifest: an old orphan blob when `i % 100 == 0`, an old link nothing references when
/// `i % 100 == 1` (both garbage), else a link pushed just now (kept: within the grace
/// period). Repository 0 is the big one: its manifests carry `big_tags` tags. Every other
/// manifest has one tag, except the untagged old ones (`i % 100 == 50`), which GC with an
/// untagged retention deletes together with their nine blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shape {
    pub blobs: u64,
    pub manifests: u64,
    pub repositories: u64,
    pub big_tags: u64,
}

/// Row counts, as seeded (counted back from the database) or as [`Shape`] predicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub blobs: u64,
    pub manifests: u64,
    pub repositories: u64,
    pub tags: u64,
    pub big_repository_tags: u64,
    pub repository_blobs: u64,
    pub manifest_references: u64,
}

/// What one GC pass over the seeded set removes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Garbage {
    pub manifests: u64,
    pub blobs: u64,
    pub links: u64,
}

impl Shape {
    /// The set for `rows` blob rows: rows/10 manifests, rows/100 repositories, rows/10 tags
    /// in the big repository (each at least [`MIN_SET`]).
    pub fn for_rows(rows: u64) -> Shape {
        let manifests = (rows / 10).max(MIN_SET);
        Shape {
            blobs: manifests * 10,
            manifests,
            repositories: (rows / 100).clamp(MIN_SET, manifests),
            big_tags: manifests,
        }
    }

    pub fn repository_of(&self, manifest: u64) -> u64 {
        manifest % self.repositories
    }

    fn untagged(&self, manifest: u64) -> bool {
        manifest % 100 == 50 && self.repository_of(manifest) != 0
    }

    /// Manifests of the big repository: 0, R, 2R, …
    fn big_manifests(&self) -> u64 {
        self.manifests.div_ceil(self.repositories)
    }

    /// The manifest the big repository's tag `j` points at.
    fn big_tag_target(&self, j: u64) -> u64 {
        (j % self.big_manifests()) * self.repositories
    }

    /// A manifest pulled by tag: its repository and tag.
    pub fn tagged(&self, pick: u64) -> (String, String) {
        let i = pick % self.manifests;
        if self.repository_of(i) == 0 || self.untagged(i) {
            let j = pick % self.big_tags;
            return (repo_name(0), big_tag(j));
        }
        (repo_name(self.repository_of(i)), small_tag(i))
    }

    /// A blob linked in a repository: the repository and the blob's digest.
    pub fn linked_blob(&self, pick: u64) -> (String, String) {
        let i = (pick / 9) % self.manifests;
        let slot = pick % 9;
        (repo_name(self.repository_of(i)), blob_digest(i * 10 + slot))
    }

    pub fn expected(&self) -> Counts {
        let mut c = Counts {
            blobs: self.blobs,
            manifests: self.manifests,
            repositories: self.repositories,
            big_repository_tags: self.big_tags,
            tags: self.big_tags,
            manifest_references: self.manifests * 9,
            repository_blobs: 0,
        };
        for i in 0..self.manifests {
            if self.repository_of(i) != 0 && !self.untagged(i) {
                c.tags += 1;
            }
            c.repository_blobs += if i % 100 == 0 { 9 } else { 10 };
        }
        c
    }

    pub fn garbage(&self) -> Garbage {
        let mut g = Garbage::default();
        for i in 0..self.manifests {
            if self.untagged(i) {
                g.manifests += 1;
                g.blobs += 9;
                g.links += 9;
            }
            match i % 100 {
                0 => g.blobs += 1,
                1 => {
                    g.blobs += 1;
                    g.links += 1;
                }
                _ => {}
            }
        }
        g
    }

    /// CIDs of the blobs one GC pass deletes (their content is written into the embedded
    /// blob store, so the pass removes real files).
    pub fn garbage_cids(&self) -> Vec<String> {
        let mut cids = Vec::new();
        for i in 0..self.manifests {
            if self.untagged(i) {
                cids.extend((0..9).map(|s| blob_cid(i * 10 + s)));
            }
            if i % 100 <= 1 {
                cids.push(blob_cid(i * 10 + 9));
            }
        }
        cids
    }
}

pub fn repo_name(r: u64) -> String {
    format!("scale/r{r:06}")
}

pub fn big_tag(j: u64) -> String {
    format!("t{j:07}")
}

fn small_tag(i: u64) -> String {
    format!("v{i:07}")
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn blob_seed(b: u64) -> String {
    format!("ipfs-registry scale blob {b}")
}

pub fn blob_digest(b: u64) -> String {
    format!("sha256:{}", sha256_hex(blob_seed(b).as_bytes()))
}

/// A CIDv1 (raw, sha2-256) as the embedded store names a one-block blob.
pub fn blob_cid(b: u64) -> String {
    let hash = Sha256::digest(blob_seed(b).as_bytes());
    let multihash = cid::multihash::Multihash::<64>::wrap(0x12, &hash[..])
        .expect("a sha2-256 digest fits a 64-byte multihash");
    cid::Cid::new_v1(0x55, multihash).to_string()
}

fn blob_size(b: u64) -> u64 {
    if b.is_multiple_of(10) {
        1_000 + b % 1_000
    } else {
        1_000_000 + b
    }
}

/// Manifest `i`'s bytes and digest.
fn manifest(i: u64) -> (String, String) {
    let descriptor = |media_type: &str, b: u64| {
        format!(
            "{{\"mediaType\":\"{media_type}\",\"digest\":\"{}\",\"size\":{}}}",
            blob_digest(b),
            blob_size(b)
        )
    };
    let layers: Vec<String> = (1..9).map(|s| descriptor(LAYER_TYPE, i * 10 + s)).collect();
    let content = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{MANIFEST_TYPE}\",\"config\":{},\"layers\":[{}]}}",
        descriptor(CONFIG_TYPE, i * 10),
        layers.join(",")
    );
    let digest = format!("sha256:{}", sha256_hex(content.as_bytes()));
    (content, digest)
}

/// One row of each table, in foreign-key order, handed to a backend's writer.
enum Row<'a> {
    Blob {
        b: u64,
        old: bool,
    },
    Link {
        repository: u64,
        b: u64,
        old: bool,
    },
    Manifest {
        repository: u64,
        digest: &'a str,
        content: &'a str,
    },
    Reference {
        repository: u64,
        manifest: &'a str,
        b: u64,
    },
    Tag {
        repository: u64,
        name: &'a str,
        manifest: &'a str,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    Blobs,
    Links,
    Manifests,
    References,
    Tags,
}

const TABLES: [Table; 5] = [
    Table::Blobs,
    Table::Links,
    Table::Manifests,
    Table::References,
    Table::Tags,
];

/// Manifests per batch of rows generated (bounded memory while seeding).
const BATCH: u64 = 2_000;

/// Calls `emit` with every row of `table` belonging to the manifests in `batch` (the big
/// repository's tags come with the batch starting at 0).
fn rows(
    shape: &Shape,
    table: Table,
    batch: std::ops::Range<u64>,
    mut emit: impl FnMut(Row<'_>) -> Result<()>,
) -> Result<()> {
    if table == Table::Tags && batch.start == 0 {
        let digests: Vec<String> = (0..shape.big_manifests())
            .map(|k| manifest(k * shape.repositories).1)
            .collect();
        for j in 0..shape.big_tags {
            let target = shape.big_tag_target(j) / shape.repositories;
            emit(Row::Tag {
                repository: 0,
                name: &big_tag(j),
                manifest: &digests[target as usize],
            })?;
        }
    }
    for i in batch.start..batch.end.min(shape.manifests) {
        let repository = shape.repository_of(i);
        let extra = i * 10 + 9;
        match table {
            Table::Blobs => {
                for b in i * 10..i * 10 + 10 {
                    emit(Row::Blob {
                        b,
                        old: b != extra || i % 100 <= 1,
                    })?;
                }
            }
            Table::Links => {
                for b in i * 10..i * 10 + 10 {
                    if b == extra && i % 100 == 0 {
                        continue;
                    }
                    emit(Row::Link {
                        repository,
                        b,
                        old: b != extra || i % 100 == 1,
                    })?;
                }
            }
            Table::Manifests => {
                let (content, digest) = manifest(i);
                emit(Row::Manifest {
                    repository,
                    digest: &digest,
                    content: &content,
                })?;
            }
            Table::References => {
                let (_, digest) = manifest(i);
                for b in i * 10..i * 10 + 9 {
                    emit(Row::Reference {
                        repository,
                        manifest: &digest,
                        b,
                    })?;
                }
            }
            Table::Tags => {
                if repository != 0 && !shape.untagged(i) {
                    emit(Row::Tag {
                        repository,
                        name: &small_tag(i),
                        manifest: &manifest(i).1,
                    })?;
                }
            }
        }
    }
    Ok(())
}

/// Seeds the (migrated, empty) PostgreSQL database at `url`: one COPY per table, then
/// VACUUM ANALYZE (what autovacuum does after a bulk load, done now rather than at some
/// point during the measurement).
pub async fn postgres(url: &str, shape: &Shape) -> Result<Counts> {
    let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(connection);
    let now: String = client
        .query_one("SELECT now()::text", &[])
        .await?
        .try_get(0)?;
    let tx = client.transaction().await?;
    // Explicit ids (1-based), so the rows below can name them.
    tx.execute(
        "INSERT INTO repositories (id, name) OVERRIDING SYSTEM VALUE \
         SELECT g + 1, 'scale/r' || lpad(g::text, 6, '0') FROM generate_series(0, $1::bigint - 1) g",
        &[&(shape.repositories as i64)],
    )
    .await?;
    tx.execute(
        "SELECT setval(pg_get_serial_sequence('repositories', 'id'), $1::bigint)",
        &[&(shape.repositories as i64)],
    )
    .await?;
    for table in TABLES {
        let statement = match table {
            Table::Blobs => "COPY blobs (digest, cid, size, import_profile, created_at) FROM STDIN",
            Table::Links => "COPY repository_blobs (repository_id, digest, created_at) FROM STDIN",
            Table::Manifests => {
                "COPY manifests (repository_id, digest, media_type, content, parsed, size, \
                 created_at) FROM STDIN"
            }
            Table::References => {
                "COPY manifest_references (repository_id, manifest_digest, referenced_digest, \
                 kind) FROM STDIN"
            }
            Table::Tags => "COPY tags (repository_id, name, manifest_digest) FROM STDIN",
        };
        let sink = tx.copy_in(statement).await?;
        futures::pin_mut!(sink);
        let mut buffer = BytesMut::with_capacity(1 << 20);
        for start in (0..shape.manifests).step_by(BATCH as usize) {
            rows(shape, table, start..start + BATCH, |row| {
                let time = |old: bool| if old { OLD_PG } else { now.as_str() };
                let line = match row {
                    Row::Blob { b, old } => format!(
                        "{}\t{}\t{}\t{IMPORT_PROFILE}\t{}\n",
                        blob_digest(b),
                        blob_cid(b),
                        blob_size(b),
                        time(old)
                    ),
                    Row::Link { repository, b, old } => {
                        format!("{}\t{}\t{}\n", repository + 1, blob_digest(b), time(old))
                    }
                    Row::Manifest {
                        repository,
                        digest,
                        content,
                    } => format!(
                        // bytea as hex: `\\x` is one backslash in COPY's text format.
                        "{}\t{digest}\t{MANIFEST_TYPE}\t\\\\x{}\t{content}\t{}\t{OLD_PG}\n",
                        repository + 1,
                        hex::encode(content),
                        content.len()
                    ),
                    Row::Reference {
                        repository,
                        manifest,
                        b,
                    } => format!("{}\t{manifest}\t{}\tblob\n", repository + 1, blob_digest(b)),
                    Row::Tag {
                        repository,
                        name,
                        manifest,
                    } => format!("{}\t{name}\t{manifest}\n", repository + 1),
                };
                buffer.put_slice(line.as_bytes());
                Ok(())
            })?;
            sink.send(buffer.split().freeze()).await?;
        }
        sink.as_mut().finish().await?;
    }
    tx.commit().await?;
    client.batch_execute("VACUUM ANALYZE").await?;
    let count = |sql: &'static str| {
        let client = &client;
        async move {
            let n: i64 = client.query_one(sql, &[]).await?.try_get(0)?;
            anyhow::Ok(n as u64)
        }
    };
    Ok(Counts {
        blobs: count("SELECT count(*) FROM blobs").await?,
        manifests: count("SELECT count(*) FROM manifests").await?,
        repositories: count("SELECT count(*) FROM repositories").await?,
        tags: count("SELECT count(*) FROM tags").await?,
        big_repository_tags: count(
            "SELECT count(*) FROM tags t JOIN repositories r ON r.id = t.repository_id \
             WHERE r.name = 'scale/r000000'",
        )
        .await?,
        repository_blobs: count("SELECT count(*) FROM repository_blobs").await?,
        manifest_references: count("SELECT count(*) FROM manifest_references").await?,
    })
}

/// Seeds the (migrated, empty) embedded metadata store at `path`: one transaction of
/// prepared inserts, foreign keys checked.
pub fn sqlite(path: &Path, shape: &Shape) -> Result<Counts> {
    let mut c = rusqlite::Connection::open(path)?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    // Random digests land all over the b-trees: with SQLite's default 2 MiB page cache a
    // million rows take many minutes of disk reads.
    c.pragma_update(None, "cache_size", -512 * 1024)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let time = |old: bool| if old { OLD_MS } else { now };
    let tx = c.transaction()?;
    {
        let mut insert =
            tx.prepare("INSERT INTO repositories (id, name, created_at) VALUES (?1, ?2, ?3)")?;
        for r in 0..shape.repositories {
            insert.execute(rusqlite::params![r as i64 + 1, repo_name(r), OLD_MS])?;
        }
        let mut blob = tx.prepare(
            "INSERT INTO blobs (digest, cid, size, import_profile, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut link = tx.prepare(
            "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES (?1, ?2, ?3)",
        )?;
        let mut manifest = tx.prepare(
            "INSERT INTO manifests (repository_id, digest, media_type, content, parsed, size, \
             created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut reference = tx.prepare(
            "INSERT INTO manifest_references (repository_id, manifest_digest, \
             referenced_digest, kind) VALUES (?1, ?2, ?3, 'blob')",
        )?;
        let mut tag = tx.prepare(
            "INSERT INTO tags (repository_id, name, manifest_digest, updated_at) \
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for table in TABLES {
            rows(shape, table, 0..shape.manifests, |row| {
                match row {
                    Row::Blob { b, old } => blob.execute(rusqlite::params![
                        blob_digest(b),
                        blob_cid(b),
                        blob_size(b) as i64,
                        IMPORT_PROFILE,
                        time(old)
                    ])?,
                    Row::Link { repository, b, old } => link.execute(rusqlite::params![
                        repository as i64 + 1,
                        blob_digest(b),
                        time(old)
                    ])?,
                    Row::Manifest {
                        repository,
                        digest,
                        content,
                    } => manifest.execute(rusqlite::params![
                        repository as i64 + 1,
                        digest,
                        MANIFEST_TYPE,
                        content.as_bytes(),
                        content,
                        content.len() as i64,
                        OLD_MS
                    ])?,
                    Row::Reference {
                        repository,
                        manifest,
                        b,
                    } => reference.execute(rusqlite::params![
                        repository as i64 + 1,
                        manifest,
                        blob_digest(b)
                    ])?,
                    Row::Tag {
                        repository,
                        name,
                        manifest,
                    } => tag.execute(rusqlite::params![
                        repository as i64 + 1,
                        name,
                        manifest,
                        now
                    ])?,
                };
                Ok(())
            })?;
        }
    }
    tx.commit()?;
    let count = |sql: &str| -> Result<u64> {
        let n: i64 = c.query_row(sql, [], |r| r.get(0))?;
        Ok(n as u64)
    };
    let counts = Counts {
        blobs: count("SELECT count(*) FROM blobs")?,
        manifests: count("SELECT count(*) FROM manifests")?,
        repositories: count("SELECT count(*) FROM repositories")?,
        tags: count("SELECT count(*) FROM tags")?,
        big_repository_tags: count(
            "SELECT count(*) FROM tags t JOIN repositories r ON r.id = t.repository_id \
             WHERE r.name = 'scale/r000000'",
        )?,
        repository_blobs: count("SELECT count(*) FROM repository_blobs")?,
        manifest_references: count("SELECT count(*) FROM manifest_references")?,
    };
    let violations: i64 =
        c.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })?;
    ensure!(violations == 0, "{violations} foreign-key violations");
    Ok(counts)
}

/// Writes the garbage blobs' content files into the embedded blob store under `blobs_dir`
/// (`<data_dir>/blobs`), so GC's removals move real files.
pub fn garbage_files(blobs_dir: &Path, shape: &Shape) -> Result<()> {
    let data = blobs_dir.join("data");
    std::fs::create_dir_all(&data)?;
    for cid in shape.garbage_cids() {
        std::fs::write(data.join(&cid), cid.as_bytes())?;
    }
    Ok(())
}
