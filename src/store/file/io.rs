//! The small file-system interface the file store is written against, so
//! tests can put a fault-injecting, power-loss-simulating disk under it.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The operations the file store needs, and nothing more.
pub(crate) trait Fs: fmt::Debug + Send + Sync {
    /// Opens a file for reading; `Ok(None)` if it does not exist.
    fn open_read(&self, path: &Path) -> io::Result<Option<Box<dyn Read + Send>>>;
    /// Opens a file for writing at its end, creating it empty if it does
    /// not exist.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Creates a file for writing that must not exist yet: anything at
    /// `path`, a symbolic link included (even one to nowhere), is an
    /// `AlreadyExists` error. The file gets the store's private mode, and
    /// nothing planted at the path is written through.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Atomically replaces `to` by `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Removes a file; not finding it is not an error.
    fn remove(&self, path: &Path) -> io::Result<()>;
}

/// An open file, written at its end (and its header overwritten).
pub(crate) trait FsFile: Send {
    /// Appends all of `data`.
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Writes all of `data` over the file's bytes from `offset`, which lie
    /// inside the file; appends still go to its end.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable (fsync).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes; later appends go after them.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// Files the store creates are readable by their owner only: they hold key
/// hashes, and a readable lock file would let anyone hold the lock.
pub(crate) fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// The real file system.
#[derive(Debug, Default)]
pub(crate) struct OsFs;

struct OsFile(File);

// Not opened in append mode: Linux appends a positioned write to a file
// opened so, wherever it was aimed. Every write says where it goes.
impl FsFile for OsFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.seek(SeekFrom::End(0))?;
        self.0.write_all(data)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.seek(SeekFrom::Start(offset))?;
        self.0.write_all(data)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl Fs for OsFs {
    fn open_read(&self, path: &Path) -> io::Result<Option<Box<dyn Read + Send>>> {
        match File::open(path) {
            Ok(f) => Ok(Some(Box::new(io::BufReader::with_capacity(1 << 20, f)))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let file =
            private(OpenOptions::new().write(true).create(true).truncate(false)).open(path)?;
        Ok(Box::new(OsFile(file)))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        // `O_CREAT | O_EXCL`: refuses a symbolic link rather than follow it.
        let file = private(OpenOptions::new().write(true).create_new(true)).open(path)?;
        Ok(Box::new(OsFile(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    #[cfg(unix)]
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    /// Windows has no way to fsync a directory (`FlushFileBuffers` refuses
    /// a directory handle, and `File::open` cannot open one): creations and
    /// renames are as durable as the file system's metadata journal makes
    /// them. Returning the error instead would make every open fail.
    #[cfg(not(unix))]
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only "not found" means "no file": any other error is reported, so a
    /// store whose file cannot be read is never taken for one that has
    /// none and started afresh over it, and a leftover that cannot be
    /// removed is not taken for gone.
    #[test]
    fn only_a_missing_file_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let missing = dir.path().join("missing");
        // A path through a regular file: "not a directory", not "not found".
        let through = file.join("child");
        assert!(OsFs.open_read(&missing).unwrap().is_none());
        assert!(OsFs.open_read(&through).is_err());
        let mut read = String::new();
        OsFs.open_read(&file)
            .unwrap()
            .unwrap()
            .read_to_string(&mut read)
            .unwrap();
        assert_eq!(read, "x");

        OsFs.remove(&missing).unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(
            OsFs.remove(&sub).is_err(),
            "a directory is no file to remove"
        );
        OsFs.remove(&file).unwrap();
        assert!(!file.exists());
    }
}
