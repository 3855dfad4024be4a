// TEMPORARY probe (not committed): where a valid verify's time goes at 1M keys.
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;
use keyward::{KeyId, KeyRing, KeyStore, MemoryStore, NewKey, ScopeSet};

struct Rng(u64);
impl Rng { fn next(&mut self) -> u64 { self.0 ^= self.0 << 13; self.0 ^= self.0 >> 7; self.0 ^= self.0 << 17; self.0 } }

fn main() {
    let n: usize = std::env::var("N").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let ring = KeyRing::builder("bench").pepper([7; 32]).flush_interval(None).build(MemoryStore::new()).unwrap();
    let mut valid = Vec::new(); let mut ids = Vec::new();
    for i in 0..n {
        let is = ring.issue(NewKey::new(format!("acct_{}", i % 50_000)).scopes(ScopeSet::parse(["invoices:read"]).unwrap())).unwrap();
        ids.push(is.key.id().as_u64());
        valid.push(is.secret.expose().to_owned());
    }
    let wrong: Vec<String> = (0..n).map(|i| { let mut s = valid[i].clone(); let b = unsafe { s.as_bytes_mut() }; b[20] = if b[20]==b'A' {b'B'} else {b'A'}; s }).collect();
    let fk = [9u8; 32]; let start = 7;
    let floor: HashMap<u64, [u8; 32]> = valid.iter().map(|k| { let k = k.as_bytes(); (u64::from_le_bytes(k[start..start+8].try_into().unwrap()), *blake3::keyed_hash(&fk, &k[start..start+35]).as_bytes()) }).collect();
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let order: Vec<usize> = (0..(1usize << 22)).map(|_| (rng.next() % n as u64) as usize).collect();
    let store = ring.store();
    let iters = 2_000_000usize;
    let mut res: HashMap<&str, Vec<f64>> = HashMap::new();
    for _round in 0..15 {
        macro_rules! t { ($name:expr, $body:expr) => {{
            let t0 = Instant::now();
            for i in 0..iters { let idx = order[i & (order.len()-1)]; black_box($body(idx)); }
            res.entry($name).or_default().push(t0.elapsed().as_nanos() as f64 / iters as f64);
        }}}
        t!("floor", |idx: usize| { let k = valid[idx].as_bytes(); let d = blake3::keyed_hash(&fk, &k[start..start+35]); let id = u64::from_le_bytes(k[start..start+8].try_into().unwrap()); floor.get(&id).is_some_and(|s| blake3::Hash::from(*s) == d) });
        let mut vs: Vec<u64> = vec![0, 3, 4, 5, 6]; let rot = (_round * 3 + 1) % 5; vs.rotate_left(rot as usize);
        for v in vs { keyward::PROBE.store(v, std::sync::atomic::Ordering::Relaxed);
            let name: &'static str = ["valid v0", "valid v1 hdr", "valid v2 hdr+fields", "valid v3 no consume", "valid v4 no checks", "valid v5 no clock", "valid v6 raw field reads"][v as usize];
            t!(name, |idx: usize| ring.verify(&valid[idx]).is_ok()); }
    }
    let t0 = Instant::now(); let mut acc = 0u128; for _ in 0..10_000_000 { acc ^= std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos(); } black_box(acc); println!("SystemTime::now {:.1} ns", t0.elapsed().as_nanos() as f64 / 1e7);
    let mut names: Vec<_> = res.keys().cloned().collect(); names.sort();
    let med = |v: &Vec<f64>| { let mut v = v.clone(); v.sort_by(|a,b| a.partial_cmp(b).unwrap()); v[v.len()/2] };
    let f = med(&res["floor"]);
    for k in names { let m = med(&res[k]); println!("{k:32} {m:7.0} ns  {:.2}x floor", m / f); }
}
