//! Data-safety defects found in review, each kept out by a live test: a create whose superblock
//! writes fail, a create that fails after its superblocks were written, a mirror as its own
//! leg, a failed add that must change nothing, a re-add racing writes in flight, and a panic
//! inside the I/O engine.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{bdev_subsystem, config_entry, malloc_bdev_config, BdevperfOpts, Target, TargetOpts};

fn target(name: &str) -> Target {
    let env = support::require_spdk();
    Target::start(
        &env,
        TargetOpts {
            name,
            ..Default::default()
        },
    )
    .expect("target starts")
}

fn malloc(t: &Target, name: &str, blocks: u64) {
    t.rpc(
        "bdev_malloc_create",
        json!({"name": name, "num_blocks": blocks, "block_size": 512}),
    )
    .unwrap();
}

fn claimed(t: &Target, bdev: &str) -> bool {
    let b = t.rpc("bdev_get_bdevs", json!({"name": bdev})).unwrap();
    b[0]["claimed"].as_bool().expect("claimed is reported")
}

fn no_bug(t: &Target) {
    let log = t.log();
    assert!(!log.contains("BUG"), "{}", support::tail_lines(&log, 40));
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn a_create_whose_superblock_writes_all_fail_changes_nothing() {
    let t = target("safety_create_fail");
    for i in 0..2 {
        malloc(&t, &format!("m{i}"), 65536);
        t.rpc("bdev_error_create", json!({"base_name": format!("m{i}")}))
            .unwrap();
        t.rpc(
            "bdev_error_inject_error",
            json!({"name": format!("EE_m{i}"), "io_type": "write", "error_type": "failure", "num": 1000}),
        )
        .unwrap();
    }
    for _ in 0..3 {
        let e = t
            .rpc(
                "bdev_mirror_create",
                json!({"name": "mir", "level": "raid1", "base_bdevs": ["EE_m0", "EE_m1"]}),
            )
            .expect_err("no leg takes the superblock");
        assert!(e.message.starts_with("base_bdevs:"), "{e:?}");
        // The target still answers, and the mirror left nothing behind.
        let bdevs = t.rpc("bdev_mirror_get_bdevs", json!({})).unwrap();
        assert_eq!(bdevs, json!([]));
        assert!(!claimed(&t, "EE_m0") && !claimed(&t, "EE_m1"));
    }
    // Queued metadata messages ran on a live mirror, or none at all: still healthy after them.
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..2 {
        t.rpc(
            "bdev_error_inject_error",
            json!({"name": format!("EE_m{i}"), "io_type": "clear", "error_type": "failure"}),
        )
        .unwrap();
    }
    t.rpc(
        "bdev_mirror_create",
        json!({"name": "mir", "level": "raid1", "base_bdevs": ["EE_m0", "EE_m1"]}),
    )
    .expect("the legs are free again");
    assert_eq!(t.mirror_info("mir")["state"], "online");
    no_bug(&t);
    t.rpc("bdev_mirror_delete", json!({"name": "mir"})).unwrap();
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn a_create_that_fails_after_writing_its_superblocks_leaves_none_behind() {
    let t = target("safety_register_fail");
    for i in 0..2 {
        malloc(&t, &format!("m{i}"), 65536);
        // Slow writes: the superblock write takes a second, long enough to take the name.
        t.rpc(
            "bdev_delay_create",
            json!({"base_bdev_name": format!("m{i}"), "name": format!("d{i}"),
                   "avg_read_latency": 0, "p99_read_latency": 0,
                   "avg_write_latency": 1_000_000, "p99_write_latency": 1_000_000}),
        )
        .unwrap();
    }
    std::thread::scope(|s| {
        let create = s.spawn(|| {
            t.rpc(
                "bdev_mirror_create",
                json!({"name": "mir", "level": "raid1", "base_bdevs": ["d0", "d1"]}),
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        malloc(&t, "mir", 1024);
        let e = create.join().unwrap().expect_err("the name was taken meanwhile");
        assert!(e.message.starts_with("name:"), "{e:?}");
    });
    support::wait_until(Duration::from_secs(10), "the legs to be released", || {
        !claimed(&t, "d0") && !claimed(&t, "d1")
    })
    .unwrap();
    // Were the superblocks left, the legs would assemble the mirror once examined again.
    t.rpc("bdev_malloc_delete", json!({"name": "mir"})).unwrap();
    for i in 0..2 {
        t.rpc("bdev_delay_delete", json!({"name": format!("d{i}")})).unwrap();
        t.rpc(
            "bdev_delay_create",
            json!({"base_bdev_name": format!("m{i}"), "name": format!("d{i}"),
                   "avg_read_latency": 0, "p99_read_latency": 0,
                   "avg_write_latency": 0, "p99_write_latency": 0}),
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_secs(4)); // past the degraded-assembly grace
    assert_eq!(t.rpc("bdev_mirror_get_bdevs", json!({})).unwrap(), json!([]));
    assert!(!t.log().contains("found leg"), "{}", support::tail_lines(&t.log(), 30));
    no_bug(&t);
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn a_mirror_never_becomes_its_own_leg() {
    let t = target("safety_self_leg");
    for i in 0..6 {
        malloc(&t, &format!("m{i}"), 65536);
    }
    t.rpc(
        "bdev_mirror_create",
        json!({"name": "a", "level": "raid10", "layout": "n2", "base_bdevs": ["m0", "m1", "m2", "m3"]}),
    )
    .unwrap();
    t.rpc("bdev_mirror_remove_base_bdev", json!({"base_bdev": "m1"}))
        .unwrap();
    // Directly.
    let e = t
        .rpc("bdev_mirror_add_base_bdev", json!({"name": "a", "base_bdev": "a"}))
        .expect_err("a mirror cannot be its own leg");
    assert!(
        e.message.starts_with("base_bdev:") && e.message.contains("itself"),
        "{e:?}"
    );
    // And at create, by name.
    let e = t
        .rpc(
            "bdev_mirror_create",
            json!({"name": "c", "level": "raid1", "base_bdevs": ["m5", "c"]}),
        )
        .expect_err("a mirror cannot be built on itself");
    assert!(e.message.starts_with("base_bdevs:"), "{e:?}");
    assert!(!claimed(&t, "m5"));
    let m = t.mirror_info("a");
    assert_eq!(m["legs"][1]["state"], "removed", "{m}");
    assert!(m.get("process").is_none(), "{m}");
    no_bug(&t);
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn a_mirror_built_on_a_mirror_never_becomes_a_leg_of_it() {
    let t = target("safety_self_leg_nested");
    for i in 0..3 {
        malloc(&t, &format!("m{i}"), 131072);
    }
    malloc(&t, "big", 262144);
    t.rpc(
        "bdev_mirror_create",
        json!({"name": "a", "level": "raid1", "base_bdevs": ["m0", "m1", "m2"], "superblock": false}),
    )
    .unwrap();
    // b is built on a (and on a bigger bdev): a's legs never reach b, but b reaches a.
    t.rpc(
        "bdev_mirror_create",
        json!({"name": "b", "level": "raid1", "base_bdevs": ["a", "big"], "superblock": false}),
    )
    .unwrap();
    t.rpc("bdev_mirror_remove_base_bdev", json!({"base_bdev": "m2"}))
        .unwrap();
    let e = t
        .rpc("bdev_mirror_add_base_bdev", json!({"name": "a", "base_bdev": "b"}))
        .expect_err("b is built on a");
    assert!(
        e.message.starts_with("base_bdev:") && e.message.contains("built on it"),
        "{e:?}"
    );
    assert!(!claimed(&t, "b"));
    assert_eq!(t.mirror_info("a")["legs"][2]["state"], "removed");
    no_bug(&t);
    t.rpc("bdev_mirror_delete", json!({"name": "b"})).unwrap();
    t.rpc("bdev_mirror_delete", json!({"name": "a"})).unwrap();
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn an_add_that_fails_leaves_its_bdev_unclaimed_and_the_slot_free() {
    let t = target("safety_half_added");
    for i in 0..5 {
        malloc(&t, &format!("m{i}"), 131072);
    }
    t.rpc(
        "bdev_mirror_create",
        json!({"name": "mir", "level": "raid1", "base_bdevs": ["m0", "m1", "m2"],
               "rebuild_max_mb_per_s": 4}),
    )
    .unwrap();
    t.rpc("bdev_mirror_remove_base_bdev", json!({"base_bdev": "m1"}))
        .unwrap();
    t.rpc("bdev_mirror_remove_base_bdev", json!({"base_bdev": "m2"}))
        .unwrap();
    // Two adds at once: the second finds the process slot taken, before or after its checks.
    let results: Vec<Result<Value, support::RpcError>> = std::thread::scope(|s| {
        let a = s.spawn(|| t.rpc("bdev_mirror_add_base_bdev", json!({"name": "mir", "base_bdev": "m3"})));
        let b = s.spawn(|| t.rpc("bdev_mirror_add_base_bdev", json!({"name": "mir", "base_bdev": "m4"})));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    let ok: Vec<_> = results.iter().map(|r| r.is_ok()).collect();
    assert_eq!(
        ok.iter().filter(|&&o| o).count(),
        1,
        "exactly one add runs: {results:?}"
    );
    let (added, refused) = if ok[0] { ("m3", "m4") } else { ("m4", "m3") };
    let e = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(e.code, -libc_ebusy(), "{e:?}");
    assert!(claimed(&t, added));
    assert!(!claimed(&t, refused), "a failed add left '{refused}' claimed");
    let m = t.mirror_info("mir");
    let states: Vec<_> = m["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["state"].clone())
        .collect();
    assert_eq!(
        states,
        vec![json!("online"), json!("rebuilding"), json!("removed")],
        "{m}"
    );
    assert!(
        !m["legs"].as_array().unwrap().iter().any(|l| l["bdev"] == refused),
        "{m}"
    );
    no_bug(&t);
    t.rpc("bdev_mirror_delete", json!({"name": "mir"})).unwrap();
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
}

fn libc_ebusy() -> i64 {
    16
}

/// A bdevperf server verifying a RAID1 mirror over `d0`, a delay bdev over `m0` whose writes
/// take `write_us`, and `m1`: writes that skip `m1` while it is away are still in flight on
/// `d0` when it comes back.
fn verify_server(name: &str, write_us: u64, env: Vec<(String, String)>, extra: &[&str], time_s: u32) -> Target {
    let spdk = support::require_spdk();
    let cfg = vec![
        malloc_bdev_config("m0", 32768, 512),
        malloc_bdev_config("m1", 32768, 512),
        config_entry(
            "bdev_delay_create",
            json!({"base_bdev_name": "m0", "name": "d0",
                   "avg_read_latency": 0, "p99_read_latency": 0,
                   "avg_write_latency": write_us, "p99_write_latency": write_us}),
        ),
        config_entry(
            "bdev_mirror_create",
            json!({"name": "mir", "level": "raid1", "base_bdevs": ["d0", "m1"], "bitmap_region_kb": 64}),
        ),
    ];
    support::bdevperf_server(
        &spdk,
        BdevperfOpts {
            name,
            config: bdev_subsystem(cfg),
            time_s,
            env,
            extra_args: ["-T", "mir"].iter().chain(extra).map(|a| a.to_string()).collect(),
            ..Default::default()
        },
    )
    .expect("bdevperf starts")
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn re_adding_a_leg_under_writes_in_flight_never_leaves_it_stale() {
    let t = verify_server("safety_readd_loop", 20_000, Vec::new(), &[], 12);
    std::thread::scope(|s| {
        let run = s.spawn(|| t.perform_tests(Value::Null, Duration::from_secs(120)));
        std::thread::sleep(Duration::from_millis(500));
        for round in 0..6 {
            t.rpc("bdev_mirror_remove_base_bdev", json!({"base_bdev": "m1"}))
                .unwrap_or_else(|e| panic!("round {round}: remove: {e:?}"));
            std::thread::sleep(Duration::from_millis(200));
            t.rpc("bdev_mirror_add_base_bdev", json!({"name": "mir", "base_bdev": "m1"}))
                .unwrap_or_else(|e| panic!("round {round}: add: {e:?}"));
            support::wait_until(Duration::from_secs(30), "the recovery", || {
                let m = t.mirror_info("mir");
                m.get("process").is_none() && m["state"] == "online"
            })
            .unwrap_or_else(|e| panic!("round {round}: {e}: {}", support::tail_lines(&t.log(), 30)));
            assert_eq!(t.mirror_info("mir")["last_process"]["type"], "recovery");
        }
        let r = run.join().unwrap().expect("perform_tests answers");
        assert_eq!(r["results"][0]["io_failed"], 0, "{r}");
    });
    // Both copies hold the same data: nothing the leg missed while away was left behind.
    let c = t
        .rpc_timeout("bdev_mirror_check", json!({"name": "mir"}), Duration::from_secs(60))
        .unwrap();
    assert_eq!(c["mismatch_blocks"], 0, "{c}");
    assert_eq!(c["blocks_checked"], t.mirror_info("mir")["data_blocks"], "{c}");
    no_bug(&t);
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn a_panic_in_the_engine_fails_its_io_and_the_core_serves_again() {
    let env = vec![("SPDK_MIRROR_FAULT_PANIC_EVERY".to_string(), "5000".to_string())];
    // `-f`: bdevperf keeps going after a failed I/O, so the core must serve again to finish.
    let t = verify_server("safety_panic", 0, env, &["-f"], 3);
    let r = t
        .perform_tests(Value::Null, Duration::from_secs(60))
        .expect("no hang: perform_tests answers");
    let job = &r["results"][0];
    let failed = job["io_failed"].as_u64().unwrap();
    assert!(failed > 0, "injected panics fail I/O: {r}");
    // Far more I/O than the panics took with them completed: the core kept serving.
    let iops = job["iops"].as_f64().unwrap();
    assert!(iops * 3.0 > 20.0 * failed as f64, "{r}");
    let log = t.log();
    assert!(
        log.contains("internal error in the I/O engine"),
        "{}",
        support::tail_lines(&log, 30)
    );
    assert!(log.contains("serves I/O again"), "{}", support::tail_lines(&log, 30));
    // The mirror still answers management calls and reads back what verify wrote.
    let m = t.mirror_info("mir");
    assert_eq!(m["state"], "online", "{m}");
}

/// Which reserve thread serves a mirror is its level: the mirrors stacked below it, through any
/// stack of bdevs, counted again when a mirror below gains a mirror leg (a reserve shared
/// by two levels stalled a mirror over mirrors for good under a starved pool; see
/// `spdk_pressure`'s `a_mirror_over_mirrors_...`).
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn a_mirror_counts_the_mirrors_below_it_through_any_stack_and_again_when_one_below_grows() {
    let t = target("safety_levels");
    for (name, blocks) in [("k0", 40000), ("k1", 40000), ("k2", 32768), ("k3", 32768)] {
        malloc(&t, name, blocks);
    }
    for name in ["k4", "k5", "k6", "k7"] {
        malloc(&t, name, 40000);
    }
    let mirror = |name: &str, legs: [&str; 2]| {
        t.rpc(
            "bdev_mirror_create",
            json!({"name": name, "level": "raid1", "base_bdevs": legs, "superblock": false}),
        )
        .unwrap_or_else(|e| panic!("creating {name}: {e:?}"));
    };
    let below = |name: &str| t.mirror_info(name)["mirrors_below"].as_u64();
    mirror("low", ["k2", "k3"]);
    mirror("up", ["low", "k4"]);
    mirror("m", ["k0", "k1"]);
    t.rpc("bdev_passthru_create", json!({"base_bdev_name": "m", "name": "pt"}))
        .unwrap();
    mirror("over_pt", ["pt", "k5"]);
    assert_eq!(
        [below("low"), below("up"), below("m"), below("over_pt")],
        [Some(0), Some(1), Some(0), Some(1)]
    );
    // low gains a mirror leg: low is one level up, and up, standing on it, one more.
    mirror("n", ["k6", "k7"]);
    t.rpc("bdev_mirror_remove_base_bdev", json!({"base_bdev": "k3"}))
        .unwrap();
    t.rpc("bdev_mirror_add_base_bdev", json!({"name": "low", "base_bdev": "n"}))
        .unwrap();
    assert_eq!([below("low"), below("up")], [Some(1), Some(2)]);
    let threads = t.rpc("thread_get_stats", Value::Null).unwrap();
    let names: Vec<&str> = threads["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .filter_map(|th| th["name"].as_str())
        .collect();
    for level in 0..3 {
        let reserve = format!("mirror_reserve{level}");
        assert!(names.contains(&reserve.as_str()), "no {reserve} among {names:?}");
    }
    no_bug(&t);
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
}
