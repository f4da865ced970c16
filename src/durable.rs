//! File-system steps that survive a power cut.
//!
//! `fsync` on a file makes its bytes durable, not its name: creating, renaming or removing
//! an entry is durable only once the directory holding it is synced. The embedded stores
//! answer 2xx only after what they acknowledge is durable, so every new directory, every
//! rename into `blobs/data/` and every database file they create goes through here.
//! Blocking calls: use from a blocking thread.

use std::io;
use std::path::{Path, PathBuf};

/// Syncs a directory's entries.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The directory holding `path` (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Syncs the directory that holds `path`, so a file just created there keeps its name.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    sync_dir(parent_of(path))
}

/// Syncs a database file and its name: SQLite syncs the directory when it creates a
/// journal or WAL, not when it creates the database itself.
pub fn sync_database_file(path: &Path) -> io::Result<()> {
    std::fs::File::open(path)?.sync_all()?;
    sync_parent(path)
}

/// Directories the registry creates are its own (0700): the data directory holds password
/// hashes and private layers.
fn private_dir_builder() -> std::fs::DirBuilder {
    let mut builder = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
}

/// Options that create a file readable by the registry's user alone (0600).
pub fn private_file() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Creates a database file private (0600) before SQLite opens it, or makes an existing one
/// and its journals so: SQLite gives the journals it creates the database's mode.
pub fn prepare_database_file(path: &Path) -> io::Result<()> {
    private_file()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::set_permissions(
            Path::new(&name),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        ) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// `create_dir_all`, with every directory it creates synced into its parent.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut at = dir;
    while !at.try_exists()? {
        missing.push(at.to_path_buf());
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    for created in missing.iter().rev() {
        match private_dir_builder().create(created) {
            Ok(()) => {}
            // Another process (a `gc` beside `serve`) created it first; it syncs it too.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        sync_parent(created)?;
    }
    Ok(())
}

/// Renames `from` to `to` and syncs the directories involved: after it returns, a power cut
/// leaves the file under `to` and not under `from`.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    // Renaming onto another name of the same file does nothing and leaves both names, which
    // is what a power cut between the two directory syncs of an earlier rename leaves.
    if same_file(from, to)? {
        std::fs::remove_file(from)?;
    }
    let (source, target) = (parent_of(from), parent_of(to));
    sync_dir(target)?;
    if source != target {
        sync_dir(source)?;
    }
    Ok(())
}

/// Whether both paths name one file (false when `a` is gone).
fn same_file(a: &Path, b: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let a = match std::fs::symlink_metadata(a) {
        Ok(a) => a,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let b = std::fs::symlink_metadata(b)?;
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_nested_directories_and_accepts_existing_ones() {
        let root = tempfile::tempdir().unwrap();
        let nested = root.path().join("a/b/c");
        create_dir_all(&nested).unwrap();
        assert!(nested.is_dir());
        create_dir_all(&nested).unwrap();
    }

    #[test]
    fn rename_moves_across_directories() {
        let root = tempfile::tempdir().unwrap();
        create_dir_all(&root.path().join("tmp")).unwrap();
        create_dir_all(&root.path().join("data")).unwrap();
        let from = root.path().join("tmp/x");
        std::fs::write(&from, b"bytes").unwrap();
        let to = root.path().join("data/x");
        rename(&from, &to).unwrap();
        assert!(!from.exists());
        assert_eq!(std::fs::read(&to).unwrap(), b"bytes");
    }

    #[test]
    fn rename_onto_another_name_of_the_same_file_leaves_one_name() {
        let root = tempfile::tempdir().unwrap();
        let (from, to) = (root.path().join("a"), root.path().join("b"));
        std::fs::write(&from, b"bytes").unwrap();
        std::fs::hard_link(&from, &to).unwrap();
        rename(&from, &to).unwrap();
        assert!(!from.exists());
        assert_eq!(std::fs::read(&to).unwrap(), b"bytes");
    }

    #[test]
    fn what_it_creates_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let nested = root.path().join("a/b");
        create_dir_all(&nested).unwrap();
        for dir in [root.path().join("a"), nested.clone()] {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        let file = nested.join("f");
        private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&file)
            .unwrap();
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_relative_name_has_the_current_directory_as_parent() {
        assert_eq!(parent_of(Path::new("file")), Path::new("."));
        assert_eq!(parent_of(Path::new("dir/file")), Path::new("dir"));
    }
}
