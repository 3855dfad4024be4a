//! A simulated disk for the file store's tests: every write stays pending
//! until synced, and a crash decides the fate of each pending write (kept,
//! dropped, torn at a 512-byte boundary, or zeroed) and undoes directory
//! changes that were not synced. It can also fail the Nth call with an i/o
//! error, or stop working at the Nth call (the process dies there).

use std::collections::HashMap;
use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::io::{Fs, FsFile};

const SECTOR: usize = 512;

/// A shared handle on one simulated disk.
#[derive(Debug, Clone, Default)]
pub(crate) struct SimFs(Arc<Mutex<Disk>>);

#[derive(Debug, Default)]
struct Disk {
    inodes: Vec<Inode>,
    dir: HashMap<PathBuf, usize>,
    durable_dir: HashMap<PathBuf, usize>,
    calls: u64,
    fail_at: Option<(u64, i32)>,
    die_at: Option<u64>,
    dead: bool,
    /// When set, fsync does nothing: the broken disk the tests must catch.
    ignore_sync: bool,
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Debug)]
enum Pending {
    Write { offset: usize, bytes: Vec<u8> },
    Truncate(usize),
}

/// Linux errno values the tests inject.
pub(crate) const EIO: i32 = 5;
pub(crate) const ENOSPC: i32 = 28;

impl Disk {
    /// Counts a call; fails it when told to.
    fn tick(&mut self) -> io::Result<()> {
        if self.dead {
            return Err(io::Error::other("simulated process death"));
        }
        self.calls += 1;
        if self.die_at == Some(self.calls) {
            self.dead = true;
            return Err(io::Error::other("simulated process death"));
        }
        match self.fail_at {
            Some((n, errno)) if n == self.calls => Err(io::Error::from_raw_os_error(errno)),
            _ => Ok(()),
        }
    }

    fn new_inode(&mut self) -> usize {
        self.inodes.push(Inode::default());
        self.inodes.len() - 1
    }
}

impl SimFs {
    pub(crate) fn new() -> SimFs {
        SimFs::default()
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Calls made so far.
    pub(crate) fn calls(&self) -> u64 {
        self.disk().calls
    }

    /// Fails call number `n` (counting from now on) with `errno`.
    pub(crate) fn fail_call(&self, n: u64, errno: i32) {
        let mut d = self.disk();
        d.fail_at = Some((d.calls + n, errno));
    }

    /// The process dies at call number `n` (counting from now on): that
    /// call and every later one fail.
    pub(crate) fn die_at_call(&self, n: u64) {
        let mut d = self.disk();
        d.die_at = Some(d.calls + n);
    }

    /// Makes fsync a no-op.
    pub(crate) fn ignore_sync(&self, yes: bool) {
        self.disk().ignore_sync = yes;
    }

    /// The bytes of a file as a reader would see them now.
    pub(crate) fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let d = self.disk();
        d.dir.get(path).map(|&i| d.inodes[i].data.clone())
    }

    /// Replaces a file's bytes, durably (for corruption tests).
    pub(crate) fn put(&self, path: &Path, bytes: Vec<u8>) {
        let mut d = self.disk();
        let i = d.new_inode();
        d.inodes[i].data = bytes.clone();
        d.inodes[i].durable = bytes;
        d.dir.insert(path.to_path_buf(), i);
        d.durable_dir.insert(path.to_path_buf(), i);
    }

    /// The process restarts, the machine does not: every write the dead
    /// process made is still pending in the page cache, neither lost nor
    /// durable.
    pub(crate) fn restart(&self) {
        let mut d = self.disk();
        d.dead = false;
        d.die_at = None;
        d.fail_at = None;
    }

    /// Power loss: each pending write is kept, dropped, torn at a sector
    /// boundary or zeroed, as `choose(n)` (a random number below `n`)
    /// decides; unsynced directory changes are undone. The disk then works
    /// again, as after a reboot.
    pub(crate) fn crash(&self, mut choose: impl FnMut(usize) -> usize) {
        let mut d = self.disk();
        for inode in &mut d.inodes {
            let mut data = inode.durable.clone();
            for op in inode.pending.drain(..) {
                match op {
                    Pending::Truncate(len) => {
                        if choose(2) == 0 {
                            data.truncate(len);
                        }
                    }
                    Pending::Write { offset, bytes } => {
                        let kept: Vec<u8> = match choose(4) {
                            0 => bytes,
                            1 => Vec::new(),
                            2 => {
                                // Keep the sectors before a random boundary.
                                let first = offset.div_ceil(SECTOR);
                                let last = (offset + bytes.len()) / SECTOR;
                                let cut = if last >= first {
                                    (first + choose(last - first + 1)) * SECTOR
                                } else {
                                    offset
                                };
                                bytes[..cut.saturating_sub(offset).min(bytes.len())].to_vec()
                            }
                            _ => vec![0; bytes.len()],
                        };
                        if !kept.is_empty() {
                            if data.len() < offset + kept.len() {
                                data.resize(offset + kept.len(), 0);
                            }
                            data[offset..offset + kept.len()].copy_from_slice(&kept);
                        }
                    }
                }
            }
            inode.data = data.clone();
            inode.durable = data;
        }
        d.dir = d.durable_dir.clone();
        d.dead = false;
        d.die_at = None;
        d.fail_at = None;
    }
}

struct SimFile {
    fs: SimFs,
    inode: usize,
}

impl SimFile {
    /// Writes `data` at `offset`, or at the end for `None`. A failed write
    /// may still have written part of its bytes.
    fn write(&mut self, offset: Option<usize>, data: &[u8]) -> io::Result<()> {
        let mut d = self.fs.disk();
        let failed = d.tick();
        let inode = &mut d.inodes[self.inode];
        let offset = offset.unwrap_or(inode.data.len());
        let written = if failed.is_ok() {
            data
        } else {
            &data[..data.len() / 2]
        };
        if !written.is_empty() {
            inode.pending.push(Pending::Write {
                offset,
                bytes: written.to_vec(),
            });
            let end = offset + written.len();
            if inode.data.len() < end {
                inode.data.resize(end, 0);
            }
            inode.data[offset..end].copy_from_slice(written);
        }
        failed
    }
}

impl FsFile for SimFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.write(None, data)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let offset = usize::try_from(offset).map_err(io::Error::other)?;
        self.write(Some(offset), data)
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut d = self.fs.disk();
        d.tick()?;
        if !d.ignore_sync {
            let inode = &mut d.inodes[self.inode];
            inode.durable = inode.data.clone();
            inode.pending.clear();
        }
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut d = self.fs.disk();
        d.tick()?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let inode = &mut d.inodes[self.inode];
        inode.data.truncate(len);
        inode.pending.push(Pending::Truncate(len));
        Ok(())
    }
}

impl Fs for SimFs {
    fn open_read(&self, path: &Path) -> io::Result<Option<Box<dyn Read + Send>>> {
        let mut d = self.disk();
        d.tick()?;
        Ok(d.dir
            .get(path)
            .map(|&i| Box::new(Cursor::new(d.inodes[i].data.clone())) as Box<dyn Read + Send>))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut d = self.disk();
        d.tick()?;
        let inode = match d.dir.get(path) {
            Some(&i) => i,
            None => {
                let i = d.new_inode();
                d.dir.insert(path.to_path_buf(), i);
                i
            }
        };
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode,
        }))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut d = self.disk();
        d.tick()?;
        if d.dir.contains_key(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let i = d.new_inode();
        d.dir.insert(path.to_path_buf(), i);
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode: i,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut d = self.disk();
        d.tick()?;
        let i = d
            .dir
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        d.dir.insert(to.to_path_buf(), i);
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        let mut d = self.disk();
        d.tick()?;
        if !d.ignore_sync {
            d.durable_dir = d.dir.clone();
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut d = self.disk();
        d.tick()?;
        d.dir.remove(path);
        Ok(())
    }
}
