//! Bad RPC inputs to the mirror module change nothing: every bad call is refused with an error
//! that names the offending field, leaves every mirror and every claim as it was, and the target
//! keeps answering. The bad parameters are one table ([`bad_calls`]); malformed requests (bytes
//! that are not a valid request) and a delete that must work once are their own tests.
//!
//! Only meaningful when SPDK was found at build time (`cfg(spdk)`); otherwise every test here is
//! reported as ignored, with the reason. Run with `cargo build --release && cargo test --release
//! --test spdk_rpc_errors`.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use support::{
    claimed_map, is_claimed, leg_state, raid1_bdev_config, require_spdk, rpc_ok, start_target, tail_lines, RpcError,
    SpdkEnv, Target,
};

const MIB: u64 = 1024 * 1024;
const BS: u32 = 512;

const EINVAL: i64 = -(libc::EINVAL as i64);
const ENODEV: i64 = -(libc::ENODEV as i64);
const EEXIST: i64 = -(libc::EEXIST as i64);
const EBUSY: i64 = -(libc::EBUSY as i64);
const ENOSPC: i64 = -(libc::ENOSPC as i64);

const CREATE: &str = "bdev_mirror_create";
const DELETE: &str = "bdev_mirror_delete";
const GET: &str = "bdev_mirror_get_bdevs";
const ADD: &str = "bdev_mirror_add_base_bdev";
const REMOVE: &str = "bdev_mirror_remove_base_bdev";
const REPLACE: &str = "bdev_mirror_replace_base_bdev";
const NUM_LEGS: &str = "bdev_mirror_set_num_legs";

// ------------------------------------------------------------------------------------------------
// The table of bad calls
// ------------------------------------------------------------------------------------------------

/// What a bad call must answer.
struct Expect {
    /// Exact code, when the API documents one; otherwise any negative code.
    code: Option<i64>,
    /// Accepted message prefixes (`"<field>:"`): the error names the field at fault.
    prefixes: &'static [&'static str],
}

/// One row of the table: `method(params)` must answer `want` and change nothing.
struct Bad {
    method: &'static str,
    params: Value,
    want: Expect,
}

/// A row whose error code is documented.
fn bad(method: &'static str, params: Value, code: i64, prefixes: &'static [&'static str]) -> Bad {
    Bad {
        method,
        params,
        want: Expect {
            code: Some(code),
            prefixes,
        },
    }
}

/// A row that must fail with any negative code.
fn bad_any(method: &'static str, params: Value, prefixes: &'static [&'static str]) -> Bad {
    Bad {
        method,
        params,
        want: Expect { code: None, prefixes },
    }
}

/// Good `bdev_mirror_create` params over the free f0 and f1 (`{"name": "x", "level": "raid1",
/// ...}`), with the fields of `over` replaced; a field given as `"<absent>"` is left out.
fn create(over: Value) -> Value {
    let mut p = json!({"name": "x", "level": "raid1", "base_bdevs": ["f0", "f1"]});
    for (k, v) in over.as_object().unwrap() {
        if v == &json!("<absent>") {
            p.as_object_mut().unwrap().remove(k);
        } else {
            p[k] = v.clone();
        }
    }
    p
}

/// [`create`] at level raid10, with the fields of `over` replaced.
fn r10(over: Value) -> Value {
    let mut p = create(json!({"level": "raid10"}));
    for (k, v) in over.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

/// Every bad call the fixture's target must refuse ([`fixture`] says what the names are).
/// `good_uuid` is the uuid of the mirror `good`.
#[rustfmt::skip] // one row per line: the table reads down the columns
fn bad_calls(good_uuid: &str) -> Vec<Bad> {
    let long_name = "n".repeat(300);
    vec![
        // name
        bad(CREATE, create(json!({"name": "good"})), EEXIST, &["name:"]),
        bad(CREATE, create(json!({"name": "f2"})), EEXIST, &["name:"]),
        bad(CREATE, create(json!({"name": "<absent>"})), EINVAL, &["name:"]),
        bad(CREATE, create(json!({"name": null})), EINVAL, &["name:"]),
        bad(CREATE, create(json!({"name": ""})), EINVAL, &["name:"]),
        bad(CREATE, create(json!({"name": 5})), EINVAL, &["name:"]),
        bad(CREATE, create(json!({"name": ["x"]})), EINVAL, &["name:"]),
        bad(CREATE, create(json!({"name": long_name})), EINVAL, &["name:"]),
        bad(CREATE, create(json!({"name": "bad\nname"})), EINVAL, &["name:"]),
        bad(CREATE, create(json!({"name": "tab\there"})), EINVAL, &["name:"]),
        bad(CREATE, create(json!({"name": "nul\u{0}here"})), EINVAL, &["name:"]),
        // level
        bad(CREATE, create(json!({"level": "<absent>"})), EINVAL, &["level:"]),
        bad(CREATE, create(json!({"level": "raid5"})), EINVAL, &["level:"]),
        bad(CREATE, create(json!({"level": ""})), EINVAL, &["level:"]),
        bad(CREATE, create(json!({"level": 10})), EINVAL, &["level:"]),
        // base_bdevs
        bad(CREATE, create(json!({"base_bdevs": "<absent>"})), EINVAL, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": ["f0", "nope"]})), ENODEV, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": ["nope", "f0"]})), ENODEV, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": ["f0", "f0"]})), EINVAL, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": ["f0", "f1", "f0"]})), EINVAL, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": ["f0", "c0"]})), EBUSY, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": ["c1", "f0"]})), EBUSY, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": ["f0", "f1", "g1"]})), EBUSY, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": ["f0", "d0"]})), EBUSY, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": ["f0", "big0"]})), EINVAL, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": ["big0", "f0"]})), EINVAL, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": ["f0"]})), EINVAL, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": []})), EINVAL, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": "f0"})), EINVAL, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": ["f0", 1]})), EINVAL, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": ["f0", ""]})), EINVAL, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": {"f0": 1}})), EINVAL, &["base_bdevs:"]),
        // wait_for_legs: a boolean; a create that waits still needs a free name.
        bad(CREATE, create(json!({"wait_for_legs": 1})), EINVAL, &["wait_for_legs:"]),
        bad(CREATE, create(json!({"name": "good", "base_bdevs": ["f0", "nope"], "wait_for_legs": true})), EEXIST, &["name:"]),
        bad(CREATE, create(json!({"level": "raid5", "base_bdevs": ["f0", "nope"], "wait_for_legs": true})), EINVAL, &["level:"]),
        bad(CREATE, create(json!({"base_bdevs": ["f0", null, "nope"], "wait_for_legs": true})), EINVAL, &["base_bdevs:"]),
        // ... and whatever else needs no missing leg: the geometry, a leg that is there.
        bad(CREATE, r10(json!({"chunk_kb": 3, "base_bdevs": ["f0", "nope"], "wait_for_legs": true})), EINVAL, &["chunk_kb:"]),
        bad(CREATE, create(json!({"base_bdevs": ["nope"], "wait_for_legs": true})), EINVAL, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": ["c0", "nope"], "wait_for_legs": true})), EBUSY, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": ["x", "nope"], "wait_for_legs": true})), EINVAL, &["base_bdevs:"]),
        // leg_blocks: at most what the smallest leg offers, enough for the geometry.
        bad(CREATE, create(json!({"leg_blocks": 0})), EINVAL, &["leg_blocks:"]),
        bad(CREATE, create(json!({"leg_blocks": "1"})), EINVAL, &["leg_blocks:"]),
        bad(CREATE, create(json!({"leg_blocks": 1u64 << 40})), EINVAL, &["leg_blocks:"]),
        bad(CREATE, r10(json!({"leg_blocks": 8})), EINVAL, &["leg_blocks:"]),
        // A missing leg (null): only without a superblock, never every copy of a block.
        bad(CREATE, create(json!({"base_bdevs": ["f0", null]})), EINVAL, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": [null, null], "superblock": false})), EINVAL, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": [null, "nope"], "superblock": false})), ENODEV, &["base_bdevs:"]),
        bad(CREATE, create(json!({"base_bdevs": [null, "f0", "f0"], "superblock": false})), EINVAL, &["base_bdevs:"]),
        bad(CREATE, r10(json!({"base_bdevs": [null, null, "f2", "f3"], "superblock": false})), EINVAL, &["base_bdevs:"]),
        bad(CREATE, r10(json!({"layout": "f2", "base_bdevs": ["f0", null, null, "f3"], "superblock": false})), EINVAL, &["base_bdevs:"]),
        bad(CREATE, r10(json!({"layout": "n3"})), EINVAL, &["base_bdevs:"]),
        bad(CREATE, r10(json!({"layout": "f3", "base_bdevs": ["f0", "f1"]})), EINVAL, &["base_bdevs:"]),
        bad(CREATE, r10(json!({"base_bdevs": ["f0"]})), EINVAL, &["base_bdevs:"]),
        // layout
        bad(CREATE, create(json!({"layout": "n2"})), EINVAL, &["layout:"]),
        bad(CREATE, r10(json!({"layout": "zz"})), EINVAL, &["layout:"]),
        bad(CREATE, r10(json!({"layout": "n1"})), EINVAL, &["layout:"]),
        bad(CREATE, r10(json!({"layout": "n2f2"})), EINVAL, &["layout:"]),
        bad(CREATE, r10(json!({"layout": ""})), EINVAL, &["layout:"]),
        bad(CREATE, r10(json!({"layout": 2})), EINVAL, &["layout:"]),
        // chunk_kb
        bad(CREATE, create(json!({"chunk_kb": 64})), EINVAL, &["chunk_kb:"]),
        bad(CREATE, r10(json!({"chunk_kb": 3})), EINVAL, &["chunk_kb:"]),
        bad(CREATE, r10(json!({"chunk_kb": 48})), EINVAL, &["chunk_kb:"]),
        bad(CREATE, r10(json!({"chunk_kb": 0})), EINVAL, &["chunk_kb:"]),
        bad(CREATE, r10(json!({"chunk_kb": -64})), EINVAL, &["chunk_kb:"]),
        bad(CREATE, r10(json!({"chunk_kb": 1.5})), EINVAL, &["chunk_kb:"]),
        bad(CREATE, r10(json!({"chunk_kb": "64"})), EINVAL, &["chunk_kb:"]),
        bad(CREATE, r10(json!({"chunk_kb": 1u64 << 21})), EINVAL, &["chunk_kb:"]),
        bad(CREATE, r10(json!({"chunk_kb": u64::MAX})), EINVAL, &["chunk_kb:"]),
        // A 1 KiB chunk on 4 KiB blocks.
        bad(CREATE, r10(json!({"chunk_kb": 1, "base_bdevs": ["big0", "big1"]})), EINVAL, &["chunk_kb:"]),
        // A 1 GiB chunk on 16 MiB legs: the chunk or the legs are at fault.
        bad(CREATE, r10(json!({"chunk_kb": 1u64 << 20})), EINVAL, &["chunk_kb:", "base_bdevs:"]),
        // uuid
        bad(CREATE, create(json!({"uuid": "nope"})), EINVAL, &["uuid:"]),
        bad(CREATE, create(json!({"uuid": ""})), EINVAL, &["uuid:"]),
        bad(CREATE, create(json!({"uuid": 7})), EINVAL, &["uuid:"]),
        bad(CREATE, create(json!({"uuid": "0000-1111"})), EINVAL, &["uuid:"]),
        // The uuid of an existing bdev: two bdevs cannot share it.
        bad_any(CREATE, create(json!({"uuid": good_uuid})), &["uuid:"]),
        // pool_size / max_parents
        bad(CREATE, create(json!({"pool_size": 0})), EINVAL, &["pool_size:"]),
        bad(CREATE, create(json!({"pool_size": -1})), EINVAL, &["pool_size:"]),
        bad(CREATE, create(json!({"pool_size": 2.5})), EINVAL, &["pool_size:"]),
        bad(CREATE, create(json!({"pool_size": "4096"})), EINVAL, &["pool_size:"]),
        bad(CREATE, create(json!({"pool_size": 1u64 << 40})), EINVAL, &["pool_size:"]),
        bad(CREATE, create(json!({"pool_size": u64::MAX})), EINVAL, &["pool_size:"]),
        bad(CREATE, create(json!({"pool_size": 1e30})), EINVAL, &["pool_size:"]),
        bad(CREATE, create(json!({"max_parents": 0})), EINVAL, &["max_parents:"]),
        bad(CREATE, create(json!({"max_parents": 1u64 << 17})), EINVAL, &["max_parents:"]),
        bad(CREATE, create(json!({"max_parents": true})), EINVAL, &["max_parents:"]),
        bad(CREATE, create(json!({"max_parents": i64::MIN})), EINVAL, &["max_parents:"]),
        // unknown parameters
        bad(CREATE, create(json!({"bogus": 1})), EINVAL, &["bogus:"]),
        bad(CREATE, create(json!({"Name": "y"})), EINVAL, &["Name:"]),
        // params that are not an object
        bad(CREATE, json!(["x", "raid1", ["f0", "f1"]]), EINVAL, &["params:"]),
        bad(CREATE, Value::Null, EINVAL, &["name:"]),
        // delete
        bad(DELETE, json!({"name": "nope"}), ENODEV, &["name:"]),
        bad(DELETE, json!({"name": "f0"}), ENODEV, &["name:"]),
        bad(DELETE, json!({"name": "sr"}), ENODEV, &["name:"]),
        bad(DELETE, json!({}), EINVAL, &["name:"]),
        bad(DELETE, json!({"name": ""}), EINVAL, &["name:"]),
        bad(DELETE, json!({"name": 5}), EINVAL, &["name:"]),
        bad(DELETE, json!({"name": "good", "force": true}), EINVAL, &["force:"]),
        bad(DELETE, json!(["good"]), EINVAL, &["params:"]),
        // get_bdevs
        bad(GET, json!({"name": "nope"}), ENODEV, &["name:"]),
        bad(GET, json!({"name": 1}), EINVAL, &["name:"]),
        bad(GET, json!({"bogus": 1}), EINVAL, &["bogus:"]),
        // remove_base_bdev
        bad(REMOVE, json!({"base_bdev": "nope"}), ENODEV, &["base_bdev:"]),
        bad(REMOVE, json!({"base_bdev": "f0"}), ENODEV, &["base_bdev:"]),
        bad(REMOVE, json!({"base_bdev": "c0"}), ENODEV, &["base_bdev:"]),
        bad_any(REMOVE, json!({"base_bdev": "d2"}), &["base_bdev:"]),
        bad(REMOVE, json!({}), EINVAL, &["base_bdev:"]),
        bad(REMOVE, json!({"base_bdev": ""}), EINVAL, &["base_bdev:"]),
        bad(REMOVE, json!({"base_bdev": ["g0"]}), EINVAL, &["base_bdev:"]),
        bad(REMOVE, json!({"base_bdev": "g0", "name": "good"}), EINVAL, &["name:"]),
        // add_base_bdev
        bad(ADD, json!({"name": "good", "base_bdev": "f0"}), ENOSPC, &["name:"]),
        bad(ADD, json!({"name": "nope", "base_bdev": "f0"}), ENODEV, &["name:"]),
        bad(ADD, json!({"name": "deg", "base_bdev": "nope"}), ENODEV, &["base_bdev:"]),
        bad(ADD, json!({"name": "deg", "base_bdev": "big0"}), EINVAL, &["base_bdev:"]),
        bad(ADD, json!({"name": "deg", "base_bdev": "small"}), EINVAL, &["base_bdev:"]),
        bad(ADD, json!({"name": "deg", "base_bdev": "c0"}), EBUSY, &["base_bdev:"]),
        bad(ADD, json!({"name": "deg", "base_bdev": "g0"}), EBUSY, &["base_bdev:"]),
        bad(ADD, json!({"name": "deg", "base_bdev": "d0"}), EBUSY, &["base_bdev:"]),
        bad(ADD, json!({"name": "deg"}), EINVAL, &["base_bdev:"]),
        bad(ADD, json!({"base_bdev": "f0"}), EINVAL, &["name:"]),
        bad(ADD, json!({"name": "deg", "base_bdev": ""}), EINVAL, &["base_bdev:"]),
        bad(ADD, json!({"name": "deg", "base_bdev": 3}), EINVAL, &["base_bdev:"]),
        bad(ADD, json!({"name": "deg", "base_bdev": "f0", "slot": 2}), EINVAL, &["slot:"]),
    ]
}

// ------------------------------------------------------------------------------------------------
// The target the bad calls aim at, and what they must leave unchanged
// ------------------------------------------------------------------------------------------------

/// Everything a bad call must leave unchanged.
#[derive(PartialEq)]
struct Snapshot {
    mirrors: String,
    claimed: BTreeMap<String, bool>,
}

fn snapshot(t: &Target) -> Snapshot {
    Snapshot {
        mirrors: serde_json::to_string(&rpc_ok(t, "bdev_mirror_get_bdevs", Value::Null)).unwrap(),
        claimed: claimed_map(t),
    }
}

/// Describes how `now` differs from `before`.
fn snapshot_diff(before: &Snapshot, now: &Snapshot) -> String {
    let mut out = Vec::new();
    if before.mirrors != now.mirrors {
        out.push(format!(
            "bdev_mirror_get_bdevs changed:\n  before: {}\n  after:  {}",
            before.mirrors, now.mirrors
        ));
    }
    for (name, was) in &before.claimed {
        match now.claimed.get(name) {
            None => out.push(format!("bdev {name} disappeared")),
            Some(is) if is != was => out.push(format!("bdev {name}: claimed {was} -> {is}")),
            _ => {}
        }
    }
    for name in now.claimed.keys().filter(|n| !before.claimed.contains_key(*n)) {
        out.push(format!("bdev {name} appeared"));
    }
    out.join("\n")
}

/// Sends `bytes` on a fresh connection, closes our write side, and reads until the target
/// closes (bounded). `Some(response)` if one came back.
fn send_and_close(socket: &Path, bytes: &[u8]) -> Result<Option<Value>, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).map_err(|e| format!("write: {e}"))?;
    s.shutdown(std::net::Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) if buf.is_empty() => return Err(format!("no answer and no close within 10 s: {e}")),
        Err(_) => {}
    }
    if buf.is_empty() {
        Ok(None)
    } else {
        serde_json::from_slice(&buf)
            .map(Some)
            .map_err(|e| format!("unparsable answer ({e}): {}", String::from_utf8_lossy(&buf)))
    }
}

/// Checks one bad answer; returns a problem description or None.
fn judge(what: &str, result: Result<Value, RpcError>, want: &Expect) -> Option<String> {
    match result {
        Ok(v) => Some(format!("{what}: accepted (returned {v}), expected an error")),
        Err(e) if e.is_transport() => Some(format!("{what}: no JSON-RPC answer: {e}")),
        Err(e) => {
            let mut p = Vec::new();
            if e.code >= 0 {
                p.push(format!("code {} is not negative", e.code));
            }
            if let Some(c) = want.code {
                if e.code != c {
                    p.push(format!("code {} (expected {c})", e.code));
                }
            }
            if !want.prefixes.iter().any(|pre| e.message.starts_with(pre)) {
                p.push(format!("message does not start with {:?}", want.prefixes));
            }
            (!p.is_empty()).then(|| format!("{what}: {} — got {}: {:?}", p.join(", "), e.code, e.message))
        }
    }
}

/// A target with the bdevs the bad calls aim at, and its state before them.
struct Fixture {
    t: Target,
    before: Snapshot,
    good_uuid: String,
}

/// Starts a target with: malloc bdevs g0 g1 (legs of the raid1 mirror `good`), d0 d1 d2 (legs
/// of `deg`, d2 removed: degraded with a free slot), f0..f3 (free), c0 c1 (claimed by SPDK's
/// raid1 `sr`), big0 big1 (4 KiB blocks), `small` (half the size), n0 (a null bdev: no unmap,
/// no flush), im0 im1 (4 KiB blocks with 8 bytes of interleaved metadata, so SPDK's block size
/// is 4104); all others 16 MiB of 512 B.
fn fixture(env: &SpdkEnv, name: &str) -> Fixture {
    let t = start_target(env, name, None);

    let blocks = 16 * MIB / BS as u64;
    for b in ["g0", "g1", "d0", "d1", "d2", "f0", "f1", "f2", "f3", "c0", "c1"] {
        rpc_ok(
            &t,
            "bdev_malloc_create",
            json!({"name": b, "num_blocks": blocks, "block_size": BS}),
        );
    }
    for b in ["big0", "big1"] {
        rpc_ok(
            &t,
            "bdev_malloc_create",
            json!({"name": b, "num_blocks": 16 * MIB / 4096, "block_size": 4096}),
        );
    }
    rpc_ok(
        &t,
        "bdev_malloc_create",
        json!({"name": "small", "num_blocks": blocks / 2, "block_size": BS}),
    );
    rpc_ok(
        &t,
        "bdev_null_create",
        json!({"name": "n0", "num_blocks": blocks, "block_size": BS}),
    );
    for b in ["im0", "im1"] {
        rpc_ok(
            &t,
            "bdev_malloc_create",
            json!({"name": b, "num_blocks": 16 * MIB / 4096, "block_size": 4096, "md_size": 8, "md_interleave": true}),
        );
    }
    // SPDK's own raid1 claims c0 and c1.
    let raid = raid1_bdev_config("sr", &["c0", "c1"]);
    rpc_ok(&t, "bdev_raid_create", raid["params"].clone());
    // A good mirror, and a degraded one with a free slot.
    assert_eq!(
        rpc_ok(
            &t,
            "bdev_mirror_create",
            json!({"name": "good", "level": "raid1", "base_bdevs": ["g0", "g1"]})
        ),
        json!("good")
    );
    assert_eq!(
        rpc_ok(
            &t,
            "bdev_mirror_create",
            json!({"name": "deg", "level": "raid1", "base_bdevs": ["d0", "d1", "d2"]})
        ),
        json!("deg")
    );
    assert_eq!(
        rpc_ok(&t, "bdev_mirror_remove_base_bdev", json!({"base_bdev": "d2"})),
        json!(true)
    );
    rpc_ok(&t, "bdev_wait_for_examine", Value::Null);
    let deg = t.mirror_info("deg");
    assert_eq!(deg["state"], json!("degraded"), "{deg}");
    assert_eq!(leg_state(&deg, 2), "removed", "{deg}");
    assert!(!is_claimed(&t, "d2"), "a removed leg must be released");

    let before = snapshot(&t);
    for (b, want) in [
        ("g0", true),
        ("d0", true),
        ("d2", false),
        ("f0", false),
        ("c0", true),
        ("big0", false),
        ("n0", false),
        ("im0", false),
    ] {
        assert_eq!(
            before.claimed.get(b),
            Some(&want),
            "claimed state of {b} before the bad calls"
        );
    }
    let good_uuid = t.mirror_info("good")["uuid"].as_str().unwrap().to_string();
    Fixture { t, before, good_uuid }
}

impl Fixture {
    /// Notes in `problems` any change since the fixture was set up.
    fn check_unchanged(&self, what: &str, problems: &mut Vec<String>) {
        let now = snapshot(&self.t);
        if now != self.before {
            problems.push(format!("{what}: state changed:\n{}", snapshot_diff(&self.before, &now)));
        }
    }

    /// The target is still alive and answering, `good` is still online, there were no
    /// `problems`, and the target shuts down cleanly.
    fn finish(self, what: &str, problems: Vec<String>) {
        let t = &self.t;
        assert!(t.is_alive(), "spdk_tgt died; log tail:\n{}", tail_lines(&t.log(), 40));
        rpc_ok(t, "spdk_get_version", Value::Null);
        assert_eq!(t.mirror_info("good")["state"], json!("online"));
        assert!(
            problems.is_empty(),
            "{} problem(s) with {what}:\n{}",
            problems.len(),
            problems.join("\n")
        );
        t.shutdown(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    }
}

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn bad_params_are_refused_and_change_nothing() {
    let env = require_spdk();
    let f = fixture(&env, "bad_params");
    let t = &f.t;
    let mut problems = Vec::new();
    for Bad { method, params, want } in &bad_calls(&f.good_uuid) {
        let what = format!("{method} {params}");
        if let Some(p) = judge(&what, t.rpc(method, params.clone()), want) {
            problems.push(p);
        }
        f.check_unchanged(&what, &mut problems);
    }
    f.finish("bad RPC params", problems);
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn malformed_requests_are_refused_and_change_nothing() {
    let env = require_spdk();
    let f = fixture(&env, "bad_requests");
    let t = &f.t;
    let mut problems = Vec::new();
    // A number too large for any numeric type (SPDK's parser accepts it as a number token).
    let huge = br#"{"jsonrpc":"2.0","id":7,"method":"bdev_mirror_create","params":{"name":"x","level":"raid1","base_bdevs":["f0","f1"],"pool_size":1e400}}"#;
    let what = "bdev_mirror_create with pool_size 1e400";
    match t.rpc_raw(huge) {
        Ok(resp) => match resp.get("error") {
            Some(err) => {
                let e = RpcError {
                    code: err["code"].as_i64().unwrap_or(0),
                    message: err["message"].as_str().unwrap_or("").to_string(),
                };
                if let Some(p) = judge(
                    what,
                    Err(e),
                    &Expect {
                        code: Some(EINVAL),
                        prefixes: &["pool_size:"],
                    },
                ) {
                    problems.push(p);
                }
            }
            None => problems.push(format!("{what}: accepted: {resp}")),
        },
        Err(e) => problems.push(format!("{what}: no answer: {e}")),
    }
    f.check_unchanged(what, &mut problems);

    // Malformed requests: no success, nothing changes, the target survives.
    let malformed: Vec<(&str, &[u8])> = vec![
        ("binary garbage", b"\xff\xfe\x00garbage{{{"),
        (
            "trailing comma",
            br#"{"jsonrpc":"2.0","id":8,"method":"bdev_mirror_create","params":{"name":"x","level":"raid1","base_bdevs":["f0","f1"],}}"#,
        ),
        (
            "unquoted key",
            br#"{"jsonrpc":"2.0","id":9,"method":"bdev_mirror_create","params":{name:"x"}}"#,
        ),
        ("a JSON array", b"[1,2,3]"),
        ("a JSON string", b"\"bdev_mirror_create\""),
        (
            "params a string",
            br#"{"jsonrpc":"2.0","id":10,"method":"bdev_mirror_create","params":"x"}"#,
        ),
        (
            "params a number",
            br#"{"jsonrpc":"2.0","id":11,"method":"bdev_mirror_delete","params":5}"#,
        ),
    ];
    for (what, bytes) in malformed {
        match t.rpc_raw(bytes) {
            Err(_) => {} // SPDK closes the connection on bytes it cannot parse
            Ok(resp) => {
                // One error object, or (for a JSON array, read as a batch) one per element.
                let answers = match &resp {
                    Value::Array(a) if !a.is_empty() => a.clone(),
                    other => vec![other.clone()],
                };
                let all_errors = answers
                    .iter()
                    .all(|a| a.get("result").is_none() && a["error"]["code"].as_i64().is_some_and(|c| c < 0));
                if !all_errors {
                    problems.push(format!("{what}: unexpected answer {resp}"));
                }
            }
        }
        f.check_unchanged(what, &mut problems);
    }
    // A request cut short: the target must not wait forever nor act on half a request.
    let truncated = br#"{"jsonrpc":"2.0","id":12,"method":"bdev_mirror_create","params":{"name":"x","level":"raid1","base_bdevs":["f0","f1"]"#;
    match send_and_close(t.socket(), truncated) {
        Ok(None) => {}
        Ok(Some(resp)) if resp.get("error").is_some() => {}
        Ok(Some(resp)) => problems.push(format!("truncated request: unexpected answer {resp}")),
        Err(e) => problems.push(format!("truncated request: {e}")),
    }
    f.check_unchanged("truncated request", &mut problems);
    f.finish("malformed requests", problems);
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn delete_goes_once_and_releases_the_legs() {
    let env = require_spdk();
    let f = fixture(&env, "bad_delete");
    let t = &f.t;
    let mut problems = Vec::new();
    // Delete: a mirror created for the purpose goes away once, releasing its legs.
    assert_eq!(
        rpc_ok(
            t,
            "bdev_mirror_create",
            json!({"name": "tmp", "level": "raid1", "base_bdevs": ["f2", "f3"]})
        ),
        json!("tmp")
    );
    rpc_ok(t, "bdev_wait_for_examine", Value::Null);
    assert!(
        is_claimed(t, "f2") && is_claimed(t, "f3"),
        "legs of tmp must be claimed"
    );
    assert_eq!(rpc_ok(t, "bdev_mirror_delete", json!({"name": "tmp"})), json!(true));
    if let Some(p) = judge(
        "second bdev_mirror_delete tmp",
        t.rpc("bdev_mirror_delete", json!({"name": "tmp"})),
        &Expect {
            code: Some(ENODEV),
            prefixes: &["name:"],
        },
    ) {
        problems.push(p);
    }
    if let Some(p) = judge(
        "bdev_mirror_get_bdevs tmp after delete",
        t.rpc("bdev_mirror_get_bdevs", json!({"name": "tmp"})),
        &Expect {
            code: Some(ENODEV),
            prefixes: &["name:"],
        },
    ) {
        problems.push(p);
    }
    let gone = t.rpc("bdev_get_bdevs", json!({"name": "tmp"}));
    if gone.is_ok() {
        problems.push(format!("bdev tmp still exists after delete: {gone:?}"));
    }
    f.check_unchanged("create + delete tmp", &mut problems);
    f.finish("delete", problems);
}

/// Judges one refused call like [`judge`], and also that its message mentions every one of
/// `must` and none of `must_not`.
fn judge_text(
    what: &str,
    result: Result<Value, RpcError>,
    want: &Expect,
    must: &[&str],
    must_not: &[&str],
) -> Option<String> {
    let text = match &result {
        Err(e) if !e.is_transport() => Some(e.message.clone()),
        _ => None,
    };
    if let Some(p) = judge(what, result, want) {
        return Some(p);
    }
    let text = text.unwrap_or_default();
    let missing: Vec<&str> = must.iter().copied().filter(|w| !text.contains(w)).collect();
    let extra: Vec<&str> = must_not.iter().copied().filter(|w| text.contains(w)).collect();
    (!missing.is_empty() || !extra.is_empty())
        .then(|| format!("{what}: message {text:?} lacks {missing:?} or names {extra:?}"))
}

/// Each of `calls` (method, params, the field its error must start with) must be refused
/// with EINVAL, its message naming every one of `must` and none of `must_not`, and change
/// nothing (the fixture's mirrors and claims as they were, which covers the bdev offered).
fn refused_naming(
    f: &Fixture,
    calls: &[(&str, Value, &'static [&'static str])],
    must: &[&str],
    must_not: &[&str],
    problems: &mut Vec<String>,
) {
    for (method, params, prefixes) in calls {
        let what = format!("{method} {params}");
        let want = Expect {
            code: Some(EINVAL),
            prefixes,
        };
        if let Some(p) = judge_text(&what, f.t.rpc(method, params.clone()), &want, must, must_not) {
            problems.push(p);
        }
        f.check_unchanged(&what, problems);
    }
}

/// A leg that lacks an I/O type the mirror offers because all its legs take it (here unmap,
/// which the malloc legs take and a null bdev does not) is refused by add, replace and a grow,
/// naming the field and the type, before anything changes: the null bdev stays unclaimed and
/// the mirrors' legs as they were. Flush is not asked for (the mirror offers it when any leg
/// takes it), though the null bdev lacks it too.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn new_leg_without_an_offered_io_type_is_refused() {
    let env = require_spdk();
    let f = fixture(&env, "bad_io_types");
    let mut problems = Vec::new();
    let calls: [(&str, Value, &'static [&'static str]); 3] = [
        (ADD, json!({"name": "deg", "base_bdev": "n0"}), &["base_bdev:"]),
        (
            REPLACE,
            json!({"name": "good", "base_bdev": "g0", "new_base_bdev": "n0"}),
            &["new_base_bdev:"],
        ),
        (
            NUM_LEGS,
            json!({"name": "good", "num_legs": 3, "base_bdevs": ["n0"]}),
            &["base_bdevs:"],
        ),
    ];
    refused_naming(&f, &calls, &["'n0'", "unmap"], &["flush"], &mut problems);
    f.finish("a new leg lacking an offered I/O type", problems);
}

/// Legs with interleaved metadata (SPDK's block size then counts the metadata: 4104) are
/// refused at create naming base_bdevs and the metadata, as separate metadata is, not with an
/// error about a `block_size` field the RPC does not have; and so is one added to a mirror.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn interleaved_metadata_legs_are_refused() {
    let env = require_spdk();
    let f = fixture(&env, "bad_interleaved_md");
    let mut problems = Vec::new();
    let calls: [(&str, Value, &'static [&'static str]); 4] = [
        (CREATE, create(json!({"base_bdevs": ["im0", "im1"]})), &["base_bdevs:"]),
        (CREATE, create(json!({"base_bdevs": ["f0", "im0"]})), &["base_bdevs:"]),
        (CREATE, create(json!({"base_bdevs": ["im0", "f0"]})), &["base_bdevs:"]),
        (ADD, json!({"name": "deg", "base_bdev": "im0"}), &["base_bdev:"]),
    ];
    refused_naming(&f, &calls, &["'im0'", "metadata"], &["block_size"], &mut problems);
    f.finish("legs with interleaved metadata", problems);
}

/// A bdev stacked on a mirror through other modules (a passthru on it, an error bdev on that)
/// is refused as that mirror's new leg by add, replace and a grow, naming the field: the
/// mirror would write into itself (a rebuild that never moves, a target that cannot stop).
/// Nothing changes.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn a_bdev_built_on_the_mirror_is_refused_as_its_leg() {
    let env = require_spdk();
    let mut f = fixture(&env, "bad_built_on");
    rpc_ok(
        &f.t,
        "bdev_passthru_create",
        json!({"base_bdev_name": "deg", "name": "pd"}),
    );
    rpc_ok(&f.t, "bdev_error_create", json!({"base_name": "pd"}));
    rpc_ok(
        &f.t,
        "bdev_passthru_create",
        json!({"base_bdev_name": "good", "name": "pg"}),
    );
    f.before = snapshot(&f.t);
    let mut problems = Vec::new();
    let calls: [(&str, Value, &'static [&'static str]); 4] = [
        (ADD, json!({"name": "deg", "base_bdev": "EE_pd"}), &["base_bdev:"]),
        (
            REPLACE,
            json!({"name": "deg", "base_bdev": "d0", "new_base_bdev": "EE_pd"}),
            &["new_base_bdev:"],
        ),
        (
            NUM_LEGS,
            json!({"name": "deg", "num_legs": 4, "base_bdevs": ["EE_pd"]}),
            &["base_bdevs:"],
        ),
        (
            REPLACE,
            json!({"name": "good", "base_bdev": "g0", "new_base_bdev": "pg"}),
            &["new_base_bdev:"],
        ),
    ];
    refused_naming(&f, &calls, &["built on it"], &[], &mut problems);
    f.finish("a bdev built on the mirror as its leg", problems);
}
