//! A seeded random workload over the simulator: random reads and writes (ranges overlap over
//! time and may cross chunk boundaries), every read checked against the last completed write,
//! every working leg checked against the others at the end, and a stall detected when nothing
//! is left to happen while I/O is still outstanding.

use serde::Serialize;
use thiserror::Error;

use super::assembly::{restart, HostView, RestartReport};
use super::backend::{block_value, Faults, LegModel, Notice, SimBackend, SimEvent};
use super::host::{Host, UNKNOWN};
use super::intent::{BitmapConfig, SimIntent};
use super::metadata::{initial_superblock, MetaWriter, OpDone};
use super::rng::Rng;
use crate::bitmap::WriteIntentBitmap;
use crate::engine::plan::{max_request_blocks, MAX_SEGMENTS};
use crate::engine::NoBitmap;
use crate::engine::{
    Backend, DirectWrite, Engine, EngineConfig, EngineStats, HostStatus, IoOp, IoRequest, ReadPolicy, Strategy, DIRECT,
    DIRECT_WRITE,
};
use crate::placement::{no_such_leg, Geometry, GeometryError, GeometrySpec};
use crate::superblock::{LayoutError, MetaLayout};

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
    /// Model the superblocks: every leg keeps its own superblock and bitmap image, written by
    /// one metadata writer (the bitmap's flushes go through it; each leg's part takes
    /// `bitmap.flush_latency_ns` to twice that), and a crash is followed by an assembly that
    /// checks every acknowledged write (`SimReport::restart`). Needs `bitmap`.
    pub superblock: bool,
    /// With `superblock`: no host I/O is acknowledged while a leg failure is not yet in the
    /// superblocks (the SPDK glue's rule). Off only to show what goes wrong without it.
    pub hold_acks_until_failure_recorded: bool,
    /// Crash this long after the mirror first fails a leg.
    pub crash_after_failure: Option<CrashPoint>,
}

/// When a crash comes, counted from the first leg failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// After this many more host acknowledgements.
    Acks(u64),
    /// After this much simulated time (at the first event at or after it).
    Ns(u64),
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
            superblock: false,
            hold_acks_until_failure_recorded: true,
            crash_after_failure: None,
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
    #[error("fail_leg: {}", no_such_leg(*.0, .1))]
    FailLeg(u32, u32),
    #[error("preferred_leg: {}", no_such_leg(*.0, .1))]
    PreferredLeg(u32, u32),
    #[error("max_io_blocks: must be at least 1")]
    MaxIo,
    #[error(
        "max_io_blocks: {0} blocks may span more chunks than one request can ({MAX_SEGMENTS}): at most {1} \
         with this chunk size (SPDK splits longer I/O before the mirror sees it)"
    )]
    MaxIoSpan(u64, u64),
    #[error("inline_pct/nomem_pct: must be 0..=100 (nomem_pct below 100)")]
    Percent,
    #[error("error_pct: must be 0..=100, got {0}")]
    ErrorPct(u32),
    #[error("{0}: at most {SIM_MAX_QUEUE} in the simulator, got {1}")]
    TooMany(&'static str, u64),
    #[error(
        "leg_blocks: the simulator keeps every block of every leg in memory: {0} legs of {1} blocks are \
         more than the {SIM_MAX_BLOCKS} blocks it holds"
    )]
    TooBig(u32, u64),
    #[error("{0}: at most {SIM_MAX_US} us (a minute) in the simulator")]
    TooLong(&'static str),
    #[error("superblock: needs the bitmap (they are written together)")]
    SuperblockNeedsBitmap,
    #[error("bitmap region: {0} bytes is not a whole number of KiB, which the superblock records")]
    RegionKib(u64),
    #[error(transparent)]
    Layout(#[from] LayoutError),
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
    /// With `superblock` and a crash: what assembly would trust, and whether every
    /// acknowledged write is there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartReport>,
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

/// Queues, pools and admission the simulator allocates up front: no more than SPDK's own
/// bounds (`max_parents` 65536), so a typo cannot ask for gigabytes.
pub const SIM_MAX_QUEUE: u64 = 1 << 16;
/// Blocks the simulator keeps (one word each, on every leg and the spare): 512 MiB.
pub const SIM_MAX_BLOCKS: u64 = 1 << 26;
/// A leg's latency and jitter, a bitmap write and its idle time (md's daemon_sleep is 5 s):
/// simulated nanoseconds must not overflow over a run.
pub const SIM_MAX_US: u64 = 60_000_000;

/// Sizes and times the simulator can hold: each refusal names its field.
fn check_bounds(cfg: &SimConfig, geo: &Geometry, max_parents: u32) -> Result<(), SimConfigError> {
    for (field, n) in [
        ("qd", cfg.qd as u64),
        ("leg_pool", cfg.leg_pool as u64),
        ("max_parents", max_parents as u64),
    ] {
        if n > SIM_MAX_QUEUE {
            return Err(SimConfigError::TooMany(field, n));
        }
    }
    let blocks = geo.used_leg_blocks();
    if (geo.legs() as u64 + 1).saturating_mul(blocks) > SIM_MAX_BLOCKS {
        return Err(SimConfigError::TooBig(geo.legs(), blocks));
    }
    let max_ns = SIM_MAX_US * 1000;
    let mut times = vec![("latency_us", cfg.model.latency_ns), ("jitter_us", cfg.model.jitter_ns)];
    if let Some(b) = &cfg.bitmap {
        times.push(("bitmap_flush_us", b.flush_latency_ns));
        times.push(("bitmap_idle_us", b.idle_clear_ns));
    }
    if let Some((field, _)) = times.into_iter().find(|&(_, ns)| ns > max_ns) {
        return Err(SimConfigError::TooLong(field));
    }
    let pcts = [cfg.faults.error_leg, cfg.faults.read_error_leg];
    if let Some((_, pct)) = pcts.into_iter().flatten().find(|&(_, pct)| pct > 100) {
        return Err(SimConfigError::ErrorPct(pct));
    }
    Ok(())
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
    if let Some(max) = max_request_blocks(&geo).filter(|&max| cfg.max_io_blocks > max) {
        return Err(SimConfigError::MaxIoSpan(cfg.max_io_blocks, max));
    }
    if cfg.faults.inline_pct > 100 || cfg.faults.nomem_pct >= 100 {
        return Err(SimConfigError::Percent);
    }
    if cfg.superblock {
        meta_layout(cfg, &geo)?;
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
    check_bounds(cfg, &geo, max_parents)?;
    Ok((geo, max_parents))
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
    let region_blocks = cfg.bitmap.map_or(1, |b| b.region_blocks.max(1));
    let mut d = Daemons {
        flush_latency: cfg.bitmap.map_or(0, |b| b.flush_latency_ns),
        meta: match (cfg.superblock, cfg.bitmap) {
            (true, Some(b)) => {
                let (region_kb, layout) = meta_layout(cfg, &geo)?;
                let sb = initial_superblock(&geo, region_kb, &layout);
                Some(MetaWriter::new(
                    sb,
                    layout.regions as usize,
                    b.flush_latency_ns,
                    cfg.faults.error_leg,
                    cfg.seed,
                ))
            }
            _ => None,
        },
        hold: cfg.hold_acks_until_failure_recorded,
    };
    let mut crashed = false;
    let mut rng = Rng::new(cfg.seed.wrapping_mul(31).wrapping_add(7));
    let mut host = Host::new(cfg.qd, data_blocks);
    let fail_after = cfg.fail_after.unwrap_or(cfg.ios / 2);
    let mut killed = false;
    let mut issued = 0u64;
    let mut stalled = false;

    loop {
        if let (Some(point), Some(f)) = (cfg.crash_after_failure, host.failure) {
            let due = match point {
                CrashPoint::Acks(n) => host.completed >= f.acks + n,
                CrashPoint::Ns(ns) => engine.backend().now() >= f.at_ns + ns,
            };
            if due {
                crashed = true;
                break;
            }
        }
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
            // Reads and writes go direct when nothing stands in their way, as the SPDK glue
            // sends them.
            if op == IoOp::Read {
                if engine.try_direct_read(slot, &req).is_err() {
                    engine.submit(slot, req);
                }
            } else {
                match engine.try_direct_write(slot, &req, &mut host.writes[slot as usize]) {
                    Err(slot) => engine.submit(slot, req),
                    Ok(DirectWrite::Done(slot, status)) => engine.backend_mut().complete(slot, status),
                    Ok(DirectWrite::InFlight | DirectWrite::Handed) => {}
                }
                if engine.wakeups_pending() {
                    engine.run_wakeups();
                }
            }
            settle(&mut engine, &mut host, &mut d);
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
        match engine.backend_mut().next_event() {
            None => {
                stalled = true;
                break;
            }
            Some(SimEvent::Engine(Notice::ChildDone(child, info, status))) if info.parent == DIRECT => {
                let slot = engine.backend().child_host(&child);
                let req = host.reqs[slot as usize];
                if let Some(slot) = engine.direct_read_done(slot, req, child, info, status) {
                    engine.backend_mut().complete(slot, HostStatus::Success);
                }
            }
            Some(SimEvent::Engine(Notice::ChildDone(child, info, status))) if info.parent == DIRECT_WRITE => {
                let slot = engine.backend().child_host(&child);
                if let Some(status) = engine.direct_write_back(child, info, status, &mut host.writes[slot as usize]) {
                    engine.backend_mut().complete(slot, status);
                }
            }
            Some(SimEvent::Engine(Notice::ChildDone(child, info, status))) => engine.child_done(child, info, status),
            Some(SimEvent::Engine(Notice::Poll)) => engine.poll(),
            Some(SimEvent::MetaLanded(leg)) => {
                let device_ok = !engine.backend().leg_dead(leg);
                let meta = d.meta.as_mut().expect("metadata lands only where it is written");
                meta.landed(leg, device_ok);
                if let Some(done) = meta.take_done() {
                    meta_done(&mut engine, done);
                }
            }
            Some(SimEvent::Engine(Notice::BitmapFlushed)) => {
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
        settle(&mut engine, &mut host, &mut d);
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
    let restart = d.meta.as_ref().filter(|_| crashed).map(|meta| {
        let b = engine.backend();
        let view = HostView {
            acked: &host.acked(),
            unacked: &host.unacked(&b.hosts),
        };
        let failed = (0..geo.legs())
            .filter(|&l| engine.leg_failed(l))
            .fold(0, |m, l| m | 1 << l);
        let mut r = restart(&geo, meta.disks(), region_blocks, |leg| b.leg_data(leg), failed, &view);
        r.failure_recorded = !meta.failure_unrecorded();
        r.acks_held = host.held.len() as u64;
        r.acked_since_failure = host.failure.map_or(0, |f| host.completed - f.acks);
        r.writes_in_flight_at_failure = host.failure.map_or(0, |f| f.writes_in_flight);
        r
    });
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
        restart,
        parked: stalled.then(|| engine.describe_parked()),
        submissions,
    })
}

/// With the superblocks modelled: the bitmap region in KiB and the metadata layout, as the
/// create RPC would derive them (so the superblocks written validate at assembly).
fn meta_layout(cfg: &SimConfig, geo: &Geometry) -> Result<(u32, MetaLayout), SimConfigError> {
    let b = cfg.bitmap.ok_or(SimConfigError::SuperblockNeedsBitmap)?;
    let bytes = b.region_blocks * geo.block_size() as u64;
    let kb = u32::try_from(bytes / 1024)
        .ok()
        .filter(|_| bytes % 1024 == 0)
        .ok_or(SimConfigError::RegionKib(bytes))?;
    Ok((kb, MetaLayout::new(geo.block_size(), geo.data_blocks(), kb)?))
}

/// What runs beside the engine: the bitmap's flushes, or the metadata writer that carries them
/// with the superblock, and whether acknowledgements wait for a leg failure to be recorded.
struct Daemons {
    flush_latency: u64,
    meta: Option<MetaWriter>,
    hold: bool,
}

/// Delivers what the backend has for the engine and the host until nothing is left. Twice: a
/// metadata write that went to no leg finishes at once and may release parents.
fn settle(engine: &mut Engine<SimBackend, SimIntent>, host: &mut Host, d: &mut Daemons) {
    for _ in 0..2 {
        daemons(engine, d);
        deliver(engine, host, d);
    }
}

/// The bitmap's daemon: clears idle regions and writes out what changed, on its own or, with
/// the superblocks modelled, through the metadata writer (which also writes leg failures).
fn daemons(engine: &mut Engine<SimBackend, SimIntent>, d: &mut Daemons) {
    let now = engine.backend().now();
    let Some(b) = engine.intent_mut().bitmap_mut() else {
        return;
    };
    b.tick(now);
    let Some(meta) = d.meta.as_mut() else {
        if b.take_flush().is_some() {
            engine.backend_mut().start_bitmap_flush(d.flush_latency);
        }
        return;
    };
    if !meta.wants_write(b.needs_flush()) {
        return;
    }
    let (image, took_flush) = match b.take_flush() {
        Some(img) => (img, true),
        None => (b.on_disk().clone(), false),
    };
    for (leg, latency) in meta.start(image, took_flush) {
        engine.backend_mut().start_meta_write(leg, latency);
    }
    if let Some(done) = meta.take_done() {
        meta_done(engine, done);
    }
}

/// A metadata write is back from every leg (`persist::op_put`): the bitmap image it carried is
/// durable, legs it could not be written to fail, and the writes that waited may go.
fn meta_done(engine: &mut Engine<SimBackend, SimIntent>, done: OpDone) {
    let released = match engine.intent_mut().bitmap_mut() {
        Some(b) if done.took_flush => b.flush_done(),
        _ => Vec::new(),
    };
    for leg in (0..32).filter(|l| done.failed_legs & (1 << l) != 0) {
        engine.fail_leg(leg);
    }
    for id in released {
        engine.write_intent_ready(id);
    }
}

/// Hands completed host I/O to the host, as the SPDK channel's `run` does: legs the engine
/// failed become failed for the mirror first, and while a failure is not in the superblocks
/// completions are held, not acknowledged.
fn deliver(engine: &mut Engine<SimBackend, SimIntent>, host: &mut Host, d: &mut Daemons) {
    loop {
        if engine.backend_mut().take_io_signal() {
            engine.io_available();
            continue;
        }
        let now = engine.backend().now();
        let failed = engine.backend_mut().take_failed_legs();
        if failed != 0 {
            host.note_failure(now);
            if let Some(meta) = d.meta.as_mut() {
                for leg in (0..32).filter(|l| failed & (1 << l) != 0) {
                    meta.fail_leg(leg);
                }
            }
        }
        // A write that missed the failed leg must not be acknowledged before the superblocks
        // say the leg is stale, or a crash now could let that leg be trusted again.
        let hold = d.hold && d.meta.as_ref().is_some_and(|m| m.failure_unrecorded());
        if !hold && !host.held.is_empty() {
            for (slot, status) in std::mem::take(&mut host.held) {
                host.ack(slot, status, &engine.backend().hosts[slot as usize], now);
            }
        }
        let mut done = std::mem::take(&mut engine.backend_mut().completed);
        if done.is_empty() {
            return;
        }
        for &(slot, status) in &done {
            if hold {
                host.held.push((slot, status));
            } else {
                host.ack(slot, status, &engine.backend().hosts[slot as usize], now);
            }
        }
        // Hand the buffer back for reuse.
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
