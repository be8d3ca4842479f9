//! Two reactors on one mirror with pools far smaller than the I/O in flight: each core's
//! engine parks on child contexts the other core holds, and the poller resumes it when they
//! come back to the shared mempool.

mod support;

use serde_json::json;
use support::{bdev_subsystem, config_entry, malloc_bdev_config, BdevperfOpts};

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn two_cores_share_tiny_pools_and_verify_clean() {
    let env = support::require_spdk();
    let mut cfg: Vec<_> = (0..4)
        .map(|i| malloc_bdev_config(&format!("m{i}"), 65536, 512))
        .collect();
    cfg.push(config_entry(
        "bdev_mirror_create",
        json!({"name": "mir", "level": "raid10", "layout": "f2", "chunk_kb": 16,
               "base_bdevs": ["m0", "m1", "m2", "m3"], "pool_size": 8, "max_parents": 4}),
    ));
    let cores = support::lease_cores(2);
    let r = support::bdevperf(
        &env,
        BdevperfOpts {
            name: "two_cores",
            config: bdev_subsystem(cfg),
            queue_depth: 64,
            io_size: 8192,
            cores_mask: cores.mask(),
            extra_args: vec!["-C".into()],
            ..Default::default()
        },
    )
    .expect("bdevperf runs and does not hang");
    r.ok().expect("verify on two cores is clean");
    assert_eq!(r.jobs.len(), 2, "one job per core: {}", r.output);
    assert!(r.jobs.iter().all(|j| j.stats.iops > 0.0), "{}", r.output);
}
