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
        match std::fs::create_dir(created) {
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
    let (source, target) = (parent_of(from), parent_of(to));
    sync_dir(target)?;
    if source != target {
        sync_dir(source)?;
    }
    Ok(())
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
    fn a_relative_name_has_the_current_directory_as_parent() {
        assert_eq!(parent_of(Path::new("file")), Path::new("."));
        assert_eq!(parent_of(Path::new("dir/file")), Path::new("dir"));
    }
}
