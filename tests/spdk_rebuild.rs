//! A rebuild whose target leg is removed midway (over RPC, or hot-removed) stops cleanly; the
//! slot can be refilled and rebuilt again; the target keeps running throughout. A low bandwidth
//! cap keeps each rebuild running long enough to be interrupted.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{Target, TargetOpts};

fn wait_stopped(t: &Target, leg: usize) -> Value {
    support::wait_until(Duration::from_secs(30), "the rebuild to stop", || {
        let m = t.mirror_info("mir");
        m.get("process").is_none() && m["legs"][leg]["state"] == "removed"
    })
    .unwrap_or_else(|e| panic!("{e}: {}", support::tail_lines(&t.log(), 20)));
    t.mirror_info("mir")
}

fn assert_rebuilding(t: &Target) {
    let m = t.mirror_info("mir");
    assert_eq!(m["process"]["type"], "rebuild", "capped, so still running: {m}");
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn removing_the_rebuild_target_cancels_the_rebuild_cleanly() {
    let env = support::require_spdk();
    let t = Target::start(
        &env,
        TargetOpts {
            name: "rebuild_cancel",
            ..Default::default()
        },
    )
    .expect("target starts");
    for i in 0..4 {
        t.rpc(
            "bdev_malloc_create",
            json!({"name": format!("m{i}"), "num_blocks": 262144, "block_size": 512}),
        )
        .unwrap();
    }
    // 127 MiB at 8 MiB/s: a rebuild takes about 16 s unless interrupted.
    t.rpc(
        "bdev_mirror_create",
        json!({"name": "mir", "level": "raid1", "base_bdevs": ["m0", "m1"], "rebuild_max_mb_per_s": 8}),
    )
    .unwrap();
    t.rpc("bdev_mirror_remove_base_bdev", json!({"base_bdev": "m1"}))
        .unwrap();

    // Over RPC: the target may go, which cancels its rebuild; the source may not.
    t.rpc("bdev_mirror_add_base_bdev", json!({"name": "mir", "base_bdev": "m2"}))
        .unwrap();
    assert_rebuilding(&t);
    let e = t
        .rpc("bdev_mirror_remove_base_bdev", json!({"base_bdev": "m0"}))
        .expect_err("the source of a rebuild cannot be removed");
    assert!(e.code < 0 && e.message.starts_with("base_bdev:"), "{e:?}");
    t.rpc("bdev_mirror_remove_base_bdev", json!({"base_bdev": "m2"}))
        .expect("the rebuild's target can be removed");
    let m = wait_stopped(&t, 1);
    assert_eq!(m["state"], "degraded", "{m}");
    let last = &m["last_process"];
    assert_eq!(last["type"], "rebuild", "{m}");
    assert!(last["result"].as_str().unwrap().contains("cancelled"), "{m}");

    // Hot-removed: the device vanishes under the rebuild.
    t.rpc("bdev_mirror_add_base_bdev", json!({"name": "mir", "base_bdev": "m2"}))
        .unwrap();
    assert_rebuilding(&t);
    t.rpc("bdev_malloc_delete", json!({"name": "m2"})).unwrap();
    let m = wait_stopped(&t, 1);
    assert_eq!(m["state"], "degraded", "{m}");

    // The slot is refilled and rebuilt to the end, uncapped.
    t.rpc(
        "bdev_mirror_set_options",
        json!({"name": "mir", "rebuild_max_mb_per_s": 0}),
    )
    .unwrap();
    t.rpc("bdev_mirror_add_base_bdev", json!({"name": "mir", "base_bdev": "m3"}))
        .unwrap();
    support::wait_until(Duration::from_secs(60), "the third rebuild", || {
        let m = t.mirror_info("mir");
        m.get("process").is_none() && m["state"] == "online"
    })
    .unwrap_or_else(|e| panic!("{e}: {}", support::tail_lines(&t.log(), 20)));
    let log = t.log();
    assert!(!log.contains("BUG"), "{log}");
    assert!(log.contains("rebuild of leg 1 (m3) complete"), "{log}");
    t.rpc("bdev_mirror_delete", json!({"name": "mir"})).unwrap();
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
}
