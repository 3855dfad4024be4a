//! The quickstart: issue a key, verify it, and watch it refuse a wrong key, a
//! missing scope and an expired key.
//!
//! Run with `cargo run --example quickstart`.

use keyward::time::{Duration, macros::datetime};
use keyward::{
    Contact, ExpiryPolicy, KeyRing, ManualClock, MemoryStore, NewKey, Requirement, ScopeSet,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A manual clock, so the example can jump forward in time.
    let clock = ManualClock::new(datetime!(2026-11-27 09:00 UTC));

    // One ring per key prefix; the pepper comes from the host's secret manager.
    let ring = KeyRing::builder("acme_live")
        .pepper(*b"example pepper: use a real one!!")
        .clock(clock.clone())
        .max_lifetime(Duration::days(365))
        .build(MemoryStore::new())?;

    // Issue a key that may read invoices, for 30 days.
    let issued = ring.issue(
        NewKey::new("acct_42")
            .name("billing sync")
            .contact(Contact::new("Ada", "Lovelace", "ada", "ada@example.com"))
            .scopes(ScopeSet::parse(["invoices:read"])?)
            .expiry(ExpiryPolicy::days(30)),
    )?;
    println!(
        "issued key {} ({}) to {}",
        issued.key.id(),
        issued.key.hint(),
        issued.key.owner()
    );
    println!("hand this to the client once: {}", issued.secret.expose());

    // Verify it, as a server does on every request.
    let read_invoices = Requirement::scope("invoices:read")?;
    let who = ring.verify_with(issued.secret.expose(), &read_invoices)?;
    println!(
        "verified: key {} of {} may read invoices",
        who.id(),
        who.owner()
    );

    // A wrong key: one character changed.
    let mut wrong = issued.secret.expose().to_owned();
    let last = wrong
        .pop()
        .map_or('A', |c| if c == 'A' { 'B' } else { 'A' });
    wrong.push(last);
    match ring.verify(&wrong) {
        Err(e) => println!(
            "wrong key refused: {e} (HTTP {}, code {})",
            e.http_status(),
            e.code()
        ),
        Ok(_) => return Err("a wrong key was accepted".into()),
    }

    // The right key, but a scope it does not have.
    let write_invoices = Requirement::scope("invoices:write")?;
    match ring.verify_with(issued.secret.expose(), &write_invoices) {
        Err(e) => println!(
            "scope refused: {e} (HTTP {}, code {})",
            e.http_status(),
            e.code()
        ),
        Ok(_) => return Err("a missing scope was accepted".into()),
    }

    // Thirty days later the key has expired.
    clock.advance(Duration::days(30));
    match ring.verify(issued.secret.expose()) {
        Err(e) => println!(
            "30 days on: {e} (HTTP {}, code {})",
            e.http_status(),
            e.code()
        ),
        Ok(_) => return Err("an expired key was accepted".into()),
    }
    Ok(())
}
