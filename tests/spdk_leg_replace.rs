//! A leg leaves a mirror under I/O and a fresh one takes its place: removed by RPC or
//! hot-removed while bdevperf verifies, the mirror degrades without a failed I/O, refuses to let
//! its last in-sync copy go, rebuilds onto the new leg, and the new leg holds every copy where
//! the placement says.
//!
//! Only meaningful when SPDK was found at build time (`cfg(spdk)`); otherwise every test here is
//! reported as ignored, with the reason. Run with `cargo build --release && cargo test --release
//! --test spdk_leg_replace`.

mod support;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use support::{
    aio_bdev_config, bdev_subsystem, bdevperf_server, check_placement, config_entry, create_sparse_file, geometry,
    is_claimed, leg_state, malloc_bdev_config, mirror_config, names, parse_bdevperf_output, read_file, require_spdk,
    rpc_ok, run_dd, stamps, start_target, tail_lines, test_dir, wait_for_examine_config, wait_until, write_json,
    BdevperfOpts, RpcError, SpdkEnv, Target,
};

const MIB: u64 = 1024 * 1024;
const BS: u32 = 512;

const EBUSY: i64 = -(libc::EBUSY as i64);

/// Checks a perform_tests answer and the part of the log it printed.
fn assert_perform_clean(what: &str, res: Result<Value, RpcError>, log_part: &str, server: &Target) {
    let res = res.unwrap_or_else(|e| {
        panic!(
            "{what}: perform_tests failed: {e}\nlog tail:\n{}",
            tail_lines(&server.log(), 40)
        )
    });
    let results = res["results"].as_array().unwrap_or_else(|| panic!("{what}: {res}"));
    assert_eq!(results.len(), 1, "{what}: one job expected: {res}");
    let job = &results[0];
    assert_eq!(
        job["status"],
        json!("finished"),
        "{what}: {job}\n{}",
        tail_lines(log_part, 30)
    );
    assert_eq!(
        job["io_failed"],
        json!(0),
        "{what}: {job}\n{}",
        tail_lines(log_part, 30)
    );
    assert_eq!(job["io_timeout"], json!(0), "{what}: {job}");
    assert!(job["iops"].as_f64().unwrap_or(0.0) > 0.0, "{what}: no I/O: {job}");
    let parsed = parse_bdevperf_output(log_part);
    assert_eq!(
        parsed.miscompares,
        0,
        "{what}: miscompares\n{}",
        tail_lines(log_part, 30)
    );
    assert_eq!(
        parsed.io_failures,
        0,
        "{what}: failed I/O\n{}",
        tail_lines(log_part, 30)
    );
    assert!(
        parsed.total.is_some(),
        "{what}: no result table in the log:\n{}",
        tail_lines(log_part, 30)
    );
    assert!(!parsed.failed_io(), "{what}: failed I/O\n{}", tail_lines(log_part, 30));
}

/// Runs perform_tests with `params`; returns the answer and the log it produced.
fn perform(server: &Target, params: Value) -> (Result<Value, RpcError>, String) {
    let start = server.log().len();
    let r = server.perform_tests(params, Duration::from_secs(90));
    let log = server.log();
    (r, log.get(start..).unwrap_or(&log).to_string())
}

#[derive(Clone, Copy)]
enum Removal {
    Rpc,
    HotRemove,
}

fn leg_removed_case(env: &SpdkEnv, case: &str, level: &str, layout: Option<&str>, nlegs: usize, how: Removal) {
    let blocks = 32 * MIB / BS as u64;
    let legs = names(&format!("{case}_m"), nlegs);
    let mirror = format!("{case}_mirror");
    let chunk = (level == "raid10").then_some(64);
    let geo = geometry(level, layout, nlegs as u32, 64, blocks);
    let mut cfg: Vec<Value> = legs.iter().map(|l| malloc_bdev_config(l, blocks, BS)).collect();
    cfg.push(mirror_config(&mirror, level, layout, chunk, &legs));
    cfg.push(wait_for_examine_config());
    let server = bdevperf_server(
        env,
        BdevperfOpts {
            name: case,
            config: bdev_subsystem(cfg),
            time_s: 6,
            extra_args: vec!["-T".into(), mirror.clone()],
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{case}: {e}"));

    // The leg to remove and its partner: the other copy of mirror block 0.
    let copies = geo.map(0).unwrap();
    let (keep, gone) = (copies.as_slice()[0].leg as usize, copies.as_slice()[1].leg as usize);
    let gone_name = legs[gone].clone();

    // 1. Remove a leg while verify runs.
    let (first, removed_while_running, writes_before) = std::thread::scope(|s| {
        let h = s.spawn(|| perform(&server, Value::Null));
        // Wait until I/O reaches the legs, then let it run a little.
        let mut writes = 0u64;
        wait_until(Duration::from_secs(20), "I/O on the mirror's legs", || {
            let info = server.mirror_info(&mirror);
            writes = info["legs"][gone]["writes"].as_u64().unwrap_or(0);
            writes > 0
        })
        .unwrap_or_else(|e| panic!("{case}: {e}"));
        std::thread::sleep(Duration::from_millis(1500));
        let r = match how {
            Removal::Rpc => server.rpc("bdev_mirror_remove_base_bdev", json!({"base_bdev": gone_name})),
            Removal::HotRemove => server.rpc("bdev_malloc_delete", json!({"name": gone_name})),
        };
        let running = !h.is_finished();
        let first = h.join().expect("perform_tests thread");
        match r {
            Ok(v) if matches!(how, Removal::Rpc) => assert_eq!(v, json!(true), "{case}: remove"),
            Ok(_) => {}
            Err(e) => panic!(
                "{case}: removing {gone_name}: {e}\nlog:\n{}",
                tail_lines(&server.log(), 40)
            ),
        }
        (first, running, writes)
    });
    assert!(writes_before > 0);
    assert!(
        removed_while_running,
        "{case}: the removal returned after verify had already finished"
    );
    assert_perform_clean(
        &format!("{case}: verify across the removal"),
        first.0,
        &first.1,
        &server,
    );

    let info = server.mirror_info(&mirror);
    assert_eq!(info["state"], json!("degraded"), "{case}: {info}");
    assert_eq!(leg_state(&info, gone), "removed", "{case}: {info}");
    for (i, _) in legs.iter().enumerate().filter(|(i, _)| *i != gone) {
        assert_eq!(leg_state(&info, i), "online", "{case}: leg {i}: {info}");
    }
    assert!(info.get("process").is_none(), "{case}: no rebuild expected yet: {info}");
    if matches!(how, Removal::Rpc) {
        assert!(
            !is_claimed(&server, &gone_name),
            "{case}: the removed leg must be released"
        );
    } else {
        assert!(
            server.rpc("bdev_get_bdevs", json!({"name": gone_name})).is_err(),
            "{case}: the hot-removed bdev must be gone"
        );
    }

    // 2. The last in-sync copy cannot go.
    let keep_name = legs[keep].clone();
    match server.rpc("bdev_mirror_remove_base_bdev", json!({"base_bdev": keep_name})) {
        Ok(v) => panic!("{case}: removing the last in-sync copy ({keep_name}) was accepted: {v}"),
        Err(e) => {
            assert_eq!(e.code, EBUSY, "{case}: {e}");
            assert!(e.message.starts_with("base_bdev:"), "{case}: {e}");
            assert!(e.message.contains("last in-sync copy"), "{case}: {e}");
        }
    }
    let info2 = server.mirror_info(&mirror);
    assert_eq!(info2["state"], json!("degraded"), "{case}: {info2}");
    assert_eq!(
        leg_state(&info2, keep),
        "online",
        "{case}: refused removal changed {keep_name}: {info2}"
    );

    // 3. A fresh bdev of the same size takes the free slot and is rebuilt.
    let fresh = format!("{case}_fresh");
    rpc_ok(
        &server,
        "bdev_malloc_create",
        json!({"name": fresh, "num_blocks": blocks, "block_size": BS}),
    );
    assert_eq!(
        rpc_ok(
            &server,
            "bdev_mirror_add_base_bdev",
            json!({"name": mirror, "base_bdev": fresh})
        ),
        json!(true)
    );
    let mut seen_process = None;
    let mut last = Value::Null;
    wait_until(Duration::from_secs(60), "the rebuild to finish", || {
        last = server.mirror_info(&mirror);
        if let Some(p) = last.get("process") {
            seen_process.get_or_insert_with(|| p.clone());
            return false;
        }
        last["state"] == json!("online")
    })
    .unwrap_or_else(|e| {
        panic!(
            "{case}: {e}; last state: {last}\nlog:\n{}",
            tail_lines(&server.log(), 30)
        )
    });
    if let Some(p) = &seen_process {
        assert_eq!(p["type"], json!("rebuild"), "{case}: {p}");
        assert_eq!(p["target"], json!(fresh), "{case}: {p}");
        assert_eq!(p["target_slot"], json!(gone), "{case}: {p}");
        let pct = p["progress"]["percent"].as_f64().unwrap_or(-1.0);
        assert!((0.0..=100.0).contains(&pct), "{case}: {p}");
    }
    let info = server.mirror_info(&mirror);
    assert_eq!(info["state"], json!("online"), "{case}: {info}");
    assert_eq!(info["legs"][gone]["bdev"], json!(fresh), "{case}: {info}");
    for i in 0..nlegs {
        assert_eq!(leg_state(&info, i), "online", "{case}: leg {i}: {info}");
    }
    assert!(is_claimed(&server, &fresh), "{case}: the added leg must be claimed");

    // 4. Clean verify on the repaired mirror.
    let second = perform(&server, json!({"time_in_sec": 2}));
    assert_perform_clean(
        &format!("{case}: verify after the rebuild"),
        second.0,
        &second.1,
        &server,
    );

    // 5. The rebuilt leg is now a full copy: its partner may go, and I/O still verifies.
    assert_eq!(
        rpc_ok(&server, "bdev_mirror_remove_base_bdev", json!({"base_bdev": keep_name})),
        json!(true),
        "{case}: after the rebuild {keep_name} is no longer the last copy"
    );
    let info = server.mirror_info(&mirror);
    assert_eq!(info["state"], json!("degraded"), "{case}: {info}");
    assert_eq!(leg_state(&info, keep), "removed", "{case}: {info}");
    let third = perform(&server, json!({"time_in_sec": 2}));
    assert_perform_clean(
        &format!("{case}: verify on the rebuilt leg"),
        third.0,
        &third.1,
        &server,
    );
    server
        .shutdown(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{case}: {e}"));
}

/// The rebuild puts every block's copy where the placement says on the new leg: stamped data is
/// written with spdk_dd over aio legs, a spdk_tgt replaces a leg with an empty file and waits for
/// the rebuild, then the leg files are read directly.
fn rebuild_copies_data(env: &SpdkEnv) {
    let case = "rebuild_f2";
    let seed = 0x5eed_4eb1;
    let dir = test_dir(case);
    let leg_bytes = 8 * MIB;
    let legs = names("rb_leg", 5); // rb_leg4 is the replacement
    let files: Vec<PathBuf> = legs.iter().map(|l| dir.join(format!("{l}.img"))).collect();
    for f in &files {
        create_sparse_file(f, leg_bytes).unwrap();
    }
    let geo = geometry("raid10", Some("f2"), 4, 16, leg_bytes / BS as u64);
    let d = geo.data_blocks();
    let mut cfg: Vec<Value> = legs[..4]
        .iter()
        .zip(&files)
        .map(|(l, f)| aio_bdev_config(l, f, BS))
        .collect();
    cfg.push(mirror_config("rb", "raid10", Some("f2"), Some(16), &legs[..4]));
    cfg.push(wait_for_examine_config());
    let config = bdev_subsystem(cfg.clone());

    // Stamp every block of the mirror.
    let data = dir.join("all.bin");
    fs::write(&data, stamps(0..d, seed)).unwrap();
    run_dd(
        env,
        &config,
        &["--if", data.to_str().unwrap(), "--ob", "rb", "--bs", "65536"],
    );

    // Replace leg 1 with the empty file and rebuild.
    cfg.insert(cfg.len() - 1, aio_bdev_config(&legs[4], &files[4], BS));
    let cfg_path = write_json(dir.path(), "tgt.json", &bdev_subsystem(cfg));
    let t = start_target(env, case, Some(&cfg_path));
    assert_eq!(t.mirror_info("rb")["data_blocks"], json!(d));
    assert_eq!(
        rpc_ok(&t, "bdev_mirror_remove_base_bdev", json!({"base_bdev": legs[1]})),
        json!(true)
    );
    assert_eq!(
        rpc_ok(
            &t,
            "bdev_mirror_add_base_bdev",
            json!({"name": "rb", "base_bdev": legs[4]})
        ),
        json!(true)
    );
    let mut last = Value::Null;
    wait_until(Duration::from_secs(60), "the rebuild onto an aio leg", || {
        last = t.mirror_info("rb");
        last.get("process").is_none() && last["state"] == json!("online")
    })
    .unwrap_or_else(|e| panic!("{case}: {e}; last: {last}\nlog:\n{}", tail_lines(&t.log(), 30)));
    assert_eq!(last["legs"][1]["bdev"], json!(legs[4]), "{last}");
    t.shutdown(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{case}: {e}"));

    let images: Vec<Vec<u8>> = [0, 4, 2, 3].iter().map(|&i| read_file(&files[i])).collect();
    let problems = check_placement(&geo, &images, std::slice::from_ref(&(0..d)), seed);
    assert!(
        problems.is_empty(),
        "{case}: after the rebuild the legs (new leg in slot 1) disagree with the placement:\n{}",
        problems.join("\n")
    );
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn raid1_leg_removed_by_rpc_under_io_then_replaced() {
    let env = require_spdk();
    leg_removed_case(&env, "r1rpc", "raid1", None, 2, Removal::Rpc);
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn raid10_leg_hot_removed_under_io_then_replaced() {
    let env = require_spdk();
    leg_removed_case(&env, "n2hot", "raid10", Some("n2"), 4, Removal::HotRemove);
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn rebuild_puts_every_copy_where_the_placement_says() {
    let env = require_spdk();
    rebuild_copies_data(&env);
}

/// A replace under verify with a starved `spdk_bdev_io` pool and host I/O across chunks (raid10
/// f2, chunk 4 KiB, 12 KiB I/O, QD64 over a pool of 64, cache 1) completes, and so does the
/// verify. When the bdev layer split such I/O at every chunk for the mirror, its split parents
/// took the whole pool, each waiting in SPDK's line for its pieces', the replace's window lock
/// waited for them, and everything stood still for good.
fn replace_under_a_starved_pool(env: &SpdkEnv) {
    let case = "starved_replace";
    let (blocks, bs) = (16384, 4096);
    let legs = names("sr_m", 3);
    let (mirror, spare) = ("sr_mirror", "sr_spare");
    let mut cfg = vec![config_entry(
        "bdev_set_options",
        json!({"bdev_io_pool_size": 64, "bdev_io_cache_size": 1}),
    )];
    cfg.extend(legs.iter().map(|l| malloc_bdev_config(l, blocks, bs)));
    cfg.push(malloc_bdev_config(spare, blocks, bs));
    let mut m = mirror_config(mirror, "raid10", Some("f2"), Some(4), &legs);
    m["params"]["superblock"] = json!(true);
    cfg.push(m);
    cfg.push(wait_for_examine_config());
    let server = bdevperf_server(
        env,
        BdevperfOpts {
            name: case,
            config: bdev_subsystem(cfg),
            queue_depth: 64,
            io_size: 12288,
            time_s: 6,
            extra_args: vec!["-T".into(), mirror.into()],
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{case}: {e}"));
    let (run, replaced) = std::thread::scope(|s| {
        let h = s.spawn(|| perform(&server, Value::Null));
        wait_until(Duration::from_secs(20), "I/O on the mirror's legs", || {
            server.mirror_info(mirror)["legs"][0]["writes"].as_u64().unwrap_or(0) > 0
        })
        .unwrap_or_else(|e| panic!("{case}: {e}"));
        std::thread::sleep(Duration::from_millis(1500));
        let r = server.rpc(
            "bdev_mirror_replace_base_bdev",
            json!({"name": mirror, "base_bdev": legs[0], "new_base_bdev": spare}),
        );
        (h.join().expect("perform_tests thread"), r)
    });
    assert_eq!(
        replaced.unwrap_or_else(|e| panic!("{case}: replace: {e}")),
        json!(true),
        "{case}: replace"
    );
    assert_perform_clean(&format!("{case}: verify across the replace"), run.0, &run.1, &server);
    let mut last = Value::Null;
    wait_until(Duration::from_secs(60), "the replace to finish", || {
        last = server.mirror_info(mirror);
        last.get("process").is_none() && last["legs"][0]["bdev"] == json!(spare)
    })
    .unwrap_or_else(|e| panic!("{case}: {e}; last: {last}\n{}", tail_lines(&server.log(), 30)));
    assert_eq!(last["state"], json!("online"), "{case}: {last}");
    let after = perform(&server, json!({"time_in_sec": 2}));
    assert_perform_clean(&format!("{case}: verify after the replace"), after.0, &after.1, &server);
    server
        .shutdown(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{case}: {e}"));
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn raid10_replace_under_a_starved_pool_with_io_across_chunks_completes() {
    let env = require_spdk();
    replace_under_a_starved_pool(&env);
}
