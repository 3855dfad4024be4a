//! FileStore against real processes: the exclusive lock, and a writer killed
//! with SIGKILL at random moments. The child side of each test is an
//! ignored test that the parent runs in a child process.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyward::time::Duration as Span;
use keyward::{
    FileStore, KeyId, KeyRing, KeyState, KeyStore, ListFilter, NewKey, StoreError, VerifyError,
};

const PEPPER: [u8; 32] = *b"kill test pepper, not a secret!!";

fn spawn_child(test: &str, env: (&str, &Path)) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            test,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env.0, env.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn ring_on(store: FileStore) -> KeyRing<FileStore> {
    KeyRing::builder("kill")
        .pepper(PEPPER)
        .flush_interval(None)
        .build(store)
        .unwrap()
}

#[test]
fn a_second_open_in_this_process_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    let first = FileStore::open(&path).unwrap();
    match FileStore::open(&path) {
        Err(StoreError::Locked(p)) => assert_eq!(p, path),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_eq!(
        FileStore::open(&path).unwrap_err().to_string(),
        format!("store {} is locked by another open store", path.display())
    );
    drop(first);
    if let Err(e) = open_waiting_out_forks(&path) {
        panic!("the lock is not released with the store: {e}");
    }
}

/// `FileStore::open`, retried for up to 2 s while it finds the store
/// locked: another test in this binary may be between fork and exec, its
/// child sharing a lock descriptor of ours for a moment. The first other
/// answer, or `Locked` once the time is up.
fn open_waiting_out_forks(path: &std::path::Path) -> Result<FileStore, StoreError> {
    let give_up = Instant::now() + Duration::from_secs(2);
    loop {
        match FileStore::open(path) {
            Err(StoreError::Locked(_)) if Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(5))
            }
            other => return other,
        }
    }
}

#[test]
#[ignore = "child process of a_store_held_by_another_process_is_locked_out"]
fn lock_child() {
    let Some(path) = std::env::var_os("KEYWARD_LOCK_CHILD") else {
        return;
    };
    let _store = FileStore::open(PathBuf::from(path)).unwrap();
    // A fresh line: the harness has printed "test lock_child ... " already.
    println!("\nKW locked");
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_store_held_by_another_process_is_locked_out_until_it_dies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    let mut child = spawn_child("lock_child", ("KEYWARD_LOCK_CHILD", &path));
    let reader = BufReader::new(child.stdout.take().unwrap());
    let first = reader
        .lines()
        .map(Result::unwrap)
        .find(|l| l.starts_with("KW "));
    assert_eq!(first.as_deref(), Some("KW locked"));
    assert!(matches!(FileStore::open(&path), Err(StoreError::Locked(_))));
    child.kill().unwrap();
    child.wait().unwrap();
    FileStore::open(&path).expect("the lock dies with its holder");
}

/// The child: issue, rotate and revoke in a loop, printing each operation
/// once it has returned `Ok` (acknowledged).
#[test]
#[ignore = "child process of acknowledged_writes_survive_sigkill"]
fn kill_child() {
    let Some(dir) = std::env::var_os("KEYWARD_KILL_DIR") else {
        return;
    };
    let ring = ring_on(FileStore::open(Path::new(&dir).join("keys.kw")).unwrap());
    // A fresh line: the harness has printed "test kill_child ... " already.
    println!();
    let mut live: Vec<KeyId> = ring
        .list(&ListFilter::new().state(KeyState::Active))
        .unwrap()
        .into_iter()
        .filter(|k| k.rotation().is_none_or(|r| r.rotated_to.is_none()))
        .map(|k| k.id())
        .collect();
    for i in 0u64.. {
        let pick = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) as usize;
        match i % 4 {
            0 | 1 => {
                let issued = ring.issue(NewKey::new(format!("owner{}", i % 5))).unwrap();
                println!("KW issued {} {}", issued.key.id(), issued.secret.expose());
                live.push(issued.key.id());
            }
            2 if !live.is_empty() => {
                let old = live.swap_remove(pick % live.len());
                let new = ring.rotate(old, Span::days(1)).unwrap();
                println!("KW rotated {old} {} {}", new.key.id(), new.secret.expose());
                live.push(new.key.id());
            }
            _ if !live.is_empty() => {
                let id = live.swap_remove(pick % live.len());
                ring.revoke(id, "kill test").unwrap();
                println!("KW revoked {id}");
            }
            _ => {}
        }
    }
}

/// What the parent knows was acknowledged, and what earlier rounds left
/// visible beyond it (an unacknowledged operation that reached the disk
/// becomes part of the state the next round starts from).
#[derive(Default)]
struct Acked {
    seen_keys: BTreeSet<String>,
    seen_revoked: BTreeSet<String>,
    seen_rotated: BTreeMap<String, String>,
    /// id -> secret, for every key whose creation was acknowledged.
    secrets: BTreeMap<String, String>,
    revoked: BTreeSet<String>,
    /// old id -> new id.
    rotated: BTreeMap<String, String>,
}

impl Acked {
    fn take(&mut self, line: &str) {
        let Some(line) = line.strip_prefix("KW ") else {
            return; // the test harness's own output
        };
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["issued", id, secret] => {
                self.secrets.insert((*id).into(), (*secret).into());
            }
            ["rotated", old, new, secret] => {
                self.secrets.insert((*new).into(), (*secret).into());
                self.rotated.insert((*old).into(), (*new).into());
            }
            ["revoked", id] => {
                self.revoked.insert((*id).into());
            }
            _ => panic!("unexpected line from the child: {line:?}"),
        }
    }
}

fn kill_rounds() -> usize {
    std::env::var("KEYWARD_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Acked::default();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..kill_rounds() {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let wanted = 1 + (rng % 25) as usize;
        let mut child = spawn_child("kill_child", ("KEYWARD_KILL_DIR", dir.path()));
        let mut out = child.stdout.take().unwrap();
        // Read acknowledgements until `wanted`, then SIGKILL mid-stream.
        let mut buffer = Vec::new();
        let started = Instant::now();
        let mut chunk = [0u8; 4096];
        while count_acks(&buffer) < wanted && started.elapsed() < Duration::from_secs(30) {
            let n = out.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        child.kill().unwrap();
        child.wait().unwrap();
        out.read_to_end(&mut buffer).unwrap();
        // Only complete lines were acknowledged.
        let text = String::from_utf8(buffer).unwrap();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .filter(|l| !l.is_empty())
            .for_each(|l| acked.take(l));

        let store = FileStore::open(dir.path().join("keys.kw"))
            .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        check_round(round, &store, &mut acked);
        let ring = ring_on(store);
        for (id, secret) in &acked.secrets {
            let outcome = ring.verify(secret);
            // Revoked by an acknowledged operation, or by the one
            // unacknowledged operation that reached the disk (checked above).
            if acked.revoked.contains(id) || acked.seen_revoked.contains(id) {
                assert_eq!(
                    outcome.unwrap_err(),
                    VerifyError::Revoked,
                    "round {round}: revoked key {id}"
                );
            } else {
                assert!(
                    outcome.is_ok(),
                    "round {round}: acknowledged key {id}: {outcome:?}"
                );
            }
        }
    }
}

fn count_acks(buffer: &[u8]) -> usize {
    // Complete lines only: the last piece has no newline yet.
    let pieces: Vec<&[u8]> = buffer.split(|&b| b == b'\n').collect();
    pieces[..pieces.len() - 1]
        .iter()
        .filter(|l| l.starts_with(b"KW "))
        .count()
}

/// The store holds every acknowledged operation and at most one more, whole.
fn check_round(round: usize, store: &FileStore, acked: &mut Acked) {
    let keys = store.list(None).unwrap();
    let by_id: BTreeMap<String, _> = keys
        .iter()
        .map(|k| (k.id().to_string(), k.clone()))
        .collect();
    for id in acked.secrets.keys() {
        assert!(
            by_id.contains_key(id),
            "round {round}: acknowledged key {id} is missing"
        );
    }
    let known_keys: BTreeSet<&String> = acked.secrets.keys().chain(&acked.seen_keys).collect();
    let extra_keys = by_id.keys().filter(|id| !known_keys.contains(id)).count();
    let revoked: BTreeSet<String> = keys
        .iter()
        .filter(|k| matches!(k.key().status(), keyward::Status::Revoked { .. }))
        .map(|k| k.id().to_string())
        .collect();
    assert!(
        acked.revoked.is_subset(&revoked),
        "round {round}: an acknowledged revocation is missing"
    );
    let extra_revoked = revoked
        .iter()
        .filter(|id| !acked.revoked.contains(*id) && !acked.seen_revoked.contains(*id))
        .count();
    let rotated: BTreeMap<String, String> = keys
        .iter()
        .filter_map(|k| {
            Some((
                k.id().to_string(),
                k.key().rotation()?.rotated_to?.to_string(),
            ))
        })
        .collect();
    for (old, new) in &acked.rotated {
        assert_eq!(
            rotated.get(old),
            Some(new),
            "round {round}: acknowledged rotation of {old} is missing"
        );
    }
    let extra_rotated = rotated
        .keys()
        .filter(|id| !acked.rotated.contains_key(*id) && !acked.seen_rotated.contains_key(*id))
        .count();
    // One unacknowledged operation at most: an issue (one extra key), a
    // rotation (one extra key and one extra link, together) or a revocation.
    let extra_ops = extra_revoked + extra_rotated + usize::from(extra_keys > extra_rotated);
    assert!(
        extra_keys <= 1 && extra_ops <= 1,
        "round {round}: {extra_keys} extra keys, {extra_revoked} extra revocations, {extra_rotated} extra rotations"
    );
    assert!(
        extra_keys >= extra_rotated,
        "round {round}: a rotation is visible without its new key"
    );
    // Whole: every rotation link points at a key that exists.
    for (old, new) in &rotated {
        let successor = by_id
            .get(new)
            .unwrap_or_else(|| panic!("round {round}: {old} rotated to missing {new}"));
        assert_eq!(
            successor
                .key()
                .rotation()
                .and_then(|r| r.rotated_from)
                .map(|id| id.to_string())
                .as_deref(),
            Some(old.as_str())
        );
    }
    acked.seen_keys = by_id.keys().cloned().collect();
    acked.seen_revoked = revoked;
    acked.seen_rotated = rotated;
}

#[test]
#[cfg(unix)]
fn a_symlink_to_an_open_store_is_locked_out_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    let link = dir.path().join("alias.kw");
    let _first = FileStore::open(&path).unwrap();
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert!(matches!(FileStore::open(&link), Err(StoreError::Locked(_))));
    let dotted = dir.path().join(".").join("keys.kw");
    assert!(matches!(
        FileStore::open(&dotted),
        Err(StoreError::Locked(_))
    ));
}

#[test]
#[cfg(unix)]
fn a_store_opened_through_a_dangling_link_locks_its_target() {
    use std::os::unix::fs::symlink;
    // links/alias.kw -> ../hop.kw -> data/keys.kw, which does not exist yet;
    // each relative target is relative to its link's directory.
    let dir = tempfile::tempdir().unwrap();
    for sub in ["data", "links"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    let target = dir.path().join("data").join("keys.kw");
    let hop = dir.path().join("hop.kw");
    let alias = dir.path().join("links").join("alias.kw");
    symlink("data/keys.kw", &hop).unwrap();
    symlink("../hop.kw", &alias).unwrap();

    let first = FileStore::open(&alias).unwrap();
    assert!(
        target.is_file(),
        "the open did not create the link's target"
    );
    for other in [&target, &hop, &alias] {
        match FileStore::open(other) {
            Err(StoreError::Locked(_)) => {}
            other_open => panic!(
                "a second open of the store through {} was not refused: {:?}",
                other.display(),
                other_open.map(|s| s.path().to_owned())
            ),
        }
    }
    assert_eq!(first.path(), std::fs::canonicalize(&target).unwrap());
}

/// The child: opens the store named by a bare file name, relative to its
/// working directory, then the same store spelled `./<name>` and by its
/// absolute path, printing what each open did.
#[test]
#[ignore = "child process of a_bare_file_name_is_a_store_in_the_working_directory"]
fn bare_name_child() {
    let Some(name) = std::env::var_os("KEYWARD_BARE_NAME_CHILD") else {
        return;
    };
    let name = PathBuf::from(name);
    let shown = |open: Result<FileStore, StoreError>| match open {
        Ok(store) => format!("open {}", store.path().display()),
        Err(StoreError::Locked(_)) => "locked".to_owned(),
        Err(e) => format!("error {e:?}"),
    };
    let first = FileStore::open(&name);
    let first_shown = match &first {
        Ok(store) => format!("open {}", store.path().display()),
        Err(e) => format!("error {e:?}"),
    };
    let dotted = shown(FileStore::open(Path::new(".").join(&name)));
    let absolute = shown(FileStore::open(
        std::env::current_dir().unwrap().join(&name),
    ));
    // A fresh line: the harness has printed "test bare_name_child ... ".
    println!("\nKW {first_shown}\nKW {dotted}\nKW {absolute}");
}

/// A store named by a bare file name (`keys.kw`, no directory) is the file
/// of that name in the working directory, locked for every spelling of
/// it. (The child runs in a directory of its own: this process's working
/// directory is left alone.)
#[test]
fn a_bare_file_name_is_a_store_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "bare_name_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KEYWARD_BARE_NAME_CHILD", "keys.kw")
        .current_dir(dir.path())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let said: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("KW "))
        .collect();
    let file = std::fs::canonicalize(dir.path()).unwrap().join("keys.kw");
    assert_eq!(
        said,
        [
            format!("open {}", file.display()).as_str(),
            "locked",
            "locked"
        ],
        "{stdout}"
    );
    assert!(file.is_file());
    assert!(dir.path().join("keys.kw.lock").is_file());
}

#[test]
#[cfg(unix)]
fn store_files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    let store = FileStore::open(&path).unwrap();
    let ring = ring_on(store);
    ring.issue(NewKey::new("o")).unwrap();
    ring.store().compact().unwrap();
    for file in [path.clone(), dir.path().join("keys.kw.lock")] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", file.display());
    }
}

/// A key with a use limit writes its record at every verify. Those writes
/// never rewrite the file (a verify must not wait for a compaction); the
/// ring's flush compacts it once the dead records call for it, and the
/// uses spent survive.
#[test]
fn a_ring_flush_compacts_what_limited_verifies_wrote_and_a_verify_never_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    let options = keyward::store::FileStoreOptions::default().min_dead_to_compact(20);
    let ring = ring_on(FileStore::open_with(&path, options).unwrap());
    let issued = ring.issue(NewKey::new("o").use_limit(100)).unwrap();
    let key = issued.secret.expose().to_string();
    let mut size = std::fs::metadata(&path).unwrap().len();
    for use_ in 1..=60 {
        ring.verify(&key).unwrap();
        let grown = std::fs::metadata(&path).unwrap().len();
        assert!(grown > size, "verify {use_} rewrote the file");
        size = grown;
    }
    ring.flush().unwrap();
    let compacted = std::fs::metadata(&path).unwrap().len();
    // Past the header (three pages, 12288 bytes).
    let header = 3 * 4096;
    assert!(
        (compacted - header) * 10 < size - header,
        "{compacted} bytes after the flush, {size} before"
    );
    drop(ring);
    let ring = ring_on(FileStore::open(&path).unwrap());
    assert_eq!(ring.get(issued.key.id()).unwrap().uses(), 60);
}

/// Opening the store `<name>` removes a leftover `<name>.compact`, and its
/// compaction renames one over `<name>`; its lock is `<name>.lock`. A store
/// under either name could be deleted or moved: the open refuses it, and
/// creates nothing.
#[test]
fn a_store_cannot_take_the_name_of_another_stores_temporary_or_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "keys.kw.compact",
        "keys.kw.lock",
        "keys.compact",
        "x.lock",
        "keys.COMPACT",
        "x.Lock",
    ] {
        let path = dir.path().join(name);
        match FileStore::open(&path) {
            Err(StoreError::Io { path: p, source }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput, "{name}");
                assert_eq!(p.file_name().unwrap(), name);
                assert!(source.to_string().contains(".compact or .lock"), "{source}");
            }
            other => panic!("{name}: expected an InvalidInput error, got {other:?}"),
        }
        assert!(!path.exists(), "{name} was created");
        assert!(!dir.path().join(format!("{name}.lock")).exists());
    }
    // Names that merely contain the words are fine.
    for name in ["keys.compact.kw", "lock", "compact", "keys.locks"] {
        FileStore::open(dir.path().join(name)).unwrap();
    }
}

/// A symbolic link planted as a store's lock file: the open refuses it,
/// creates nothing at its target and names the lock file; once the link
/// is gone the store opens.
#[test]
#[cfg(unix)]
fn a_store_refuses_a_link_as_its_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    let lock = dir.path().join("keys.kw.lock");
    let victim = dir.path().join("victim");
    let nowhere = dir.path().join("nowhere");
    std::fs::write(&victim, b"someone else's").unwrap();
    for target in [&victim, &nowhere] {
        std::os::unix::fs::symlink(target, &lock).unwrap();
        match FileStore::open(&path) {
            Err(StoreError::Io {
                path: named,
                source,
            }) => {
                assert_eq!(named, lock);
                // Said in so many words, not the system's "too many levels
                // of symbolic links" for the refused open.
                assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput);
                assert_eq!(
                    source.to_string(),
                    "the lock file is a symbolic link; remove it"
                );
            }
            other => panic!("{}: {other:?}", target.display()),
        }
        std::fs::remove_file(&lock).unwrap();
    }
    assert!(!nowhere.exists(), "the open created the link's target");
    assert_eq!(std::fs::read(&victim).unwrap(), b"someone else's");
    let store = FileStore::open(&path).unwrap();
    assert!(matches!(FileStore::open(&path), Err(StoreError::Locked(_))));
    drop(store);
}

/// Something other than a link at the lock path that cannot be opened as
/// a file (a directory): the open fails naming the lock file, with the
/// system's own reason, not a claim that it is a symbolic link; it creates
/// no store file.
#[test]
#[cfg(unix)]
fn a_directory_at_the_lock_path_fails_the_open_for_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    let lock = dir.path().join("keys.kw.lock");
    std::fs::create_dir(&lock).unwrap();
    match FileStore::open(&path) {
        Err(StoreError::Io {
            path: named,
            source,
        }) => {
            assert_eq!(named, lock);
            assert_eq!(source.raw_os_error(), Some(libc::EISDIR), "{source}");
            assert!(!source.to_string().contains("symbolic link"), "{source}");
        }
        other => panic!("expected an i/o error, got {other:?}"),
    }
    assert!(!path.exists(), "the failed open created the store file");
}

/// Something planted at the temporary path while the store runs (after
/// the open, which removes leftovers) is removed, never written through:
/// a link to another file leaves that file as it was, a link to nowhere
/// creates nothing there, and a leftover readable by others does not make
/// the compacted store readable by others.
#[test]
#[cfg(unix)]
fn a_compaction_writes_through_nothing_planted_at_its_temporary_path() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    let temp = dir.path().join("keys.kw.compact");
    let victim = dir.path().join("victim");
    let nowhere = dir.path().join("nowhere");
    std::fs::write(&victim, b"not the store's").unwrap();
    let ring = ring_on(FileStore::open(&path).unwrap());
    let issued = ring.issue(NewKey::new("o")).unwrap();

    std::os::unix::fs::symlink(&victim, &temp).unwrap();
    ring.store().compact().unwrap();
    assert!(
        std::fs::read(&victim).unwrap() == b"not the store's",
        "the compaction wrote through a link to another file"
    );

    std::os::unix::fs::symlink(&nowhere, &temp).unwrap();
    ring.store().compact().unwrap();
    assert!(
        !nowhere.exists(),
        "the compaction wrote through a dangling link"
    );

    std::fs::write(&temp, b"left over").unwrap();
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o644)).unwrap();
    ring.store().compact().unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the compacted store is {mode:o}");

    assert!(!temp.exists());
    drop(ring);
    let ring = ring_on(FileStore::open(&path).unwrap());
    assert_eq!(
        ring.verify(issued.secret.expose()).unwrap().key().id(),
        issued.key.id()
    );
}

/// An export writes its records after it has let go of the store's write
/// lock: a slow destination (a pipe, a network copy) holds up no write.
/// The export is still the snapshot it took.
#[test]
fn a_slow_export_holds_up_no_write() {
    /// Issues a key through the ring on another thread at its first write,
    /// and notes whether that issue finished within 5 s meanwhile.
    /// (A detached thread: with the lock held, it finishes only after the
    /// export, and the test fails rather than hangs.)
    struct Slow {
        ring: std::sync::Arc<KeyRing<FileStore>>,
        issued: Option<bool>,
        bytes: Vec<u8>,
    }
    impl std::io::Write for Slow {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.issued.is_none() {
                let (done, finished) = std::sync::mpsc::channel();
                let ring = std::sync::Arc::clone(&self.ring);
                std::thread::spawn(move || {
                    ring.issue(NewKey::new("late")).unwrap();
                    let _ = done.send(());
                });
                self.issued = Some(finished.recv_timeout(Duration::from_secs(5)).is_ok());
            }
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let ring = std::sync::Arc::new(ring_on(
        FileStore::open(dir.path().join("keys.kw")).unwrap(),
    ));
    ring.issue(NewKey::new("early")).unwrap();
    let mut out = Slow {
        ring: std::sync::Arc::clone(&ring),
        issued: None,
        bytes: Vec::new(),
    };
    ring.store().export(&mut out).unwrap();
    assert_eq!(out.issued, Some(true), "the issue waited for the export");
    let text = String::from_utf8(out.bytes).unwrap();
    assert_eq!(text.lines().count(), 2, "settings and the one key: {text}");
    assert!(text.contains("\"early\"") && !text.contains("\"late\""));
    assert_eq!(ring.list(&ListFilter::default()).unwrap().len(), 2);
}

/// An export cut short is refused by an import, wherever the cut falls:
/// in a line (its JSON is not whole) or at a line break, where the lines
/// read are each whole but fewer than the first line counts. (Before the
/// count, an export cut at a line break imported as a whole one without
/// its later keys, and a `Replace` dropped those keys from the store.)
/// Neither mode changes the store. Only the last line break can go: the
/// keys are all there.
#[test]
fn an_export_cut_short_anywhere_is_refused_and_changes_nothing() {
    use keyward::store::ImportMode;

    let dir = tempfile::tempdir().unwrap();
    let ring = ring_on(FileStore::open(dir.path().join("keys.kw")).unwrap());
    for owner in ["a", "b", "c", "d"] {
        ring.issue(NewKey::new(owner)).unwrap();
    }
    let export = |store: &FileStore| {
        let mut out = Vec::new();
        store.export(&mut out).unwrap();
        out
    };
    let whole = export(ring.store());
    let breaks: Vec<usize> = (0..whole.len()).filter(|&i| whole[i] == b'\n').collect();
    assert_eq!(breaks.len(), 5, "a header and four keys");

    // Holds the whole export already: a refused `Replace` would otherwise
    // be told from one that took effect by its keys alone.
    let target = FileStore::open(dir.path().join("target.kw")).unwrap();
    target.import(&whole[..], ImportMode::Replace).unwrap();
    let file_before = std::fs::read(dir.path().join("target.kw")).unwrap();
    for cut in 0..whole.len() - 1 {
        let input = &whole[..cut];
        for mode in [ImportMode::Replace, ImportMode::Merge] {
            match target.import(input, mode) {
                Err(StoreError::InvalidImport { line, reason }) => {
                    // Cut right after the line break that ends the header
                    // and `keys` key lines: named is the line the next key
                    // was due on.
                    if let Some(keys) = breaks.iter().position(|&b| b + 1 == cut) {
                        assert_eq!(line, keys + 2, "cut at {cut}");
                        assert_eq!(
                            reason,
                            format!(
                                "the export ends after {keys} of the 4 key lines its header \
                                 counts: it was cut short"
                            ),
                            "cut at {cut}"
                        );
                    }
                }
                other => panic!("cut at {cut} of {}, {mode:?}: {other:?}", whole.len()),
            }
        }
    }
    assert_eq!(
        std::fs::read(dir.path().join("target.kw")).unwrap(),
        file_before
    );
    assert_eq!(export(&target), whole);
    // Without its last line break the export is whole.
    let fresh = FileStore::open(dir.path().join("fresh.kw")).unwrap();
    fresh
        .import(&whole[..whole.len() - 1], ImportMode::Replace)
        .unwrap();
    assert_eq!(export(&fresh), whole);
}

/// SPEC 8, on a real file through the public API (the byte-level cases run
/// on a simulated disk in the unit tests): a torn tail is dropped and
/// reported, the writes before it kept; damage before the last record is a
/// `Corrupt` error naming the file and an offset at or before the damage,
/// and the store does not open.
#[test]
fn on_a_real_file_a_torn_tail_is_dropped_and_earlier_damage_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    let len = || std::fs::metadata(&path).unwrap().len();
    let mut keys = Vec::new();
    let mut ends = Vec::new();
    {
        let ring = ring_on(FileStore::open(&path).unwrap());
        ends.push(len());
        for owner in ["o1", "o2", "o3"] {
            let issued = ring.issue(NewKey::new(owner)).unwrap();
            ends.push(len());
            keys.push(issued);
        }
    }
    assert!(ends.windows(2).all(|w| w[0] < w[1]), "{ends:?}");
    let whole = std::fs::read(&path).unwrap();
    assert_eq!(whole.len() as u64, ends[3], "the drop wrote more");

    // The last write cut short: dropped, the two before it kept.
    let cut = (ends[2] + ends[3]) / 2;
    std::fs::write(&path, &whole[..cut as usize]).unwrap();
    {
        let store = FileStore::open(&path).unwrap();
        let recovery = store.recovery();
        assert_eq!(recovery.dropped_at, Some(ends[2]));
        assert_eq!(recovery.dropped_bytes, cut - ends[2]);
        let ring = ring_on(store);
        assert!(ring.verify(keys[0].secret.expose()).is_ok());
        assert!(ring.verify(keys[1].secret.expose()).is_ok());
        assert_eq!(
            ring.verify(keys[2].secret.expose()).unwrap_err(),
            VerifyError::Invalid
        );
    }

    // A flipped byte in the middle write, with a committed one after it.
    let flip = (ends[1] + ends[2]) / 2;
    let mut damaged = whole.clone();
    damaged[flip as usize] ^= 0xFF;
    std::fs::write(&path, &damaged).unwrap();
    match FileStore::open(&path) {
        Err(StoreError::Corrupt {
            path: named,
            offset,
            ..
        }) => {
            assert_eq!(named, path);
            assert!(
                (ends[1]..=flip).contains(&offset),
                "damage at {flip} reported at {offset}"
            );
        }
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(store) => panic!(
            "a damaged file opened with {} records",
            store.recovery().records
        ),
    }
    // The file is left as it was found.
    assert_eq!(std::fs::read(&path).unwrap(), damaged);
}

/// A real store file with two keys issued: the directory, the file's
/// path, the first key, and the file's length after it (where the second
/// key's record starts).
fn two_keys_on_a_real_file() -> (tempfile::TempDir, PathBuf, keyward::Issued, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    let ring = ring_on(FileStore::open(&path).unwrap());
    let first = ring.issue(NewKey::new("o1")).unwrap();
    let end = std::fs::metadata(&path).unwrap().len();
    ring.issue(NewKey::new("o2")).unwrap();
    (dir, path, first, end)
}

/// On a real file, the open that drops a torn tail cuts it off the file:
/// the writes after it follow the valid records, and the store reopens
/// with all of them (left on disk, the tail would lie before committed
/// records: damage, and the store would not open).
#[test]
fn on_a_real_file_a_dropped_tail_is_cut_off_before_the_next_write() {
    let (_dir, path, kept, end) = two_keys_on_a_real_file();
    let len = || std::fs::metadata(&path).unwrap().len();
    let cut = (end + len()) / 2;
    let whole = std::fs::read(&path).unwrap();
    std::fs::write(&path, &whole[..cut as usize]).unwrap();

    let store = FileStore::open(&path).unwrap();
    assert_eq!(store.recovery().dropped_at, Some(end));
    assert_eq!(len(), end, "the tail is still on disk");
    let ring = ring_on(store);
    let after = ring.issue(NewKey::new("o3")).unwrap();
    drop(ring);
    let ring = ring_on(FileStore::open(&path).unwrap());
    assert_eq!(ring.store().recovery().dropped_bytes, 0);
    assert!(ring.verify(kept.secret.expose()).is_ok());
    assert!(ring.verify(after.secret.expose()).is_ok());
}

/// On a real file, an open records in a header slot the length it made
/// durable: damage to the last record, once a later open has vouched for
/// it, is a `Corrupt` error, not a torn tail dropped with the write it
/// held.
#[test]
fn on_a_real_file_damage_to_a_record_an_open_vouched_for_is_an_error() {
    let (_dir, path, _, end) = two_keys_on_a_real_file();
    // This open vouches for the whole file.
    drop(FileStore::open(&path).unwrap());
    let mut damaged = std::fs::read(&path).unwrap();
    let flip = (end as usize + damaged.len()) / 2;
    damaged[flip] ^= 0xFF;
    std::fs::write(&path, &damaged).unwrap();
    match FileStore::open(&path) {
        Err(StoreError::Corrupt { offset, .. }) => assert_eq!(offset, end),
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(store) => panic!("opened, dropping {:?}", store.recovery()),
    }
}

/// A merge moves keys without an expiry of their own under the target's
/// default, as a change of the default would, but never brings back one that
/// had expired under the export's: that key arrives with the instant it
/// expired as its own expiry.
#[test]
fn a_merge_does_not_revive_a_key_expired_under_the_exports_default() {
    use keyward::store::{ImportMode, export};
    use keyward::time::macros::datetime;
    use keyward::{ExpiryPolicy, ManualClock};

    let dir = tempfile::tempdir().unwrap();
    let t0 = datetime!(2001-01-01 0:00 UTC);
    let clock = ManualClock::new(t0);
    let source = KeyRing::builder("kill")
        .pepper(PEPPER)
        .clock(clock.clone())
        .default_expiry(ExpiryPolicy::Lifetime(Span::days(1)))
        .flush_interval(None)
        .build(FileStore::open(dir.path().join("source.kw")).unwrap())
        .unwrap();
    let expired = source.issue(NewKey::new("acct")).unwrap();
    let own = source
        .issue(NewKey::new("acct").expiry(ExpiryPolicy::Never))
        .unwrap();
    clock.advance(Span::days(2));
    assert_eq!(
        source.verify(expired.secret.expose()).unwrap_err(),
        VerifyError::Expired
    );
    // A longer default keeps the expired key expired, and a key issued
    // under it lives a century.
    source
        .set_default_expiry(ExpiryPolicy::Lifetime(Span::days(36_500)))
        .unwrap();
    let live = source.issue(NewKey::new("acct")).unwrap();
    let mut out = Vec::new();
    export(source.store(), &mut out).unwrap();

    let target_path = dir.path().join("target.kw");
    drop(
        KeyRing::builder("kill")
            .pepper(PEPPER)
            .clock(clock.clone())
            .flush_interval(None)
            .build(FileStore::open(&target_path).unwrap())
            .unwrap(),
    );
    let target = FileStore::open(&target_path).unwrap();
    let report = target.import(&out[..], ImportMode::Merge).unwrap();
    assert_eq!((report.imported, report.expired), (3, 1));
    let ring = KeyRing::builder("kill")
        .pepper(PEPPER)
        .clock(clock.clone())
        .flush_interval(None)
        .build(target)
        .unwrap();
    // The target's default is "never": the expired key stays expired, at
    // the instant it expired.
    assert_eq!(
        ring.verify(expired.secret.expose()).unwrap_err(),
        VerifyError::Expired
    );
    assert_eq!(ring.expires_at(expired.key.id()), Some(t0 + Span::days(1)));
    assert!(ring.verify(own.secret.expose()).is_ok());
    // A live key follows the target's default from now on.
    assert!(ring.verify(live.secret.expose()).is_ok());
    assert_eq!(ring.expires_at(live.key.id()), None);
    assert_eq!(ring.get(live.key.id()).unwrap().expiry(), None);
}

/// What a FileStore puts on disk (its file, after writes and after a
/// compaction, its lock file, an export) holds each key's hash and never a
/// secret: no key string, no secret part, no access token, no pepper or
/// signing key, old secrets of a regenerated or rotated key included.
#[test]
fn nothing_on_disk_holds_key_material() {
    const SIGNING: [u8; 32] = *b"file test signing key, not real!";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    let ring = KeyRing::builder("disk")
        .pepper(PEPPER)
        .signing_key(1, SIGNING)
        .flush_interval(None)
        .build(FileStore::open(&path).unwrap())
        .unwrap();
    let mut keys = Vec::new();
    let mut tokens = Vec::new();
    let first = ring.issue(NewKey::new("o").name("n")).unwrap();
    let limited = ring.issue(NewKey::new("o").use_limit(3)).unwrap();
    assert!(ring.verify(limited.secret.expose()).is_ok());
    tokens.push(
        ring.exchange(first.secret.expose(), Span::minutes(5))
            .unwrap()
            .expose()
            .to_owned(),
    );
    let regenerated = ring.regenerate(first.key.id()).unwrap();
    let rotated = ring.rotate(regenerated.key.id(), Span::minutes(5)).unwrap();
    assert!(ring.verify(rotated.secret.expose()).is_ok());
    for issued in [&first, &limited, &regenerated, &rotated] {
        keys.push(issued.secret.expose().to_owned());
    }
    ring.flush().unwrap();
    let mut export = Vec::new();
    ring.store().export(&mut export).unwrap();
    let mut outputs = vec![("export".to_owned(), export)];
    let read_dir = |outputs: &mut Vec<(String, Vec<u8>)>, when: &str| {
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let file = entry.unwrap().path();
            outputs.push((
                format!("{} {when}", file.display()),
                std::fs::read(&file).unwrap(),
            ));
        }
    };
    read_dir(&mut outputs, "after writes");
    ring.store().compact().unwrap();
    read_dir(&mut outputs, "after compaction");
    let hash = ring
        .store()
        .lookup(rotated.key.id())
        .unwrap()
        .hash()
        .to_string();
    let contains =
        |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    for (what, bytes) in &outputs {
        for key in &keys {
            // The secret part: 24 characters before the 6 of the checksum.
            let secret = &key[key.len() - 30..key.len() - 6];
            assert!(!contains(bytes, secret.as_bytes()), "{what} holds a secret");
        }
        for token in &tokens {
            assert!(!contains(bytes, token.as_bytes()), "{what} holds a token");
            let body = &token[token.len() - 40..];
            assert!(
                !contains(bytes, body.as_bytes()),
                "{what} holds a token's MAC"
            );
        }
        assert!(!contains(bytes, &PEPPER), "{what} holds the pepper");
        assert!(!contains(bytes, &SIGNING), "{what} holds the signing key");
    }
    // The hash is what is kept.
    assert!(contains(&outputs[0].1, hash.as_bytes()));
    assert!(
        outputs
            .iter()
            .any(|(what, bytes)| what.ends_with("keys.kw after compaction")
                && contains(bytes, hash.as_bytes()))
    );
}

/// A ring of `prefix` under the pepper `[pepper; 32]`, on the store file
/// `name` in `dir`.
fn peppered_ring(
    dir: &Path,
    prefix: &str,
    pepper: u8,
    name: &str,
) -> Result<KeyRing<FileStore>, keyward::Error> {
    KeyRing::builder(prefix)
        .pepper([pepper; 32])
        .flush_interval(None)
        .build(FileStore::open(dir.join(name)).unwrap())
}

/// One store holds one ring's keys (`Error::StoreOfAnotherRing`), and an
/// import cannot get round it: into a store a ring has claimed, an export
/// of another prefix or pepper is refused, merged or replacing, as its
/// settings say, and so is an export whose settings do not say (written
/// before keyward kept them, or with none) when its keys' hints are of
/// another prefix. The store is left as it was. (A merge took them: the
/// `acme_live` ring then listed and revoked `acme_test`'s keys, which
/// could never verify on it; a replace under a running ring had its
/// settings reload take `acme_test`'s prefix.) A store no ring has claimed
/// takes any export, and an export of the store's own ring is taken.
#[test]
fn an_import_refuses_an_export_of_another_ring() {
    use keyward::store::{ImportMode, export};
    use keyward::{Error, RingSettings};

    let dir = tempfile::tempdir().unwrap();
    let ring = |prefix: &str, pepper: u8, name: &str| {
        peppered_ring(dir.path(), prefix, pepper, name).unwrap()
    };
    let exported = |ring: &KeyRing<FileStore>| {
        let mut out = Vec::new();
        export(ring.store(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    // The export's settings as an older keyward wrote them, or none.
    let unclaimed = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let mut header: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let settings = header["settings"].as_object_mut().unwrap();
        assert!(settings.remove("prefix").is_some() && settings.remove("check").is_some());
        lines[0] = header.to_string();
        lines.join("\n") + "\n"
    };
    let without_settings = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[0] = r#"{"keyward_export":1,"settings":null}"#.to_owned();
        lines.join("\n") + "\n"
    };

    let live = ring("acme_live", 3, "live.kw");
    let mine = live.issue(NewKey::new("customer")).unwrap();
    let before = live.list(&ListFilter::default()).unwrap();
    let settings_before = live.store().load_settings().unwrap();

    let test = ring("acme_test", 3, "test.kw");
    test.issue(NewKey::new("tester")).unwrap();
    let peppered = ring("acme_live", 4, "peppered.kw");
    peppered.issue(NewKey::new("other")).unwrap();
    let foreign = [
        ("another prefix", exported(&test)),
        ("another pepper", exported(&peppered)),
        ("another prefix", unclaimed(&exported(&test))),
        ("another prefix", without_settings(&exported(&test))),
    ];
    for (why, text) in &foreign {
        for mode in [ImportMode::Merge, ImportMode::Replace] {
            match live.store().import(text.as_bytes(), mode) {
                Err(StoreError::InvalidImport { reason, .. }) => {
                    assert!(reason.contains(why), "{mode:?}: {why} not in {reason}")
                }
                other => panic!("{mode:?}, {why}: {other:?}"),
            }
        }
    }
    live.refresh().unwrap();
    assert_eq!(live.settings().prefix(), Some("acme_live"));
    assert_eq!(live.store().load_settings().unwrap(), settings_before);
    let after = live.list(&ListFilter::default()).unwrap();
    assert_eq!(
        after.iter().map(|k| k.id()).collect::<Vec<_>>(),
        before.iter().map(|k| k.id()).collect::<Vec<_>>()
    );

    // A copy of the live ring's own store is taken, merged or replacing,
    // with its settings or with older ones (which keep the store's claim).
    let twin = ring("acme_live", 3, "twin.kw");
    let copied = twin.issue(NewKey::new("copied")).unwrap();
    let own = exported(&twin);
    let report = live
        .store()
        .import(own.as_bytes(), ImportMode::Merge)
        .unwrap();
    assert_eq!(report.imported, 1);
    assert!(live.verify(copied.secret.expose()).is_ok());
    assert!(live.verify(mine.secret.expose()).is_ok());
    live.store()
        .import(unclaimed(&own).as_bytes(), ImportMode::Replace)
        .unwrap();
    assert_eq!(
        live.store()
            .load_settings()
            .unwrap()
            .and_then(|s| s.prefix().map(str::to_owned)),
        Some("acme_live".to_owned())
    );
    assert!(live.verify(copied.secret.expose()).is_ok());
    drop(live);
    let reopened = KeyRing::builder("acme_test")
        .pepper([3; 32])
        .flush_interval(None)
        .build(FileStore::open(dir.path().join("live.kw")).unwrap());
    assert!(matches!(reopened, Err(Error::StoreOfAnotherRing(_))));

    // A store no ring has claimed takes another ring's export.
    let fresh = FileStore::open(dir.path().join("fresh.kw")).unwrap();
    fresh
        .import(exported(&test).as_bytes(), ImportMode::Merge)
        .unwrap();
    let taken: Option<RingSettings> = fresh.load_settings().unwrap();
    assert_eq!(taken.as_ref().and_then(|s| s.prefix()), Some("acme_test"));
}

/// An import neither drops a ring's claim on its store nor hands a store
/// to a ring none of its keys belong to. A `Replace` by an export without
/// settings would leave a claimed store with none: a ring of its prefix
/// under another pepper then took it, and refused every key as `Invalid`.
/// A `Merge` into a store without settings takes the export's, and with
/// them its ring's claim: refused when the store holds keys, none of them
/// of that ring's prefix. Each refusal leaves the store as it was; the
/// same exports are taken where they do not do that.
#[test]
fn an_import_neither_drops_a_stores_claim_nor_hands_it_to_another_ring() {
    use keyward::store::{ImportMode, StoredKey, export};
    use keyward::{Error, KeyStore};

    let dir = tempfile::tempdir().unwrap();
    let ring =
        |prefix: &str, pepper: u8, name: &str| peppered_ring(dir.path(), prefix, pepper, name);
    let exported = |store: &FileStore| {
        let mut out = Vec::new();
        export(store, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let without_settings = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let mut header: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        header["settings"] = serde_json::Value::Null;
        lines[0] = header.to_string();
        lines.join("\n") + "\n"
    };

    let live = ring("acme_live", 3, "live.kw").unwrap();
    let issued = live.issue(NewKey::new("customer")).unwrap();
    let settings = live.store().load_settings().unwrap();
    let bare = without_settings(&exported(live.store()));
    match live.store().import(bare.as_bytes(), ImportMode::Replace) {
        Err(StoreError::InvalidImport { line: 1, reason }) => assert_eq!(
            reason,
            "an export without settings cannot replace those of a store a ring has claimed \
             (merge it, or import it into a new store)"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(live.store().load_settings().unwrap(), settings);
    // Merged, it changes nothing here (its one key is there already).
    let report = live
        .store()
        .import(bare.as_bytes(), ImportMode::Merge)
        .unwrap();
    assert_eq!((report.imported, report.skipped), (0, 1));
    assert_eq!(live.store().load_settings().unwrap(), settings);
    assert!(live.verify(issued.secret.expose()).is_ok());
    drop(live);
    assert!(matches!(
        ring("acme_live", 9, "live.kw"),
        Err(Error::StoreOfAnotherRing(_))
    ));
    // Into a new store, it replaces.
    let new = FileStore::open(dir.path().join("new.kw")).unwrap();
    new.import(bare.as_bytes(), ImportMode::Replace).unwrap();
    assert_eq!(new.len(), 1);

    // A store without settings holding an `acme_test` key, as a host
    // filled it.
    let test = ring("acme_test", 3, "test.kw").unwrap();
    let tester = test.issue(NewKey::new("tester")).unwrap();
    let host = FileStore::open(dir.path().join("host.kw")).unwrap();
    host.insert(StoredKey::clone(
        &test.store().lookup(tester.key.id()).unwrap(),
    ))
    .unwrap();
    let live_export = exported(&FileStore::open(dir.path().join("live.kw")).unwrap());
    match host.import(live_export.as_bytes(), ImportMode::Merge) {
        Err(StoreError::InvalidImport { line: 1, reason }) => assert_eq!(
            reason,
            "the store holds the keys of another prefix than the export's ring"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(host.load_settings().unwrap(), None);
    assert_eq!(host.len(), 1);
    // The export of its keys' own ring is merged, with its claim.
    host.import(exported(test.store()).as_bytes(), ImportMode::Merge)
        .unwrap();
    assert_eq!(
        host.load_settings()
            .unwrap()
            .and_then(|s| s.prefix().map(str::to_owned)),
        Some("acme_test".to_owned())
    );
}

// Bounded lines in `FileStore::import`: an export line is one record, whose
// fields all have limits, so import refuses a line longer than any export
// writes, without reading the rest of it.
mod bounded_import {
    use std::io::Read;

    use keyward::store::ImportMode;
    use keyward::time::Duration as Span;
    use keyward::{
        CertFingerprint, Contact, ExpiryPolicy, FileStore, KeyRing, KeyStore, ManualClock,
        MemoryStore, Network, NewKey, RequestContext, ScopeSet, StoreError,
    };

    /// The longest line `FileStore::import` reads (its line break not
    /// counted), as its documentation gives it.
    const IMPORT_LINE_LIMIT: usize = 1 << 20;

    /// `len` bytes of control characters, each of which JSON writes as six
    /// (`\u0001`): the text a field at its limit grows most from. The last
    /// two characters spell `tag`, so texts with different tags differ.
    fn six_fold(len: usize, tag: usize) -> String {
        // Not NUL (an owner must not hold one), nor the five that JSON
        // writes in two characters (\b, \t, \n, \f, \r).
        let controls: Vec<char> = (1u8..0x20)
            .filter(|b| ![0x08, 0x09, 0x0A, 0x0C, 0x0D].contains(b))
            .map(char::from)
            .collect();
        let n = controls.len();
        assert!(tag < n * n, "tag {tag}");
        let mut text: String = std::iter::repeat_n(controls[0], len - 2).collect();
        text.push(controls[tag / n]);
        text.push(controls[tag % n]);
        text
    }

    /// An export whose one key record has every field at its limit, and the
    /// record's line number. The key (issued with the longest prefix, owner,
    /// name, description, contact, 256 scopes of 128 bytes, 64 metadata
    /// entries, a client certificate and 64 networks, an own lifetime and a
    /// use limit) is rotated in, used, regenerated, rotated out and revoked,
    /// so its record has every optional field too.
    fn export_of_the_longest_key() -> (String, usize) {
        let clock = ManualClock::new(keyward::time::macros::datetime!(2026-01-01 0:00 UTC));
        let ring = KeyRing::builder("abcdefghijklmnopqrstuvwxyz_01234")
            .clock(clock.clone())
            .flush_interval(None)
            .build(MemoryStore::new())
            .unwrap();
        let scopes: Vec<String> = (0..256)
            .map(|i| format!("{}{i:03}:{}", "r".repeat(60), "a".repeat(64)))
            .collect();
        assert!(scopes.iter().all(|s| s.len() == 128));
        let mut request = NewKey::new(six_fold(256, 0))
            .name(six_fold(256, 1))
            .description(six_fold(4096, 2))
            .contact(Contact::new(
                six_fold(256, 3),
                six_fold(256, 4),
                six_fold(256, 5),
                six_fold(256, 6),
            ))
            .scopes(ScopeSet::parse(&scopes).unwrap())
            .expiry(ExpiryPolicy::Lifetime(
                Span::days(36_000) + Span::nanoseconds(86_399_999_999_999),
            ))
            .use_limit(u64::MAX)
            .client_cert(CertFingerprint::of_der(b"a certificate"));
        for i in 0..64 {
            request = request
                .allow_network(
                    Network::parse(&format!(
                        "1111:2222:3333:4444:5555:6666:7777:{:x}/128",
                        0x1000 + i
                    ))
                    .unwrap(),
                )
                .metadata(six_fold(256, 100 + i), six_fold(256, 200 + i));
        }
        let first = ring.issue(request).unwrap();
        let key = ring.rotate(first.key.id(), Span::days(1)).unwrap();
        let bound = || {
            RequestContext::new()
                .client_cert_der(b"a certificate")
                .peer_addr("1111:2222:3333:4444:5555:6666:7777:1000".parse().unwrap())
        };
        ring.verify_with(key.secret.expose(), bound()).unwrap();
        let key = ring.regenerate(key.key.id()).unwrap();
        clock.advance(Span::seconds(1));
        ring.verify_with(key.secret.expose(), bound()).unwrap();
        ring.rotate(key.key.id(), Span::days(1)).unwrap();
        ring.revoke(key.key.id(), &six_fold(256, 7)).unwrap();
        ring.flush().unwrap();
        let mut out = Vec::new();
        keyward::store::export(ring.store(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let record = serde_json::to_string(&*ring.store().lookup(key.key.id()).unwrap()).unwrap();
        let line = 1 + text.lines().position(|l| l == record).unwrap();
        for field in [
            "hint",
            "name",
            "description",
            "owner",
            "contact",
            "scopes",
            "created_at",
            "expiry",
            "expires_at",
            "status",
            "reason",
            "last_used_at",
            "uses",
            "use_limit",
            "rotated_from",
            "rotated_to",
            "grace_until",
            "metadata",
            "client_cert",
            "networks",
            "tokens_after",
        ] {
            assert!(
                record.contains(&format!("\"{field}\":")),
                "{field} in {record:.200}"
            );
        }
        (text, line)
    }

    /// The keys and settings of `store`, as JSON, to tell whether an import
    /// changed them.
    fn contents(store: &FileStore) -> (Vec<String>, String) {
        let mut keys: Vec<String> = store
            .list(None)
            .unwrap()
            .iter()
            .map(|k| serde_json::to_string(&**k).unwrap())
            .collect();
        keys.sort();
        (keys, format!("{:?}", store.load_settings().unwrap()))
    }

    /// `text` with line `n` (1-based) padded with spaces (JSON white space)
    /// to `len` bytes and ended by `end`.
    fn padded(text: &str, n: usize, len: usize, end: &str) -> String {
        let mut out = String::new();
        for (i, line) in text.lines().enumerate() {
            out.push_str(line);
            if i + 1 == n {
                assert!(line.len() <= len);
                out.push_str(&" ".repeat(len - line.len()));
                out.push_str(end);
            } else {
                out.push('\n');
            }
        }
        out
    }

    #[test]
    fn the_longest_valid_record_imports_and_a_line_over_the_limit_is_refused() {
        let (export, n) = export_of_the_longest_key();
        let longest = export.lines().map(str::len).max().unwrap();
        assert_eq!(export.lines().nth(n - 1).unwrap().len(), longest);
        eprintln!(
            "the longest key record's line: {longest} bytes; the header's: {}",
            export.lines().next().unwrap().len()
        );
        // A clear margin: the limit holds three records at their limits.
        assert!(3 * longest < IMPORT_LINE_LIMIT, "{longest}");
        let dir = tempfile::tempdir().unwrap();
        let source = FileStore::open(dir.path().join("source.kw")).unwrap();
        source
            .import(export.as_bytes(), ImportMode::Replace)
            .unwrap();
        let mut again = Vec::new();
        source.export(&mut again).unwrap();
        assert_eq!(String::from_utf8(again).unwrap(), export);

        let store = FileStore::open(dir.path().join("keys.kw")).unwrap();
        for (line, end) in [(1, "\n"), (n, "\n"), (n, "\r\n")] {
            let at_limit = padded(&export, line, IMPORT_LINE_LIMIT, end);
            for mode in [ImportMode::Replace, ImportMode::Merge] {
                store
                    .import(at_limit.as_bytes(), mode)
                    .unwrap_or_else(|e| panic!("line {line} at the limit, {mode:?}: {e}"));
            }
            let before = contents(&store);
            let over = padded(&export, line, IMPORT_LINE_LIMIT + 1, end);
            for mode in [ImportMode::Replace, ImportMode::Merge] {
                let outcome = store.import(over.as_bytes(), mode);
                assert_refused_as_too_long(outcome, line, &format!("{mode:?}"));
                assert_eq!(
                    contents(&store),
                    before,
                    "a refused import changed the store"
                );
            }
        }
    }

    /// A reader that counts the bytes taken from it.
    struct Counted<R> {
        inner: R,
        taken: u64,
    }

    impl<R: Read> Read for Counted<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.taken += n as u64;
            Ok(n)
        }
    }

    /// Asserts that `outcome` refused line `line` as longer than the limit,
    /// with the whole message.
    fn assert_refused_as_too_long(
        outcome: Result<keyward::store::ImportReport, StoreError>,
        line: usize,
        context: &str,
    ) {
        match outcome {
            Err(e @ StoreError::InvalidImport { .. }) => assert_eq!(
                e.to_string(),
                format!(
                    "invalid import at line {line}: the line is longer than 1048576 bytes, \
                     more than any export writes"
                )
            ),
            other => panic!("line {line} over the limit, {context}: {other:?}"),
        }
    }

    /// A store holding the longest key, and its export's header line.
    fn store_with_the_longest_key() -> (tempfile::TempDir, FileStore, String) {
        let (export, _) = export_of_the_longest_key();
        let header = export.lines().next().unwrap().to_owned();
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path().join("keys.kw")).unwrap();
        store
            .import(export.as_bytes(), ImportMode::Replace)
            .unwrap();
        (dir, store, header)
    }

    /// What import may read of a line past the limit: the limit, a line
    /// break, and what its buffered reader takes in one go.
    const READ_PAST_A_LONG_LINE: u64 = IMPORT_LINE_LIMIT as u64 + 2 + (64 << 10);

    #[test]
    fn a_long_line_is_refused_without_being_read_to_its_end() {
        let (_dir, store, header) = store_with_the_longest_key();
        let before = contents(&store);
        // A line of 64 MiB, as the header and as a key's line, followed by a
        // line break and another line.
        let long = 64u64 << 20;
        for (line, start) in [(1, String::new()), (2, format!("{header}\n"))] {
            let input = start
                .as_bytes()
                .chain(std::io::repeat(b'x').take(long))
                .chain(&b"\n{}\n"[..]);
            let mut input = Counted {
                inner: input,
                taken: 0,
            };
            let outcome = store.import(&mut input, ImportMode::Merge);
            assert!(
                input.taken <= start.len() as u64 + READ_PAST_A_LONG_LINE,
                "line {line}: {} bytes read of a {long}-byte line",
                input.taken
            );
            match outcome {
                Err(StoreError::InvalidImport { line: l, reason }) => {
                    assert_eq!(l, line);
                    assert!(reason.starts_with("the line is longer than"), "{reason}");
                }
                other => panic!("line {line}: {other:?}"),
            }
            assert_eq!(contents(&store), before);
        }
    }

    /// An endless line (as the header, and as a key's line) is refused: the
    /// import returns, having read about 1 MiB of it. Read whole, as import
    /// once did, it would take all memory.
    #[test]
    fn an_endless_line_is_refused() {
        let (_dir, store, header) = store_with_the_longest_key();
        let before = contents(&store);
        for (line, start) in [(1, String::new()), (2, format!("{header}\n"))] {
            let mut input = Counted {
                inner: start.as_bytes().chain(std::io::repeat(b'x')),
                taken: 0,
            };
            let outcome = store.import(&mut input, ImportMode::Replace);
            assert_refused_as_too_long(outcome, line, "endless");
            assert!(input.taken <= start.len() as u64 + READ_PAST_A_LONG_LINE);
            assert_eq!(contents(&store), before);
        }
        // A line that is not UTF-8 is refused as before lines were bounded.
        let mut text = format!("{header}\n").into_bytes();
        text.extend_from_slice(b"{\xff}\n");
        assert_eq!(
            store
                .import(&text[..], ImportMode::Replace)
                .unwrap_err()
                .to_string(),
            "invalid import at line 2: stream did not contain valid UTF-8"
        );
        assert_eq!(contents(&store), before);
    }
}

/// An open that fails (a damaged file) lets go of the lock: the next open
/// in this process is told what is wrong with the file again, not that it
/// is locked, and once the file is repaired it opens.
#[test]
fn a_failed_open_leaves_the_store_unlocked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    {
        let ring = ring_on(FileStore::open(&path).unwrap());
        ring.issue(NewKey::new("o1")).unwrap();
        ring.issue(NewKey::new("o2")).unwrap();
    }
    let whole = std::fs::read(&path).unwrap();
    let mut damaged = whole.clone();
    damaged[0] ^= 0xFF;
    std::fs::write(&path, &damaged).unwrap();
    for _ in 0..2 {
        match open_waiting_out_forks(&path) {
            Err(StoreError::Corrupt { offset: 0, .. }) => {}
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
    std::fs::write(&path, &whole).unwrap();
    let store = match open_waiting_out_forks(&path) {
        Ok(store) => store,
        Err(e) => panic!("a failed open kept the lock: {e}"),
    };
    assert_eq!(store.len(), 2);
}

/// `FileStore::import` tells to build key rings on the store after
/// importing, and says why: a ring that runs across the import reloads
/// the imported settings (on `refresh`, or within a second by its
/// background thread), but never moves its revoke-all epoch back. So after
/// a `Replace` by an export taken before a `revoke_all`, that ring takes
/// the export's default and refuses the imported keys as revoked, while a
/// ring built after the import verifies them.
#[test]
fn a_ring_running_across_a_replace_import_reloads_its_settings_but_keeps_its_epoch() {
    use keyward::store::ImportMode;
    use keyward::time::macros::datetime;
    use keyward::{ExpiryPolicy, ManualClock};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    let clock = ManualClock::new(datetime!(2026-01-01 0:00 UTC));
    let running = std::sync::Arc::new(FileStore::open(&path).unwrap());
    let ring = KeyRing::builder("kill")
        .pepper(PEPPER)
        .clock(clock.clone())
        .default_expiry(ExpiryPolicy::days(30))
        .flush_interval(None)
        .build(std::sync::Arc::clone(&running))
        .unwrap();
    let issued = ring.issue(NewKey::new("acct")).unwrap();
    let mut before = Vec::new();
    running.export(&mut before).unwrap();
    ring.set_default_expiry(ExpiryPolicy::days(1)).unwrap();
    clock.advance(Span::seconds(2));
    ring.revoke_all().unwrap();
    let enforced = ring.settings();

    running.import(&before[..], ImportMode::Replace).unwrap();
    ring.refresh().unwrap();
    let reported = ring.settings();
    assert_eq!(reported.default_expiry(), ExpiryPolicy::days(30));
    // What `settings` reports is what the ring enforces, not the lower
    // epoch the import wrote.
    assert!(running.load_settings().unwrap().unwrap().epoch() < enforced.epoch());
    assert_eq!(
        (reported.epoch(), reported.revoked_all_at()),
        (enforced.epoch(), enforced.revoked_all_at()),
        "the settings reported are not those in force"
    );
    assert_eq!(
        ring.verify(issued.secret.expose()).unwrap_err(),
        VerifyError::Revoked,
        "the running ring moved its revoke-all epoch back"
    );

    drop(ring);
    let rebuilt = KeyRing::builder("kill")
        .pepper(PEPPER)
        .clock(clock)
        .flush_interval(None)
        .build(running)
        .unwrap();
    assert!(rebuilt.verify(issued.secret.expose()).is_ok());
}

/// After a `Replace` by an export of a lower revoke-all epoch, a ring that
/// ran across it keeps its own higher epoch, and stamps the keys it issues
/// with it. A `revoke_all` by a ring that reads the store's epoch (one
/// built after, or another on the same store) must still revoke those
/// keys: "keys issued in an earlier epoch no longer verify".
#[test]
fn a_revoke_all_after_a_replace_import_revokes_the_keys_a_running_ring_issued() {
    use keyward::store::ImportMode;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    let store = std::sync::Arc::new(FileStore::open(&path).unwrap());
    let build = || {
        KeyRing::builder("kill")
            .pepper(PEPPER)
            .flush_interval(None)
            .build(std::sync::Arc::clone(&store))
            .unwrap()
    };
    let running = build();
    let mut before = Vec::new();
    store.export(&mut before).unwrap();
    running.revoke_all().unwrap();
    running.revoke_all().unwrap();
    store.import(&before[..], ImportMode::Replace).unwrap();
    running.refresh().unwrap();
    // Issued and rotated after the import, by the ring above the store.
    let issued = running.issue(NewKey::new("acct")).unwrap();
    let other = running.issue(NewKey::new("acct")).unwrap();
    let rotated = running.rotate(other.key.id(), Span::ZERO).unwrap();
    let later = build();
    assert!(later.verify(issued.secret.expose()).is_ok());
    later.revoke_all().unwrap();
    running.refresh().unwrap();
    for ring in [&later, &running] {
        for secret in [&issued.secret, &rotated.secret] {
            assert_eq!(
                ring.verify(secret.expose()).unwrap_err(),
                VerifyError::Revoked,
                "a key issued before the revoke-all outlived it"
            );
        }
    }
}
