//! A file system that loses power: an in-memory FUSE file system, served by a thread of the
//! test process, on which tests run code (in-process or as child processes) and then cut
//! the power to see what a machine would find after a reboot.
//!
//! It models a disk with a volatile cache, as strictly as POSIX promises — stricter than
//! ext4, whose journal happens to make durable, and in order, much that nobody asked for.
//! Every operation changes the *volatile* image, which is what processes see; what survives
//! a cut is the *durable* image, which changes only when something is synced:
//! - `fsync`/`fdatasync` of a file makes its contents, size and attributes durable, but not
//!   the directory entry that names it;
//! - `fsync` of a directory makes its entries durable as they stand (creations, removals,
//!   renames in and out); an inode named so whose own data was never synced survives as an
//!   empty file, or an empty directory.
//!
//! [`PowerCutFs::cut`] unmounts (the kernel's page and dentry caches go with the mount),
//! makes the durable image the volatile one and mounts it again at the same path.
//!
//! Locks are the kernel's: neither `FUSE_POSIX_LOCKS` nor `FUSE_FLOCK_LOCKS` is negotiated
//! (fuser asks for neither), so `fcntl` locks (SQLite's) and `flock` (src/file_lock.rs) work
//! as on a local disk, and across processes. Files are served through the page cache,
//! written through at every `write` (no `direct_io`, no writeback cache), so SQLite's shared
//! memory-mapped `-shm` file works; entries and attributes are never cached (TTL 0).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    AccessFlags, BackgroundSession, BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const ROOT: u64 = INodeNo::ROOT.0;
/// Nothing is cached by the kernel: every lookup and stat asks the current image.
const TTL: Duration = Duration::ZERO;
/// Inode numbers are never reused (not even across cuts), so one generation serves.
const GENERATION: Generation = Generation(0);
const BLOCK: u32 = 4096;
/// The whole file system lives in memory: a runaway sparse write fails instead of
/// exhausting it.
const MAX_FILE_SIZE: u64 = 4 << 30;
const CAPACITY: u64 = 64 << 30;
const MAX_NAME: usize = 255;
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;

/// What the file system saw since [`PowerCutFs::mount`], across cuts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// `fsync`/`fdatasync` calls on regular files.
    pub file_syncs: u64,
    /// `fsync` calls on directories.
    pub dir_syncs: u64,
    /// Calls of [`PowerCutFs::cut`].
    pub cuts: u64,
    /// Synced files by path relative to the mount point (as named when synced), with counts.
    /// A file synced after its last name was removed is counted in `file_syncs` only.
    pub synced_files: BTreeMap<PathBuf, u64>,
    /// Synced directories the same way; the mount point itself is the empty path.
    pub synced_dirs: BTreeMap<PathBuf, u64>,
}

/// A mounted power-cut file system; unmounted, and its mount point removed, when dropped.
pub struct PowerCutFs {
    state: Arc<Mutex<State>>,
    session: Option<BackgroundSession>,
    mount_point: tempfile::TempDir,
}

impl PowerCutFs {
    /// Mounts a new, empty file system on a fresh temporary directory.
    pub fn mount() -> PowerCutFs {
        let mount_point = tempfile::Builder::new()
            .prefix("powercut-")
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a mount point for the power-cut fs: {e}"));
        let owner = std::fs::metadata(mount_point.path())
            .unwrap_or_else(|e| panic!("{}: {e}", mount_point.path().display()));
        let state = Arc::new(Mutex::new(State::new(owner.uid(), owner.gid())));
        let mut fs = PowerCutFs {
            state,
            session: None,
            mount_point,
        };
        fs.session = Some(fs.spawn());
        fs
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.mount_point.path()
    }

    /// A power cut: unmounts (the kernel's caches go with the mount), drops everything not
    /// made durable, and mounts the durable state again at the same path.
    /// Callers kill every process using the mount, and close every file on it, first.
    pub fn cut(&mut self) {
        if let Err(e) = self.unmount(Duration::from_secs(10)) {
            panic!("power cut: {e}");
        }
        lock(&self.state).power_cut();
        self.session = Some(self.spawn());
    }

    /// Counters for assertions.
    pub fn stats(&self) -> Stats {
        lock(&self.state).stats.clone()
    }

    fn spawn(&self) -> BackgroundSession {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("powercut".to_owned()),
            // Permission checks as on a disk, from the modes and owners this fs reports.
            MountOption::DefaultPermissions,
        ];
        let fs = PowerCutFuse {
            state: Arc::clone(&self.state),
        };
        // Returns once the kernel's INIT is answered: the mount is usable right away.
        fuser::spawn_mount(fs, self.path(), &config).unwrap_or_else(|e| {
            panic!(
                "mounting FUSE at {} failed: {e} (is fuse3 installed, /dev/fuse present, \
                 running as root?)",
                self.path().display()
            )
        })
    }

    /// Unmounts and waits for the session thread, retrying while the mount is busy: a
    /// process killed just before may still be closing its files.
    fn unmount(&mut self, patience: Duration) -> Result<(), String> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + patience;
        loop {
            match unmount(self.path()) {
                Ok(()) => break,
                Err(Unmount::Busy) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(failure) => {
                    self.session = Some(session);
                    return Err(match failure {
                        Unmount::Busy => format!(
                            "{} is still in use after {patience:?}: kill every process using \
                             it, and close every file on it, first",
                            self.path().display()
                        ),
                        Unmount::Failed(e) => format!("unmounting {}: {e}", self.path().display()),
                    });
                }
            }
        }
        // The unmount ended the connection: the thread's next read of /dev/fuse fails and it
        // returns. fuser's own unmount on drop then sees the device closed and does nothing.
        // Unless a copy of the mount lives on elsewhere (propagated to another mount
        // namespace): then the session would serve on, sharing the state, and a join hang.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !session.guard.is_finished() {
            if Instant::now() > deadline {
                return Err(format!(
                    "the FUSE session of {} goes on after the unmount: is the mount \
                     propagated to another mount namespace?",
                    self.path().display()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        match session.join() {
            Ok(()) => Ok(()),
            // The kernel ends the connection with ENODEV (fuser's clean end) or, when the
            // unmount found requests still queued (a killed process's last closes), with
            // ECONNABORTED: either way the session ended because of our unmount.
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ECONNABORTED as i32) => Ok(()),
            Err(e) => Err(format!(
                "the FUSE session of {} failed: {e}",
                self.path().display()
            )),
        }
    }
}

impl Drop for PowerCutFs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount(Duration::from_secs(2)) {
            // A failing test may leave files open: detach the mount so the directory can go,
            // and leave the session serving them until they close.
            eprintln!("power-cut fs: {e}; detaching it lazily");
            let _ = nix::mount::umount2(self.path(), nix::mount::MntFlags::MNT_DETACH);
            drop(self.session.take());
        }
    }
}

enum Unmount {
    Busy,
    Failed(String),
}

fn unmount(path: &Path) -> Result<(), Unmount> {
    match nix::mount::umount(path) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => Err(Unmount::Busy),
        // Not root: fuser mounted through the setuid helper, which unmounts too.
        Err(nix::errno::Errno::EPERM) => {
            let output = Command::new("fusermount3")
                .arg("-u")
                .arg("--")
                .arg(path)
                .output()
                .map_err(|e| Unmount::Failed(format!("fusermount3: {e}")))?;
            let stderr = String::from_utf8_lossy(&output.stderr);
            if output.status.success() {
                Ok(())
            } else if stderr.contains("busy") {
                Err(Unmount::Busy)
            } else {
                Err(Unmount::Failed(format!(
                    "fusermount3 -u: {}",
                    stderr.trim()
                )))
            }
        }
        Err(e) => Err(Unmount::Failed(e.to_string())),
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic elsewhere must not take the file system down with it.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone)]
enum Content {
    File(Vec<u8>),
    Dir(BTreeMap<OsString, u64>),
}

#[derive(Clone)]
struct Inode {
    content: Content,
    perm: u16,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    crtime: SystemTime,
    /// Directory entries naming it. A cut can leave a file with two: renamed into a
    /// directory synced since, out of one that was not; a hard link, as fsck would find it.
    links: u32,
    /// One entry naming it, as (parent, name): a directory's `..`, and paths in [`Stats`].
    link: Option<(u64, OsString)>,
}

impl Inode {
    fn is_dir(&self) -> bool {
        matches!(self.content, Content::Dir(_))
    }

    /// The same inode without contents: what survives of one whose name was synced but
    /// whose data never was.
    fn emptied(&self) -> Inode {
        Inode {
            content: match self.content {
                Content::File(_) => Content::File(Vec::new()),
                Content::Dir(_) => Content::Dir(BTreeMap::new()),
            },
            link: self.link.clone(),
            ..*self
        }
    }
}

type Image = HashMap<u64, Inode>;

struct State {
    volatile: Image,
    durable: Image,
    next_ino: u64,
    /// Open handles (files and directories) per inode: an inode without a name lives until
    /// its last handle is released.
    open: HashMap<u64, u32>,
    /// Directory listings as they stood at `opendir`, by handle, so entries removed while
    /// a directory is read do not shift the offsets of the rest.
    listings: HashMap<u64, Vec<(u64, FileType, OsString)>>,
    next_fh: u64,
    stats: Stats,
}

impl State {
    fn new(uid: u32, gid: u32) -> State {
        let now = SystemTime::now();
        let root = Inode {
            content: Content::Dir(BTreeMap::new()),
            perm: 0o755,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            links: 0,
            link: None,
        };
        State {
            volatile: HashMap::from([(ROOT, root.clone())]),
            // The root exists durably from the start, as a freshly made file system does.
            durable: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            open: HashMap::new(),
            listings: HashMap::new(),
            next_fh: 1,
            stats: Stats::default(),
        }
    }

    fn node(&self, ino: u64) -> Result<&Inode, Errno> {
        self.volatile.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Inode, Errno> {
        self.volatile.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn entries(&self, ino: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match &self.node(ino)?.content {
            Content::Dir(entries) => Ok(entries),
            Content::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match &mut self.node_mut(ino)?.content {
            Content::Dir(entries) => Ok(entries),
            Content::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(parent)?
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    fn is_dir(&self, ino: u64) -> bool {
        self.volatile.get(&ino).is_some_and(Inode::is_dir)
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        let (kind, size, nlink) = match &node.content {
            Content::File(data) => (FileType::RegularFile, data.len() as u64, node.links),
            Content::Dir(entries) => {
                let nlink = if node.links == 0 && ino != ROOT {
                    0
                } else {
                    2 + entries.values().filter(|&&c| self.is_dir(c)).count() as u32
                };
                (FileType::Directory, u64::from(BLOCK), nlink)
            }
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.atime,
            mtime: node.mtime,
            ctime: node.ctime,
            crtime: node.crtime,
            kind,
            perm: node.perm,
            nlink,
            uid: node.uid,
            gid: node.gid,
            rdev: 0,
            blksize: BLOCK,
            flags: 0,
        })
    }

    fn touch(&mut self, ino: u64) {
        if let Some(node) = self.volatile.get_mut(&ino) {
            let now = SystemTime::now();
            node.mtime = now;
            node.ctime = now;
        }
    }

    fn create(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        content: Content,
    ) -> Result<u64, Errno> {
        if name.len() > MAX_NAME {
            return Err(Errno::ENAMETOOLONG);
        }
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let now = SystemTime::now();
        let node = Inode {
            content,
            // The kernel applied the umask already (fuser does not ask for FUSE_DONT_MASK).
            perm: (mode & 0o7777) as u16,
            uid: req.uid(),
            gid: req.gid(),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            links: 1,
            link: Some((parent, name.to_owned())),
        };
        self.volatile.insert(ino, node);
        self.entries_mut(parent)?.insert(name.to_owned(), ino);
        self.touch(parent);
        Ok(ino)
    }

    /// Removes an entry; its inode goes with its last name and handle.
    fn remove_entry(&mut self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        let ino = self
            .entries_mut(parent)?
            .remove(name)
            .ok_or(Errno::ENOENT)?;
        self.touch(parent);
        let node = self.node_mut(ino)?;
        node.links = node.links.saturating_sub(1);
        node.ctime = SystemTime::now();
        if node
            .link
            .as_ref()
            .is_some_and(|(p, n)| *p == parent && n == name)
        {
            node.link = None;
        }
        self.free_if_unused(ino);
        Ok(())
    }

    fn free_if_unused(&mut self, ino: u64) {
        let unnamed = self.volatile.get(&ino).is_some_and(|n| n.links == 0);
        if ino != ROOT && unnamed && !self.open.contains_key(&ino) {
            self.volatile.remove(&ino);
        }
    }

    fn opened(&mut self, ino: u64) {
        *self.open.entry(ino).or_default() += 1;
    }

    fn released(&mut self, ino: u64) {
        if let Some(count) = self.open.get_mut(&ino) {
            *count -= 1;
            if *count == 0 {
                self.open.remove(&ino);
                self.free_if_unused(ino);
            }
        }
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        if new_name.len() > MAX_NAME {
            return Err(Errno::ENAMETOOLONG);
        }
        let ino = self.child(parent, name)?;
        let moving_dir = self.is_dir(ino);
        let target = self.entries(new_parent)?.get(new_name).copied();
        if let Some(target) = target {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            if target == ino {
                return Ok(());
            }
            match (moving_dir, &self.node(target)?.content) {
                (false, Content::Dir(_)) => return Err(Errno::EISDIR),
                (true, Content::File(_)) => return Err(Errno::ENOTDIR),
                (true, Content::Dir(entries)) if !entries.is_empty() => {
                    return Err(Errno::ENOTEMPTY)
                }
                _ => {}
            }
        }
        if moving_dir {
            // Not into itself or below it.
            let mut at = new_parent;
            while at != ROOT {
                if at == ino {
                    return Err(Errno::EINVAL);
                }
                match &self.node(at)?.link {
                    Some((up, _)) => at = *up,
                    None => break,
                }
            }
        }
        if target.is_some() {
            self.remove_entry(new_parent, new_name)?;
        }
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(new_parent)?
            .insert(new_name.to_owned(), ino);
        self.touch(parent);
        self.touch(new_parent);
        let node = self.node_mut(ino)?;
        node.ctime = SystemTime::now();
        if node
            .link
            .as_ref()
            .is_none_or(|(p, n)| *p == parent && n == name)
        {
            node.link = Some((new_parent, new_name.to_owned()));
        }
        Ok(())
    }

    /// Where an inode is named now, relative to the root.
    fn path_of(&self, ino: u64) -> Option<PathBuf> {
        let mut names = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let (up, name) = self.volatile.get(&at)?.link.as_ref()?;
            names.push(name);
            at = *up;
            if names.len() > self.volatile.len() {
                return None;
            }
        }
        Some(names.into_iter().rev().collect())
    }

    fn sync_file(&mut self, ino: u64) -> Result<(), Errno> {
        let node = self.volatile.get(&ino).ok_or(Errno::ENOENT)?;
        if node.is_dir() {
            return self.sync_dir(ino);
        }
        self.durable.insert(ino, node.clone());
        self.stats.file_syncs += 1;
        if let Some(path) = self.path_of(ino) {
            *self.stats.synced_files.entry(path).or_default() += 1;
        }
        Ok(())
    }

    fn sync_dir(&mut self, ino: u64) -> Result<(), Errno> {
        let node = self.volatile.get(&ino).ok_or(Errno::ENOENT)?;
        let Content::Dir(entries) = &node.content else {
            return self.sync_file(ino);
        };
        for child in entries.values() {
            if let (false, Some(named)) =
                (self.durable.contains_key(child), self.volatile.get(child))
            {
                self.durable.insert(*child, named.emptied());
            }
        }
        self.durable.insert(ino, node.clone());
        self.stats.dir_syncs += 1;
        if let Some(path) = self.path_of(ino) {
            *self.stats.synced_dirs.entry(path).or_default() += 1;
        }
        self.collect_durable();
        Ok(())
    }

    /// Drops durable inodes that no durable directory names and that are gone from the
    /// volatile image too (a durable copy of a live inode waits for a sync to name it).
    fn collect_durable(&mut self) {
        let mut keep: HashSet<u64> = self.volatile.keys().copied().collect();
        let mut queue = VecDeque::from([ROOT]);
        let mut seen = HashSet::from([ROOT]);
        while let Some(ino) = queue.pop_front() {
            keep.insert(ino);
            if let Some(Inode {
                content: Content::Dir(entries),
                ..
            }) = self.durable.get(&ino)
            {
                for child in entries.values() {
                    if seen.insert(*child) {
                        queue.push_back(*child);
                    }
                }
            }
        }
        self.durable.retain(|ino, _| keep.contains(ino));
    }

    /// The durable image, as found after a reboot, becomes the one processes see.
    fn power_cut(&mut self) {
        let mut durable = std::mem::take(&mut self.durable);
        let mut image = Image::new();
        let mut root = durable.remove(&ROOT).expect("the root is always durable");
        root.links = 0;
        root.link = None;
        image.insert(ROOT, root);
        let mut queue = VecDeque::from([ROOT]);
        while let Some(dir) = queue.pop_front() {
            let Content::Dir(entries) = &image[&dir].content else {
                continue;
            };
            let mut kept = BTreeMap::new();
            for (name, child) in entries.clone() {
                if let Some(node) = image.get_mut(&child) {
                    // Named twice: a file keeps both names; a second name of a directory
                    // is dropped, as fsck would, so the tree stays a tree.
                    if !node.is_dir() {
                        node.links += 1;
                        kept.insert(name, child);
                    }
                    continue;
                }
                let Some(mut node) = durable.remove(&child) else {
                    continue;
                };
                node.links = 1;
                node.link = Some((dir, name.clone()));
                if node.is_dir() {
                    queue.push_back(child);
                }
                image.insert(child, node);
                kept.insert(name, child);
            }
            if let Some(Inode {
                content: Content::Dir(entries),
                ..
            }) = image.get_mut(&dir)
            {
                *entries = kept;
            }
        }
        self.durable = image.clone();
        self.volatile = image;
        self.open.clear();
        self.listings.clear();
        self.stats.cuts += 1;
    }

    fn used_bytes(&self) -> u64 {
        self.volatile
            .values()
            .map(|node| match &node.content {
                Content::File(data) => (data.len() as u64).next_multiple_of(u64::from(BLOCK)),
                Content::Dir(_) => u64::from(BLOCK),
            })
            .sum()
    }
}

/// The FUSE side: each request answered from the shared state.
struct PowerCutFuse {
    state: Arc<Mutex<State>>,
}

impl PowerCutFuse {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn reply_entry(state: &State, ino: Result<u64, Errno>, reply: ReplyEntry) {
    match ino.and_then(|ino| state.attr(ino)) {
        Ok(attr) => reply.entry(&TTL, &attr, GENERATION),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(result: Result<(), Errno>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn resolve(time: TimeOrNow, now: SystemTime) -> SystemTime {
    match time {
        TimeOrNow::SpecificTime(time) => time,
        TimeOrNow::Now => now,
    }
}

impl Filesystem for PowerCutFuse {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let state = self.state();
        reply_entry(&state, state.child(parent.0, name), reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state();
        let result = (|| {
            let now = SystemTime::now();
            let node = state.node_mut(ino.0)?;
            if let Some(size) = size {
                let Content::File(data) = &mut node.content else {
                    return Err(Errno::EISDIR);
                };
                if size > MAX_FILE_SIZE {
                    return Err(Errno::EFBIG);
                }
                data.resize(size as usize, 0);
                node.mtime = now;
            }
            if let Some(mode) = mode {
                node.perm = (mode & 0o7777) as u16;
            }
            if let Some(uid) = uid {
                node.uid = uid;
            }
            if let Some(gid) = gid {
                node.gid = gid;
            }
            if let Some(atime) = atime {
                node.atime = resolve(atime, now);
            }
            if let Some(mtime) = mtime {
                node.mtime = resolve(mtime, now);
            }
            node.ctime = ctime.unwrap_or(now);
            state.attr(ino.0)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let ino = if mode & S_IFMT == S_IFREG {
            state.create(req, parent.0, name, mode, Content::File(Vec::new()))
        } else {
            // Devices, fifos and sockets: not needed by anything tested here.
            Err(Errno::EPERM)
        };
        reply_entry(&state, ino, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let ino = state.create(req, parent.0, name, mode, Content::Dir(BTreeMap::new()));
        reply_entry(&state, ino, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        let result = state.child(parent.0, name).and_then(|ino| {
            if state.is_dir(ino) {
                return Err(Errno::EISDIR);
            }
            state.remove_entry(parent.0, name)
        });
        reply_empty(result, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        let result = state.child(parent.0, name).and_then(|ino| {
            if !state.entries(ino)?.is_empty() {
                return Err(Errno::ENOTEMPTY);
            }
            state.remove_entry(parent.0, name)
        });
        reply_empty(result, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self
            .state()
            .rename(parent.0, name, newparent.0, newname, flags);
        reply_empty(result, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.state();
        match state.node(ino.0).map(Inode::is_dir) {
            Ok(false) => {
                state.opened(ino.0);
                // No FOPEN_KEEP_CACHE: each open starts from this fs's contents. No
                // FOPEN_DIRECT_IO: shared mmap (SQLite's -shm) needs the page cache.
                reply.opened(FileHandle(0), FopenFlags::empty());
            }
            Ok(true) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let state = self.state();
        match state.node(ino.0).map(|node| &node.content) {
            Ok(Content::File(data)) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let end = start.saturating_add(size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Ok(Content::Dir(_)) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.state();
        let result = (|| {
            let node = state.node_mut(ino.0)?;
            let Content::File(contents) = &mut node.content else {
                return Err(Errno::EISDIR);
            };
            let end = offset
                .checked_add(data.len() as u64)
                .filter(|&end| end <= MAX_FILE_SIZE)
                .ok_or(Errno::EFBIG)?;
            if end as usize > contents.len() {
                // Past the end: the gap reads as zeros, as in a sparse file.
                contents.resize(end as usize, 0);
            }
            contents[offset as usize..end as usize].copy_from_slice(data);
            let now = SystemTime::now();
            node.mtime = now;
            node.ctime = now;
            Ok(data.len() as u32)
        })();
        match result {
            Ok(written) => reply.written(written),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Closing makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.state().released(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // fdatasync too: the model keeps no attribute apart from the data it describes.
        let result = self.state().sync_file(ino.0);
        reply_empty(result, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.state();
        let listing = (|| {
            let node = state.node(ino.0)?;
            let Content::Dir(entries) = &node.content else {
                return Err(Errno::ENOTDIR);
            };
            let parent = node.link.as_ref().map_or(ino.0, |(parent, _)| *parent);
            let mut listing = vec![
                (ino.0, FileType::Directory, OsString::from(".")),
                (parent, FileType::Directory, OsString::from("..")),
            ];
            for (name, &child) in entries {
                let kind = if state.is_dir(child) {
                    FileType::Directory
                } else {
                    FileType::RegularFile
                };
                listing.push((child, kind, name.clone()));
            }
            Ok(listing)
        })();
        match listing {
            Ok(listing) => {
                let fh = state.next_fh;
                state.next_fh += 1;
                state.listings.insert(fh, listing);
                state.opened(ino.0);
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = self.state();
        let Some(listing) = state.listings.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (index, (ino, kind, name)) in listing.iter().enumerate().skip(start) {
            // The offset given is where the next call resumes.
            if reply.add(INodeNo(*ino), index as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        state.listings.remove(&fh.0);
        state.released(ino.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.state().sync_dir(ino.0);
        reply_empty(result, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let state = self.state();
        let blocks = CAPACITY / u64::from(BLOCK);
        let free = blocks.saturating_sub(state.used_bytes() / u64::from(BLOCK));
        let files = 1 << 20;
        let free_files = files - (state.volatile.len() as u64).min(files);
        reply.statfs(
            blocks,
            free,
            free,
            files,
            free_files,
            BLOCK,
            MAX_NAME as u32,
            BLOCK,
        );
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        // Only asked without default_permissions; answered the way the kernel checks.
        let state = self.state();
        let result = state.node(ino.0).and_then(|node| {
            let perm = u32::from(node.perm);
            let wanted =
                (mask & (AccessFlags::R_OK | AccessFlags::W_OK | AccessFlags::X_OK)).bits() as u32;
            let granted = if req.uid() == 0 {
                // Root reads and writes anything, and executes what anyone may.
                let any_x = perm & 0o111 != 0 || node.is_dir();
                0o6 | if any_x { 0o1 } else { 0 }
            } else if req.uid() == node.uid {
                perm >> 6
            } else if req.gid() == node.gid {
                perm >> 3
            } else {
                perm
            } & 0o7;
            if wanted & !granted == 0 {
                Ok(())
            } else {
                Err(Errno::EACCES)
            }
        });
        reply_empty(result, reply);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.state();
        let created = state
            .create(req, parent.0, name, mode, Content::File(Vec::new()))
            .and_then(|ino| state.attr(ino));
        match created {
            Ok(attr) => {
                state.opened(attr.ino.0);
                reply.created(&TTL, &attr, GENERATION, FileHandle(0), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }
}
