//! Fault injection with SPDK's error bdev under bdevperf verify: read errors are repaired, write
//! errors fail the leg, and I/O fails loudly only where no good copy is left.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{bdev_subsystem, config_entry, malloc_bdev_config, BdevperfOpts, Target};

/// A bdevperf server (`-z`) with `legs` malloc bdevs, each behind an error bdev (`EE_m<i>`),
/// and a mirror over them.
fn server(name: &str, legs: usize, mirror: Value) -> Target {
    let env = support::require_spdk();
    let mut cfg: Vec<Value> = Vec::new();
    for i in 0..legs {
        cfg.push(malloc_bdev_config(&format!("m{i}"), 65536, 512));
        cfg.push(config_entry("bdev_error_create", json!({"base_name": format!("m{i}")})));
    }
    cfg.push(config_entry("bdev_mirror_create", mirror));
    support::bdevperf_server(
        &env,
        BdevperfOpts {
            name,
            config: bdev_subsystem(cfg),
            time_s: 2,
            ..Default::default()
        },
    )
    .expect("bdevperf starts")
}

fn inject(t: &Target, leg: usize, io_type: &str) {
    t.rpc(
        "bdev_error_inject_error",
        json!({"name": format!("EE_m{leg}"), "io_type": io_type, "error_type": "failure", "num": 1_000_000}),
    )
    .expect("error injected");
}

/// Runs verify; returns (io_failed, finished cleanly).
fn verify(t: &Target) -> (u64, bool) {
    let r = t
        .perform_tests(Value::Null, Duration::from_secs(60))
        .expect("perform_tests answers");
    let job = &r["results"][0];
    (
        job["io_failed"].as_u64().unwrap_or(u64::MAX),
        job["status"] == "finished",
    )
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn read_errors_on_one_leg_are_retried_and_repaired() {
    let t = server(
        "fault_read",
        2,
        json!({"name": "mir", "level": "raid1", "base_bdevs": ["EE_m0", "EE_m1"]}),
    );
    assert_eq!(verify(&t), (0, true), "baseline");
    inject(&t, 1, "read");
    let (failed, finished) = verify(&t);
    assert_eq!((failed, finished), (0, true), "{}", support::tail_lines(&t.log(), 30));
    let m = t.mirror_info("mir");
    assert_eq!(m["state"], "online", "{m}");
    let leg = &m["legs"][1];
    assert_eq!(leg["state"], "online", "{m}");
    assert!(leg["read_errors"].as_u64().unwrap() > 0, "{m}");
    assert!(leg["read_repairs"].as_u64().unwrap() > 0, "{m}");
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn write_errors_on_one_leg_fail_it_and_the_mirror_runs_degraded() {
    let t = server(
        "fault_write",
        3,
        json!({"name": "mir", "level": "raid1", "base_bdevs": ["EE_m0", "EE_m1", "EE_m2"]}),
    );
    inject(&t, 2, "write");
    assert_eq!(verify(&t), (0, true), "{}", support::tail_lines(&t.log(), 30));
    let m = t.mirror_info("mir");
    assert_eq!(m["state"], "degraded", "{m}");
    assert_eq!(m["legs"][2]["state"], "failed", "{m}");
    // The failure is in the other legs' superblocks (acknowledgements waited for it).
    assert!(m["events"].as_u64().unwrap() >= 2, "events bumped by the failure: {m}");
    // The first write the leg fails may be a data write or the bitmap's (which md too treats
    // as the leg failing).
    assert!(
        m["legs"][2]["write_errors"].as_u64().unwrap() > 0 || t.log().contains("metadata write to leg 2 failed"),
        "{m}"
    );
    // A failed leg is never read again: more verify, no new reads there.
    let reads = m["legs"][2]["reads"].as_u64().unwrap();
    assert_eq!(verify(&t), (0, true));
    assert_eq!(t.mirror_info("mir")["legs"][2]["reads"].as_u64().unwrap(), reads);
    assert!(t.log().contains("leg 2 (EE_m2) failed"), "the failure is logged");
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn raid10_survives_two_failed_legs_that_share_no_copy() {
    // n2 over 4 legs pairs legs (0, 1) and (2, 3): legs 0 and 2 share no block.
    let t = server(
        "fault_r10_apart",
        4,
        json!({"name": "mir", "level": "raid10", "layout": "n2", "chunk_kb": 16,
               "base_bdevs": ["EE_m0", "EE_m1", "EE_m2", "EE_m3"]}),
    );
    inject(&t, 0, "write");
    inject(&t, 2, "write");
    assert_eq!(verify(&t), (0, true), "{}", support::tail_lines(&t.log(), 30));
    let m = t.mirror_info("mir");
    assert_eq!(m["state"], "degraded", "{m}");
    assert_eq!(
        (m["legs"][0]["state"].clone(), m["legs"][2]["state"].clone()),
        (json!("failed"), json!("failed"))
    );
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn raid10_with_both_copies_failing_reports_errors_never_silently() {
    // Legs 0 and 1 hold both copies of every other chunk: writes there cannot land anywhere.
    let t = server(
        "fault_r10_pair",
        4,
        json!({"name": "mir", "level": "raid10", "layout": "n2", "chunk_kb": 16,
               "base_bdevs": ["EE_m0", "EE_m1", "EE_m2", "EE_m3"]}),
    );
    inject(&t, 0, "write");
    inject(&t, 1, "write");
    // bdevperf stops the job at the first failed I/O and perform_tests reports the failure.
    let failed = match t.perform_tests(Value::Null, Duration::from_secs(60)) {
        Ok(r) => r["results"][0]["io_failed"].as_u64().unwrap_or(0) > 0,
        Err(e) => !e.is_transport() && e.message.contains("failed"),
    };
    assert!(
        failed,
        "writes that reached no copy must fail: {}",
        support::tail_lines(&t.log(), 30)
    );
    // bdevperf shuts down after a failed job; the module's log says what happened.
    support::wait_until(Duration::from_secs(20), "bdevperf to log", || {
        t.log().contains("is now offline")
    })
    .unwrap_or_else(|e| panic!("{e}: {}", support::tail_lines(&t.log(), 30)));
    let log = t.log();
    assert!(
        log.contains("leg 0 (EE_m0) failed") || log.contains("leg 1 (EE_m1) failed"),
        "{log}"
    );
    assert!(!log.contains("BUG"), "{log}");
}

/// A check that cannot read a copy does not call it clean: the blocks are counted
/// unreadable and rewritten from the good copy (md's check rewrites read errors too), so the
/// leg stays in the mirror; a copy that cannot be rewritten either fails its leg.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn a_check_counts_and_rewrites_copies_it_cannot_read() {
    let t = server(
        "fault_check",
        2,
        json!({"name": "mir", "level": "raid1", "base_bdevs": ["EE_m0", "EE_m1"]}),
    );
    let check = |t: &Target| {
        t.rpc("bdev_mirror_check", json!({"name": "mir"}))
            .expect("check answers")
    };
    inject(&t, 1, "read");
    let r = check(&t);
    let all = r["blocks_checked"].as_u64().expect("blocks_checked");
    assert!(all > 0, "{r}");
    assert_eq!(
        r["unreadable_blocks"],
        json!(all),
        "every copy on leg 1 failed to read: {r}"
    );
    assert_eq!(r["repaired_blocks"], json!(all), "and was rewritten: {r}");
    assert_eq!(r["mismatch_blocks"], json!(0), "{r}");
    let m = t.mirror_info("mir");
    assert_eq!(m["legs"][1]["state"], "online", "rewritten, not failed: {m}");
    t.rpc(
        "bdev_error_inject_error",
        json!({"name": "EE_m1", "io_type": "clear", "error_type": "failure"}),
    )
    .expect("injection cleared");
    let r = check(&t);
    assert_eq!(
        (&r["unreadable_blocks"], &r["mismatch_blocks"], &r["repaired_blocks"]),
        (&json!(0), &json!(0), &json!(0)),
        "{r}"
    );
    // Neither read nor rewrite: the leg fails.
    inject(&t, 1, "all");
    let r = check(&t);
    assert!(r["unreadable_blocks"].as_u64().unwrap() > 0, "{r}");
    let m = t.mirror_info("mir");
    assert_eq!(m["legs"][1]["state"], "failed", "{m}");
    assert_eq!(m["state"], "degraded", "{m}");
}
