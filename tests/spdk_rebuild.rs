//! A rebuild whose target leg is hot-removed midway stops cleanly; the slot can be refilled and
//! rebuilt again; the target keeps running throughout.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Target, TargetOpts};

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
    t.rpc(
        "bdev_mirror_create",
        json!({"name": "mir", "level": "raid1", "base_bdevs": ["m0", "m1"]}),
    )
    .unwrap();
    t.rpc("bdev_mirror_remove_base_bdev", json!({"base_bdev": "m1"}))
        .unwrap();
    t.rpc("bdev_mirror_add_base_bdev", json!({"name": "mir", "base_bdev": "m2"}))
        .unwrap();
    // Removing a leg over RPC while a rebuild runs is refused...
    let busy = t.rpc("bdev_mirror_remove_base_bdev", json!({"base_bdev": "m2"}));
    if t.mirror_info("mir").get("process").is_some() {
        let e = busy.expect_err("refused during a rebuild");
        assert!(e.code < 0 && e.message.starts_with("base_bdev:"), "{e:?}");
    }
    // ...but the device can vanish anyway.
    t.rpc("bdev_malloc_delete", json!({"name": "m2"})).unwrap();
    support::wait_until(Duration::from_secs(30), "the rebuild to stop", || {
        let m = t.mirror_info("mir");
        m.get("process").is_none() && m["legs"][1]["state"] == "removed"
    })
    .unwrap_or_else(|e| panic!("{e}: {}", support::tail_lines(&t.log(), 20)));
    assert_eq!(t.mirror_info("mir")["state"], "degraded");

    t.rpc("bdev_mirror_add_base_bdev", json!({"name": "mir", "base_bdev": "m3"}))
        .unwrap();
    support::wait_until(Duration::from_secs(60), "the second rebuild", || {
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
