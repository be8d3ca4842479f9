//! I/O through the mirror inside SPDK's stock apps, with `libspdk_mirror.so` preloaded:
//! bdevperf's verify is clean on every level and layout and on malloc, aio and null legs, and
//! data written with spdk_dd lands on the legs exactly where the placement says.
//!
//! Only meaningful when SPDK was found at build time (`cfg(spdk)`); otherwise every test here is
//! reported as ignored, with the reason. Run with `cargo build --release && cargo test --release
//! --test spdk_io`. Every app runs on a core leased for it (`support::cpu`).

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use support::{
    aio_bdev_config, bdev_subsystem, bdevperf, check_placement, create_sparse_file, describe_block, geometry,
    malloc_bdev_config, mirror_config, names, null_bdev_config, read_file, require_spdk, rpc_ok, run_dd, stamp, stamps,
    start_target, tail_lines, test_dir, wait_for_examine_config, write_json, BdevperfOpts, SpdkEnv,
};

const MIB: u64 = 1024 * 1024;
const BS: u32 = 512;

// ------------------------------------------------------------------------------------------------
// verify on every level
// ------------------------------------------------------------------------------------------------

/// Config entries for mirror `name` over `legs` malloc bdevs of `leg_blocks` (`<name>_m<i>`).
fn malloc_mirror(
    name: &str,
    level: &str,
    layout: Option<&str>,
    chunk_kb: Option<u64>,
    legs: usize,
    leg_blocks: u64,
) -> Vec<Value> {
    let legs = names(&format!("{name}_m"), legs);
    let mut cfg: Vec<Value> = legs.iter().map(|l| malloc_bdev_config(l, leg_blocks, BS)).collect();
    cfg.push(mirror_config(name, level, layout, chunk_kb, &legs));
    cfg
}

/// One bdevperf run; asserts a clean run with one job per mirror in `mirrors`, each with IOPS > 0.
fn bdevperf_clean(env: &SpdkEnv, name: &str, config: Value, workload: &str, mirrors: &[&str]) {
    bdevperf_clean_with(env, name, config, workload, mirrors, BdevperfOpts::default());
}

/// [`bdevperf_clean`] with `opts`' queue depth and I/O size.
fn bdevperf_clean_with(env: &SpdkEnv, name: &str, config: Value, workload: &str, mirrors: &[&str], opts: BdevperfOpts) {
    let res = bdevperf(
        env,
        BdevperfOpts {
            name,
            config,
            workload,
            time_s: 2,
            mem_mb: 2048,
            ..opts
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
fn verify_on_every_level_and_layout_over_malloc() {
    let env = require_spdk();
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
        cfg.extend(malloc_mirror(c.name, c.level, c.layout, c.chunk_kb, c.legs, leg_blocks));
    }
    cfg.push(wait_for_examine_config());
    let mirrors: Vec<&str> = cases.iter().map(|c| c.name).collect();
    bdevperf_clean(&env, "verify_malloc", bdev_subsystem(cfg), "verify", &mirrors);
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn verify_over_aio_legs() {
    let env = require_spdk();
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
    bdevperf_clean(&env, "verify_aio", bdev_subsystem(cfg), "verify", &["aio_r1", "aio_n2"]);
}

/// A flush reaches every leg that takes one. Over an aio leg (a volatile cache, flush) and a
/// null leg (neither) the mirror takes flushes: asking every leg to take them, it took none,
/// and an NVMe-oF host's flush then completed at once, the aio leg's cache never flushed. The
/// null leg's part is done at once; the aio leg's reaches it: a flush error injected there
/// fails that leg, and the host's flush still succeeds on the leg left.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn flush_reaches_every_leg_that_takes_one() {
    let env = require_spdk();
    let dir = test_dir("flush_legs");
    let f = dir.join("a0.img");
    create_sparse_file(&f, 64 * MIB).unwrap();
    let cfg = vec![
        aio_bdev_config("a0", &f, BS),
        support::config_entry("bdev_error_create", json!({"base_name": "a0"})),
        null_bdev_config("n0", 64 * MIB / BS as u64, BS),
        mirror_config("mir", "raid1", None, None, &["EE_a0".to_string(), "n0".to_string()]),
        wait_for_examine_config(),
    ];
    let t = support::bdevperf_server(
        &env,
        BdevperfOpts {
            name: "flush_legs",
            config: bdev_subsystem(cfg),
            workload: "flush",
            time_s: 1,
            extra_args: vec!["-T".into(), "mir".into()],
            ..Default::default()
        },
    )
    .expect("bdevperf starts");
    let bdev = &rpc_ok(&t, "bdev_get_bdevs", json!({"name": "mir"}))[0];
    assert_eq!(bdev["supported_io_types"]["flush"], json!(true), "{bdev}");
    let flushes = |what: &str| {
        let r = t
            .perform_tests(Value::Null, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{what}: {e}: {}", tail_lines(&t.log(), 30)));
        let job = &r["results"][0];
        assert_eq!(job["io_failed"], 0, "{what}: {r}");
        assert!(job["iops"].as_f64().unwrap_or(0.0) > 0.0, "{what}: {r}");
    };
    flushes("clean");
    assert_eq!(support::leg_state(&t.mirror_info("mir"), 1), "online");
    rpc_ok(
        &t,
        "bdev_error_inject_error",
        json!({"name": "EE_a0", "io_type": "flush", "error_type": "failure", "num": 1}),
    );
    flushes("one flush of the aio leg failing");
    let m = t.mirror_info("mir");
    assert_eq!(
        support::leg_state(&m, 0),
        "failed",
        "the flush reached the aio leg: {m}"
    );
    assert_eq!(support::leg_state(&m, 1), "online", "{m}");
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn randwrite_over_null_legs() {
    let env = require_spdk();
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
        "randwrite_null",
        bdev_subsystem(cfg),
        "randwrite",
        &["null_r1", "null_f2"],
    );
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn unmap_and_write_zeroes_spanning_hundreds_of_chunks() {
    let env = require_spdk();
    // 32 MiB requests over 64 KiB chunks span 512 or 513 chunks, more than the engine takes in
    // one request: the mirror's unmap and write-zeroes limits have the bdev layer cut them.
    let leg_blocks = 64 * MIB / BS as u64;
    let mut cfg = Vec::new();
    let mut mirrors = Vec::new();
    for layout in ["n2", "f2", "o2"] {
        let name = format!("big_{layout}");
        cfg.extend(malloc_mirror(&name, "raid10", Some(layout), Some(64), 4, leg_blocks));
        mirrors.push(name);
    }
    cfg.push(wait_for_examine_config());
    let mirrors: Vec<&str> = mirrors.iter().map(String::as_str).collect();
    for workload in ["unmap", "write_zeroes"] {
        let opts = BdevperfOpts {
            queue_depth: 2,
            io_size: 32 * MIB,
            ..Default::default()
        };
        bdevperf_clean_with(&env, workload, bdev_subsystem(cfg.clone()), workload, &mirrors, opts);
    }
}

// ------------------------------------------------------------------------------------------------
// data lands where the placement says
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
fn placement_case(env: &SpdkEnv, pc: &PlacementCase) {
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
        let t = start_target(env, &format!("{case}_size"), Some(&cfg_path));
        let info = t.mirror_info(&mirror);
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
        &config,
        &["--if", head_file.to_str().unwrap(), "--ob", &mirror, "--bs", "65536"],
    );
    run_dd(
        env,
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

// Leg sizes are deliberately uneven and not chunk multiples: the smallest leg decides, and a
// partial trailing chunk is never used (md's rounding).

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn raid10_f2_data_lands_where_placement_says() {
    let env = require_spdk();
    let k = 1024u64;
    let base = 16 * MIB + 5 * 16 * k + 3 * 512;
    placement_case(
        &env,
        &PlacementCase {
            name: "f2x4",
            level: "raid10",
            layout: Some("f2"),
            chunk_kb: 16,
            leg_bytes: vec![base + 64 * k, base, base + MIB, base + 512],
            seed: 0x5eed_f2f2,
        },
    );
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn raid1_data_lands_where_placement_says() {
    let env = require_spdk();
    let k = 1024u64;
    let base = 16 * MIB + 12 * k;
    placement_case(
        &env,
        &PlacementCase {
            name: "r1x3",
            level: "raid1",
            layout: None,
            chunk_kb: 64,
            leg_bytes: vec![base, base + 4 * k, base + 4 * MIB],
            seed: 0x5eed_0001,
        },
    );
}

#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn raid10_o2_data_lands_where_placement_says() {
    let env = require_spdk();
    let k = 1024u64;
    let base = 16 * MIB + 7 * 32 * k + 1024;
    placement_case(
        &env,
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
