//! Many volumes in one target: with default options, 300 two-leg mirrors (superblock and
//! bitmap on, as users create them) fit in `spdk_tgt -s 1024`, and each one works: every one
//! takes a metadata write at creation and a full copy comparison (`bdev_mirror_check`) reads
//! both of its legs through its own I/O path.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Target, TargetOpts};

const MIRRORS: usize = 300;

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn three_hundred_mirrors_fit_in_a_gib_and_each_one_works() {
    let env = support::require_spdk();
    let t = Target::start(
        &env,
        TargetOpts {
            name: "scale",
            mem_mb: 1024,
            ..Default::default()
        },
    )
    .expect("target starts");
    for i in 0..MIRRORS {
        for l in 0..2 {
            t.rpc(
                "bdev_null_create",
                json!({"name": format!("n{i}_{l}"), "num_blocks": 8192, "block_size": 512}),
            )
            .unwrap();
        }
        t.rpc(
            "bdev_mirror_create",
            json!({"name": format!("mir{i}"), "level": "raid1", "base_bdevs": [format!("n{i}_0"), format!("n{i}_1")]}),
        )
        .unwrap_or_else(|e| panic!("mirror {i} of {MIRRORS}: {e:?}"));
    }
    let all = t.rpc("bdev_mirror_get_bdevs", json!({})).unwrap();
    assert_eq!(all.as_array().unwrap().len(), MIRRORS);
    for i in 0..MIRRORS {
        let c = t
            .rpc_timeout(
                "bdev_mirror_check",
                json!({"name": format!("mir{i}")}),
                Duration::from_secs(30),
            )
            .unwrap_or_else(|e| panic!("check of mirror {i}: {e:?}"));
        assert_eq!(c["mismatch_blocks"], 0, "mirror {i}: {c}");
        assert!(c["blocks_checked"].as_u64().unwrap() > 0, "mirror {i}: {c}");
    }
    let log = t.log();
    assert!(!log.contains("BUG"), "{}", support::tail_lines(&log, 30));
    t.shutdown(Duration::from_secs(60)).expect("clean shutdown");
}
