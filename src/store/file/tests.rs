//! Crash, power-loss, corruption and i/o-error tests of the file store, on
//! the simulated disk.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use time::macros::datetime;

use super::format::{HEADER_LEN, RECORD_HEAD_LEN};
use super::sim::{EIO, ENOSPC, SimFs};
use super::*;
use crate::expiry::ExpiryPolicy;
use crate::hash::Hasher;
use crate::key::{Counter, Key, Status};
use crate::scope::ScopeSet;

/// A small deterministic generator (xorshift64*), so every failure can be
/// replayed from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as usize % n.max(1)
    }
}

fn sample(id: u64, version: usize) -> StoredKey {
    let mut key = Key::blank(
        KeyId::from_u64(id),
        &format!("owner{}", id % 3),
        datetime!(2026-01-01 0:00 UTC),
    );
    key.uses = Counter::new(version as u64);
    key.set_hint(&format!("t_1{id}"));
    key.set_name(&format!("version {version}"));
    key.scopes = ScopeSet::parse(["invoices:read"]).unwrap();
    if version % 5 == 4 {
        key.set_status(Status::Revoked {
            at: datetime!(2026-01-02 0:00 UTC),
            reason: "test".into(),
        });
    }
    StoredKey::new(
        key,
        Hasher::new(None, "t").hash(KeyId::from_u64(id), &[b'a'; 24]),
    )
}

fn settings(n: usize) -> RingSettings {
    RingSettings {
        default_expiry: ExpiryPolicy::days(n as i64 + 1),
        default_since: datetime!(2026-01-01 0:00 UTC),
        epoch: n as u64,
        revoked_all_at: None,
        superseded: Vec::new(),
        prefix: None,
        check: None,
    }
}

/// The logical content of a store: every record and the settings, as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct State {
    keys: BTreeMap<u64, String>,
    settings: Option<String>,
}

impl State {
    fn of(store: &impl KeyStore) -> State {
        State {
            keys: store
                .list(None)
                .unwrap()
                .iter()
                .map(|k| (k.id().as_u64(), serde_json::to_string(&**k).unwrap()))
                .collect(),
            settings: store
                .load_settings()
                .unwrap()
                .map(|s| serde_json::to_string(&s).unwrap()),
        }
    }

    /// The state after `batch`, or `None` if the store must refuse it.
    fn after(&self, batch: &[Change]) -> Option<State> {
        // The store knows a record's version by its allocation, the model
        // by its content: a `ReplaceIf` holds when its expected record
        // reads as the one in the model and no earlier change of the batch
        // touched the id. Random batches name either the store's own record
        // or a copy with other content (`random_batch`).
        let mut touched = std::collections::BTreeSet::new();
        let mut settings_touched = false;
        for change in batch {
            let id = match change {
                Change::SettingsIf { expected, .. } => {
                    let read = expected.as_ref().map(|s| serde_json::to_string(s).unwrap());
                    if settings_touched || read != self.settings {
                        return None;
                    }
                    settings_touched = true;
                    continue;
                }
                Change::Settings(_) => {
                    settings_touched = true;
                    continue;
                }
                Change::Insert(k) | Change::Replace(k) => k.id(),
                Change::ReplaceIf { expected, next } => {
                    let there = self.keys.get(&next.id().as_u64());
                    let read = serde_json::to_string(&**expected).unwrap();
                    if touched.contains(&next.id()) || there != Some(&read) {
                        return None;
                    }
                    next.id()
                }
                Change::Remove(id) => *id,
            };
            touched.insert(id);
        }
        // The rest of the rules (duplicates, missing records); every
        // `ReplaceIf` and `SettingsIf` left holds.
        let expected_settings = batch.iter().find_map(|change| match change {
            Change::SettingsIf { expected, .. } => Some(expected.clone()),
            _ => None,
        });
        let settings_held = || Ok(expected_settings.unwrap_or_default());
        check_batch(
            batch,
            |id| {
                let id = id.as_u64();
                self.keys.contains_key(&id).then(|| {
                    batch
                        .iter()
                        .find_map(|change| match change {
                            Change::ReplaceIf { expected, .. } if expected.id().as_u64() == id => {
                                Some(Arc::clone(expected))
                            }
                            _ => None,
                        })
                        .unwrap_or_else(|| Arc::new(sample(id, 0)))
                })
            },
            settings_held,
        )
        .ok()?;
        let mut next = self.clone();
        for change in batch {
            match change {
                Change::Insert(k) | Change::Replace(k) | Change::ReplaceIf { next: k, .. } => {
                    next.keys
                        .insert(k.id().as_u64(), serde_json::to_string(k).unwrap());
                }
                Change::Remove(id) => {
                    next.keys.remove(&id.as_u64());
                }
                Change::Settings(s) | Change::SettingsIf { next: s, .. } => {
                    next.settings = Some(serde_json::to_string(s).unwrap());
                }
            }
        }
        Some(next)
    }
}

/// A random batch: mostly valid, sometimes not (duplicate insert, missing
/// replace, a `ReplaceIf` or `SettingsIf` of a stale copy), 1 to 3 changes. A `ReplaceIf`
/// names `store`'s own record, or a copy of other content.
fn random_batch(
    rng: &mut Rng,
    state: &State,
    store: &dyn KeyStore,
    counter: &mut usize,
) -> Vec<Change> {
    let ids: Vec<u64> = state.keys.keys().copied().collect();
    (0..1 + rng.below(3))
        .map(|_| {
            *counter += 1;
            let existing = (!ids.is_empty()).then(|| ids[rng.below(ids.len())]);
            match (rng.below(12), existing) {
                (0..=3, _) | (_, None) => {
                    Change::Insert(sample(1 + rng.below(40) as u64, *counter))
                }
                (4..=6, Some(id)) => Change::Replace(sample(id, *counter)),
                (7, Some(id)) => Change::Remove(KeyId::from_u64(id)),
                (8..=9, Some(id)) => {
                    let held = store.lookup(KeyId::from_u64(id));
                    let expected = match held {
                        Some(held) if rng.below(4) != 0 => held,
                        _ => Arc::new(sample(id, *counter)),
                    };
                    // A version no other change has: the stale copy
                    // above reads unlike every record ever written.
                    *counter += 1;
                    Change::ReplaceIf {
                        expected,
                        next: sample(id, *counter),
                    }
                }
                (10, _) => Change::Settings(settings(*counter)),
                _ => {
                    // The store's own settings, or a copy that no write
                    // ever made (a stale read).
                    let expected = match store.load_settings() {
                        Ok(held) if rng.below(4) != 0 => held,
                        _ => Some(settings(*counter + 1_000_000)),
                    };
                    *counter += 1;
                    Change::SettingsIf {
                        expected,
                        next: settings(*counter),
                    }
                }
            }
        })
        .collect()
}

fn path() -> PathBuf {
    PathBuf::from("/sim/keys.kw")
}

fn open(sim: &SimFs, options: FileStoreOptions) -> Result<FileStore, StoreError> {
    FileStore::open_on(Box::new(sim.clone()), path(), options, None)
}

/// One round: a random workload, the process dies at a random call, the
/// power fails, the store is reopened. The reopened state must be what was
/// acknowledged, or that plus the one operation in flight, whole.
fn crash_round(seed: u64, sync: bool) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let sim = SimFs::new();
    sim.ignore_sync(!sync);
    let options = FileStoreOptions::default().min_dead_to_compact(1 + rng.below(8) as u64);
    let store = open(&sim, options).map_err(|e| format!("first open: {e}"))?;
    sim.die_at_call(1 + rng.below(60) as u64);
    let mut acked = State::default();
    let mut in_flight = None;
    let mut counter = 0;
    for _ in 0..30 {
        if rng.below(12) == 0 {
            // A flush compacts when the dead records call for it.
            let done = if rng.below(2) == 0 {
                store.compact()
            } else {
                store.flush()
            };
            if done.is_err() {
                break;
            }
            continue;
        }
        let batch = random_batch(&mut rng, &acked, &store, &mut counter);
        let after = acked.after(&batch);
        match (store.apply(batch), after) {
            (Ok(()), Some(after)) => acked = after,
            (Ok(()), None) => return Err("an invalid batch was accepted".into()),
            (
                Err(StoreError::Duplicate(_) | StoreError::NotFound(_) | StoreError::Conflict(_)),
                None,
            ) => {}
            (Err(_), after) => {
                in_flight = after;
                break;
            }
        }
    }
    drop(store);
    sim.crash(|n| rng.below(n));
    let reopened = open(&sim, options).map_err(|e| format!("reopen: {e}"))?;
    let got = State::of(&reopened);
    if got == acked || in_flight.as_ref() == Some(&got) {
        Ok(())
    } else {
        Err(format!(
            "seed {seed}: reopened {} keys, acknowledged {}",
            got.keys.len(),
            acked.keys.len()
        ))
    }
}

fn crash_rounds() -> u64 {
    std::env::var("KEYWARD_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

#[test]
fn power_loss_never_loses_an_acknowledged_write() {
    let rounds = crash_rounds();
    let failures: Vec<String> = (0..rounds)
        .filter_map(|seed| crash_round(seed, true).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {rounds} rounds failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[test]
fn the_power_loss_test_catches_a_store_without_fsync() {
    let failures = (0..2_000)
        .filter(|&seed| crash_round(seed, false).is_err())
        .count();
    assert!(failures > 0, "no round noticed that fsync did nothing");
}

#[test]
fn reopen_after_a_clean_shutdown_restores_everything() {
    let sim = SimFs::new();
    let store = open(&sim, FileStoreOptions::default()).unwrap();
    let mut rng = Rng::new(1);
    let (mut state, mut counter) = (State::default(), 0);
    for _ in 0..200 {
        let batch = random_batch(&mut rng, &state, &store, &mut counter);
        if let Some(after) = state.after(&batch) {
            store.apply(batch).unwrap();
            state = after;
        } else {
            assert!(store.apply(batch).is_err());
        }
    }
    assert_eq!(State::of(&store), state);
    drop(store);
    let reopened = open(&sim, FileStoreOptions::default()).unwrap();
    assert_eq!(State::of(&reopened), state);
    assert_eq!(reopened.recovery().dropped_bytes, 0);
}

/// Power fails (each pending write's fate drawn from `fate`), and the
/// store is reopened; a failed open panics naming `step` and `fate`.
fn crash_and_reopen(sim: &SimFs, step: u64, fate: u64) -> FileStore {
    let mut rng = Rng::new(fate);
    sim.crash(|n| rng.below(n));
    open(sim, FileStoreOptions::default())
        .unwrap_or_else(|e| panic!("step {step}, fate {fate}: {e}"))
}

/// A store with dead records, built the same way for a given seed.
fn store_with_history(sim: &SimFs, seed: u64) -> (FileStore, State) {
    let options = FileStoreOptions::default().min_dead_to_compact(u64::MAX);
    let store = open(sim, options).unwrap();
    let state = fill_with_history(&store, seed);
    (store, state)
}

/// Writes a history with dead records (the same for a given seed) into
/// `store`, and returns the state it leaves.
fn fill_with_history(store: &FileStore, seed: u64) -> State {
    let mut rng = Rng::new(seed);
    let (mut state, mut counter) = (State::default(), 0);
    while state.keys.len() < 10 || counter < 60 {
        let batch = random_batch(&mut rng, &state, store, &mut counter);
        if let Some(after) = state.after(&batch) {
            store.apply(batch).unwrap();
            state = after;
        }
    }
    state
}

type Hook = Arc<Mutex<Option<Box<dyn FnOnce() + Send>>>>;

/// What each of a run of `apply` calls returned.
type Results = Vec<Result<(), StoreError>>;

/// The simulated disk, running a hook once, just after a compaction has
/// taken its snapshot (when it creates its temporary file): the tests'
/// stand-in for writes that arrive while a compaction runs. A second hook
/// runs at the temporary file's second fsync, after the records written
/// so far were copied to it (if there were any): writes in the last moment
/// before the swap, which the swap itself must copy.
#[derive(Clone)]
struct Hooked {
    sim: SimFs,
    hook: Hook,
    late: Hook,
}

/// The temporary file of a [`Hooked`] disk.
struct HookedFile {
    file: Box<dyn FsFile>,
    syncs: u32,
    late: Hook,
}

impl FsFile for HookedFile {
    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.file.append(data)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.file.write_at(offset, data)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync()?;
        self.syncs += 1;
        if self.syncs == 2 {
            run(&self.late);
        }
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.file.truncate(len)
    }
}

/// Runs the hook, if one is set, once.
fn run(hook: &Hook) {
    let hook = hook.lock().unwrap().take();
    if let Some(hook) = hook {
        hook();
    }
}

impl fmt::Debug for Hooked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.sim.fmt(f)
    }
}

impl io::Fs for Hooked {
    fn open_read(&self, path: &Path) -> std::io::Result<Option<Box<dyn Read + Send>>> {
        self.sim.open_read(path)
    }
    fn open_append(&self, path: &Path) -> std::io::Result<Box<dyn FsFile>> {
        self.sim.open_append(path)
    }
    fn create_new(&self, path: &Path) -> std::io::Result<Box<dyn FsFile>> {
        let file = self.sim.create_new(path)?;
        if path != temp_path(&self::path()) {
            return Ok(file);
        }
        run(&self.hook);
        Ok(Box::new(HookedFile {
            file,
            syncs: 0,
            late: Arc::clone(&self.late),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.sim.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.sim.sync_dir(dir)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.sim.remove(path)
    }
}

/// A store on `sim` whose compactions run `hook` (set later) after their
/// snapshot, filled with the history of `seed`.
fn hooked_store_with_history(sim: &SimFs, seed: u64) -> (Arc<FileStore>, Hook, State) {
    let (store, hook, _late, state) = late_hooked_store_with_history(sim, seed);
    (store, hook, state)
}

/// [`hooked_store_with_history`], with the [late](Hooked) hook too.
fn late_hooked_store_with_history(sim: &SimFs, seed: u64) -> (Arc<FileStore>, Hook, Hook, State) {
    let (hook, late): (Hook, Hook) = (Arc::default(), Arc::default());
    let fs = Hooked {
        sim: sim.clone(),
        hook: Arc::clone(&hook),
        late: Arc::clone(&late),
    };
    let options = FileStoreOptions::default().min_dead_to_compact(u64::MAX);
    let store = Arc::new(FileStore::open_on(Box::new(fs), path(), options, None).unwrap());
    let state = fill_with_history(&store, seed);
    (store, hook, late, state)
}

/// Applies `batches` to `store` on another thread, as another caller
/// would, and returns their results; `None` if they did not finish within
/// 20 seconds (they waited for something that was not going to end).
fn apply_elsewhere(store: &Arc<FileStore>, batches: Vec<Vec<Change>>) -> Option<Results> {
    let store = Arc::clone(store);
    let (done, results) = mpsc::channel();
    std::thread::spawn(move || {
        let got: Vec<_> = batches.into_iter().map(|b| store.apply(b)).collect();
        let _ = done.send(got);
    });
    results
        .recv_timeout(std::time::Duration::from_secs(20))
        .ok()
}

/// Writes of every kind for a store in `state`: a new key, a new version of
/// one key, another key removed, new settings.
fn writes_for(state: &State) -> Vec<Vec<Change>> {
    let ids: Vec<u64> = state.keys.keys().copied().collect();
    vec![
        vec![Change::Insert(sample(500, 0))],
        vec![Change::Replace(sample(ids[0], 1_000))],
        vec![Change::Remove(KeyId::from_u64(ids[1]))],
        vec![Change::Settings(settings(77))],
    ]
}

#[test]
fn writes_during_a_compaction_are_neither_held_up_nor_lost() {
    let sim = SimFs::new();
    let (store, hook, before) = hooked_store_with_history(&sim, 7);
    let writes = writes_for(&before);
    let after = writes
        .iter()
        .try_fold(before.clone(), |state, batch| state.after(batch))
        .unwrap();
    let seen: Arc<Mutex<Option<Option<Results>>>> = Arc::default();
    *hook.lock().unwrap() = Some(Box::new({
        let (store, seen) = (Arc::clone(&store), Arc::clone(&seen));
        move || *seen.lock().unwrap() = Some(apply_elsewhere(&store, writes))
    }));
    let size_before = sim.read(&path()).unwrap().len();

    store.compact().unwrap();

    let results = seen.lock().unwrap().take().expect("the hook ran");
    let results = results.expect("a write waited for the compaction to end");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(State::of(&*store), after);
    let size_after = sim.read(&path()).unwrap().len();
    assert!(size_after < size_before, "{size_after} >= {size_before}");
    assert!(sim.read(&temp_path(&path())).is_none());
    // The new file counts its entries: every live key, the settings, and
    // the four written during the compaction.
    assert_eq!(store.log().entries, before.keys.len() as u64 + 1 + 4);
    // Writes after the compaction land in the new file.
    store.insert(sample(501, 0)).unwrap();
    let last = before_and(&after, vec![Change::Insert(sample(501, 0))]);
    assert_eq!(State::of(&*store), last);
    drop(store);
    let reopened = open(&sim, FileStoreOptions::default()).unwrap();
    assert_eq!(State::of(&reopened), last);
    assert_eq!(reopened.recovery().dropped_bytes, 0);
}

/// The records written between the copy of the tail so far and the swap
/// are copied by the swap itself.
#[test]
fn writes_in_the_last_moment_before_the_swap_are_kept() {
    let sim = SimFs::new();
    let (store, early, late, before) = late_hooked_store_with_history(&sim, 13);
    let writes = writes_for(&before);
    let (first, last) = writes.split_at(2);
    let after = writes
        .iter()
        .try_fold(before.clone(), |state, batch| state.after(batch))
        .unwrap();
    for (hook, batches) in [(&early, first.to_vec()), (&late, last.to_vec())] {
        let store = Arc::clone(&store);
        *hook.lock().unwrap() = Some(Box::new(move || {
            let results = apply_elsewhere(&store, batches).expect("not held up");
            assert!(results.iter().all(Result::is_ok), "{results:?}");
        }));
    }

    store.compact().unwrap();

    assert!(late.lock().unwrap().is_none(), "the late hook did not run");
    assert_eq!(State::of(&*store), after);
    assert_eq!(store.log().entries, before.keys.len() as u64 + 1 + 4);
    // What the store takes as synced is the new file's whole length, the
    // records the swap copied included: the next write's slot vouches for
    // that much, no more, no less.
    assert_eq!(
        store.log().synced.len,
        sim.read(&path()).unwrap().len() as u64
    );
    drop(store);
    let reopened = open(&sim, FileStoreOptions::default()).unwrap();
    assert_eq!(State::of(&reopened), after);
}

fn before_and(state: &State, batch: Vec<Change>) -> State {
    state.after(&batch).unwrap()
}

/// Sets `early` and `late` to write `first` and `second` on another
/// thread; each records whether its write was acknowledged.
fn write_at_both_hooks(
    store: &Arc<FileStore>,
    (early, late): (&Hook, &Hook),
    (first, second): (&[Change], &[Change]),
) -> [Arc<Mutex<Option<bool>>>; 2] {
    let acked: [Arc<Mutex<Option<bool>>>; 2] = Default::default();
    for ((hook, batch), acked) in [(early, first), (late, second)].into_iter().zip(&acked) {
        let (store, batch, acked) = (Arc::clone(store), batch.to_vec(), Arc::clone(acked));
        *hook.lock().unwrap() = Some(Box::new(move || {
            let results = apply_elsewhere(&store, vec![batch]).expect("not held up");
            *acked.lock().unwrap() = Some(results[0].is_ok());
        }));
    }
    acked
}

#[test]
fn a_crash_at_every_step_of_a_compaction_with_writes_meanwhile_keeps_every_acknowledged_write() {
    // A write after the snapshot, and one in the last moment before the
    // swap: both acknowledged writes must survive a crash at any step.
    let sim = SimFs::new();
    let (store, early, late, before) = late_hooked_store_with_history(&sim, 11);
    let mut ids = before.keys.keys().copied();
    let first = vec![
        Change::Insert(sample(500, 0)),
        Change::Replace(sample(ids.next().unwrap(), 1_000)),
    ];
    let second = vec![
        Change::Insert(sample(501, 0)),
        Change::Remove(KeyId::from_u64(ids.next().unwrap())),
    ];
    let middle = before.after(&first).unwrap();
    let after = middle.after(&second).unwrap();
    let acked = write_at_both_hooks(&store, (&early, &late), (&first, &second));
    let start = sim.calls();
    store.compact().unwrap();
    let steps = sim.calls() - start;
    assert_eq!(
        acked.each_ref().map(|a| *a.lock().unwrap()),
        [Some(true); 2]
    );
    assert_eq!(State::of(&*store), after);
    drop(store);

    for step in 1..=steps {
        for fate in 0..10 {
            let sim = SimFs::new();
            let (store, early, late, _) = late_hooked_store_with_history(&sim, 11);
            let acked = write_at_both_hooks(&store, (&early, &late), (&first, &second));
            sim.die_at_call(step);
            let compacted = store.compact();
            let [first_acked, second_acked] =
                acked.each_ref().map(|a| a.lock().unwrap().unwrap_or(false));
            assert!(
                compacted.is_err(),
                "step {step}: compaction survived the death"
            );
            drop(store);
            let reopened = crash_and_reopen(&sim, step, fate);
            let got = State::of(&reopened);
            let allowed: &[&State] = match (first_acked, second_acked) {
                (_, true) => &[&after],
                (true, false) => &[&middle, &after],
                (false, _) => &[&before, &middle, &after],
            };
            assert!(
                allowed.contains(&&got),
                "step {step}, fate {fate}: acknowledged {first_acked}, {second_acked}, \
                 and the reopened store is not a state they allow"
            );
            assert!(sim.read(&temp_path(&path())).is_none());
        }
    }
}

#[test]
fn compactions_racing_a_writer_keep_every_write() {
    for seed in 0..20 {
        let sim = SimFs::new();
        let (store, _hook, start) = hooked_store_with_history(&sim, seed);
        let writing = std::sync::atomic::AtomicBool::new(true);
        let state = std::thread::scope(|s| {
            let compactor = s.spawn(|| {
                let mut compactions = 0;
                while writing.load(std::sync::atomic::Ordering::Acquire) || compactions < 3 {
                    store.compact().unwrap();
                    compactions += 1;
                }
            });
            let mut rng = Rng::new(seed);
            let (mut state, mut counter) = (start.clone(), 1_000);
            // Checked once the compactor stopped: a failure here must not
            // leave it compacting forever.
            let mut wrong = None;
            for step in 0..300 {
                let batch = random_batch(&mut rng, &state, &*store, &mut counter);
                let after = state.after(&batch);
                match (store.apply(batch), after) {
                    (Ok(()), Some(after)) => state = after,
                    (Err(_), None) => {}
                    (got, want) => {
                        wrong = Some(format!("seed {seed}, step {step}: {got:?}, model {want:?}"));
                        break;
                    }
                }
            }
            writing.store(false, std::sync::atomic::Ordering::Release);
            compactor.join().unwrap();
            if let Some(wrong) = wrong {
                panic!("{wrong}");
            }
            state
        });
        assert_eq!(State::of(&*store), state, "seed {seed}");
        drop(store);
        let reopened = open(&sim, FileStoreOptions::default()).unwrap();
        assert_eq!(State::of(&reopened), state, "seed {seed}, reopened");
    }
}

#[test]
fn a_write_that_fails_during_a_compaction_stops_it() {
    let sim = SimFs::new();
    let (store, hook, before) = hooked_store_with_history(&sim, 5);
    let size_before = sim.read(&path()).unwrap().len();
    *hook.lock().unwrap() = Some(Box::new({
        let (store, sim) = (Arc::clone(&store), sim.clone());
        move || {
            // The write's append fails.
            sim.fail_call(1, EIO);
            let results = apply_elsewhere(&store, vec![vec![Change::Insert(sample(500, 0))]]);
            assert!(results.expect("not held up")[0].is_err());
        }
    }));
    match store.compact() {
        Err(StoreError::Poisoned(p)) => assert_eq!(p, path()),
        other => panic!("expected Poisoned, got {other:?}"),
    }
    assert!(sim.read(&temp_path(&path())).is_none());
    // The old file is still the data file: the failed write's half record
    // is a torn tail, dropped at the reopen.
    assert!(sim.read(&path()).unwrap().len() >= size_before);
    drop(store);
    let reopened = open(&sim, FileStoreOptions::default()).unwrap();
    assert_eq!(State::of(&reopened), before);
}

#[test]
fn a_crash_at_every_step_of_compaction_leaves_the_old_or_the_new_file() {
    let sim = SimFs::new();
    let (store, state) = store_with_history(&sim, 7);
    let before = sim.calls();
    store.compact().unwrap();
    let steps = sim.calls() - before;
    assert!(steps >= 5, "compaction made only {steps} calls");
    assert_eq!(State::of(&store), state);

    for step in 1..=steps {
        for fate in 0..20 {
            let sim = SimFs::new();
            let (store, state) = store_with_history(&sim, 7);
            sim.die_at_call(step);
            assert!(
                store.compact().is_err(),
                "step {step}: compaction survived the death"
            );
            assert!(
                store.insert(sample(99, 0)).is_err(),
                "step {step}: a write after the death succeeded"
            );
            drop(store);
            let reopened = crash_and_reopen(&sim, step, fate);
            assert_eq!(State::of(&reopened), state, "step {step}, fate {fate}");
            assert!(
                sim.read(&temp_path(&path())).is_none(),
                "the temporary file is cleaned up"
            );
        }
    }
}

#[test]
fn compaction_shrinks_the_file_and_keeps_the_state() {
    let sim = SimFs::new();
    let (store, state) = store_with_history(&sim, 3);
    let before = sim.read(&path()).unwrap().len();
    store.compact().unwrap();
    let after = sim.read(&path()).unwrap().len();
    assert!(after < before, "{after} >= {before}");
    drop(store);
    assert_eq!(
        State::of(&open(&sim, FileStoreOptions::default()).unwrap()),
        state
    );
}

/// The payload length of each record in a store file.
fn payload_lengths(bytes: &[u8]) -> Vec<usize> {
    let mut lengths = Vec::new();
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        lengths.push(len);
        at += RECORD_HEAD_LEN + len;
    }
    lengths
}

/// A key within the limits of `issue` whose metadata is control
/// characters: one byte each in memory, six (`\u0001`) in JSON.
fn escape_heavy(id: u64) -> StoredKey {
    let mut key = sample(id, 0);
    key.key.extra_mut().metadata = (0..12)
        .map(|i| {
            (
                format!("{i:03}{}", "\u{1}".repeat(253)),
                "\u{1}".repeat(256),
            )
        })
        .collect();
    key.key.tidy();
    key.key.check_fields().expect("within the limits of issue");
    key
}

#[test]
fn a_rewrite_splits_keys_too_large_for_one_record_by_bytes() {
    // With records capped at 64 KiB, each of these keys (about 37 KB of
    // JSON) fits a write of its own, but 40 of them (less than one chunk of
    // keys) do not fit one record: compaction and import must still work,
    // as they must for 4096 keys at the limits of `issue` under the real
    // cap.
    let cap = 64 << 10;
    let sim = SimFs::new();
    let mut store = open(&sim, FileStoreOptions::default()).unwrap();
    store.max_payload = cap;
    store.save_settings(&settings(2)).unwrap();
    for id in 1..=40 {
        store.insert(escape_heavy(id)).unwrap();
    }
    let state = State::of(&store);
    store.compact().unwrap();
    assert_eq!(State::of(&store), state);
    let lengths = payload_lengths(&sim.read(&path()).unwrap());
    assert!(
        lengths.len() > 2,
        "one record for all the keys: {lengths:?}"
    );
    assert!(lengths.iter().all(|&len| len <= cap), "{lengths:?}");

    let mut export = Vec::new();
    store.export(&mut export).unwrap();
    let other = SimFs::new();
    let mut target = open(&other, FileStoreOptions::default()).unwrap();
    target.max_payload = cap;
    target.import(&export[..], ImportMode::Replace).unwrap();
    assert_eq!(State::of(&target), state);

    drop((store, target));
    for disk in [&sim, &other] {
        assert_eq!(
            State::of(&open(disk, FileStoreOptions::default()).unwrap()),
            state
        );
    }
}

#[test]
fn a_rewrite_record_closes_at_its_key_count_or_its_byte_budget() {
    let keys: Vec<Arc<StoredKey>> = (1..=REWRITE_CHUNK as u64 * 2 + 5)
        .map(|id| Arc::new(sample(id, 0)))
        .collect();
    // The longest payload of one key (ids differ in length).
    let one = keys
        .iter()
        .map(|k| serde_json::to_vec(&[EntryRef::Put(k)]).unwrap().len())
        .max()
        .unwrap();
    for (max, per_record) in [(usize::MAX, REWRITE_CHUNK), (one * 2, 2), (one, 1)] {
        let mut ids = Vec::new();
        let mut sizes = Vec::new();
        put_records(&keys, max, max, |record| {
            let payload = &record[RECORD_HEAD_LEN..];
            assert!(payload.len() <= max);
            let entries: Vec<Entry> = serde_json::from_slice(payload).unwrap();
            sizes.push(entries.len());
            ids.extend(entries.iter().map(|e| match e {
                Entry::Put(k) => k.id().as_u64(),
                other => panic!("{other:?}"),
            }));
            Ok(())
        })
        .unwrap();
        let expected: Vec<u64> = keys.iter().map(|k| k.id().as_u64()).collect();
        assert_eq!(ids, expected, "max {max}");
        // Every record but the last is full: as many keys as it may hold.
        let (last, full) = sizes.split_last().unwrap();
        assert!(full.iter().all(|&n| n == per_record), "{sizes:?}");
        assert_eq!(*last, (keys.len() - 1) % per_record + 1, "{sizes:?}");
    }
    // The budget counts the closing bracket: a payload of exactly the
    // budget is one record, one byte over it is two.
    let two = serde_json::to_vec(&[EntryRef::Put(&keys[0]), EntryRef::Put(&keys[1])])
        .unwrap()
        .len();
    for (budget, expected) in [(two, vec![2]), (two - 1, vec![1, 1])] {
        let mut sizes = Vec::new();
        put_records(&keys[..2], budget, usize::MAX, |record| {
            let entries: Vec<Entry> = serde_json::from_slice(&record[RECORD_HEAD_LEN..]).unwrap();
            sizes.push(entries.len());
            Ok(())
        })
        .unwrap();
        assert_eq!(sizes, expected, "budget {budget} for {two} bytes");
    }
    // No keys, no record (not an empty one).
    put_records(&[], usize::MAX, usize::MAX, |record| {
        panic!("a record for no keys: {record:?}")
    })
    .unwrap();
    // A key that cannot fit a record of its own is an error, not a panic.
    assert!(put_records(&keys, one - 1, one - 1, |_| Ok(())).is_err());
    // Over the budget but within what a record may hold: a record of its own.
    let mut sizes = Vec::new();
    put_records(&keys[..3], one - 1, one, |record| {
        let entries: Vec<Entry> = serde_json::from_slice(&record[RECORD_HEAD_LEN..]).unwrap();
        sizes.push(entries.len());
        Ok(())
    })
    .unwrap();
    assert_eq!(sizes, [1, 1, 1]);
}

#[test]
fn a_flush_compacts_past_the_dead_record_threshold_and_a_write_never_does() {
    let sim = SimFs::new();
    let store = open(&sim, FileStoreOptions::default().min_dead_to_compact(50)).unwrap();
    store.insert(sample(1, 0)).unwrap();
    let mut size = sim.read(&path()).unwrap().len();
    for version in 1..100 {
        store.replace(sample(1, version)).unwrap();
        let grown = sim.read(&path()).unwrap().len();
        assert!(
            grown > size,
            "a write rewrote the file at version {version}"
        );
        size = grown;
    }
    store.flush().unwrap();
    let compacted = sim.read(&path()).unwrap().len();
    assert!(
        compacted - HEADER_LEN < (size - HEADER_LEN) / 10,
        "no compaction: {compacted} bytes"
    );
    // Nothing is due now: a flush touches nothing.
    let calls = sim.calls();
    store.flush().unwrap();
    assert_eq!(sim.calls(), calls);
    // Under the threshold of dead records, a flush leaves them.
    for version in 100..140 {
        store.replace(sample(1, version)).unwrap();
    }
    store.flush().unwrap();
    assert!(sim.read(&path()).unwrap().len() - HEADER_LEN > (compacted - HEADER_LEN) * 20);
    drop(store);
    let reopened = open(&sim, FileStoreOptions::default()).unwrap();
    assert_eq!(
        reopened.lookup(KeyId::from_u64(1)).unwrap().key().name(),
        "version 139"
    );
}

/// A store on `sim` holding one key written `versions` times: that many
/// entries in the file, all but one dead.
fn one_key_written(sim: &SimFs, versions: usize) -> FileStore {
    let store = open(sim, FileStoreOptions::default().min_dead_to_compact(50)).unwrap();
    store.insert(sample(1, 0)).unwrap();
    for version in 1..versions {
        store.replace(sample(1, version)).unwrap();
    }
    store
}

#[test]
fn after_a_failed_compaction_a_flush_waits_for_the_dead_records_to_double() {
    let sim = SimFs::new();
    let store = one_key_written(&sim, 100);
    let dead = store.log().entries - 2;
    sim.fail_call(1, ENOSPC);
    assert!(matches!(store.flush(), Err(StoreError::Io { .. })));
    assert!(sim.read(&temp_path(&path())).is_none());

    // Not again at once, nor until as many records again have been written
    // as were dead.
    let calls = sim.calls();
    store.flush().unwrap();
    assert_eq!(sim.calls(), calls, "a flush tried again at once");
    for version in 100..100 + dead as usize - 1 {
        store.replace(sample(1, version)).unwrap();
    }
    let calls = sim.calls();
    store.flush().unwrap();
    assert_eq!(sim.calls(), calls, "a flush tried again too soon");
    let size = sim.read(&path()).unwrap().len();
    store.replace(sample(1, 500)).unwrap();
    store.flush().unwrap();
    let compacted = sim.read(&path()).unwrap().len();
    assert!(
        compacted - HEADER_LEN < (size - HEADER_LEN) / 10,
        "no compaction: {compacted} bytes"
    );

    // A success ends the wait: the next compaction is due as usual.
    for version in 501..600 {
        store.replace(sample(1, version)).unwrap();
    }
    let size = sim.read(&path()).unwrap().len();
    store.flush().unwrap();
    let again = sim.read(&path()).unwrap().len();
    assert!(
        again - HEADER_LEN < (size - HEADER_LEN) / 10,
        "no compaction: {again} bytes"
    );
    drop(store);
    let reopened = open(&sim, FileStoreOptions::default()).unwrap();
    assert_eq!(
        reopened.lookup(KeyId::from_u64(1)).unwrap().key().name(),
        "version 599"
    );
}

/// A flush compacts once dead records outnumber live ones (the key and the
/// settings' place), not when they are as many, and once at least
/// `min_dead_to_compact` are dead, that many included.
#[test]
fn a_flush_compacts_when_dead_records_outnumber_live_ones_and_reach_the_minimum() {
    for min in [1, 3] {
        let sim = SimFs::new();
        let store = open(&sim, FileStoreOptions::default().min_dead_to_compact(min)).unwrap();
        store.insert(sample(1, 0)).unwrap();
        // Four entries: two dead, two live.
        for version in 1..4 {
            store.replace(sample(1, version)).unwrap();
        }
        let log = store.log();
        assert_eq!((log.entries, store.dead(&log)), (4, 2));
        drop(log);
        assert!(!store.compaction_due(), "min {min}: dead as many as live");
        let calls = sim.calls();
        store.flush().unwrap();
        assert_eq!(sim.calls(), calls, "min {min}: a flush compacted");
        // Five entries: three dead, two live.
        store.replace(sample(1, 4)).unwrap();
        assert!(store.compaction_due(), "min {min}: three dead, two live");
        store.flush().unwrap();
        assert_eq!(store.log().entries, 1, "min {min}: no compaction");
    }
    // Under the minimum, nothing is due however many more are dead.
    let sim = SimFs::new();
    let store = open(&sim, FileStoreOptions::default().min_dead_to_compact(4)).unwrap();
    store.insert(sample(1, 0)).unwrap();
    for version in 1..5 {
        store.replace(sample(1, version)).unwrap();
    }
    assert!(!store.compaction_due(), "three dead, minimum four");
    store.replace(sample(1, 5)).unwrap();
    assert!(store.compaction_due(), "four dead, minimum four");
}

#[test]
fn after_a_failed_compaction_compact_still_tries() {
    let sim = SimFs::new();
    let store = one_key_written(&sim, 100);
    sim.fail_call(1, ENOSPC);
    assert!(store.flush().is_err());
    let size = sim.read(&path()).unwrap().len();
    store.compact().unwrap();
    assert!(sim.read(&path()).unwrap().len() - HEADER_LEN < (size - HEADER_LEN) / 10);
}

/// A compaction that unwinds (a panic in it) leaves the store as it was:
/// writes go on, and stop being kept for the compaction that is gone.
#[test]
fn a_compaction_that_panics_leaves_the_store_working() {
    let sim = SimFs::new();
    let (store, hook, before) = hooked_store_with_history(&sim, 3);
    *hook.lock().unwrap() = Some(Box::new(|| panic!("a compaction step panics")));
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.compact()));
    assert!(unwound.is_err());
    assert!(
        store.log().tail.is_none(),
        "writes still kept for a compaction"
    );
    let batch = vec![Change::Insert(sample(500, 0))];
    store.apply(batch.clone()).unwrap();
    store.compact().unwrap();
    let after = before_and(&before, batch);
    assert_eq!(State::of(&*store), after);
    drop(store);
    let reopened = open(&sim, FileStoreOptions::default()).unwrap();
    assert_eq!(State::of(&reopened), after);
}

/// A file of six records and the state after each prefix of them.
fn six_records() -> (Vec<u8>, Vec<usize>, Vec<State>) {
    let sim = SimFs::new();
    let store = open(&sim, FileStoreOptions::default()).unwrap();
    let mut states = vec![State::of(&store)];
    for (i, batch) in [
        vec![Change::Insert(sample(1, 0)), Change::Insert(sample(2, 0))],
        vec![Change::Settings(settings(1))],
        vec![Change::Replace(sample(1, 4))],
        vec![Change::Insert(sample(3, 0))],
        vec![Change::Remove(KeyId::from_u64(2))],
        vec![Change::Replace(sample(3, 9)), Change::Insert(sample(4, 1))],
    ]
    .into_iter()
    .enumerate()
    {
        store
            .apply(batch)
            .unwrap_or_else(|e| panic!("batch {i}: {e}"));
        states.push(State::of(&store));
    }
    let bytes = sim.read(&path()).unwrap();
    let mut starts = Vec::new();
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        starts.push(at);
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += RECORD_HEAD_LEN + len;
    }
    assert_eq!(starts.len(), 6);
    (bytes, starts, states)
}

fn open_bytes(bytes: Vec<u8>) -> Result<FileStore, StoreError> {
    let sim = SimFs::new();
    sim.put(&path(), bytes);
    open(&sim, FileStoreOptions::default())
}

#[test]
fn truncation_in_the_last_record_drops_it_and_before_it_is_an_error() {
    let (bytes, starts, states) = six_records();
    for cut in starts[5]..bytes.len() {
        // The last write, cut short: dropped, the records before it kept.
        let store =
            open_bytes(bytes[..cut].to_vec()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(State::of(&store), states[5], "cut at {cut}");
        assert_eq!(
            store.recovery().dropped_bytes,
            (cut - starts[5]) as u64,
            "cut at {cut}"
        );
        assert_eq!(store.recovery().records, 5, "cut at {cut}");
    }
    // Record 4 was fsynced before record 5 was written: a file cut inside
    // it (or at its start) lost acknowledged data, which only the last
    // write can be.
    for cut in starts[4]..starts[5] {
        match open_bytes(bytes[..cut].to_vec()) {
            Err(StoreError::Corrupt { offset, .. }) => {
                assert_eq!(offset, starts[4] as u64, "cut at {cut}");
            }
            Err(e) => panic!("cut at {cut}: {e}"),
            Ok(store) => panic!(
                "cut at {cut}: opened with {} of 6 acknowledged records",
                store.recovery().records
            ),
        }
    }
}

#[test]
fn a_flipped_byte_before_the_last_record_is_an_error_naming_its_record() {
    let (bytes, starts, states) = six_records();
    let slots = super::format::slot_offset(0) as usize..HEADER_LEN;
    for i in 0..starts[5] {
        let mut damaged = bytes.clone();
        damaged[i] ^= 0xFF;
        if slots.contains(&i) {
            // A slot that does not check is ignored (a slot write cut short
            // looks the same); the other still bounds the synced part.
            let store = open_bytes(damaged).unwrap_or_else(|e| panic!("flip at {i}: {e}"));
            assert_eq!(State::of(&store), states[6], "flip at {i}");
            continue;
        }
        let record_start = starts
            .iter()
            .rev()
            .find(|&&s| s <= i)
            .map_or(0, |&s| s as u64);
        match open_bytes(damaged) {
            Err(StoreError::Corrupt {
                offset, path: p, ..
            }) => {
                assert_eq!(offset, record_start, "flip at {i}");
                assert_eq!(p, path());
            }
            Err(e) => panic!("flip at {i}: unexpected error {e}"),
            Ok(_) => panic!("flip at {i} went unnoticed"),
        }
    }
}

#[test]
fn a_flipped_byte_in_the_last_record_drops_it_unless_its_length_says_more_follows() {
    let (bytes, starts, states) = six_records();
    let last = starts[5];
    let real_len = (bytes.len() - last - RECORD_HEAD_LEN) as u64;
    for i in last..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[i] ^= 0xFF;
        let claimed = u64::from(u32::from_le_bytes(
            damaged[last + 4..last + 8].try_into().unwrap(),
        ));
        // A flipped length that ends the record before the end of the file
        // leaves bytes after a whole-looking record: damage, not a torn write.
        let shortened = (last + 4..last + 8).contains(&i) && claimed < real_len;
        match open_bytes(damaged) {
            Ok(store) => {
                assert!(
                    !shortened,
                    "flip at {i}: a shortened record was dropped silently"
                );
                assert_eq!(State::of(&store), states[5], "flip at {i}");
                assert_eq!(store.recovery().dropped_at, Some(last as u64));
            }
            Err(StoreError::Corrupt { offset, .. }) => {
                assert!(
                    shortened,
                    "flip at {i}: a torn last record was called corrupt"
                );
                assert_eq!(offset, last as u64);
            }
            Err(e) => panic!("flip at {i}: {e}"),
        }
    }
}

#[test]
fn damage_running_to_the_end_over_several_records_is_an_error() {
    // A lost last page: zeros from inside record 3 to the end. Dropping it
    // would silently lose three acknowledged batches.
    let (mut bytes, starts, _) = six_records();
    let from = starts[3] + RECORD_HEAD_LEN + 5;
    bytes[from..].fill(0);
    match open_bytes(bytes) {
        Err(StoreError::Corrupt { offset, .. }) => assert_eq!(offset, starts[3] as u64),
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[test]
fn damage_to_the_end_starting_in_a_record_head_is_an_error() {
    // Zeros from any of the first bytes of record 3's head to the end: its
    // head says nothing (not even that it is one), nothing valid follows,
    // and yet records 3 to 5 were acknowledged, each fsynced before the
    // next was written.
    let (bytes, starts, states) = six_records();
    for skew in 0..RECORD_HEAD_LEN {
        let mut damaged = bytes.clone();
        damaged[starts[3] + skew..].fill(0);
        match open_bytes(damaged) {
            Err(StoreError::Corrupt { offset, reason, .. }) => {
                assert_eq!(offset, starts[3] as u64, "zeros from byte {skew}");
                assert_eq!(reason, "damaged record in the synced part of the file");
            }
            Ok(store) => panic!(
                "zeros from byte {skew} of record 3 to the end: opened with {} of 6 \
                 acknowledged records ({} bytes dropped as a torn tail)",
                store.recovery().records,
                store.recovery().dropped_bytes
            ),
            Err(e) => panic!("zeros from byte {skew}: {e}"),
        }
    }
    // The same zeros over the last record only are its write, lost to a
    // power failure: a torn tail.
    let mut torn = bytes.clone();
    torn[starts[5]..].fill(0);
    let store = open_bytes(torn).unwrap();
    assert_eq!(State::of(&store), states[5]);
    assert_eq!(store.recovery().dropped_at, Some(starts[5] as u64));
}

#[test]
fn damage_to_the_end_of_a_compacted_file_is_an_error() {
    // A compacted file is synced whole before it takes the old one's
    // place: its last record is no torn write either.
    let sim = SimFs::new();
    let (store, state) = store_with_history(&sim, 5);
    store.compact().unwrap();
    drop(store);
    let bytes = sim.read(&path()).unwrap();
    let lengths = payload_lengths(&bytes);
    let last = bytes.len() - RECORD_HEAD_LEN - lengths.last().unwrap();
    for from in [HEADER_LEN, last] {
        let mut damaged = bytes.clone();
        damaged[from..].fill(0);
        match open_bytes(damaged) {
            Err(StoreError::Corrupt { offset, .. }) => assert_eq!(offset, from as u64),
            other => panic!("zeros from {from}: {:?}", other.map(|s| s.recovery())),
        }
    }
    assert_eq!(State::of(&open_bytes(bytes).unwrap()), state);
}

#[test]
fn on_a_real_file_each_write_records_the_synced_length_in_its_header() {
    // The slot is written in place, not appended (as a file opened in
    // append mode would take it on Linux), also by a store that opened an
    // existing file. Slots: 0 by the first insert, 1 by the reopen (the
    // length it found), then 0 and 1 by the two inserts: the next is 0.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.kw");
    FileStore::open(&file)
        .unwrap()
        .insert(sample(1, 0))
        .unwrap();
    let store = FileStore::open(&file).unwrap();
    for id in 2..=3 {
        store.insert(sample(id, 0)).unwrap();
    }
    drop(store);
    let bytes = std::fs::read(&file).unwrap();
    let lengths = payload_lengths(&bytes);
    assert_eq!(lengths.len(), 3);
    let second = HEADER_LEN + RECORD_HEAD_LEN + lengths[0];
    let third = second + RECORD_HEAD_LEN + lengths[1];
    assert_eq!(
        super::format::check_header(&bytes),
        HeaderCheck::Valid(Synced {
            len: third as u64,
            next_slot: 0
        })
    );
    let mut damaged = bytes.clone();
    damaged[second..].fill(0);
    std::fs::write(&file, damaged).unwrap();
    match FileStore::open(&file) {
        Err(StoreError::Corrupt { offset, .. }) => assert_eq!(offset, second as u64),
        other => panic!("{:?}", other.map(|s| s.recovery())),
    }
}

/// Open sizes its index from the durable length the header names, capped
/// by the file's own length: a header that claims a terabyte (both slots)
/// over a file of three keys must not size the index for five billion
/// keys (an allocation that aborts the process), but fail as the file it
/// is: shorter than its header says is durable.
#[test]
fn a_header_claiming_more_than_the_file_holds_sizes_no_index_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.kw");
    let store = FileStore::open(&file).unwrap();
    for id in 1..=3 {
        store.insert(sample(id, 0)).unwrap();
    }
    drop(store);
    let mut bytes = std::fs::read(&file).unwrap();
    for slot in 0..2 {
        let at = super::format::slot_offset(slot) as usize;
        let claim = super::format::slot(slot, 1 << 40);
        bytes[at..at + claim.len()].copy_from_slice(&claim);
    }
    std::fs::write(&file, &bytes).unwrap();
    match FileStore::open(&file) {
        Err(StoreError::Corrupt { .. }) => {}
        other => panic!("{:?}", other.map(|s| s.recovery())),
    }
}

#[test]
fn an_absurd_length_is_an_error_not_an_allocation() {
    let (bytes, starts, _) = six_records();
    for &start in &starts[..5] {
        for len in [u32::MAX, 0x7FFF_FFFF, super::format::MAX_PAYLOAD, 1 << 30] {
            let mut damaged = bytes.clone();
            damaged[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
            match open_bytes(damaged) {
                Err(StoreError::Corrupt { offset, .. }) => assert_eq!(offset, start as u64),
                other => panic!("length {len} at {start}: {other:?}"),
            }
        }
    }
}

#[test]
fn damage_in_the_header_is_an_error() {
    assert!(matches!(
        open_bytes(b"something else entirely".to_vec()),
        Err(StoreError::Corrupt { offset: 0, .. })
    ));
    // A store file is created whole (renamed into place), so one shorter
    // than a header was cut short afterwards: damage, not a new store.
    let header = super::format::header();
    for len in [1, 7, 100, 4096, HEADER_LEN - 1] {
        match open_bytes(header[..len].to_vec()) {
            Err(StoreError::Corrupt { offset: 0, .. }) => {}
            Err(e) => panic!("{len} bytes: {e}"),
            Ok(_) => panic!("{len} bytes of a header opened as a new store"),
        }
    }
    // An empty file holds nothing: it becomes a new store.
    let store = open_bytes(Vec::new()).unwrap();
    assert!(store.is_empty());
}

/// A whole header overwritten by zeros (a filesystem that lost the file's
/// first blocks, say), with records after it, is damage at offset 0; the
/// error must not call the file shorter than a header, which it is not.
#[test]
fn a_store_file_whose_header_is_zeroed_is_not_called_short() {
    let (bytes, _, _) = six_records();
    for keep in [HEADER_LEN, bytes.len()] {
        let mut zeroed = bytes[..keep].to_vec();
        zeroed[..HEADER_LEN].fill(0);
        match open_bytes(zeroed) {
            Err(e @ StoreError::Corrupt { offset: 0, .. }) => {
                let message = e.to_string();
                assert!(!message.contains("shorter"), "{keep} bytes: {message}");
            }
            Err(e) => panic!("{keep} bytes: {e}"),
            Ok(_) => panic!("{keep} bytes opened"),
        }
    }
}

/// A store file cut short to a part of its header (by a host's mistake, or
/// a filesystem's) is an error naming it, and is left as it was: it was
/// taken for a creation cut short and overwritten by a new, empty store.
#[test]
fn a_store_file_cut_to_part_of_its_header_is_an_error_and_kept() {
    let sim = SimFs::new();
    let store = open(&sim, FileStoreOptions::default()).unwrap();
    store.insert(sample(1, 0)).unwrap();
    store.insert(sample(2, 0)).unwrap();
    drop(store);
    for len in [100, 4096] {
        let cut = sim.read(&path()).unwrap()[..len].to_vec();
        let sim = SimFs::new();
        sim.put(&path(), cut.clone());
        match open(&sim, FileStoreOptions::default()) {
            Err(StoreError::Corrupt {
                offset: 0,
                path: named,
                ..
            }) => {
                assert_eq!(named, path(), "{len} bytes");
            }
            Err(e) => panic!("{len} bytes: {e}"),
            Ok(_) => panic!("{len} bytes opened as an empty store"),
        }
        assert_eq!(
            sim.read(&path()).unwrap(),
            cut,
            "{len} bytes: the file changed"
        );
    }
}

/// A crash at any point of a store's creation leaves no file, or a whole
/// empty store: never a part of a header, which an open would refuse. (It
/// fails if the header is renamed into place before it is durable.)
#[test]
fn a_crash_while_creating_a_store_leaves_none_or_a_whole_one() {
    let mut rng = Rng::new(7);
    let mut creations = 0;
    for call in 0..16 {
        for _ in 0..64 {
            let sim = SimFs::new();
            sim.die_at_call(call);
            creations += usize::from(open(&sim, FileStoreOptions::default()).is_ok());
            sim.crash(|n| rng.below(n));
            let store = open(&sim, FileStoreOptions::default())
                .unwrap_or_else(|e| panic!("death at call {call}: {e}"));
            assert!(store.is_empty(), "death at call {call}");
            store.insert(sample(1, 0)).unwrap();
        }
    }
    // Some of the deaths came after the creation was done.
    assert!(creations > 0);
}

/// A fixed workload: batches and one compaction.
fn workload() -> Vec<Option<Vec<Change>>> {
    let mut steps = Vec::new();
    for i in 0..10u64 {
        steps.push(Some(vec![Change::Insert(sample(i + 1, 0))]));
        if i % 3 == 2 {
            steps.push(Some(vec![
                Change::Replace(sample(i, i as usize)),
                Change::Settings(settings(i as usize)),
            ]));
        }
        if i == 6 {
            steps.push(None); // compaction
        }
    }
    steps.push(Some(vec![Change::Remove(KeyId::from_u64(2))]));
    steps
}

fn run_step(store: &FileStore, step: &Option<Vec<Change>>) -> Result<(), StoreError> {
    match step {
        Some(batch) => store.apply(batch.clone()),
        None => store.compact(),
    }
}

#[test]
fn an_io_error_on_any_call_is_reported_and_stops_further_writes() {
    let steps = workload();
    // The state after each number of completed steps.
    let mut states = vec![State::default()];
    for step in &steps {
        let last = states.last().unwrap().clone();
        states.push(match step {
            Some(batch) => last.after(batch).unwrap(),
            None => last,
        });
    }
    let counting = SimFs::new();
    let store = open(&counting, FileStoreOptions::default()).unwrap();
    let before = counting.calls();
    for step in &steps {
        run_step(&store, step).unwrap();
    }
    let calls = counting.calls() - before;
    assert_eq!(State::of(&store), *states.last().unwrap());

    for errno in [EIO, ENOSPC] {
        for n in 1..=calls {
            for fate in 0..4 {
                let sim = SimFs::new();
                let store = open(&sim, FileStoreOptions::default()).unwrap();
                sim.fail_call(n, errno);
                let results: Vec<_> = steps.iter().map(|step| run_step(&store, step)).collect();
                let failed = results
                    .iter()
                    .position(Result::is_err)
                    .unwrap_or_else(|| panic!("call {n}: no error"));
                assert!(
                    matches!(&results[failed], Err(StoreError::Io { .. })),
                    "call {n}: {:?}",
                    results[failed]
                );
                // A compaction that failed before its rename left the old
                // file in place and the store working; any other failure
                // stops every later write until the store is reopened.
                let carried_on =
                    steps[failed].is_none() && results[failed + 1..].iter().all(Result::is_ok);
                if !carried_on {
                    for later in &results[failed + 1..] {
                        assert!(
                            matches!(later, Err(StoreError::Poisoned(_))),
                            "call {n}: {later:?}"
                        );
                    }
                }
                // Memory holds exactly the acknowledged steps.
                let acked = if carried_on {
                    states.last().unwrap()
                } else {
                    &states[failed]
                };
                assert_eq!(&State::of(&store), acked, "call {n}: memory diverged");
                drop(store);
                let mut rng = Rng::new(fate);
                sim.crash(|k| rng.below(k));
                let reopened = open(&sim, FileStoreOptions::default())
                    .unwrap_or_else(|e| panic!("call {n}: {e}"));
                let got = State::of(&reopened);
                // The failed step may have reached the disk, whole; nothing else.
                let allowed = if carried_on {
                    got == *acked
                } else {
                    got == states[failed] || got == states[failed + 1]
                };
                assert!(
                    allowed,
                    "call {n}, {errno}, fate {fate}: reopened state is neither before nor after the failed step"
                );
            }
        }
    }
}

#[test]
fn export_then_import_copies_the_store() {
    let sim = SimFs::new();
    let (source, state) = store_with_history(&sim, 11);
    let mut export = Vec::new();
    source.export(&mut export).unwrap();
    let text = String::from_utf8(export.clone()).unwrap();
    assert!(text.lines().next().unwrap().contains("keyward_export"));

    let other = SimFs::new();
    let target = open(&other, FileStoreOptions::default()).unwrap();
    target.insert(sample(1000, 0)).unwrap();
    let report = target.import(&export[..], ImportMode::Replace).unwrap();
    assert_eq!(report.imported, state.keys.len());
    assert_eq!(State::of(&target), state);
    drop(target);
    assert_eq!(
        State::of(&open(&other, FileStoreOptions::default()).unwrap()),
        state
    );
}

/// A writer that fails every write after the first `ok` bytes, as a full
/// disk or a closed pipe does.
struct FailingWriter {
    ok: usize,
}

impl std::io::Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.ok == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left",
            ));
        }
        let n = buf.len().min(self.ok);
        self.ok -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn an_export_whose_writer_fails_is_an_io_error_of_the_export() {
    let sim = SimFs::new();
    let (store, _) = store_with_history(&sim, 3);
    let mut whole = Vec::new();
    store.export(&mut whole).unwrap();
    // Wherever the writer stops taking bytes: in the header, at a line
    // break, in a key's line.
    for ok in 0..whole.len() {
        for result in [
            store.export(FailingWriter { ok }),
            export(&store, FailingWriter { ok }),
        ] {
            match result {
                Err(StoreError::Io { path, source }) => {
                    assert_eq!(path, Path::new("<export>"), "at byte {ok}");
                    assert_eq!(source.kind(), std::io::ErrorKind::StorageFull);
                }
                other => panic!("at byte {ok}: {other:?}"),
            }
        }
    }
}

/// A store that runs `between` when its records are read for an export,
/// after its settings were read: a write landing between the two reads.
#[derive(Debug)]
struct WriteDuringExport {
    store: FileStore,
    between: fn(&FileStore),
}

impl KeyStore for WriteDuringExport {
    fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>> {
        self.store.lookup(id)
    }
    fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        self.store.list(owner)
    }
    fn snapshot(&self) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        (self.between)(&self.store);
        self.store.snapshot()
    }
    fn load_settings(&self) -> Result<Option<RingSettings>, StoreError> {
        self.store.load_settings()
    }
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        self.store.apply(changes)
    }
}

#[test]
fn an_export_taken_during_a_revoke_all_never_brings_the_revoked_keys_back() {
    let sim = SimFs::new();
    let store = open(&sim, FileStoreOptions::default()).unwrap();
    store.save_settings(&settings(0)).unwrap();
    store.insert(sample(1, 0)).unwrap();
    // A revoke-all (a settings write raising the epoch) lands while the
    // export reads the store: key 1, stamped with epoch 0, is revoked.
    let racing = WriteDuringExport {
        store,
        between: |store: &FileStore| {
            if store.load_settings().unwrap().unwrap().epoch == 0 {
                store.save_settings(&settings(1)).unwrap();
            }
        },
    };
    let mut out = Vec::new();
    export(&racing, &mut out).unwrap();
    for mode in [ImportMode::Replace, ImportMode::Merge] {
        let target = open(&SimFs::new(), FileStoreOptions::default()).unwrap();
        target.import(&out[..], mode).unwrap();
        let key = target.lookup(KeyId::from_u64(1)).unwrap();
        let epoch = target.load_settings().unwrap().map_or(0, |s| s.epoch);
        assert!(
            key.key.epoch < epoch || key.key.status == StatusCode::Revoked,
            "{mode:?}: a key revoked when the export read it imports active"
        );
    }
}

#[test]
fn merge_import_never_creates_two_keys_with_one_id() {
    let sim = SimFs::new();
    let (source, state) = store_with_history(&sim, 12);
    let mut export = Vec::new();
    source.export(&mut export).unwrap();
    let existing_id = *state.keys.keys().next().unwrap();

    let other = SimFs::new();
    let target = open(&other, FileStoreOptions::default()).unwrap();
    let mine = sample(existing_id, 77);
    target.insert(mine.clone()).unwrap();
    target.insert(sample(5000, 1)).unwrap();
    let report = target.import(&export[..], ImportMode::Merge).unwrap();
    assert_eq!(report.skipped, 1);
    assert_eq!(report.imported, state.keys.len() - 1);
    assert_eq!(target.len(), state.keys.len() + 1);
    assert_eq!(*target.lookup(KeyId::from_u64(existing_id)).unwrap(), mine);
}

#[test]
fn a_bad_import_changes_nothing() {
    let sim = SimFs::new();
    let (store, state) = store_with_history(&sim, 13);
    let mut export = Vec::new();
    store.export(&mut export).unwrap();
    let mut text = String::from_utf8(export).unwrap();
    text.push_str("{not json}\n");
    match store.import(text.as_bytes(), ImportMode::Replace) {
        Err(StoreError::InvalidImport { line, .. }) => assert_eq!(line, text.lines().count()),
        other => panic!("{other:?}"),
    }
    let first_key = text.lines().nth(1).unwrap().to_owned();
    let twice = format!(
        "{}\n{first_key}\n{first_key}\n",
        text.lines().next().unwrap()
    );
    assert!(matches!(
        store.import(twice.as_bytes(), ImportMode::Replace),
        Err(StoreError::InvalidImport { line: 3, .. })
    ));
    assert!(store.import(&b""[..], ImportMode::Merge).is_err());
    assert_eq!(State::of(&store), state);
}

/// Imports an export of a store with some history whose first key record
/// `edit` has changed; asserts that the import is refused naming line 2
/// with a reason containing `expected`, and changes nothing.
/// `store`'s export with `edit` made to its first key's record.
fn edited_export(store: &FileStore, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut export = Vec::new();
    store.export(&mut export).unwrap();
    let text = String::from_utf8(export).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut record: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    let key = if record.get("key").is_some() {
        &mut record["key"]
    } else {
        &mut record
    };
    assert!(key.get("owner").is_some(), "the key record: {key}");
    edit(key);
    lines[1] = record.to_string();
    lines.join("\n") + "\n"
}

fn refused_import_of_an_edited_key(
    seed: u64,
    expected: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let sim = SimFs::new();
    let (store, state) = store_with_history(&sim, seed);
    let edited = edited_export(&store, edit);
    match store.import(edited.as_bytes(), ImportMode::Replace) {
        Err(StoreError::InvalidImport { line: 2, reason }) => {
            assert!(reason.contains(expected), "{expected:?} not in {reason:?}");
        }
        other => panic!("{expected}: {other:?}"),
    }
    assert_eq!(State::of(&store), state);
}

/// The input of an import is the host's reader, and its error may quote
/// what it was reading (a row, a request, a decompressed block): the
/// reason repeats it as every other echo of input does, with no run of
/// letters and digits long enough to hold part of a key's body, as a store
/// error in an event is redacted.
#[test]
fn an_import_whose_reader_fails_repeats_no_key_its_error_quotes() {
    struct Failing(String);
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other(format!("bad block near {}", self.0)))
        }
    }
    let ring = crate::KeyRing::builder("acme")
        .build(crate::MemoryStore::new())
        .unwrap();
    let issued = ring.issue(crate::NewKey::new("o")).unwrap();
    let key = issued.secret.expose();
    let body = &key["acme_".len()..];
    let sim = SimFs::new();
    let (store, state) = store_with_history(&sim, 41);
    let input = (&b"{\"keyward_export\":1}\n"[..]).chain(Failing(key.to_owned()));
    match store.import(input, ImportMode::Merge) {
        Err(e @ StoreError::InvalidImport { line: 2, .. }) => {
            let shown = e.to_string();
            assert_eq!(
                shown,
                "invalid import at line 2: bad block near acme_<42 characters>"
            );
            assert!(
                !(0..=body.len() - 17).any(|i| shown.contains(&body[i..i + 17])),
                "{shown}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(State::of(&store), state);
}

#[test]
fn an_import_with_a_use_limit_of_zero_is_refused() {
    // Read as "no limit", a hand-edited 0 would grant unlimited uses.
    refused_import_of_an_edited_key(14, "use_limit", |key| {
        key["use_limit"] = serde_json::json!(0);
    });
}

/// The reason of a line that does not read names no other line than the
/// one the error names, and keeps where on it the error is: serde_json
/// counts the lines of what it was given, a single line, so its "at line 1
/// column N" on the second line of an export contradicted "at line 2", and
/// a long reason, cut after 256 characters, lost the column.
#[test]
fn an_import_reason_names_no_line_but_its_own_and_keeps_the_column() {
    let sim = SimFs::new();
    let (store, state) = store_with_history(&sim, 42);
    let refused = |text: &str| match store.import(text.as_bytes(), ImportMode::Replace) {
        Err(e @ StoreError::InvalidImport { line: 2, .. }) => e.to_string(),
        other => panic!("{other:?}"),
    };
    let header = edited_export(&store, |_| {})
        .lines()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        refused(&format!("{header}\n{{\"hash\": }}\n")),
        "invalid import at line 2: expected value (column 10)"
    );
    let edited = edited_export(&store, |key| {
        key["expire_at"] = serde_json::json!("2026-01-01T00:00:00Z");
    });
    // Where serde_json stopped: the end of the field's name.
    let column = edited.lines().nth(1).unwrap().find("expire_at").unwrap() + "expire_at\"".len();
    let shown = refused(&edited);
    assert!(
        shown.starts_with("invalid import at line 2: unknown field `expire_at`, expected "),
        "{shown}"
    );
    assert!(!shown.contains("line 1"), "{shown}");
    assert!(shown.ends_with(&format!(" (column {column})")), "{shown}");
    assert_eq!(State::of(&store), state);
}

/// A misspelt restriction in an edited export is refused, not skipped:
/// skipped, `expire_at` would import a key that never expires and
/// `use_limt` one with unlimited uses. The same holds for the first line.
#[test]
fn an_import_with_a_field_this_version_does_not_know_is_refused() {
    refused_import_of_an_edited_key(15, "unknown field `expire_at`", |key| {
        key["expire_at"] = serde_json::json!("2026-01-01T00:00:00Z");
    });
    refused_import_of_an_edited_key(16, "unknown field `use_limt`", |key| {
        key["use_limt"] = serde_json::json!(1);
    });
    let sim = SimFs::new();
    let (store, state) = store_with_history(&sim, 17);
    let mut export = Vec::new();
    store.export(&mut export).unwrap();
    let text = String::from_utf8(export).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    let mut header: serde_json::Value = serde_json::from_str(first).unwrap();
    header["setings"] = serde_json::json!(null);
    let edited = format!("{header}\n{rest}");
    match store.import(edited.as_bytes(), ImportMode::Replace) {
        Err(StoreError::InvalidImport { line: 1, reason }) => {
            assert!(reason.contains("unknown field `setings`"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(State::of(&store), state);
}

/// An edited export cannot bring in a record whose fields `issue` or
/// `update` would refuse to write, nor a revocation reason `revoke` would
/// refuse for its length. (A blank reason, which `revoke` has refused only
/// since 677a33d, still imports, as a store written before then may hold
/// one.)
#[test]
fn an_import_holds_keys_to_the_limits_of_issue() {
    let long = serde_json::json!("x".repeat(257));
    let many: serde_json::Map<_, _> = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
    let scopes: Vec<_> = (0..257).map(|i| format!("r{i}:read")).collect();
    let networks: Vec<_> = (0..65).map(|i| format!("10.0.0.{i}/32")).collect();
    // (words of the reason, field, value given to it)
    let edits = [
        ("owner must not be empty", "owner", serde_json::json!("")),
        ("NUL", "owner", serde_json::json!("a\0b")),
        ("owner and name", "owner", long.clone()),
        ("owner and name", "name", long.clone()),
        (
            "description",
            "description",
            serde_json::json!("d".repeat(4097)),
        ),
        ("metadata", "metadata", many.into()),
        ("metadata", "metadata", serde_json::json!({ "k": long })),
        (
            "reason",
            "status",
            serde_json::json!({
                "state": "revoked",
                "at": "2026-01-01T00:00:00Z",
                "reason": long,
            }),
        ),
        (
            "contact",
            "contact",
            serde_json::json!({
                "first_name": "a",
                "last_name": "b",
                "login": long,
                "email": "d",
            }),
        ),
        ("256 scopes", "scopes", scopes.into()),
        (
            "64 networks",
            "bindings",
            serde_json::json!({ "networks": networks }),
        ),
        ("hint", "hint", serde_json::json!("h".repeat(41))),
        (
            "period must be positive",
            "expiry",
            serde_json::to_value(crate::ExpiryPolicy::Idle(time::Duration::ZERO)).unwrap(),
        ),
    ];
    for (seed, (expected, field, value)) in (20..).zip(edits) {
        refused_import_of_an_edited_key(seed, expected, |key| key[field] = value);
    }
    // A lifetime has a deadline, without which the record does not read.
    refused_import_of_an_edited_key(40, "period must be positive", |key| {
        let policy = crate::ExpiryPolicy::Lifetime(time::Duration::hours(-1));
        key["expiry"] = serde_json::to_value(policy).unwrap();
        key["expires_at"] = serde_json::json!("2001-01-01T00:00:00Z");
    });
}

/// Nor a record whose expiry policy has a deadline (an instant, a date, a
/// lifetime) but whose resolved deadline is missing or later: `verify`
/// goes by the resolved deadline, so such a key, shown with its policy,
/// would never expire (no call writes one: `issue` resolves the deadline
/// with the policy, and a rotation's successor keeps its predecessor's,
/// which is earlier).
#[test]
fn an_import_refuses_a_policy_whose_deadline_is_missing_or_later() {
    let edits = [
        crate::ExpiryPolicy::At(datetime!(2001-01-01 0:00 UTC)),
        crate::ExpiryPolicy::EndOfDate(time::macros::date!(2001 - 01 - 01)),
        crate::ExpiryPolicy::Lifetime(time::Duration::days(1)),
    ];
    for (seed, policy) in (50..).zip(edits) {
        refused_import_of_an_edited_key(seed, "deadline", |key| {
            key["expiry"] = serde_json::to_value(policy).unwrap();
            key.as_object_mut().unwrap().remove("expires_at");
        });
        refused_import_of_an_edited_key(seed, "deadline", |key| {
            key["expiry"] = serde_json::to_value(policy).unwrap();
            key["expires_at"] = serde_json::json!("2200-01-01T00:00:00Z");
        });
    }
    // What a ring writes imports: keys with such policies, and the
    // successor of a rotation, created later with its predecessor's
    // deadline.
    let clock = crate::ManualClock::new(datetime!(2026-01-01 0:00 UTC));
    let ring = crate::KeyRing::builder("acme")
        .clock(clock.clone())
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap();
    for policy in edits.into_iter().skip(2).chain([
        crate::ExpiryPolicy::At(datetime!(2027-01-01 0:00 UTC)),
        crate::ExpiryPolicy::EndOfDate(time::macros::date!(2027 - 01 - 01)),
        crate::ExpiryPolicy::Idle(time::Duration::hours(1)),
        crate::ExpiryPolicy::Never,
    ]) {
        let issued = ring.issue(crate::NewKey::new("o").expiry(policy)).unwrap();
        clock.advance(time::Duration::minutes(1));
        ring.rotate(issued.key.id(), time::Duration::ZERO).unwrap();
    }
    let mut export = Vec::new();
    crate::store::export(ring.store(), &mut export).unwrap();
    let sim = SimFs::new();
    let store = open(&sim, FileStoreOptions::default()).unwrap();
    let report = store.import(&export[..], ImportMode::Replace).unwrap();
    assert_eq!(report.imported, 10);
}

/// Nor a deadline on a key the ring's default governs: `verify` passes it
/// over, while [`Key::own_deadline`] would show it.
#[test]
fn an_import_refuses_a_deadline_without_a_policy() {
    refused_import_of_an_edited_key(61, "deadline", |key| {
        key.as_object_mut().unwrap().remove("expiry");
        key["expires_at"] = serde_json::json!("2001-01-01T00:00:00Z");
    });
}

/// Nor a replaced key without the end of its rotation grace: a rotation
/// always sets one, and without it the replaced key would work beside its
/// successor for ever.
#[test]
fn an_import_refuses_a_rotated_key_without_a_grace_end() {
    let other = serde_json::to_value(crate::KeyId::from_u64(7)).unwrap();
    refused_import_of_an_edited_key(60, "grace", |key| {
        key["rotated_to"] = other;
        key.as_object_mut().unwrap().remove("grace_until");
    });
}

/// A key pasted into a field of an edited export is not repeated in the
/// error that refuses the line.
#[test]
fn an_import_error_does_not_repeat_a_key_pasted_into_a_field() {
    let ring = crate::KeyRing::builder("acme")
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap();
    let issued = ring.issue(crate::NewKey::new("o")).unwrap();
    let pasted = issued.secret.expose().to_owned();
    let secret = &pasted[pasted.len() - 30..pasted.len() - 6];
    for field in ["scopes", "expiry", "status", "created_at", "hint"] {
        let sim = SimFs::new();
        let (store, _) = store_with_history(&sim, 40);
        let edited = edited_export(&store, |key| key[field] = serde_json::json!(pasted));
        match store.import(edited.as_bytes(), ImportMode::Replace) {
            Err(e @ StoreError::InvalidImport { line: 2, .. }) => {
                let message = format!("{e} {e:?}");
                assert!(!message.contains(secret), "{field}: {message}");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
}

/// Nor a key or access token pasted into a record's free text, the
/// revocation reason included: `revoke` refuses such a reason as `issue`
/// and `update` refuse such a description, and the error does not repeat
/// the text.
#[test]
fn an_import_refuses_a_key_pasted_into_free_text() {
    let ring = crate::KeyRing::builder("acme")
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap();
    let issued = ring.issue(crate::NewKey::new("o")).unwrap();
    let pasted = format!("leaked: {}", issued.secret.expose());
    let secret = &issued.secret.expose()[issued.secret.expose().len() - 30..];
    let edits: [(&str, &str, serde_json::Value); 3] = [
        ("description", "description", serde_json::json!(pasted)),
        ("metadata", "metadata", serde_json::json!({ "k": pasted })),
        (
            "reason",
            "status",
            serde_json::json!({
                "state": "revoked",
                "at": "2026-01-01T00:00:00Z",
                "reason": pasted,
            }),
        ),
    ];
    for (seed, (expected, field, value)) in (70..).zip(edits) {
        let sim = SimFs::new();
        let (store, state) = store_with_history(&sim, seed);
        let edited = edited_export(&store, |key| key[field] = value);
        match store.import(edited.as_bytes(), ImportMode::Replace) {
            Err(e @ StoreError::InvalidImport { line: 2, .. }) => {
                let message = format!("{e} {e:?}");
                assert!(message.contains(expected), "{field}: {message}");
                assert!(message.contains("API key"), "{field}: {message}");
                assert!(!message.contains(secret), "{field}: {message}");
            }
            other => panic!("{field}: {other:?}"),
        }
        assert_eq!(State::of(&store), state);
    }
}

/// Nor can it bring in a ring default that no call could set.
#[test]
fn an_import_refuses_a_default_expiry_period_that_is_not_positive() {
    let sim = SimFs::new();
    let store = open(&sim, FileStoreOptions::default()).unwrap();
    store.save_settings(&settings(0)).unwrap();
    store.insert(sample(1, 0)).unwrap();
    let mut export = Vec::new();
    store.export(&mut export).unwrap();
    let text = String::from_utf8(export).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut header: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    header["settings"]["default_expiry"] =
        serde_json::to_value(crate::ExpiryPolicy::Lifetime(time::Duration::ZERO)).unwrap();
    lines[0] = header.to_string();
    let state = State::of(&store);
    let edited = lines.join("\n") + "\n";
    match store.import(edited.as_bytes(), ImportMode::Replace) {
        Err(StoreError::InvalidImport { line: 1, reason }) => {
            assert!(reason.contains("must be positive"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(State::of(&store), state);
}

/// A store with a superseded default and one key, and its export as
/// text: to edit into exports no call could write.
fn exported_with_a_superseded_default(sim: &SimFs) -> (FileStore, RingSettings, String) {
    let store = open(sim, FileStoreOptions::default()).unwrap();
    let mut kept = settings(0);
    kept.replace_default(ExpiryPolicy::Never, datetime!(2026-03-01 0:00 UTC));
    store.save_settings(&kept).unwrap();
    store.insert(sample(1, 0)).unwrap();
    let mut export = Vec::new();
    store.export(&mut export).unwrap();
    (store, kept, String::from_utf8(export).unwrap())
}

/// An import names the first bad line: settings no call could write, on
/// line 1, are named before a bad key further down.
#[test]
fn an_import_names_bad_settings_on_line_1_before_a_bad_key_after_them() {
    let sim = SimFs::new();
    let (store, _, text) = exported_with_a_superseded_default(&sim);
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let header: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let zero = serde_json::to_value(ExpiryPolicy::Lifetime(time::Duration::ZERO)).unwrap();
    let mut default = header.clone();
    default["settings"]["default_expiry"] = zero.clone();
    let mut superseded = header;
    superseded["settings"]["superseded"][0]["policy"] = zero;
    let state = State::of(&store);
    for (header, reason) in [
        (default, "must be positive"),
        (superseded, "superseded default"),
    ] {
        let mut edited = lines.clone();
        edited[0] = header.to_string();
        edited.push("{\"not\": \"a key\"}".into());
        let edited = edited.join("\n") + "\n";
        match store.import(edited.as_bytes(), ImportMode::Replace) {
            Err(StoreError::InvalidImport { line: 1, reason: r }) => {
                assert!(r.contains(reason), "{r}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(State::of(&store), state);
    }
}

/// An export (or a store) an earlier keyward wrote in a build where
/// `time`'s `serde-human-readable` feature was on (any crate of the host
/// may enable it: features are unified) holds periods as
/// `"<seconds>.<nanoseconds>"`. It imports: the policies read as they were
/// written.
#[test]
fn an_export_with_periods_in_the_form_of_time_human_readable_imports() {
    let sim = SimFs::new();
    let store = open(&sim, FileStoreOptions::default()).unwrap();
    store.save_settings(&settings(0)).unwrap();
    store.insert(sample(1, 0)).unwrap();
    let mut export = Vec::new();
    store.export(&mut export).unwrap();
    let text = String::from_utf8(export).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut header: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    header["settings"]["default_expiry"] = serde_json::json!({"lifetime": "2592000.000000000"});
    lines[0] = header.to_string();
    let mut record: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    let key = if record.get("key").is_some() {
        &mut record["key"]
    } else {
        &mut record
    };
    key["expiry"] = serde_json::json!({"idle": "7200.000000000"});
    lines[1] = record.to_string();
    let edited = lines.join("\n") + "\n";
    store
        .import(edited.as_bytes(), ImportMode::Replace)
        .unwrap();
    let settings = store.load_settings().unwrap().unwrap();
    assert_eq!(settings.default_expiry, ExpiryPolicy::days(30));
    let key = store.lookup(KeyId::from_u64(1)).unwrap();
    assert_eq!(
        key.key().expiry(),
        Some(ExpiryPolicy::Idle(time::Duration::hours(2)))
    );
}

/// Nor more superseded defaults than a store keeps: every change of the
/// default prunes them to that many, in time cubic in their number (with
/// 2,000 in a 170 KB export, one `set_default_expiry` took 53 s, and as
/// long again under the store's write lock).
#[test]
fn an_import_refuses_more_superseded_defaults_than_a_store_keeps() {
    let sim = SimFs::new();
    let store = open(&sim, FileStoreOptions::default()).unwrap();
    store.insert(sample(1, 0)).unwrap();
    let mut export = Vec::new();
    store.export(&mut export).unwrap();
    let text = String::from_utf8(export).unwrap();
    let state = State::of(&store);
    let with = |n: usize| {
        let mut kept = settings(0);
        kept.superseded = (0..n)
            .map(|i| super::super::Superseded {
                policy: ExpiryPolicy::days(1),
                since: datetime!(2026-01-01 0:00 UTC),
                until: datetime!(2026-02-01 0:00 UTC) + time::Duration::minutes(i as i64),
            })
            .collect();
        let header = serde_json::json!({ "keyward_export": 1, "settings": kept });
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[0] = header.to_string();
        (kept, lines.join("\n") + "\n")
    };
    let (_, too_many) = with(super::super::SUPERSEDED_KEPT + 1);
    match store.import(too_many.as_bytes(), ImportMode::Replace) {
        Err(StoreError::InvalidImport { line: 1, reason }) => {
            assert!(reason.contains("superseded defaults"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(State::of(&store), state);
    // As many as a store keeps come through.
    let (kept, most) = with(super::super::SUPERSEDED_KEPT);
    store.import(most.as_bytes(), ImportMode::Replace).unwrap();
    assert_eq!(store.load_settings().unwrap(), Some(kept));
}

/// A settings record in the file with more superseded defaults than a
/// store keeps does not decode: the open fails (fail closed; dropping the
/// record would drop its revoke-all epoch with it).
#[test]
fn a_file_with_more_superseded_defaults_than_kept_does_not_open() {
    let sim = SimFs::new();
    let store = open(&sim, FileStoreOptions::default()).unwrap();
    store.insert(sample(1, 0)).unwrap();
    drop(store);
    let mut bytes = sim.read(&path()).unwrap();
    let start = bytes.len() as u64;
    let mut many = settings(3);
    many.superseded = (0..=super::super::SUPERSEDED_KEPT)
        .map(|i| super::super::Superseded {
            policy: ExpiryPolicy::days(1),
            since: datetime!(2026-01-01 0:00 UTC),
            until: datetime!(2026-02-01 0:00 UTC) + time::Duration::minutes(i as i64),
        })
        .collect();
    bytes.extend(encode(&[EntryRef::Settings(&many)], usize::MAX).unwrap());
    // A valid record after it, so it is not the file's last write.
    bytes.extend(encode(&[EntryRef::Remove(KeyId::from_u64(9))], usize::MAX).unwrap());
    match open_bytes(bytes) {
        Err(StoreError::Corrupt { offset, .. }) => assert_eq!(offset, start),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened"),
    }
}

/// Nor superseded defaults no change of the default could have written,
/// while one that could be written comes through.
#[test]
fn an_import_refuses_a_superseded_default_no_change_could_write() {
    let sim = SimFs::new();
    let (store, kept, text) = exported_with_a_superseded_default(&sim);
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let header: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let state = State::of(&store);
    let edit = |field: &str, value: serde_json::Value| {
        let mut edited_header = header.clone();
        edited_header["settings"]["superseded"][0][field] = value;
        let mut edited = lines.clone();
        edited[0] = edited_header.to_string();
        edited.join("\n") + "\n"
    };
    let negative = serde_json::to_value(ExpiryPolicy::Lifetime(-time::Duration::DAY)).unwrap();
    match store.import(edit("policy", negative).as_bytes(), ImportMode::Replace) {
        Err(StoreError::InvalidImport { line: 1, reason }) => {
            assert!(reason.contains("superseded default"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(State::of(&store), state);
    // One that ends before it began is what a clock stepping back between
    // two changes writes: it comes through.
    let stepped_back = edit("since", serde_json::json!("2026-04-01T00:00:00Z"));
    store
        .import(stepped_back.as_bytes(), ImportMode::Replace)
        .unwrap();
    let imported = store.load_settings().unwrap().unwrap();
    assert_eq!(imported.superseded[0].since, datetime!(2026-04-01 0:00 UTC));
    // The export as written imports, superseded defaults and all.
    store.import(text.as_bytes(), ImportMode::Replace).unwrap();
    assert_eq!(store.load_settings().unwrap(), Some(kept));
}

#[test]
fn messages_name_the_file() {
    let p = Path::new("/srv/keys.kw");
    assert_eq!(
        StoreError::Locked(p.into()).to_string(),
        "store /srv/keys.kw is locked by another open store"
    );
    assert_eq!(
        StoreError::Corrupt {
            path: p.into(),
            offset: 42,
            reason: "damaged record followed by committed records"
        }
        .to_string(),
        "store /srv/keys.kw is corrupt at byte 42: damaged record followed by committed records"
    );
    assert_eq!(
        StoreError::Poisoned(p.into()).to_string(),
        "store /srv/keys.kw refuses writes after an earlier i/o error; reopen it"
    );
}

#[test]
fn merge_import_keeps_the_sources_revoke_all() {
    // The source revoked everything (epoch 1) after issuing key 1 (epoch 0).
    let source_disk = SimFs::new();
    let source = open(&source_disk, FileStoreOptions::default()).unwrap();
    source.insert(sample(1, 0)).unwrap();
    let mut revoked_all = settings(0);
    revoked_all.epoch = 1;
    revoked_all.revoked_all_at = Some(datetime!(2026-02-01 0:00 UTC));
    source.save_settings(&revoked_all).unwrap();
    let mut export = Vec::new();
    source.export(&mut export).unwrap();

    // The target never revoked anything: epoch 0, and one key of its own.
    let target_disk = SimFs::new();
    let target = open(&target_disk, FileStoreOptions::default()).unwrap();
    target.save_settings(&settings(0)).unwrap();
    target.insert(sample(2, 0)).unwrap();
    target.import(&export[..], ImportMode::Merge).unwrap();

    let imported = target.lookup(KeyId::from_u64(1)).unwrap();
    assert!(
        matches!(imported.key().status(), Status::Revoked { .. }),
        "a key revoked by the source's revoke_all came back to life"
    );
    assert_eq!(target.load_settings().unwrap().unwrap().epoch(), 0);
    assert_eq!(
        target.lookup(KeyId::from_u64(2)).unwrap().key().status(),
        Status::Active
    );
}

#[test]
fn merge_into_a_store_without_settings_keeps_each_key_as_it_was() {
    // The source issued key 1, revoked everything (epoch 1), then issued
    // key 2 and key 3, and revoked key 3 by itself.
    let source = open(&SimFs::new(), FileStoreOptions::default()).unwrap();
    source.insert(sample(1, 0)).unwrap();
    let mut revoked_all = settings(0);
    revoked_all.epoch = 1;
    revoked_all.revoked_all_at = Some(datetime!(2026-02-01 0:00 UTC));
    source.save_settings(&revoked_all).unwrap();
    for (id, version) in [(2, 0), (3, 4)] {
        let mut key = sample(id, version);
        key.key.epoch = 1;
        source.insert(key).unwrap();
    }
    let mut export = Vec::new();
    source.export(&mut export).unwrap();

    // The target has no settings (no ring was ever built on it), and one
    // key of its own.
    let target = open(&SimFs::new(), FileStoreOptions::default()).unwrap();
    target.insert(sample(4, 0)).unwrap();
    target.import(&export[..], ImportMode::Merge).unwrap();

    // A ring reads a key as revoked when its epoch is below the store's.
    let epoch = target.load_settings().unwrap().unwrap().epoch();
    let key = |id| target.lookup(KeyId::from_u64(id)).unwrap();
    for id in [2, 4] {
        assert_eq!(key(id).key().status(), Status::Active, "key {id}");
        assert!(
            key(id).key().epoch >= epoch,
            "active key {id} stamped epoch {} under store epoch {epoch}: revoked",
            key(id).key().epoch
        );
    }
    for id in [1, 3] {
        assert!(
            matches!(key(id).key().status(), Status::Revoked { .. }),
            "key {id}, revoked in the source, came back to life"
        );
    }
    // The target takes the source's settings, but not its revoke-all
    // history: it keeps its own epoch (0) and never ran a revoke_all.
    let taken = target.load_settings().unwrap().unwrap();
    assert_eq!((taken.epoch, taken.revoked_all_at), (0, None));
}

#[test]
fn a_key_merged_into_a_fresh_store_still_verifies() {
    // Production issued a key, ran `revoke_all`, then issued another; its
    // export is merged into a fresh preview store.
    let source = crate::KeyRing::builder("acme")
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap();
    let before = source.issue(crate::NewKey::new("acct_1")).unwrap();
    source.revoke_all().unwrap();
    let after = source.issue(crate::NewKey::new("acct_1")).unwrap();
    source.verify(after.secret.expose()).unwrap();
    let mut export = Vec::new();
    super::export(source.store(), &mut export).unwrap();

    let target = open(&SimFs::new(), FileStoreOptions::default()).unwrap();
    target.import(&export[..], ImportMode::Merge).unwrap();
    let preview = crate::KeyRing::builder("acme")
        .flush_interval(None)
        .build(target)
        .unwrap();
    let verified = preview.verify(after.secret.expose());
    assert!(
        verified.is_ok(),
        "after a merge import: {:?}",
        verified.err()
    );
    assert_eq!(
        preview.verify(before.secret.expose()).err(),
        Some(crate::VerifyError::Revoked)
    );
}

#[test]
fn a_replace_with_an_export_without_settings_leaves_none_in_memory_or_on_disk() {
    let sim = SimFs::new();
    let store = open(&sim, FileStoreOptions::default()).unwrap();
    store.save_settings(&settings(3)).unwrap();
    store.insert(sample(1, 0)).unwrap();
    // An export of a store that never had settings.
    let source = open(&SimFs::new(), FileStoreOptions::default()).unwrap();
    source.insert(sample(2, 0)).unwrap();
    let mut export = Vec::new();
    source.export(&mut export).unwrap();

    store.import(&export[..], ImportMode::Replace).unwrap();
    let served = State::of(&store);
    assert_eq!(served, State::of(&source), "the store is not the export");
    drop(store);
    let reopened = open(&sim, FileStoreOptions::default()).unwrap();
    assert_eq!(
        State::of(&reopened),
        served,
        "the reopened store differs from what the store served before"
    );
}

#[test]
fn import_never_shows_readers_an_empty_store() {
    let disk = SimFs::new();
    let store = open(&disk, FileStoreOptions::default()).unwrap();
    for id in 1..=300 {
        store.insert(sample(id, 0)).unwrap();
    }
    store.save_settings(&settings(0)).unwrap();
    let mut export = Vec::new();
    store.export(&mut export).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let misses = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let missing = store.lookup(KeyId::from_u64(150)).is_none()
                    || store.load_settings().unwrap().is_none();
                if missing {
                    misses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        for _ in 0..30 {
            store.import(&export[..], ImportMode::Replace).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(
        misses.into_inner(),
        0,
        "a reader saw a key or the settings vanish during an import"
    );
}

#[test]
fn a_restart_makes_what_it_replayed_durable() {
    // A writer dies between its write and its fsync; the process restarts
    // (the write is still in the page cache), the store is reopened, a new
    // write dies at its fsync too, and then the power fails. The store must
    // open, with everything acknowledged.
    for fate in 0..200 {
        let disk = SimFs::new();
        let store = open(&disk, FileStoreOptions::default()).unwrap();
        store.insert(sample(1, 0)).unwrap();
        // Calls: append, slot, fsync. The writes go through, the fsync dies.
        disk.die_at_call(3);
        assert!(store.insert(sample(2, 0)).is_err());
        drop(store);
        disk.restart();
        let store = open(&disk, FileStoreOptions::default()).unwrap();
        disk.die_at_call(3);
        assert!(store.insert(sample(3, 0)).is_err());
        drop(store);
        let mut rng = Rng::new(fate);
        disk.crash(|n| rng.below(n));
        let reopened =
            open(&disk, FileStoreOptions::default()).unwrap_or_else(|e| panic!("fate {fate}: {e}"));
        assert!(
            reopened.lookup(KeyId::from_u64(1)).is_some(),
            "fate {fate}: an acknowledged write was lost"
        );
        assert!(
            reopened.lookup(KeyId::from_u64(2)).is_some(),
            "fate {fate}: a replayed write was lost"
        );
    }
}

#[test]
fn a_record_that_checks_but_does_not_decode_is_an_error_naming_it() {
    let (bytes, starts, _) = six_records();
    let bad = super::format::encode_payload(b"[{\"put\": 42}]").unwrap();
    for at in [starts[1], starts[5], bytes.len()] {
        let mut damaged = bytes[..at].to_vec();
        damaged.extend_from_slice(&bad);
        damaged.extend_from_slice(&bytes[at..]);
        match open_bytes(damaged) {
            Err(StoreError::Corrupt { offset, reason, .. }) => {
                assert_eq!(offset, at as u64);
                assert_eq!(reason, "undecodable record");
            }
            other => panic!("record at {at}: expected a corruption error, got {other:?}"),
        }
    }
}

/// A record (written by a host's own code, say) whose key has a policy
/// with a deadline but no `expires_at`: read as it stands, the key would
/// never expire (`verify` goes by the resolved deadline), so the open
/// refuses it as a record that does not decode. With its deadline, the
/// same record opens.
#[test]
fn a_record_whose_policy_has_no_resolved_deadline_does_not_open() {
    let (bytes, _, _) = six_records();
    let mut stored = sample(9, 0);
    stored.key.set_expiry(
        Some(ExpiryPolicy::Lifetime(time::Duration::days(30))),
        Some(datetime!(2026-01-31 0:00 UTC)),
    );
    let whole = serde_json::json!([{ "put": stored }]);
    let mut missing = whole.clone();
    missing[0]["put"]["key"]
        .as_object_mut()
        .unwrap()
        .remove("expires_at");
    let mut null = whole.clone();
    null[0]["put"]["key"]["expires_at"] = serde_json::Value::Null;
    for (what, batch, opens) in [
        ("whole", whole, true),
        ("missing", missing, false),
        ("null", null, false),
    ] {
        let mut file = bytes.clone();
        let payload = serde_json::to_vec(&batch).unwrap();
        file.extend_from_slice(&super::format::encode_payload(&payload).unwrap());
        match open_bytes(file) {
            Ok(store) if opens => {
                let key = store.lookup(KeyId::from_u64(9)).unwrap();
                assert_eq!(
                    key.key().own_deadline(),
                    Some(datetime!(2026-01-31 0:00 UTC))
                );
            }
            Err(StoreError::Corrupt { offset, reason, .. }) if !opens => {
                assert_eq!((offset, reason), (bytes.len() as u64, "undecodable record"));
            }
            Ok(store) => panic!(
                "{what}: opened, the key's deadline read as {:?}",
                store
                    .lookup(KeyId::from_u64(9))
                    .map(|k| k.key().own_deadline())
            ),
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// A record (written by a newer build, or by hand) holding a field this
/// version does not know does not open: read without it, the key could
/// lose a restriction the field carried. The same record without the
/// field opens.
#[test]
fn a_record_with_a_field_this_version_does_not_know_does_not_open() {
    let (bytes, _, _) = six_records();
    let whole = serde_json::json!([{ "put": sample(9, 0) }]);
    let mut unknown = whole.clone();
    unknown[0]["put"]["key"]["use_limt"] = serde_json::json!(1);
    for (what, batch, opens) in [("whole", whole, true), ("unknown", unknown, false)] {
        let mut file = bytes.clone();
        let payload = serde_json::to_vec(&batch).unwrap();
        file.extend_from_slice(&super::format::encode_payload(&payload).unwrap());
        match open_bytes(file) {
            Ok(store) if opens => assert!(store.lookup(KeyId::from_u64(9)).is_some()),
            Err(StoreError::Corrupt { offset, reason, .. }) if !opens => {
                assert_eq!((offset, reason), (bytes.len() as u64, "undecodable record"));
            }
            Ok(_) => panic!("{what}: opened"),
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// A record payload that makes the parser holding it panic, as a bug in
/// decoding would (test builds only).
const PARSER_PANICS: &[u8] = b"[\"keyward test: the parser panics\"]";
/// A removed id whose application makes the applier panic (test builds
/// only).
const APPLIER_PANICS: u64 = u64::MAX - 0x7e57;

/// Called by each parser on each payload (test builds only).
pub(super) fn panic_if_asked(payload: &[u8]) {
    assert!(payload != PARSER_PANICS, "the parser panics, as asked");
}

/// Called by the applier on each removal (test builds only).
pub(super) fn panic_if_asked_to_remove(id: KeyId) {
    assert!(
        id != KeyId::from_u64(APPLIER_PANICS),
        "the applier panics, as asked"
    );
}

/// A parser or the applier that panics while a store opens is a bug, not
/// damage: the open fails with an error that says so, naming no offset,
/// rather than report the file as damaged (at offset 0, as it did) or open
/// without the records the thread held. The records around it are valid.
#[test]
fn a_thread_that_panics_while_a_store_opens_fails_the_open_as_a_bug() {
    let (bytes, starts, _) = six_records();
    let remove =
        serde_json::to_vec(&serde_json::json!([{ "remove": KeyId::from_u64(APPLIER_PANICS) }]))
            .unwrap();
    for (who, payload) in [("parser", PARSER_PANICS.to_vec()), ("applier", remove)] {
        let record = super::format::encode_payload(&payload).unwrap();
        for at in [starts[0], starts[3], bytes.len()] {
            let mut file = bytes[..at].to_vec();
            file.extend_from_slice(&record);
            file.extend_from_slice(&bytes[at..]);
            match open_bytes(file) {
                Err(StoreError::Backend(e)) => {
                    let message = e.to_string();
                    assert!(message.contains("panicked (a keyward bug"), "{message}");
                }
                Err(e) => panic!("{who} at {at}: {e}"),
                Ok(_) => panic!("{who} at {at}: opened"),
            }
        }
    }
}

/// A reader that counts the bytes taken from it.
struct Counted {
    inner: std::io::Cursor<Vec<u8>>,
    taken: Arc<std::sync::atomic::AtomicU64>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.taken
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// An open stops at the first record that does not decode: the reader,
/// the parsers and the applier stop soon after it, not at the end of the
/// file, and the record reported is still the first undecodable one in
/// file order, whatever the parsers decode after it (here more
/// undecodable records, one right behind it).
#[test]
fn an_open_stops_at_the_first_undecodable_record() {
    let (bytes, starts, _) = six_records();
    let bad = super::format::encode_payload(b"[{\"put\": 42}]").unwrap();
    let good = &bytes[starts[0]..starts[1]];
    let mut file = bytes.clone();
    let first_bad = file.len() as u64;
    file.extend_from_slice(&bad);
    file.extend_from_slice(&bad);
    let mut records = 0;
    while file.len() < 64 << 20 {
        file.extend_from_slice(if records % 1000 == 999 { &bad } else { good });
        records += 1;
    }
    let len = file.len();
    let taken = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = Counted {
        inner: std::io::Cursor::new(file),
        taken: Arc::clone(&taken),
    };
    match load(Box::new(reader), &path(), &MemoryStore::new()) {
        Err(StoreError::Corrupt { offset, reason, .. }) => {
            assert_eq!((offset, reason), (first_bad, "undecodable record"));
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened"),
    }
    // The reader reads ahead 1 MiB and a few records more; a parser held
    // up for a long while could let it read on, hence the wide bound.
    let taken = taken.load(std::sync::atomic::Ordering::Relaxed);
    assert!(taken < 16 << 20, "{taken} bytes read of {len}");
}

#[test]
fn import_brings_a_record_from_a_future_epoch_back_in_line() {
    // A tampered export: a key stamped with an epoch no revoke-all would
    // ever reach.
    let disk = SimFs::new();
    let source = open(&disk, FileStoreOptions::default()).unwrap();
    source.save_settings(&settings(0)).unwrap();
    let mut export = Vec::new();
    source.export(&mut export).unwrap();
    let mut forged = sample(7, 0);
    forged.key.epoch = u64::MAX;
    let text = String::from_utf8(export).unwrap();
    let mut header: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    header["keys"] = 1.into();
    let text = format!("{header}\n{}\n", serde_json::to_string(&forged).unwrap());
    let target = open(&SimFs::new(), FileStoreOptions::default()).unwrap();
    target.import(text.as_bytes(), ImportMode::Replace).unwrap();
    assert_eq!(target.lookup(KeyId::from_u64(7)).unwrap().key().epoch, 0);
}

/// The same at open: a record stamped with a later revoke-all epoch than
/// the settings the file holds (no write makes one: a key takes the epoch
/// of its ring, which never passes the store's) would outlive every
/// `revoke_all`, so the open brings it back in line, as an import does.
/// Records within the epoch are left as they are; without settings the
/// store's epoch is 0.
#[test]
fn open_brings_a_record_from_a_future_epoch_back_in_line() {
    let (bytes, _, _) = six_records();
    let mut forged = sample(9, 0);
    forged.key.epoch = u64::MAX;
    let mut within = sample(8, 0);
    within.key.epoch = 1;
    let batch = serde_json::json!([{ "put": forged }, { "put": within }]);
    let mut file = bytes.clone();
    let payload = serde_json::to_vec(&batch).unwrap();
    file.extend_from_slice(&super::format::encode_payload(&payload).unwrap());
    let store = open_bytes(file).unwrap();
    // `six_records` saves settings of epoch 1.
    assert_eq!(store.load_settings().unwrap().unwrap().epoch, 1);
    let epoch = |id| store.lookup(KeyId::from_u64(id)).unwrap().key().epoch;
    assert_eq!((epoch(9), epoch(8), epoch(1)), (1, 1, 0));

    // A file without settings: epoch 0.
    let sim = SimFs::new();
    let store = open(&sim, FileStoreOptions::default()).unwrap();
    store.insert(sample(9, 0)).unwrap();
    drop(store);
    let mut file = sim.read(&path()).unwrap();
    let batch = serde_json::json!([{ "put": forged }]);
    let payload = serde_json::to_vec(&batch).unwrap();
    file.extend_from_slice(&super::format::encode_payload(&payload).unwrap());
    let store = open_bytes(file).unwrap();
    assert!(store.load_settings().unwrap().is_none());
    assert_eq!(store.lookup(KeyId::from_u64(9)).unwrap().key().epoch, 0);
}

/// Puts a new file at `path` in place of whatever is there (a rename, as an
/// administrator's tool or a second process's cleanup might).
#[cfg(unix)]
fn replace_file(path: &Path) {
    let fresh = path.with_extension("fresh");
    std::fs::write(&fresh, b"").unwrap();
    std::fs::rename(&fresh, path).unwrap();
}

/// A lock file replaced between the open and the lock: the open locks the
/// file now at the path, so a second open meets the lock. (Holding the
/// lock on the replaced file, it would not.)
#[test]
#[cfg(unix)]
fn a_lock_file_replaced_while_it_is_locked_is_opened_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    let lock_path = dir.path().join("keys.kw.lock");
    let mut calls = 0;
    let held = lock_beside_with(&path, || {
        calls += 1;
        if calls == 1 {
            replace_file(&lock_path);
        }
    })
    .unwrap();
    assert_eq!(calls, 2, "the lock was taken again once");
    assert!(matches!(lock_beside(&path), Err(StoreError::Locked(_))));
    drop(held);
    assert!(lock_beside(&path).is_ok());
}

/// A lock held only for a moment, as by a child process forked while the
/// lock file was open (its copy closes when it replaces its image): the
/// open waits it out instead of reporting the store locked. A lock that
/// stays held is still reported.
#[test]
fn a_lock_held_for_a_moment_is_waited_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    let other = lock_beside(&path).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1));
        drop(other);
    });
    let held = lock_beside(&path);
    release.join().unwrap();
    assert!(held.is_ok(), "{held:?}");
    assert!(matches!(lock_beside(&path), Err(StoreError::Locked(_))));
}

/// A lock file removed or replaced every time it is locked: the open gives
/// up with an error instead of going round for ever, and holds no lock.
#[test]
#[cfg(unix)]
fn a_lock_file_that_never_stays_put_fails_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    let lock_path = dir.path().join("keys.kw.lock");
    let mut calls = 0;
    let err = lock_beside_with(&path, || {
        calls += 1;
        if calls % 2 == 0 {
            std::fs::remove_file(&lock_path).unwrap();
        } else {
            replace_file(&lock_path);
        }
    })
    .unwrap_err();
    assert_eq!(calls, LOCK_ATTEMPTS);
    match err {
        StoreError::Io {
            path: named,
            source,
        } => {
            assert_eq!(named, lock_path);
            assert!(source.to_string().contains("replaced"), "{source}");
        }
        other => panic!("{other:?}"),
    }
    assert!(lock_beside(&path).is_ok());
}

/// The lock file's open itself refuses a symbolic link (not only the check
/// before it), so a link planted between a check and the open creates
/// nothing at its target and opens no other file.
#[test]
#[cfg(unix)]
fn the_lock_file_is_never_opened_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("keys.kw.lock");
    let victim = dir.path().join("victim");
    let nowhere = dir.path().join("nowhere");
    std::fs::write(&victim, b"someone else's").unwrap();
    for target in [&victim, &nowhere] {
        std::os::unix::fs::symlink(target, &lock).unwrap();
        let err = open_lock_file(&lock).expect_err("opened through a link");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        std::fs::remove_file(&lock).unwrap();
    }
    assert!(!nowhere.exists(), "the open created the link's target");
    assert_eq!(std::fs::read(&victim).unwrap(), b"someone else's");
    assert!(open_lock_file(&lock).is_ok());
    assert!(lock.is_file());
}

/// The open makes the whole file durable and says so in a slot: damage
/// to the last record, acknowledged and reopened since, is an error, not
/// a torn tail dropped (a revocation that vanished would bring its key
/// back). (From helper-35's review.)
#[test]
fn damage_to_the_last_record_after_a_reopen_is_an_error() {
    let sim = SimFs::new();
    let store = open(&sim, FileStoreOptions::default()).unwrap();
    store.insert(sample(1, 0)).unwrap();
    store.apply(vec![Change::Replace(sample(1, 4))]).unwrap(); // revoked
    assert_eq!(
        store.lookup(KeyId::from_u64(1)).unwrap().key().status,
        crate::key::StatusCode::Revoked
    );
    drop(store);
    drop(open(&sim, FileStoreOptions::default()).unwrap());
    let mut bytes = sim.read(&path()).unwrap();
    let lengths = payload_lengths(&bytes);
    let last = bytes.len() - RECORD_HEAD_LEN - lengths.last().unwrap();
    bytes[last..].fill(0);
    match open_bytes(bytes) {
        Err(StoreError::Corrupt { offset, .. }) => assert_eq!(offset, last as u64),
        Err(e) => panic!("{e}"),
        Ok(store) => panic!(
            "opened, the revocation dropped as a torn tail ({} bytes at {:?}); key 1 is {:?}",
            store.recovery().dropped_bytes,
            store.recovery().dropped_at,
            store.lookup(KeyId::from_u64(1)).unwrap().key().status()
        ),
    }
    // An open that finds nothing new past the slots writes nothing.
    let before = sim.read(&path()).unwrap();
    drop(open(&sim, FileStoreOptions::default()).unwrap());
    assert_eq!(sim.read(&path()).unwrap(), before, "an idle open wrote");
}

/// A key `apply` took (a record of up to 512 MiB) can be rewritten,
/// though it is over a rewrite record's 16 MiB budget: it gets a record
/// of its own. (From helper-35's review: compaction failed for good.)
#[test]
fn a_key_over_the_rewrite_budget_is_compacted_in_a_record_of_its_own() {
    let sim = SimFs::new();
    let store = open(&sim, FileStoreOptions::default()).unwrap();
    let mut big = sample(1, 0);
    big.key.extra_mut().metadata = [("big".to_string(), "x".repeat(17 << 20))]
        .into_iter()
        .collect();
    store.insert(big).unwrap();
    store.insert(sample(2, 0)).unwrap();
    store.apply(vec![Change::Replace(sample(2, 1))]).unwrap();
    let state = State::of(&store);
    store
        .compact()
        .unwrap_or_else(|e| panic!("compaction: {e}"));
    assert_eq!(State::of(&store), state);
    drop(store);
    assert_eq!(
        State::of(&open(&sim, FileStoreOptions::default()).unwrap()),
        state
    );
}

/// A file of format version 1 (a 16-byte header, before the slots) is
/// refused with an error that says so, never read as damage to drop: read
/// with this layout, its first record fell in the slots and the file was
/// cut to its header. (From helper-35's review.) The reason names the
/// version, and a later version is told apart from an earlier one, so an
/// admin does not take a newer store for a broken one (helper-94).
#[test]
fn a_file_of_another_format_version_is_refused_untouched_naming_which() {
    for (version, says) in [
        (1u16, "format version 1, which this build no longer reads"),
        (3, "a later format version than this build reads"),
        (0, "an unknown format version"),
    ] {
        let mut bytes = b"KEYWARD\0".to_vec();
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&[0, 0]);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let payload = serde_json::to_vec(&[EntryRef::Put(&sample(1, 0))]).unwrap();
        bytes.extend_from_slice(&super::format::encode_payload(&payload).unwrap());
        let sim = SimFs::new();
        sim.put(&path(), bytes.clone());
        match open(&sim, FileStoreOptions::default()) {
            Err(StoreError::Corrupt {
                offset: 0, reason, ..
            }) => {
                assert!(reason.contains(says), "version {version}: {reason}");
            }
            Err(e) => panic!("version {version}: {e}"),
            Ok(store) => panic!("version {version}: opened with {} keys", store.len()),
        }
        assert_eq!(sim.read(&path()).unwrap(), bytes, "the file was changed");
    }
}

/// A crash at every call of an open that writes a slot (after a writer
/// died in its append, its slot write or its fsync), then a power loss:
/// nothing acknowledged is lost and the store opens. The power-loss tests
/// arm the crash only after the first open, so they never reach the open's
/// own slot write. (From helper-38's review: with the slot written before
/// the open's fsync, this fails and they pass.)
#[test]
fn a_crash_at_every_step_of_an_open_that_writes_a_slot_loses_nothing() {
    for die_in_write in [1u64, 2, 3] {
        let build = || {
            let sim = SimFs::new();
            let (store, state) = store_with_history(&sim, 3);
            store.insert(sample(900, 0)).unwrap();
            let acked = before_and(&state, vec![Change::Insert(sample(900, 0))]);
            // Calls: append, slot, fsync.
            sim.die_at_call(die_in_write);
            assert!(store.insert(sample(901, 0)).is_err());
            drop(store);
            sim.restart();
            (sim, acked)
        };
        let (sim, acked) = build();
        let start = sim.calls();
        let store = open(&sim, FileStoreOptions::default()).unwrap();
        let steps = sim.calls() - start;
        let full = State::of(&store);
        drop(store);
        let with_901 = before_and(&acked, vec![Change::Insert(sample(901, 0))]);
        assert!(full == acked || full == with_901);
        for step in 1..=steps {
            for fate in 0..30 {
                for restart_first in [false, true] {
                    let (sim, acked) = build();
                    sim.die_at_call(step);
                    assert!(open(&sim, FileStoreOptions::default()).is_err());
                    if restart_first {
                        // The process dies again, then the machine.
                        sim.restart();
                        let s = open(&sim, FileStoreOptions::default()).unwrap_or_else(|e| {
                            panic!("die {die_in_write}, step {step}: restart: {e}")
                        });
                        drop(s);
                    }
                    let reopened = crash_and_reopen(&sim, step, fate);
                    let got = State::of(&reopened);
                    assert!(
                        got == acked || got == with_901,
                        "die {die_in_write}, step {step}, fate {fate}: state"
                    );
                    // And once more, after a power loss with nothing pending.
                    drop(reopened);
                    let again = crash_and_reopen(&sim, step, fate + 1000);
                    assert_eq!(State::of(&again), got);
                }
            }
        }
    }
}

/// The defaults a ring keeps so that expired keys stay expired are part of
/// the settings the file holds.
#[test]
fn superseded_defaults_survive_a_reopen() {
    let sim = SimFs::new();
    let store = open(&sim, FileStoreOptions::default()).unwrap();
    let mut kept = settings(1);
    kept.replace_default(ExpiryPolicy::Never, datetime!(2026-03-01 0:00 UTC));
    assert_eq!(kept.superseded.len(), 1);
    store.save_settings(&kept).unwrap();
    drop(store);
    let reopened = open(&sim, FileStoreOptions::default()).unwrap();
    assert_eq!(reopened.load_settings().unwrap(), Some(kept));
}

/// What becomes of a write whose fsync failed.
#[derive(Debug, Clone, Copy)]
enum AfterFailedSync {
    /// The process restarts, the machine does not: the page cache still
    /// holds the record, and the reopen reads it.
    Restart,
    /// Power fails and the record had reached the disk all the same.
    PowerLossKept,
    /// Power fails and the record had not reached the disk.
    PowerLossDropped,
}

/// A rotation whose fsync fails is refused with a storage error, so its
/// caller never sees the successor's secret; yet the batch may be on disk,
/// and a reopen finds the old key rotated (dying at the end of its grace)
/// and a successor whose secret nobody holds. The recovery that
/// `KeyRing::rotate` documents works on the reopened store: `get` of the
/// old key says whether the rotation happened and names the successor (a
/// retried rotation is refused as `AlreadyRotated`), and `regenerate` of
/// the successor issues its secret; when the rotation did not happen, the
/// old key is as it was and rotates again. Regenerating the old key
/// instead gives it a secret that still dies at the end of its grace, and
/// kills the one its clients hold.
#[test]
fn a_rotation_whose_fsync_failed_may_be_on_disk_and_is_recovered_by_regenerating_the_successor() {
    use crate::{Error, KeyRing, ManualClock, NewKey, VerifyError};
    use time::Duration;

    let grace = Duration::hours(1);
    let ring_on = |store: FileStore, clock: &ManualClock| {
        KeyRing::builder("acme")
            .clock(clock.clone())
            .flush_interval(None)
            .build(store)
            .unwrap()
    };
    for fate in [
        AfterFailedSync::Restart,
        AfterFailedSync::PowerLossKept,
        AfterFailedSync::PowerLossDropped,
    ] {
        let sim = SimFs::new();
        let clock = ManualClock::new(datetime!(2026-01-01 0:00 UTC));
        let ring = ring_on(open(&sim, FileStoreOptions::default()).unwrap(), &clock);
        let old = ring.issue(NewKey::new("o").name("n")).unwrap();
        let (old_id, old_secret) = (old.key.id(), old.secret.expose().to_owned());
        // `apply` appends the record, writes a header slot, then fsyncs:
        // the third call.
        sim.fail_call(3, EIO);
        match ring.rotate(old_id, grace) {
            Err(Error::Storage(StoreError::Io { source, .. })) => {
                assert_eq!(source.raw_os_error(), Some(EIO), "{fate:?}");
            }
            other => panic!("{fate:?}: {:?}", other.map(|i| i.key.id())),
        }
        // Fail-stop: nothing more is written, and the ring still shows the
        // old key unrotated (the index follows the disk's yes only).
        assert_eq!(ring.get(old_id).unwrap().rotation(), None, "{fate:?}");
        drop(ring);
        match fate {
            AfterFailedSync::Restart => sim.restart(),
            AfterFailedSync::PowerLossKept => sim.crash(|_| 0),
            AfterFailedSync::PowerLossDropped => sim.crash(|_| 1),
        }
        let ring = ring_on(open(&sim, FileStoreOptions::default()).unwrap(), &clock);
        let rotation = ring.get(old_id).unwrap().rotation();
        let Some(successor) = rotation.and_then(|r| r.rotated_to) else {
            // The rotation did not happen: the old key is as it was.
            assert!(
                matches!(fate, AfterFailedSync::PowerLossDropped),
                "{fate:?}"
            );
            assert_eq!(rotation, None);
            assert_eq!(
                ring.list(&crate::ListFilter::new()).unwrap().len(),
                1,
                "{fate:?}"
            );
            ring.verify(&old_secret).unwrap();
            let new = ring.rotate(old_id, grace).unwrap();
            ring.verify(new.secret.expose()).unwrap();
            continue;
        };
        // The rotation happened although it was refused: the old key dies
        // at the end of its grace, and nobody holds the successor's secret.
        assert!(
            !matches!(fate, AfterFailedSync::PowerLossDropped),
            "{fate:?}"
        );
        assert_eq!(
            rotation.unwrap().grace_until,
            Some(datetime!(2026-01-01 1:00 UTC)),
            "{fate:?}"
        );
        let stranded = ring.get(successor).unwrap();
        assert_eq!(stranded.rotation().unwrap().rotated_from, Some(old_id));
        assert_eq!(stranded.name(), "n");
        ring.verify(&old_secret).unwrap();
        // A caller that simply tries again is told it was rotated.
        assert!(
            matches!(ring.rotate(old_id, grace), Err(Error::AlreadyRotated(id)) if id == old_id),
            "{fate:?}"
        );
        // The recovery: a secret for the successor.
        let recovered = ring.regenerate(successor).unwrap();
        assert_eq!(recovered.key.id(), successor);
        assert_eq!(
            recovered.key.rotation().unwrap().rotated_from,
            Some(old_id),
            "{fate:?}"
        );
        ring.verify(recovered.secret.expose()).unwrap();
        ring.verify(&old_secret).unwrap();
        // Regenerating the old key instead kills the secret its clients
        // hold, and the new one still dies with the grace.
        let regenerated_old = ring.regenerate(old_id).unwrap();
        assert_eq!(
            ring.verify(&old_secret).map(|_| ()),
            Err(VerifyError::Invalid)
        );
        ring.verify(regenerated_old.secret.expose()).unwrap();
        clock.advance(grace);
        assert_eq!(
            ring.verify(regenerated_old.secret.expose()).map(|_| ()),
            Err(VerifyError::Expired),
            "{fate:?}"
        );
        ring.verify(recovered.secret.expose()).unwrap();
        // And all of it holds across another reopen.
        drop(ring);
        let ring = ring_on(open(&sim, FileStoreOptions::default()).unwrap(), &clock);
        ring.verify(recovered.secret.expose()).unwrap();
        assert_eq!(
            ring.verify(regenerated_old.secret.expose()).map(|_| ()),
            Err(VerifyError::Expired),
            "{fate:?}"
        );
    }
}

/// Only the last write can be torn, and it is one record: past the synced
/// part, more than a record's worth of bytes from an invalid record's start
/// on is damage, found without reading the rest of the file (garbage
/// appended by something else would otherwise all be read into memory).
/// The bound is a parameter here so that the test stays small.
#[test]
fn a_tail_longer_than_one_write_is_damage_found_without_reading_it_all() {
    let (bytes, starts, _) = six_records();
    let synced = starts[1] as u64;
    let max_tail = 64 << 10;
    let mut damaged = bytes[starts[0]..starts[1]].to_vec();
    *damaged.last_mut().unwrap() ^= 1;
    // A torn head (zeros), and a whole record whose payload is damaged.
    for head in [vec![0; RECORD_HEAD_LEN], damaged] {
        for (tail_len, torn) in [(4 << 20, false), (max_tail + 1, false), (max_tail, true)] {
            let mut file = bytes[..starts[1]].to_vec();
            file.extend_from_slice(&head);
            file.resize(starts[1] + tail_len as usize, 0);
            let taken = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let counted: Box<dyn Read + Send> = Box::new(Counted {
                inner: std::io::Cursor::new(file),
                taken: Arc::clone(&taken),
            });
            let mut reader = std::io::BufReader::with_capacity(4096, counted);
            let mut header = Vec::new();
            (&mut reader)
                .take(HEADER_LEN as u64)
                .read_to_end(&mut header)
                .unwrap();
            let (work, _jobs) = mpsc::sync_channel(PARSE_QUEUE);
            let outcome = read_records(&mut reader, &path(), synced, max_tail, work);
            let whole = head.len() > RECORD_HEAD_LEN;
            let what = format!("head of {} bytes, tail of {tail_len}", head.len());
            let taken = taken.load(std::sync::atomic::Ordering::Relaxed);
            assert!(
                taken <= synced + max_tail + 1 + 4096,
                "{what}: {taken} bytes read"
            );
            match outcome {
                Ok((valid_len, dropped, records)) if torn && !whole => {
                    assert_eq!(
                        (valid_len, dropped, records),
                        (synced, tail_len, 1),
                        "{what}"
                    );
                }
                Err(StoreError::Corrupt { offset, reason, .. }) if !torn || whole => {
                    assert_eq!(offset, synced, "{what}");
                    assert_eq!(reason, "damaged record followed by more data", "{what}");
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }
}

/// The bound an open uses is the format's largest record: its head and the
/// longest payload a head may claim.
#[test]
fn the_tail_bound_is_the_largest_record() {
    use super::format::{MAX_PAYLOAD, MAX_TORN_TAIL, parse_head};
    assert_eq!(
        MAX_TORN_TAIL,
        RECORD_HEAD_LEN as u64 + u64::from(MAX_PAYLOAD)
    );
    let head = |len: u32| {
        let mut h = [0u8; RECORD_HEAD_LEN];
        h[..4].copy_from_slice(b"KW\x01\x00");
        h[4..8].copy_from_slice(&len.to_le_bytes());
        parse_head(&h)
    };
    assert!(head(MAX_PAYLOAD).is_some());
    assert!(head(MAX_PAYLOAD + 1).is_none());
}

/// A store whose export (of another store's history) is about to be
/// imported: the target, its state, the export and the state each mode
/// should leave.
fn import_setup(sim: &SimFs, mode: ImportMode) -> (FileStore, State, Vec<u8>, State) {
    let source_disk = SimFs::new();
    let (source, _) = store_with_history(&source_disk, 21);
    source.save_settings(&settings(3)).unwrap();
    let mut export = Vec::new();
    source.export(&mut export).unwrap();
    let target = open(sim, FileStoreOptions::default()).unwrap();
    target.save_settings(&settings(5)).unwrap();
    for id in [1, 2, 900] {
        target.insert(sample(id, 7)).unwrap();
    }
    target.remove(KeyId::from_u64(2)).unwrap();
    let before = State::of(&target);
    // What the import leaves, computed on a healthy disk.
    let model = open(&SimFs::new(), FileStoreOptions::default()).unwrap();
    model.save_settings(&settings(5)).unwrap();
    for id in [1, 2, 900] {
        model.insert(sample(id, 7)).unwrap();
    }
    model.remove(KeyId::from_u64(2)).unwrap();
    model.import(&export[..], mode).unwrap();
    let after = State::of(&model);
    assert_ne!(before, after);
    (target, before, export, after)
}

/// An import is all or nothing across a crash at any of its calls: the
/// store reopens as it was or as the import left it, never a mix; and a
/// write acknowledged after an import survives a power loss.
#[test]
fn a_crash_at_every_step_of_an_import_leaves_the_old_or_the_new_store() {
    for mode in [ImportMode::Replace, ImportMode::Merge] {
        let sim = SimFs::new();
        let (store, _, export, after) = import_setup(&sim, mode);
        let start = sim.calls();
        store.import(&export[..], mode).unwrap();
        let steps = sim.calls() - start;
        assert!(steps >= 5, "{mode:?}: an import made only {steps} calls");
        // Acknowledged after the import: on the new file, durable.
        store.insert(sample(950, 0)).unwrap();
        let later = before_and(&after, vec![Change::Insert(sample(950, 0))]);
        drop(store);
        for fate in 0..20 {
            let reopened = crash_and_reopen(&sim, 0, fate);
            assert_eq!(State::of(&reopened), later, "{mode:?}, fate {fate}");
        }

        for step in 1..=steps {
            for fate in 0..20 {
                for restart_first in [false, true] {
                    let sim = SimFs::new();
                    let (store, before, export, after) = import_setup(&sim, mode);
                    sim.die_at_call(step);
                    assert!(store.import(&export[..], mode).is_err(), "step {step}");
                    // Memory is the old store: the import did not return Ok.
                    assert_eq!(State::of(&store), before, "{mode:?}, step {step}");
                    drop(store);
                    let mut seen = None;
                    if restart_first {
                        // The process dies, restarts and opens the store
                        // (which makes what it finds durable), then the
                        // machine loses power.
                        sim.restart();
                        let s = open(&sim, FileStoreOptions::default())
                            .unwrap_or_else(|e| panic!("{mode:?}, step {step}: restart: {e}"));
                        seen = Some(State::of(&s));
                    }
                    let reopened = crash_and_reopen(&sim, step, fate);
                    let got = State::of(&reopened);
                    assert!(
                        seen.as_ref()
                            .map_or(got == before || got == after, |s| *s == got),
                        "{mode:?}, step {step}, fate {fate}, restart {restart_first}: \
                         a mix of the old store and the import"
                    );
                    assert!(sim.read(&temp_path(&path())).is_none());
                }
            }
        }
    }
}

/// A rewrite to run on a store: whether it returned `Ok`.
type Rewrite = Box<dyn Fn(&FileStore) -> bool>;

/// A compaction or an import dies at any of its calls; the process
/// restarts (what it wrote is still in the page cache), reopens the store
/// and acknowledges a write; then the power fails. That write, and the
/// state the reopen found, survive.
#[test]
fn a_write_acknowledged_after_a_rewrite_died_and_the_store_reopened_survives_a_power_loss() {
    let setup = |sim: &SimFs, which: usize| -> (FileStore, Rewrite) {
        match which {
            0 => {
                let (store, _) = store_with_history(sim, 9);
                (store, Box::new(|s: &FileStore| s.compact().is_ok()))
            }
            _ => {
                let mode = if which == 1 {
                    ImportMode::Replace
                } else {
                    ImportMode::Merge
                };
                let (store, _, export, _) = import_setup(sim, mode);
                (
                    store,
                    Box::new(move |s: &FileStore| s.import(&export[..], mode).is_ok()),
                )
            }
        }
    };
    for which in 0..3 {
        let sim = SimFs::new();
        let (store, rewrite) = setup(&sim, which);
        let start = sim.calls();
        assert!(rewrite(&store));
        let steps = sim.calls() - start;
        drop(store);
        for step in 1..=steps {
            for fate in 0..20 {
                let sim = SimFs::new();
                let (store, rewrite) = setup(&sim, which);
                sim.die_at_call(step);
                assert!(!rewrite(&store), "{which}, step {step}");
                drop(store);
                sim.restart();
                let store = open(&sim, FileStoreOptions::default())
                    .unwrap_or_else(|e| panic!("{which}, step {step}: restart: {e}"));
                store.insert(sample(990, 0)).unwrap();
                let acked = State::of(&store);
                drop(store);
                let reopened = crash_and_reopen(&sim, step, fate);
                assert_eq!(
                    State::of(&reopened),
                    acked,
                    "{which}, step {step}, fate {fate}"
                );
            }
        }
    }
}
