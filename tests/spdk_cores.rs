//! Bounds far smaller than the I/O in flight. Two reactors on one mirror with tiny pools: each
//! core's engine parks on child contexts the other core holds, and the poller resumes it when
//! they come back to the shared mempool. One parent admitted at a time: each waits its turn.

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

/// The smallest admission bound, one parent at a time (`max_parents: 1`), under more I/O than
/// that: every parent waits for admission behind the one in flight, which ends on the quick
/// path and must let the next in (it stranded it, and bdevperf hung, before). Writes and
/// verify, RAID1 and RAID10, one core.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn one_parent_at_a_time_admits_every_write_in_turn() {
    let env = support::require_spdk();
    for (level, extra) in [
        ("raid1", json!({})),
        ("raid10", json!({"layout": "n2", "chunk_kb": 16})),
    ] {
        for workload in ["randwrite", "verify"] {
            let mut cfg: Vec<_> = (0..2)
                .map(|i| malloc_bdev_config(&format!("m{i}"), 65536, 512))
                .collect();
            let mut params = json!({"name": "mir", "level": level, "base_bdevs": ["m0", "m1"], "max_parents": 1});
            params
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            cfg.push(config_entry("bdev_mirror_create", params));
            let r = support::bdevperf(
                &env,
                BdevperfOpts {
                    name: "one_parent",
                    config: bdev_subsystem(cfg),
                    queue_depth: 16,
                    io_size: 4096,
                    workload,
                    time_s: 2,
                    timeout: std::time::Duration::from_secs(30),
                    extra_args: vec!["-T".into(), "mir".into()],
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("{level} {workload}: {e}"));
            r.ok()
                .unwrap_or_else(|e| panic!("{level} {workload}: {e}: {}", r.output));
            assert!(r.jobs.iter().all(|j| j.stats.iops > 0.0), "{}", r.output);
        }
    }
}
