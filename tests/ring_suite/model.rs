//! Model-based property test of the key lifecycle.
//!
//! Random sequences of operations run against a `KeyRing<MemoryStore>` on a
//! `ManualClock` and against a small reference model written from the docs
//! of each operation in `ring.rs`. After every step the ring must agree with
//! the model: verification outcomes, refusals (and a refused operation
//! leaves the model unchanged), the ids `revoke_owner` returns, and each
//! key's `state()` and `expires_at()`.
//!
//! Cases: `KEYWARD_MODEL_CASES` (default 2000 on MemoryStore, 200 on
//! FileStore, where every write is fsynced).

use keyward::time::macros::datetime;
use keyward::time::{Duration, OffsetDateTime};
use keyward::*;

use crate::stores::fresh_store;
use proptest::prelude::*;

const PREFIX: &str = "acme";
const BASE62: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ID_LEN: usize = 11;
const SECRET_LEN: usize = 24;
const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
const OWNERS: u8 = 3;

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

/// Which key an operation concerns: taken modulo the number of keys issued
/// so far (rotation successors included).
#[derive(Debug, Clone, Copy)]
struct Pick(usize);

impl Arbitrary for Pick {
    type Parameters = ();
    type Strategy = BoxedStrategy<Pick>;

    fn arbitrary_with((): ()) -> Self::Strategy {
        (0usize..64).prop_map(Pick).boxed()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Policy {
    /// No own policy: the ring default governs.
    Default,
    Days(i64),
    IdleHours(i64),
}

#[derive(Debug, Clone)]
enum Op {
    Issue {
        owner: u8,
        policy: Policy,
    },
    Verify(Pick),
    /// A forged wrong secret, and the last secret a regenerate replaced.
    VerifyWrong(Pick),
    Rotate {
        key: Pick,
        grace_hours: i64,
    },
    Regenerate(Pick),
    Disable(Pick),
    Enable(Pick),
    Revoke(Pick),
    RevokeOwner(u8),
    RevokeAll,
    Delete(Pick),
    Advance {
        hours: i64,
    },
    SetDefault(DefaultOp),
}

/// A default policy to set.
#[derive(Debug, Clone, Copy, PartialEq)]
enum DefaultOp {
    Never,
    Days(i64),
    IdleHours(i64),
    /// A fixed instant this many hours from now.
    AtHours(i64),
}

/// The ring default as the model keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum MDefault {
    Never,
    Days(i64),
    IdleHours(i64),
    At(OffsetDateTime),
}

fn default_op() -> impl Strategy<Value = DefaultOp> {
    prop_oneof![
        1 => Just(DefaultOp::Never),
        3 => (1i64..10).prop_map(DefaultOp::Days),
        2 => (1i64..48).prop_map(DefaultOp::IdleHours),
        2 => (1i64..96).prop_map(DefaultOp::AtHours),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::Default),
        (1i64..5).prop_map(Policy::Days),
        (1i64..48).prop_map(Policy::IdleHours),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..OWNERS, policy()).prop_map(|(owner, policy)| Op::Issue { owner, policy }),
        6 => any::<Pick>().prop_map(Op::Verify),
        2 => any::<Pick>().prop_map(Op::VerifyWrong),
        2 => (any::<Pick>(), 0i64..48)
            .prop_map(|(key, grace_hours)| Op::Rotate { key, grace_hours }),
        1 => any::<Pick>().prop_map(Op::Regenerate),
        1 => any::<Pick>().prop_map(Op::Disable),
        1 => any::<Pick>().prop_map(Op::Enable),
        1 => any::<Pick>().prop_map(Op::Revoke),
        1 => (0..OWNERS).prop_map(Op::RevokeOwner),
        1 => Just(Op::RevokeAll),
        1 => any::<Pick>().prop_map(Op::Delete),
        4 => (0i64..72).prop_map(|hours| Op::Advance { hours }),
        3 => default_op().prop_map(Op::SetDefault),
    ]
}

// ---------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum MStatus {
    Active,
    Disabled,
    Revoked,
}

#[derive(Debug, Clone)]
struct MKey {
    id: KeyId,
    /// The key string that works (if anything does).
    secret: String,
    /// The key string the last regenerate replaced.
    old_secret: Option<String>,
    owner: String,
    created: OffsetDateTime,
    policy: Policy,
    /// The own deadline of a `Days` key (handed on unchanged by rotate).
    deadline: Option<OffsetDateTime>,
    status: MStatus,
    /// The revoke-all epoch it was issued in.
    epoch: u64,
    last_used: Option<OffsetDateTime>,
    grace_until: Option<OffsetDateTime>,
    /// When a `Default` key expired under a default that was then
    /// replaced: it stays expired at that instant.
    expired_under_old_default: Option<OffsetDateTime>,
    rotated: bool,
    deleted: bool,
}

#[derive(Debug, Clone)]
struct Model {
    now: OffsetDateTime,
    default: MDefault,
    default_since: OffsetDateTime,
    epoch: u64,
    keys: Vec<MKey>,
}

/// What a verification said.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Ok,
    Invalid,
    Revoked,
    Disabled,
    Expired,
    Other(String),
}

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq)]
enum Refusal {
    NotFound(KeyId),
    Revoked(KeyId),
    AlreadyRotated(KeyId),
    Expired(KeyId),
    Other(String),
}

fn outcome<T>(result: &Result<T, VerifyError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(VerifyError::Invalid) => Outcome::Invalid,
        Err(VerifyError::Revoked) => Outcome::Revoked,
        Err(VerifyError::Disabled) => Outcome::Disabled,
        Err(VerifyError::Expired) => Outcome::Expired,
        Err(e) => Outcome::Other(format!("{e:?}")),
    }
}

fn refusal<T>(result: &Result<T, Error>) -> Result<(), Refusal> {
    match result {
        Ok(_) => Ok(()),
        Err(Error::NotFound(id)) => Err(Refusal::NotFound(*id)),
        Err(Error::Revoked(id)) => Err(Refusal::Revoked(*id)),
        Err(Error::AlreadyRotated(id)) => Err(Refusal::AlreadyRotated(*id)),
        Err(Error::Expired(id)) => Err(Refusal::Expired(*id)),
        Err(e) => Err(Refusal::Other(format!("{e:?}"))),
    }
}

impl Model {
    fn new() -> Model {
        Model {
            now: T0,
            default: MDefault::Never,
            default_since: T0,
            epoch: 0,
            keys: Vec::new(),
        }
    }

    /// Revoked one by one, or by a later revoke-all.
    fn revoked(&self, k: &MKey) -> bool {
        k.status == MStatus::Revoked || k.epoch < self.epoch
    }

    /// When the key stops working: the earliest of its own deadline (or the
    /// ring default's, counted from the later of its creation and the last
    /// change of the default), its idle end and its rotation grace.
    fn expiry(&self, k: &MKey) -> Option<OffsetDateTime> {
        let (deadline, idle_end) = self.ends(k);
        [deadline, idle_end, k.grace_until]
            .into_iter()
            .flatten()
            .min()
    }

    /// The key's deadline and its idle end, before any rotation grace.
    fn ends(&self, k: &MKey) -> (Option<OffsetDateTime>, Option<OffsetDateTime>) {
        match k.policy {
            Policy::Default => {
                if k.expired_under_old_default.is_some() {
                    return (k.expired_under_old_default, None);
                }
                let last_active = k.last_used.unwrap_or(k.created).max(k.created);
                match self.default {
                    MDefault::Never => (None, None),
                    MDefault::Days(d) => (
                        Some(k.created.max(self.default_since) + Duration::days(d)),
                        None,
                    ),
                    MDefault::IdleHours(h) => (
                        None,
                        Some(last_active.max(self.default_since) + Duration::hours(h)),
                    ),
                    MDefault::At(at) => (Some(at), None),
                }
            }
            Policy::Days(_) => (k.deadline, None),
            Policy::IdleHours(h) => {
                let last_active = k.last_used.unwrap_or(k.created).max(k.created);
                (None, Some(last_active + Duration::hours(h)))
            }
        }
    }

    fn state(&self, k: &MKey) -> Option<KeyState> {
        if k.deleted {
            None
        } else if self.revoked(k) {
            Some(KeyState::Revoked)
        } else if k.status == MStatus::Disabled {
            Some(KeyState::Disabled)
        } else if self.expiry(k).is_some_and(|at| self.now >= at) {
            Some(KeyState::Expired)
        } else {
            Some(KeyState::Active)
        }
    }

    /// Verification with the right secret (`right`) or a wrong one. Only a
    /// matching secret learns the status; revoked comes first (a revoke-all
    /// revokes disabled keys too).
    fn verify(&mut self, i: usize, right: bool) -> Outcome {
        let k = &self.keys[i];
        if k.deleted || !right {
            return Outcome::Invalid;
        }
        match self.state(k) {
            Some(KeyState::Revoked) => Outcome::Revoked,
            Some(KeyState::Disabled) => Outcome::Disabled,
            Some(KeyState::Expired) => Outcome::Expired,
            _ => {
                // One-second resolution (the clock moves in whole hours).
                let now = self.now;
                self.keys[i].last_used = Some(now.replace_nanosecond(0).unwrap());
                Outcome::Ok
            }
        }
    }

    /// The refusal common to rotate, regenerate, disable, enable, update.
    fn live(&self, i: usize) -> Result<(), Refusal> {
        let k = &self.keys[i];
        if k.deleted {
            Err(Refusal::NotFound(k.id))
        } else if self.revoked(k) {
            Err(Refusal::Revoked(k.id))
        } else {
            Ok(())
        }
    }

    fn rotate_check(&self, i: usize, grace: Duration) -> Result<(), Refusal> {
        if grace.is_negative() {
            return Err(Refusal::Other("negative grace".into()));
        }
        self.live(i)?;
        if self.keys[i].rotated {
            return Err(Refusal::AlreadyRotated(self.keys[i].id));
        }
        // An expired key is not brought back through a successor.
        self.not_expired(i)
    }

    /// Regenerate refuses an expired key, whatever its status: its new
    /// secret would never verify.
    fn regenerate_check(&self, i: usize) -> Result<(), Refusal> {
        self.live(i)?;
        self.not_expired(i)
    }

    fn not_expired(&self, i: usize) -> Result<(), Refusal> {
        if self
            .expiry(&self.keys[i])
            .is_some_and(|end| self.now >= end)
        {
            return Err(Refusal::Expired(self.keys[i].id));
        }
        Ok(())
    }

    /// Applies a rotation the ring made: the successor inherits owner,
    /// policy, own deadline and status (a disabled key's successor is
    /// disabled); the old key works until `grace` from now, never past its
    /// own expiry: the grace is capped by its deadline, and its idle end
    /// (which moves with each use) still applies.
    fn rotate(&mut self, i: usize, grace: Duration, new: &Issued) {
        let now = self.now;
        let cap = self.ends(&self.keys[i]).0;
        let old = &mut self.keys[i];
        old.grace_until = [Some(now + grace), cap].into_iter().flatten().min();
        old.rotated = true;
        let successor = MKey {
            id: new.key.id(),
            secret: new.secret.expose().to_owned(),
            old_secret: None,
            owner: old.owner.clone(),
            created: now,
            policy: old.policy,
            deadline: old.deadline,
            status: old.status,
            epoch: self.epoch,
            last_used: None,
            grace_until: None,
            expired_under_old_default: None,
            rotated: false,
            deleted: false,
        };
        self.keys.push(successor);
    }
}

// ---------------------------------------------------------------------------
// Running a sequence
// ---------------------------------------------------------------------------

/// The same key with a secret that differs from the real one everywhere.
fn wrong_secret(key: &str) -> String {
    let start = PREFIX.len() + 2;
    let id = &key[start..start + ID_LEN];
    let other: String = key[start + ID_LEN..start + ID_LEN + SECRET_LEN]
        .chars()
        .map(|c| {
            let i = BASE62.find(c).expect("secret is base62");
            BASE62.as_bytes()[(i + 1) % 62] as char
        })
        .collect();
    let checked = format!("{PREFIX}_1{id}{other}");
    let encoded = base62::encode(crc32fast::hash(checked.as_bytes()));
    format!("{checked}{encoded:0>6}")
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    run_with(ops, Instants::Exact)
}

/// How `expires_at` of a key that has expired must match the model.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Instants {
    Exact,
    /// Past the number of superseded defaults the ring keeps, it may
    /// report a later instant, never one after now or before the real one.
    AtOrAfter,
}

fn run_with(ops: &[Op], instants: Instants) -> Result<(), TestCaseError> {
    let clock = ManualClock::new(T0);
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .flush_interval(None)
        .build(fresh_store())
        .expect("ring builds");
    let mut model = Model::new();

    for (step, op) in ops.iter().enumerate() {
        let pick = |index: &Pick| {
            if model.keys.is_empty() {
                None
            } else {
                Some(index.0 % model.keys.len())
            }
        };
        match op {
            Op::Issue { owner, policy } => {
                let mut request = NewKey::new(format!("owner_{owner}"));
                request = match *policy {
                    Policy::Default => request,
                    Policy::Days(d) => request.expiry(ExpiryPolicy::days(d)),
                    Policy::IdleHours(h) => request.expiry(ExpiryPolicy::Idle(Duration::hours(h))),
                };
                let issued = ring.issue(request);
                // Under a fixed default that has passed, a key would be dead
                // on arrival: refused.
                let passed = matches!(model.default, MDefault::At(at) if at <= model.now);
                let issued = match issued {
                    Ok(_) if passed && *policy == Policy::Default => {
                        return Err(TestCaseError::fail(format!(
                            "step {step}: issued under a fixed default that has passed"
                        )));
                    }
                    Err(Error::InvalidInput(_)) if passed && *policy == Policy::Default => continue,
                    Ok(issued) => issued,
                    Err(e) => return Err(TestCaseError::fail(format!("step {step}: issue: {e}"))),
                };
                let deadline = match *policy {
                    Policy::Days(d) => Some(model.now + Duration::days(d)),
                    _ => None,
                };
                model.keys.push(MKey {
                    id: issued.key.id(),
                    secret: issued.secret.expose().to_owned(),
                    old_secret: None,
                    owner: format!("owner_{owner}"),
                    created: model.now,
                    policy: *policy,
                    deadline,
                    status: MStatus::Active,
                    epoch: model.epoch,
                    last_used: None,
                    grace_until: None,
                    expired_under_old_default: None,
                    rotated: false,
                    deleted: false,
                });
            }
            Op::Verify(index) => {
                let Some(i) = pick(index) else { continue };
                let got = outcome(&ring.verify(&model.keys[i].secret));
                let want = model.verify(i, true);
                prop_assert_eq!(got, want, "step {}: verify of key {}", step, i);
            }
            Op::VerifyWrong(index) => {
                let Some(i) = pick(index) else { continue };
                let wrong = wrong_secret(&model.keys[i].secret);
                let got = outcome(&ring.verify(&wrong));
                let want = model.verify(i, false);
                prop_assert_eq!(got, want, "step {}: wrong secret of key {}", step, i);
                if let Some(old) = model.keys[i].old_secret.clone() {
                    let got = outcome(&ring.verify(&old));
                    let want = model.verify(i, false);
                    prop_assert_eq!(got, want, "step {}: replaced secret of key {}", step, i);
                }
            }
            Op::Rotate { key, grace_hours } => {
                let Some(i) = pick(key) else { continue };
                let grace = Duration::hours(*grace_hours);
                let want = model.rotate_check(i, grace);
                let result = ring.rotate(model.keys[i].id, grace);
                prop_assert_eq!(refusal(&result), want, "step {}: rotate key {}", step, i);
                if let Ok(new) = &result {
                    model.rotate(i, grace, new);
                }
            }
            Op::Regenerate(index) => {
                let Some(i) = pick(index) else { continue };
                let want = model.regenerate_check(i);
                let result = ring.regenerate(model.keys[i].id);
                prop_assert_eq!(
                    refusal(&result),
                    want,
                    "step {}: regenerate key {}",
                    step,
                    i
                );
                if let Ok(new) = &result {
                    prop_assert_eq!(new.key.id(), model.keys[i].id);
                    let k = &mut model.keys[i];
                    let old = std::mem::replace(&mut k.secret, new.secret.expose().to_owned());
                    k.old_secret = Some(old);
                }
            }
            Op::Disable(index) | Op::Enable(index) => {
                let Some(i) = pick(index) else { continue };
                let disable = matches!(op, Op::Disable(_));
                let want = model.live(i);
                let id = model.keys[i].id;
                let result = if disable {
                    ring.disable(id)
                } else {
                    ring.enable(id)
                };
                prop_assert_eq!(refusal(&result), want, "step {}: {:?}", step, op);
                if result.is_ok() {
                    let k = &mut model.keys[i];
                    k.status = match (disable, k.status) {
                        (true, MStatus::Active) => MStatus::Disabled,
                        (false, MStatus::Disabled) => MStatus::Active,
                        (_, same) => same,
                    };
                }
            }
            Op::Revoke(index) => {
                let Some(i) = pick(index) else { continue };
                let k = &model.keys[i];
                let want = if k.deleted {
                    Err(Refusal::NotFound(k.id))
                } else {
                    Ok(())
                };
                let result = ring.revoke(k.id, "model");
                prop_assert_eq!(refusal(&result), want, "step {}: revoke key {}", step, i);
                // A key revoked by a revoke-all is passed over.
                if result.is_ok() && !model.revoked(&model.keys[i]) {
                    model.keys[i].status = MStatus::Revoked;
                }
            }
            Op::RevokeOwner(owner) => {
                let owner = format!("owner_{owner}");
                let result = ring.revoke_owner(&owner, "model");
                let got = match result {
                    Ok(ids) => ids,
                    Err(e) => {
                        return Err(TestCaseError::fail(format!(
                            "step {step}: revoke_owner: {e}"
                        )));
                    }
                };
                let mut want = Vec::new();
                let epoch = model.epoch;
                for k in model.keys.iter_mut() {
                    let revoked = k.status == MStatus::Revoked || k.epoch < epoch;
                    if k.owner == owner && !k.deleted && !revoked {
                        k.status = MStatus::Revoked;
                        want.push(k.id);
                    }
                }
                want.sort();
                prop_assert_eq!(got, want, "step {}: ids revoked for {}", step, owner);
            }
            Op::RevokeAll => {
                if let Err(e) = ring.revoke_all() {
                    return Err(TestCaseError::fail(format!("step {step}: revoke_all: {e}")));
                }
                model.epoch += 1;
                prop_assert_eq!(ring.settings().epoch(), model.epoch);
            }
            Op::Delete(index) => {
                let Some(i) = pick(index) else { continue };
                let k = &model.keys[i];
                let want = if k.deleted {
                    Err(Refusal::NotFound(k.id))
                } else {
                    Ok(())
                };
                let result = ring.delete(k.id);
                prop_assert_eq!(refusal(&result), want, "step {}: delete key {}", step, i);
                if result.is_ok() {
                    model.keys[i].deleted = true;
                }
            }
            Op::Advance { hours } => {
                clock.advance(Duration::hours(*hours));
                model.now += Duration::hours(*hours);
            }
            Op::SetDefault(op) => {
                let (policy, want) = match *op {
                    DefaultOp::Never => (ExpiryPolicy::Never, MDefault::Never),
                    DefaultOp::Days(d) => (ExpiryPolicy::days(d), MDefault::Days(d)),
                    DefaultOp::IdleHours(h) => (
                        ExpiryPolicy::Idle(Duration::hours(h)),
                        MDefault::IdleHours(h),
                    ),
                    DefaultOp::AtHours(h) => {
                        let at = model.now + Duration::hours(h);
                        (ExpiryPolicy::At(at), MDefault::At(at))
                    }
                };
                if let Err(e) = ring.set_default_expiry(policy) {
                    return Err(TestCaseError::fail(format!(
                        "step {step}: set_default_expiry: {e}"
                    )));
                }
                // Setting the default in force is no change.
                if model.default != want {
                    // A key that expired under the old default stays
                    // expired, at the instant it did.
                    let now = model.now;
                    let ended: Vec<Option<OffsetDateTime>> = model
                        .keys
                        .iter()
                        .map(|k| match k.policy {
                            Policy::Default => {
                                let (deadline, idle_end) = model.ends(k);
                                deadline
                                    .into_iter()
                                    .chain(idle_end)
                                    .min()
                                    .filter(|at| *at <= now)
                            }
                            _ => None,
                        })
                        .collect();
                    for (k, ended) in model.keys.iter_mut().zip(ended) {
                        k.expired_under_old_default = k.expired_under_old_default.or(ended);
                    }
                    model.default = want;
                    model.default_since = model.now;
                }
            }
        }

        // Every key, after every step: state and expiry as the model says.
        for (i, k) in model.keys.iter().enumerate() {
            prop_assert_eq!(
                ring.state(k.id),
                model.state(k),
                "step {} ({:?}): state of key {}",
                step,
                op,
                i
            );
            let want = if k.deleted { None } else { model.expiry(k) };
            if instants == Instants::AtOrAfter
                && let (Some(got), Some(want)) = (ring.expires_at(k.id), want)
                && want <= model.now
            {
                prop_assert!(
                    want <= got && got <= model.now,
                    "step {} ({:?}): expires_at of key {}: {} for {}",
                    step,
                    op,
                    i,
                    got,
                    want
                );
                continue;
            }
            prop_assert_eq!(
                ring.expires_at(k.id),
                want,
                "step {} ({:?}): expires_at of key {}",
                step,
                op,
                i
            );
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("KEYWARD_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(crate::stores::DEFAULT_MODEL_CASES)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        ..ProptestConfig::default()
    })]

    #[test]
    fn ring_agrees_with_the_reference_model(ops in proptest::collection::vec(op(), 1..=40)) {
        run(&ops)?;
    }
}

/// A hand-written sequence through the same runner, so the model itself is
/// exercised on a known story (rotation grace, default change, revoke-all,
/// idle keys) whatever the random cases hit.
#[test]
fn model_runner_on_a_known_story() {
    let i = Pick;
    let ops = vec![
        Op::Issue {
            owner: 0,
            policy: Policy::Default,
        },
        Op::Issue {
            owner: 1,
            policy: Policy::IdleHours(5),
        },
        Op::SetDefault(DefaultOp::Days(2)),
        Op::Verify(i(0)),
        Op::Advance { hours: 4 },
        Op::Verify(i(1)),
        Op::Rotate {
            key: i(0),
            grace_hours: 10,
        },
        Op::Advance { hours: 9 },
        Op::Verify(i(0)),
        Op::Advance { hours: 1 },
        Op::Verify(i(0)),
        Op::Verify(i(2)),
        Op::Regenerate(i(2)),
        Op::VerifyWrong(i(2)),
        Op::Verify(i(1)),
        Op::RevokeAll,
        Op::Issue {
            owner: 1,
            policy: Policy::Days(1),
        },
        Op::Verify(i(3)),
        Op::RevokeOwner(1),
        Op::Verify(i(3)),
        Op::Delete(i(3)),
        Op::Delete(i(3)),
        Op::Verify(i(3)),
    ];
    run(&ops).unwrap();
}

/// More changes of the default than the ring keeps superseded ones (64),
/// keys issued and used between them: each key still expires when the
/// model says; for keys long expired, the instant reported may move later
/// (see `KeyRing::expires_at`).
#[test]
fn model_runner_through_many_default_changes() {
    let mut ops = Vec::new();
    for round in 0..80 {
        ops.push(Op::Issue {
            owner: 0,
            policy: Policy::Default,
        });
        ops.push(Op::SetDefault(DefaultOp::IdleHours(1)));
        ops.push(Op::Advance { hours: 2 });
        ops.push(Op::Issue {
            owner: 1,
            policy: Policy::Default,
        });
        ops.push(Op::SetDefault(DefaultOp::Days(1)));
        ops.push(Op::Advance { hours: 25 });
        ops.push(Op::Verify(Pick(round * 3)));
        ops.push(Op::SetDefault(DefaultOp::AtHours(1)));
        ops.push(Op::Advance { hours: 1 });
        ops.push(Op::SetDefault(DefaultOp::Never));
        ops.push(Op::Verify(Pick(round)));
    }
    run_with(&ops, Instants::AtOrAfter).unwrap();
}
