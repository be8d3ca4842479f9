//! Builders of SPDK JSON configs: bdev entries and the `{"subsystems":[...]}` wrapper.

use std::path::Path;

use serde_json::{json, Value};

/// One entry of a subsystem's `config` list: `{"method": method, "params": params}`.
pub fn config_entry(method: &str, params: Value) -> Value {
    json!({"method": method, "params": params})
}

/// `bdev_malloc_create {name, num_blocks, block_size}` (a RAM disk, zero-filled).
pub fn malloc_bdev_config(name: &str, blocks: u64, block_size: u32) -> Value {
    config_entry(
        "bdev_malloc_create",
        json!({"name": name, "num_blocks": blocks, "block_size": block_size}),
    )
}

/// `bdev_null_create {name, num_blocks, block_size}` (discards writes, reads are not data-
/// preserving: never use it with `-w verify`).
pub fn null_bdev_config(name: &str, blocks: u64, block_size: u32) -> Value {
    config_entry(
        "bdev_null_create",
        json!({"name": name, "num_blocks": blocks, "block_size": block_size}),
    )
}

/// `bdev_aio_create {name, filename, block_size}` over a file (see [`create_sparse_file`]).
pub fn aio_bdev_config(name: &str, file: impl AsRef<Path>, block_size: u32) -> Value {
    config_entry(
        "bdev_aio_create",
        json!({
            "name": name,
            "filename": file.as_ref().to_string_lossy(),
            "block_size": block_size,
        }),
    )
}

/// SPDK's own raid1 (`bdev_raid_create {name, raid_level, base_bdevs}`), handy as a reference.
pub fn raid1_bdev_config(name: &str, base_bdevs: &[&str]) -> Value {
    config_entry(
        "bdev_raid_create",
        json!({"name": name, "raid_level": "raid1", "base_bdevs": base_bdevs}),
    )
}

/// `bdev_wait_for_examine`: put it last so that the app starts I/O only after examine is done.
pub fn wait_for_examine_config() -> Value {
    json!({"method": "bdev_wait_for_examine"})
}

/// Wraps bdev config entries into a full SPDK JSON config:
/// `{"subsystems":[{"subsystem":"bdev","config":[...]}]}`.
pub fn bdev_subsystem(configs: Vec<Value>) -> Value {
    json!({"subsystems": [{"subsystem": "bdev", "config": configs}]})
}
