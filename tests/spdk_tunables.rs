//! Tunables in the superblock, across kill -9 and restart, on aio legs over files that outlive
//! the SPDK apps: the read policy (with its preferred leg), the rebuild cap, `pool_size` and
//! `max_parents` set at create and changed at runtime come back when the mirror assembles, and
//! reads keep going to the preferred leg. A leg whose record is damaged is passed over for the
//! other's; legs without a record (an older format) assemble with the defaults.
//!
//! The leg files are patched directly (the record at byte 3072 of block 0, and the superblock's
//! checksum after it) to play a damaged record and an older format.

mod support;

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use spdk_mirror::superblock::{crc32c, SUPERBLOCK_BYTES, TUNABLES_BYTES, TUNABLES_OFFSET};
use support::{
    aio_bdev_config, bdev_subsystem, bdevperf_server, config_entry, create_sparse_file, require_spdk, tail_lines,
    test_dir, wait_for_examine_config, BdevperfOpts, SpdkEnv, Target,
};

const MIB: u64 = 1024 * 1024;
const BS: u32 = 512;

use support::{lease_core, rpc_ok};

/// A bdevperf server (random 4 KiB reads at QD8 for a second per `perform_tests`) over aio
/// `aio0`, `aio1` on `files`, plus `extra` config entries (the mirror's create, if any).
fn server(env: &SpdkEnv, name: &str, mask: &str, files: &[PathBuf], extra: Vec<Value>) -> Target {
    let mut config = vec![
        aio_bdev_config("aio0", &files[0], BS),
        aio_bdev_config("aio1", &files[1], BS),
    ];
    config.extend(extra);
    config.push(wait_for_examine_config());
    bdevperf_server(
        env,
        BdevperfOpts {
            name,
            config: bdev_subsystem(config),
            queue_depth: 8,
            workload: "randread",
            time_s: 1,
            cores_mask: mask,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Waits (bounded) until mirror `mir` is registered again (not merely waiting for legs, which
/// `bdev_mirror_get_bdevs` may list as `configuring`), and returns its object.
fn wait_assembled(t: &Target, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(m) = support::registered_mirror(t, "mir")
            .filter(|m| ["online", "degraded"].contains(&m["state"].as_str().unwrap_or("")))
        {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the mirror did not assemble\nlog tail:\n{}",
            tail_lines(&t.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The tunables `bdev_mirror_get_bdevs` reports, in one value to compare.
fn tunables(m: &Value) -> Value {
    json!({
        "read_policy": m["read_policy"],
        "preferred_leg": m.get("preferred_leg").cloned().unwrap_or(Value::Null),
        "rebuild_max_mb_per_s": m["rebuild_max_mb_per_s"],
        "pool_size": m["pool_size"],
        "max_parents": m["max_parents"],
    })
}

fn expect(policy: &str, leg: Option<u32>, rate: u64, pool: u32, parents: u32) -> Value {
    json!({
        "read_policy": policy,
        "preferred_leg": leg,
        "rebuild_max_mb_per_s": rate,
        "pool_size": pool,
        "max_parents": parents,
    })
}

fn leg_reads(t: &Target) -> Vec<u64> {
    t.mirror_info("mir")["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["reads"].as_u64().unwrap_or(0))
        .collect()
}

/// Runs one read pass and returns the reads each leg served during it.
fn read_pass(t: &Target) -> Vec<u64> {
    let before = leg_reads(t);
    let r = t
        .perform_tests(Value::Null, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("perform_tests: {e}\n{}", tail_lines(&t.log(), 40)));
    assert_eq!(r["results"][0]["io_failed"], json!(0), "{r}");
    leg_reads(t).iter().zip(&before).map(|(a, b)| a - b).collect()
}

/// The tunables of a mirror created without options (a throwaway one over malloc bdevs, gone
/// again before this returns): the defaults, whatever this build's are.
fn default_tunables(t: &Target) -> Value {
    for b in ["p0", "p1"] {
        rpc_ok(
            t,
            "bdev_malloc_create",
            json!({"name": b, "num_blocks": 2048, "block_size": BS}),
        );
    }
    let probe = json!({"name": "probe", "level": "raid1", "base_bdevs": ["p0", "p1"], "superblock": false});
    rpc_ok(t, "bdev_mirror_create", probe);
    let d = tunables(&t.mirror_info("probe"));
    rpc_ok(t, "bdev_mirror_delete", json!({"name": "probe"}));
    for b in ["p0", "p1"] {
        rpc_ok(t, "bdev_malloc_delete", json!({"name": b}));
    }
    d
}

/// The 4096 superblock bytes at the start of a leg file.
fn superblock_of(path: &Path) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    let mut b = vec![0u8; SUPERBLOCK_BYTES];
    f.read_exact(&mut b).unwrap();
    b
}

/// Rewrites a leg's superblock with `edit` applied to its tunables record and the superblock's
/// own checksum recomputed: only the record is at fault.
fn patch_record(path: &Path, edit: impl FnOnce(&mut [u8])) {
    let mut b = superblock_of(path);
    edit(&mut b[TUNABLES_OFFSET..TUNABLES_OFFSET + TUNABLES_BYTES]);
    let crc = crc32c(&b[..SUPERBLOCK_BYTES - 4]);
    b[SUPERBLOCK_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(&b).unwrap();
    f.sync_all().unwrap();
}

fn record_of(path: &Path) -> Vec<u8> {
    superblock_of(path)[TUNABLES_OFFSET..TUNABLES_OFFSET + TUNABLES_BYTES].to_vec()
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn tunables_survive_kill9_and_reads_stay_on_the_preferred_leg() {
    let env = require_spdk();
    let core = lease_core();
    let mask = core.mask();
    let dir = test_dir("tunables");
    let files: Vec<PathBuf> = (0..2)
        .map(|i| {
            let f = dir.join(format!("leg{i}.img"));
            create_sparse_file(&f, 64 * MIB).unwrap();
            f
        })
        .collect();

    // 1. Created with every tunable set; the policy and the cap then change at runtime.
    let create = config_entry(
        "bdev_mirror_create",
        json!({"name": "mir", "level": "raid1", "base_bdevs": ["aio0", "aio1"], "bitmap_region_kb": 1024,
               "read_policy": "preferred", "preferred_leg": 1, "rebuild_max_mb_per_s": 7,
               "pool_size": 512, "max_parents": 64}),
    );
    let t = server(&env, "tunables_create", mask, &files, vec![create]);
    let m = t.mirror_info("mir");
    assert_eq!(tunables(&m), expect("preferred", Some(1), 7, 512, 64), "{m}");
    let events = m["events"].clone();
    for f in &files {
        assert!(record_of(f)[..8] == *b"SPDKMTUN", "the create wrote the record");
    }
    let set_policy = json!({"name": "mir", "read_policy": "round_robin"});
    assert_eq!(rpc_ok(&t, "bdev_mirror_set_read_policy", set_policy), json!(true));
    let set_rate = json!({"name": "mir", "rebuild_max_mb_per_s": 9});
    assert_eq!(rpc_ok(&t, "bdev_mirror_set_options", set_rate), json!(true));
    let m = t.mirror_info("mir");
    assert_eq!(tunables(&m), expect("round_robin", None, 9, 512, 64), "{m}");
    assert_eq!(m["events"], events, "a tunables change is no membership change: {m}");
    // The answers came once the records were on the legs: a crash now loses nothing.
    t.kill9();
    drop(t);

    // 2. Restarted: the runtime values are back; change them again, crash again.
    let t = server(&env, "tunables_restart1", mask, &files, vec![]);
    let m = wait_assembled(&t, "first restart");
    assert_eq!(tunables(&m), expect("round_robin", None, 9, 512, 64), "{m}");
    assert_eq!(m["state"], json!("online"), "{m}");
    assert!(
        t.log().contains("tunables restored from bdev"),
        "{}",
        tail_lines(&t.log(), 40)
    );
    let set_policy = json!({"name": "mir", "read_policy": "preferred", "preferred_leg": 1});
    assert_eq!(rpc_ok(&t, "bdev_mirror_set_read_policy", set_policy), json!(true));
    let set_rate = json!({"name": "mir", "rebuild_max_mb_per_s": 7});
    assert_eq!(rpc_ok(&t, "bdev_mirror_set_options", set_rate), json!(true));
    t.kill9();
    drop(t);

    // 3. Restarted: preferred leg 1, and the reads go there.
    let t = server(&env, "tunables_restart2", mask, &files, vec![]);
    let m = wait_assembled(&t, "second restart");
    assert_eq!(tunables(&m), expect("preferred", Some(1), 7, 512, 64), "{m}");
    let reads = read_pass(&t);
    let total: u64 = reads.iter().sum();
    assert!(
        total > 1000 && reads[1] * 100 >= total * 99,
        "preferred leg 1 should serve the reads after the restart: {reads:?}"
    );
    assert!(!t.log().contains("BUG"), "{}", tail_lines(&t.log(), 40));
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
    drop(t);

    // 4. aio1's record is damaged (a pool_size the RPC refuses, its own checksum fixed): aio0's
    //    record serves, and the log names the bdev and the field.
    patch_record(&files[1], |r| {
        r[40..44].copy_from_slice(&0u32.to_le_bytes());
        let crc = crc32c(&r[..TUNABLES_BYTES - 4]);
        r[TUNABLES_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
    });
    let t = server(&env, "tunables_damaged", mask, &files, vec![]);
    let m = wait_assembled(&t, "restart with a damaged record");
    assert_eq!(tunables(&m), expect("preferred", Some(1), 7, 512, 64), "{m}");
    let log = t.log();
    assert!(
        log.contains("bdev aio1: tunables record not used: tunables: pool_size is 0"),
        "{}",
        tail_lines(&log, 40)
    );
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
    drop(t);
    assert!(record_of(&files[1])[..8] == *b"SPDKMTUN", "the stop rewrote the record");

    // 5. Legs written before records existed (zeros there) assemble, with the defaults: those
    //    of a mirror created without options (`probe`, over malloc bdevs).
    for f in &files {
        patch_record(f, |r| r.fill(0));
    }
    let t = server(&env, "tunables_legacy", mask, &files, vec![]);
    let m = wait_assembled(&t, "restart without records");
    let defaults = default_tunables(&t);
    assert_eq!(defaults["read_policy"], json!("least_outstanding"), "{defaults}");
    assert_eq!(tunables(&m), defaults, "{m}");
    assert_ne!(tunables(&m), expect("least_outstanding", None, 0, 512, 64), "{m}");
    assert_eq!(m["state"], json!("online"), "{m}");
    assert!(t.log().contains("record no tunables"), "{}", tail_lines(&t.log(), 40));
    let reads = read_pass(&t);
    assert!(
        reads.iter().all(|&r| r > 0),
        "least_outstanding uses both legs: {reads:?}"
    );
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn mirrors_without_a_superblock_answer_at_once() {
    let env = require_spdk();
    let core = lease_core();
    let mask = core.mask();
    let dir = test_dir("tunables_nosb");
    let files: Vec<PathBuf> = (0..2)
        .map(|i| {
            let f = dir.join(format!("leg{i}.img"));
            create_sparse_file(&f, 16 * MIB).unwrap();
            f
        })
        .collect();
    let create = config_entry(
        "bdev_mirror_create",
        json!({"name": "mir", "level": "raid1", "base_bdevs": ["aio0", "aio1"], "superblock": false}),
    );
    let t = server(&env, "tunables_nosb", mask, &files, vec![create]);
    let set_policy = json!({"name": "mir", "read_policy": "preferred", "preferred_leg": 0});
    assert_eq!(rpc_ok(&t, "bdev_mirror_set_read_policy", set_policy), json!(true));
    assert_eq!(
        rpc_ok(
            &t,
            "bdev_mirror_set_options",
            json!({"name": "mir", "rebuild_max_mb_per_s": 3})
        ),
        json!(true)
    );
    let m = t.mirror_info("mir");
    let (pool, parents) = (
        m["pool_size"].as_u64().unwrap() as u32,
        m["max_parents"].as_u64().unwrap() as u32,
    );
    assert_eq!(tunables(&m), expect("preferred", Some(0), 3, pool, parents), "{m}");
    for f in &files {
        assert!(
            superblock_of(f).iter().all(|&b| b == 0),
            "no superblock, nothing written"
        );
    }
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
}

/// A record that asks for more child contexts than this process can allocate (written by one
/// with more memory: here 2^20 per leg, patched in, in a bdevperf of 1 GiB) costs the tunables,
/// never the mirror: it assembles with the default `pool_size` and `max_parents`, keeps the
/// rest of the record, and says so. It never assembled before ("cannot assemble: pool_size").
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn a_recorded_pool_too_big_for_this_process_assembles_with_the_defaults() {
    let env = require_spdk();
    let core = lease_core();
    let mask = core.mask();
    let dir = test_dir("tunables_too_big");
    let files = support::leg_files(&dir, 2, 64 * MIB);
    let create = config_entry(
        "bdev_mirror_create",
        json!({"name": "mir", "level": "raid1", "base_bdevs": ["aio0", "aio1"],
               "read_policy": "round_robin", "rebuild_max_mb_per_s": 5, "pool_size": 512, "max_parents": 64}),
    );
    let t = server(&env, "tunables_too_big", mask, &files, vec![create]);
    let defaults = default_tunables(&t);
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
    drop(t);
    for f in &files {
        patch_record(f, |r| {
            r[40..44].copy_from_slice(&(1u32 << 20).to_le_bytes());
            let crc = crc32c(&r[..TUNABLES_BYTES - 4]);
            r[TUNABLES_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
        });
    }
    let t = server(&env, "tunables_too_big_restart", mask, &files, vec![]);
    let m = wait_assembled(&t, "restart with a pool that does not fit");
    let want = expect(
        "round_robin",
        None,
        5,
        defaults["pool_size"].as_u64().unwrap() as u32,
        defaults["max_parents"].as_u64().unwrap() as u32,
    );
    assert_eq!(tunables(&m), want, "{m}");
    assert_eq!(m["state"], json!("online"), "{m}");
    assert!(
        t.log()
            .lines()
            .any(|l| l.contains("do not fit") && l.contains("1048576")),
        "no warning names the pool:\n{}",
        tail_lines(&t.log(), 30)
    );
    let reads = read_pass(&t);
    assert!(reads.iter().all(|&r| r > 0), "round_robin reads both legs: {reads:?}");
    t.shutdown(Duration::from_secs(20)).expect("clean shutdown");
}
