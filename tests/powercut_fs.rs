//! The power-cut file system (tests/common/powercut.rs) keeps what was synced and nothing
//! else: files and directory entries each need their own fsync, renames need the target
//! directory's, and SQLite keeps its committed rows only when configured to sync them.
//! Locks (flock, fcntl) work on it within and across processes.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use common::powercut::PowerCutFs;
use nix::fcntl::{fcntl, FcntlArg};

fn sync_dir(dir: &Path) {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .unwrap_or_else(|e| panic!("fsync {}: {e}", dir.display()));
}

fn write_synced(path: &Path, bytes: &[u8]) {
    let mut file = File::create(path).unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn only_synced_files_and_entries_survive() {
    let mut fs = PowerCutFs::mount();
    let root = fs.path().to_owned();
    fs::write(root.join("named"), b"entry synced, data not").unwrap();
    write_synced(&root.join("synced"), b"entry and data synced");
    sync_dir(&root);
    fs::write(root.join("unsynced"), b"neither synced").unwrap();
    assert_eq!(fs::read(root.join("unsynced")).unwrap(), b"neither synced");
    let stats = fs.stats();
    assert_eq!((stats.file_syncs, stats.dir_syncs), (1, 1));
    assert_eq!(stats.synced_files[Path::new("synced")], 1);
    assert_eq!(stats.synced_dirs[Path::new("")], 1);

    fs.cut();

    assert_eq!(
        fs::read(root.join("synced")).unwrap(),
        b"entry and data synced"
    );
    assert_eq!(fs::read(root.join("named")).unwrap(), b"");
    assert!(!root.join("unsynced").exists());
    assert_eq!(fs.stats().cuts, 1);
}

#[test]
fn a_synced_file_without_a_synced_entry_is_lost() {
    let mut fs = PowerCutFs::mount();
    let root = fs.path().to_owned();
    write_synced(&root.join("orphan"), b"data synced, entry not");
    fs::create_dir(root.join("dir")).unwrap();
    sync_dir(&root.join("dir"));

    fs.cut();

    assert!(!root.join("orphan").exists());
    assert!(!root.join("dir").exists());
    assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
}

/// tmp/x, synced, renamed to data/x; then data/ synced or not.
fn rename_then_cut(sync_target: bool) -> (Option<Vec<u8>>, bool) {
    let mut fs = PowerCutFs::mount();
    let root = fs.path().to_owned();
    fs::create_dir(root.join("tmp")).unwrap();
    fs::create_dir(root.join("data")).unwrap();
    sync_dir(&root);
    write_synced(&root.join("tmp/x"), b"renamed into place");
    fs::rename(root.join("tmp/x"), root.join("data/x")).unwrap();
    if sync_target {
        sync_dir(&root.join("data"));
    }
    fs.cut();
    let moved = fs::read(root.join("data/x")).ok();
    let left = root.join("tmp/x").exists();
    (moved, left)
}

#[test]
fn a_rename_survives_with_its_target_directory_synced() {
    let (moved, left) = rename_then_cut(true);
    assert_eq!(moved.as_deref(), Some(&b"renamed into place"[..]));
    assert!(!left);
    let (moved, left) = rename_then_cut(false);
    assert_eq!(moved, None);
    assert!(!left, "tmp/ was never synced with x in it");
}

#[test]
fn a_rename_replacing_a_file_keeps_the_old_one_until_synced() {
    let mut fs = PowerCutFs::mount();
    let root = fs.path().to_owned();
    write_synced(&root.join("current"), b"old");
    sync_dir(&root);
    write_synced(&root.join("current.tmp"), b"new");
    fs::rename(root.join("current.tmp"), root.join("current")).unwrap();
    assert_eq!(fs::read(root.join("current")).unwrap(), b"new");
    fs.cut();
    assert_eq!(fs::read(root.join("current")).unwrap(), b"old");
    assert!(!root.join("current.tmp").exists());

    write_synced(&root.join("current.tmp"), b"new");
    fs::rename(root.join("current.tmp"), root.join("current")).unwrap();
    sync_dir(&root);
    fs.cut();
    assert_eq!(fs::read(root.join("current")).unwrap(), b"new");
    assert_eq!(fs::read_dir(&root).unwrap().count(), 1);
}

#[test]
fn a_directory_not_synced_into_its_parent_vanishes_with_its_contents() {
    let mut fs = PowerCutFs::mount();
    let root = fs.path().to_owned();
    fs::create_dir(root.join("outer")).unwrap();
    sync_dir(&root);
    fs::create_dir_all(root.join("outer/inner/deep")).unwrap();
    write_synced(&root.join("outer/inner/deep/f"), b"synced deep down");
    sync_dir(&root.join("outer/inner/deep"));
    sync_dir(&root.join("outer/inner"));

    fs.cut();
    assert!(root.join("outer").is_dir());
    assert!(!root.join("outer/inner").exists());

    // The same, with the last link synced too.
    fs::create_dir_all(root.join("outer/inner/deep")).unwrap();
    write_synced(&root.join("outer/inner/deep/f"), b"synced deep down");
    for dir in ["outer/inner/deep", "outer/inner", "outer"] {
        sync_dir(&root.join(dir));
    }
    fs.cut();
    assert_eq!(
        fs::read(root.join("outer/inner/deep/f")).unwrap(),
        b"synced deep down"
    );
    let names: Vec<_> = fs::read_dir(root.join("outer/inner"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["deep"]);
}

#[test]
fn truncation_overwrites_and_attributes_survive_once_synced() {
    let mut fs = PowerCutFs::mount();
    let root = fs.path().to_owned();
    let path = root.join("f");
    write_synced(&path, b"hello world");
    sync_dir(&root);

    let modified = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.seek(SeekFrom::Start(6)).unwrap();
    file.write_all(b"WORLD, again").unwrap();
    file.set_len(14).unwrap();
    // A sparse write far past the end: the gap reads as zeros.
    file.seek(SeekFrom::Start(1 << 20)).unwrap();
    file.write_all(b"end").unwrap();
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .unwrap();
    file.set_modified(modified).unwrap();
    file.sync_data().unwrap();
    drop(file);
    // Changes after the sync are lost.
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap()
        .write_all(b"lost")
        .unwrap();

    fs.cut();

    let bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len(), (1 << 20) + 3);
    assert_eq!(&bytes[..14], b"hello WORLD, a");
    assert!(bytes[14..1 << 20].iter().all(|&b| b == 0));
    assert_eq!(&bytes[1 << 20..], b"end");
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.modified().unwrap(), modified);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // ftruncate to zero, synced, survives as an empty file.
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(0).unwrap();
    file.sync_all().unwrap();
    drop(file);
    fs.cut();
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn a_file_removed_while_open_stays_readable_through_its_handle() {
    let fs = PowerCutFs::mount();
    let path = fs.path().join("f");
    fs::write(&path, b"still here").unwrap();
    let mut file = File::open(&path).unwrap();
    fs::remove_file(&path).unwrap();
    assert!(!path.exists());
    let mut bytes = String::new();
    std::io::Read::read_to_string(&mut file, &mut bytes).unwrap();
    assert_eq!(bytes, "still here");
    assert_eq!(file.metadata().unwrap().len(), 10);
}

#[test]
fn flock_and_fcntl_locks_conflict_between_handles() {
    let fs = PowerCutFs::mount();
    let path = fs.path().join("lock");
    let open = || {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap()
    };

    let (first, second) = (open(), open());
    first.try_lock().unwrap();
    assert!(matches!(
        second.try_lock(),
        Err(std::fs::TryLockError::WouldBlock)
    ));
    first.unlock().unwrap();
    second.try_lock().unwrap();

    // Open file description locks: fcntl locks that conflict within one process too.
    let (first, second) = (open(), open());
    let write_lock = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 1,
        l_pid: 0,
    };
    fcntl(first.as_fd(), FcntlArg::F_OFD_SETLK(&write_lock)).unwrap();
    assert_eq!(
        fcntl(second.as_fd(), FcntlArg::F_OFD_SETLK(&write_lock)),
        Err(nix::errno::Errno::EAGAIN)
    );
    drop(first);
    fcntl(second.as_fd(), FcntlArg::F_OFD_SETLK(&write_lock)).unwrap();
}

/// A process running this test binary's [`helper`]: killed and reaped when dropped.
struct Helper {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Helper {
    fn start(role: &str, db: &Path, env: &[(&str, &str)]) -> Helper {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "helper", "--ignored", "--nocapture", "--quiet"])
            .env("POWERCUT_HELPER", role)
            .env("POWERCUT_DB", db)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(said) = line.strip_prefix("helper: ") {
                    if send.send(said.to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        Helper { child, lines }
    }

    /// What the helper says next.
    fn says(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("the helper said nothing ({e}); its stderr is above"))
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rows a database on the mount holds (none when its file or table is gone).
fn rows(db: &Path) -> i64 {
    if !db.exists() {
        return 0;
    }
    let connection = rusqlite::Connection::open(db).unwrap();
    match connection.query_row("SELECT count(*) FROM t", [], |row| row.get(0)) {
        Ok(rows) => rows,
        Err(e) if e.to_string().contains("no such table") => 0,
        Err(e) => panic!("{}: {e}", db.display()),
    }
}

/// A process commits rows to a WAL database on the mount and is killed, then the power
/// goes.
fn committed_rows_after_cut(synchronous: &str, sync_dir_after_create: bool) -> (i64, i64) {
    let mut fs = PowerCutFs::mount();
    let db = fs.path().join("meta.sqlite");
    let writer = Helper::start(
        "sqlite-writer",
        &db,
        &[
            ("POWERCUT_SYNCHRONOUS", synchronous),
            (
                "POWERCUT_SYNC_DIR",
                if sync_dir_after_create { "1" } else { "0" },
            ),
        ],
    );
    let committed: i64 = writer
        .says()
        .strip_prefix("committed ")
        .expect("the writer reports its commits")
        .parse()
        .unwrap();
    assert_eq!(
        rows(&db),
        committed,
        "readers see every commit before the cut"
    );
    writer.kill();
    fs.cut();
    (committed, rows(&db))
}

#[test]
fn sqlite_wal_with_synchronous_normal_loses_committed_rows() {
    let (committed, surviving) = committed_rows_after_cut("NORMAL", false);
    assert!(committed > 0);
    assert_eq!(surviving, 0);
}

#[test]
fn sqlite_wal_with_synchronous_full_and_a_synced_directory_keeps_every_row() {
    let (committed, surviving) = committed_rows_after_cut("FULL", true);
    assert!(committed > 0);
    assert_eq!(surviving, committed);
}

#[test]
fn sqlite_locks_hold_across_processes() {
    let fs = PowerCutFs::mount();
    let db = fs.path().join("meta.sqlite");
    let connection = rusqlite::Connection::open(&db).unwrap();
    connection
        .execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1);",
        )
        .unwrap();

    connection.execute_batch("BEGIN IMMEDIATE").unwrap();
    assert_eq!(Helper::start("sqlite-try-write", &db, &[]).says(), "busy");
    connection
        .execute_batch("INSERT INTO t VALUES (2); COMMIT")
        .unwrap();
    // The other process sees the commit through the shared memory of the -shm file.
    assert_eq!(
        Helper::start("sqlite-try-write", &db, &[]).says(),
        "wrote, now 3 rows"
    );
    assert_eq!(rows(&db), 3);
}

/// Not a test: the child process of the tests above, run by them with `POWERCUT_HELPER`
/// saying what to do; it tells its results as lines starting with "helper: ".
#[test]
#[ignore = "a child process of the other tests"]
fn helper() {
    let Ok(role) = std::env::var("POWERCUT_HELPER") else {
        return;
    };
    let db = std::env::var("POWERCUT_DB").unwrap();
    let connection = rusqlite::Connection::open(&db).unwrap();
    match role.as_str() {
        "sqlite-writer" => {
            let mode: String = connection
                .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            let synchronous = std::env::var("POWERCUT_SYNCHRONOUS").unwrap();
            connection
                .execute_batch(&format!(
                    "PRAGMA synchronous={synchronous}; CREATE TABLE t (n INTEGER);"
                ))
                .unwrap();
            if std::env::var("POWERCUT_SYNC_DIR").as_deref() == Ok("1") {
                assert!(Path::new(&format!("{db}-wal")).exists());
                sync_dir(Path::new(&db).parent().unwrap());
            }
            let committed = 20;
            for n in 0..committed {
                connection
                    .execute("INSERT INTO t VALUES (?1)", [n])
                    .unwrap();
            }
            println!("helper: committed {committed}");
            // Killed here, as a power cut would find it: connection open, nothing closed.
            loop {
                std::thread::sleep(Duration::from_secs(60));
            }
        }
        "sqlite-try-write" => {
            connection.busy_timeout(Duration::ZERO).unwrap();
            match connection.execute_batch("BEGIN IMMEDIATE") {
                Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                    println!("helper: busy");
                }
                Err(e) => panic!("BEGIN IMMEDIATE: {e}"),
                Ok(()) => {
                    connection
                        .execute_batch("INSERT INTO t VALUES (3); COMMIT")
                        .unwrap();
                    let rows: i64 = connection
                        .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
                        .unwrap();
                    println!("helper: wrote, now {rows} rows");
                }
            }
        }
        other => panic!("unknown helper role {other}"),
    }
}

#[test]
fn everyday_file_operations_work() {
    let fs = PowerCutFs::mount();
    let root = fs.path().to_owned();
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    for name in ["z", "y", "x"] {
        fs::write(root.join("a/b").join(name), name).unwrap();
    }
    let mut names: Vec<_> = fs::read_dir(root.join("a/b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["c", "x", "y", "z"]);

    // Large enough for many FUSE writes; copied the way the blob store joins files
    // (copy_file_range, which this fs leaves to the kernel's fallback).
    let big: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    fs::write(root.join("big"), &big).unwrap();
    fs::copy(root.join("big"), root.join("a/big")).unwrap();
    let mut joined = OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("joined"))
        .unwrap();
    joined.write_all(b"head").unwrap();
    std::io::copy(&mut File::open(root.join("big")).unwrap(), &mut joined).unwrap();
    drop(joined);
    assert_eq!(fs::read(root.join("a/big")).unwrap(), big);
    let joined = fs::read(root.join("joined")).unwrap();
    assert_eq!((&joined[..4], &joined[4..]), (&b"head"[..], &big[..]));

    let err = |result: std::io::Result<()>| result.unwrap_err().raw_os_error();
    assert_eq!(
        err(fs::rename(root.join("a"), root.join("a/b/c/a"))),
        Some(nix::libc::EINVAL)
    );
    fs::create_dir(root.join("empty")).unwrap();
    assert_eq!(
        err(fs::rename(root.join("empty"), root.join("a"))),
        Some(nix::libc::ENOTEMPTY)
    );
    fs::rename(root.join("a/b/c"), root.join("empty")).unwrap();
    assert_eq!(
        err(fs::remove_dir(root.join("a"))),
        Some(nix::libc::ENOTEMPTY)
    );
    assert_eq!(
        err(fs::remove_file(root.join("a"))),
        Some(nix::libc::EISDIR)
    );
    fs::remove_dir_all(root.join("a")).unwrap();
    let mut names: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["big", "empty", "joined"]);
}
