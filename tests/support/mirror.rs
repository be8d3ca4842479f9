//! Shorthands for tests of a mirror: targets, legs, aio bdevs, mirror configs, registration and
//! claims.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::config::config_entry;
use super::dirs::{create_sparse_file, TestDir};
use super::env::SpdkEnv;
use super::target::{rpc_ok, Target, TargetOpts};

/// The mirror registered as `name` (`bdev_mirror_get_bdevs` also lists mirrors still being
/// assembled, as `configuring`: not those), if there is one.
pub fn registered_mirror(t: &Target, name: &str) -> Option<Value> {
    let all = rpc_ok(t, "bdev_mirror_get_bdevs", json!({}));
    all.as_array()
        .expect("bdev_mirror_get_bdevs returns an array")
        .iter()
        .find(|m| m["name"] == json!(name) && m["state"] != json!("configuring"))
        .cloned()
}

/// Sparse leg files `leg0.img`.. of `bytes` each in `dir`.
pub fn leg_files(dir: &TestDir, n: usize, bytes: u64) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let f = dir.join(format!("leg{i}.img"));
            create_sparse_file(&f, bytes).unwrap();
            f
        })
        .collect()
}

/// An aio bdev `name` over `file`.
pub fn create_aio(t: &Target, name: &str, file: &Path, block_size: u32) {
    rpc_ok(
        t,
        "bdev_aio_create",
        json!({"name": name, "filename": file.to_string_lossy(), "block_size": block_size}),
    );
}

/// A `bdev_mirror_create` config entry without a superblock: tests that replay one JSON config
/// in several processes over the same legs describe the mirror by the config
/// (`tests/spdk_persist.rs` covers mirrors with a superblock).
pub fn mirror_config(name: &str, level: &str, layout: Option<&str>, chunk_kb: Option<u64>, legs: &[String]) -> Value {
    let mut p = json!({"name": name, "level": level, "base_bdevs": legs, "superblock": false});
    if let Some(l) = layout {
        p["layout"] = json!(l);
    }
    if let Some(c) = chunk_kb {
        p["chunk_kb"] = json!(c);
    }
    config_entry("bdev_mirror_create", p)
}

/// `prefix0 .. prefix{n-1}`.
pub fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// The `state` of the leg in `slot` of a `bdev_mirror_get_bdevs` object.
pub fn leg_state(info: &Value, slot: usize) -> String {
    info["legs"][slot]["state"].as_str().unwrap_or("<missing>").to_string()
}

/// name → claimed, for every bdev of the target.
pub fn claimed_map(t: &Target) -> BTreeMap<String, bool> {
    rpc_ok(t, "bdev_get_bdevs", Value::Null)
        .as_array()
        .expect("bdev_get_bdevs returns an array")
        .iter()
        .map(|b| {
            (
                b["name"].as_str().expect("bdev name").to_string(),
                b["claimed"].as_bool().expect("claimed is a bool"),
            )
        })
        .collect()
}

/// Whether `bdev` is claimed (by a mirror, a raid, ...).
pub fn is_claimed(t: &Target, bdev: &str) -> bool {
    let v = rpc_ok(t, "bdev_get_bdevs", json!({ "name": bdev }));
    v[0]["claimed"]
        .as_bool()
        .unwrap_or_else(|| panic!("bdev_get_bdevs {bdev}: no claimed field in {v}"))
}

/// Writes `config` as `<dir>/<file>` and returns the path.
pub fn write_json(dir: &Path, file: &str, config: &Value) -> PathBuf {
    let p = dir.join(file);
    fs::write(&p, serde_json::to_vec_pretty(config).unwrap()).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

/// Starts `spdk_tgt` (module preloaded, on a leased core), optionally loading a JSON config.
pub fn start_target(env: &SpdkEnv, name: &str, json_config: Option<&Path>) -> Target {
    let mut extra_args = Vec::new();
    if let Some(c) = json_config {
        extra_args.push("--json".to_string());
        extra_args.push(c.to_string_lossy().into_owned());
    }
    Target::start(
        env,
        TargetOpts {
            name,
            extra_args,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}
