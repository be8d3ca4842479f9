//! The module loads into SPDK's stock `spdk_tgt`: with `libspdk_mirror.so` preloaded its RPC
//! methods are there, without it they are not; and what `save_config` writes of its mirrors
//! loads again into the same mirrors.
//!
//! Only meaningful when SPDK was found at build time (`cfg(spdk)`); otherwise every test here is
//! reported as ignored, with the reason. Run with `cargo build --release && cargo test --release
//! --test spdk_load`.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::{
    create_aio, geometry, leg_files, leg_state, names, require_spdk, rpc_ok, start_target, test_dir, wait_until,
    write_json, RpcError, Target, TargetOpts,
};

const MIB: u64 = 1024 * 1024;
const BS: u32 = 512;

/// The five JSON-RPC methods the module registers.
const MIRROR_METHODS: [&str; 5] = [
    "bdev_mirror_create",
    "bdev_mirror_delete",
    "bdev_mirror_get_bdevs",
    "bdev_mirror_add_base_bdev",
    "bdev_mirror_remove_base_bdev",
];

// ------------------------------------------------------------------------------------------------
// the module loads, and only with the preload
// ------------------------------------------------------------------------------------------------

fn rpc_methods(t: &Target) -> BTreeSet<String> {
    rpc_ok(t, "rpc_get_methods", Value::Null)
        .as_array()
        .expect("rpc_get_methods returns an array")
        .iter()
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect()
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn the_preloaded_module_registers_its_methods() {
    let env = require_spdk();
    assert!(
        env.module_lib.is_file(),
        "module library {} missing",
        env.module_lib.display()
    );
    let started = Instant::now();
    let t = start_target(&env, "module_loads", None);
    let methods = rpc_methods(&t);
    for m in MIRROR_METHODS {
        assert!(
            methods.contains(m),
            "rpc_get_methods lacks {m} with the module preloaded"
        );
    }
    assert_eq!(rpc_ok(&t, "bdev_mirror_get_bdevs", Value::Null), json!([]));
    t.shutdown(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("the_preloaded_module_registers_its_methods: {:?}", started.elapsed());
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn without_the_preload_the_methods_are_absent() {
    let env = require_spdk();
    let started = Instant::now();
    // Without the preload the methods are not there: it is the library that brings them.
    let plain = Target::start(
        &env,
        TargetOpts {
            name: "module_absent",
            preload: false,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let methods = rpc_methods(&plain);
    for m in MIRROR_METHODS {
        assert!(!methods.contains(m), "{m} is registered without the module preloaded");
    }
    match plain.rpc("bdev_mirror_get_bdevs", Value::Null) {
        Err(e) => assert_eq!(e.code, RpcError::METHOD_NOT_FOUND, "{e}"),
        Ok(v) => panic!("bdev_mirror_get_bdevs answered without the module: {v}"),
    }
    plain
        .shutdown(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("without_the_preload_the_methods_are_absent: {:?}", started.elapsed());
}

// ------------------------------------------------------------------------------------------------
// save_config replays
// ------------------------------------------------------------------------------------------------

/// The parts of a mirror's description that must survive save_config + reload.
fn durable_view(m: &Value) -> Value {
    json!({
        "name": m["name"],
        "uuid": m["uuid"],
        "level": m["level"],
        "layout": m["layout"],
        "chunk_kb": m["chunk_kb"],
        "block_size": m["block_size"],
        "data_blocks": m["data_blocks"],
        "num_legs": m["num_legs"],
        "pool_size": m["pool_size"],
        "max_parents": m["max_parents"],
        "state": m["state"],
        "legs": m["legs"].as_array().unwrap().iter()
            .map(|l| json!({"slot": l["slot"], "bdev": l["bdev"], "state": l["state"]}))
            .collect::<Vec<_>>(),
    })
}

/// What `rpc.py save_config` writes: every subsystem's `framework_get_config`, in the order of
/// `framework_get_subsystems` (batches, if any, flattened).
fn save_config(t: &Target) -> Value {
    let subsystems = rpc_ok(t, "framework_get_subsystems", Value::Null);
    let list: Vec<Value> = subsystems
        .as_array()
        .expect("framework_get_subsystems returns an array")
        .iter()
        .map(|s| {
            let name = s["subsystem"].as_str().expect("subsystem name");
            let cfg = rpc_ok(t, "framework_get_config", json!({ "name": name }));
            let flat: Vec<Value> = cfg
                .as_array()
                .map(|entries| {
                    entries
                        .iter()
                        .flat_map(|e| match e {
                            Value::Array(batch) => batch.clone(),
                            one => vec![one.clone()],
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({"subsystem": name, "config": flat})
        })
        .collect();
    json!({ "subsystems": list })
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn save_config_replays() {
    let env = require_spdk();
    let uuid = "1b4e28ba-2fa1-41d2-883f-0016d3cca427";
    let blocks = 16 * MIB / BS as u64;

    let a = start_target(&env, "save_config_a", None);
    for b in names("a", 3).iter().chain(&names("b", 4)).chain(&names("c", 2)) {
        rpc_ok(
            &a,
            "bdev_malloc_create",
            json!({"name": b, "num_blocks": blocks, "block_size": BS}),
        );
    }
    rpc_ok(
        &a,
        "bdev_mirror_create",
        json!({"name": "r1", "level": "raid1", "base_bdevs": ["a0", "a1", "a2"], "uuid": uuid,
               "pool_size": 256, "max_parents": 64, "superblock": false, "rebuild_max_mb_per_s": 7}),
    );
    rpc_ok(
        &a,
        "bdev_mirror_create",
        json!({"name": "r10", "level": "raid10", "layout": "o2", "chunk_kb": 32,
               "base_bdevs": ["b0", "b1", "b2", "b3"], "superblock": false}),
    );
    // A mirror with a superblock is described by its legs, not by the config: left out.
    rpc_ok(
        &a,
        "bdev_mirror_create",
        json!({"name": "sb", "level": "raid1", "base_bdevs": ["c0", "c1"]}),
    );
    rpc_ok(&a, "bdev_wait_for_examine", Value::Null);
    let r1_a = a.mirror_info("r1");
    let r10_a = a.mirror_info("r10");
    assert_eq!(r1_a["uuid"], json!(uuid), "the given uuid is used: {r1_a}");
    assert_eq!(r10_a["layout"], json!("o2"));
    assert_eq!(r10_a["chunk_kb"], json!(32));
    assert_eq!(
        r10_a["data_blocks"],
        json!(geometry("raid10", Some("o2"), 4, 32, blocks).data_blocks())
    );

    let saved = save_config(&a);
    // The bdev subsystem holds one bdev_mirror_create per mirror, after the legs' creation.
    let bdev_cfg = saved["subsystems"]
        .as_array()
        .expect("save_config has subsystems")
        .iter()
        .find(|s| s["subsystem"] == json!("bdev"))
        .expect("save_config has a bdev subsystem")["config"]
        .as_array()
        .expect("bdev config is an array")
        .clone();
    let pos = |method: &str, name: &str| -> Option<usize> {
        bdev_cfg
            .iter()
            .position(|e| e["method"] == json!(method) && e["params"]["name"] == json!(name))
    };
    let creates: Vec<&Value> = bdev_cfg
        .iter()
        .filter(|e| e["method"] == json!("bdev_mirror_create"))
        .collect();
    assert_eq!(
        creates.len(),
        2,
        "save_config: {}",
        serde_json::to_string_pretty(&bdev_cfg).unwrap()
    );
    for (mirror, legs) in [("r1", names("a", 3)), ("r10", names("b", 4))] {
        let at = pos("bdev_mirror_create", mirror)
            .unwrap_or_else(|| panic!("save_config has no bdev_mirror_create for {mirror}"));
        for l in &legs {
            let leg_at =
                pos("bdev_malloc_create", l).unwrap_or_else(|| panic!("save_config has no bdev_malloc_create for {l}"));
            assert!(leg_at < at, "{mirror} is created before its leg {l} in save_config");
        }
        assert_eq!(bdev_cfg[at]["params"]["base_bdevs"], json!(legs));
    }
    let p1 = &bdev_cfg[pos("bdev_mirror_create", "r1").unwrap()]["params"];
    assert_eq!(p1["level"], json!("raid1"), "{p1}");
    assert_eq!(p1["uuid"], json!(uuid), "{p1}");
    assert_eq!(p1["pool_size"], json!(256), "{p1}");
    assert_eq!(p1["max_parents"], json!(64), "{p1}");
    // The cap too (it was left out, and came back as none).
    assert_eq!(p1["rebuild_max_mb_per_s"], json!(7), "{p1}");
    let p10 = &bdev_cfg[pos("bdev_mirror_create", "r10").unwrap()]["params"];
    assert_eq!(p10["level"], json!("raid10"), "{p10}");
    assert_eq!(p10["layout"], json!("o2"), "{p10}");
    assert_eq!(p10["chunk_kb"], json!(32), "{p10}");
    assert_eq!(p10["uuid"], r10_a["uuid"], "{p10}");
    assert_eq!(p10["pool_size"], json!(256), "{p10}");
    assert_eq!(p10["max_parents"], json!(1024), "{p10}");

    // Kept in a dir of our own: target a's dir goes when it is dropped.
    let dir = test_dir("save_config");
    let saved_path = write_json(dir.path(), "saved.json", &saved);
    let st = a.shutdown(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "spdk_tgt with mirrors exited with {st}");
    drop(a);

    let b = start_target(&env, "save_config_b", Some(&saved_path));
    rpc_ok(&b, "bdev_wait_for_examine", Value::Null);
    let all_b = rpc_ok(&b, "bdev_mirror_get_bdevs", Value::Null);
    assert_eq!(all_b.as_array().map(Vec::len), Some(2), "after replay: {all_b}");
    for before in [&r1_a, &r10_a] {
        let name = before["name"].as_str().unwrap();
        let after = b.mirror_info(name);
        assert_eq!(
            durable_view(&after),
            durable_view(before),
            "mirror {name} differs after save_config + reload"
        );
        assert_eq!(after["state"], json!("online"));
        let bdev = rpc_ok(&b, "bdev_get_bdevs", json!({ "name": name }));
        assert_eq!(bdev[0]["uuid"], before["uuid"], "bdev uuid of {name}");
    }
    // The replayed config saves to the same mirror entries.
    let saved_b = save_config(&b);
    let mirrors_of = |cfg: &Value| -> Vec<Value> {
        cfg["subsystems"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["subsystem"] == json!("bdev"))
            .flat_map(|s| s["config"].as_array().unwrap().clone())
            .filter(|e| e["method"] == json!("bdev_mirror_create"))
            .collect()
    };
    assert_eq!(mirrors_of(&saved_b), mirrors_of(&saved));
    b.shutdown(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
}

/// A mirror without a superblock whose leg was registered after it (added in place of
/// another) replays: SPDK saves that leg's create after the mirror's, and the mirror's create
/// (`wait_for_legs`) waits for it, where before the replay stopped spdk_tgt at start-up ("no
/// bdev named"). A create that waits is listed as configuring, runs when its legs appear, and
/// can be deleted while it waits.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn save_config_replays_a_leg_registered_after_its_mirror() {
    let env = require_spdk();
    let blocks = 16 * MIB / BS as u64;
    let malloc = |t: &Target, name: &str| {
        rpc_ok(
            t,
            "bdev_malloc_create",
            json!({"name": name, "num_blocks": blocks, "block_size": BS}),
        );
    };
    // aio bdevs: each is saved in its place among the bdevs (malloc ones are all saved first).
    let dir = test_dir("save_config_late_leg");
    let files = leg_files(&dir, 3, 16 * MIB);
    let a = start_target(&env, "save_config_late_leg_a", None);
    create_aio(&a, "g0", &files[0], BS);
    create_aio(&a, "g1", &files[1], BS);
    rpc_ok(
        &a,
        "bdev_mirror_create",
        json!({"name": "md", "level": "raid1", "base_bdevs": ["g0", "g1"], "superblock": false}),
    );
    create_aio(&a, "g2", &files[2], BS);
    rpc_ok(&a, "bdev_mirror_remove_base_bdev", json!({"base_bdev": "g1"}));
    rpc_ok(
        &a,
        "bdev_mirror_add_base_bdev",
        json!({"name": "md", "base_bdev": "g2"}),
    );
    let mut last = Value::Null;
    wait_until(Duration::from_secs(60), "g2's rebuild", || {
        last = a.mirror_info("md");
        last["state"] == json!("online")
    })
    .unwrap_or_else(|e| panic!("{e}: {last}"));
    let saved = save_config(&a);
    let text = saved.to_string();
    let at = |what: &str| text.find(what).unwrap_or_else(|| panic!("{what} not in {text}"));
    assert!(
        at("\"bdev_mirror_create\"") < at("\"name\":\"g2\""),
        "the order this is about: {text}"
    );
    let saved_path = write_json(dir.path(), "saved.json", &saved);
    a.shutdown(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    drop(a);

    let b = start_target(&env, "save_config_late_leg_b", Some(&saved_path));
    rpc_ok(&b, "bdev_wait_for_examine", Value::Null);
    let md = b.mirror_info("md");
    assert_eq!(md["state"], json!("online"), "{md}");
    let legs: Vec<&Value> = md["legs"].as_array().unwrap().iter().map(|l| &l["bdev"]).collect();
    assert_eq!(legs, [&json!("g0"), &json!("g2")], "{md}");

    // Asked for directly: answered at once, listed while it waits, created when its legs are.
    for name in ["late", "gone"] {
        let answer = rpc_ok(
            &b,
            "bdev_mirror_create",
            json!({"name": name, "level": "raid1", "base_bdevs": [format!("{name}0"), format!("{name}1")],
                   "superblock": false, "wait_for_legs": true}),
        );
        assert_eq!(answer, json!(name));
        let listed = rpc_ok(
            &b,
            "bdev_mirror_get_bdevs",
            json!({"name": name, "category": "configuring"}),
        );
        assert_eq!(listed[0]["state"], json!("configuring"), "{listed}");
    }
    assert_eq!(rpc_ok(&b, "bdev_mirror_delete", json!({"name": "gone"})), json!(true));
    for leg in ["late0", "late1", "gone0", "gone1"] {
        malloc(&b, leg);
    }
    rpc_ok(&b, "bdev_wait_for_examine", Value::Null);
    assert_eq!(b.mirror_info("late")["state"], json!("online"));
    assert!(
        b.rpc("bdev_mirror_get_bdevs", json!({"name": "gone"})).is_err(),
        "gone is gone"
    );
    // A create still waiting is saved too, and waits again when replayed.
    rpc_ok(
        &b,
        "bdev_mirror_create",
        json!({"name": "kept", "level": "raid1", "base_bdevs": ["kept0", "kept1"],
               "superblock": false, "wait_for_legs": true}),
    );
    let saved = write_json(dir.path(), "saved2.json", &save_config(&b));
    b.shutdown(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    drop(b);
    let c = start_target(&env, "save_config_late_leg_c", Some(&saved));
    for leg in ["kept0", "kept1"] {
        malloc(&c, leg);
    }
    rpc_ok(&c, "bdev_wait_for_examine", Value::Null);
    assert_eq!(c.mirror_info("kept")["state"], json!("online"));
    c.shutdown(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
}

/// An offline mirror without a superblock is not saved: its legs failed one after the other,
/// the first one missing writes the second took, and a create call would take both as in
/// sync (stale blocks served as current). Here an lvol store's writes take it down: one leg
/// fails them, the store is written to the other, then that one fails too. Before, the
/// mirror was saved with both legs.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn save_config_leaves_out_an_offline_mirror() {
    let env = require_spdk();
    let a = start_target(&env, "save_config_offline", None);
    for i in 0..2 {
        rpc_ok(
            &a,
            "bdev_malloc_create",
            json!({"name": format!("m{i}"), "num_blocks": 16 * MIB / BS as u64, "block_size": BS}),
        );
        rpc_ok(&a, "bdev_error_create", json!({"base_name": format!("m{i}")}));
    }
    rpc_ok(
        &a,
        "bdev_mirror_create",
        json!({"name": "off", "level": "raid1", "base_bdevs": ["EE_m0", "EE_m1"], "superblock": false}),
    );
    let fail_writes = |leg: &str| {
        rpc_ok(
            &a,
            "bdev_error_inject_error",
            json!({"name": leg, "io_type": "write", "error_type": "failure", "num": 1_000_000}),
        )
    };
    fail_writes("EE_m1");
    rpc_ok(
        &a,
        "bdev_lvol_create_lvstore",
        json!({"bdev_name": "off", "lvs_name": "lvs", "cluster_sz": 1048576}),
    );
    assert_eq!(a.mirror_info("off")["state"], json!("degraded"));
    fail_writes("EE_m0");
    let _ = a.rpc(
        "bdev_lvol_create",
        json!({"lvs_name": "lvs", "lvol_name": "v", "size_in_mib": 1, "thin_provision": false}),
    );
    let m = a.mirror_info("off");
    assert_eq!(m["state"], json!("offline"), "{m}");
    let saved = save_config(&a);
    assert!(
        !saved.to_string().contains("\"bdev_mirror_create\""),
        "an offline mirror saved: {saved}"
    );
    assert!(a.log().contains("mirror off: not saved"), "{}", a.log());
    a.shutdown(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
}

/// A mirror without a superblock saved while a leg is out (removed over RPC here; for the
/// RAID1, its leg then put to use in another mirror) is saved with that slot missing (`null`):
/// replayed, it comes back degraded over the legs that were in sync, each in its slot (the
/// preferred leg still the same bdev), the replay does not fail on a leg now claimed
/// elsewhere, and a leg added to the empty slot is rebuilt. Before, the removed leg was saved
/// as a member: taken as in sync (stale reads), or, claimed by the other mirror, failing the
/// whole config (spdk_tgt exited at start-up). RAID1 and RAID10 alike.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn save_config_saves_a_leg_out_of_sync_as_missing() {
    let env = require_spdk();
    let blocks = 16 * MIB / BS as u64;
    let a = start_target(&env, "save_config_out_a", None);
    for b in names("a", 3).iter().chain(&names("d", 1)).chain(&names("t", 4)) {
        // t2, the RAID10 leg taken out, is the smallest: it sets the RAID10's size.
        let n = if b == "t2" { blocks / 2 } else { blocks };
        rpc_ok(
            &a,
            "bdev_malloc_create",
            json!({"name": b, "num_blocks": n, "block_size": BS}),
        );
    }
    rpc_ok(
        &a,
        "bdev_mirror_create",
        json!({"name": "r1", "level": "raid1", "base_bdevs": ["a0", "a1", "a2"], "superblock": false,
               "read_policy": "preferred", "preferred_leg": 2}),
    );
    rpc_ok(&a, "bdev_mirror_remove_base_bdev", json!({"base_bdev": "a0"}));
    rpc_ok(
        &a,
        "bdev_mirror_create",
        json!({"name": "other", "level": "raid1", "base_bdevs": ["a0", "d0"], "superblock": false}),
    );
    rpc_ok(
        &a,
        "bdev_mirror_create",
        json!({"name": "r10", "level": "raid10", "layout": "f2", "base_bdevs": names("t", 4),
               "superblock": false}),
    );
    let r10_blocks = a.mirror_info("r10")["data_blocks"].clone();
    rpc_ok(&a, "bdev_mirror_remove_base_bdev", json!({"base_bdev": "t2"}));
    let saved = save_config(&a);
    let created: Vec<&Value> = saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["config"].as_array().into_iter().flatten())
        .filter(|c| c["method"] == json!("bdev_mirror_create"))
        .map(|c| &c["params"])
        .collect();
    let legs_of = |name: &str| {
        let c = created
            .iter()
            .find(|c| c["name"] == json!(name))
            .unwrap_or_else(|| panic!("{saved}"));
        c["base_bdevs"].clone()
    };
    assert_eq!(legs_of("r1"), json!([null, "a1", "a2"]), "{saved}");
    assert_eq!(legs_of("r10"), json!(["t0", "t1", null, "t3"]), "{saved}");
    let dir = test_dir("save_config_out");
    let saved_path = write_json(dir.path(), "saved.json", &saved);
    let st = a.shutdown(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "spdk_tgt with mirrors exited with {st}");
    drop(a);

    let b = start_target(&env, "save_config_out_b", Some(&saved_path));
    rpc_ok(&b, "bdev_wait_for_examine", Value::Null);
    for (name, out, bdevs) in [
        ("r1", 0, json!(["", "a1", "a2"])),
        ("r10", 2, json!(["t0", "t1", "", "t3"])),
    ] {
        let m = b.mirror_info(name);
        assert_eq!(m["state"], json!("degraded"), "{m}");
        let legs: Vec<Value> = m["legs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["bdev"].clone())
            .collect();
        assert_eq!(Value::Array(legs), bdevs, "{m}");
        assert_eq!(leg_state(&m, out), "removed", "{m}");
    }
    // Its size (and so its far copies' place) kept without its smallest leg.
    assert_eq!(b.mirror_info("r10")["data_blocks"], r10_blocks);
    let r1 = b.mirror_info("r1");
    assert_eq!(r1["read_policy"], json!("preferred"), "{r1}");
    assert_eq!(r1["preferred_leg"], json!(2), "still a2: {r1}");
    assert_eq!(b.mirror_info("other")["state"], json!("online"));
    // The empty slot takes a leg, rebuilt from the others.
    rpc_ok(
        &b,
        "bdev_mirror_add_base_bdev",
        json!({"name": "r10", "base_bdev": "t2"}),
    );
    let mut last = Value::Null;
    wait_until(Duration::from_secs(60), "r10's rebuild", || {
        last = b.mirror_info("r10");
        last["state"] == json!("online")
    })
    .unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(last["legs"][2]["bdev"], json!("t2"), "{last}");
    b.shutdown(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
}
