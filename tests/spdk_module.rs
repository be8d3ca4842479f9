//! Integration tests of the mirror bdev module running inside SPDK's stock applications
//! (`spdk_tgt`, `bdevperf`, `spdk_dd`), with `libspdk_mirror.so` preloaded.
//!
//! Only meaningful when SPDK was found at build time (`cfg(spdk)`); otherwise every test here is
//! reported as ignored, with the reason, and never passes silently.
//!
//! Run with `cargo build --release && cargo test --release --test spdk_module`. Each test leases
//! a CPU core for the SPDK apps it starts (see [`lease_core`]), so two tests running at once do
//! not busy-poll on the same core.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use spdk_mirror::placement::{Geometry, GeometrySpec, Level, Raid10Layout};

use support::{
    aio_bdev_config, bdev_subsystem, bdevperf, bdevperf_server, config_entry, create_sparse_file, malloc_bdev_config,
    null_bdev_config, parse_bdevperf_output, raid1_bdev_config, require_spdk, spdk_dd, tail_lines, test_dir,
    wait_for_examine_config, wait_until, BdevperfOpts, RpcError, SpdkEnv, Target, TargetOpts,
};

const MIB: u64 = 1024 * 1024;
const BS: u32 = 512;

const EINVAL: i64 = -(libc::EINVAL as i64);
const ENODEV: i64 = -(libc::ENODEV as i64);
const EEXIST: i64 = -(libc::EEXIST as i64);
const EBUSY: i64 = -(libc::EBUSY as i64);
const ENOSPC: i64 = -(libc::ENOSPC as i64);

/// The five JSON-RPC methods the module registers.
const MIRROR_METHODS: [&str; 5] = [
    "bdev_mirror_create",
    "bdev_mirror_delete",
    "bdev_mirror_get_bdevs",
    "bdev_mirror_add_base_bdev",
    "bdev_mirror_remove_base_bdev",
];

// ------------------------------------------------------------------------------------------------
// Core leases: every SPDK app pins its reactor to the cores of its mask and busy-polls there.
// ------------------------------------------------------------------------------------------------

/// How many live leases each CPU has.
static CORE_USE: Mutex<BTreeMap<usize, u32>> = Mutex::new(BTreeMap::new());

/// A CPU this test's SPDK apps run on; released on drop.
struct CoreLease {
    cpu: usize,
    mask: String,
}

impl CoreLease {
    fn mask(&self) -> &str {
        &self.mask
    }
}

impl Drop for CoreLease {
    fn drop(&mut self) {
        let mut used = CORE_USE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = used.get_mut(&self.cpu) {
            *n = n.saturating_sub(1);
        }
    }
}

/// The CPUs this process may run on (`Cpus_allowed_list` of /proc/self/status), at most 64.
fn allowed_cpus() -> Vec<usize> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("0")
        .trim()
        .to_string();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let mut ends = part.trim().splitn(2, '-').map(|s| s.trim().parse::<usize>());
        match (ends.next(), ends.next()) {
            (Some(Ok(a)), None) => cpus.push(a),
            (Some(Ok(a)), Some(Ok(b))) => cpus.extend(a..=b),
            _ => {}
        }
    }
    cpus.retain(|&c| c < 64);
    if cpus.is_empty() {
        cpus.push(0);
    }
    cpus
}

/// Leases the least used allowed CPU (ties: the lowest). Never blocks: with more concurrent
/// tests than CPUs, leases share.
fn lease_core() -> CoreLease {
    let cpus = allowed_cpus();
    let mut used = CORE_USE.lock().unwrap_or_else(|p| p.into_inner());
    let cpu = *cpus
        .iter()
        .min_by_key(|c| (used.get(c).copied().unwrap_or(0), **c))
        .expect("at least one cpu");
    *used.entry(cpu).or_insert(0) += 1;
    CoreLease {
        cpu,
        mask: format!("{:#x}", 1u64 << cpu),
    }
}

// ------------------------------------------------------------------------------------------------
// Small helpers
// ------------------------------------------------------------------------------------------------

/// A `bdev_mirror_create` config entry.
/// These tests replay one JSON config in several processes over the same legs, so the config is
/// the mirror's description: no superblock (`tests/spdk_persist.rs` covers mirrors with one).
fn mirror_config(name: &str, level: &str, layout: Option<&str>, chunk_kb: Option<u64>, legs: &[String]) -> Value {
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
fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// The geometry the module should build for these parameters.
fn geometry(level: &str, layout: Option<&str>, legs: u32, chunk_kb: u64, leg_blocks: u64) -> Geometry {
    let level = Level::parse(level).expect("test uses a valid level");
    Geometry::new(&GeometrySpec {
        level,
        layout: layout.map(|l| Raid10Layout::parse(l).expect("test uses a valid layout")),
        legs,
        chunk_bytes: Some(chunk_kb * 1024),
        block_size: BS,
        leg_blocks,
    })
    .expect("test uses a valid geometry")
}

/// `method(params)` must succeed; the panic message carries the target's log tail.
fn rpc_ok(t: &Target, method: &str, params: Value) -> Value {
    match t.rpc(method, params.clone()) {
        Ok(v) => v,
        Err(e) => panic!(
            "{method} {params} failed: {e}\n{} log tail:\n{}",
            t.log_path().display(),
            tail_lines(&t.log(), 30)
        ),
    }
}

/// `bdev_mirror_get_bdevs {name}` → that mirror's object.
fn mirror_info(t: &Target, name: &str) -> Value {
    t.mirror_info(name)
}

/// The `state` of the leg in `slot`.
fn leg_state(info: &Value, slot: usize) -> String {
    info["legs"][slot]["state"].as_str().unwrap_or("<missing>").to_string()
}

/// name → claimed, for every bdev of the target.
fn claimed_map(t: &Target) -> BTreeMap<String, bool> {
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

fn is_claimed(t: &Target, bdev: &str) -> bool {
    let v = rpc_ok(t, "bdev_get_bdevs", json!({ "name": bdev }));
    v[0]["claimed"]
        .as_bool()
        .unwrap_or_else(|| panic!("bdev_get_bdevs {bdev}: no claimed field in {v}"))
}

/// Writes `config` as `<dir>/<file>` and returns the path.
fn write_json(dir: &Path, file: &str, config: &Value) -> PathBuf {
    let p = dir.join(file);
    fs::write(&p, serde_json::to_vec_pretty(config).unwrap()).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

/// Starts `spdk_tgt` (module preloaded) on `core`, optionally loading a JSON config.
fn start_target(env: &SpdkEnv, name: &str, core: &CoreLease, json_config: Option<&Path>) -> Target {
    let mut extra_args = Vec::new();
    if let Some(c) = json_config {
        extra_args.push("--json".to_string());
        extra_args.push(c.to_string_lossy().into_owned());
    }
    Target::start(
        env,
        TargetOpts {
            name,
            cores_mask: core.mask(),
            extra_args,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

// ------------------------------------------------------------------------------------------------
// Block stamps: every 512-byte block of test data says which mirror block it belongs to.
// ------------------------------------------------------------------------------------------------

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The content of mirror block `lba` in a run with `seed`: the lba, the seed, then pseudo-random
/// bytes derived from both. Never all zeros.
fn stamp(lba: u64, seed: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(BS as usize);
    b.extend_from_slice(&lba.to_le_bytes());
    b.extend_from_slice(&seed.to_le_bytes());
    let mut x = lba.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ seed;
    while b.len() < BS as usize {
        x = splitmix(x);
        b.extend_from_slice(&x.to_le_bytes());
    }
    b
}

/// The stamps of mirror blocks `range`, back to back.
fn stamps(range: Range<u64>, seed: u64) -> Vec<u8> {
    range.flat_map(|lba| stamp(lba, seed)).collect()
}

/// What a block holds, for error messages.
fn describe_block(block: &[u8], seed: u64) -> String {
    if block.iter().all(|&b| b == 0) {
        "zeros".to_string()
    } else if block.len() >= 16 && block[8..16] == seed.to_le_bytes() {
        let lba = u64::from_le_bytes(block[..8].try_into().unwrap());
        if stamp(lba, seed) == block {
            format!("the stamp of mirror block {lba}")
        } else {
            format!("a damaged stamp of mirror block {lba}")
        }
    } else {
        "foreign data".to_string()
    }
}

/// Checks leg images against the placement: for every mirror block in `written`, each copy that
/// `geo.map` gives holds that block's stamp at `copy.lba` on leg `copy.leg`; every other block of
/// every leg is still zero. Returns the problems found (at most 20 described, plus a count).
fn check_placement(geo: &Geometry, legs: &[Vec<u8>], written: &[Range<u64>], seed: u64) -> Vec<String> {
    let bs = geo.block_size() as usize;
    const NONE: u64 = u64::MAX;
    let mut problems = Vec::new();
    let mut expected: Vec<Vec<u64>> = legs.iter().map(|l| vec![NONE; l.len() / bs]).collect();
    for r in written {
        for lba in r.clone() {
            let copies = match geo.map(lba) {
                Ok(c) => c,
                Err(e) => {
                    problems.push(format!("placement cannot map mirror block {lba}: {e}"));
                    continue;
                }
            };
            for c in copies.as_slice() {
                let leg = c.leg as usize;
                match expected.get_mut(leg).and_then(|l| l.get_mut(c.lba as usize)) {
                    None => problems.push(format!(
                        "copy of mirror block {lba} at leg {leg} block {} is outside the leg",
                        c.lba
                    )),
                    Some(slot) if *slot != NONE => problems.push(format!(
                        "leg {leg} block {} would hold both mirror block {} and {lba}",
                        c.lba, *slot
                    )),
                    Some(slot) => *slot = lba,
                }
            }
        }
    }
    let mut bad = 0usize;
    for (leg, image) in legs.iter().enumerate() {
        for (blk, want) in expected[leg].iter().enumerate() {
            let got = &image[blk * bs..(blk + 1) * bs];
            let ok = if *want == NONE {
                got.iter().all(|&b| b == 0)
            } else {
                got == stamp(*want, seed).as_slice()
            };
            if !ok {
                bad += 1;
                if bad <= 20 {
                    let want_s = if *want == NONE {
                        "zeros (no mirror block maps here)".to_string()
                    } else {
                        format!("the stamp of mirror block {want}")
                    };
                    problems.push(format!(
                        "leg {leg} block {blk}: expected {want_s}, found {}",
                        describe_block(got, seed)
                    ));
                }
            }
        }
    }
    if bad > 20 {
        problems.push(format!("... {bad} wrong leg blocks in all"));
    }
    problems
}

fn read_file(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Runs spdk_dd (module preloaded) on `core` with `config`; panics with its output on failure.
fn run_dd(env: &SpdkEnv, core: &CoreLease, config: &Value, args: &[&str]) -> String {
    // spdk_dd's helper passes `-m 0x1`; a later `-m` wins.
    let mut all: Vec<&str> = vec!["-m", core.mask()];
    all.extend_from_slice(args);
    let started = Instant::now();
    let out = spdk_dd(env, config.clone(), &all, true, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("spdk_dd {args:?}: {e}"));
    eprintln!("spdk_dd {args:?}: {:?}", started.elapsed());
    out
}

// ------------------------------------------------------------------------------------------------
// 1. verify on every level
// ------------------------------------------------------------------------------------------------

/// One bdevperf run; asserts a clean run with one job per mirror in `mirrors`, each with IOPS > 0.
fn bdevperf_clean(env: &SpdkEnv, core: &CoreLease, name: &str, config: Value, workload: &str, mirrors: &[&str]) {
    let res = bdevperf(
        env,
        BdevperfOpts {
            name,
            config,
            workload,
            time_s: 2,
            cores_mask: core.mask(),
            mem_mb: 2048,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    if let Err(e) = res.ok() {
        panic!("{name}: {e}");
    }
    assert_eq!(res.miscompares, 0, "{name}: miscompares");
    assert!(
        res.iops() > 0.0,
        "{name}: total IOPS is 0\n{}",
        tail_lines(&res.output, 30)
    );
    let jobs: BTreeSet<&str> = res.jobs.iter().map(|j| j.name.as_str()).collect();
    let want: BTreeSet<&str> = mirrors.iter().copied().collect();
    assert_eq!(
        jobs,
        want,
        "{name}: bdevperf ran jobs on {jobs:?}, expected exactly the mirrors {want:?}\n{}",
        tail_lines(&res.output, 30)
    );
    for m in mirrors {
        let job = res.job(m).unwrap();
        assert_eq!(job.workload.as_deref(), Some(workload), "{name}: job {m} workload");
        assert!(
            job.stats.iops > 0.0,
            "{name}: mirror {m} did no I/O: {job:?}\n{}",
            tail_lines(&res.output, 30)
        );
        assert!(!job.ended_with_error, "{name}: job {m} ended with error");
    }
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn verify_on_every_level() {
    let env = require_spdk();
    let core = lease_core();

    // Malloc legs: every level and layout, one bdevperf job per mirror.
    let leg_blocks = 32 * MIB / BS as u64;
    struct Case {
        name: &'static str,
        level: &'static str,
        layout: Option<&'static str>,
        chunk_kb: Option<u64>,
        legs: usize,
    }
    let case = |name, level, layout, chunk_kb, legs| Case {
        name,
        level,
        layout,
        chunk_kb,
        legs,
    };
    let cases = [
        case("r1x2", "raid1", None, None, 2),
        case("r1x3", "raid1", None, None, 3),
        case("r10n2", "raid10", Some("n2"), Some(64), 4),
        case("r10f2", "raid10", Some("f2"), Some(16), 4),
        case("r10o2", "raid10", Some("o2"), Some(64), 4),
    ];
    let mut cfg = Vec::new();
    for c in &cases {
        let legs = names(&format!("{}_m", c.name), c.legs);
        cfg.extend(legs.iter().map(|l| malloc_bdev_config(l, leg_blocks, BS)));
        cfg.push(mirror_config(c.name, c.level, c.layout, c.chunk_kb, &legs));
    }
    cfg.push(wait_for_examine_config());
    let mirrors: Vec<&str> = cases.iter().map(|c| c.name).collect();
    bdevperf_clean(&env, &core, "verify_malloc", bdev_subsystem(cfg), "verify", &mirrors);

    // aio legs over 64 MiB files: raid1 and raid10 n2.
    let dir = test_dir("verify_aio");
    let mut cfg = Vec::new();
    let mut aio_legs = |prefix: &str, n: usize| -> Vec<String> {
        let legs = names(prefix, n);
        for l in &legs {
            let f = dir.join(format!("{l}.img"));
            create_sparse_file(&f, 64 * MIB).unwrap();
            cfg.push(aio_bdev_config(l, &f, BS));
        }
        legs
    };
    let r1 = aio_legs("aio_r1_", 2);
    let n2 = aio_legs("aio_n2_", 4);
    cfg.push(mirror_config("aio_r1", "raid1", None, None, &r1));
    cfg.push(mirror_config("aio_n2", "raid10", Some("n2"), Some(64), &n2));
    cfg.push(wait_for_examine_config());
    bdevperf_clean(
        &env,
        &core,
        "verify_aio",
        bdev_subsystem(cfg),
        "verify",
        &["aio_r1", "aio_n2"],
    );

    // null legs cannot keep data: randwrite only.
    let null_blocks = 64 * MIB / BS as u64;
    let mut cfg = Vec::new();
    let r1 = names("null_r1_", 2);
    let f2 = names("null_f2_", 4);
    for l in r1.iter().chain(&f2) {
        cfg.push(null_bdev_config(l, null_blocks, BS));
    }
    cfg.push(mirror_config("null_r1", "raid1", None, None, &r1));
    cfg.push(mirror_config("null_f2", "raid10", Some("f2"), Some(64), &f2));
    cfg.push(wait_for_examine_config());
    bdevperf_clean(
        &env,
        &core,
        "randwrite_null",
        bdev_subsystem(cfg),
        "randwrite",
        &["null_r1", "null_f2"],
    );
}

// ------------------------------------------------------------------------------------------------
// 2. data lands where the placement says
// ------------------------------------------------------------------------------------------------

/// One geometry for [`placement_case`].
struct PlacementCase {
    name: &'static str,
    level: &'static str,
    layout: Option<&'static str>,
    /// RAID10 only.
    chunk_kb: u64,
    /// Size of each leg's backing file.
    leg_bytes: Vec<u64>,
    seed: u64,
}

/// Creates files of `leg_bytes`, asks a spdk_tgt for the mirror's size, writes stamped blocks at
/// the start and at the very end of the mirror with spdk_dd, then checks the leg files block by
/// block against `Geometry::map`, and reads the whole mirror back through the module.
fn placement_case(env: &SpdkEnv, core: &CoreLease, pc: &PlacementCase) {
    let PlacementCase {
        name: case,
        level,
        layout,
        chunk_kb,
        ref leg_bytes,
        seed,
    } = *pc;
    let dir = test_dir(case);
    let legs = names(&format!("{case}_leg"), leg_bytes.len());
    let files: Vec<PathBuf> = legs.iter().map(|l| dir.join(format!("{l}.img"))).collect();
    for (f, &bytes) in files.iter().zip(leg_bytes) {
        assert_eq!(bytes % BS as u64, 0, "test bug: leg size not a multiple of the block");
        create_sparse_file(f, bytes).unwrap();
    }
    let mirror = format!("{case}_m");
    let mut cfg: Vec<Value> = legs
        .iter()
        .zip(&files)
        .map(|(l, f)| aio_bdev_config(l, f, BS))
        .collect();
    let chunk = (level == "raid10").then_some(chunk_kb);
    cfg.push(mirror_config(&mirror, level, layout, chunk, &legs));
    cfg.push(wait_for_examine_config());
    let config = bdev_subsystem(cfg);

    let min_leg_blocks = leg_bytes.iter().min().unwrap() / BS as u64;
    let geo = geometry(level, layout, legs.len() as u32, chunk_kb, min_leg_blocks);
    let d = geo.data_blocks();

    // The module's idea of the size, from a target that loads the same config.
    {
        let cfg_path = write_json(dir.path(), "config.json", &config);
        let t = start_target(env, &format!("{case}_size"), core, Some(&cfg_path));
        let info = mirror_info(&t, &mirror);
        assert_eq!(info["data_blocks"], json!(d), "{case}: data_blocks vs Geometry: {info}");
        assert_eq!(info["block_size"], json!(BS), "{case}: {info}");
        assert_eq!(info["num_legs"], json!(legs.len()), "{case}: {info}");
        assert_eq!(info["state"], json!("online"), "{case}: {info}");
        let b = rpc_ok(&t, "bdev_get_bdevs", json!({ "name": mirror }));
        assert_eq!(b[0]["num_blocks"], json!(d), "{case}: bdev_get_bdevs num_blocks: {b}");
        t.shutdown(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{case}: {e}"));
    }

    // Head: 4 MiB at block 0, in 64 KiB I/Os (crossing chunk boundaries).
    let head = 0..(4 * MIB / BS as u64);
    // Tail: the last 1 MiB of the mirror, in 4 KiB I/Os.
    assert_eq!(d % 8, 0, "test bug: mirror size {d} is not a multiple of 4 KiB");
    let tail = (d - 2048)..d;
    assert!(head.end <= tail.start, "test bug: head and tail overlap");
    let head_file = dir.join("head.bin");
    let tail_file = dir.join("tail.bin");
    fs::write(&head_file, stamps(head.clone(), seed)).unwrap();
    fs::write(&tail_file, stamps(tail.clone(), seed)).unwrap();
    let seek = (tail.start / 8).to_string();
    run_dd(
        env,
        core,
        &config,
        &["--if", head_file.to_str().unwrap(), "--ob", &mirror, "--bs", "65536"],
    );
    run_dd(
        env,
        core,
        &config,
        &[
            "--if",
            tail_file.to_str().unwrap(),
            "--ob",
            &mirror,
            "--bs",
            "4096",
            "--seek",
            &seek,
        ],
    );

    // The leg files, block by block.
    let images: Vec<Vec<u8>> = files.iter().map(|f| read_file(f)).collect();
    let problems = check_placement(&geo, &images, &[head.clone(), tail.clone()], seed);
    assert!(
        problems.is_empty(),
        "{case}: leg contents disagree with the placement ({level} {layout:?} chunk {chunk_kb} KiB, \
         {} legs, {d} data blocks):\n{}",
        legs.len(),
        problems.join("\n")
    );

    // And back through the mirror, whole: the written ranges, zeros everywhere else.
    let back = dir.join("mirror.back");
    run_dd(
        env,
        core,
        &config,
        &[
            "--ib",
            &mirror,
            "--of",
            back.to_str().unwrap(),
            "--bs",
            "4096",
            "--qd",
            "32",
        ],
    );
    let back = read_file(&back);
    assert_eq!(back.len() as u64, d * BS as u64, "{case}: read back size");
    let bs = BS as usize;
    let mut wrong = Vec::new();
    for lba in 0..d {
        let got = &back[lba as usize * bs..(lba as usize + 1) * bs];
        let written = head.contains(&lba) || tail.contains(&lba);
        let ok = if written {
            got == stamp(lba, seed).as_slice()
        } else {
            got.iter().all(|&b| b == 0)
        };
        if !ok {
            wrong.push(format!(
                "mirror block {lba}: expected {}, read {}",
                if written { "its stamp" } else { "zeros" },
                describe_block(got, seed)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{case}: {} mirror blocks read back wrong, first: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn data_lands_where_placement_says() {
    let env = require_spdk();
    let core = lease_core();
    let k = 1024u64;
    // Leg sizes are deliberately uneven and not chunk multiples: the smallest leg decides, and a
    // partial trailing chunk is never used (md's rounding).
    let base = 16 * MIB + 5 * 16 * k + 3 * 512;
    placement_case(
        &env,
        &core,
        &PlacementCase {
            name: "f2x4",
            level: "raid10",
            layout: Some("f2"),
            chunk_kb: 16,
            leg_bytes: vec![base + 64 * k, base, base + MIB, base + 512],
            seed: 0x5eed_f2f2,
        },
    );
    let base = 16 * MIB + 12 * k;
    placement_case(
        &env,
        &core,
        &PlacementCase {
            name: "r1x3",
            level: "raid1",
            layout: None,
            chunk_kb: 64,
            leg_bytes: vec![base, base + 4 * k, base + 4 * MIB],
            seed: 0x5eed_0001,
        },
    );
    let base = 16 * MIB + 7 * 32 * k + 1024;
    placement_case(
        &env,
        &core,
        &PlacementCase {
            name: "o2x3",
            level: "raid10",
            layout: Some("o2"),
            chunk_kb: 32,
            leg_bytes: vec![base + 32 * k, base + 512, base],
            seed: 0x5eed_0202,
        },
    );
}

// ------------------------------------------------------------------------------------------------
// 3. bad RPC inputs change nothing
// ------------------------------------------------------------------------------------------------

/// What a bad call must answer.
struct Expect {
    /// Exact code, when the API documents one; otherwise any negative code.
    code: Option<i64>,
    /// Accepted message prefixes (`"<field>:"`).
    prefixes: &'static [&'static str],
}

fn exp(code: i64, prefix: &'static [&'static str]) -> Expect {
    Expect {
        code: Some(code),
        prefixes: prefix,
    }
}

fn any_code(prefix: &'static [&'static str]) -> Expect {
    Expect {
        code: None,
        prefixes: prefix,
    }
}

/// Everything a bad call must leave unchanged.
#[derive(PartialEq)]
struct Snapshot {
    mirrors: String,
    claimed: BTreeMap<String, bool>,
}

fn snapshot(t: &Target) -> Snapshot {
    Snapshot {
        mirrors: serde_json::to_string(&rpc_ok(t, "bdev_mirror_get_bdevs", Value::Null)).unwrap(),
        claimed: claimed_map(t),
    }
}

/// Describes how `now` differs from `before`.
fn snapshot_diff(before: &Snapshot, now: &Snapshot) -> String {
    let mut out = Vec::new();
    if before.mirrors != now.mirrors {
        out.push(format!(
            "bdev_mirror_get_bdevs changed:\n  before: {}\n  after:  {}",
            before.mirrors, now.mirrors
        ));
    }
    for (name, was) in &before.claimed {
        match now.claimed.get(name) {
            None => out.push(format!("bdev {name} disappeared")),
            Some(is) if is != was => out.push(format!("bdev {name}: claimed {was} -> {is}")),
            _ => {}
        }
    }
    for name in now.claimed.keys().filter(|n| !before.claimed.contains_key(*n)) {
        out.push(format!("bdev {name} appeared"));
    }
    out.join("\n")
}

/// Sends `bytes` on a fresh connection, closes our write side, and reads until the target
/// closes (bounded). `Some(response)` if one came back.
fn send_and_close(socket: &Path, bytes: &[u8]) -> Result<Option<Value>, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).map_err(|e| format!("write: {e}"))?;
    s.shutdown(std::net::Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) if buf.is_empty() => return Err(format!("no answer and no close within 10 s: {e}")),
        Err(_) => {}
    }
    if buf.is_empty() {
        Ok(None)
    } else {
        serde_json::from_slice(&buf)
            .map(Some)
            .map_err(|e| format!("unparsable answer ({e}): {}", String::from_utf8_lossy(&buf)))
    }
}

/// Checks one bad answer; returns a problem description or None.
fn judge(what: &str, result: Result<Value, RpcError>, want: &Expect) -> Option<String> {
    match result {
        Ok(v) => Some(format!("{what}: accepted (returned {v}), expected an error")),
        Err(e) if e.is_transport() => Some(format!("{what}: no JSON-RPC answer: {e}")),
        Err(e) => {
            let mut p = Vec::new();
            if e.code >= 0 {
                p.push(format!("code {} is not negative", e.code));
            }
            if let Some(c) = want.code {
                if e.code != c {
                    p.push(format!("code {} (expected {c})", e.code));
                }
            }
            if !want.prefixes.iter().any(|pre| e.message.starts_with(pre)) {
                p.push(format!("message does not start with {:?}", want.prefixes));
            }
            (!p.is_empty()).then(|| format!("{what}: {} — got {}: {:?}", p.join(", "), e.code, e.message))
        }
    }
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn bad_rpc_inputs_change_nothing() {
    let env = require_spdk();
    let core = lease_core();
    let t = start_target(&env, "bad_rpc", &core, None);

    let blocks = 16 * MIB / BS as u64;
    for b in ["g0", "g1", "d0", "d1", "d2", "f0", "f1", "f2", "f3", "c0", "c1"] {
        rpc_ok(
            &t,
            "bdev_malloc_create",
            json!({"name": b, "num_blocks": blocks, "block_size": BS}),
        );
    }
    for b in ["big0", "big1"] {
        rpc_ok(
            &t,
            "bdev_malloc_create",
            json!({"name": b, "num_blocks": 16 * MIB / 4096, "block_size": 4096}),
        );
    }
    rpc_ok(
        &t,
        "bdev_malloc_create",
        json!({"name": "small", "num_blocks": blocks / 2, "block_size": BS}),
    );
    // SPDK's own raid1 claims c0 and c1.
    let raid = raid1_bdev_config("sr", &["c0", "c1"]);
    rpc_ok(&t, "bdev_raid_create", raid["params"].clone());
    // A good mirror, and a degraded one with a free slot.
    assert_eq!(
        rpc_ok(
            &t,
            "bdev_mirror_create",
            json!({"name": "good", "level": "raid1", "base_bdevs": ["g0", "g1"]})
        ),
        json!("good")
    );
    assert_eq!(
        rpc_ok(
            &t,
            "bdev_mirror_create",
            json!({"name": "deg", "level": "raid1", "base_bdevs": ["d0", "d1", "d2"]})
        ),
        json!("deg")
    );
    assert_eq!(
        rpc_ok(&t, "bdev_mirror_remove_base_bdev", json!({"base_bdev": "d2"})),
        json!(true)
    );
    rpc_ok(&t, "bdev_wait_for_examine", Value::Null);
    let deg = mirror_info(&t, "deg");
    assert_eq!(deg["state"], json!("degraded"), "{deg}");
    assert_eq!(leg_state(&deg, 2), "removed", "{deg}");
    assert!(!is_claimed(&t, "d2"), "a removed leg must be released");

    let before = snapshot(&t);
    for (b, want) in [
        ("g0", true),
        ("d0", true),
        ("d2", false),
        ("f0", false),
        ("c0", true),
        ("big0", false),
    ] {
        assert_eq!(
            before.claimed.get(b),
            Some(&want),
            "claimed state of {b} before the bad calls"
        );
    }
    let good_uuid = mirror_info(&t, "good")["uuid"].as_str().unwrap().to_string();
    let long_name = "n".repeat(300);

    let create = |over: Value| -> Value {
        let mut p = json!({"name": "x", "level": "raid1", "base_bdevs": ["f0", "f1"]});
        for (k, v) in over.as_object().unwrap() {
            if v == &json!("<absent>") {
                p.as_object_mut().unwrap().remove(k);
            } else {
                p[k] = v.clone();
            }
        }
        p
    };
    let r10 = |over: Value| -> Value {
        let mut p = create(json!({"level": "raid10"}));
        for (k, v) in over.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };

    let cases: Vec<(&str, Value, Expect)> = vec![
        // name
        (
            "bdev_mirror_create",
            create(json!({"name": "good"})),
            exp(EEXIST, &["name:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"name": "f2"})),
            exp(EEXIST, &["name:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"name": "<absent>"})),
            exp(EINVAL, &["name:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"name": null})),
            exp(EINVAL, &["name:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"name": ""})),
            exp(EINVAL, &["name:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"name": 5})),
            exp(EINVAL, &["name:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"name": ["x"]})),
            exp(EINVAL, &["name:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"name": long_name})),
            exp(EINVAL, &["name:"]),
        ),
        // level
        (
            "bdev_mirror_create",
            create(json!({"level": "<absent>"})),
            exp(EINVAL, &["level:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"level": "raid5"})),
            exp(EINVAL, &["level:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"level": ""})),
            exp(EINVAL, &["level:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"level": 10})),
            exp(EINVAL, &["level:"]),
        ),
        // base_bdevs
        (
            "bdev_mirror_create",
            create(json!({"base_bdevs": "<absent>"})),
            exp(EINVAL, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"base_bdevs": ["f0", "nope"]})),
            exp(ENODEV, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"base_bdevs": ["nope", "f0"]})),
            exp(ENODEV, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"base_bdevs": ["f0", "f0"]})),
            exp(EINVAL, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"base_bdevs": ["f0", "f1", "f0"]})),
            exp(EINVAL, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"base_bdevs": ["f0", "c0"]})),
            exp(EBUSY, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"base_bdevs": ["c1", "f0"]})),
            exp(EBUSY, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"base_bdevs": ["f0", "f1", "g1"]})),
            exp(EBUSY, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"base_bdevs": ["f0", "d0"]})),
            exp(EBUSY, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"base_bdevs": ["f0", "big0"]})),
            exp(EINVAL, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"base_bdevs": ["big0", "f0"]})),
            exp(EINVAL, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"base_bdevs": ["f0"]})),
            exp(EINVAL, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"base_bdevs": []})),
            exp(EINVAL, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"base_bdevs": "f0"})),
            exp(EINVAL, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"base_bdevs": ["f0", 1]})),
            exp(EINVAL, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"base_bdevs": ["f0", ""]})),
            exp(EINVAL, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"base_bdevs": {"f0": 1}})),
            exp(EINVAL, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            r10(json!({"layout": "n3"})),
            exp(EINVAL, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            r10(json!({"layout": "f3", "base_bdevs": ["f0", "f1"]})),
            exp(EINVAL, &["base_bdevs:"]),
        ),
        (
            "bdev_mirror_create",
            r10(json!({"base_bdevs": ["f0"]})),
            exp(EINVAL, &["base_bdevs:"]),
        ),
        // layout
        (
            "bdev_mirror_create",
            create(json!({"layout": "n2"})),
            exp(EINVAL, &["layout:"]),
        ),
        (
            "bdev_mirror_create",
            r10(json!({"layout": "zz"})),
            exp(EINVAL, &["layout:"]),
        ),
        (
            "bdev_mirror_create",
            r10(json!({"layout": "n1"})),
            exp(EINVAL, &["layout:"]),
        ),
        (
            "bdev_mirror_create",
            r10(json!({"layout": "n2f2"})),
            exp(EINVAL, &["layout:"]),
        ),
        (
            "bdev_mirror_create",
            r10(json!({"layout": ""})),
            exp(EINVAL, &["layout:"]),
        ),
        (
            "bdev_mirror_create",
            r10(json!({"layout": 2})),
            exp(EINVAL, &["layout:"]),
        ),
        // chunk_kb
        (
            "bdev_mirror_create",
            create(json!({"chunk_kb": 64})),
            exp(EINVAL, &["chunk_kb:"]),
        ),
        (
            "bdev_mirror_create",
            r10(json!({"chunk_kb": 3})),
            exp(EINVAL, &["chunk_kb:"]),
        ),
        (
            "bdev_mirror_create",
            r10(json!({"chunk_kb": 48})),
            exp(EINVAL, &["chunk_kb:"]),
        ),
        (
            "bdev_mirror_create",
            r10(json!({"chunk_kb": 0})),
            exp(EINVAL, &["chunk_kb:"]),
        ),
        (
            "bdev_mirror_create",
            r10(json!({"chunk_kb": -64})),
            exp(EINVAL, &["chunk_kb:"]),
        ),
        (
            "bdev_mirror_create",
            r10(json!({"chunk_kb": 1.5})),
            exp(EINVAL, &["chunk_kb:"]),
        ),
        (
            "bdev_mirror_create",
            r10(json!({"chunk_kb": "64"})),
            exp(EINVAL, &["chunk_kb:"]),
        ),
        (
            "bdev_mirror_create",
            r10(json!({"chunk_kb": 1u64 << 21})),
            exp(EINVAL, &["chunk_kb:"]),
        ),
        (
            "bdev_mirror_create",
            r10(json!({"chunk_kb": u64::MAX})),
            exp(EINVAL, &["chunk_kb:"]),
        ),
        // A 1 KiB chunk on 4 KiB blocks.
        (
            "bdev_mirror_create",
            r10(json!({"chunk_kb": 1, "base_bdevs": ["big0", "big1"]})),
            exp(EINVAL, &["chunk_kb:"]),
        ),
        // A 1 GiB chunk on 16 MiB legs: the chunk or the legs are at fault.
        (
            "bdev_mirror_create",
            r10(json!({"chunk_kb": 1u64 << 20})),
            exp(EINVAL, &["chunk_kb:", "base_bdevs:"]),
        ),
        // uuid
        (
            "bdev_mirror_create",
            create(json!({"uuid": "nope"})),
            exp(EINVAL, &["uuid:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"uuid": ""})),
            exp(EINVAL, &["uuid:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"uuid": 7})),
            exp(EINVAL, &["uuid:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"uuid": "0000-1111"})),
            exp(EINVAL, &["uuid:"]),
        ),
        // The uuid of an existing bdev: two bdevs cannot share it.
        (
            "bdev_mirror_create",
            create(json!({"uuid": good_uuid})),
            any_code(&["uuid:"]),
        ),
        // pool_size / max_parents
        (
            "bdev_mirror_create",
            create(json!({"pool_size": 0})),
            exp(EINVAL, &["pool_size:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"pool_size": -1})),
            exp(EINVAL, &["pool_size:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"pool_size": 2.5})),
            exp(EINVAL, &["pool_size:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"pool_size": "4096"})),
            exp(EINVAL, &["pool_size:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"pool_size": 1u64 << 40})),
            exp(EINVAL, &["pool_size:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"pool_size": u64::MAX})),
            exp(EINVAL, &["pool_size:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"pool_size": 1e30})),
            exp(EINVAL, &["pool_size:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"max_parents": 0})),
            exp(EINVAL, &["max_parents:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"max_parents": 1u64 << 17})),
            exp(EINVAL, &["max_parents:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"max_parents": true})),
            exp(EINVAL, &["max_parents:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"max_parents": i64::MIN})),
            exp(EINVAL, &["max_parents:"]),
        ),
        // unknown parameters
        (
            "bdev_mirror_create",
            create(json!({"bogus": 1})),
            exp(EINVAL, &["bogus:"]),
        ),
        (
            "bdev_mirror_create",
            create(json!({"Name": "y"})),
            exp(EINVAL, &["Name:"]),
        ),
        // params that are not an object
        (
            "bdev_mirror_create",
            json!(["x", "raid1", ["f0", "f1"]]),
            exp(EINVAL, &["params:"]),
        ),
        ("bdev_mirror_create", Value::Null, exp(EINVAL, &["name:"])),
        // delete
        ("bdev_mirror_delete", json!({"name": "nope"}), exp(ENODEV, &["name:"])),
        ("bdev_mirror_delete", json!({"name": "f0"}), exp(ENODEV, &["name:"])),
        ("bdev_mirror_delete", json!({"name": "sr"}), exp(ENODEV, &["name:"])),
        ("bdev_mirror_delete", json!({}), exp(EINVAL, &["name:"])),
        ("bdev_mirror_delete", json!({"name": ""}), exp(EINVAL, &["name:"])),
        ("bdev_mirror_delete", json!({"name": 5}), exp(EINVAL, &["name:"])),
        (
            "bdev_mirror_delete",
            json!({"name": "good", "force": true}),
            exp(EINVAL, &["force:"]),
        ),
        ("bdev_mirror_delete", json!(["good"]), exp(EINVAL, &["params:"])),
        // get_bdevs
        (
            "bdev_mirror_get_bdevs",
            json!({"name": "nope"}),
            exp(ENODEV, &["name:"]),
        ),
        ("bdev_mirror_get_bdevs", json!({"name": 1}), exp(EINVAL, &["name:"])),
        ("bdev_mirror_get_bdevs", json!({"bogus": 1}), exp(EINVAL, &["bogus:"])),
        // remove_base_bdev
        (
            "bdev_mirror_remove_base_bdev",
            json!({"base_bdev": "nope"}),
            exp(ENODEV, &["base_bdev:"]),
        ),
        (
            "bdev_mirror_remove_base_bdev",
            json!({"base_bdev": "f0"}),
            exp(ENODEV, &["base_bdev:"]),
        ),
        (
            "bdev_mirror_remove_base_bdev",
            json!({"base_bdev": "c0"}),
            exp(ENODEV, &["base_bdev:"]),
        ),
        (
            "bdev_mirror_remove_base_bdev",
            json!({"base_bdev": "d2"}),
            any_code(&["base_bdev:"]),
        ),
        ("bdev_mirror_remove_base_bdev", json!({}), exp(EINVAL, &["base_bdev:"])),
        (
            "bdev_mirror_remove_base_bdev",
            json!({"base_bdev": ""}),
            exp(EINVAL, &["base_bdev:"]),
        ),
        (
            "bdev_mirror_remove_base_bdev",
            json!({"base_bdev": ["g0"]}),
            exp(EINVAL, &["base_bdev:"]),
        ),
        (
            "bdev_mirror_remove_base_bdev",
            json!({"base_bdev": "g0", "name": "good"}),
            exp(EINVAL, &["name:"]),
        ),
        // add_base_bdev
        (
            "bdev_mirror_add_base_bdev",
            json!({"name": "good", "base_bdev": "f0"}),
            exp(ENOSPC, &["name:"]),
        ),
        (
            "bdev_mirror_add_base_bdev",
            json!({"name": "nope", "base_bdev": "f0"}),
            exp(ENODEV, &["name:"]),
        ),
        (
            "bdev_mirror_add_base_bdev",
            json!({"name": "deg", "base_bdev": "nope"}),
            exp(ENODEV, &["base_bdev:"]),
        ),
        (
            "bdev_mirror_add_base_bdev",
            json!({"name": "deg", "base_bdev": "big0"}),
            exp(EINVAL, &["base_bdev:"]),
        ),
        (
            "bdev_mirror_add_base_bdev",
            json!({"name": "deg", "base_bdev": "small"}),
            exp(EINVAL, &["base_bdev:"]),
        ),
        (
            "bdev_mirror_add_base_bdev",
            json!({"name": "deg", "base_bdev": "c0"}),
            exp(EBUSY, &["base_bdev:"]),
        ),
        (
            "bdev_mirror_add_base_bdev",
            json!({"name": "deg", "base_bdev": "g0"}),
            exp(EBUSY, &["base_bdev:"]),
        ),
        (
            "bdev_mirror_add_base_bdev",
            json!({"name": "deg", "base_bdev": "d0"}),
            exp(EBUSY, &["base_bdev:"]),
        ),
        (
            "bdev_mirror_add_base_bdev",
            json!({"name": "deg"}),
            exp(EINVAL, &["base_bdev:"]),
        ),
        (
            "bdev_mirror_add_base_bdev",
            json!({"base_bdev": "f0"}),
            exp(EINVAL, &["name:"]),
        ),
        (
            "bdev_mirror_add_base_bdev",
            json!({"name": "deg", "base_bdev": ""}),
            exp(EINVAL, &["base_bdev:"]),
        ),
        (
            "bdev_mirror_add_base_bdev",
            json!({"name": "deg", "base_bdev": 3}),
            exp(EINVAL, &["base_bdev:"]),
        ),
        (
            "bdev_mirror_add_base_bdev",
            json!({"name": "deg", "base_bdev": "f0", "slot": 2}),
            exp(EINVAL, &["slot:"]),
        ),
    ];

    let mut problems = Vec::new();
    let check_unchanged = |what: &str, problems: &mut Vec<String>| {
        let now = snapshot(&t);
        if now != before {
            problems.push(format!("{what}: state changed:\n{}", snapshot_diff(&before, &now)));
        }
    };
    for (method, params, want) in &cases {
        let what = format!("{method} {params}");
        if let Some(p) = judge(&what, t.rpc(method, params.clone()), want) {
            problems.push(p);
        }
        check_unchanged(&what, &mut problems);
    }

    // A number too large for any numeric type (SPDK's parser accepts it as a number token).
    let huge = br#"{"jsonrpc":"2.0","id":7,"method":"bdev_mirror_create","params":{"name":"x","level":"raid1","base_bdevs":["f0","f1"],"pool_size":1e400}}"#;
    let what = "bdev_mirror_create with pool_size 1e400";
    match t.rpc_raw(huge) {
        Ok(resp) => match resp.get("error") {
            Some(err) => {
                let e = RpcError {
                    code: err["code"].as_i64().unwrap_or(0),
                    message: err["message"].as_str().unwrap_or("").to_string(),
                };
                if let Some(p) = judge(what, Err(e), &exp(EINVAL, &["pool_size:"])) {
                    problems.push(p);
                }
            }
            None => problems.push(format!("{what}: accepted: {resp}")),
        },
        Err(e) => problems.push(format!("{what}: no answer: {e}")),
    }
    check_unchanged(what, &mut problems);

    // Malformed requests: no success, nothing changes, the target survives.
    let malformed: Vec<(&str, &[u8])> = vec![
        ("binary garbage", b"\xff\xfe\x00garbage{{{"),
        (
            "trailing comma",
            br#"{"jsonrpc":"2.0","id":8,"method":"bdev_mirror_create","params":{"name":"x","level":"raid1","base_bdevs":["f0","f1"],}}"#,
        ),
        (
            "unquoted key",
            br#"{"jsonrpc":"2.0","id":9,"method":"bdev_mirror_create","params":{name:"x"}}"#,
        ),
        ("a JSON array", b"[1,2,3]"),
        ("a JSON string", b"\"bdev_mirror_create\""),
        (
            "params a string",
            br#"{"jsonrpc":"2.0","id":10,"method":"bdev_mirror_create","params":"x"}"#,
        ),
        (
            "params a number",
            br#"{"jsonrpc":"2.0","id":11,"method":"bdev_mirror_delete","params":5}"#,
        ),
    ];
    for (what, bytes) in malformed {
        match t.rpc_raw(bytes) {
            Err(_) => {} // SPDK closes the connection on bytes it cannot parse
            Ok(resp) => {
                // One error object, or (for a JSON array, read as a batch) one per element.
                let answers = match &resp {
                    Value::Array(a) if !a.is_empty() => a.clone(),
                    other => vec![other.clone()],
                };
                let all_errors = answers
                    .iter()
                    .all(|a| a.get("result").is_none() && a["error"]["code"].as_i64().is_some_and(|c| c < 0));
                if !all_errors {
                    problems.push(format!("{what}: unexpected answer {resp}"));
                }
            }
        }
        check_unchanged(what, &mut problems);
    }
    // A request cut short: the target must not wait forever nor act on half a request.
    let truncated = br#"{"jsonrpc":"2.0","id":12,"method":"bdev_mirror_create","params":{"name":"x","level":"raid1","base_bdevs":["f0","f1"]"#;
    match send_and_close(t.socket(), truncated) {
        Ok(None) => {}
        Ok(Some(resp)) if resp.get("error").is_some() => {}
        Ok(Some(resp)) => problems.push(format!("truncated request: unexpected answer {resp}")),
        Err(e) => problems.push(format!("truncated request: {e}")),
    }
    check_unchanged("truncated request", &mut problems);

    // Delete: a mirror created for the purpose goes away once, releasing its legs.
    assert_eq!(
        rpc_ok(
            &t,
            "bdev_mirror_create",
            json!({"name": "tmp", "level": "raid1", "base_bdevs": ["f2", "f3"]})
        ),
        json!("tmp")
    );
    rpc_ok(&t, "bdev_wait_for_examine", Value::Null);
    assert!(
        is_claimed(&t, "f2") && is_claimed(&t, "f3"),
        "legs of tmp must be claimed"
    );
    assert_eq!(rpc_ok(&t, "bdev_mirror_delete", json!({"name": "tmp"})), json!(true));
    if let Some(p) = judge(
        "second bdev_mirror_delete tmp",
        t.rpc("bdev_mirror_delete", json!({"name": "tmp"})),
        &exp(ENODEV, &["name:"]),
    ) {
        problems.push(p);
    }
    if let Some(p) = judge(
        "bdev_mirror_get_bdevs tmp after delete",
        t.rpc("bdev_mirror_get_bdevs", json!({"name": "tmp"})),
        &exp(ENODEV, &["name:"]),
    ) {
        problems.push(p);
    }
    let gone = t.rpc("bdev_get_bdevs", json!({"name": "tmp"}));
    if gone.is_ok() {
        problems.push(format!("bdev tmp still exists after delete: {gone:?}"));
    }
    check_unchanged("create + delete tmp", &mut problems);

    // Still alive and answering.
    assert!(t.is_alive(), "spdk_tgt died; log tail:\n{}", tail_lines(&t.log(), 40));
    rpc_ok(&t, "spdk_get_version", Value::Null);
    assert_eq!(mirror_info(&t, "good")["state"], json!("online"));
    assert!(
        problems.is_empty(),
        "{} problem(s) with bad RPC inputs:\n{}",
        problems.len(),
        problems.join("\n")
    );
    t.shutdown(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
}

// ------------------------------------------------------------------------------------------------
// 4. save_config replays
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
    let core = lease_core();
    let uuid = "1b4e28ba-2fa1-41d2-883f-0016d3cca427";
    let blocks = 16 * MIB / BS as u64;

    let a = start_target(&env, "save_config_a", &core, None);
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
               "pool_size": 256, "max_parents": 64, "superblock": false}),
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
    let r1_a = mirror_info(&a, "r1");
    let r10_a = mirror_info(&a, "r10");
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

    let b = start_target(&env, "save_config_b", &core, Some(&saved_path));
    rpc_ok(&b, "bdev_wait_for_examine", Value::Null);
    let all_b = rpc_ok(&b, "bdev_mirror_get_bdevs", Value::Null);
    assert_eq!(all_b.as_array().map(Vec::len), Some(2), "after replay: {all_b}");
    for before in [&r1_a, &r10_a] {
        let name = before["name"].as_str().unwrap();
        let after = mirror_info(&b, name);
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

// ------------------------------------------------------------------------------------------------
// 5. a leg removed under I/O, then a fresh one added and rebuilt
// ------------------------------------------------------------------------------------------------

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

fn leg_removed_case(
    env: &SpdkEnv,
    core: &CoreLease,
    case: &str,
    level: &str,
    layout: Option<&str>,
    nlegs: usize,
    how: Removal,
) {
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
            cores_mask: core.mask(),
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
            let info = mirror_info(&server, &mirror);
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

    let info = mirror_info(&server, &mirror);
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
    let info2 = mirror_info(&server, &mirror);
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
        last = mirror_info(&server, &mirror);
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
    let info = mirror_info(&server, &mirror);
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
    let info = mirror_info(&server, &mirror);
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
fn rebuild_copies_data(env: &SpdkEnv, core: &CoreLease) {
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
        core,
        &config,
        &["--if", data.to_str().unwrap(), "--ob", "rb", "--bs", "65536"],
    );

    // Replace leg 1 with the empty file and rebuild.
    cfg.insert(cfg.len() - 1, aio_bdev_config(&legs[4], &files[4], BS));
    let cfg_path = write_json(dir.path(), "tgt.json", &bdev_subsystem(cfg));
    let t = start_target(env, case, core, Some(&cfg_path));
    assert_eq!(mirror_info(&t, "rb")["data_blocks"], json!(d));
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
        last = mirror_info(&t, "rb");
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
fn leg_removed_under_io_then_readded() {
    let env = require_spdk();
    let core = lease_core();
    leg_removed_case(&env, &core, "r1rpc", "raid1", None, 2, Removal::Rpc);
    leg_removed_case(&env, &core, "n2hot", "raid10", Some("n2"), 4, Removal::HotRemove);
    rebuild_copies_data(&env, &core);
}

// ------------------------------------------------------------------------------------------------
// 6. the module loads
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
fn module_loads_and_skips_loudly() {
    let env = require_spdk();
    assert!(
        env.module_lib.is_file(),
        "module library {} missing",
        env.module_lib.display()
    );
    let core = lease_core();
    let started = Instant::now();

    let t = start_target(&env, "module_loads", &core, None);
    let methods = rpc_methods(&t);
    for m in MIRROR_METHODS {
        assert!(
            methods.contains(m),
            "rpc_get_methods lacks {m} with the module preloaded"
        );
    }
    assert_eq!(rpc_ok(&t, "bdev_mirror_get_bdevs", Value::Null), json!([]));
    t.shutdown(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    drop(t);

    // Without the preload the methods are not there: it is the library that brings them.
    let plain = Target::start(
        &env,
        TargetOpts {
            name: "module_absent",
            cores_mask: core.mask(),
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
    eprintln!("module_loads_and_skips_loudly: {:?}", started.elapsed());
}
