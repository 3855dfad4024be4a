//! Scopes (`resource:action`), sets of them, and requirements over them.
//!
//! A granted `*` stands for any resource or any action, except that a
//! *sensitive* resource (configured on the key ring) is never covered by a
//! wildcard resource or by an unrestricted key: it must be granted by name.
//! A required scope is matched literally: `invoices:*` is required only by
//! someone who needs every action on invoices, and only a grant of
//! `invoices:*` (or `*:*` for a non-sensitive resource) covers it. A
//! required `*` resource means every resource, the sensitive ones too: a
//! requirement of `*:read` is met only by a set that also grants `read` on
//! each sensitive resource by name, since no wildcard reaches those.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, echo};

/// Longest scope string accepted, so untrusted scope text stays small.
const MAX_SCOPE_LEN: usize = 128;

/// A permission: `resource:action`, each part `[a-z0-9_.-]+` or `*`.
///
/// ```
/// use keyward::Scope;
/// let s: Scope = "invoices:read".parse()?;
/// assert_eq!((s.resource(), s.action()), ("invoices", "read"));
/// assert!("Invoices:read".parse::<Scope>().is_err());
/// # Ok::<(), keyward::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    text: Box<str>,
    colon: u8,
}

impl Scope {
    /// Parses and validates `resource:action`.
    pub fn new(text: &str) -> Result<Scope, Error> {
        let colon = colon_of(text)?;
        Ok(Scope {
            text: text.into(),
            colon,
        })
    }

    /// The part before the colon.
    pub fn resource(&self) -> &str {
        &self.text[..usize::from(self.colon)]
    }

    /// The part after the colon.
    pub fn action(&self) -> &str {
        &self.text[usize::from(self.colon) + 1..]
    }

    /// The whole `resource:action` text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Checks `text` as a scope, `resource:action`, giving where its colon is.
fn colon_of(text: &str) -> Result<u8, Error> {
    let invalid = || Error::InvalidScope(echo(text, MAX_SCOPE_LEN));
    if text.len() > MAX_SCOPE_LEN {
        return Err(invalid());
    }
    let (resource, action) = text.split_once(':').ok_or_else(invalid)?;
    if !is_part(resource) || !is_part(action) {
        return Err(invalid());
    }
    u8::try_from(resource.len()).map_err(|_| invalid())
}

/// A valid scope text's resource and action (its parts either side of the
/// one colon).
fn parts(text: &str) -> (&str, &str) {
    text.split_once(':').unwrap_or((text, ""))
}

/// Whether the granted scope `granted` (a valid scope's text) covers the
/// required `resource:action`.
fn covers(granted: &str, resource: &str, action: &str, sensitive: &Sensitive) -> bool {
    let (granted_resource, granted_action) = parts(granted);
    let resource =
        granted_resource == resource || (granted_resource == "*" && !sensitive.contains(resource));
    let action = granted_action == action || granted_action == "*";
    resource && action
}

/// The largest scope covered by both `a` and `b` (valid scopes' texts), if
/// any: `*:read` and `invoices:*` meet in `invoices:read`.
fn meet(a: &str, b: &str, sensitive: &Sensitive) -> Option<Scope> {
    let (a_resource, a_action) = parts(a);
    let (b_resource, b_action) = parts(b);
    let resource = meet_part(a_resource, b_resource, |r| sensitive.contains(r))?;
    let action = meet_part(a_action, b_action, |_| false)?;
    Scope::new(&format!("{resource}:{action}")).ok()
}

fn meet_part<'a>(a: &'a str, b: &'a str, protected: impl Fn(&str) -> bool) -> Option<&'a str> {
    match (a, b) {
        _ if a == b => Some(a),
        ("*", named) | (named, "*") if !protected(named) => Some(named),
        _ => None,
    }
}

fn is_part(part: &str) -> bool {
    part == "*"
        || (!part.is_empty()
            && part
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-')))
}

impl FromStr for Scope {
    type Err = Error;

    fn from_str(s: &str) -> Result<Scope, Error> {
        Scope::new(s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({})", self.text)
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Scope::new(&text).map_err(serde::de::Error::custom)
    }
}

/// A string read borrowed from the input where it can be (JSON without
/// escapes), owned where it must be: serde's own `Cow<str>` always owns.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;

        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scope string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(Visit)
    }
}

/// The resources a key ring treats as sensitive: never covered by `*` or by
/// an unrestricted key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sensitive(Box<[Box<str>]>);

impl Sensitive {
    pub(crate) fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(
        resources: I,
    ) -> Result<Self, Error> {
        let mut names: Vec<Box<str>> = Vec::new();
        for r in resources {
            let r = r.as_ref();
            if r == "*" || !is_part(r) {
                return Err(Error::InvalidSensitiveResource(echo(r, MAX_SCOPE_LEN)));
            }
            names.push(r.into());
        }
        names.sort();
        names.dedup();
        Ok(Sensitive(names.into()))
    }

    fn contains(&self, resource: &str) -> bool {
        self.0.iter().any(|r| &**r == resource)
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|r| &**r)
    }
}

/// What a key may do: either unrestricted (every non-sensitive scope) or an
/// explicit set of scopes.
///
/// ```
/// use keyward::ScopeSet;
/// let set = ScopeSet::parse(["invoices:read", "customers:*"])?;
/// assert_eq!(set.len(), 2);
/// assert!(!set.is_unrestricted());
/// assert!(ScopeSet::unrestricted().is_unrestricted());
/// # Ok::<(), keyward::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ScopeSet(Option<Box<str>>);

/// Between two scopes in a [`ScopeSet`]'s text: no scope holds one.
const SEPARATOR: char = ' ';

/// Serialized as the string `"unrestricted"` or a list of scope strings.
impl Serialize for ScopeSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            None => serializer.serialize_str(UNRESTRICTED),
            Some(_) => serializer.collect_seq(self.iter()),
        }
    }
}

const UNRESTRICTED: &str = "unrestricted";

impl<'de> Deserialize<'de> for ScopeSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A visitor rather than an untagged enum: no buffering, which matters
        // when a store of a million keys is read at open.
        struct Visit;

        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ScopeSet;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"unrestricted\" or a list of scopes")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ScopeSet, E> {
                if v == UNRESTRICTED {
                    Ok(ScopeSet::unrestricted())
                } else {
                    // Repeated as `echo` shows it: a key pasted here must
                    // not reach the message.
                    let shown = echo(v, MAX_SCOPE_LEN);
                    Err(E::invalid_value(serde::de::Unexpected::Str(&shown), &self))
                }
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ScopeSet, A::Error> {
                // Each scope's text borrowed from the input where it can
                // be, checked, and copied once, into the set's text.
                let mut scopes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(Text(text)) = seq.next_element::<Text<'de>>()? {
                    colon_of(&text).map_err(serde::de::Error::custom)?;
                    scopes.push(text);
                }
                scopes.sort();
                scopes.dedup();
                Ok(ScopeSet::from_sorted(scopes.iter().map(|t| &**t)))
            }
        }

        deserializer.deserialize_any(Visit)
    }
}

impl ScopeSet {
    /// Every scope except those on sensitive resources, like a key with
    /// permissions switched off.
    pub const fn unrestricted() -> ScopeSet {
        ScopeSet(None)
    }

    /// The empty set: a key that passes no scope requirement.
    pub fn empty() -> ScopeSet {
        ScopeSet(Some(Box::from("")))
    }

    /// An explicit set; duplicates are dropped.
    pub fn from_scopes<I: IntoIterator<Item = Scope>>(scopes: I) -> ScopeSet {
        let mut v: Vec<Scope> = scopes.into_iter().collect();
        v.sort();
        v.dedup();
        ScopeSet::from_sorted(v.iter().map(Scope::as_str))
    }

    /// The set of `texts`, valid scopes' texts in order, without repeats:
    /// joined in one allocation, so that a key's scopes cost it one, not one
    /// for each scope and one for their list.
    fn from_sorted<'a>(texts: impl Iterator<Item = &'a str> + Clone) -> ScopeSet {
        let len = texts.clone().map(|t| t.len() + 1).sum::<usize>();
        let mut text = String::with_capacity(len.saturating_sub(1));
        for t in texts {
            if !text.is_empty() {
                text.push(SEPARATOR);
            }
            text.push_str(t);
        }
        ScopeSet(Some(text.into_boxed_str()))
    }

    /// Parses each string as a [`Scope`].
    pub fn parse<I: IntoIterator<Item = S>, S: AsRef<str>>(scopes: I) -> Result<ScopeSet, Error> {
        let parsed = scopes
            .into_iter()
            .map(|s| Scope::new(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ScopeSet::from_scopes(parsed))
    }

    /// Whether this is the unrestricted set.
    pub fn is_unrestricted(&self) -> bool {
        self.0.is_none()
    }

    /// The explicit scopes' `resource:action` texts, sorted (none for an
    /// unrestricted set). [`Scope::new`] gives one's parts.
    ///
    /// ```
    /// use keyward::ScopeSet;
    /// let set = ScopeSet::parse(["invoices:write", "customers:*"])?;
    /// assert_eq!(set.iter().collect::<Vec<_>>(), ["customers:*", "invoices:write"]);
    /// assert_eq!(ScopeSet::unrestricted().iter().count(), 0);
    /// # Ok::<(), keyward::Error>(())
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = &str> + Clone + '_ {
        self.0
            .as_deref()
            .filter(|text| !text.is_empty())
            .into_iter()
            .flat_map(|text| text.split(SEPARATOR))
    }

    /// How many explicit scopes (0 for an unrestricted set).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether the set grants nothing.
    pub fn is_empty(&self) -> bool {
        self.0.as_deref() == Some("")
    }

    /// Whether this set grants `required`, given the ring's sensitive
    /// resources: as a grant (a granted `*:read` is within a set granting
    /// `*:read`), for comparing two sets. A requirement is judged by
    /// [`meets`](Self::meets).
    pub(crate) fn permits(&self, required: &Scope, sensitive: &Sensitive) -> bool {
        self.permits_parts(required.resource(), required.action(), sensitive)
    }

    /// [`permits`](Self::permits) for a valid scope's text, such as one of
    /// another set's.
    pub(crate) fn permits_text(&self, text: &str, sensitive: &Sensitive) -> bool {
        let (resource, action) = parts(text);
        self.permits_parts(resource, action, sensitive)
    }

    fn permits_parts(&self, resource: &str, action: &str, sensitive: &Sensitive) -> bool {
        match &self.0 {
            None => !sensitive.contains(resource),
            Some(_) => self
                .iter()
                .any(|granted| covers(granted, resource, action, sensitive)),
        }
    }

    /// Whether this set meets `required` as a requirement: it grants it,
    /// and a required `*` resource (every resource) is granted on each
    /// sensitive resource too, by name, since no wildcard reaches those.
    pub(crate) fn meets(&self, required: &Scope, sensitive: &Sensitive) -> bool {
        self.permits(required, sensitive)
            && (required.resource() != "*"
                || sensitive
                    .names()
                    .all(|name| self.permits_parts(name, required.action(), sensitive)))
    }

    /// The scopes granted by both sets ("a key never carries more than its
    /// owner holds"): each pair of scopes contributes the narrower of the
    /// two where one covers the other, or their meet.
    pub(crate) fn cap(&self, owner: &ScopeSet, sensitive: &Sensitive) -> ScopeSet {
        let not_sensitive = |s: &&str| !sensitive.contains(parts(s).0);
        match (&self.0, &owner.0) {
            // An unrestricted owner holds every scope but the sensitive ones.
            (None, None) => ScopeSet::unrestricted(),
            // Each in order already, without repeats.
            (Some(_), None) => ScopeSet::from_sorted(self.iter().filter(not_sensitive)),
            (None, Some(_)) => ScopeSet::from_sorted(owner.iter().filter(not_sensitive)),
            (Some(_), Some(_)) => ScopeSet::from_scopes(
                self.iter()
                    .flat_map(|a| owner.iter().filter_map(move |h| meet(a, h, sensitive)))
                    .collect::<Vec<_>>(),
            ),
        }
    }

    /// Whether every scope this set grants is also granted by `wider`.
    pub(crate) fn is_within(&self, wider: &ScopeSet, sensitive: &Sensitive) -> bool {
        match &self.0 {
            None => wider.is_unrestricted(),
            Some(_) => self.iter().all(|s| wider.permits_text(s, sensitive)),
        }
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("ScopeSet(unrestricted)"),
            Some(_) => f.debug_set().entries(self.iter()).finish(),
        }
    }
}

/// What a request needs: a scope, all of several requirements, or any of
/// them, nested up to 32 levels (`all` inside `all` does not count: it is
/// flattened).
///
/// Build it once (at start-up) and pass it by reference on each request. A
/// requirement built from request data is safe to check: its depth is
/// bounded, so checking, cloning or dropping it never exhausts the stack.
///
/// ```
/// use keyward::Requirement;
/// // invoices:read and (customers:read or customers:*)
/// let need = Requirement::all([
///     Requirement::scope("invoices:read")?,
///     Requirement::any([Requirement::scope("customers:read")?, Requirement::scope("customers:*")?])?,
/// ]);
/// # let _ = need;
/// # Ok::<(), keyward::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Requirement {
    node: Node,
    /// Levels of nodes, a scope being one: at most `MAX_DEPTH + 1` (an
    /// `all` over an `any` at the limit).
    depth: usize,
}

/// Deepest `any` accepted. The recursive check, clone, comparison and drop
/// then never go deeper than this (plus one `all`), whatever built it.
const MAX_DEPTH: usize = 32;

#[derive(Clone, PartialEq, Eq)]
enum Node {
    Scope(Scope),
    // A deque, so that `all` can lend the list of the largest `all` it
    // flattens and add the rest at either end: folding a long conjunction,
    // left or right, stays linear.
    All(VecDeque<Requirement>),
    Any(Box<[Requirement]>),
}

impl Requirement {
    /// One scope.
    pub fn scope(scope: &str) -> Result<Requirement, Error> {
        Ok(Requirement {
            node: Node::Scope(Scope::new(scope)?),
            depth: 1,
        })
    }

    /// Every one of `parts` (an empty list is always met). An `all` among
    /// `parts` is flattened into this one, in order, so nesting `all`s
    /// adds no depth.
    pub fn all<I: IntoIterator<Item = Requirement>>(parts: I) -> Requirement {
        let parts: Vec<Requirement> = parts.into_iter().collect();
        // The largest `all` lends its list; the others are moved into it.
        let host = parts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match &p.node {
                Node::All(list) => Some((list.len(), i)),
                _ => None,
            })
            .max()
            .map(|(_, i)| i);
        let (mut list, mut depth) = (VecDeque::new(), 1);
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for (i, part) in parts.into_iter().enumerate() {
            match part.node {
                Node::All(lent) if Some(i) == host => (list, depth) = (lent, part.depth),
                node => {
                    let part = Requirement {
                        node,
                        depth: part.depth,
                    };
                    if host.is_some_and(|h| i > h) {
                        after.push(part);
                    } else {
                        before.push(part);
                    }
                }
            }
        }
        for part in before.into_iter().rev() {
            depth = depth.max(part.depth_in_all());
            match part.node {
                Node::All(inner) => inner.into_iter().rev().for_each(|p| list.push_front(p)),
                node => list.push_front(Requirement {
                    node,
                    depth: part.depth,
                }),
            }
        }
        for part in after {
            depth = depth.max(part.depth_in_all());
            match part.node {
                Node::All(inner) => list.extend(inner),
                node => list.push_back(Requirement {
                    node,
                    depth: part.depth,
                }),
            }
        }
        Requirement {
            node: Node::All(list),
            depth,
        }
    }

    /// The depth of an `all` holding `self`, once flattened.
    fn depth_in_all(&self) -> usize {
        match self.node {
            Node::All(_) => self.depth,
            _ => self.depth + 1,
        }
    }

    /// At least one of `parts`; an empty list is refused, since it could
    /// never be met, and so is one that would nest more than 32 levels
    /// ([`Error::RequirementTooDeep`]).
    pub fn any<I: IntoIterator<Item = Requirement>>(parts: I) -> Result<Requirement, Error> {
        let parts: Box<[Requirement]> = parts.into_iter().collect();
        let Some(deepest) = parts.iter().map(|p| p.depth).max() else {
            return Err(Error::EmptyRequirement);
        };
        if deepest >= MAX_DEPTH {
            return Err(Error::RequirementTooDeep);
        }
        Ok(Requirement {
            node: Node::Any(parts),
            depth: deepest + 1,
        })
    }

    /// Every scope in `scopes`. An empty list is always met, as an empty
    /// [`all`](Self::all) is (where [`any_of`](Self::any_of) refuses one):
    /// a requirement built from a list that can be empty (a route's
    /// configuration, say) requires nothing when it is.
    pub fn all_of<I: IntoIterator<Item = S>, S: AsRef<str>>(
        scopes: I,
    ) -> Result<Requirement, Error> {
        Ok(Requirement::all(Requirement::each(scopes)?))
    }

    /// At least one scope in `scopes`.
    pub fn any_of<I: IntoIterator<Item = S>, S: AsRef<str>>(
        scopes: I,
    ) -> Result<Requirement, Error> {
        Requirement::any(Requirement::each(scopes)?)
    }

    /// One requirement per scope string.
    fn each<I: IntoIterator<Item = S>, S: AsRef<str>>(
        scopes: I,
    ) -> Result<Vec<Requirement>, Error> {
        scopes
            .into_iter()
            .map(|s| Requirement::scope(s.as_ref()))
            .collect()
    }

    /// `Ok` when `granted` meets the requirement, else the first missing
    /// scope (for `any`, the first alternative's).
    pub(crate) fn check<'a>(
        &'a self,
        granted: &ScopeSet,
        sensitive: &Sensitive,
    ) -> Result<(), &'a Scope> {
        match &self.node {
            Node::Scope(s) => {
                if granted.meets(s, sensitive) {
                    Ok(())
                } else {
                    Err(s)
                }
            }
            Node::All(parts) => parts.iter().try_for_each(|p| p.check(granted, sensitive)),
            Node::Any(parts) => {
                let mut first_missing = None;
                for p in parts.iter() {
                    match p.check(granted, sensitive) {
                        Ok(()) => return Ok(()),
                        Err(missing) => {
                            first_missing.get_or_insert(missing);
                        }
                    }
                }
                // `any` is never empty, so a missing scope was recorded.
                first_missing.map_or(Ok(()), Err)
            }
        }
    }
}

impl fmt::Debug for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Node::Scope(s) => write!(f, "{s}"),
            Node::All(p) => f.debug_tuple("all").field(p).finish(),
            Node::Any(p) => f.debug_tuple("any").field(p).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> Scope {
        Scope::new(t).unwrap()
    }

    fn set(t: &[&str]) -> ScopeSet {
        ScopeSet::parse(t).unwrap()
    }

    fn sens(t: &[&str]) -> Sensitive {
        Sensitive::new(t).unwrap()
    }

    #[test]
    fn scope_syntax() {
        for ok in [
            "a:b",
            "invoices:read",
            "*:read",
            "invoices:*",
            "*:*",
            "v1.api-x_y:get",
        ] {
            assert!(Scope::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ":",
            "a:",
            ":b",
            "a:b:c",
            "A:b",
            "a b:c",
            "a:**",
            "inv*:read",
            "é:a",
        ] {
            assert!(Scope::new(bad).is_err(), "{bad}");
        }
        assert!(Scope::new(&format!("{}:b", "a".repeat(200))).is_err());
        assert_eq!(
            Scope::new("Bad").unwrap_err().to_string(),
            "invalid scope `Bad`: expected `resource:action`, each [a-z0-9_.-]+ or `*`"
        );
    }

    #[test]
    fn wildcards_cover_but_not_sensitive_resources() {
        let none = sens(&[]);
        let billing = sens(&["billing"]);
        assert!(set(&["invoices:*"]).permits(&s("invoices:write"), &none));
        assert!(set(&["*:read"]).permits(&s("invoices:read"), &none));
        assert!(!set(&["*:read"]).permits(&s("invoices:write"), &none));
        assert!(!set(&["invoices:read"]).permits(&s("invoices:*"), &none));
        assert!(!set(&["*:*"]).permits(&s("billing:read"), &billing));
        assert!(!ScopeSet::unrestricted().permits(&s("billing:read"), &billing));
        assert!(ScopeSet::unrestricted().permits(&s("invoices:read"), &billing));
        assert!(set(&["billing:read"]).permits(&s("billing:read"), &billing));
        assert!(set(&["billing:*"]).permits(&s("billing:write"), &billing));
    }

    /// A required `*` resource means every resource: a set meets it only
    /// if it also grants the action on each sensitive resource by name. As
    /// a grant, `*:read` is still within `*:read`.
    #[test]
    fn a_required_wildcard_resource_takes_the_sensitive_ones_too() {
        let billing = sens(&["billing", "payroll"]);
        let every_read = s("*:read");
        for short in [
            set(&["*:read"]),
            set(&["*:*"]),
            set(&["*:read", "billing:read"]),
            ScopeSet::unrestricted(),
        ] {
            assert!(!short.meets(&every_read, &billing), "{short:?}");
        }
        for full in [
            set(&["*:read", "billing:read", "payroll:read"]),
            set(&["*:*", "billing:*", "payroll:read"]),
        ] {
            assert!(full.meets(&every_read, &billing), "{full:?}");
        }
        assert!(!set(&["*:read", "billing:write", "payroll:read"]).meets(&every_read, &billing));
        // Without sensitive resources, and for named resources, nothing
        // changes.
        assert!(set(&["*:read"]).meets(&every_read, &sens(&[])));
        assert!(ScopeSet::unrestricted().meets(&every_read, &sens(&[])));
        assert!(set(&["*:read"]).meets(&s("invoices:read"), &billing));
        assert!(set(&["*:read"]).permits(&every_read, &billing));
        assert!(set(&["*:read"]).is_within(&set(&["*:read"]), &billing));
    }

    #[test]
    fn capping_keeps_only_what_both_grant() {
        let none = sens(&[]);
        let owner = set(&["billing:read"]);
        assert_eq!(ScopeSet::unrestricted().cap(&owner, &none), owner);
        assert_eq!(
            set(&["*:read", "x:y"]).cap(&set(&["invoices:*"]), &none),
            set(&["invoices:read"])
        );
        assert_eq!(
            set(&["invoices:*"]).cap(&set(&["invoices:read", "other:read"]), &none),
            set(&["invoices:read"])
        );
        assert_eq!(
            set(&["a:b"]).cap(&ScopeSet::unrestricted(), &none),
            set(&["a:b"])
        );
        // A sensitive scope the owner holds is not granted through `*`.
        let billing = sens(&["billing"]);
        assert_eq!(
            ScopeSet::unrestricted().cap(&set(&["billing:read", "a:b"]), &billing),
            set(&["a:b"])
        );
        assert_eq!(
            set(&["*:read"]).cap(&set(&["billing:read"]), &billing),
            ScopeSet::empty()
        );
        assert_eq!(
            set(&["billing:read"]).cap(&set(&["billing:*"]), &billing),
            set(&["billing:read"])
        );
    }

    #[test]
    fn requirements_nest_and_name_the_missing_scope() {
        let none = sens(&[]);
        let granted = set(&["invoices:read", "customers:read"]);
        let need = Requirement::all([
            Requirement::scope("invoices:read").unwrap(),
            Requirement::any_of(["customers:write", "customers:read"]).unwrap(),
        ]);
        assert_eq!(need.check(&granted, &none), Ok(()));
        let need = Requirement::all_of(["invoices:read", "invoices:write"]).unwrap();
        assert_eq!(need.check(&granted, &none), Err(&s("invoices:write")));
        let need = Requirement::any_of(["a:b", "c:d"]).unwrap();
        assert_eq!(need.check(&granted, &none), Err(&s("a:b")));
        assert!(matches!(Requirement::any([]), Err(Error::EmptyRequirement)));
        assert_eq!(
            Requirement::all([]).check(&ScopeSet::empty(), &none),
            Ok(())
        );
    }

    /// A requirement built from request data cannot nest deep enough to
    /// overflow the stack (an abort) in `check`, `clone`, `Debug` or drop:
    /// `any` refuses to nest past the limit, and `all` flattens the `all`s
    /// it is given.
    #[test]
    fn a_requirement_nests_no_deeper_than_the_limit() {
        let mut need = Requirement::scope("a:b").unwrap();
        let mut levels = 0;
        let refused = loop {
            match Requirement::any([Requirement::all([need])]) {
                Ok(deeper) => need = deeper,
                Err(e) => break e,
            }
            levels += 1;
            assert!(levels < 1000, "`any` nested {levels} levels deep");
        };
        assert!(matches!(refused, Error::RequirementTooDeep), "{refused:?}");
        // Room for any requirement a person would write.
        assert!(levels >= 15, "{levels}");
        assert_eq!(
            refused.to_string(),
            "requirement too deep: `all` and `any` nest more than 32 levels"
        );
    }

    #[test]
    fn nested_alls_are_flattened() {
        let granted = set(&["a:b", "c:d"]);
        let mut need = Requirement::scope("a:b").unwrap();
        for i in 0..200_000 {
            need = if i % 2 == 0 {
                Requirement::all([need, Requirement::scope("c:d").unwrap()])
            } else {
                Requirement::all([Requirement::scope("a:b").unwrap(), need])
            };
        }
        assert_eq!(need.check(&granted, &sens(&[])), Ok(()));
        assert_eq!(
            need.check(&set(&["a:b"]), &sens(&[])),
            Err(&s("c:d")),
            "the first missing scope, in order"
        );
        assert_eq!(need.clone(), need);
        assert!(format!("{need:?}").starts_with("all([a:b, a:b,"));
        drop(need);
        // Flattening keeps the order: the first missing scope is the
        // first in reading order.
        let need = Requirement::all([
            Requirement::all([Requirement::scope("x:1").unwrap()]),
            Requirement::scope("x:2").unwrap(),
            Requirement::all([
                Requirement::scope("x:3").unwrap(),
                Requirement::scope("x:4").unwrap(),
            ]),
        ]);
        assert_eq!(
            need,
            Requirement::all_of(["x:1", "x:2", "x:3", "x:4"]).unwrap()
        );
    }

    #[test]
    fn scope_sets_serialize() {
        let json = serde_json::to_string(&set(&["b:c", "a:b"])).unwrap();
        assert_eq!(json, r#"["a:b","b:c"]"#);
        assert_eq!(
            serde_json::from_str::<ScopeSet>(&json).unwrap(),
            set(&["a:b", "b:c"])
        );
        let json = serde_json::to_string(&ScopeSet::unrestricted()).unwrap();
        assert_eq!(json, r#""unrestricted""#);
        assert!(
            serde_json::from_str::<ScopeSet>(&json)
                .unwrap()
                .is_unrestricted()
        );
        assert!(serde_json::from_str::<ScopeSet>(r#"["Bad"]"#).is_err());
    }

    /// A scope list reads the same whether its strings can be borrowed
    /// from the input or must be copied (an escape in one, or a reader):
    /// sorted, without repeats, each checked.
    #[test]
    fn scope_sets_read_alike_borrowed_or_copied() {
        let expected = set(&["a:b", "b:c"]);
        for json in [
            r#"["b:c","a:b","b:c"]"#,
            r#"["b\u003ac","a:b","b:c"]"#,
            r#"["b\u003ac","a\u003ab","b:c"]"#,
        ] {
            assert_eq!(serde_json::from_str::<ScopeSet>(json).unwrap(), expected);
            assert_eq!(
                serde_json::from_reader::<_, ScopeSet>(json.as_bytes()).unwrap(),
                expected
            );
        }
        for json in [r#"["a:b","B\u003ac"]"#, r#"["a:b",7]"#, r#"["a:b","c"]"#] {
            assert!(serde_json::from_str::<ScopeSet>(json).is_err(), "{json}");
            assert!(
                serde_json::from_reader::<_, ScopeSet>(json.as_bytes()).is_err(),
                "{json}"
            );
        }
        assert_eq!(
            serde_json::from_str::<ScopeSet>("[]").unwrap(),
            ScopeSet::empty()
        );
    }

    /// A key pasted where a scope set goes (say, the JSON body of a host's
    /// "create key" call) is not repeated in the error, as for one pasted
    /// into a scope.
    #[test]
    fn a_scope_set_error_never_repeats_a_key() {
        let key = "acme_1Zk3Tq9LmX2bW7vRcY4nJ8hF0sDgEaUpKo6iNtBzQyMwLxVj";
        let secret = &key[key.len() - 30..];
        for json in [format!("\"{key}\""), format!("[\"{key}\"]")] {
            let error = serde_json::from_str::<ScopeSet>(&json)
                .unwrap_err()
                .to_string();
            assert!(!error.contains(secret), "{error}");
            assert!(error.contains("acme_<"), "{error}");
        }
        let error = serde_json::from_str::<ScopeSet>(r#""everything""#).unwrap_err();
        assert!(
            error.to_string().starts_with(
                r#"invalid value: string "everything", expected "unrestricted" or a list of scopes"#
            ),
            "{error}"
        );
    }

    /// A sensitive resource is a resource name, not a scope: the message
    /// says so, and does not claim that `*` is allowed when refusing it.
    #[test]
    fn a_bad_sensitive_resource_is_named_as_such() {
        for (bad, shown) in [
            ("*", "*"),
            ("Billing", "Billing"),
            ("billing:read", "billing:read"),
        ] {
            assert_eq!(
                Sensitive::new([bad]).unwrap_err().to_string(),
                format!(
                    "invalid sensitive resource `{shown}`: expected a resource name, [a-z0-9_.-]+ (not `*`)"
                )
            );
        }
        let key = "acme_1Zk3Tq9LmX2bW7vRcY4nJ8hF0sDgEaUpKo6iNtBzQyMwLxVj";
        assert!(
            Sensitive::new([key])
                .unwrap_err()
                .to_string()
                .contains("`acme_<48 characters>`")
        );
    }

    #[test]
    fn narrowing() {
        let none = sens(&[]);
        assert!(set(&["invoices:read"]).is_within(&set(&["invoices:*"]), &none));
        assert!(!set(&["invoices:*"]).is_within(&set(&["invoices:read"]), &none));
        assert!(!ScopeSet::unrestricted().is_within(&set(&["a:b"]), &none));
        assert!(set(&["a:b"]).is_within(&ScopeSet::unrestricted(), &none));
        assert!(!set(&["billing:read"]).is_within(&ScopeSet::unrestricted(), &sens(&["billing"])));
    }

    /// A set counts its explicit scopes; only the empty set grants
    /// nothing (an unrestricted set has no explicit scope, yet grants).
    #[test]
    fn a_set_counts_its_scopes_and_only_the_empty_one_is_empty() {
        assert_eq!(set(&["b:c", "a:b", "a:b"]).len(), 2);
        assert_eq!(set(&["a:b"]).len(), 1);
        assert_eq!(ScopeSet::empty().len(), 0);
        assert_eq!(ScopeSet::unrestricted().len(), 0);
        assert!(ScopeSet::empty().is_empty());
        assert!(!set(&["a:b"]).is_empty());
        assert!(!ScopeSet::unrestricted().is_empty());
    }

    /// Scopes and sets show their text, in `Debug` as in `as_str`.
    #[test]
    fn scopes_and_sets_show_their_text() {
        assert_eq!(s("invoices:read").as_str(), "invoices:read");
        assert_eq!(format!("{:?}", s("invoices:read")), "Scope(invoices:read)");
        assert_eq!(format!("{:?}", set(&["b:c", "a:b"])), r#"{"a:b", "b:c"}"#);
        assert_eq!(
            format!("{:?}", ScopeSet::unrestricted()),
            "ScopeSet(unrestricted)"
        );
    }

    /// The limit is exact: 32 levels, a scope being one, so 31 `any`s
    /// over a scope; an `all` inside an `any` is a level too.
    #[test]
    fn a_requirement_nests_exactly_32_levels() {
        let count = |wrap: fn(Requirement) -> Requirement| {
            let mut need = Requirement::scope("a:b").unwrap();
            for levels in 0..1000 {
                match Requirement::any([wrap(need)]) {
                    Ok(deeper) => need = deeper,
                    Err(e) => {
                        assert!(matches!(e, Error::RequirementTooDeep), "{e:?}");
                        return levels;
                    }
                }
            }
            panic!("`any` nested 1000 levels deep");
        };
        assert_eq!(count(|need| need), 31);
        assert_eq!(count(|need| Requirement::all([need])), 15);
    }

    /// Model checks of the algebra over a small universe: resources `a`,
    /// `b`, `s`, `t` and one that no scope names, actions `x`, `y` and one
    /// that no scope names (so a wildcard can never be made up of names).
    /// A set grants the pairs its scopes cover, `*` reaching no sensitive
    /// resource; a required scope asks every pair it names, a `*` resource
    /// the sensitive ones too. Then `meets` and `permits` are inclusion,
    /// `is_within` never widens, and `cap` is the exact intersection.
    mod model {
        use super::*;
        use proptest::prelude::*;

        const RESOURCES: [&str; 5] = ["a", "b", "s", "t", "unnamed"];
        const ACTIONS: [&str; 3] = ["x", "y", "unnamed"];

        fn scope() -> impl Strategy<Value = Scope> {
            let resource = prop::sample::select(vec!["a", "b", "s", "t", "*"]);
            let action = prop::sample::select(vec!["x", "y", "*"]);
            (resource, action).prop_map(|(r, a)| s(&format!("{r}:{a}")))
        }

        fn scope_set() -> impl Strategy<Value = ScopeSet> {
            prop_oneof![
                1 => Just(ScopeSet::unrestricted()),
                6 => prop::collection::vec(scope(), 0..5).prop_map(ScopeSet::from_scopes),
            ]
        }

        /// The (resource, action) pairs that match, by index.
        fn pairs(matches: impl Fn(&str, &str) -> bool) -> Vec<(usize, usize)> {
            let mut out = Vec::new();
            for (r, resource) in RESOURCES.iter().enumerate() {
                for (a, action) in ACTIONS.iter().enumerate() {
                    if matches(resource, action) {
                        out.push((r, a));
                    }
                }
            }
            out
        }

        fn granted(set: &ScopeSet, sensitive: &[&str]) -> Vec<(usize, usize)> {
            pairs(|resource, action| match &set.0 {
                None => !sensitive.contains(&resource),
                Some(_) => set.iter().map(s).any(|g| {
                    (g.resource() == resource
                        || (g.resource() == "*" && !sensitive.contains(&resource)))
                        && (g.action() == action || g.action() == "*")
                }),
            })
        }

        fn asked(required: &Scope) -> Vec<(usize, usize)> {
            pairs(|resource, action| {
                (required.resource() == resource || required.resource() == "*")
                    && (required.action() == action || required.action() == "*")
            })
        }

        fn within(small: &[(usize, usize)], large: &[(usize, usize)]) -> bool {
            small.iter().all(|p| large.contains(p))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            #[test]
            fn scope_sets_match_the_model(
                a in scope_set(),
                b in scope_set(),
                x in scope(),
                names in prop::sample::subsequence(vec!["a", "s", "t"], 0..=3),
            ) {
                let sensitive = sens(&names);
                let (in_a, in_b) = (granted(&a, &names), granted(&b, &names));
                prop_assert_eq!(a.meets(&x, &sensitive), within(&asked(&x), &in_a));
                let as_grant = granted(&ScopeSet::from_scopes([x.clone()]), &names);
                prop_assert_eq!(a.permits(&x, &sensitive), within(&as_grant, &in_a));
                // An unrestricted set is within an unrestricted one only,
                // even where an explicit `*:*` grants as much.
                if !a.is_unrestricted() || b.is_unrestricted() {
                    prop_assert_eq!(a.is_within(&b, &sensitive), within(&in_a, &in_b));
                } else {
                    prop_assert!(!a.is_within(&b, &sensitive));
                }
                let both: Vec<_> = in_a.iter().filter(|p| in_b.contains(p)).copied().collect();
                prop_assert_eq!(granted(&a.cap(&b, &sensitive), &names), both);
            }

            #[test]
            fn requirements_match_the_model(
                tree in tree(),
                scopes in prop::collection::vec(scope(), 0..5),
                unrestricted in any::<bool>(),
                names in prop::sample::subsequence(vec!["a", "s"], 0..=2),
            ) {
                let set = if unrestricted {
                    ScopeSet::unrestricted()
                } else {
                    ScopeSet::from_scopes(scopes)
                };
                let sensitive = sens(&names);
                let need = build(&tree);
                prop_assert_eq!(
                    need.check(&set, &sensitive).map_err(Clone::clone),
                    evaluate(&tree, &set, &sensitive)
                );
            }
        }

        /// A requirement as written, before `all` flattens it.
        #[derive(Debug, Clone)]
        enum Tree {
            Scope(Scope),
            All(Vec<Tree>),
            Any(Vec<Tree>),
        }

        fn tree() -> impl Strategy<Value = Tree> {
            scope()
                .prop_map(Tree::Scope)
                .prop_recursive(6, 64, 5, |inner| {
                    prop_oneof![
                        prop::collection::vec(inner.clone(), 0..5).prop_map(Tree::All),
                        prop::collection::vec(inner, 1..5).prop_map(Tree::Any),
                    ]
                })
        }

        fn build(tree: &Tree) -> Requirement {
            match tree {
                Tree::Scope(scope) => Requirement::scope(scope.as_str()).unwrap(),
                Tree::All(parts) => Requirement::all(parts.iter().map(build)),
                Tree::Any(parts) => Requirement::any(parts.iter().map(build)).unwrap(),
            }
        }

        /// As documented: every part of an `all`, the first missing scope
        /// in reading order; one part of an `any`, else its first
        /// alternative's missing scope.
        fn evaluate(tree: &Tree, set: &ScopeSet, sensitive: &Sensitive) -> Result<(), Scope> {
            match tree {
                Tree::Scope(scope) if set.meets(scope, sensitive) => Ok(()),
                Tree::Scope(scope) => Err(scope.clone()),
                Tree::All(parts) => parts.iter().try_for_each(|p| evaluate(p, set, sensitive)),
                Tree::Any(parts) => {
                    let outcomes: Vec<_> =
                        parts.iter().map(|p| evaluate(p, set, sensitive)).collect();
                    if outcomes.iter().any(Result::is_ok) {
                        Ok(())
                    } else {
                        outcomes[0].clone()
                    }
                }
            }
        }
    }
}
