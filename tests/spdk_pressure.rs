//! Pressure tests (issue 6, item 5): the mirror at QD128 with a starved `spdk_bdev_io` pool and
//! tiny leg pools, directly under bdevperf and under an lvol store (spdk/spdk#3710's stack),
//! measured next to SPDK's own raid1.
//!
//! Only meaningful when SPDK was found at build time (`cfg(spdk)`); otherwise every test here is
//! reported as ignored, with the reason. Run with
//! `cargo build --release && cargo test --release --test spdk_pressure -- --nocapture`
//! (each bdevperf run prints one row of a results table).
//!
//! # Shrinking SPDK's `spdk_bdev_io` pool
//!
//! `bdev_set_options {bdev_io_pool_size, bdev_io_cache_size}` is a STARTUP RPC: SPDK's JSON config
//! loader runs it before `framework_start_init` when it is the first entry of the "bdev"
//! subsystem's config, so bdevperf needs no `--wait-for-rpc`. SPDK refuses a pool smaller than
//! `cache * (threads + 1)`; every thread that gets a bdev channel moves `cache` I/Os of the pool
//! into its own cache. Every run here reads the value back with `framework_get_config {"name":
//! "bdev"}` and fails if it is not the one asked for.
//!
//! # The bar
//!
//! [`PLAIN_LVOL_MIN_POOL`] is the smallest `bdev_io_pool_size` (cache 1) at which a thick lvol on
//! ONE plain malloc bdev completes bdevperf randwrite QD128 4 KiB: one less and the lvol stalls
//! for good (its blobstore's `spdk_bdev_queue_io_wait` entries queue behind bdevperf's own, so
//! lvol parents end up holding every `spdk_bdev_io`). The measurement was deterministic (10 of 10
//! runs each side, also with the other core loaded), and
//! [`plain_lvol_bar_holds_at_the_minimal_pool_and_stalls_one_below`] re-derives it on every run.
//!
//! An lvol on ANY bdev that itself needs `spdk_bdev_io`s (SPDK's raid1 and passthru included)
//! stalls at that pool: each lvol write then needs three (passthru) or four (a two-way mirror)
//! `spdk_bdev_io`s instead of two, and the lvol's own queueing is what stalls. So the
//! lvol-on-mirror runs use [`LVOL_ON_MIRROR_MIN_POOL`], measured the same way, and
//! [`lvol_on_mirror_at_the_plain_bar_stalls_in_the_lvol_not_in_the_mirror`] checks that at the
//! plain bar the stuck I/O is the lvol's, not the mirror's.
//!
//! # Hangs
//!
//! A stalled SPDK app ignores SIGTERM, so every run is watched: a run whose top bdev completes
//! no I/O for [`STALL_WINDOW`] is a stall; its bdevs' queue depths (`bdev_set_qd_sampling_period`
//! then `bdev_get_iostat`) and the mirror's counters are recorded, and the app is SIGKILLed.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use spdk_mirror::engine::admitted_parents;

use support::{
    bdev_subsystem, bdevperf_server, config_entry, malloc_bdev_config, raid1_bdev_config, require_spdk, tail_lines,
    wait_for_examine_config, BdevperfOpts, SpdkEnv, Target,
};

// ------------------------------------------------------------------------------------------------
// Measured constants
// ------------------------------------------------------------------------------------------------

/// `bdev_io_cache_size` of every run that sets none of its own (`Case::cache`): the smallest
/// per-thread cache.
const CACHE: u32 = 1;

/// Smallest `bdev_io_pool_size` (cache 1) at which a thick lvol on one plain malloc bdev completes
/// bdevperf randwrite QD128 4 KiB (86 stalls). Measured on SPDK master 3230130e6a (v26.09-pre);
/// with cache 2 it is 88, with cache 4 it is 90 (always 86 I/Os beyond one thread's cache).
const PLAIN_LVOL_MIN_POOL: u32 = 87;

/// Smallest pool at which the same lvol on the mirror (raid1 over 2 malloc legs, or raid10 n2
/// over 4, any leg pool) completes the same workload (104 stalls, in the lvol). It was 106
/// before child spdk_bdev_ios were freed after the engine saw the completion.
const LVOL_ON_MIRROR_MIN_POOL: u32 = 105;

/// The same for the lvol on SPDK's raid1 over 2 malloc bdevs (104 stalls): the mirror needs no
/// more. Printed by [`compare_with_spdk_raid1`], not asserted.
const LVOL_ON_SPDK_RAID1_MIN_POOL: u32 = 105;

const QD: u32 = 128;
/// A pool at which bdevperf verify QD128 runs on one `bdev_delay` over malloc (it does from
/// 128) and, on one core, the mirror over such legs (from 160; it stalled up to 224 while a
/// lone channel admitted at least 64 parents whatever its legs).
const DELAY_LEGS_POOL: u32 = 160;
/// `bdev_io_cache_size` and pool of the stuck-below runs: one delay bdev runs verify QD128 there
/// (from 96 too); on one core the mirror over two delay legs stalled at every pool up to 160
/// before its channel's stall watch (`src/spdk/channel/stall.rs`).
const STUCK_BELOW_CACHE: u32 = 16;
const STUCK_BELOW_POOL: u32 = 128;
/// The queue depth of each of the two thin-lvol jobs.
const THIN_QD: u32 = 32;
/// The pool of the two-thin-lvol runs: two jobs over one plain malloc bdev run there (at 96
/// they stall, in the lvols).
const THIN_POOL: u32 = 128;
const BLOCK_SIZE: u32 = 4096;
/// 64 MiB malloc bdevs.
const MALLOC_BLOCKS: u64 = 16384;
const LVOL_MIB: u64 = 32;
const CLUSTER_SZ: u64 = 1 << 20;

/// bdevperf `-t` of the bar runs (item 2 of the brief: ~3 s).
const BAR_SECS: u32 = 3;
/// bdevperf `-t` of the other runs. The stalls seen here all happen in the first milliseconds.
const RUN_SECS: u32 = 2;

/// A run whose top bdev completes no I/O for this long is stalled.
const STALL_WINDOW: Duration = Duration::from_secs(3);
/// Hard bound on one run beyond its `-t`, stalled or not.
const RUN_HARD_LIMIT: Duration = Duration::from_secs(90);

// ------------------------------------------------------------------------------------------------
// Cases
// ------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stack {
    /// One malloc bdev.
    Malloc,
    /// The mirror, raid1 over 2 malloc legs.
    Mirror1,
    /// The mirror, raid10 n2 over 4 malloc legs.
    Mirror10,
    /// SPDK's raid1 over 2 malloc bdevs.
    SpdkRaid1,
    /// SPDK has no raid10: its raid0 (64 KiB strips) over two of its raid1s.
    SpdkRaid0OverRaid1,
    /// The mirror, raid1 over two raid1 mirrors of 2 malloc legs each.
    NestedMirror,
    /// SPDK's raid1 over two of its raid1s.
    NestedSpdkRaid1,
}

impl Stack {
    fn label(self) -> &'static str {
        match self {
            Stack::Malloc => "malloc",
            Stack::Mirror1 => "mirror raid1 (2 legs)",
            Stack::Mirror10 => "mirror raid10 n2 (4 legs)",
            Stack::SpdkRaid1 => "SPDK raid1 (2 legs)",
            Stack::SpdkRaid0OverRaid1 => "SPDK raid0 over 2 raid1",
            Stack::NestedMirror => "mirror raid1 over 2 mirrors",
            Stack::NestedSpdkRaid1 => "SPDK raid1 over 2 raid1",
        }
    }

    fn is_mirror(self) -> bool {
        matches!(self, Stack::Mirror1 | Stack::Mirror10 | Stack::NestedMirror)
    }

    fn legs(self) -> usize {
        match self {
            Stack::Malloc => 1,
            Stack::Mirror1 | Stack::SpdkRaid1 => 2,
            Stack::Mirror10 | Stack::SpdkRaid0OverRaid1 | Stack::NestedMirror | Stack::NestedSpdkRaid1 => 4,
        }
    }
}

#[derive(Clone, Debug)]
struct Case {
    stack: Stack,
    /// An lvol store and a thick lvol on top; bdevperf drives the lvol.
    lvol: bool,
    /// With `lvol`: two thin lvols instead (spdk/spdk#3710's), one bdevperf job on each, each
    /// on its own thread; after the run the first is deleted.
    thin: bool,
    /// bdevperf's queue depth (per job).
    qd: u32,
    /// `bdev_io_pool_size`.
    pool: u32,
    /// The mirror's `pool_size` (child contexts per leg); `None`: its default (4096).
    leg_pool: Option<u32>,
    workload: &'static str,
    secs: u32,
    /// The mirror's `superblock` (its default, true, when set).
    superblock: bool,
    /// The mirror's `max_parents`; `None`: its default.
    max_parents: Option<u32>,
    /// Once I/O runs, two more malloc bdevs and a second mirror over them are created.
    create_during: bool,
    /// After a clean run, idle this long, then run again (the outcome is the second run's).
    again_after: Option<Duration>,
    /// With `NestedMirror`: a lower mirror's first leg sits on an error bdev, which fails every
    /// write from shortly after the run starts (the leg must end failed, the host see nothing).
    fail_during: bool,
    /// Each malloc bdev under a `bdev_delay` layer (the legs, or the one bdev of `Malloc`).
    delay_legs: bool,
    /// `bdev_io_cache_size`.
    cache: u32,
}

impl Case {
    fn new(stack: Stack, pool: u32) -> Case {
        Case {
            stack,
            lvol: false,
            thin: false,
            qd: QD,
            pool,
            leg_pool: None,
            workload: "randwrite",
            secs: RUN_SECS,
            superblock: true,
            max_parents: None,
            create_during: false,
            again_after: None,
            fail_during: false,
            delay_legs: false,
            cache: CACHE,
        }
    }

    fn cache(mut self, cache: u32) -> Case {
        self.cache = cache;
        self
    }

    /// Each leg a `bdev_delay` over its malloc bdev: a layer that takes an `spdk_bdev_io` of
    /// its own for every I/O it is given.
    fn delay_legs(mut self) -> Case {
        self.delay_legs = true;
        self
    }

    fn fail_a_lower_leg_during(mut self) -> Case {
        self.fail_during = true;
        self
    }

    fn again_after(mut self, idle: Duration) -> Case {
        self.again_after = Some(idle);
        self
    }

    fn create_during(mut self) -> Case {
        self.create_during = true;
        self
    }

    fn no_superblock(mut self) -> Case {
        self.superblock = false;
        self
    }

    fn max_parents(mut self, n: Option<u32>) -> Case {
        self.max_parents = n;
        self
    }

    fn lvol(mut self) -> Case {
        self.lvol = true;
        self
    }

    /// Two thin lvols written sequentially at QD32 each (see `thin`).
    fn two_thin_lvols(mut self) -> Case {
        self.lvol = true;
        self.thin = true;
        self.qd = THIN_QD;
        self.workload = "write";
        self
    }

    fn leg_pool(mut self, leg_pool: Option<u32>) -> Case {
        self.leg_pool = leg_pool;
        self
    }

    fn workload(mut self, workload: &'static str) -> Case {
        self.workload = workload;
        self
    }

    fn secs(mut self, secs: u32) -> Case {
        self.secs = secs;
        self
    }

    fn describe(&self) -> String {
        format!(
            "{}{}{}{}, bdev_io pool {} (cache {}), leg pool {}, max_parents {}, {} QD{} 4K {} s",
            self.stack.label(),
            if self.delay_legs { " over delay" } else { "" },
            if self.superblock { "" } else { " without superblock" },
            self.lvol_label(),
            self.pool,
            self.cache,
            self.leg_pool.map_or("default".to_string(), |n| n.to_string()),
            self.max_parents.map_or("default".to_string(), |n| n.to_string()),
            self.workload,
            self.qd,
            self.secs
        )
    }

    fn lvol_label(&self) -> &'static str {
        match (self.lvol, self.thin) {
            (false, _) => "",
            (true, false) => " + lvol",
            (true, true) => " + 2 thin lvols",
        }
    }

    /// The bdevperf JSON config, and the bdev bdevperf drives.
    fn config(&self) -> (Value, String) {
        let mut c = vec![config_entry(
            "bdev_set_options",
            json!({"bdev_io_pool_size": self.pool, "bdev_io_cache_size": self.cache}),
        )];
        let mut legs: Vec<String> = (0..self.stack.legs()).map(|i| format!("m{i}")).collect();
        for leg in &legs {
            c.push(malloc_bdev_config(leg, MALLOC_BLOCKS, BLOCK_SIZE));
        }
        if self.delay_legs {
            for leg in legs.iter_mut() {
                let name = leg.replacen('m', "d", 1);
                c.push(config_entry(
                    "bdev_delay_create",
                    json!({"base_bdev_name": leg.as_str(), "name": name, "avg_read_latency": 50,
                           "p99_read_latency": 200, "avg_write_latency": 80, "p99_write_latency": 300}),
                ));
                *leg = name;
            }
        }
        let mut top = match self.stack {
            Stack::Malloc => legs[0].clone(),
            Stack::Mirror1 | Stack::Mirror10 => {
                let mut p = json!({"name": "mr", "base_bdevs": legs});
                if self.stack == Stack::Mirror1 {
                    p["level"] = json!("raid1");
                } else {
                    p["level"] = json!("raid10");
                    p["layout"] = json!("n2");
                }
                if let Some(n) = self.leg_pool {
                    p["pool_size"] = json!(n);
                }
                if let Some(n) = self.max_parents {
                    p["max_parents"] = json!(n);
                }
                if !self.superblock {
                    p["superblock"] = json!(false);
                }
                c.push(config_entry("bdev_mirror_create", p));
                "mr".to_string()
            }
            Stack::SpdkRaid1 => {
                c.push(raid1_bdev_config("r1", &["m0", "m1"]));
                "r1".to_string()
            }
            Stack::SpdkRaid0OverRaid1 => {
                c.push(raid1_bdev_config("ra", &["m0", "m1"]));
                c.push(raid1_bdev_config("rb", &["m2", "m3"]));
                c.push(config_entry(
                    "bdev_raid_create",
                    json!({"name": "r10", "raid_level": "raid0", "strip_size_kb": 64, "base_bdevs": ["ra", "rb"]}),
                ));
                "r10".to_string()
            }
            Stack::NestedMirror => {
                // Every level as the case says: with superblocks, the lower mirrors' legs
                // and the upper's (the lower mirrors) each carry a bitmap.
                let mirror = |name: &str, legs: [&str; 2]| {
                    let mut p = json!({"name": name, "level": "raid1", "base_bdevs": legs});
                    if let Some(n) = self.leg_pool {
                        p["pool_size"] = json!(n);
                    }
                    if !self.superblock {
                        p["superblock"] = json!(false);
                    }
                    config_entry("bdev_mirror_create", p)
                };
                let first = if self.fail_during {
                    c.push(config_entry("bdev_error_create", json!({"base_name": "m0"})));
                    "EE_m0"
                } else {
                    "m0"
                };
                c.push(mirror("ma", [first, "m1"]));
                c.push(mirror("mb", ["m2", "m3"]));
                c.push(mirror("mr", ["ma", "mb"]));
                "mr".to_string()
            }
            Stack::NestedSpdkRaid1 => {
                c.push(raid1_bdev_config("ra", &["m0", "m1"]));
                c.push(raid1_bdev_config("rb", &["m2", "m3"]));
                c.push(raid1_bdev_config("r1", &["ra", "rb"]));
                "r1".to_string()
            }
        };
        c.push(wait_for_examine_config());
        if self.thin {
            // (No clear: unmapping the whole store at its creation only slows the start here.)
            c.push(config_entry(
                "bdev_lvol_create_lvstore",
                json!({"bdev_name": top, "lvs_name": "lvs", "cluster_sz": CLUSTER_SZ, "clear_method": "none"}),
            ));
            for lv in ["lv", "lv2"] {
                c.push(config_entry(
                    "bdev_lvol_create",
                    json!({"lvs_name": "lvs", "lvol_name": lv, "size_in_mib": LVOL_MIB / 2, "thin_provision": true}),
                ));
            }
            top = "lvs/lv".to_string();
        } else if self.lvol {
            c.push(config_entry(
                "bdev_lvol_create_lvstore",
                json!({"bdev_name": top, "lvs_name": "lvs", "cluster_sz": CLUSTER_SZ}),
            ));
            c.push(config_entry(
                "bdev_lvol_create",
                json!({"lvs_name": "lvs", "lvol_name": "lv", "size_in_mib": LVOL_MIB, "thin_provision": false}),
            ));
            top = "lvs/lv".to_string();
        }
        (bdev_subsystem(c), top)
    }
}

// ------------------------------------------------------------------------------------------------
// Running a case
// ------------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Outcome {
    /// perform_tests answered: its `results` array.
    Completed(Vec<Value>),
    /// No I/O completed on the top bdev for `STALL_WINDOW` (or the hard limit passed).
    Stalled,
    /// The harness could not run the case (start-up, config, RPC error).
    Broken(String),
}

#[derive(Debug, Clone, Default)]
struct LegCounters {
    bdev: String,
    state: String,
    nomem: u64,
    pool_empty: u64,
    reads: u64,
    writes: u64,
}

#[derive(Debug)]
struct Run {
    case: Case,
    config: Value,
    outcome: Outcome,
    /// The mirror's per-leg counters after the run (stalled or not); empty for other stacks.
    legs: Vec<LegCounters>,
    /// The mirror's `admitted_parents`, `io_channels` and `mirrors_below` (read with `legs`).
    admitted: Option<u64>,
    io_channels: Option<u64>,
    mirrors_below: Option<u64>,
    /// At a stall: every bdev's sampled queue depth (I/Os outstanding), by name/alias.
    queue_depths: BTreeMap<String, u64>,
    log_tail: String,
    seconds: f64,
}

impl Run {
    fn stalled(&self) -> bool {
        matches!(self.outcome, Outcome::Stalled)
    }

    fn nomem(&self) -> u64 {
        self.legs.iter().map(|l| l.nomem).sum()
    }

    fn pool_empty(&self) -> u64 {
        self.legs.iter().map(|l| l.pool_empty).sum()
    }

    fn iops(&self) -> f64 {
        match &self.outcome {
            Outcome::Completed(jobs) => jobs.iter().filter_map(|j| j["iops"].as_f64()).sum(),
            _ => 0.0,
        }
    }

    fn outcome_word(&self) -> String {
        match &self.outcome {
            Outcome::Completed(_) if self.clean().is_ok() => "completed".into(),
            Outcome::Completed(_) => "FAILED I/O".into(),
            Outcome::Stalled => "STALLED".into(),
            Outcome::Broken(_) => "BROKEN".into(),
        }
    }

    /// Completed, every job "finished" with I/O done and none failed or timed out.
    fn clean(&self) -> Result<(), String> {
        match &self.outcome {
            Outcome::Completed(jobs) => {
                if jobs.is_empty() {
                    return Err("perform_tests returned no job".into());
                }
                for j in jobs {
                    let failed = j["io_failed"].as_u64().unwrap_or(u64::MAX);
                    let timed_out = j["io_timeout"].as_u64().unwrap_or(u64::MAX);
                    if j["status"] != "finished"
                        || failed != 0
                        || timed_out != 0
                        || j["iops"].as_f64().unwrap_or(0.0) <= 0.0
                    {
                        return Err(format!("job not clean: {j}"));
                    }
                }
                Ok(())
            }
            Outcome::Stalled => Err("stalled: no I/O completed on the top bdev any more (a hang)".into()),
            Outcome::Broken(e) => Err(format!("could not run: {e}")),
        }
    }

    /// One line of the results table.
    fn row(&self) -> String {
        let counters = if self.case.stack.is_mirror() {
            format!("nomem {:>9} pool_empty {:>9}", self.nomem(), self.pool_empty())
        } else {
            String::new()
        };
        format!(
            "| {:<34} | {:>4} | {:>7} | {:<9} | {:<10} | {:>8.0} | {counters} ({:.1} s)",
            format!("{}{}", self.case.stack.label(), self.case.lvol_label()),
            self.case.pool,
            self.case.leg_pool.map_or("default".to_string(), |n| n.to_string()),
            self.case.workload,
            self.outcome_word(),
            self.iops(),
            self.seconds
        )
    }

    /// Everything needed to reproduce and diagnose a bad run.
    fn explain(&self) -> String {
        let mut s = format!("{}: {}\n", self.case.describe(), self.outcome_word());
        if let Err(e) = self.clean() {
            s += &format!("  why: {e}\n");
        }
        if !self.legs.is_empty() {
            s += "  mirror legs (bdev_mirror_get_bdevs):";
            for l in &self.legs {
                s += &format!(
                    " [{} ({}): nomem {} pool_empty {} reads {} writes {}]",
                    l.bdev, l.state, l.nomem, l.pool_empty, l.reads, l.writes
                );
            }
            s += "\n";
        }
        if !self.queue_depths.is_empty() {
            s += &format!("  I/O outstanding per bdev at the stall: {:?}\n", self.queue_depths);
        }
        if let Outcome::Completed(jobs) = &self.outcome {
            s += &format!("  bdevperf jobs: {}\n", Value::Array(jobs.clone()));
        }
        s += &format!("  config: {}\n", self.config);
        s += &format!("  log tail:\n{}\n", indent(&self.log_tail));
        s
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// Runs one case in `bdevperf -z`: start (config loaded, pool checked), `perform_tests` on a
/// second thread, watched for a stall; then the mirror's counters (and at a stall, where the
/// I/O is held); then SIGKILL. Never hangs: every step is bounded.
fn run(env: &SpdkEnv, case: &Case) -> Run {
    // One starved bdevperf at a time: two polling the same core would slow each other and the
    // stall detector could take slowness for a hang (cargo runs tests on two threads).
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let (config, top) = case.config();
    let mut r = Run {
        case: case.clone(),
        config: config.clone(),
        outcome: Outcome::Broken("not run".into()),
        legs: Vec::new(),
        admitted: None,
        io_channels: None,
        mirrors_below: None,
        queue_depths: BTreeMap::new(),
        log_tail: String::new(),
        seconds: 0.0,
    };
    let opts = BdevperfOpts {
        name: "pressure",
        config,
        queue_depth: case.qd,
        io_size: BLOCK_SIZE as u64,
        workload: case.workload,
        time_s: case.secs,
        preload: case.stack.is_mirror(),
        timeout: Duration::from_secs(60),
        mem_mb: 1024,
        ..Default::default()
    };
    let target = match bdevperf_server(env, opts) {
        Ok(t) => t,
        Err(e) => {
            r.outcome = Outcome::Broken(format!("bdevperf start-up: {e}"));
            r.seconds = started.elapsed().as_secs_f64();
            return r;
        }
    };
    if let Err(e) = check_pool_applied(&target, case.pool, case.cache) {
        r.outcome = Outcome::Broken(e);
    } else {
        r.outcome = perform_watched(&target, case, &top, true, &mut r);
        if let (Some(idle), Outcome::Completed(_)) = (case.again_after, &r.outcome) {
            std::thread::sleep(idle);
            r.outcome = perform_watched(&target, case, &top, false, &mut r);
        }
        if case.fail_during && matches!(r.outcome, Outcome::Completed(_)) {
            let state = target
                .rpc_timeout("bdev_mirror_get_bdevs", json!({"name": "ma"}), Duration::from_secs(10))
                .map(|v| v[0]["legs"][0]["state"].clone());
            if !matches!(&state, Ok(s) if s == "failed") {
                r.outcome = Outcome::Broken(format!(
                    "the failing leg EE_m0 of ma is not failed after the run: {state:?}"
                ));
            }
        }
        // Only after a clean run: a delete's error must not hide why the run itself failed.
        if case.thin && matches!(r.outcome, Outcome::Completed(_)) {
            // spdk/spdk#3710: deleting a thin lvol (its clusters unmapped) hung on SPDK raid1.
            if let Err(e) = target.rpc_timeout("bdev_lvol_delete", json!({"name": "lvs/lv"}), Duration::from_secs(30)) {
                r.outcome = Outcome::Broken(format!("bdev_lvol_delete lvs/lv after the run: {e}"));
            }
        }
        if case.stack.is_mirror() && !r.stalled() {
            if let Err(e) = read_mirror(&target, &mut r) {
                r.outcome = Outcome::Broken(format!("bdev_mirror_get_bdevs after the run: {e}"));
            }
        }
    }
    // bdevperf's progress line is rewritten in place with '\r': keep whole lines only.
    let log: Vec<String> = target
        .log()
        .lines()
        .map(|l| l.rsplit('\r').next().unwrap_or_default().trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    r.log_tail = tail_lines(&log.join("\n"), 15);
    target.kill9();
    r.seconds = started.elapsed().as_secs_f64();
    r
}

/// `framework_get_config {"name": "bdev"}` must show the pool size the config asked for.
/// One `perform_tests`, watched for a stall (at a stall: where the I/O is held, the mirror's
/// counters, and the app killed). The case's actions during a run happen in the `first`.
fn perform_watched(target: &Target, case: &Case, top: &str, first: bool, r: &mut Run) -> Outcome {
    std::thread::scope(|s| {
        let perform = s.spawn(|| {
            target.perform_tests(
                Value::Null,
                Duration::from_secs(case.secs as u64) + RUN_HARD_LIMIT + STALL_WINDOW,
            )
        });
        if first && case.create_during {
            std::thread::sleep(Duration::from_millis(700));
            if let Err(e) = create_second_mirror(target) {
                eprintln!("creating the second mirror: {e}");
            }
        }
        if first && case.fail_during {
            std::thread::sleep(Duration::from_millis(700));
            let inject = json!({"name": "EE_m0", "io_type": "write", "error_type": "failure", "num": 1_000_000});
            if let Err(e) = target.rpc_timeout("bdev_error_inject_error", inject, Duration::from_secs(10)) {
                eprintln!("injecting write failures: {e}");
            }
        }
        let stalled = watch(target, top, case.secs, || perform.is_finished());
        if stalled {
            r.queue_depths = queue_depths(target);
            if case.stack.is_mirror() {
                let _ = read_mirror(target, r);
            }
            target.kill9();
            let _ = perform.join();
            Outcome::Stalled
        } else {
            match perform.join() {
                Ok(Ok(v)) => Outcome::Completed(v["results"].as_array().cloned().unwrap_or_default()),
                Ok(Err(e)) => Outcome::Broken(format!("perform_tests: {e}")),
                Err(_) => Outcome::Broken("perform_tests thread panicked".into()),
            }
        }
    })
}

fn check_pool_applied(target: &Target, pool: u32, cache: u32) -> Result<(), String> {
    let cfg = target
        .rpc("framework_get_config", json!({"name": "bdev"}))
        .map_err(|e| format!("framework_get_config: {e}"))?;
    let opts = cfg
        .as_array()
        .and_then(|a| a.iter().find(|e| e["method"] == "bdev_set_options"))
        .ok_or_else(|| format!("no bdev_set_options in the bdev config: {cfg}"))?;
    let (size, cache_now) = (
        &opts["params"]["bdev_io_pool_size"],
        &opts["params"]["bdev_io_cache_size"],
    );
    if *size != json!(pool) || *cache_now != json!(cache) {
        return Err(format!(
            "bdev_set_options did not take effect: asked pool {pool} cache {cache}, running with {}",
            opts["params"]
        ));
    }
    Ok(())
}

/// Completed I/O of `bdev` so far (`None` if the RPC fails).
fn io_count(target: &Target, bdev: &str) -> Option<u64> {
    let st = target
        .rpc_timeout("bdev_get_iostat", json!({"names": [bdev]}), Duration::from_secs(5))
        .ok()?;
    let b = st["bdevs"].get(0)?;
    Some(
        ["num_read_ops", "num_write_ops", "num_unmap_ops"]
            .iter()
            .map(|k| b[*k].as_u64().unwrap_or(0))
            .sum(),
    )
}

/// Waits for `done()`. True if the run stalled: `bdev` completed no I/O for `STALL_WINDOW`, or
/// `secs` + `RUN_HARD_LIMIT` passed.
fn watch(target: &Target, bdev: &str, secs: u32, done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    let hard = Duration::from_secs(secs as u64) + RUN_HARD_LIMIT;
    let mut last: Option<u64> = None;
    let mut unchanged_since = Instant::now();
    loop {
        let sample_at = Instant::now() + Duration::from_millis(500);
        while Instant::now() < sample_at {
            if done() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if start.elapsed() >= hard {
            return true;
        }
        let now = io_count(target, bdev);
        if now.is_none() || now != last {
            last = now;
            unchanged_since = Instant::now();
        } else if unchanged_since.elapsed() >= STALL_WINDOW {
            return !done();
        }
    }
}

/// Turns on queue-depth sampling on every bdev and reads it back: where the I/O is held.
fn queue_depths(target: &Target) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(bdevs) = target.rpc_timeout("bdev_get_bdevs", Value::Null, Duration::from_secs(5)) else {
        return out;
    };
    let mut names = BTreeMap::new();
    for b in bdevs.as_array().into_iter().flatten() {
        let name = b["name"].as_str().unwrap_or_default().to_string();
        // An lvol is named by its UUID; its alias "lvs/lv" reads better. Other bdevs keep
        // their names (their first alias is their UUID).
        let shown = b["aliases"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|a| a.contains('/'))
            .map_or(name.clone(), str::to_string);
        let _ = target.rpc_timeout(
            "bdev_set_qd_sampling_period",
            json!({"name": name, "period": 1000}),
            Duration::from_secs(5),
        );
        names.insert(name, shown);
    }
    std::thread::sleep(Duration::from_millis(300));
    if let Ok(st) = target.rpc_timeout("bdev_get_iostat", Value::Null, Duration::from_secs(5)) {
        for b in st["bdevs"].as_array().into_iter().flatten() {
            let name = b["name"].as_str().unwrap_or_default();
            let shown = names.get(name).cloned().unwrap_or_else(|| name.to_string());
            out.insert(shown, b["queue_depth"].as_u64().unwrap_or(u64::MAX));
        }
    }
    out
}

/// Two malloc bdevs and a mirror "mr2" over them, created over RPC (while the pool is starved).
fn create_second_mirror(target: &Target) -> Result<(), String> {
    for n in ["n0", "n1"] {
        target
            .rpc(
                "bdev_malloc_create",
                json!({"name": n, "num_blocks": MALLOC_BLOCKS, "block_size": BLOCK_SIZE}),
            )
            .map_err(|e| e.to_string())?;
    }
    target
        .rpc(
            "bdev_mirror_create",
            json!({"name": "mr2", "level": "raid1", "base_bdevs": ["n0", "n1"], "superblock": false}),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The mirror "mr"'s per-leg counters, `admitted_parents` and `mirrors_below` from one
/// `bdev_mirror_get_bdevs`, into `r`.
fn read_mirror(target: &Target, r: &mut Run) -> Result<(), String> {
    let v = target
        .rpc_timeout("bdev_mirror_get_bdevs", json!({"name": "mr"}), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let legs = v
        .get(0)
        .and_then(|m| m["legs"].as_array())
        .ok_or_else(|| format!("no legs in {v}"))?;
    r.admitted = v[0]["admitted_parents"].as_u64();
    r.io_channels = v[0]["io_channels"].as_u64();
    r.mirrors_below = v[0]["mirrors_below"].as_u64();
    r.legs = legs
        .iter()
        .map(|l| LegCounters {
            bdev: l["bdev"].as_str().unwrap_or_default().to_string(),
            state: l["state"].as_str().unwrap_or_default().to_string(),
            nomem: l["nomem"].as_u64().unwrap_or(0),
            pool_empty: l["pool_empty"].as_u64().unwrap_or(0),
            reads: l["reads"].as_u64().unwrap_or(0),
            writes: l["writes"].as_u64().unwrap_or(0),
        })
        .collect();
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Checks and reporting
// ------------------------------------------------------------------------------------------------

fn header(title: &str) {
    println!("\n{title}");
    println!(
        "| {:<34} | {:>4} | {:>7} | {:<9} | {:<10} | {:>8} | mirror counters (run time)",
        "stack", "pool", "leg", "workload", "outcome", "IOPS"
    );
}

/// Runs `cases` in order, printing a row for each.
fn run_all(env: &SpdkEnv, title: &str, cases: &[Case]) -> Vec<Run> {
    header(title);
    cases
        .iter()
        .map(|c| {
            let r = run(env, c);
            println!("{}", r.row());
            r
        })
        .collect()
}

/// A mirror run must complete cleanly and show that the no-memory paths were taken: `nomem`
/// (a child answered -ENOMEM) or `pool_empty` (a leg's context pool was empty) above zero, and
/// with a tiny leg pool, `pool_empty` above zero.
fn check_mirror_run(r: &Run) -> Result<(), String> {
    r.clean().map_err(|_| r.explain())?;
    if r.legs.is_empty() {
        return Err(format!("no mirror counters\n{}", r.explain()));
    }
    // An empty pool slows the mirror down; it is never a leg's fault.
    if r.legs.iter().any(|l| l.state != "online") {
        return Err(format!("a leg is not online after the run\n{}", r.explain()));
    }
    if r.nomem() + r.pool_empty() == 0 {
        return Err(format!(
            "nomem and pool_empty are both 0: the pressure never reached the mirror\n{}",
            r.explain()
        ));
    }
    // Every mirror here keeps two copies; the rule depends on the channels open when read.
    let channels = r.io_channels.unwrap_or(u64::MAX) as u32;
    let plain_legs = !r.case.delay_legs;
    let admitted = admitted_parents(r.case.max_parents.unwrap_or(1024), 2, r.case.pool, channels, plain_legs) as u64;
    if r.admitted != Some(admitted) {
        return Err(format!(
            "admitted_parents reported {:?}, the rule (engine/admission.rs) gives {admitted}\n{}",
            r.admitted,
            r.explain()
        ));
    }
    // Which reserve thread serves it: one level up over mirrors.
    let below = u64::from(r.case.stack == Stack::NestedMirror);
    if r.mirrors_below != Some(below) {
        return Err(format!(
            "mirrors_below reported {:?}, not {below}\n{}",
            r.mirrors_below,
            r.explain()
        ));
    }
    if r.case.leg_pool.is_some() && r.pool_empty() == 0 {
        return Err(format!(
            "a leg pool of {:?} never ran empty\n{}",
            r.case.leg_pool,
            r.explain()
        ));
    }
    Ok(())
}

/// Panics with `what` unless the run a test measures against (a bar, a reference) ran clean.
fn assert_reference_ran(r: &Run, what: &str) {
    if let Err(e) = r.clean() {
        panic!("{what}: {e}\n{}", r.explain());
    }
}

/// Panics listing every failed run, or does nothing.
fn assert_all_mirror_runs_pass(runs: &[Run]) {
    let failures: Vec<String> = runs.iter().filter_map(|r| check_mirror_run(r).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} mirror runs failed:\n\n{}",
        failures.len(),
        runs.len(),
        failures.join("\n")
    );
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const LEG_POOLS: [Option<u32>; 4] = [None, Some(1), Some(2), Some(4)];

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

/// The bar is honest: the plain lvol completes at `PLAIN_LVOL_MIN_POOL`, and stalls one below.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn plain_lvol_bar_holds_at_the_minimal_pool_and_stalls_one_below() {
    let env = require_spdk();
    let runs = run_all(
        &env,
        "plain lvol on one malloc bdev: the bar",
        &[
            Case::new(Stack::Malloc, PLAIN_LVOL_MIN_POOL).lvol().secs(BAR_SECS),
            Case::new(Stack::Malloc, PLAIN_LVOL_MIN_POOL - 1).lvol().secs(BAR_SECS),
        ],
    );
    assert_reference_ran(
        &runs[0],
        &format!("the plain lvol no longer runs at PLAIN_LVOL_MIN_POOL = {PLAIN_LVOL_MIN_POOL}"),
    );
    assert!(
        runs[1].stalled(),
        "the plain lvol now also runs at {}: PLAIN_LVOL_MIN_POOL is no longer the minimum, re-measure it\n{}",
        PLAIN_LVOL_MIN_POOL - 1,
        runs[1].explain()
    );
}

/// The mirror straight under bdevperf, randwrite QD128, at the plain-lvol bar, with its default
/// leg pools and with 1, 2 and 4 child contexts per leg.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn mirror_randwrite_qd128_at_the_bar_with_tiny_leg_pools() {
    let env = require_spdk();
    let cases: Vec<Case> = [Stack::Mirror1, Stack::Mirror10]
        .iter()
        .flat_map(|&s| LEG_POOLS.map(|lp| Case::new(s, PLAIN_LVOL_MIN_POOL).leg_pool(lp)))
        .collect();
    let runs = run_all(&env, "mirror, randwrite, at the plain-lvol bar", &cases);
    assert_all_mirror_runs_pass(&runs);
}

/// The same with bdevperf's verify workload (writes read back and compared), leg pools default,
/// 2 and 4.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn mirror_verify_qd128_at_the_bar() {
    let env = require_spdk();
    let cases: Vec<Case> = [Stack::Mirror1, Stack::Mirror10]
        .iter()
        .flat_map(|&s| {
            [None, Some(2), Some(4)].map(|lp| Case::new(s, PLAIN_LVOL_MIN_POOL).leg_pool(lp).workload("verify"))
        })
        .collect();
    let runs = run_all(&env, "mirror, verify, at the plain-lvol bar", &cases);
    assert_all_mirror_runs_pass(&runs);
}

/// Verify with ONE child context per leg. Reads and writes mixed over such a pool: when a
/// child's `spdk_bdev_io` is freed, the parents that could use it are waiting for a leg context
/// (no `spdk_bdev_queue_io_wait` entry of the mirror is queued), or the mirror's wait callback
/// fires while its channel is busy and only records a signal; either way SPDK hands the
/// `spdk_bdev_io` to the next waiter, bdevperf, which admits one more parent. Once every usable
/// `spdk_bdev_io` is a mirror parent no child can be submitted again. (Measured: with
/// `spdk_bdev_free_io` moved after the engine has taken the child's completion, in
/// `backend.rs`'s `child_done`, this test and all the others here pass.)
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn mirror_verify_qd128_at_the_bar_leg_pool_1() {
    let env = require_spdk();
    let cases: Vec<Case> = [Stack::Mirror1, Stack::Mirror10]
        .iter()
        .map(|&s| Case::new(s, PLAIN_LVOL_MIN_POOL).leg_pool(Some(1)).workload("verify"))
        .collect();
    let runs = run_all(&env, "mirror, verify, leg pool 1, at the plain-lvol bar", &cases);
    assert_all_mirror_runs_pass(&runs);
}

/// Without a superblock the mirror's thread issues no metadata, so nothing had given that
/// thread a channel on its legs before the pool ran dry: the first child sent through the
/// reserve asked SPDK for one then, SPDK could not make the thread's management channel (it
/// takes `spdk_bdev_io` from the empty pool), and the child failed, failing both legs and every
/// host I/O after (found by a probe). One parent at a time and one context per leg make the
/// reserve the only way out for every child.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn mirror_without_superblock_verify_qd128_at_the_bar() {
    let env = require_spdk();
    let cases: Vec<Case> = [Stack::Mirror1, Stack::Mirror10]
        .iter()
        .flat_map(|&s| {
            [(Some(1), None), (None, Some(1))].map(|(lp, mp)| {
                Case::new(s, PLAIN_LVOL_MIN_POOL)
                    .no_superblock()
                    .leg_pool(lp)
                    .max_parents(mp)
                    .workload("verify")
            })
        })
        .collect();
    let runs = run_all(&env, "mirror without superblock, verify, at the plain-lvol bar", &cases);
    assert_all_mirror_runs_pass(&runs);
}

/// A mirror created while another runs starved. Every module's examine reads the new bdev from
/// the app thread, so the new mirror's first children came from there; they found no
/// `spdk_bdev_io` and went to the reserve, which was the mirrors' thread's own cache: that
/// same thread's, whose one `spdk_bdev_io` the examine read held. The reserve waited for it,
/// the starved mirror's reserve children queued behind, and both stalled for good (found by a
/// probe). The reserve is a thread of the module's own now (`reserve.rs`).
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn a_mirror_created_while_another_runs_starved_stalls_neither() {
    let env = require_spdk();
    let cases: Vec<Case> = [(Some(4), true), (Some(1), false)]
        .map(|(lp, sb)| {
            let c = Case::new(Stack::Mirror1, PLAIN_LVOL_MIN_POOL)
                .leg_pool(lp)
                .workload("verify")
                .secs(4)
                .create_during();
            if sb {
                c
            } else {
                c.no_superblock()
            }
        })
        .to_vec();
    let runs = run_all(&env, "a mirror created while another runs starved", &cases);
    assert_all_mirror_runs_pass(&runs);
}

/// spdk/spdk#3710's stack: an lvol store and a thick lvol on the mirror, randwrite (leg pools
/// default, 1, 4) and verify (default, 4) at QD128, at the lvol-on-mirror minimal pool.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn lvol_on_mirror_qd128_at_its_minimal_pool() {
    let env = require_spdk();
    let mut cases = Vec::new();
    for s in [Stack::Mirror1, Stack::Mirror10] {
        for lp in [None, Some(1), Some(4)] {
            cases.push(Case::new(s, LVOL_ON_MIRROR_MIN_POOL).lvol().leg_pool(lp));
        }
        for lp in [None, Some(4)] {
            cases.push(
                Case::new(s, LVOL_ON_MIRROR_MIN_POOL)
                    .lvol()
                    .leg_pool(lp)
                    .workload("verify"),
            );
        }
    }
    let runs = run_all(&env, "lvol on the mirror, at the lvol-on-mirror minimal pool", &cases);
    assert_all_mirror_runs_pass(&runs);
}

/// The lvol on the mirror, verify with one child context per leg (see
/// [`mirror_verify_qd128_at_the_bar_leg_pool_1`]).
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn lvol_on_mirror_verify_qd128_leg_pool_1() {
    let env = require_spdk();
    let cases: Vec<Case> = [Stack::Mirror1, Stack::Mirror10]
        .iter()
        .map(|&s| {
            Case::new(s, LVOL_ON_MIRROR_MIN_POOL)
                .lvol()
                .leg_pool(Some(1))
                .workload("verify")
        })
        .collect();
    let runs = run_all(&env, "lvol on the mirror, verify, leg pool 1", &cases);
    assert_all_mirror_runs_pass(&runs);
}

/// spdk/spdk#3710's scenario: two thin lvols on one store, each written at QD32 by its own
/// bdevperf job (thread), with a pool of [`THIN_POOL`]; then the first is deleted. Over one
/// plain malloc bdev this runs (asserted: the bar); over the mirror it must too. It stalled
/// for good before the mirror's admission was capped by the pool (`engine/admission.rs`): one
/// job's children took the rest of the pool, and the other job's thread, holding its lvol I/O
/// with nothing in flight to free, was never woken (SPDK raid1 stalls here; see
/// [`compare_with_spdk_raid1`]).
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn two_thin_lvols_on_the_mirror_run_where_they_run_on_one_plain_bdev() {
    let env = require_spdk();
    let cases: Vec<Case> = [Stack::Malloc, Stack::Mirror1, Stack::Mirror10]
        .iter()
        .map(|&s| Case::new(s, THIN_POOL).two_thin_lvols())
        .collect();
    let runs = run_all(&env, "two thin lvols, two jobs, then a delete", &cases);
    assert_reference_ran(
        &runs[0],
        &format!("the bar (two thin lvols on one malloc bdev) no longer runs at {THIN_POOL}"),
    );
    assert_all_mirror_runs_pass(&runs[1..]);
}

/// At the plain-lvol bar the lvol on the mirror stalls (so does the lvol on SPDK's raid1, see
/// [`compare_with_spdk_raid1`]), but the stuck I/O is the lvol's: the lvol holds the usable
/// `spdk_bdev_io`s and the mirror and its legs hold none. A clean completion passes too.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn lvol_on_mirror_at_the_plain_bar_stalls_in_the_lvol_not_in_the_mirror() {
    let env = require_spdk();
    let cases: Vec<Case> = [Stack::Mirror1, Stack::Mirror10]
        .iter()
        .flat_map(|&s| [None, Some(1)].map(|lp| Case::new(s, PLAIN_LVOL_MIN_POOL).lvol().leg_pool(lp)))
        .collect();
    let runs = run_all(&env, "lvol on the mirror, at the plain-lvol bar", &cases);
    let mut failures = Vec::new();
    for r in &runs {
        match &r.outcome {
            Outcome::Completed(_) => {
                if let Err(e) = check_mirror_run(r) {
                    failures.push(e);
                }
            }
            Outcome::Stalled => {
                println!("  held at the stall: {:?}", r.queue_depths);
                let mut mirror_side: Vec<String> = vec!["mr".into()];
                mirror_side.extend((0..r.case.stack.legs()).map(|i| format!("m{i}")));
                let lvol = r.queue_depths.get("lvs/lv").copied().unwrap_or(0);
                let held: Vec<String> = mirror_side
                    .iter()
                    .filter(|b| r.queue_depths.get(*b).copied() != Some(0))
                    .cloned()
                    .collect();
                if !held.is_empty() || lvol == 0 {
                    failures.push(format!(
                        "the stall is not (only) the lvol's: bdevs of the mirror holding I/O (or unreadable): \
                         {held:?}, lvol holding {lvol}\n{}",
                        r.explain()
                    ));
                }
            }
            Outcome::Broken(_) => failures.push(r.explain()),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Legs that are another module's layer take an `spdk_bdev_io` of their own for every child
/// (`bdev_delay` here). One core (one channel), verify QD128, at a pool where one delay bdev
/// runs: the lone channel used to admit at least 64 parents, whose children then held what
/// the layer below needed to serve them, and the mirror stalled for good at every pool up to
/// 224 (one delay bdev runs from 128). A mirror over such legs now keeps the pool's share of
/// parents (`engine/admission.rs`).
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn a_lone_channel_over_layered_legs_runs_where_one_such_leg_runs() {
    let env = require_spdk();
    let cases = [
        Case::new(Stack::Malloc, DELAY_LEGS_POOL)
            .delay_legs()
            .workload("verify"),
        Case::new(Stack::Mirror1, DELAY_LEGS_POOL)
            .delay_legs()
            .workload("verify"),
        Case::new(Stack::Mirror10, DELAY_LEGS_POOL)
            .delay_legs()
            .workload("verify"),
        Case::new(Stack::Mirror1, DELAY_LEGS_POOL).delay_legs(),
    ];
    let runs = run_all(&env, "over delay legs, one channel", &cases);
    assert_reference_ran(
        &runs[0],
        &format!("one delay bdev no longer runs at DELAY_LEGS_POOL = {DELAY_LEGS_POOL}"),
    );
    assert_all_mirror_runs_pass(&runs[1..]);
}

/// Over layered legs with a per-thread cache of 16, the pool runs dry with the mirror's
/// children out and held in the layer below, waiting for an `spdk_bdev_io` freed on their
/// thread, and the mirror's own wait at the head of SPDK's line (the children it parks come
/// before new parents) took each one freed there first; or every parent admitted had its
/// children so held, none parked, and nothing freed on that thread any more (the pool itself
/// had plenty: SPDK's waits are per thread). One core, bdevperf verify QD128, pool 128: one
/// delay bdev runs; the mirror stalled for good at every pool up to 160. Now a channel whose
/// children stay out with parents waiting sends its children through the reserve and lets one
/// more parent in at a time, whose completion frees a host's `spdk_bdev_io` on that thread.
/// Not a speed test: it runs at a crawl there (2-6 K IOPS, one child at a time through the
/// reserve), where it stalled.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn children_held_in_a_layer_below_are_freed_through_the_reserve() {
    let env = require_spdk();
    let case = |stack| Case::new(stack, STUCK_BELOW_POOL).delay_legs().cache(STUCK_BELOW_CACHE);
    let cases = [
        case(Stack::Malloc).workload("verify"),
        case(Stack::Mirror1).workload("verify"),
        case(Stack::Mirror10).workload("verify"),
        case(Stack::Mirror1),
    ];
    let runs = run_all(&env, "over delay legs, cache 16", &cases);
    assert_reference_ran(
        &runs[0],
        &format!("one delay bdev no longer runs at STUCK_BELOW_POOL = {STUCK_BELOW_POOL}, cache {STUCK_BELOW_CACHE}"),
    );
    assert_all_mirror_runs_pass(&runs[1..]);
}

/// A mirror over mirrors, straight under bdevperf at QD128 with a pool of 16 (cache 1). All
/// reserve I/O went from one reserve thread: the upper mirror's child sent there became a host
/// I/O of the lower mirror on that thread, whose own children then found that thread's one
/// cached `spdk_bdev_io` held by it and waited for it there, for good (stalled at once, with
/// and without superblocks). Each level has its own reserve now (`reserve.rs`). And a child
/// that found the pool empty while its channel's reserve child was out waited for the 100 us
/// poller (the reserve child's `spdk_bdev_io` goes back on the reserve thread, which wakes
/// nobody on the channel's): it crawled at ~9 K IOPS where SPDK's raid1 over raid1s ran
/// ~140-160 K. Not a speed test: a run at poller pace is a missing wake-up, so the mirror must
/// do at least a quarter of SPDK's nested raid1's IOPS in the same test (a crawl did 1/17).
/// And once every region was clean, the first write stalled for good: the upper mirror's
/// bitmap write into a lower mirror held the app thread's one cached `spdk_bdev_io`, and the
/// lower mirror's own bitmap write, from the same thread then, waited for it. Metadata goes
/// from the level's reserve now (`meta_io.rs`).
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn a_mirror_over_mirrors_runs_a_starved_pool_at_more_than_poller_pace() {
    let env = require_spdk();
    let pool = 16;
    let cases = [
        Case::new(Stack::NestedSpdkRaid1, pool).workload("verify"),
        Case::new(Stack::NestedMirror, pool).workload("verify"),
        Case::new(Stack::NestedMirror, pool).workload("verify").no_superblock(),
        Case::new(Stack::NestedMirror, pool),
        // Idle until both levels' regions are clean (the upper's clear writes its bitmap into
        // the lower's first region, clean 5 s later), then again: the first write's bitmap
        // write into the lower mirror makes the lower mirror write its own.
        Case::new(Stack::NestedMirror, pool)
            .workload("verify")
            .secs(1)
            .again_after(Duration::from_secs(14)),
        // A lower mirror's leg fails mid-run: recorded in its superblock (from its reserve),
        // the host sees no error.
        Case::new(Stack::NestedMirror, pool)
            .workload("verify")
            .fail_a_lower_leg_during(),
    ];
    let runs = run_all(&env, "a mirror over mirrors, pool 16", &cases);
    assert_reference_ran(&runs[0], "the reference (SPDK raid1 over raid1s) did not run");
    assert_all_mirror_runs_pass(&runs[1..]);
    let floor = runs[0].iops() / 4.0;
    for r in &runs[1..3] {
        assert!(
            r.iops() >= floor,
            "{:.0} IOPS, below a quarter of SPDK's nested raid1's ({:.0}): parked children waited for the poller\n{}",
            r.iops(),
            runs[0].iops(),
            r.explain()
        );
    }
}

/// Measurements, not assertions: SPDK's raid1 (and its raid0 over raid1s, the nearest it has to
/// raid10) in the same configurations, with the mirror's rows where they differ.
#[test]
#[cfg_attr(
    not(spdk),
    ignore = "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped"
)]
fn compare_with_spdk_raid1() {
    let env = require_spdk();
    let cases = [
        Case::new(Stack::SpdkRaid1, PLAIN_LVOL_MIN_POOL),
        Case::new(Stack::SpdkRaid1, PLAIN_LVOL_MIN_POOL).workload("verify"),
        Case::new(Stack::SpdkRaid1, 3),
        Case::new(Stack::SpdkRaid1, 2),
        // (Not at 2: the module's reserve thread holds one thread's cache of the pool, so with
        // the app's and bdevperf's job thread's there is none left for the job thread, and
        // bdevperf cannot start. SPDK raid1 stalls at 2 and 3 alike.)
        Case::new(Stack::Mirror1, 3),
        Case::new(Stack::SpdkRaid1, THIN_POOL).two_thin_lvols(),
        Case::new(Stack::SpdkRaid1, PLAIN_LVOL_MIN_POOL).lvol(),
        Case::new(Stack::SpdkRaid1, LVOL_ON_SPDK_RAID1_MIN_POOL).lvol(),
        Case::new(Stack::Mirror1, LVOL_ON_SPDK_RAID1_MIN_POOL).lvol(),
        Case::new(Stack::SpdkRaid1, LVOL_ON_MIRROR_MIN_POOL)
            .lvol()
            .workload("verify"),
        Case::new(Stack::SpdkRaid0OverRaid1, PLAIN_LVOL_MIN_POOL),
        Case::new(Stack::SpdkRaid0OverRaid1, PLAIN_LVOL_MIN_POOL).workload("verify"),
        Case::new(Stack::SpdkRaid0OverRaid1, LVOL_ON_MIRROR_MIN_POOL).lvol(),
    ];
    let runs = run_all(&env, "comparison with SPDK's raid1 (measurement)", &cases);
    for r in runs.iter().filter(|r| r.stalled()) {
        println!("  stalled: {} -- I/O held: {:?}", r.case.describe(), r.queue_depths);
    }
    let broken: Vec<String> = runs
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Broken(_)))
        .map(Run::explain)
        .collect();
    assert!(
        broken.is_empty(),
        "runs that could not be measured:\n{}",
        broken.join("\n")
    );
}
