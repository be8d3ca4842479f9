//! RPC fuzzing against a live target: thousands of random and malformed `bdev_mirror_*` calls.
//! The target must never crash, every answer must be a well-formed JSON-RPC result or error,
//! and the mirrors and claims must stay consistent with what the calls that succeeded did.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Map, Value};
use spdk_mirror::sim::rng::Rng;
use support::{RpcError, Target, TargetOpts};

const METHODS: [&str; 9] = [
    "bdev_mirror_create",
    "bdev_mirror_set_options",
    "bdev_mirror_check",
    "bdev_mirror_delete",
    "bdev_mirror_get_bdevs",
    "bdev_mirror_add_base_bdev",
    "bdev_mirror_remove_base_bdev",
    "bdev_mirror_replace_base_bdev",
    "bdev_mirror_set_num_legs",
];
const KEYS: [&str; 17] = [
    "bitmap_region_kb",
    "rebuild_max_mb_per_s",
    "repair",
    "name",
    "level",
    "layout",
    "chunk_kb",
    "base_bdevs",
    "uuid",
    "pool_size",
    "max_parents",
    "base_bdev",
    "read_policy",
    "superblock",
    "new_base_bdev",
    "num_legs",
    "bogus",
];
const BASES: [&str; 7] = ["b0", "b1", "b2", "b3", "b4", "b5", "big4k"];
const NAMES: [&str; 3] = ["fz0", "fz1", "fz2"];

fn pick<'a>(rng: &mut Rng, items: &[&'a str]) -> &'a str {
    items[rng.below(items.len() as u64) as usize]
}

fn random_string(rng: &mut Rng) -> Value {
    let s = match rng.below(12) {
        0 => String::new(),
        1 => "x".repeat(1 + rng.below(5000) as usize),
        2 => "ü∂\u{1F600}\t\"\\".into(),
        3 => pick(rng, &["raid1", "raid10", "raid5", "RAID1"]).into(),
        4 => pick(rng, &["n2", "f2", "o2", "n3", "n1", "f0", "z2", "n2f2"]).into(),
        5 => "6ba7b810-9dad-11d1-80b4-00c04fd430c8".into(),
        6 | 7 => pick(rng, &BASES).into(),
        8 | 9 => pick(rng, &NAMES).into(),
        _ => "nope".into(),
    };
    Value::String(s)
}

fn random_value(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth > 2 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => json!(rng.percent(50)),
        2 => json!(rng.below(8)),
        3 => [
            json!(-1),
            json!(0),
            json!(3),
            json!(16),
            json!(64),
            json!(1 << 20),
            json!(u64::MAX),
            json!(i64::MIN),
        ][rng.below(8) as usize]
            .clone(),
        4 => json!(1.5),
        5 => random_string(rng),
        6 => Value::Array((0..rng.below(6)).map(|_| random_value(rng, depth + 1)).collect()),
        7 => Value::Array((0..rng.below(6)).map(|_| json!(pick(rng, &BASES))).collect()),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.below(4) {
                m.insert(pick(rng, &KEYS).into(), random_value(rng, depth + 1));
            }
            Value::Object(m)
        }
    }
}

/// Mostly plausible params with something wrong in them, sometimes nonsense.
fn random_params(rng: &mut Rng, method: &str) -> Value {
    if rng.percent(5) {
        return random_value(rng, 0);
    }
    let mut m = Map::new();
    match method {
        "bdev_mirror_create" => {
            m.insert("name".into(), json!(pick(rng, &NAMES)));
            m.insert("level".into(), json!(pick(rng, &["raid1", "raid10"])));
            let legs = 1 + rng.below(5) as usize;
            let bases: Vec<&str> = (0..legs).map(|_| base_or_mirror(rng)).collect();
            m.insert("base_bdevs".into(), json!(bases));
            if rng.percent(50) {
                m.insert("layout".into(), json!(pick(rng, &["n2", "f2", "o2", "n3"])));
                m.insert(
                    "chunk_kb".into(),
                    json!(pick(rng, &["4", "64", "3"]).parse::<u64>().unwrap()),
                );
            }
            if rng.percent(10) {
                m.insert("pool_size".into(), json!(1 + rng.below(8)));
            }
        }
        "bdev_mirror_delete" | "bdev_mirror_get_bdevs" => {
            m.insert("name".into(), json!(pick(rng, &NAMES)));
        }
        "bdev_mirror_set_options" => {
            m.insert("name".into(), json!(pick(rng, &NAMES)));
            m.insert("rebuild_max_mb_per_s".into(), json!(rng.below(100)));
        }
        "bdev_mirror_check" => {
            m.insert("name".into(), json!(pick(rng, &NAMES)));
            m.insert("repair".into(), json!(rng.percent(50)));
        }
        "bdev_mirror_add_base_bdev" => {
            let name = pick(rng, &NAMES);
            m.insert("name".into(), json!(name));
            // Now and then the mirror itself, or another mirror (which may be built on it).
            let base = if rng.percent(15) { name } else { base_or_mirror(rng) };
            m.insert("base_bdev".into(), json!(base));
        }
        "bdev_mirror_replace_base_bdev" => {
            m.insert("base_bdev".into(), json!(pick(rng, &BASES)));
            m.insert("new_base_bdev".into(), json!(base_or_mirror(rng)));
            if rng.percent(30) {
                m.insert("name".into(), json!(pick(rng, &NAMES)));
            }
        }
        "bdev_mirror_set_num_legs" => {
            m.insert("name".into(), json!(pick(rng, &NAMES)));
            m.insert("num_legs".into(), json!(1 + rng.below(5)));
            if rng.percent(50) {
                let n = rng.below(3) as usize;
                let bases: Vec<&str> = (0..n).map(|_| base_or_mirror(rng)).collect();
                m.insert("base_bdevs".into(), json!(bases));
            }
        }
        _ => {
            m.insert("base_bdev".into(), json!(pick(rng, &BASES)));
        }
    }
    // Now break something, most of the time.
    for _ in 0..rng.below(3) {
        let key = pick(rng, &KEYS);
        if rng.percent(30) {
            m.remove(key);
        } else {
            m.insert(key.into(), random_value(rng, 1));
        }
    }
    Value::Object(m)
}

/// A base bdev name: mostly a plain bdev, sometimes a mirror's name.
fn base_or_mirror<'a>(rng: &mut Rng) -> &'a str {
    if rng.percent(20) {
        pick(rng, &NAMES)
    } else {
        pick(rng, &BASES)
    }
}

/// No mirror reaches itself through its legs (a mirror as its own leg, directly or through
/// other mirrors, would write into itself forever).
fn check_no_cycles(t: &Target) {
    let all = mirrors(t);
    for (start, _) in &all {
        let mut todo: Vec<String> = all.iter().find(|(n, _)| n == start).unwrap().1.clone();
        let mut seen = BTreeSet::new();
        while let Some(b) = todo.pop() {
            assert_ne!(&b, start, "mirror {start} reaches itself: {all:?}");
            if seen.insert(b.clone()) {
                if let Some((_, legs)) = all.iter().find(|(n, _)| *n == b) {
                    todo.extend(legs.iter().cloned());
                }
            }
        }
    }
}

fn malformed(rng: &mut Rng) -> Vec<u8> {
    let cases: [&[u8]; 8] = [
        b"{",
        b"{\"jsonrpc\":\"2.0\",\"method\":\"bdev_mirror_create\",\"id\":1,\"params\":{\"name\":",
        b"[]",
        b"{\"jsonrpc\":\"2.0\",\"method\":\"bdev_mirror_create\",\"id\":1,\"params\":[1,2]}",
        b"{\"jsonrpc\":\"2.0\",\"method\":42,\"id\":1}",
        b"\xff\xfe\x00garbage",
        b"{\"jsonrpc\":\"2.0\",\"method\":\"bdev_mirror_get_bdevs\",\"id\":1,\"params\":{\"name\":\"\\ud800\"}}",
        b"{\"jsonrpc\":\"2.0\",\"method\":\"bdev_mirror_delete\",\"id\":1,\"params\":{\"name\":1e999}}",
    ];
    cases[rng.below(cases.len() as u64) as usize].to_vec()
}

/// Names of mirrors, and for each its present legs.
fn mirrors(t: &Target) -> Vec<(String, Vec<String>)> {
    let v = t.rpc("bdev_mirror_get_bdevs", Value::Null).expect("get_bdevs answers");
    v.as_array()
        .expect("an array")
        .iter()
        .filter(|m| m["state"] != "configuring") // being assembled: no legs claimed yet
        .map(|m| {
            let legs = m["legs"]
                .as_array()
                .expect("legs")
                .iter()
                .filter(|l| l["state"] != "removed")
                .map(|l| l["bdev"].as_str().unwrap().to_string())
                // A replacement being copied is held (claimed) by the mirror too.
                .chain(m["replacement"]["bdev"].as_str().map(str::to_string))
                .collect();
            (m["name"].as_str().unwrap().to_string(), legs)
        })
        .collect()
}

/// Every leg of a mirror is claimed; every base bdev in no mirror is not.
fn check_claims(t: &Target) {
    let in_use: BTreeSet<String> = mirrors(t).into_iter().flat_map(|(_, legs)| legs).collect();
    let bdevs = t.rpc("bdev_get_bdevs", Value::Null).expect("bdev_get_bdevs");
    for b in bdevs.as_array().unwrap() {
        let name = b["name"].as_str().unwrap();
        if BASES.contains(&name) {
            assert_eq!(
                b["claimed"].as_bool(),
                Some(in_use.contains(name)),
                "claim of {name}: {b}"
            );
        }
    }
}

fn well_formed(method: &str, params: &Value, r: &Result<Value, RpcError>) {
    if let Err(e) = r {
        assert!(!e.is_transport(), "{method} {params}: no answer: {e}");
        assert!(
            e.code != 0 && !e.message.is_empty(),
            "{method} {params}: bad error {e:?}"
        );
        if e.code != -32602 && e.code != -32603 && e.code != -32600 && e.code != -32601 {
            assert!(e.code < 0, "{method} {params}: error code {}", e.code);
        }
    }
}

/// Deletes every mirror, those built on others first (a claimed mirror cannot go).
fn delete_all(t: &Target) {
    for _ in 0..NAMES.len() {
        let all = mirrors(t);
        let used: BTreeSet<String> = all.iter().flat_map(|(_, legs)| legs.iter().cloned()).collect();
        for (name, _) in all.iter().filter(|(n, _)| !used.contains(n)) {
            t.rpc("bdev_mirror_delete", json!({"name": name})).unwrap();
        }
    }
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn thousands_of_random_rpcs_never_crash_and_keep_state_consistent() {
    let env = support::require_spdk();
    let t = Target::start(
        &env,
        TargetOpts {
            name: "fuzz",
            ..Default::default()
        },
    )
    .expect("target starts");
    for b in &BASES[..6] {
        t.rpc(
            "bdev_malloc_create",
            json!({"name": b, "num_blocks": 8192, "block_size": 512}),
        )
        .unwrap();
    }
    t.rpc(
        "bdev_malloc_create",
        json!({"name": "big4k", "num_blocks": 2048, "block_size": 4096}),
    )
    .unwrap();

    let mut rng = Rng::new(0x5eed);
    let mut successes = 0;
    for i in 0..2000 {
        if rng.percent(3) {
            let bytes = malformed(&mut rng);
            // The server answers with an error or drops the connection; it must not die.
            let _ = t.rpc_raw(&bytes);
        } else {
            // Creates are weighted up so that the other methods mostly meet mirrors that exist.
            // Creates are weighted up and deletes down, so that the other methods mostly meet
            // mirrors that exist.
            let mut method = pick(&mut rng, &METHODS);
            if rng.percent(12) || (method == "bdev_mirror_delete" && rng.percent(60)) {
                method = "bdev_mirror_create";
            }
            let mut params = random_params(&mut rng, method);
            if method == "bdev_mirror_replace_base_bdev" && params.is_object() && rng.percent(70) {
                // Mostly a leg that exists, so the replacement itself runs.
                let legs: Vec<String> = mirrors(&t).into_iter().flat_map(|(_, l)| l).collect();
                if !legs.is_empty() {
                    let leg = legs[rng.below(legs.len() as u64) as usize].clone();
                    params["base_bdev"] = json!(leg);
                }
            }
            let r = t.rpc(method, params.clone());
            well_formed(method, &params, &r);
            successes += u32::from(r.is_ok());
        }
        assert!(
            t.is_alive(),
            "target died after call {i}:\n{}",
            support::tail_lines(&t.log(), 40)
        );
        if i % 100 == 99 {
            check_claims(&t);
            check_no_cycles(&t);
        }
    }
    assert!(
        successes > 50,
        "the fuzzer should also make valid calls ({successes} succeeded)"
    );

    // Create/delete races: a second connection creates while the first deletes the same name.
    let sock = t.socket().to_path_buf();
    delete_all(&t);
    let racer = std::thread::spawn(move || {
        for i in 0..200u64 {
            let p = json!({"name": "race", "level": "raid1", "base_bdevs": ["b0", "b1"]});
            let _ = support::rpc_call(&sock, 1_000_000 + i, "bdev_mirror_create", p, Duration::from_secs(30));
        }
    });
    for _ in 0..200 {
        let r = t.rpc("bdev_mirror_delete", json!({"name": "race"}));
        well_formed("bdev_mirror_delete", &json!({"name": "race"}), &r);
    }
    racer.join().unwrap();
    assert!(t.is_alive());
    delete_all(&t);
    support::wait_until(Duration::from_secs(10), "mirrors gone", || mirrors(&t).is_empty()).unwrap();
    check_claims(&t);
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
}
