//! A seeded random workload over the simulator: random reads and writes (ranges overlap over
//! time and may cross chunk boundaries), every read checked against the last completed write,
//! every working leg checked against the others at the end, and a stall detected when nothing
//! is left to happen while I/O is still outstanding.

use serde::Serialize;
use thiserror::Error;

use super::backend::{block_value, Faults, LegModel, Notice, SimBackend};
use super::intent::{BitmapConfig, SimIntent};
use super::rng::Rng;
use crate::bitmap::WriteIntentBitmap;
use crate::engine::NoBitmap;
use crate::engine::{Engine, EngineConfig, EngineStats, HostStatus, IoOp, IoRequest, ReadPolicy, Strategy};
use crate::placement::{Geometry, GeometryError, GeometrySpec};

/// Marks a block whose content is unknown (a failed write may or may not have landed).
const UNKNOWN: u64 = u64::MAX;

/// Simulated time without a single host completion after which a run counts as stalled.
const STALL_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub geometry: GeometrySpec,
    pub strategy: Strategy,
    pub qd: u32,
    pub ios: u64,
    pub leg_pool: u32,
    pub io_pool: u32,
    /// Admission bound; default `min(qd, io_pool - 1)` so children always have shared I/O.
    pub max_parents: Option<u32>,
    pub seed: u64,
    pub read_pct: u32,
    pub max_io_blocks: u64,
    /// This leg's device dies after `fail_after` host completions (default: half the I/Os).
    pub fail_leg: Option<u32>,
    pub fail_after: Option<u64>,
    pub faults: Faults,
    pub model: LegModel,
    /// Record every child submission (for tests that prove none is submitted twice).
    pub log_submissions: bool,
    pub read_policy: ReadPolicy,
    /// Run with the write-intent bitmap.
    pub bitmap: Option<BitmapConfig>,
    /// Stop dead after this many host completions, as a crash would, and check that every
    /// block whose copies differ lies in a region the bitmap had made durably dirty.
    pub crash_after: Option<u64>,
}

impl SimConfig {
    /// A configuration with the simulator's defaults for everything but the geometry.
    pub fn new(geometry: GeometrySpec) -> Self {
        SimConfig {
            geometry,
            strategy: Strategy::Immediate,
            qd: 32,
            ios: 100_000,
            leg_pool: 64,
            io_pool: 256,
            max_parents: None,
            seed: 1,
            read_pct: 50,
            max_io_blocks: 32,
            fail_leg: None,
            fail_after: None,
            faults: Faults::default(),
            model: LegModel {
                latency_ns: 20_000,
                jitter_ns: 20_000,
                queue_depth: 32,
            },
            log_submissions: false,
            read_policy: ReadPolicy::default(),
            bitmap: None,
            crash_after: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SimConfigError {
    #[error(transparent)]
    Geometry(#[from] GeometryError),
    #[error("qd: must be at least 1")]
    Qd,
    #[error("leg_pool: must be at least 1 child context per leg")]
    LegPool,
    #[error("io_pool: must be larger than the admission bound ({max_parents} parents), got {io_pool}")]
    IoPool { io_pool: u32, max_parents: u32 },
    #[error("max_parents: must be at least 1")]
    MaxParents,
    #[error("read_pct: must be 0..=100, got {0}")]
    ReadPct(u32),
    #[error("fail_leg: leg {0} does not exist (legs are 0..{1})")]
    FailLeg(u32, u32),
    #[error("preferred_leg: leg {0} does not exist (legs are 0..{1})")]
    PreferredLeg(u32, u32),
    #[error("max_io_blocks: must be at least 1")]
    MaxIo,
    #[error("inline_pct/nomem_pct: must be 0..=100 (nomem_pct below 100)")]
    Percent,
}

/// What a run did. The CLI prints it as its last line.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub strategy: &'static str,
    pub level: String,
    pub layout: String,
    pub legs: u32,
    pub data_blocks: u64,
    pub seed: u64,
    pub max_parents: u32,
    pub submitted: u64,
    pub completed: u64,
    pub failed: u64,
    pub stalled: bool,
    pub mismatches: u64,
    pub sim_time_us: u64,
    pub iops_sim: u64,
    pub legs_failed: Vec<u32>,
    /// Child reads each leg served (how the read policy spread them).
    pub leg_reads: Vec<u64>,
    pub engine: EngineStats,
    /// Every child context back in its pool and every shared I/O back at the end.
    pub pools_full: bool,
    /// With the bitmap: regions durably dirty at the end, flushes, writes that paid nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitmap: Option<BitmapReport>,
    /// With `crash_after`: blocks whose copies differed at the crash, and how many of them lay
    /// outside the durably dirty regions (must be 0: resync would miss them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crash: Option<CrashReport>,
    /// When stalled: where each unfinished parent waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parked: Option<String>,
    #[serde(skip)]
    pub submissions: Vec<(u64, u32, u32)>,
}

impl SimReport {
    /// The run met every promise: all submitted I/O completed, none failed, no stall, no
    /// mismatch.
    pub fn clean(&self) -> bool {
        !self.stalled && self.completed == self.submitted && self.failed == 0 && self.mismatches == 0
    }
}

pub fn validate(cfg: &SimConfig) -> Result<(Geometry, u32), SimConfigError> {
    let geo = Geometry::new(&cfg.geometry)?;
    if cfg.qd == 0 {
        return Err(SimConfigError::Qd);
    }
    if cfg.leg_pool == 0 {
        return Err(SimConfigError::LegPool);
    }
    if cfg.read_pct > 100 {
        return Err(SimConfigError::ReadPct(cfg.read_pct));
    }
    if cfg.max_io_blocks == 0 {
        return Err(SimConfigError::MaxIo);
    }
    if cfg.faults.inline_pct > 100 || cfg.faults.nomem_pct >= 100 {
        return Err(SimConfigError::Percent);
    }
    if let ReadPolicy::Preferred(leg) = cfg.read_policy {
        if leg >= geo.legs() {
            return Err(SimConfigError::PreferredLeg(leg, geo.legs()));
        }
    }
    if let Some(leg) = cfg.fail_leg {
        if leg >= geo.legs() {
            return Err(SimConfigError::FailLeg(leg, geo.legs()));
        }
    }
    let max_parents = match cfg.max_parents {
        Some(0) => return Err(SimConfigError::MaxParents),
        Some(m) => m,
        None => cfg.qd.min(cfg.io_pool.saturating_sub(1)).max(1),
    };
    if cfg.io_pool <= max_parents {
        return Err(SimConfigError::IoPool {
            io_pool: cfg.io_pool,
            max_parents,
        });
    }
    Ok((geo, max_parents))
}

struct Host {
    busy_w: Vec<u16>,
    busy_r: Vec<u16>,
    expected: Vec<u64>,
    reqs: Vec<IoRequest>,
    free: Vec<u32>,
    completed: u64,
    failed: u64,
    mismatches: u64,
    last_completion: u64,
}

impl Host {
    fn conflicts(&self, req: &IoRequest) -> bool {
        let r = req.lba as usize..(req.lba + req.blocks) as usize;
        match req.op {
            IoOp::Read => self.busy_w[r].iter().any(|&c| c > 0),
            _ => self.busy_w[r.clone()].iter().any(|&c| c > 0) || self.busy_r[r].iter().any(|&c| c > 0),
        }
    }

    fn mark(&mut self, req: &IoRequest, add: bool) {
        let r = req.lba as usize..(req.lba + req.blocks) as usize;
        let counts = if req.op == IoOp::Read {
            &mut self.busy_r[r]
        } else {
            &mut self.busy_w[r]
        };
        for c in counts {
            if add {
                *c += 1
            } else {
                *c -= 1
            }
        }
    }
}

/// Runs the workload. Errors only for a bad configuration; a stall or mismatch is reported.
pub fn run(cfg: &SimConfig) -> Result<SimReport, SimConfigError> {
    let (geo, max_parents) = validate(cfg)?;
    let data_blocks = geo.data_blocks();
    let max_io = cfg.max_io_blocks.min(data_blocks);
    let mut backend = SimBackend::new(
        geo.legs(),
        geo.used_leg_blocks(),
        cfg.model,
        cfg.leg_pool,
        cfg.io_pool,
        cfg.qd,
        max_io,
        cfg.faults.clone(),
        cfg.seed,
    );
    if cfg.log_submissions {
        backend.submitted_log = Some(Vec::new());
    }
    let intent = match cfg.bitmap {
        None => SimIntent::None(NoBitmap),
        Some(b) => SimIntent::Bitmap(Box::new(WriteIntentBitmap::new(
            data_blocks,
            b.region_blocks,
            None,
            b.idle_clear_ns,
        ))),
    };
    let mut engine = Engine::with_intent(
        geo.clone(),
        EngineConfig {
            max_parents,
            strategy: cfg.strategy,
            read_policy: cfg.read_policy,
        },
        backend,
        intent,
    );
    let flush_latency = cfg.bitmap.map_or(0, |b| b.flush_latency_ns);
    let mut crashed = false;
    let mut rng = Rng::new(cfg.seed.wrapping_mul(31).wrapping_add(7));
    let mut host = Host {
        busy_w: vec![0; data_blocks as usize],
        busy_r: vec![0; data_blocks as usize],
        expected: vec![0; data_blocks as usize],
        reqs: vec![
            IoRequest {
                op: IoOp::Read,
                lba: 0,
                blocks: 0
            };
            cfg.qd as usize
        ],
        free: (0..cfg.qd).rev().collect(),
        completed: 0,
        failed: 0,
        mismatches: 0,
        last_completion: 0,
    };
    let fail_after = cfg.fail_after.unwrap_or(cfg.ios / 2);
    let mut killed = false;
    let mut issued = 0u64;
    let mut stalled = false;

    loop {
        // Keep the queue full, leaving out ranges that conflict with I/O in flight.
        while issued < cfg.ios {
            let Some(&slot) = host.free.last() else { break };
            let op = if rng.percent(cfg.read_pct) {
                IoOp::Read
            } else {
                IoOp::Write
            };
            let blocks = 1 + rng.below(max_io);
            let req = IoRequest {
                op,
                lba: rng.below(data_blocks - blocks + 1),
                blocks,
            };
            if host.conflicts(&req) {
                if host.free.len() < cfg.qd as usize {
                    break; // wait for a completion rather than spin
                }
                continue;
            }
            host.free.pop();
            host.mark(&req, true);
            host.reqs[slot as usize] = req;
            issued += 1;
            let h = &mut engine.backend_mut().hosts[slot as usize];
            h.lba = req.lba;
            h.write_id = if op == IoOp::Write { issued } else { 0 };
            if op == IoOp::Write {
                for (i, v) in h.buf[..blocks as usize].iter_mut().enumerate() {
                    *v = block_value(issued, req.lba + i as u64);
                }
            }
            engine.submit(slot, req);
            settle(&mut engine, &mut host, flush_latency);
        }
        if host.completed == cfg.ios {
            break;
        }
        if cfg.crash_after.is_some_and(|n| host.completed >= n) {
            crashed = true;
            break;
        }
        if let (Some(leg), false) = (cfg.fail_leg, killed) {
            if host.completed >= fail_after {
                engine.backend_mut().kill_leg(leg);
                killed = true;
            }
        }
        match engine.backend_mut().next_notice() {
            None => {
                stalled = true;
                break;
            }
            Some(Notice::ChildDone(child, info, status)) => engine.child_done(child, info, status),
            Some(Notice::Poll) => engine.poll(),
            Some(Notice::BitmapFlushed) => {
                let released = engine
                    .intent_mut()
                    .bitmap_mut()
                    .map(|b| b.flush_done())
                    .unwrap_or_default();
                for id in released {
                    engine.write_intent_ready(id);
                }
            }
        }
        settle(&mut engine, &mut host, flush_latency);
        if engine.backend().now() > host.last_completion + STALL_NS {
            stalled = true;
            break;
        }
    }

    let now = engine.backend().now();
    if !stalled && !crashed {
        host.mismatches += compare_legs(&engine, &host.expected);
    }
    let crash = crashed.then(|| crash_check(&engine));
    let bitmap = engine.intent_mut().bitmap().map(|b| BitmapReport {
        regions: b.regions(),
        dirty_regions: b.dirty_regions(),
        flushes: b.stats.flushes,
        free_rides: b.stats.free_rides,
        waits: b.stats.waits,
        cleared: b.stats.cleared,
    });
    let stats = engine.stats().clone();
    let legs_failed: Vec<u32> = (0..geo.legs()).filter(|&l| engine.leg_failed(l)).collect();
    let b = engine.backend();
    let pools_full = b.io_free() == b.io_capacity() && (0..geo.legs()).all(|l| b.pool_free(l) == cfg.leg_pool as usize);
    let submissions = engine.backend_mut().submitted_log.take().unwrap_or_default();
    Ok(SimReport {
        strategy: match cfg.strategy {
            Strategy::Immediate => "immediate",
            Strategy::Batch => "batch",
        },
        level: geo.level().to_string(),
        layout: match geo.level() {
            crate::placement::Level::Raid1 => String::new(),
            crate::placement::Level::Raid10 => geo.layout().to_string(),
        },
        legs: geo.legs(),
        data_blocks,
        seed: cfg.seed,
        max_parents,
        submitted: issued,
        completed: host.completed,
        failed: host.failed,
        stalled,
        mismatches: host.mismatches,
        sim_time_us: now / 1000,
        iops_sim: if now > 0 {
            (host.completed as u128 * 1_000_000_000 / now as u128) as u64
        } else {
            0
        },
        legs_failed,
        leg_reads: (0..geo.legs()).map(|l| engine.leg_stats(l).reads).collect(),
        engine: stats,
        pools_full,
        bitmap,
        crash,
        parked: stalled.then(|| engine.describe_parked()),
        submissions,
    })
}

/// Delivers what the backend has for the engine and the host until nothing is left.
fn settle(engine: &mut Engine<SimBackend, SimIntent>, host: &mut Host, flush_latency: u64) {
    bitmap_daemon(engine, flush_latency);
    deliver(engine, host);
    bitmap_daemon(engine, flush_latency);
}

/// The bitmap's daemon: clears idle regions, and writes out what changed.
fn bitmap_daemon(engine: &mut Engine<SimBackend, SimIntent>, flush_latency: u64) {
    let now = engine.backend().now();
    if let Some(b) = engine.intent_mut().bitmap_mut() {
        b.tick(now);
        if b.take_flush().is_some() {
            engine.backend_mut().start_bitmap_flush(flush_latency);
        }
    }
}

fn deliver(engine: &mut Engine<SimBackend, SimIntent>, host: &mut Host) {
    loop {
        if engine.backend_mut().take_io_signal() {
            engine.io_available();
            continue;
        }
        let done = std::mem::take(&mut engine.backend_mut().completed);
        if done.is_empty() {
            return;
        }
        let now = engine.backend().now();
        for &(slot, status) in &done {
            assert!(!host.free.contains(&slot), "host I/O in slot {slot} completed twice");
            let req = host.reqs[slot as usize];
            host.mark(&req, false);
            host.completed += 1;
            host.last_completion = now;
            let range = req.lba as usize..(req.lba + req.blocks) as usize;
            match (req.op, status) {
                (_, HostStatus::Failed) => {
                    host.failed += 1;
                    if req.op == IoOp::Write {
                        host.expected[range].fill(UNKNOWN);
                    }
                }
                (IoOp::Read, HostStatus::Success) => {
                    let buf = &engine.backend().hosts[slot as usize].buf[..req.blocks as usize];
                    host.mismatches += buf
                        .iter()
                        .zip(&host.expected[range])
                        .filter(|(got, want)| **want != UNKNOWN && got != want)
                        .count() as u64;
                }
                (_, HostStatus::Success) => {
                    let id = engine.backend().hosts[slot as usize].write_id;
                    for (i, e) in host.expected[range].iter_mut().enumerate() {
                        *e = block_value(id, req.lba + i as u64);
                    }
                }
            }
            host.free.push(slot);
        }
        // Hand the buffer back for reuse.
        let mut done = done;
        done.clear();
        engine.backend_mut().completed = done;
    }
}

/// Blocks whose copies on working legs disagree with each other or with the last write.
fn compare_legs(engine: &Engine<SimBackend, SimIntent>, expected: &[u64]) -> u64 {
    let geo = engine.geometry();
    let mut bad = 0;
    for (lba, &want) in expected.iter().enumerate() {
        let copies = geo.map_unchecked(lba as u64);
        let mut seen = None;
        let mut ok = true;
        for c in copies.as_slice().iter().filter(|c| !engine.leg_failed(c.leg)) {
            let v = engine.backend().leg_data(c.leg)[c.lba as usize];
            ok &= (want == UNKNOWN || v == want) && seen.is_none_or(|s| s == v);
            seen = Some(v);
        }
        bad += u64::from(!ok);
    }
    bad
}

#[derive(Debug, Clone, Serialize)]
pub struct BitmapReport {
    pub regions: usize,
    pub dirty_regions: usize,
    pub flushes: u64,
    pub free_rides: u64,
    pub waits: u64,
    pub cleared: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CrashReport {
    pub divergent_blocks: u64,
    pub uncovered_blocks: u64,
    pub resync_blocks: u64,
}

/// After a crash: blocks whose copies differ, and whether the durable bitmap covers them.
fn crash_check(engine: &Engine<SimBackend, SimIntent>) -> CrashReport {
    let geo = engine.geometry();
    let b = engine.intent().bitmap();
    let (mut divergent, mut uncovered) = (0, 0);
    for lba in 0..geo.data_blocks() {
        let copies = geo.map_unchecked(lba);
        let mut vals = copies.as_slice().iter().filter(|c| !engine.leg_failed(c.leg));
        let first = vals.next().map(|c| engine.backend().leg_data(c.leg)[c.lba as usize]);
        if vals.any(|c| Some(engine.backend().leg_data(c.leg)[c.lba as usize]) != first) {
            divergent += 1;
            let covered = b.is_some_and(|b| b.on_disk().get((lba / b.region_blocks()) as usize));
            uncovered += u64::from(!covered);
        }
    }
    let resync_blocks = b
        .map(|b| crate::bitmap::resync_plan(b.on_disk(), b.regions(), b.region_blocks(), geo.data_blocks()))
        .map_or(0, |plan| plan.iter().map(|r| r.1).sum());
    CrashReport {
        divergent_blocks: divergent,
        uncovered_blocks: uncovered,
        resync_blocks,
    }
}
