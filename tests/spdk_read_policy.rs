//! Read policies on a live mirror: chosen at create, changed at runtime, visible in the
//! per-leg read counters.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{bdev_subsystem, config_entry, malloc_bdev_config, BdevperfOpts, Target};

fn leg_reads(t: &Target) -> Vec<u64> {
    t.mirror_info("mir")["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["reads"].as_u64().unwrap())
        .collect()
}

fn delta(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

fn randread(t: &Target) {
    let r = t
        .perform_tests(Value::Null, Duration::from_secs(60))
        .expect("perform_tests");
    assert_eq!(r["results"][0]["io_failed"], json!(0), "{r}");
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn policies_at_create_and_at_runtime() {
    let env = support::require_spdk();
    let cfg = bdev_subsystem(vec![
        malloc_bdev_config("m0", 32768, 512),
        malloc_bdev_config("m1", 32768, 512),
        malloc_bdev_config("m2", 32768, 512),
        config_entry(
            "bdev_mirror_create",
            json!({"name": "mir", "level": "raid1", "base_bdevs": ["m0", "m1", "m2"],
                   "read_policy": "preferred", "preferred_leg": 1}),
        ),
    ]);
    let t = support::bdevperf_server(
        &env,
        BdevperfOpts {
            name: "read_policy",
            config: cfg,
            queue_depth: 8,
            workload: "randread",
            time_s: 1,
            ..Default::default()
        },
    )
    .expect("bdevperf starts");
    let m = t.mirror_info("mir");
    assert_eq!(
        (m["read_policy"].clone(), m["preferred_leg"].clone()),
        (json!("preferred"), json!(1))
    );

    let before = leg_reads(&t);
    randread(&t);
    let pref = delta(&leg_reads(&t), &before);
    let total: u64 = pref.iter().sum();
    assert!(
        total > 1000 && pref[1] * 10 >= total * 9,
        "preferred leg 1 should serve the reads: {pref:?}"
    );

    t.rpc(
        "bdev_mirror_set_read_policy",
        json!({"name": "mir", "read_policy": "round_robin"}),
    )
    .unwrap();
    let before = leg_reads(&t);
    randread(&t);
    let rr = delta(&leg_reads(&t), &before);
    let (lo, hi) = (*rr.iter().min().unwrap(), *rr.iter().max().unwrap());
    assert!(
        lo > 0 && hi - lo <= hi / 20 + 2,
        "round robin should split evenly: {rr:?}"
    );

    // Bad runtime changes name the field and change nothing.
    for (params, field) in [
        (json!({"name": "mir", "read_policy": "fastest"}), "read_policy:"),
        (json!({"name": "mir", "read_policy": "preferred"}), "preferred_leg:"),
        (
            json!({"name": "mir", "read_policy": "preferred", "preferred_leg": 7}),
            "preferred_leg:",
        ),
        (json!({"name": "nope", "read_policy": "round_robin"}), "name:"),
    ] {
        let e = t.rpc("bdev_mirror_set_read_policy", params.clone()).unwrap_err();
        assert!(e.code < 0 && e.message.starts_with(field), "{params}: {e:?}");
    }
    let m = t.mirror_info("mir");
    assert_eq!(m["read_policy"], json!("round_robin"));
}
