//! md's reshaping operations (issue #13) against live SPDK apps:
//! - `bdev_mirror_replace_base_bdev` (md's `--replace`) under a running verify workload, RAID1
//!   and RAID10: the mirror stays online throughout, the new bdev takes the old one's slot, the
//!   old one is released, verify finds nothing wrong and the copies agree;
//! - `bdev_mirror_set_num_legs` (md's `--grow -n`): RAID1 grows to three legs under verify (the
//!   new leg rebuilt), then shrinks back to two after a leg is removed, the remaining leg moved
//!   down into the free slot; refusals name the field and change nothing;
//! - growing with the legs (md's `--grow --size=max`): aio legs grown and rescanned; the mirror
//!   grows once every leg has, the new space is resynced, and a restarted target assembles the
//!   mirror at its new size.
//!
//! The tests take turns (one lock): they are heavy and timing-sensitive.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{
    bdev_subsystem, config_entry, malloc_bdev_config, rpc_ok, serial, tail_lines, BdevperfOpts, Target, TargetOpts,
};

const EINVAL: i64 = -(libc::EINVAL as i64);
const ENODEV: i64 = -(libc::ENODEV as i64);
const EBUSY: i64 = -(libc::EBUSY as i64);

/// `method(params)` must fail with `code` and a message starting with `field:`.
fn refused(t: &Target, method: &str, params: Value, code: i64, field: &str) {
    match t.rpc(method, params.clone()) {
        Ok(v) => panic!("{method} {params} succeeded ({v}); expected {code} naming {field}"),
        Err(e) => {
            assert_eq!(e.code, code, "{method} {params}: {e}");
            assert!(e.message.starts_with(&format!("{field}:")), "{method} {params}: {e}");
        }
    }
}

/// A bdevperf server (waiting for `perform_tests`) verifying mirror `mir` made by `create`,
/// over malloc bdevs `names`.
fn verify_server(name: &str, names: &[&str], create: Value) -> Target {
    let spdk = support::require_spdk();
    let mut cfg: Vec<Value> = names.iter().map(|n| malloc_bdev_config(n, 65536, 512)).collect();
    cfg.push(config_entry("bdev_mirror_create", create));
    support::bdevperf_server(
        &spdk,
        BdevperfOpts {
            name,
            config: bdev_subsystem(cfg),
            time_s: 6,
            extra_args: vec!["-T".into(), "mir".into()],
            ..Default::default()
        },
    )
    .expect("bdevperf starts")
}

fn legs(m: &Value) -> Vec<String> {
    m["legs"]
        .as_array()
        .expect("legs")
        .iter()
        .map(|l| l["bdev"].as_str().unwrap_or("").to_string())
        .collect()
}

fn claimed(t: &Target, bdev: &str) -> bool {
    rpc_ok(t, "bdev_get_bdevs", json!({"name": bdev}))[0]["claimed"] == json!(true)
}

/// Every copy agrees, over the whole mirror.
fn copies_agree(t: &Target) {
    let c = t
        .rpc_timeout("bdev_mirror_check", json!({"name": "mir"}), Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("check: {e}: {}", tail_lines(&t.log(), 30)));
    assert_eq!(c["mismatch_blocks"], 0, "{c}");
}

/// Replaces leg `old` with `new` while verify runs; the mirror must never leave `online`.
fn replace_under_verify(t: &Target, old: &str, new: &str) {
    std::thread::scope(|s| {
        let run = s.spawn(|| t.perform_tests(Value::Null, Duration::from_secs(120)));
        std::thread::sleep(Duration::from_millis(500));
        rpc_ok(
            t,
            "bdev_mirror_replace_base_bdev",
            json!({"name": "mir", "base_bdev": old, "new_base_bdev": new}),
        );
        let mut seen_copy = false;
        support::wait_until(Duration::from_secs(60), "the replacement", || {
            let m = t.mirror_info("mir");
            assert_eq!(m["state"], "online", "never degraded on the way: {m}");
            seen_copy |= m["process"]["type"] == "replace";
            let l = legs(&m);
            m.get("process").is_none() && l.contains(&new.to_string()) && !l.contains(&old.to_string())
        })
        .unwrap_or_else(|e| panic!("{e}: {}", tail_lines(&t.log(), 40)));
        assert!(
            seen_copy || t.mirror_info("mir")["last_process"]["type"] == "replace",
            "a replace process ran: {}",
            t.mirror_info("mir")
        );
        let r = run.join().unwrap().expect("perform_tests answers");
        assert_eq!(r["results"][0]["io_failed"], 0, "{r}");
    });
    assert!(!claimed(t, old), "the replaced bdev is released");
    assert!(claimed(t, new), "the replacement is claimed");
    copies_agree(t);
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn replace_keeps_a_raid1_mirror_online_and_swaps_the_leg() {
    let _turn = serial();
    let t = verify_server(
        "reshape_replace1",
        &["m0", "m1", "m2", "m3"],
        json!({"name": "mir", "level": "raid1", "base_bdevs": ["m0", "m1"]}),
    );
    // Refusals change nothing.
    let r = "bdev_mirror_replace_base_bdev";
    refused(
        &t,
        r,
        json!({"base_bdev": "m2", "new_base_bdev": "m3"}),
        ENODEV,
        "base_bdev",
    );
    refused(
        &t,
        r,
        json!({"base_bdev": "m1", "new_base_bdev": "nope"}),
        ENODEV,
        "new_base_bdev",
    );
    refused(
        &t,
        r,
        json!({"base_bdev": "m1", "new_base_bdev": "m0"}),
        EBUSY,
        "new_base_bdev",
    );
    refused(
        &t,
        r,
        json!({"base_bdev": "m1", "new_base_bdev": "mir"}),
        EINVAL,
        "new_base_bdev",
    );
    refused(&t, r, json!({"base_bdev": "m1"}), EINVAL, "new_base_bdev");
    assert_eq!(legs(&t.mirror_info("mir")), vec!["m0", "m1"]);
    assert!(!claimed(&t, "m2"));
    replace_under_verify(&t, "m1", "m2");
    assert_eq!(legs(&t.mirror_info("mir")), vec!["m0", "m2"], "same slot");
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn replace_keeps_a_raid10_mirror_online_and_swaps_the_leg() {
    let _turn = serial();
    let t = verify_server(
        "reshape_replace10",
        &["m0", "m1", "m2", "m3", "m4"],
        json!({"name": "mir", "level": "raid10", "layout": "o2", "chunk_kb": 64,
               "base_bdevs": ["m0", "m1", "m2", "m3"]}),
    );
    replace_under_verify(&t, "m2", "m4");
    assert_eq!(legs(&t.mirror_info("mir")), vec!["m0", "m1", "m4", "m3"], "same slot");
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn raid1_grows_and_shrinks_its_number_of_legs_under_verify() {
    let _turn = serial();
    let t = verify_server(
        "reshape_num_legs",
        &["m0", "m1", "m2", "m3", "r0", "r1"],
        json!({"name": "mir", "level": "raid1", "base_bdevs": ["m0", "m1"]}),
    );
    rpc_ok(
        &t,
        "bdev_mirror_create",
        json!({"name": "r10", "level": "raid10", "base_bdevs": ["r0", "r1"], "layout": "n2"}),
    );
    let n = "bdev_mirror_set_num_legs";
    refused(&t, n, json!({"name": "mir", "num_legs": 1}), EINVAL, "num_legs");
    refused(&t, n, json!({"name": "mir", "num_legs": 33}), EINVAL, "num_legs");
    refused(&t, n, json!({"name": "r10", "num_legs": 3}), EINVAL, "num_legs");
    refused(&t, n, json!({"name": "nope", "num_legs": 3}), ENODEV, "name");
    refused(
        &t,
        n,
        json!({"name": "mir", "num_legs": 3, "base_bdevs": ["m2", "m3"]}),
        EINVAL,
        "base_bdevs",
    );
    refused(
        &t,
        n,
        json!({"name": "mir", "num_legs": 3, "base_bdevs": ["nope"]}),
        ENODEV,
        "base_bdevs",
    );
    refused(
        &t,
        n,
        json!({"name": "mir", "num_legs": 3, "base_bdevs": ["r0"]}),
        EBUSY,
        "base_bdevs",
    );
    assert_eq!(t.mirror_info("mir")["num_legs"], 2);
    std::thread::scope(|s| {
        let run = s.spawn(|| t.perform_tests(Value::Null, Duration::from_secs(120)));
        std::thread::sleep(Duration::from_millis(300));
        rpc_ok(&t, n, json!({"name": "mir", "num_legs": 3, "base_bdevs": ["m2"]}));
        support::wait_until(Duration::from_secs(60), "the new leg's rebuild", || {
            let m = t.mirror_info("mir");
            m.get("process").is_none() && m["state"] == "online" && m["num_legs"] == 3
        })
        .unwrap_or_else(|e| panic!("{e}: {}", tail_lines(&t.log(), 40)));
        assert_eq!(legs(&t.mirror_info("mir")), vec!["m0", "m1", "m2"]);
        // Three present: shrinking to two is refused until one goes.
        refused(&t, n, json!({"name": "mir", "num_legs": 2}), EBUSY, "num_legs");
        rpc_ok(&t, "bdev_mirror_remove_base_bdev", json!({"base_bdev": "m0"}));
        rpc_ok(&t, n, json!({"name": "mir", "num_legs": 2}));
        let m = t.mirror_info("mir");
        assert_eq!(m["num_legs"], 2, "{m}");
        assert_eq!(
            legs(&m),
            vec!["m2", "m1"],
            "the leg of the dropped slot moved down: {m}"
        );
        assert_eq!(m["state"], "online", "{m}");
        let r = run.join().unwrap().expect("perform_tests answers");
        assert_eq!(r["results"][0]["io_failed"], 0, "{r}");
    });
    assert!(!claimed(&t, "m0"));
    copies_agree(&t);
}

/// An spdk_tgt (on a leased core), with aio bdevs `a0`.. over `files`.
fn aio_target(env: &support::SpdkEnv, name: &str, files: &[std::path::PathBuf]) -> Target {
    let t = Target::start(
        env,
        TargetOpts {
            name,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    for (i, f) in files.iter().enumerate() {
        support::create_aio(&t, &format!("a{i}"), f, 512);
    }
    t
}

fn bdev_blocks(t: &Target, name: &str) -> u64 {
    rpc_ok(t, "bdev_get_bdevs", json!({"name": name}))[0]["num_blocks"]
        .as_u64()
        .expect("num_blocks")
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn the_mirror_grows_when_every_leg_has_grown_and_keeps_its_size_after_a_restart() {
    let _turn = serial();
    grows_with_its_legs("reshape_resize1", json!({"level": "raid1"}), 2, 1);
    // n2 over 4 legs holds two legs' worth: it gains twice what each leg gains.
    grows_with_its_legs(
        "reshape_resize10",
        json!({"level": "raid10", "layout": "n2", "chunk_kb": 64}),
        4,
        2,
    );
}

/// A mirror made with `shape` over `legs` aio legs grows by `gain` times what each leg gains.
fn grows_with_its_legs(name: &str, shape: Value, legs: usize, gain: u64) {
    let env = support::require_spdk();
    let dir = support::test_dir(name);
    const MIB: u64 = 1024 * 1024;
    let files = support::leg_files(&dir, legs, 32 * MIB);
    let names: Vec<String> = (0..legs).map(|i| format!("a{i}")).collect();
    let start = |name: &str| aio_target(&env, name, &files);
    let t = start(name);
    let mut create = shape.clone();
    create["name"] = json!("mir");
    create["base_bdevs"] = json!(names);
    create["bitmap_region_kb"] = json!(64);
    rpc_ok(&t, "bdev_mirror_create", create);
    let before = bdev_blocks(&t, "mir");
    let grow = |i: usize| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&files[i])
            .and_then(|f| f.set_len(64 * MIB))
            .unwrap();
        rpc_ok(&t, "bdev_aio_rescan", json!({"name": names[i]}));
    };
    // Until the last leg grows, the mirror cannot.
    for i in 0..legs - 1 {
        grow(i);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(bdev_blocks(&t, "mir"), before, "the mirror waits for every leg");
    grow(legs - 1);
    // Grown first, then resynced: wait for the resync's end, not a look between the two.
    support::wait_until(Duration::from_secs(30), "the mirror to grow and resync", || {
        let m = t.mirror_info("mir");
        bdev_blocks(&t, "mir") > before
            && m.get("process").is_none()
            && m["state"] == "online"
            && m["last_process"]["type"] == "resync"
    })
    .unwrap_or_else(|e| panic!("{e}: {}", tail_lines(&t.log(), 40)));
    let after = bdev_blocks(&t, "mir");
    // The reserved area stays where it was: each leg's 32 MiB more is all data.
    assert_eq!(after, before + gain * 32 * MIB / 512, "grown by what the legs gained");
    assert_eq!(t.mirror_info("mir")["data_blocks"], after);
    assert_eq!(
        t.mirror_info("mir")["last_process"]["type"],
        "resync",
        "the new space is resynced"
    );
    copies_agree(&t);
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
    drop(t);
    // The superblocks and bitmap record the new size: a new target assembles it so.
    let t = start(&format!("{name}_again"));
    support::wait_until(Duration::from_secs(20), "assembly", || {
        support::registered_mirror(&t, "mir").is_some()
    })
    .unwrap_or_else(|e| panic!("{e}: {}", tail_lines(&t.log(), 40)));
    assert_eq!(bdev_blocks(&t, "mir"), after);
    assert_eq!(t.mirror_info("mir")["state"], "online");
    copies_agree(&t);
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn grown_replaced_and_shrunk_mirrors_assemble_as_they_were_left() {
    let _turn = serial();
    let env = support::require_spdk();
    let dir = support::test_dir("reshape_persist");
    let files = support::leg_files(&dir, 4, 16 * 1024 * 1024);
    let start = |name: &str| aio_target(&env, name, &files);
    let settled = |t: &Target, what: &str, f: &dyn Fn(&Value) -> bool| {
        support::wait_until(Duration::from_secs(30), what, || {
            support::registered_mirror(t, "mir").is_some_and(|m| m.get("process").is_none() && f(&m))
        })
        .unwrap_or_else(|e| panic!("{e}: {}", tail_lines(&t.log(), 40)));
    };
    let t = start("reshape_persist");
    rpc_ok(
        &t,
        "bdev_mirror_create",
        json!({"name": "mir", "level": "raid1", "base_bdevs": ["a0", "a1"]}),
    );
    rpc_ok(
        &t,
        "bdev_mirror_set_num_legs",
        json!({"name": "mir", "num_legs": 3, "base_bdevs": ["a2"]}),
    );
    settled(&t, "the grow", &|m| m["state"] == "online" && m["num_legs"] == 3);
    rpc_ok(
        &t,
        "bdev_mirror_replace_base_bdev",
        json!({"base_bdev": "a1", "new_base_bdev": "a3"}),
    );
    settled(&t, "the replacement", &|m| legs(m) == vec!["a0", "a3", "a2"]);
    rpc_ok(&t, "bdev_mirror_remove_base_bdev", json!({"base_bdev": "a0"}));
    rpc_ok(&t, "bdev_mirror_set_num_legs", json!({"name": "mir", "num_legs": 2}));
    settled(&t, "the shrink", &|m| {
        legs(m) == vec!["a2", "a3"] && m["state"] == "online"
    });
    copies_agree(&t);
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
    drop(t);
    // Every bdev comes back, the replaced and the removed one included: the superblocks on
    // the legs name the members, so the mirror assembles from a2 and a3 alone.
    let t = start("reshape_persist_again");
    settled(&t, "assembly", &|m| m["state"] == "online");
    let m = t.mirror_info("mir");
    assert_eq!(m["num_legs"], 2, "{m}");
    assert_eq!(legs(&m), vec!["a2", "a3"], "{m}");
    assert!(!claimed(&t, "a0") && !claimed(&t, "a1"), "old members stay out");
    copies_agree(&t);
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn a_failing_replacement_is_dropped_and_the_mirror_keeps_its_legs() {
    let _turn = serial();
    let spdk = support::require_spdk();
    let cfg = vec![
        malloc_bdev_config("m0", 65536, 512),
        malloc_bdev_config("m1", 65536, 512),
        malloc_bdev_config("m3", 65536, 512),
        config_entry("bdev_error_create", json!({"base_name": "m3"})),
        config_entry(
            "bdev_mirror_create",
            json!({"name": "mir", "level": "raid1", "base_bdevs": ["m0", "m1"]}),
        ),
    ];
    let t = support::bdevperf_server(
        &spdk,
        BdevperfOpts {
            name: "reshape_replace_fail",
            config: bdev_subsystem(cfg),
            time_s: 4,
            extra_args: vec!["-T".into(), "mir".into()],
            ..Default::default()
        },
    )
    .expect("bdevperf starts");
    rpc_ok(
        &t,
        "bdev_error_inject_error",
        json!({"name": "EE_m3", "io_type": "write", "error_type": "failure", "num": 1_000_000}),
    );
    std::thread::scope(|s| {
        let run = s.spawn(|| t.perform_tests(Value::Null, Duration::from_secs(120)));
        std::thread::sleep(Duration::from_millis(300));
        rpc_ok(
            &t,
            "bdev_mirror_replace_base_bdev",
            json!({"base_bdev": "m1", "new_base_bdev": "EE_m3"}),
        );
        support::wait_until(Duration::from_secs(30), "the replacement to be dropped", || {
            let m = t.mirror_info("mir");
            assert_eq!(m["state"], "online", "{m}");
            m.get("process").is_none() && !claimed(&t, "EE_m3")
        })
        .unwrap_or_else(|e| panic!("{e}: {}", tail_lines(&t.log(), 40)));
        let m = t.mirror_info("mir");
        assert_eq!(legs(&m), vec!["m0", "m1"], "{m}");
        assert_ne!(m["last_process"]["result"], "done", "{m}");
        let r = run.join().unwrap().expect("perform_tests answers");
        assert_eq!(
            r["results"][0]["io_failed"], 0,
            "the replacement's errors fail no host I/O: {r}"
        );
    });
    assert!(
        t.log().contains("replacement abandoned"),
        "{}",
        tail_lines(&t.log(), 30)
    );
    copies_agree(&t);
}

/// A verify server over `m0`, `m1` (the mirror) and `m3` (a spare), its copies capped at
/// 4 MiB/s so that a replace takes seconds.
fn capped_raid1_server(name: &str) -> Target {
    verify_server(
        name,
        &["m0", "m1", "m3"],
        json!({"name": "mir", "level": "raid1", "base_bdevs": ["m0", "m1"], "rebuild_max_mb_per_s": 4}),
    )
}

/// Starts replacing `m1` with `m3` (verify running) and waits until its copy is under way.
fn replace_m1_started(t: &Target) {
    std::thread::sleep(Duration::from_millis(300));
    rpc_ok(
        t,
        "bdev_mirror_replace_base_bdev",
        json!({"base_bdev": "m1", "new_base_bdev": "m3"}),
    );
    // Capped: the copy of 32 MiB takes seconds; what the test does next happens in the middle.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(t.mirror_info("mir")["process"]["type"], "replace");
}

/// `bdev_mirror_remove_base_bdev` with the replacement's name stops a running replace: it
/// answers once the replacement is dropped and released, the replaced leg stays, no host I/O
/// fails, and the same bdev can replace the leg again afterwards.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn removing_the_replacement_over_rpc_stops_the_replace() {
    let _turn = serial();
    let t = capped_raid1_server("reshape_replace_stop");
    std::thread::scope(|s| {
        let run = s.spawn(|| t.perform_tests(Value::Null, Duration::from_secs(120)));
        replace_m1_started(&t);
        assert!(claimed(&t, "m3"), "the replacement is claimed while it is copied onto");
        assert_eq!(
            rpc_ok(&t, "bdev_mirror_remove_base_bdev", json!({"base_bdev": "m3"})),
            json!(true)
        );
        // Answered once dropped: nothing is left to wait for.
        let m = t.mirror_info("mir");
        assert!(m.get("process").is_none(), "the replace stopped: {m}");
        assert_eq!(m["state"], "online", "{m}");
        assert_eq!(legs(&m), vec!["m0", "m1"]);
        assert!(!claimed(&t, "m3"), "the replacement is released");
        // Gone, it is nothing of the mirror's any more.
        refused(
            &t,
            "bdev_mirror_remove_base_bdev",
            json!({"base_bdev": "m3"}),
            ENODEV,
            "base_bdev",
        );
        // The same bdev replaces the leg again, this time to the end.
        rpc_ok(
            &t,
            "bdev_mirror_set_options",
            json!({"name": "mir", "rebuild_max_mb_per_s": 0}),
        );
        rpc_ok(
            &t,
            "bdev_mirror_replace_base_bdev",
            json!({"base_bdev": "m1", "new_base_bdev": "m3"}),
        );
        support::wait_until(Duration::from_secs(60), "the second replace", || {
            legs(&t.mirror_info("mir")) == vec!["m0", "m3"]
        })
        .unwrap_or_else(|e| panic!("{e}: {}", tail_lines(&t.log(), 40)));
        let r = run.join().unwrap().expect("perform_tests answers");
        assert_eq!(r["results"][0]["io_failed"], 0, "{r}");
    });
    copies_agree(&t);
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn a_replacement_hot_removed_during_its_copy_is_dropped() {
    let _turn = serial();
    let t = capped_raid1_server("reshape_replace_gone");
    std::thread::scope(|s| {
        let run = s.spawn(|| t.perform_tests(Value::Null, Duration::from_secs(120)));
        replace_m1_started(&t);
        rpc_ok(&t, "bdev_malloc_delete", json!({"name": "m3"}));
        support::wait_until(Duration::from_secs(30), "the replacement to be dropped", || {
            let m = t.mirror_info("mir");
            assert_eq!(m["state"], "online", "{m}");
            let gone = rpc_ok(&t, "bdev_get_bdevs", json!({}))
                .as_array()
                .is_some_and(|a| !a.iter().any(|b| b["name"] == "m3"));
            m.get("process").is_none() && gone
        })
        .unwrap_or_else(|e| panic!("{e}: {}", tail_lines(&t.log(), 40)));
        assert_eq!(legs(&t.mirror_info("mir")), vec!["m0", "m1"]);
        let r = run.join().unwrap().expect("perform_tests answers");
        assert_eq!(r["results"][0]["io_failed"], 0, "{r}");
    });
    copies_agree(&t);
    // The mirror can be reshaped again afterwards.
    rpc_ok(
        &t,
        "bdev_mirror_set_options",
        json!({"name": "mir", "rebuild_max_mb_per_s": 0}),
    );
    rpc_ok(&t, "bdev_mirror_set_num_legs", json!({"name": "mir", "num_legs": 3}));
    assert_eq!(t.mirror_info("mir")["state"], "degraded");
}

/// SPDK's quiesce holds reads and writes but lets flushes through, and a reshape rebuilds every
/// core's engine, which must be idle then: with host flushes in flight a replace and a change
/// in the number of legs each wait for them (new ones held meanwhile) instead of leaving a
/// core on the old shape ("a core could not take the new shape", the replacement stranded).
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn reshapes_wait_for_host_flushes_in_flight() {
    let _turn = serial();
    let spdk = support::require_spdk();
    let names = ["m0", "m1", "m2", "m3"];
    let mut cfg: Vec<Value> = names.iter().map(|n| malloc_bdev_config(n, 16384, 4096)).collect();
    cfg.push(config_entry(
        "bdev_mirror_create",
        json!({"name": "mir", "level": "raid1", "base_bdevs": ["m0", "m1", "m2"]}),
    ));
    let t = support::bdevperf_server(
        &spdk,
        BdevperfOpts {
            name: "reshape_flush",
            config: bdev_subsystem(cfg),
            workload: "flush",
            queue_depth: 32,
            io_size: 4096,
            time_s: 6,
            extra_args: vec!["-T".into(), "mir".into()],
            ..Default::default()
        },
    )
    .expect("bdevperf starts");
    std::thread::scope(|s| {
        let run = s.spawn(|| t.perform_tests(Value::Null, Duration::from_secs(120)));
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            rpc_ok(
                &t,
                "bdev_mirror_replace_base_bdev",
                json!({"base_bdev": "m1", "new_base_bdev": "m3"})
            ),
            json!(true)
        );
        support::wait_until(Duration::from_secs(30), "the replace", || {
            let m = t.mirror_info("mir");
            m.get("process").is_none() && legs(&m) == vec!["m0", "m3", "m2"]
        })
        .unwrap_or_else(|e| panic!("{e}: {}", tail_lines(&t.log(), 40)));
        assert!(!claimed(&t, "m1"), "the replaced bdev is released");
        // A second reshape, flushes still running: one leg fewer.
        rpc_ok(&t, "bdev_mirror_remove_base_bdev", json!({"base_bdev": "m2"}));
        assert_eq!(
            rpc_ok(&t, "bdev_mirror_set_num_legs", json!({"name": "mir", "num_legs": 2})),
            json!(true)
        );
        let m = t.mirror_info("mir");
        assert_eq!(legs(&m), vec!["m0", "m3"], "{m}");
        assert_eq!(m["state"], "online", "{m}");
        let r = run.join().unwrap().expect("perform_tests answers");
        assert_eq!(r["results"][0]["io_failed"], 0, "{r}");
        assert!(
            r["results"][0]["iops"].as_f64().unwrap_or(0.0) > 0.0,
            "flushes ran: {r}"
        );
    });
    let log = t.log();
    assert!(
        !log.contains("could not take the new shape") && !log.contains("refused"),
        "{}",
        tail_lines(&log, 40)
    );
}
