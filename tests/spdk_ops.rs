//! Operator RPCs of the mirror module (issue #13), against a live `spdk_tgt`:
//! - `bdev_mirror_wipe_superblock` (md's `--zero-superblock`) on a leg that was away when its
//!   mirror was deleted: the half-assembled mirror it brought back is dropped and never
//!   assembles; refusals (claimed, missing, no superblock) change nothing;
//! - module options set before `framework_start_init` (`--wait-for-rpc`) govern assembly after
//!   a restart: a short `degraded_grace_ms` assembles degraded quickly, `degraded_assembly:
//!   false` waits for every leg; bad values are refused naming the field;
//! - `bdev_mirror_get_bdevs`'s `category` (SPDK raid's), with mirrors still waiting for legs
//!   listed as `configuring`, and `bdev_get_bdevs` showing the mirror under
//!   `driver_specific.mirror`.
//!
//! The tests take turns (one lock): their timings must not be skewed by each other.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{require_spdk, tail_lines, test_dir, SpdkEnv, Target, TargetOpts};

const MIB: u64 = 1024 * 1024;
const BS: u32 = 512;

const EINVAL: i64 = -(libc::EINVAL as i64);
const ENODEV: i64 = -(libc::ENODEV as i64);
const EBUSY: i64 = -(libc::EBUSY as i64);

use support::{create_aio, leg_files, rpc_ok, serial};

fn start_tgt(env: &SpdkEnv, name: &str, wait_for_rpc: bool) -> Target {
    Target::start(
        env,
        TargetOpts {
            name,
            wait_for_rpc,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `method(params)` must fail with `code` and a message that starts with `field:`; returns
/// the message.
fn rpc_refused(t: &Target, method: &str, params: Value, code: i64, field: &str) -> String {
    match t.rpc(method, params.clone()) {
        Ok(v) => panic!("{method} {params} succeeded ({v}); expected error {code} naming {field}"),
        Err(e) => {
            assert_eq!(e.code, code, "{method} {params}: {e}");
            assert!(
                e.message.starts_with(&format!("{field}:")),
                "{method} {params}: the message must name {field}: {e}"
            );
            e.message
        }
    }
}

fn get_mirrors(t: &Target, params: Value) -> Vec<Value> {
    let v = rpc_ok(t, "bdev_mirror_get_bdevs", params);
    v.as_array().expect("bdev_mirror_get_bdevs returns an array").clone()
}

fn names(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|m| m["name"].as_str().unwrap_or("<no name>").to_string())
        .collect()
}

/// The mirrors waiting for legs (category `configuring`).
fn configuring(t: &Target) -> Vec<Value> {
    get_mirrors(t, json!({"category": "configuring"}))
}

/// The registered mirror `mir`, if there is one.
fn registered(t: &Target) -> Option<Value> {
    support::registered_mirror(t, "mir")
}

/// Polls `f` every 50 ms until it returns `Some`; panics with `what` and the log otherwise.
fn wait_for<T>(t: &Target, secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {secs} s waiting for {what}\nlog tail:\n{}",
                tail_lines(&t.log(), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn module_options(t: &Target) -> Value {
    rpc_ok(t, "bdev_mirror_get_module_options", Value::Null)
}

fn create_malloc(t: &Target, name: &str, mib: u64) {
    rpc_ok(
        t,
        "bdev_malloc_create",
        json!({"name": name, "num_blocks": mib * MIB / BS as u64, "block_size": BS}),
    );
}

fn create_passthru(t: &Target, base: &str, name: &str) {
    rpc_ok(t, "bdev_passthru_create", json!({"base_bdev_name": base, "name": name}));
}

/// How many times the log says `needle`.
fn log_count(t: &Target, needle: &str) -> usize {
    t.log().matches(needle).count()
}

// ------------------------------------------------------------------------------------------------

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn new_methods_are_registered() {
    let _turn = serial();
    let env = require_spdk();
    let t = start_tgt(&env, "ops_methods", false);
    let methods = rpc_ok(&t, "rpc_get_methods", Value::Null);
    for m in [
        "bdev_mirror_wipe_superblock",
        "bdev_mirror_set_module_options",
        "bdev_mirror_get_module_options",
    ] {
        assert!(
            methods.as_array().unwrap().contains(&json!(m)),
            "rpc_get_methods lacks {m}"
        );
    }
}

/// A raid1 mirror over `m0`, `m1` and passthru `p2` (over `m2`) loses `p2` (removed), then is
/// deleted: delete zeroes the superblocks of `m0` and `m1`, but `p2` keeps its own, which
/// records its removal. When `p2` is registered again, examine finds it and lists the mirror
/// as waiting for the others (`configuring`), `p2` stale: it never assembles the mirror by
/// itself (before the removal was recorded on it, it was found fresh and the mirror the
/// operator deleted came back after the grace). Wiping `p2` drops the waiting mirror.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn wipe_superblock_stops_a_deleted_mirror_from_coming_back() {
    let _turn = serial();
    let env = require_spdk();
    let t = start_tgt(&env, "ops_wipe", false);
    for m in ["m0", "m1", "m2"] {
        create_malloc(&t, m, 16);
    }
    create_passthru(&t, "m2", "p2");
    // The module options are runtime options too; a grace shorter than the test's patience
    // shows that the wipe, not the wait, keeps the mirror away.
    let grace_ms = 5000;
    assert_eq!(
        rpc_ok(
            &t,
            "bdev_mirror_set_module_options",
            json!({"degraded_grace_ms": grace_ms})
        ),
        json!(true)
    );
    rpc_ok(
        &t,
        "bdev_mirror_create",
        json!({"name": "mir", "level": "raid1", "base_bdevs": ["m0", "m1", "p2"]}),
    );

    // bdev_get_bdevs shows the mirror's layout and legs under driver_specific.mirror.
    let b = rpc_ok(&t, "bdev_get_bdevs", json!({"name": "mir"}));
    let ds = &b[0]["driver_specific"]["mirror"];
    assert_eq!(ds["level"], json!("raid1"), "{b}");
    assert!(ds.get("layout").is_some(), "layout missing: {b}");
    assert_eq!(ds["num_legs"], json!(3), "{b}");
    let leg_names: Vec<&str> = ds["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["bdev"].as_str().unwrap())
        .collect();
    assert_eq!(leg_names, ["m0", "m1", "p2"], "{b}");
    assert_eq!(ds["state"], json!("online"), "{b}");

    // Categories of a registered mirror: a degraded mirror is online, as SPDK raid lists it.
    assert_eq!(names(&get_mirrors(&t, json!({"category": "online"}))), ["mir"]);
    assert!(get_mirrors(&t, json!({"category": "offline"})).is_empty());
    assert!(configuring(&t).is_empty());
    assert_eq!(
        names(&get_mirrors(&t, json!({"name": "mir", "category": "all"}))),
        ["mir"]
    );
    assert!(get_mirrors(&t, json!({"name": "mir", "category": "offline"})).is_empty());
    rpc_refused(
        &t,
        "bdev_mirror_get_bdevs",
        json!({"category": "degraded"}),
        EINVAL,
        "category",
    );
    rpc_refused(&t, "bdev_mirror_get_bdevs", json!({"category": 1}), EINVAL, "category");
    rpc_refused(
        &t,
        "bdev_mirror_get_bdevs",
        json!({"name": "nope", "category": "all"}),
        ENODEV,
        "name",
    );

    assert_eq!(
        rpc_ok(&t, "bdev_mirror_remove_base_bdev", json!({"base_bdev": "p2"})),
        json!(true)
    );
    let m = t.mirror_info("mir");
    assert_eq!(m["state"], json!("degraded"), "{m}");
    assert_eq!(names(&get_mirrors(&t, json!({"category": "online"}))), ["mir"]);
    // A leg of a running mirror is claimed by this module: refused, the mirror untouched.
    let msg = rpc_refused(
        &t,
        "bdev_mirror_wipe_superblock",
        json!({"base_bdev": "m0"}),
        EBUSY,
        "base_bdev",
    );
    assert!(msg.contains("'m0'") && msg.contains("mirror"), "{msg}");
    assert_eq!(
        t.mirror_info("mir")["events"],
        m["events"],
        "a refused wipe changed the mirror"
    );
    assert_eq!(rpc_ok(&t, "bdev_mirror_delete", json!({"name": "mir"})), json!(true));

    // The deleted mirror's legs carry no superblock any more.
    let msg = rpc_refused(
        &t,
        "bdev_mirror_wipe_superblock",
        json!({"base_bdev": "m0"}),
        EINVAL,
        "base_bdev",
    );
    assert!(msg.contains("no mirror superblock"), "{msg}");

    // p2 comes back (registered again, so examined again): its superblock brings `mir` back
    // as a mirror waiting for its other legs.
    let found = log_count(&t, "found leg p2");
    rpc_ok(&t, "bdev_passthru_delete", json!({"name": "p2"}));
    create_passthru(&t, "m2", "p2");
    let examined = Instant::now();
    let waiting = wait_for(&t, 10, "mir to wait for legs (configuring)", || {
        configuring(&t).into_iter().find(|m| m["name"] == json!("mir"))
    });
    assert!(log_count(&t, "found leg p2") > found, "{}", tail_lines(&t.log(), 20));
    assert_eq!(waiting["state"], json!("configuring"), "{waiting}");
    assert_eq!(waiting["found_bdevs"], json!(["p2"]), "{waiting}");
    assert_eq!(waiting["awaited_slots"], json!([0, 1]), "{waiting}");
    assert_eq!(waiting["legs"][2]["bdev"], json!("p2"), "{waiting}");
    assert_eq!(waiting["legs"][2]["state"], json!("stale"), "removed: {waiting}");
    assert_eq!(waiting["legs"][0]["state"], json!("awaited"), "{waiting}");
    assert_eq!(waiting["degraded_assembly_scheduled"], json!(false), "{waiting}");
    assert!(waiting["uuid"].as_str().is_some_and(|u| u.len() == 36), "{waiting}");
    // name and category together find it; other categories do not list it.
    assert_eq!(
        names(&get_mirrors(&t, json!({"name": "mir", "category": "configuring"}))),
        ["mir"]
    );
    assert!(get_mirrors(&t, json!({"name": "mir", "category": "online"})).is_empty());

    // Refusals change nothing: m2 is claimed by passthru; no such bdev; bad params.
    let msg = rpc_refused(
        &t,
        "bdev_mirror_wipe_superblock",
        json!({"base_bdev": "m2"}),
        EBUSY,
        "base_bdev",
    );
    assert!(msg.contains("'m2'") && msg.contains("passthru"), "{msg}");
    rpc_refused(
        &t,
        "bdev_mirror_wipe_superblock",
        json!({"base_bdev": "nope"}),
        ENODEV,
        "base_bdev",
    );
    rpc_refused(&t, "bdev_mirror_wipe_superblock", json!({}), EINVAL, "base_bdev");
    rpc_refused(
        &t,
        "bdev_mirror_wipe_superblock",
        json!({"base_bdev": 7}),
        EINVAL,
        "base_bdev",
    );
    rpc_refused(
        &t,
        "bdev_mirror_wipe_superblock",
        json!({"base_bdev": "p2", "force": true}),
        EINVAL,
        "force",
    );
    assert_eq!(
        names(&configuring(&t)),
        ["mir"],
        "a refused wipe changed the waiting mirror"
    );

    assert_eq!(
        rpc_ok(&t, "bdev_mirror_wipe_superblock", json!({"base_bdev": "p2"})),
        json!(true)
    );
    assert!(
        examined.elapsed() < Duration::from_millis(grace_ms),
        "the test was too slow to wipe within the grace period; it proves nothing"
    );
    assert!(configuring(&t).is_empty(), "{:?}", configuring(&t));
    assert!(t.log().contains("wiping the mirror superblock of bdev p2"));

    // Past the grace period: nothing assembled.
    let past = Duration::from_millis(grace_ms) + Duration::from_millis(1500);
    std::thread::sleep(past.saturating_sub(examined.elapsed()));
    assert!(get_mirrors(&t, json!({})).is_empty(), "{}", tail_lines(&t.log(), 20));
    assert!(
        t.rpc("bdev_get_bdevs", json!({"name": "mir"})).is_err(),
        "a bdev mir exists"
    );

    // Examined again, p2 is an ordinary bdev now.
    let found = log_count(&t, "found leg p2");
    rpc_ok(&t, "bdev_passthru_delete", json!({"name": "p2"}));
    create_passthru(&t, "m2", "p2");
    rpc_ok(&t, "bdev_wait_for_examine", Value::Null);
    assert_eq!(log_count(&t, "found leg p2"), found, "{}", tail_lines(&t.log(), 20));
    assert!(configuring(&t).is_empty());
    let msg = rpc_refused(
        &t,
        "bdev_mirror_wipe_superblock",
        json!({"base_bdev": "p2"}),
        EINVAL,
        "base_bdev",
    );
    assert!(msg.contains("no mirror superblock"), "{msg}");
    assert!(!t.log().contains("BUG"), "{}", tail_lines(&t.log(), 40));
}

/// Module options, set before `framework_start_init`, decide how a restarted target assembles
/// a mirror whose second leg is missing: with `degraded_assembly: false` it waits (listed as
/// `configuring`) past the default grace period and assembles once the leg appears; with
/// `degraded_grace_ms: 500` it assembles degraded well before the default 30 s.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn module_options_before_init_govern_assembly() {
    let _turn = serial();
    let env = require_spdk();
    let dir = test_dir("ops_options");
    let files = leg_files(&dir, 2, 32 * MIB);

    // Run 1: the options RPCs work before init, refuse bad values naming the field, and a
    // refused call changes nothing. Then the mirror is created.
    let t = start_tgt(&env, "ops_options_create", true);
    assert_eq!(
        module_options(&t),
        json!({"degraded_grace_ms": 30000, "degraded_assembly": true})
    );
    let set = "bdev_mirror_set_module_options";
    rpc_refused(&t, set, json!({"degraded_grace_ms": -1}), EINVAL, "degraded_grace_ms");
    rpc_refused(
        &t,
        set,
        json!({"degraded_grace_ms": 1u64 << 40}),
        EINVAL,
        "degraded_grace_ms",
    );
    rpc_refused(&t, set, json!({"degraded_grace_ms": 1.5}), EINVAL, "degraded_grace_ms");
    rpc_refused(
        &t,
        set,
        json!({"degraded_grace_ms": "500"}),
        EINVAL,
        "degraded_grace_ms",
    );
    rpc_refused(&t, set, json!({"degraded_assembly": "no"}), EINVAL, "degraded_assembly");
    rpc_refused(&t, set, json!({"degraded_assembly": 0}), EINVAL, "degraded_assembly");
    rpc_refused(&t, set, json!({"grace_ms": 10}), EINVAL, "grace_ms");
    // A valid field beside a bad one is not applied either.
    rpc_refused(
        &t,
        set,
        json!({"degraded_grace_ms": 100, "degraded_assembly": "no"}),
        EINVAL,
        "degraded_assembly",
    );
    rpc_refused(&t, "bdev_mirror_get_module_options", json!({"x": 1}), EINVAL, "x");
    assert_eq!(
        module_options(&t),
        json!({"degraded_grace_ms": 30000, "degraded_assembly": true})
    );
    rpc_ok(&t, "framework_start_init", Value::Null);
    create_aio(&t, "aio0", &files[0], BS);
    create_aio(&t, "aio1", &files[1], BS);
    rpc_ok(
        &t,
        "bdev_mirror_create",
        json!({"name": "mir", "level": "raid1", "base_bdevs": ["aio0", "aio1"]}),
    );
    assert_eq!(t.mirror_info("mir")["state"], json!("online"));
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
    drop(t);

    // Run 2: degraded assembly off. aio0 alone waits, past the default grace period.
    let t = start_tgt(&env, "ops_options_wait", true);
    assert_eq!(rpc_ok(&t, set, json!({"degraded_assembly": false})), json!(true));
    assert_eq!(
        module_options(&t),
        json!({"degraded_grace_ms": 30000, "degraded_assembly": false})
    );
    rpc_ok(&t, "framework_start_init", Value::Null);
    // save_config (the bdev subsystem's config) has them, so a target started from it comes
    // up with them.
    rpc_ok(&t, "framework_wait_init", Value::Null);
    let saved = rpc_ok(&t, "framework_get_config", json!({"name": "bdev"})).to_string();
    assert!(
        saved.contains(
            r#""method":"bdev_mirror_set_module_options","params":{"degraded_assembly":false,"degraded_grace_ms":30000}"#
        ) || saved.contains(
            r#""method":"bdev_mirror_set_module_options","params":{"degraded_grace_ms":30000,"degraded_assembly":false}"#
        ),
        "{saved}"
    );
    create_aio(&t, "aio0", &files[0], BS);
    let waiting = wait_for(&t, 10, "mir to wait for aio1", || {
        configuring(&t).into_iter().find(|m| m["name"] == json!("mir"))
    });
    assert_eq!(waiting["found_bdevs"], json!(["aio0"]), "{waiting}");
    assert_eq!(waiting["awaited_slots"], json!([1]), "{waiting}");
    assert_eq!(waiting["degraded_assembly_scheduled"], json!(false), "{waiting}");
    let until = Instant::now() + Duration::from_millis(4500);
    while Instant::now() < until {
        assert!(
            registered(&t).is_none(),
            "assembled degraded with degraded_assembly off\n{}",
            tail_lines(&t.log(), 20)
        );
        assert!(t.rpc("bdev_get_bdevs", json!({"name": "mir"})).is_err());
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(names(&configuring(&t)), ["mir"]);
    assert!(
        t.log().contains("degraded_assembly is off"),
        "{}",
        tail_lines(&t.log(), 20)
    );
    create_aio(&t, "aio1", &files[1], BS);
    let m = wait_for(&t, 10, "mir to assemble with both legs", || registered(&t));
    assert_eq!(m["state"], json!("online"), "{m}");
    assert!(configuring(&t).is_empty());
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
    drop(t);

    // Run 3: a 500 ms grace. aio0 alone assembles degraded, long before the default 30 s.
    let t = start_tgt(&env, "ops_options_grace", true);
    assert_eq!(rpc_ok(&t, set, json!({"degraded_grace_ms": 500})), json!(true));
    assert_eq!(
        module_options(&t),
        json!({"degraded_grace_ms": 500, "degraded_assembly": true})
    );
    rpc_ok(&t, "framework_start_init", Value::Null);
    let start = Instant::now();
    create_aio(&t, "aio0", &files[0], BS);
    let m = wait_for(&t, 10, "mir to assemble degraded", || registered(&t));
    let took = start.elapsed();
    assert_eq!(m["state"], json!("degraded"), "{m}");
    assert!(
        took < Duration::from_millis(2500),
        "assembled after {took:?}; a 500 ms grace must beat the default 30 s\n{}",
        tail_lines(&t.log(), 20)
    );
    assert!(t.log().contains("waiting 500 ms"), "{}", tail_lines(&t.log(), 20));
    assert!(!t.log().contains("BUG"), "{}", tail_lines(&t.log(), 40));
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
}
