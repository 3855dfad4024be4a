//! [`FileStore`]: durable storage in one append-only file on one machine.
//!
//! Every record lives in memory (the same sharded index as
//! [`MemoryStore`]), so `lookup`, and with it `verify`, never touches the
//! disk. Every write is one record appended to the file and fsynced before
//! it returns; `format` documents the bytes.
//!
//! - **Crash safety.** A record counts only when its CRC32 matches. At open,
//!   a torn tail (the one write a crash cut short) is dropped and reported
//!   in [`FileStore::recovery`]; damage followed by committed records, or
//!   anywhere in the part of the file that each write's header slot says
//!   was already durable, is an error naming the byte offset, never
//!   skipped, since skipping a record could bring a revoked key back. A
//!   new store's file is created whole: its header written to
//!   `<file>.compact`, fsynced, renamed into place, the directory fsynced.
//!   So a file shorter than a header is damage (an error), not a creation
//!   cut short; only an empty file is taken as a new store.
//! - **One process at a time.** An exclusive OS lock on `<file>.lock`, taken
//!   at open; a second open fails with [`StoreError::Locked`] (after 0.1 s,
//!   time enough for a forked child to let go of its copy of the lock). The
//!   path is resolved first (symbolic links followed, a link to a file not
//!   yet created included), so every spelling of one store meets the same
//!   lock; the lock file itself must not be a
//!   link. Removing a lock file while its store is open lets a second
//!   process in. Files are created readable by their
//!   owner only, the rewrites of a compaction or an import too (a new file
//!   renamed over the old one: permissions or hard links given to the old
//!   file are not kept). A store's file name cannot end in `.compact` or `.lock`,
//!   the names of another store's temporary and lock files.
//! - **Fail-stop.** After an i/o error on a write (a failed fsync included)
//!   the store refuses every further write with [`StoreError::Poisoned`]
//!   until reopened: the index is updated only after the disk said yes.
//!   A reopen replays the file and fsyncs it before taking writes. (After a
//!   failed fsync, Linux may report later fsyncs as good while the failed
//!   pages never reach the disk; such a loss before the last record shows
//!   up at a later open as a corruption error.)
//! - **Compaction** rewrites the live records to `<file>.compact` (created
//!   new, after removing whatever is there: never written through a link),
//!   fsyncs it, renames it over the file and fsyncs the directory: a crash at any
//!   step leaves the complete old file or the complete new one (on
//!   Windows, which cannot fsync a directory, as far as the file system's
//!   metadata journal keeps a rename). Writes go
//!   on while it runs: the new file is written from a snapshot without the
//!   write lock, and the records appended meanwhile are copied to its end
//!   before it takes the old one's place. It runs on
//!   [`FileStore::compact`], and on [`KeyStore::flush`] once dead records
//!   outnumber live ones (and at least
//!   [`FileStoreOptions::min_dead_to_compact`] are dead; after a failed
//!   one, once they have about doubled): a key ring's
//!   background flusher calls that, never a write, so no `apply` (and no
//!   `verify` of a key with a use limit) waits for a rewrite, only for
//!   its final swap.

pub(crate) mod format;
pub(crate) mod io;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};

use serde::{Deserialize, Serialize};

use self::format::{Entry, HEADER_LEN, HeaderCheck, RECORD_HEAD_LEN, Synced};
use self::io::{Fs, FsFile, OsFs};
use super::memory::MemoryStore;
use super::{Change, KeyStore, Lent, OtherRing, RingSettings, StoreError, StoredKey, check_batch};
use crate::expiry::ExpiryPolicy;
use crate::key::{Status, StatusCode, instant};
use crate::token::KeyId;

/// Most keys in one record when the whole store is rewritten (compaction,
/// import): records decode in parallel at open.
const REWRITE_CHUNK: usize = 4096;
/// Most payload bytes in one record of a rewrite: a key within the limits
/// of `issue` serializes to at most about 270 KB (escaped control
/// characters cost six bytes each; see [`MAX_IMPORT_LINE`]), so a count
/// alone could pass `format::MAX_PAYLOAD` and leave a store of valid keys
/// that can never be compacted; and an open holds a few records at a time
/// in memory.
const REWRITE_BYTES: usize = 16 << 20;

/// Longest line [`FileStore::import`] reads, in bytes, its line break not
/// counted: a longer one is refused, the rest of it unread. An export line
/// is one record (or the settings), and every field of a record has a
/// limit. The longest line a key within the limits of `issue` makes, every
/// text field at its limit in control characters (which JSON writes as
/// `\u0001`, six bytes each: 64 metadata entries of 2 x 1,536 bytes, a
/// description of 24,576, 256 scopes of 128, seven fields of 1,536) and
/// every optional field set, is 269,612 bytes (measured by the test
/// `the_longest_valid_record_imports_and_a_line_over_the_limit_is_refused`);
/// the settings line stays under 20 KB. The limit leaves a margin of almost
/// four times that, for white space an edit may add.
const MAX_IMPORT_LINE: usize = 1 << 20;

/// Tuning for [`FileStore::open_with`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct FileStoreOptions {
    /// Automatic compaction (on [`KeyStore::flush`]) waits for at least
    /// this many dead records (default 10,000), so small stores are not
    /// rewritten over and over.
    pub min_dead_to_compact: u64,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        FileStoreOptions {
            min_dead_to_compact: 10_000,
        }
    }
}

impl FileStoreOptions {
    /// Sets [`min_dead_to_compact`](Self::min_dead_to_compact).
    pub fn min_dead_to_compact(mut self, n: u64) -> Self {
        self.min_dead_to_compact = n;
        self
    }
}

/// What opening the file found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Records replayed.
    pub records: u64,
    /// Bytes of a torn tail dropped (0 after a clean shutdown).
    pub dropped_bytes: u64,
    /// Where the dropped tail started, if any.
    pub dropped_at: Option<u64>,
}

/// How [`FileStore::import`] treats the keys already in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportMode {
    /// The store becomes exactly the export: keys and settings.
    Replace,
    /// Keys of the export whose id is not in the store are added; keys whose
    /// id is already there are skipped (never two keys with one id). The
    /// store keeps its settings, or takes the export's if it has none, but
    /// never the export's revoke-all epoch: a key the source revoked, one by
    /// one or by `revoke_all`, arrives revoked in its own record, and every
    /// added key is stamped with this store's epoch, so an active key stays
    /// active. An added key without an expiry of its own follows this
    /// store's default from then on, as after a change of the default,
    /// unless it had expired under the export's (its default in force or
    /// one it replaced) by the time of the import, read from the system
    /// clock: such a key arrives with the instant it expired as its own
    /// expiry, and stays expired. (A ring's maximum lifetime is the ring's,
    /// not the export's: a key only the source ring's cap had ended is not
    /// known expired.)
    Merge,
}

/// What [`FileStore::import`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportReport {
    /// Keys added.
    pub imported: usize,
    /// Keys skipped because their id existed (merge only).
    pub skipped: usize,
    /// Keys added that followed the export's default expiry and had expired
    /// under it (merge only): each keeps the instant it expired as its own
    /// expiry, so the store's default does not bring it back.
    pub expired: usize,
}

/// A durable [`KeyStore`]: one append-only file on one machine.
///
/// Every record lives in memory (the same sharded index as
/// [`MemoryStore`]), so `lookup`, and with it `verify`, never touches the
/// disk. Every write is one record appended to the file and fsynced before
/// it returns; the format is below.
///
/// - **Crash safety.** A record counts only when its CRC32 matches. At open,
///   a torn tail (the one write a crash cut short) is dropped and reported
///   in [`FileStore::recovery`]; damage followed by committed records, or
///   anywhere in the part of the file that each write's header slot says
///   was already durable, is an error naming the byte offset, never
///   skipped, since skipping a record could bring a revoked key back.
/// - **One process at a time.** An exclusive OS lock on `<file>.lock`, taken
///   at open; a second open fails with [`StoreError::Locked`] (after 0.1 s,
///   time enough for a forked child to let go of its copy of the lock). The
///   path is resolved first (symbolic links followed, a link to a file not
///   yet created included), so every spelling of one store meets the same
///   lock; the lock file itself must not be a
///   link. Removing a lock file while its store is open lets a second
///   process in. Files are created readable by their
///   owner only, the rewrites of a compaction or an import too (a new file
///   renamed over the old one: permissions or hard links given to the old
///   file are not kept). A store's file name cannot end in `.compact` or `.lock`,
///   the names of another store's temporary and lock files.
/// - **Fail-stop.** After an i/o error on a write (a failed fsync included)
///   the store refuses every further write with [`StoreError::Poisoned`]
///   until reopened: the index is updated only after the disk said yes.
///   A reopen replays the file and fsyncs it before taking writes. (After a
///   failed fsync, Linux may report later fsyncs as good while the failed
///   pages never reach the disk; such a loss before the last record shows
///   up at a later open as a corruption error.)
/// - **Compaction** rewrites the live records to `<file>.compact` (created
///   new, after removing whatever is there: never written through a link),
///   fsyncs it, renames it over the file and fsyncs the directory: a crash at any
///   step leaves the complete old file or the complete new one (on
///   Windows, which cannot fsync a directory, as far as the file system's
///   metadata journal keeps a rename). Writes go
///   on while it runs: the new file is written from a snapshot without the
///   write lock, and the records appended meanwhile are copied to its end
///   before it takes the old one's place. It runs on
///   [`FileStore::compact`], and on [`KeyStore::flush`] once dead records
///   outnumber live ones (and at least
///   [`FileStoreOptions::min_dead_to_compact`] are dead; after a failed
///   one, once they have about doubled): a key ring's
///   background flusher calls that, never a write, so no `apply` (and no
///   `verify` of a key with a use limit) waits for a rewrite, only for
///   its final swap.
///
/// # On-disk format
///
/// The on-disk format: a header, then one record per committed batch.
///
/// ```text
/// header (12288 bytes: three pages of 4096, so that rewriting a slot
/// never rewrites the page of another slot, of the magic or of a record)
///   page 0: magic    8  b"KEYWARD\0"
///           version  2  u16 LE, 2
///           reserved 2  zero
///           crc      4  u32 LE, CRC32 of the 12 bytes above
///           zeros to the end of the page
///   pages 1 and 2: a synced-length slot each, at the page's start, all
///   zero (never written) or
///           synced   8  u64 LE: a length of the file that was durable
///                       when the slot was written
///           crc      4  u32 LE, CRC32 of the slot's number (one byte) and
///                       synced
///           reserved 4  zero
///           zeros to the end of the page
/// record (12-byte head, then the payload)
///   magic    2  b"KW"
///   kind     1  1 = batch
///   flags    1  zero
///   len      4  u32 LE, payload length
///   crc      4  u32 LE, CRC32 of kind, flags, len and payload
///   payload  len bytes: a JSON array of entries, each
///            {"put": StoredKey} | {"remove": "<key id>"} | {"settings": RingSettings}
/// ```
///
/// One `apply` is one record, so a batch is on disk whole or not at all: a
/// record is taken only when its checksum matches. Records are replayed in
/// order; a later `put` of an id replaces the earlier one.
///
/// Only the last write can be torn: each is fsynced before the next
/// begins. A record a crash zeroed says nothing, not even its length,
/// and zeros from its start to the end look alike whether they cover one
/// unsynced record or several synced ones. So each write also records, in
/// a slot of the header (one more small write, to the slot's own page,
/// under the same fsync), the length the file had when its previous fsync
/// returned: the start of the record it adds; a rewrite records its whole
/// length before the fsync that precedes its rename, and an open, once it
/// has made the file durable, the length it found. At open, the larger
/// slot that checks bounds the *synced part*: an invalid record or the end
/// of the file inside it is damage to acknowledged data, an error naming
/// the offset. Writes take turns between the two slots, overwriting the
/// smaller value, so a slot write cut short (ignored at open: a slot that
/// does not check only weakens the bound) never loses the larger one.
///
/// Past the synced part, an invalid record at offset X is a *torn tail* (a
/// write cut short by a crash; dropped) only if no valid record starts
/// anywhere after X. Otherwise the damage is followed by committed data,
/// and dropping it could resurrect a revoked key: the open fails with the
/// offset.
pub struct FileStore {
    index: MemoryStore,
    log: Mutex<Log>,
    /// Held for a whole rewrite (compaction, import), so that one runs at a
    /// time; taken before `log`, never while holding it.
    rewriting: Mutex<()>,
    path: PathBuf,
    fs: Box<dyn Fs>,
    options: FileStoreOptions,
    recovery: Recovery,
    /// The most payload one record may carry: `format::MAX_PAYLOAD` (tests
    /// lower it to reach the limit with small stores).
    max_payload: usize,
    /// Held open for the store's life: the OS lock lives with it.
    _lock: Option<std::fs::File>,
}

struct Log {
    file: Box<dyn FsFile>,
    /// The file's length when its last fsync returned, and the header slot
    /// the next write records it in (see `format`).
    synced: Synced,
    /// Entries in the file (live and dead).
    entries: u64,
    /// A compaction on flush waits until the file holds this many entries:
    /// after a failed one, until the dead records have about doubled (0
    /// once one succeeds).
    retry_at: u64,
    poisoned: bool,
    /// While a compaction writes its new file: the records appended to the
    /// old one since its snapshot, copied to the new file's end before it
    /// takes the old one's place.
    tail: Option<Tail>,
}

/// Ends a compaction's tail (records stop being kept for it) when dropped
/// still holding the log: a compaction that unwinds before its swap.
struct EndTail<'a>(Option<&'a Mutex<Log>>);

impl Drop for EndTail<'_> {
    fn drop(&mut self) {
        if let Some(log) = self.0 {
            log.lock().unwrap_or_else(PoisonError::into_inner).tail = None;
        }
    }
}

/// Records written during a compaction, as they went to the old file.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
    entries: u64,
}

/// The export version this build writes. It reads this one and version 1,
/// whose header has no key count.
const EXPORT_VERSION: u32 = 2;

/// The first line of an export.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportHeader {
    keyward_export: u32,
    /// How many key lines follow (from version 2; `None` in version 1), so
    /// that an export cut short at a line break is refused, not read as
    /// a whole export without its later keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keys: Option<u64>,
    settings: Option<RingSettings>,
}

/// The version field of an export's first line, read before the rest
/// (other fields are ignored here, not refused).
#[derive(Deserialize)]
struct ExportVersion {
    keyward_export: u32,
}

/// A borrowed [`Entry`], to encode without cloning records.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum EntryRef<'a> {
    Put(&'a StoredKey),
    Remove(KeyId),
    Settings(&'a RingSettings),
}

impl FileStore {
    /// Opens the store in the file at `path`, creating it if missing, with
    /// default options. A symbolic link at `path` is followed: the store is
    /// its target's, created there if the link points at nothing yet, and
    /// locked for every path that leads to it.
    pub fn open(path: impl AsRef<Path>) -> Result<FileStore, StoreError> {
        FileStore::open_with(path, FileStoreOptions::default())
    }

    /// Opens the store at `path` with `options`.
    pub fn open_with(
        path: impl AsRef<Path>,
        options: FileStoreOptions,
    ) -> Result<FileStore, StoreError> {
        let path = canonical(path.as_ref())?;
        refuse_reserved_name(&path)?;
        let lock = lock_beside(&path)?;
        FileStore::open_on(Box::new(OsFs), path, options, Some(lock))
    }

    /// Opens on any [`Fs`] (tests put a simulated disk here).
    pub(crate) fn open_on(
        fs: Box<dyn Fs>,
        path: PathBuf,
        options: FileStoreOptions,
        lock: Option<std::fs::File>,
    ) -> Result<FileStore, StoreError> {
        let io_err = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        // A compaction cut short leaves its temporary file; the data file is
        // intact either way.
        fs.remove(&temp_path(&path)).map_err(io_err)?;
        let index = MemoryStore::new();
        let fresh = Synced {
            len: HEADER_LEN as u64,
            next_slot: 0,
        };
        let (file, recovery, entries, synced) = match fs.open_read(&path).map_err(io_err)? {
            None => (create_fresh(&*fs, &path)?, Recovery::default(), 0, fresh),
            Some(reader) => match load(reader, &path, &index)? {
                Loaded::Fresh => (create_fresh(&*fs, &path)?, Recovery::default(), 0, fresh),
                Loaded::Log {
                    valid_len,
                    dropped,
                    records,
                    entries,
                    synced,
                } => {
                    let mut file = fs.open_append(&path).map_err(io_err)?;
                    if dropped > 0 {
                        file.truncate(valid_len).map_err(io_err)?;
                    }
                    // What was replayed may still sit in the page cache only
                    // (a writer killed before its fsync): make it durable, with
                    // the file's directory entry, before building on it.
                    file.sync().map_err(io_err)?;
                    fs.sync_dir(parent(&path)).map_err(io_err)?;
                    // All of it is durable now: say so in a slot, so that
                    // damage to the last record is found as damage even if
                    // no write follows this open.
                    let mut synced = synced;
                    if valid_len > synced.len {
                        let slot = format::slot(synced.next_slot, valid_len);
                        file.write_at(format::slot_offset(synced.next_slot), &slot)
                            .and_then(|()| file.sync())
                            .map_err(io_err)?;
                        synced.next_slot = 1 - synced.next_slot;
                    }
                    let recovery = Recovery {
                        records,
                        dropped_bytes: dropped,
                        dropped_at: (dropped > 0).then_some(valid_len),
                    };
                    let synced = Synced {
                        len: valid_len,
                        next_slot: synced.next_slot,
                    };
                    (file, recovery, entries, synced)
                }
            },
        };
        Ok(FileStore {
            index,
            log: Mutex::new(Log {
                file,
                synced,
                entries,
                retry_at: 0,
                poisoned: false,
                tail: None,
            }),
            rewriting: Mutex::new(()),
            path,
            fs,
            options,
            recovery,
            max_payload: format::MAX_PAYLOAD as usize,
            _lock: lock,
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the open found: records replayed, torn tail dropped.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        // Every change to `Log` is completed before anything can panic, so
        // a poisoned lock holds a consistent value.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn io_err(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn rewriting(&self) -> MutexGuard<'_, ()> {
        self.rewriting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Rewrites the file with only the live records (see the module docs).
    /// Writes are not held up meanwhile: only the start and the final swap
    /// (appending what was written meanwhile, a rename, two fsyncs) take
    /// the write lock. A second call waits for the first.
    pub fn compact(&self) -> Result<(), StoreError> {
        self.compact_holding(&self.rewriting())
    }

    /// [`compact`](Self::compact), with the rewriting lock held.
    fn compact_holding(&self, _rewriting: &MutexGuard<'_, ()>) -> Result<(), StoreError> {
        {
            let mut log = self.log();
            if log.poisoned {
                return Err(StoreError::Poisoned(self.path.clone()));
            }
            log.tail = Some(Tail::default());
        }
        // Should this unwind before the swap, writes stop keeping a tail.
        let mut tail_guard = EndTail(Some(&self.log));
        // Every record written from here on goes to the tail too, so the
        // snapshot can be read without the lock, key by key: each entry of
        // the tail is a whole record, a removal (of nothing, if the key is
        // gone) or whole settings, so the snapshot followed by the tail
        // replays to each key's latest record, whichever version of it the
        // snapshot caught.
        let written = self.index.list(None).and_then(|keys| {
            let settings = self.index.load_settings()?;
            let mut file = self.write_temp(&keys, settings.as_ref())?;
            // Copy what was written meanwhile, still without the lock, so
            // the swap has only the last moment's writes to copy.
            let so_far = self
                .log()
                .tail
                .as_mut()
                .map(|t| std::mem::take(&mut t.bytes));
            if let Some(bytes) = so_far.filter(|b| !b.is_empty()) {
                file = self.append_temp(file, &bytes)?;
            }
            Ok((file, snapshot_entries(&keys, settings.as_ref())))
        });
        tail_guard.0 = None;
        let mut log = self.log();
        let tail = log.tail.take().unwrap_or_default();
        let (file, entries) = written?;
        if log.poisoned {
            // A write failed meanwhile: the old file may hold more than the
            // index (a torn record, or one whose fsync failed), and only a
            // reopen knows. (Closed first: Windows cannot remove an open
            // file.)
            drop(file);
            let _ = self.fs.remove(&temp_path(&self.path));
            return Err(StoreError::Poisoned(self.path.clone()));
        }
        let old = self.install(&mut log, file, &tail.bytes, entries + tail.entries)?;
        // Closing the old file frees its blocks (about 50 ms for a 268 MB
        // file here): not under the lock.
        drop(log);
        drop(old);
        Ok(())
    }

    /// Whether dead records call for a compaction (see the module docs).
    fn compaction_due(&self) -> bool {
        let log = self.log();
        let dead = self.dead(&log);
        let live = log.entries - dead;
        !log.poisoned
            && dead > live
            && dead >= self.options.min_dead_to_compact
            && log.entries >= log.retry_at
    }

    /// Dead entries in the file: all but one per live key and the settings.
    fn dead(&self, log: &Log) -> u64 {
        log.entries.saturating_sub(self.index.len() as u64 + 1)
    }

    /// Writes the whole store to `out`: one JSON line with the export
    /// version (2), the number of keys and the settings, then one line per
    /// key (record and hash, never a secret). Read it back with
    /// [`import`](Self::import).
    /// The records are taken under the write lock (a consistent snapshot,
    /// no half batch) and written after it is released, so a slow `out`
    /// holds up no write to the store.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] with the path `<export>` for any error of `out`
    /// (its own `io::Error` the source); [`StoreError::Backend`] if a
    /// record does not encode. Each line is handed to `out` whole (one
    /// `write_all`), so after an error `out` holds the lines before the
    /// failed one and perhaps part of it. An import refuses that, even cut
    /// at a line break, since the first line counts the keys; export
    /// again.
    pub fn export(&self, out: impl Write) -> Result<(), StoreError> {
        let snapshot = {
            let _log = self.log();
            Snapshot::of(&self.index)?
        };
        // An i/o error here is the writer's, named `<export>`.
        snapshot.write(out)
    }

    /// Reads an [`export`](Self::export) into this store, replacing or
    /// merging (see [`ImportMode`]). All or nothing: the input is read and
    /// checked whole, then the store is rewritten atomically as by a
    /// compaction. Build key rings on the store after importing: a running
    /// ring reloads the imported settings (within a second, or on
    /// [`KeyRing::refresh`](crate::KeyRing::refresh)), but never moves its
    /// revoke-all epoch back, so after a `Replace` by an export of a lower
    /// epoch it refuses the imported keys as revoked, and before it issues
    /// or rotates a key it raises the store's epoch back to its own (so the
    /// next `revoke_all` of any ring on the store revokes that key too).
    ///
    /// A line may hold at most 1 MiB (1,048,576 bytes, its line break not
    /// counted): nearly four times the longest line an export of keys
    /// within the limits of [`KeyRing::issue`](crate::KeyRing::issue)
    /// writes (about 264 KiB, every text field at its limit in characters
    /// JSON escapes six-fold). A longer line is refused as soon as its
    /// first 1 MiB is read; the rest of it is never read, so the memory an
    /// import takes is bounded by the keys it brings, whatever the input.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidImport`], naming the first bad line, for a read
    /// error of `input` (its message with each run of more than 16 letters
    /// and digits shown as its length, since it may quote what it read),
    /// for input that is not an export (of version 2, or of version 1,
    /// which has no key count), an export with fewer or more key lines
    /// than its first line counts (one cut short, or edited without its
    /// count; blank lines are not counted), a field this
    /// version does not know (a misspelt restriction is refused, not
    /// skipped), a line over
    /// 1 MiB, a key id that appears twice, a use limit of 0, or fields past
    /// the limits
    /// `issue` holds a key to (an empty owner or one with a NUL; an owner or
    /// name over 256 bytes; a description over 4096; a contact field over
    /// 256; over 64 metadata entries, or one over 256 bytes; over 256
    /// scopes; over 64 bound networks; a revocation reason over 256; free
    /// text or a revocation reason holding an API key or access token), or
    /// settings no call could write (a default period that is not positive,
    /// over 64 superseded defaults); a `Replace` by an export without
    /// settings into a store a ring has claimed, which would leave the
    /// store unclaimed; a `Merge` of an export whose settings name a ring
    /// into a store without settings that holds keys, none of that ring's
    /// prefix; into a store a ring has claimed (see
    /// [`Error::StoreOfAnotherRing`](crate::Error::StoreOfAnotherRing)), an
    /// export of another ring: settings of another prefix or pepper, or
    /// keys whose hints are of another prefix (export settings without a
    /// prefix and pepper check, as an older keyward wrote them, take the
    /// store's); an I/O error of the rewrite; [`StoreError::Poisoned`] after
    /// an earlier failed write.
    ///
    /// An I/O error before the new file takes the store's place changes
    /// nothing. One at the swap or after it (the rename, the directory's
    /// fsync) poisons the store, as a failed compaction's does: the import
    /// may then be on disk, which a reopen finds out. Importing the same
    /// input again after the reopen is harmless either way (`Replace` gives
    /// the same store; `Merge` skips the ids already there).
    pub fn import(&self, input: impl Read, mode: ImportMode) -> Result<ImportReport, StoreError> {
        let (mut settings, incoming, lines) = read_export(input)?;
        let _rewriting = self.rewriting();
        let mut log = self.log();
        if log.poisoned {
            return Err(StoreError::Poisoned(self.path.clone()));
        }
        let invalid = |reason: &str| StoreError::InvalidImport {
            line: 1,
            reason: reason.into(),
        };
        if let Some(own) = self.index.load_settings()? {
            same_ring(&own, settings.as_mut(), &incoming, &lines)?;
            // The store would be left without settings, its claim gone:
            // the next ring of its prefix, under any pepper, would take it.
            if mode == ImportMode::Replace && settings.is_none() && own.prefix.is_some() {
                return Err(invalid(
                    "an export without settings cannot replace those of a store a ring has claimed \
                     (merge it, or import it into a new store)",
                ));
            }
        } else if mode == ImportMode::Merge
            && let Some(theirs) = settings.as_ref().and_then(|s| s.prefix.as_deref())
        {
            // The store takes the export's settings, and with them its
            // ring's claim: not over keys none of which are that ring's
            // (as `KeyRingBuilder::build` judges a store without settings).
            if super::none_of_prefix(&self.index.list(None)?, theirs) {
                return Err(invalid(
                    "the store holds the keys of another prefix than the export's ring",
                ));
            }
        }
        let mut report = ImportReport::default();
        let (keys, added, settings) = match mode {
            ImportMode::Replace => {
                report.imported = incoming.len();
                // A record stamped with a later epoch than its store's could
                // never be reached by a revoke-all: bring it back in line.
                let epoch = settings.as_ref().map_or(0, |s| s.epoch);
                let keys: Vec<Arc<StoredKey>> = incoming
                    .into_iter()
                    .map(|key| {
                        if key.key.epoch > epoch {
                            Arc::new(key.revised(|k| k.epoch = epoch))
                        } else {
                            Arc::new(key)
                        }
                    })
                    .collect();
                (keys.clone(), keys, settings)
            }
            ImportMode::Merge => {
                let target = self.index.load_settings()?;
                // The store keeps its revoke-all epoch (0 without settings),
                // also when it takes the export's settings for want of its
                // own: the imported keys are stamped with it below, and the
                // source's epoch would revoke every key stamped before it.
                let target_epoch = target.as_ref().map_or(0, |t| t.epoch);
                let source_epoch = settings.as_ref().map_or(0, |s| s.epoch);
                let revoked_at = settings
                    .as_ref()
                    .and_then(|s| s.revoked_all_at)
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                let now = time::OffsetDateTime::now_utc();
                let mut keys = self.index.list(None)?;
                let mut added = Vec::new();
                for key in incoming {
                    if self.index.lookup(key.id()).is_some() {
                        report.skipped += 1;
                        continue;
                    }
                    report.imported += 1;
                    // The source's revoke-all epoch does not come along: write
                    // its effect into the record, and stamp the key with this
                    // store's epoch.
                    // Nor does the expiry a key had reached under the
                    // source's default: it becomes the key's own, so this
                    // store's default cannot revive it.
                    let expired = settings.as_ref().and_then(|s| {
                        let k = key.key();
                        let created = instant(k.created_at);
                        let last_active = instant(k.created_at.max(k.last_used_at.get()));
                        s.default_end(created, last_active)
                            .filter(|end| k.expiry().is_none() && *end <= now)
                    });
                    report.expired += usize::from(expired.is_some());
                    let key = key.revised(|k| {
                        if k.epoch < source_epoch && k.status != StatusCode::Revoked {
                            k.set_status(Status::Revoked {
                                at: revoked_at,
                                reason: "revoked by revoke_all in the exported store".into(),
                            });
                        }
                        k.epoch = target_epoch;
                        if let Some(end) = expired {
                            k.set_expiry(Some(ExpiryPolicy::At(end)), Some(end));
                        }
                    });
                    let key = Arc::new(key);
                    keys.push(Arc::clone(&key));
                    added.push(key);
                }
                let settings = target.or_else(|| {
                    settings.map(|s| RingSettings {
                        epoch: target_epoch,
                        revoked_all_at: None,
                        ..s
                    })
                });
                (keys, added, settings)
            }
        };
        self.rewrite(&mut log, &keys, settings.as_ref())?;
        // Move the index to the new state without passing through an empty
        // one: readers see each key's old or new record, never none. Keys
        // leave before new ones arrive, so an old key never meets settings
        // it was not issued under (a new key may be refused for a moment).
        if mode == ImportMode::Replace {
            let keep: std::collections::HashSet<KeyId> = keys.iter().map(|k| k.id()).collect();
            for old in self.index.list(None)? {
                if !keep.contains(&old.id()) {
                    self.index.apply_checked(Change::Remove(old.id()));
                }
            }
        }
        for key in added {
            self.index
                .apply_checked(Change::Replace(StoredKey::clone(&key)));
        }
        // The settings the file now holds: none, after replacing the store
        // with an export of one without settings.
        self.index.set_settings(settings);
        Ok(report)
    }

    /// Writes `keys` and `settings` as a new file and puts it in place of
    /// the old one, all under the write lock (import).
    fn rewrite(
        &self,
        log: &mut Log,
        keys: &[Arc<StoredKey>],
        settings: Option<&RingSettings>,
    ) -> Result<(), StoreError> {
        let file = self.write_temp(keys, settings)?;
        self.install(log, file, &[], snapshot_entries(keys, settings))
            .map(drop)
    }

    /// Writes `keys` and `settings` to the temporary file and fsyncs it. On
    /// an error the temporary file is removed; the data file is untouched.
    fn write_temp(
        &self,
        keys: &[Arc<StoredKey>],
        settings: Option<&RingSettings>,
    ) -> Result<Temp, StoreError> {
        let temp = temp_path(&self.path);
        let result = (|| -> Result<Temp, StoreError> {
            // Whatever is at the temporary path goes first (a leftover, or
            // a link planted there): the new file is created, never opened
            // through a link, so the store writes nowhere else, and it is
            // private whatever mode a leftover had.
            self.fs.remove(&temp).map_err(|e| self.io_err(e))?;
            let mut file = Temp {
                file: self.fs.create_new(&temp).map_err(|e| self.io_err(e))?,
                len: 0,
            };
            file.append(&format::header()).map_err(|e| self.io_err(e))?;
            if let Some(settings) = settings {
                file.append(&encode(&[EntryRef::Settings(settings)], self.max_payload)?)
                    .map_err(|e| self.io_err(e))?;
            }
            let budget = REWRITE_BYTES.min(self.max_payload);
            put_records(keys, budget, self.max_payload, |record| {
                file.append(record).map_err(|e| self.io_err(e))
            })?;
            file.seal().map_err(|e| self.io_err(e))?;
            Ok(file)
        })();
        if result.is_err() {
            let _ = self.fs.remove(&temp);
        }
        result
    }

    /// Appends `bytes` to the written temporary file and fsyncs it; on an
    /// error the temporary file is removed.
    fn append_temp(&self, mut file: Temp, bytes: &[u8]) -> Result<Temp, StoreError> {
        match file.append(bytes).and_then(|()| file.seal()) {
            Ok(()) => Ok(file),
            Err(e) => {
                // Closed first: Windows cannot remove an open file.
                drop(file);
                let _ = self.fs.remove(&temp_path(&self.path));
                Err(self.io_err(e))
            }
        }
    }

    /// Appends `tail` (records written since the snapshot, already framed)
    /// to the written temporary file, fsyncs it, renames it over the data
    /// file, fsyncs the directory and writes on from there. Under the write
    /// lock; the new file holds `entries` entries. Returns the old file,
    /// for the caller to close.
    fn install(
        &self,
        log: &mut Log,
        mut file: Temp,
        tail: &[u8],
        entries: u64,
    ) -> Result<Box<dyn FsFile>, StoreError> {
        let temp = temp_path(&self.path);
        let mut renaming = false;
        let len = file.len + tail.len() as u64;
        let result = (|| -> Result<Box<dyn FsFile>, StoreError> {
            if !tail.is_empty() {
                file.append(tail).map_err(|e| self.io_err(e))?;
                file.seal().map_err(|e| self.io_err(e))?;
            }
            drop(file);
            renaming = true;
            self.fs
                .rename(&temp, &self.path)
                .map_err(|e| self.io_err(e))?;
            self.fs
                .sync_dir(parent(&self.path))
                .map_err(|e| self.io_err(e))?;
            self.fs.open_append(&self.path).map_err(|e| self.io_err(e))
        })();
        match result {
            Ok(file) => {
                log.entries = entries;
                log.retry_at = 0;
                // `seal` wrote slot 0.
                log.synced = Synced { len, next_slot: 1 };
                Ok(std::mem::replace(&mut log.file, file))
            }
            Err(e) => {
                // Before the rename the old file is untouched and still ours;
                // from the rename on, the file on disk is the old one or the
                // new one, and only a reopen knows which.
                if renaming {
                    log.poisoned = true;
                }
                let _ = self.fs.remove(&temp);
                Err(e)
            }
        }
    }
}

/// A rewrite's new file, not yet in place, and its length.
struct Temp {
    file: Box<dyn FsFile>,
    len: u64,
}

impl Temp {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.append(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Records the whole file as synced in its first slot and fsyncs it:
    /// only after this fsync can the file take the data file's place.
    fn seal(&mut self) -> std::io::Result<()> {
        self.file
            .write_at(format::slot_offset(0), &format::slot(0, self.len))?;
        self.file.sync()
    }
}

/// Entries in a file rewritten from `keys` and `settings`.
fn snapshot_entries(keys: &[Arc<StoredKey>], settings: Option<&RingSettings>) -> u64 {
    keys.len() as u64 + u64::from(settings.is_some())
}

/// Frames `entries` as one record whose payload is at most `max` bytes.
fn encode(entries: &[EntryRef<'_>], max: usize) -> Result<Vec<u8>, StoreError> {
    // `format::Entry` is owned; this is the same shape, borrowed.
    let payload = serde_json::to_vec(entries).map_err(|e| StoreError::Backend(Box::new(e)))?;
    frame(&payload, max)
}

fn frame(payload: &[u8], max: usize) -> Result<Vec<u8>, StoreError> {
    Some(payload)
        .filter(|p| p.len() <= max)
        .and_then(format::encode_payload)
        .ok_or_else(|| StoreError::Backend("batch too large for one record".into()))
}

/// Frames `keys` as `put` records for a rewrite and hands each to `emit`,
/// in order. A record closes at [`REWRITE_CHUNK`] keys, or before its
/// payload would pass `budget` bytes; a key over the budget gets a record
/// of its own, which may take up to `max` bytes (what `apply` accepts), so
/// every key the store took can be rewritten. A key too large for that is
/// an error.
fn put_records(
    keys: &[Arc<StoredKey>],
    budget: usize,
    max: usize,
    mut emit: impl FnMut(&[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut payload = vec![b'['];
    let mut count = 0;
    for key in keys {
        let mark = payload.len();
        if count > 0 {
            payload.push(b',');
        }
        serde_json::to_writer(&mut payload, &EntryRef::Put(key))
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        // With its closing bracket.
        if count > 0 && (count == REWRITE_CHUNK || payload.len() + 1 > budget) {
            let entry = payload.split_off(mark + 1);
            payload.truncate(mark);
            payload.push(b']');
            emit(&frame(&payload, max)?)?;
            payload.clear();
            payload.push(b'[');
            payload.extend_from_slice(&entry);
            count = 0;
        }
        count += 1;
    }
    if count > 0 {
        payload.push(b']');
        emit(&frame(&payload, max)?)?;
    }
    Ok(())
}

impl KeyStore for FileStore {
    fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>> {
        self.index.lookup(id)
    }

    fn inspect(&self, id: KeyId, f: &mut dyn FnMut(Option<Lent<'_>>)) {
        self.index.inspect(id, f)
    }

    fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        self.index.list(owner)
    }

    /// Lists under the write lock: the index takes a batch change by
    /// change (see [`KeyStore::snapshot`]).
    fn snapshot(&self) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        let _log = self.log();
        self.index.list(None)
    }

    fn load_settings(&self) -> Result<Option<RingSettings>, StoreError> {
        self.index.load_settings()
    }

    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let mut log = self.log();
        if log.poisoned {
            return Err(StoreError::Poisoned(self.path.clone()));
        }
        check_batch(
            &changes,
            |id| self.index.lookup(id),
            || self.index.load_settings(),
        )?;
        if changes.is_empty() {
            return Ok(());
        }
        // Settings are written as the store will keep them (epoch merged).
        let stored = self.index.load_settings()?;
        let changes: Vec<Change> = changes
            .into_iter()
            .map(|c| match c {
                Change::Settings(s) | Change::SettingsIf { next: s, .. } => {
                    Change::Settings(s.written_over(stored.as_ref()))
                }
                other => other,
            })
            .collect();
        let entries: Vec<EntryRef<'_>> = changes
            .iter()
            .map(|c| match c {
                Change::Insert(e) | Change::Replace(e) | Change::ReplaceIf { next: e, .. } => {
                    EntryRef::Put(e)
                }
                Change::Remove(id) => EntryRef::Remove(*id),
                Change::Settings(s) | Change::SettingsIf { next: s, .. } => EntryRef::Settings(s),
            })
            .collect();
        let record = encode(&entries, self.max_payload)?;
        // The slot vouches only for what an fsync already made durable.
        let Synced { len, next_slot } = log.synced;
        let slot = format::slot(next_slot, len);
        let written = log
            .file
            .append(&record)
            .and_then(|()| log.file.write_at(format::slot_offset(next_slot), &slot))
            .and_then(|()| log.file.sync());
        if let Err(e) = written {
            log.poisoned = true;
            return Err(self.io_err(e));
        }
        log.synced = Synced {
            len: len + record.len() as u64,
            next_slot: 1 - next_slot,
        };
        let written = changes.len() as u64;
        log.entries += written;
        if let Some(tail) = &mut log.tail {
            tail.bytes.extend_from_slice(&record);
            tail.entries += written;
        }
        for change in changes {
            self.index.apply_checked(change);
        }
        Ok(())
    }

    /// Every write is durable when `apply` returns, so there is nothing to
    /// flush; this is where the store compacts once dead records call for
    /// it (see the module docs), off the write path.
    ///
    /// A failed compaction is returned; the data file stays whole (or, if
    /// the failure came at the rename, the store is poisoned). The next
    /// flush does not try again at once, which would rewrite the whole file
    /// each time through a lasting fault such as a full disk: it waits
    /// until the file has taken as many more records as it had dead ones,
    /// so that the dead records about double. [`FileStore::compact`]
    /// always tries.
    fn flush(&self) -> Result<(), StoreError> {
        if !self.compaction_due() {
            return Ok(());
        }
        // Another flush may be compacting: wait for it, and compact only if
        // that still leaves enough dead records.
        let rewriting = self.rewriting();
        if !self.compaction_due() {
            return Ok(());
        }
        let result = self.compact_holding(&rewriting);
        if result.is_err() {
            let mut log = self.log();
            let dead = self.dead(&log).max(1);
            log.retry_at = log.entries.saturating_add(dead);
        }
        result
    }
}

impl fmt::Debug for FileStore {
    /// Prints the path and the number of keys, never their records.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .field("keys", &self.index.len())
            .finish_non_exhaustive()
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".compact");
    PathBuf::from(name)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Symbolic links [`canonical`] follows by hand at most (Linux's limit).
const MAX_LINK_HOPS: usize = 40;

/// The path with every symbolic link resolved, so that two spellings of one
/// store take one lock.
///
/// A link whose target does not exist yet (a dangling link) is followed
/// too: the store creates its file at the target, and locks beside it, so
/// the target's own path meets the same lock.
fn canonical(path: &Path) -> Result<PathBuf, StoreError> {
    let io_err = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut next = path.to_path_buf();
    for _ in 0..=MAX_LINK_HOPS {
        let name = next.file_name().ok_or_else(|| {
            io_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a file name",
            ))
        })?;
        let dir = std::fs::canonicalize(parent(&next)).map_err(io_err)?;
        let resolved = dir.join(name);
        match std::fs::canonicalize(&resolved) {
            Ok(target) => return Ok(target),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        // Nothing there, or a link to nothing: follow the link, relative to
        // the directory it is in.
        match std::fs::symlink_metadata(&resolved) {
            Ok(meta) if meta.file_type().is_symlink() => {
                next = dir.join(std::fs::read_link(&resolved).map_err(io_err)?);
            }
            Ok(_) => return Ok(resolved),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(resolved),
            Err(e) => return Err(io_err(e)),
        }
    }
    Err(io_err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "too many levels of symbolic links",
    )))
}

/// Refuses a store file named like another store's temporary or lock file
/// (`<name>.compact`, `<name>.lock`): opening the store `<name>` removes
/// its leftover `<name>.compact`, and its compaction renames one over its
/// own file, so such a store could be deleted or moved.
fn refuse_reserved_name(path: &Path) -> Result<(), StoreError> {
    let reserved = path
        .extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| ext.eq_ignore_ascii_case("compact") || ext.eq_ignore_ascii_case("lock"));
    if reserved {
        return Err(StoreError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a store's file name cannot end in .compact or .lock (the names of another store's temporary and lock files)",
            ),
        });
    }
    Ok(())
}

/// How many times [`lock_beside`] opens the lock file again when the file
/// it locked is no longer the one at the path.
const LOCK_ATTEMPTS: usize = 8;

/// How long [`lock_beside`] waits for a lock held by this process's own
/// children: a child forked while a store's lock file was open holds a copy
/// of it (and so the lock) until it replaces its image, a moment later;
/// a store dropped and opened again meanwhile found it locked. Another
/// store holding the lock is reported after this long.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Takes the exclusive lock on `<path>.lock`, failing if it stays held for
/// [`LOCK_WAIT`].
///
/// The lock file is never a symbolic link: opening one planted there would
/// create a file at its target, and every store that meets the link would
/// lock that other file (see [`open_lock_file`]). And the lock must be held on the file the path
/// names once it is held: a lock file removed or replaced between the open
/// and the lock would leave this store holding a lock that no later open
/// meets, so the open is tried again on the file now at the path. (A lock
/// file removed *after* the lock is taken lets a second process in: no
/// lock file can prevent that. Leave lock files alone while stores run.)
fn lock_beside(path: &Path) -> Result<std::fs::File, StoreError> {
    lock_beside_with(path, || {})
}

/// [`lock_beside`], calling `locked` between taking a lock and checking
/// that it holds the file at the path (tests replace the file there).
fn lock_beside_with(path: &Path, mut locked: impl FnMut()) -> Result<std::fs::File, StoreError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let io_err = |source| StoreError::Io {
        path: lock_path.clone(),
        source,
    };
    let give_up = std::time::Instant::now() + LOCK_WAIT;
    for _ in 0..LOCK_ATTEMPTS {
        let file = open_lock_file(&lock_path).map_err(io_err)?;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < give_up => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(StoreError::Locked(path.to_path_buf()));
                }
                Err(std::fs::TryLockError::Error(source)) => return Err(io_err(source)),
            }
        }
        locked();
        if holds_file_at(&file, &lock_path).map_err(io_err)? {
            return Ok(file);
        }
    }
    Err(io_err(std::io::Error::other(
        "the lock file was replaced each time it was locked",
    )))
}

/// Opens the lock file at `path`, creating it, never through a symbolic
/// link: on Unix the open itself refuses one (`O_NOFOLLOW`), so a link
/// planted there at any moment cannot make it create or open a file
/// elsewhere; elsewhere a check just before the open is all there is.
fn open_lock_file(path: &Path) -> std::io::Result<std::fs::File> {
    #[cfg(not(unix))]
    refuse_link(path)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    io::private(&mut options);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    // A link makes the open fail (with an error that differs between
    // systems): say what is wrong.
    options
        .open(path)
        .map_err(|e| refuse_link(path).err().unwrap_or(e))
}

/// Refuses a symbolic link at `path`; nothing there is fine.
fn refuse_link(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the lock file is a symbolic link; remove it",
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether `file` is the file (not a link) at `path` now.
#[cfg(unix)]
fn holds_file_at(file: &std::fs::File, path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = file.metadata()?;
    match std::fs::symlink_metadata(path) {
        Ok(there) => Ok(!there.file_type().is_symlink()
            && there.dev() == held.dev()
            && there.ino() == held.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Elsewhere than Unix, std has no stable file identity to compare; the
/// link check before the open is all there is.
#[cfg(not(unix))]
fn holds_file_at(_file: &std::fs::File, _path: &Path) -> std::io::Result<bool> {
    Ok(true)
}

/// Creates an empty store file, whole or not at all: the header is written
/// and fsynced under the temporary name, then renamed into place and the
/// directory fsynced. So a file at `path` shorter than a header was cut
/// short by something other than a crash of this store, and is reported as
/// damage rather than taken for a new store.
fn create_fresh(fs: &dyn Fs, path: &Path) -> Result<Box<dyn FsFile>, StoreError> {
    let io_err = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let temp = temp_path(path);
    // As in a rewrite: whatever is at the temporary name goes first, and the
    // new file is created there, never opened through a link.
    fs.remove(&temp).map_err(io_err)?;
    let mut file = fs.create_new(&temp).map_err(io_err)?;
    file.append(&format::header()).map_err(io_err)?;
    file.sync().map_err(io_err)?;
    drop(file);
    fs.rename(&temp, path).map_err(io_err)?;
    fs.sync_dir(parent(path)).map_err(io_err)?;
    fs.open_append(path).map_err(io_err)
}

enum Loaded {
    /// No header yet (a creation cut short): start afresh.
    Fresh,
    Log {
        valid_len: u64,
        dropped: u64,
        records: u64,
        entries: u64,
        /// What the header's slots said.
        synced: Synced,
    },
}

/// Replays the file into `index`.
fn load(
    reader: Box<dyn Read + Send>,
    path: &Path,
    index: &MemoryStore,
) -> Result<Loaded, StoreError> {
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let io_err = |source| io_error(path, source);
    let corrupt = |offset, reason| corruption(path, offset, reason);
    let mut header = Vec::with_capacity(HEADER_LEN);
    (&mut reader)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut header)
        .map_err(io_err)?;
    let synced = match format::check_header(&header) {
        HeaderCheck::Valid(synced) => synced,
        HeaderCheck::Unfinished => {
            // An empty file (one a host created for the store, say) holds
            // nothing: start afresh. A store file is created whole (see
            // `create_fresh`), so a part of a header is a file cut short:
            // damage, which would lose every key if taken for a new store.
            return if header.is_empty() {
                Ok(Loaded::Fresh)
            } else {
                Err(corrupt(
                    0,
                    "the file is shorter than a store header: cut short (move it away to start afresh)",
                ))
            };
        }
        HeaderCheck::OtherVersion(version) => {
            // Not damage: a whole, valid header of another version. The
            // reason says which way, so an admin does not take a newer
            // store for a broken one.
            return Err(corrupt(
                0,
                match version {
                    1 => {
                        "a store file of format version 1, which this build no longer reads \
                         (it reads version 2): export its keys with the keyward that wrote it, \
                         then import them"
                    }
                    v if v > format::FORMAT_VERSION => {
                        "a store file of a later format version than this build reads \
                         (version 2): open it with a newer keyward"
                    }
                    _ => "a store file of an unknown format version (this build reads version 2)",
                },
            ));
        }
        HeaderCheck::Invalid => {
            return Err(corrupt(0, "not a keyward store, or a bad file header"));
        }
    };
    // Parsing JSON is most of the cost of an open: the reader checks each
    // record here, parser threads decode them, and one thread applies them
    // in file order. At the first record that does not decode (in file
    // order) the applier returns; the parsers then fail to send and return,
    // the last one dropping the queue of jobs, and the reader fails to send
    // and returns: the file is not read on past what is in flight.
    // Size the index for the keys the file can hold, so that loading
    // them does not grow each table step by step (dozens of rebuilds a
    // shard at a million keys); `fit` below gives back what the estimate
    // overshot. A stored key takes more than `BYTES_PER_KEY_AT_LEAST`
    // bytes of the file (268 for the bench's keys). The length is the
    // header's, capped by the file's own: a damaged or cut-short file must
    // fail as corrupt, not size the index for keys it does not hold. (A
    // log of many versions of few keys is sized for more keys than it
    // holds, in proportion to its length, until `fit`.)
    let on_disk = std::fs::metadata(path).map_or(0, |m| m.len());
    let estimate = synced.len.min(on_disk) / BYTES_PER_KEY_AT_LEAST;
    index.reserve(usize::try_from(estimate).unwrap_or(0));
    let (work, jobs) = mpsc::sync_channel::<Job>(PARSE_QUEUE);
    let jobs = Arc::new(Mutex::new(jobs));
    let (parsed_tx, parsed_rx) = mpsc::sync_channel::<Parsed>(PARSE_QUEUE);
    std::thread::scope(|scope| {
        let mut parsers = Vec::with_capacity(PARSERS);
        for _ in 0..PARSERS {
            let (jobs, parsed_tx) = (Arc::clone(&jobs), parsed_tx.clone());
            parsers.push(scope.spawn(move || {
                loop {
                    let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    let Ok((seq, offset, payload)) = job else {
                        break;
                    };
                    #[cfg(test)]
                    tests::panic_if_asked(&payload);
                    let batch =
                        serde_json::from_slice::<Vec<Entry>>(&payload)
                            .ok()
                            .map(|entries| {
                                entries
                                    .into_iter()
                                    .map(|entry| match entry {
                                        Entry::Put(key) => Decoded::Put(Arc::new(key)),
                                        Entry::Remove(id) => Decoded::Remove(id),
                                        Entry::Settings(s) => Decoded::Settings(s),
                                    })
                                    .collect()
                            });
                    if parsed_tx.send((seq, offset, batch)).is_err() {
                        break;
                    }
                }
            }));
        }
        drop((jobs, parsed_tx));
        let applier = scope.spawn(move || apply_in_order(parsed_rx, index));
        let outcome = read_records(&mut reader, path, synced.len, format::MAX_TORN_TAIL, work);
        // A thread that panicked is a bug of ours, not damage: the records
        // after the one it held were not applied (or not all), so the open
        // fails, and says so, rather than report a damaged file or open
        // without them. Every thread is joined, so none is left running.
        let applied = applier.join();
        let parsers_panicked = parsers
            .into_iter()
            .map(|parser| parser.join())
            .filter(Result::is_err)
            .count();
        let (Ok((entries, undecodable)), 0) = (applied, parsers_panicked) else {
            return Err(StoreError::Backend(
                format!(
                    "a thread decoding {} panicked (a keyward bug; its message went to the \
                     panic hook): the open stopped; the file is not known to be damaged",
                    path.display()
                )
                .into(),
            ));
        };
        // A record that decodes to nothing is damage wherever it is; the
        // reader's own error then only says that it was stopped.
        if let Some(offset) = undecodable {
            return Err(corrupt(offset, "undecodable record"));
        }
        let (valid_len, dropped, records) = outcome?;
        index.fit();
        Ok(Loaded::Log {
            valid_len,
            dropped,
            records,
            entries,
            synced,
        })
    })
}

/// Fewer bytes than any stored key takes in a store file, for sizing the
/// index from the file's length (see `load`): a record's JSON holds its
/// 76-character hash, id, hint, owner, times and scopes.
const BYTES_PER_KEY_AT_LEAST: u64 = 192;

fn io_error(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corruption(path: &Path, offset: u64, reason: &'static str) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    }
}

/// Threads that decode records while a store opens.
const PARSERS: usize = 2;
/// Records in flight between the reader, the parsers and the applier.
const PARSE_QUEUE: usize = 8;

/// Reads and checks records, handing each valid payload (with its offset)
/// to `work`. Returns the valid length, the bytes of a torn tail dropped,
/// and the number of records; damage before the tail is an error, and so
/// is any in the file's first `synced` bytes, which were durable before
/// the last write began, and so is an invalid record past them with more
/// than `max_tail` bytes from its start to the end of the file (the most
/// one write leaves: `format::MAX_TORN_TAIL`), found without reading on.
fn read_records(
    reader: &mut BufReader<Box<dyn Read + Send>>,
    path: &Path,
    synced: u64,
    max_tail: u64,
    work: mpsc::SyncSender<Job>,
) -> Result<(u64, u64, u64), StoreError> {
    let io_err = |source| io_error(path, source);
    let corrupt = |offset, reason| corruption(path, offset, reason);
    let mut offset = HEADER_LEN as u64;
    let mut records = 0u64;
    loop {
        let mut head = Vec::with_capacity(RECORD_HEAD_LEN);
        (&mut *reader)
            .take(RECORD_HEAD_LEN as u64)
            .read_to_end(&mut head)
            .map_err(io_err)?;
        if head.is_empty() {
            if offset < synced {
                return Err(corrupt(offset, "file ends inside its synced part"));
            }
            return Ok((offset, 0, records));
        }
        let parsed = head
            .first_chunk::<RECORD_HEAD_LEN>()
            .and_then(format::parse_head);
        let mut valid = false;
        let mut payload = Vec::new();
        if let Some(h) = parsed {
            // Reads at most what the file holds, whatever the length field.
            (&mut *reader)
                .take(u64::from(h.len))
                .read_to_end(&mut payload)
                .map_err(io_err)?;
            valid = format::payload_matches(h, &payload);
        }
        if !valid {
            if offset < synced {
                return Err(corrupt(
                    offset,
                    "damaged record in the synced part of the file",
                ));
            }
            // Whole by its own length, yet wrong, with bytes after it: not a
            // write cut short (only the last write can be), but damage.
            let complete = parsed.is_some_and(|h| payload.len() == h.len as usize);
            let mut tail = head;
            tail.extend_from_slice(&payload);
            let record_len = tail.len();
            // A write cut short leaves at most one record: the tail is read
            // only up to one byte more than that, never the rest of the file.
            let rest = (max_tail + 1).saturating_sub(record_len as u64);
            (&mut *reader)
                .take(rest)
                .read_to_end(&mut tail)
                .map_err(io_err)?;
            if (complete && tail.len() > record_len) || tail.len() as u64 > max_tail {
                return Err(corrupt(offset, "damaged record followed by more data"));
            }
            if format::valid_record_after_start(&tail) {
                return Err(corrupt(
                    offset,
                    "damaged record followed by committed records",
                ));
            }
            return Ok((offset, tail.len() as u64, records));
        }
        let len = (RECORD_HEAD_LEN + payload.len()) as u64;
        // The parsers are gone only once the applier met a record that
        // does not decode (or panicked): stop reading; `load` reports that
        // record.
        if work.send((records, offset, payload)).is_err() {
            return Err(corrupt(offset, "undecodable record"));
        }
        records += 1;
        offset += len;
    }
}

/// Applies decoded batches to `index` in file order (parsers finish out of
/// order). Returns the entries applied and the offset of the first record
/// that did not decode, if any: it returns there, dropping `parsed` (which
/// stops the parsers), and nothing from that record on is applied.
///
/// A record stamped with a later revoke-all epoch than the settings the
/// file ends with (0 without settings) is brought back in line, as an
/// import does: no write makes one (a key takes its ring's epoch, which
/// never passes the store's), and as it stands it would outlive every
/// `revoke_all`. The pass over the records runs only if one is found.
fn apply_in_order(parsed: mpsc::Receiver<Parsed>, index: &MemoryStore) -> (u64, Option<u64>) {
    let mut waiting: BTreeMap<u64, (u64, Option<Vec<Decoded>>)> = BTreeMap::new();
    let mut next = 0u64;
    let mut entries = 0u64;
    let mut highest_epoch = 0u64;
    for (seq, offset, batch) in parsed {
        waiting.insert(seq, (offset, batch));
        while let Some((offset, batch)) = waiting.remove(&next) {
            next += 1;
            let Some(batch) = batch else {
                return (entries, Some(offset));
            };
            for entry in batch {
                entries += 1;
                match entry {
                    Decoded::Put(key) => {
                        highest_epoch = highest_epoch.max(key.key.epoch);
                        index.put_shared(key);
                    }
                    Decoded::Remove(id) => {
                        #[cfg(test)]
                        tests::panic_if_asked_to_remove(id);
                        index.apply_checked(Change::Remove(id));
                    }
                    Decoded::Settings(s) => index.apply_checked(Change::Settings(s)),
                }
            }
        }
    }
    // A `MemoryStore` reads and lists without failing.
    let epoch = index.load_settings().ok().flatten().map_or(0, |s| s.epoch);
    if highest_epoch > epoch {
        for key in index.list(None).unwrap_or_default() {
            if key.key.epoch > epoch {
                index.put_shared(Arc::new(key.revised(|k| k.epoch = epoch)));
            }
        }
    }
    (entries, None)
}

/// A decoded record: its place in the file, its offset, its entries (none
/// if it did not decode).
type Parsed = (u64, u64, Option<Vec<Decoded>>);

/// A decoded entry, its record already allocated where it was decoded.
enum Decoded {
    Put(Arc<StoredKey>),
    Remove(KeyId),
    Settings(RingSettings),
}
/// A record to decode: its place in the file, its offset, its payload.
type Job = (u64, u64, Vec<u8>);

/// Writes the whole of any store in the export format of
/// [`FileStore::export`]: one JSON line with the version, the number of
/// keys and the settings, then one line per key (record and hash, never a
/// secret), in id order. A `FileStore` reads it
/// back with [`FileStore::import`]. The records are the store's
/// [`snapshot`](KeyStore::snapshot): taken while keys are rotated, they
/// hold each rotation whole or not at all. The settings are read after
/// the records, so a `revoke_all` that lands meanwhile revokes, in the
/// export, the records it revoked in the store.
///
/// # Errors
///
/// The store's own errors from [`snapshot`](KeyStore::snapshot) and
/// [`load_settings`](KeyStore::load_settings), before anything is written;
/// then, as for [`FileStore::export`], [`StoreError::Io`] with the path
/// `<export>` for an error of `out` and [`StoreError::Backend`] if a record
/// does not encode.
pub fn export(store: &dyn KeyStore, out: impl Write) -> Result<(), StoreError> {
    Snapshot::of(store)?.write(out)
}

/// What an export writes: the settings and the records, in id order.
struct Snapshot {
    header: ExportHeader,
    keys: Vec<Arc<StoredKey>>,
}

impl Snapshot {
    /// Reads the records before the settings: a `revoke_all` (a settings
    /// write) landing between the two reads then shows in the settings,
    /// revoking the records stamped before it. Read the other way round,
    /// the export would pair those records with the epoch they were
    /// stamped with, and an import would bring them back active. (No
    /// record can carry a later epoch than settings read after it.)
    fn of(store: &dyn KeyStore) -> Result<Snapshot, StoreError> {
        // Not `list`, which may see a batch half applied.
        let mut keys = store.snapshot()?;
        let header = ExportHeader {
            keyward_export: EXPORT_VERSION,
            keys: Some(keys.len() as u64),
            settings: store.load_settings()?,
        };
        keys.sort_by_key(|k| k.id());
        Ok(Snapshot { header, keys })
    }

    /// Each line is encoded whole before it is written, so that an error
    /// of `out` is always an i/o error named `<export>` (never an encoding
    /// error) and `out` is handed one `write_all` per line.
    fn write(&self, mut out: impl Write) -> Result<(), StoreError> {
        let io_err = |source| StoreError::Io {
            path: PathBuf::from("<export>"),
            source,
        };
        let json = |e| StoreError::Backend(Box::new(e));
        let mut line = Vec::new();
        serde_json::to_writer(&mut line, &self.header).map_err(json)?;
        line.push(b'\n');
        out.write_all(&line).map_err(io_err)?;
        for key in &self.keys {
            line.clear();
            serde_json::to_writer(&mut line, &**key).map_err(json)?;
            line.push(b'\n');
            out.write_all(&line).map_err(io_err)?;
        }
        out.flush().map_err(io_err)
    }
}

/// A parse error of an export line, which can quote the line's values:
/// as [`crate::error::echo`] shows them, so a key pasted into a field of an
/// edited export does not reach the message. serde_json places the error
/// in the one line it was given ("at line 1 column N"), which would
/// contradict the line the import names: only the column is kept, after
/// the cut, so that a long message keeps it too.
fn quoted(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&position) {
        Some(message) => format!(
            "{} (column {})",
            crate::error::echo(message, 256),
            e.column()
        ),
        None => crate::error::echo(&text, 256),
    }
}

/// Refuses an export of another ring than the one that claimed this store
/// (its settings `own`): one store holds one ring's keys (see
/// [`Error::StoreOfAnotherRing`](crate::Error::StoreOfAnotherRing)). The
/// export's settings must not name another prefix or pepper check, and its
/// keys' hints must be of the store's prefix (an export whose settings do
/// not say, written before keyward kept them or without settings, is told
/// by its keys). Settings that do not say take the store's claim, which
/// their keys have just been held to. `lines` are the keys' lines.
fn same_ring(
    own: &RingSettings,
    export: Option<&mut RingSettings>,
    keys: &[StoredKey],
    lines: &[usize],
) -> Result<(), StoreError> {
    let invalid = |line: usize, reason: &str| StoreError::InvalidImport {
        line,
        reason: reason.into(),
    };
    if let Some(export) = export {
        match export.other_ring(own.prefix.as_deref(), own.check.as_ref()) {
            Some(OtherRing::Prefix) => {
                return Err(invalid(
                    1,
                    "the export holds the keys of another prefix than this store's ring",
                ));
            }
            Some(OtherRing::Pepper) => {
                return Err(invalid(
                    1,
                    "the export's keys were hashed under another pepper than this store's ring's",
                ));
            }
            None => {}
        }
        if export.prefix.is_none() {
            export.prefix.clone_from(&own.prefix);
        }
        if export.check.is_none() {
            export.check.clone_from(&own.check);
        }
    }
    if let Some(prefix) = own.prefix.as_deref()
        && let Some((_, &line)) = keys
            .iter()
            .zip(lines)
            .find(|(key, _)| !crate::token::hint_is_of(key.key().hint(), prefix))
    {
        return Err(invalid(
            line,
            "the key is of another prefix than this store's ring (see its hint)",
        ));
    }
    Ok(())
}

/// Reads line `n` of an export into `buf`, without its line break (`\n`
/// or `\r\n`); `None` at the end of the input. A line longer than
/// [`MAX_IMPORT_LINE`] is refused once that many bytes and a line break's
/// are read: the rest of it is never read, so no input can make the
/// import hold more than one such line in memory.
fn read_line<'b>(
    input: &mut impl BufRead,
    buf: &'b mut Vec<u8>,
    n: usize,
) -> Result<Option<&'b str>, StoreError> {
    let invalid = |reason: String| StoreError::InvalidImport { line: n, reason };
    buf.clear();
    // The reader is the host's, and its error may quote what it read: shown
    // as every echo of the input is.
    let read = (&mut *input)
        .take(MAX_IMPORT_LINE as u64 + 2)
        .read_until(b'\n', buf)
        .map_err(|e| invalid(crate::error::echo(&e.to_string(), 256)))?;
    if read == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    if buf.len() > MAX_IMPORT_LINE {
        return Err(invalid(format!(
            "the line is longer than {MAX_IMPORT_LINE} bytes, more than any export writes"
        )));
    }
    std::str::from_utf8(buf)
        .map(Some)
        .map_err(|_| invalid("stream did not contain valid UTF-8".into()))
}

/// Reads and checks a whole export: its settings, its keys and the line of
/// each key.
#[allow(clippy::type_complexity)]
fn read_export(
    input: impl Read,
) -> Result<(Option<RingSettings>, Vec<StoredKey>, Vec<usize>), StoreError> {
    let invalid = |line: usize, reason: String| StoreError::InvalidImport { line, reason };
    let mut input = BufReader::new(input);
    let mut buf = Vec::new();
    let first =
        read_line(&mut input, &mut buf, 1)?.ok_or_else(|| invalid(1, "empty input".into()))?;
    // The version first, alone: another version's header may hold fields
    // or settings this one cannot read, and the error must say that the
    // export is of another version, not that a field is unknown.
    let version: ExportVersion = serde_json::from_str(first).map_err(|e| invalid(1, quoted(&e)))?;
    if !(1..=EXPORT_VERSION).contains(&version.keyward_export) {
        return Err(invalid(
            1,
            format!("unknown export version {}", version.keyward_export),
        ));
    }
    let header: ExportHeader = serde_json::from_str(first).map_err(|e| invalid(1, quoted(&e)))?;
    match (version.keyward_export, header.keys) {
        (1, Some(_)) => {
            return Err(invalid(
                1,
                "an export of version 1 has no key count (`keys` came with version 2)".into(),
            ));
        }
        (2.., None) => {
            return Err(invalid(
                1,
                "the key count is missing (`keys`, the number of key lines that follow)".into(),
            ));
        }
        _ => {}
    }
    // The settings are checked before the keys are read: an import names
    // its first bad line.
    // A default no call could set: a period that is not positive.
    if let Some(settings) = &header.settings
        && let crate::ExpiryPolicy::Lifetime(d) | crate::ExpiryPolicy::Idle(d) =
            settings.default_expiry
        && !d.is_positive()
    {
        return Err(invalid(
            1,
            "a default expiry period must be positive".into(),
        ));
    }
    // The same for the defaults kept as superseded, which a change of the
    // default wrote after the one it replaced had been in force.
    if let Some(settings) = &header.settings
        && settings.superseded.iter().any(|s| {
            matches!(
                s.policy,
                crate::ExpiryPolicy::Lifetime(d) | crate::ExpiryPolicy::Idle(d)
                    if !d.is_positive()
            )
        })
    {
        // (A superseded default may end before it began: the clock can
        // step back between two changes.)
        return Err(invalid(
            1,
            "a superseded default period must be positive".into(),
        ));
    }
    // Not allocated by the count, which is outside input.
    let mut keys = Vec::new();
    let mut lines_of_keys = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut n = 1;
    loop {
        n += 1;
        let Some(line) = read_line(&mut input, &mut buf, n)? else {
            break;
        };
        if line.trim().is_empty() {
            continue;
        }
        if let Some(count) = header.keys
            && keys.len() as u64 == count
        {
            return Err(invalid(
                n,
                format!("a key line past the {count} the header counts"),
            ));
        }
        let key: StoredKey = serde_json::from_str(line).map_err(|e| invalid(n, quoted(&e)))?;
        // The limits `issue` and `update` hold a key to hold here too: an
        // edited export must not bring in what no call could write.
        key.key()
            .check_fields()
            .map_err(|reason| invalid(n, reason.into()))?;
        if !seen.insert(key.id()) {
            return Err(invalid(n, format!("key id {} appears twice", key.id())));
        }
        keys.push(key);
        lines_of_keys.push(n);
    }
    if let Some(count) = header.keys
        && (keys.len() as u64) < count
    {
        // The line where the next key was due.
        return Err(invalid(
            n,
            format!(
                "the export ends after {} of the {count} key lines its header counts: it was cut short",
                keys.len()
            ),
        ));
    }
    Ok((header.settings, keys, lines_of_keys))
}
