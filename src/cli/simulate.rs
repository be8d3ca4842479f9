//! `spdk-mirror simulate`: the engine under a seeded random workload on the simulator.

use clap::{Args, ValueEnum};

use super::bad_input;
use crate::cli::geometry::GeometryArgs;
use spdk_mirror::engine::{ReadPolicy, Strategy};
use spdk_mirror::placement::no_such_leg;
use spdk_mirror::sim::{run as run_sim, BitmapConfig, Faults, LegModel, SimConfig, SimReport};

#[derive(Clone, Copy, ValueEnum)]
enum StrategyArg {
    /// Submit each child as soon as it is allocated (md's fix).
    Immediate,
    /// Allocate every child, then submit (md's old, deadlocking behaviour).
    Batch,
}

#[derive(Args)]
pub struct SimArgs {
    #[arg(long, value_enum, default_value = "immediate")]
    strategy: StrategyArg,
    #[command(flatten)]
    geo: GeometryArgs,
    /// Host queue depth.
    #[arg(long, default_value_t = 32)]
    qd: u32,
    /// Host I/Os to run.
    #[arg(long, default_value_t = 100_000)]
    ios: u64,
    /// Child contexts in each leg's pool.
    #[arg(long, default_value_t = 64)]
    leg_pool: u32,
    /// Shared I/O pool (SPDK's bdev_io pool) for parents and children together.
    #[arg(long, default_value_t = 256)]
    io_pool: u32,
    /// Admission bound (default: min(qd, io_pool - 1)).
    #[arg(long)]
    max_parents: Option<u32>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Percent of reads.
    #[arg(long, default_value_t = 50)]
    read_pct: u32,
    /// Largest host I/O in blocks.
    #[arg(long, default_value_t = 32)]
    max_io_blocks: u64,
    /// This leg's device dies halfway through (or after --fail-after completions).
    #[arg(long)]
    fail_leg: Option<u32>,
    #[arg(long)]
    fail_after: Option<u64>,
    /// Percent of children completing synchronously inside submit.
    #[arg(long, default_value_t = 0)]
    inline_pct: u32,
    /// Percent of submissions answered "no memory" regardless of the pool.
    #[arg(long, default_value_t = 0)]
    nomem_pct: u32,
    /// Inject errors on this leg (with --error-pct).
    #[arg(long)]
    error_leg: Option<u32>,
    /// Inject read errors only (medium errors) on this leg (with --error-pct).
    #[arg(long)]
    read_error_leg: Option<u32>,
    #[arg(long, default_value_t = 0)]
    error_pct: u32,
    /// Leg latency and jitter in microseconds, and its queue depth.
    #[arg(long, default_value_t = 20)]
    latency_us: u64,
    #[arg(long, default_value_t = 20)]
    jitter_us: u64,
    #[arg(long, default_value_t = 32)]
    leg_qd: u32,
    /// How reads pick a copy: least_outstanding, round_robin or preferred (with --preferred-leg).
    #[arg(long, default_value = "least_outstanding")]
    read_policy: String,
    #[arg(long)]
    preferred_leg: Option<u32>,
    /// Run with the write-intent bitmap, one bit per this many KiB of mirror data.
    #[arg(long)]
    bitmap_region_kb: Option<u64>,
    /// How long a bitmap write to the legs takes, in microseconds.
    #[arg(long, default_value_t = 30)]
    bitmap_flush_us: u64,
    /// Idle time before a dirty region is cleared, in microseconds (md's daemon_sleep).
    #[arg(long, default_value_t = 5000)]
    bitmap_idle_us: u64,
    /// Stop dead after this many completions (a crash) and report which legs' blocks differ and
    /// whether the bitmap covers them.
    #[arg(long)]
    crash_after: Option<u64>,
    /// Print only the JSON line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: SimArgs) -> i32 {
    let spec = match args.geo.spec(Some(16384)) {
        Ok(s) => s,
        Err(e) => return bad_input(e),
    };
    for (field, leg) in [("error_leg", args.error_leg), ("read_error_leg", args.read_error_leg)] {
        if let Some(leg) = leg.filter(|&l| l >= spec.legs) {
            return bad_input(format!("{field}: {}", no_such_leg(leg, spec.legs)));
        }
    }
    if args.leg_qd == 0 {
        return bad_input("leg_qd: must be at least 1");
    }
    let spec_block_size = spec.block_size;
    let mut cfg = SimConfig::new(spec);
    cfg.strategy = match args.strategy {
        StrategyArg::Immediate => Strategy::Immediate,
        StrategyArg::Batch => Strategy::Batch,
    };
    cfg.qd = args.qd;
    cfg.ios = args.ios;
    cfg.leg_pool = args.leg_pool;
    cfg.io_pool = args.io_pool;
    cfg.max_parents = args.max_parents;
    cfg.seed = args.seed;
    cfg.read_pct = args.read_pct;
    cfg.max_io_blocks = args.max_io_blocks;
    cfg.fail_leg = args.fail_leg;
    cfg.fail_after = args.fail_after;
    if let Some(kb) = args.bitmap_region_kb {
        let region_blocks = kb.saturating_mul(1024) / spec_block_size as u64;
        if region_blocks == 0 {
            return bad_input("bitmap_region_kb: a region must hold at least one block");
        }
        cfg.bitmap = Some(BitmapConfig {
            region_blocks,
            flush_latency_ns: args.bitmap_flush_us.saturating_mul(1000),
            idle_clear_ns: args.bitmap_idle_us.saturating_mul(1000),
        });
    }
    cfg.crash_after = args.crash_after;
    cfg.read_policy = match ReadPolicy::parse(&args.read_policy, args.preferred_leg) {
        Ok(p) => p,
        Err(e) => return bad_input(e),
    };
    cfg.faults = Faults {
        inline_pct: args.inline_pct,
        nomem_pct: args.nomem_pct,
        error_leg: args.error_leg.map(|l| (l, args.error_pct)),
        read_error_leg: args.read_error_leg.map(|l| (l, args.error_pct)),
        stall: None,
    };
    cfg.model = LegModel {
        latency_ns: args.latency_us.saturating_mul(1000),
        jitter_ns: args.jitter_us.saturating_mul(1000),
        queue_depth: args.leg_qd,
    };
    let report = match run_sim(&cfg) {
        Ok(r) => r,
        Err(e) => return bad_input(e),
    };
    if !args.json {
        print_summary(&report);
    }
    println!("{}", serde_json::to_string(&report).expect("report serialises"));
    if report.stalled {
        3
    } else if let Some(c) = &report.crash {
        // A crash run succeeds when resync would find every difference.
        i32::from(c.uncovered_blocks != 0 || report.mismatches != 0)
    } else if report.clean() {
        0
    } else {
        1
    }
}

fn print_summary(r: &SimReport) {
    let layout = if r.layout.is_empty() {
        String::new()
    } else {
        format!(" {}", r.layout)
    };
    println!(
        "{}{} over {} legs, strategy {}, admission bound {} parents, seed {}",
        r.level, layout, r.legs, r.strategy, r.max_parents, r.seed
    );
    println!(
        "  {} of {} I/Os completed ({} failed) in {} us simulated: {} IOPS",
        r.completed, r.submitted, r.failed, r.sim_time_us, r.iops_sim
    );
    println!(
        "  parked on an empty leg pool {} times, on shared I/O {} times; {} children completed inside submit",
        r.engine.pool_waits, r.engine.io_waits, r.engine.inline_completions
    );
    if !r.legs_failed.is_empty() {
        println!("  legs failed: {:?} (the mirror ran degraded)", r.legs_failed);
    }
    if r.stalled {
        println!("  STALLED: I/O outstanding and nothing in flight to free a pool (the md deadlock)");
    }
    if let Some(b) = &r.bitmap {
        println!(
            "  bitmap: {} of {} regions dirty, {} flushes, {} writes rode free, {} waited, {} clears",
            b.dirty_regions, b.regions, b.flushes, b.free_rides, b.waits, b.cleared
        );
    }
    if let Some(c) = &r.crash {
        println!(
            "  crash: {} blocks differ between legs, {} outside the dirty regions; resync covers {} blocks",
            c.divergent_blocks, c.uncovered_blocks, c.resync_blocks
        );
    }
    println!("  data mismatches: {}", r.mismatches);
}
