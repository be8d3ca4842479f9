//! The mirror's I/O state machine: md's deadlock fix, generic over the world below.
//!
//! A parent write becomes one child per copy on a working leg. Each child context comes from its
//! leg's bounded pool and is submitted the moment it is allocated, so everything a parent holds
//! is on its way back. `remaining` starts at 1 (the bias) so children completing while others are
//! still being issued, even inside `submit`, cannot complete the parent; the bias is dropped after
//! the loop. When a pool is empty or the backend answers "no memory", the parent parks at exactly
//! the child it stopped on and resumes there. Admission is bounded by the number of parent slots,
//! so parents can never hold all of a shared I/O pool their children need.
//!
//! The engine is single-threaded (an SPDK reactor, or the simulator) and never calls itself
//! recursively: wake-ups found while handling one event are queued and drained in one loop.
//!
//! While a leg is being replaced (md's `--replace`), one more leg, the replacement (index
//! `geo.legs()`), gets a copy of every write to that leg at the same leg LBA, so that a background
//! copy plus these writes make it an exact copy. It is never read, and it is not a copy yet: its
//! writes never decide a host I/O's status, and a failing replacement is just dropped.
//!
//! Where things are. This file: the types the others share, the `Engine` struct, its
//! constructor and public API. Then, in the order an I/O meets them:
//! - `direct_read.rs`, `direct_write.rs`: the common reads and writes, which keep no state in
//!   a slot (a direct write's is its caller's), and hand over to one when something intervenes;
//! - `straight.rs`: the slot-based path in call order (submit, child submission, completion,
//!   put), for what cannot go direct and for what a direct write hands over;
//! - `machine.rs`: the general state machine, for every parent the straight path cannot finish;
//! - `wakeups.rs`: the queues parked parents wait in, and the loop that runs them again;
//! - `planning.rs`: which leg each child goes to (`plan.rs`: the segment arithmetic under it);
//! - `recovery.rs`: read retries and repairs, with their side table;
//! - `batch.rs`: the Batch strategy, md's pre-fix behaviour kept as a test oracle, and its state;
//! - `backend.rs`, `intent.rs`: what the engine asks of the world below and of the bitmap;
//!   `read_policy.rs`, `stats.rs`: the read policies and the counters; `admission.rs`: how
//!   many parents an engine admits under a small shared I/O pool.

mod admission;
pub mod backend;
mod batch;
mod direct_read;
mod direct_write;
pub mod intent;
mod leg_table;
mod machine;
pub mod plan;
mod planning;
mod read_policy;
mod recovery;
mod stats;
mod straight;
mod wakeups;

use std::collections::VecDeque;

pub use admission::admitted_parents;
pub use backend::{
    Backend, ChildInfo, ChildStatus, HostStatus, IoOp, IoRequest, ParentId, Submitted, DIRECT, DIRECT_WRITE,
};
pub use direct_write::{DirectWrite, WriteState};
pub use intent::{Gate, NoBitmap, WriteIntent};
pub use read_policy::ReadPolicy;
pub use stats::{EngineStats, LegStats};

use crate::placement::{Geometry, MAX_LEGS};
use batch::BatchSlot;
use leg_table::LegTable;
use plan::segment_count;
use recovery::Recovery;

/// How a parent's children are allocated and submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Submit each child the moment its context is allocated (md's fix). Never stalls.
    #[default]
    Immediate,
    /// Allocate every child of a parent, then submit them together (md's pre-fix behaviour).
    /// Kept only as a demonstration and test oracle: it stalls when pools run dry.
    Batch,
}

/// Engine tunables.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Admission bound: parents admitted at once. Further parents wait in arrival order
    /// without taking anything.
    pub max_parents: u32,
    pub strategy: Strategy,
    pub read_policy: ReadPolicy,
}

/// What a parked parent waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// A child context of this leg's pool.
    Pool(u32),
    /// Shared I/O (the leg whose submit said no memory; `None` for the parent's own).
    Io(Option<u32>),
    /// The write-intent bitmap.
    Intent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Free,
    /// Taking the parent's own shared I/O.
    Admit,
    /// Waiting for the write-intent bitmap.
    Intent,
    /// Issuing the main plan; the bias is held.
    Issue,
    /// Main plan issued, bias dropped; children (and read retries) outstanding.
    Tail,
    /// Abandoned (`Engine::abandon`) while its write intent was pending: the slot is reused only
    /// once that answer is in, so the answer cannot release another parent early.
    Abandoned,
}

/// Which queue a parked child belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChildKind {
    Main,
    Retry,
    /// md's fix_read_error: rewriting a copy that failed a read with the data read elsewhere.
    Repair,
}

/// A parent I/O slot. Slots are allocated once; nothing here allocates per I/O.
struct Slot<B: Backend> {
    host: Option<B::Host>,
    req: IoRequest,
    phase: Phase,
    wait: Option<Wait>,
    in_ready: bool,
    remaining: u32,
    next: u32,
    total: u32,
    nsegs: u32,
    seg_ok: u64,
    /// A copy was not written (failed leg, or error): the bitmap must keep the region dirty.
    missed_copy: bool,
    /// A child handed back by `NoMem`, resubmitted first on resume.
    parked: Option<(B::Child, ChildInfo, ChildKind)>,
    /// Read retries: segments awaiting another copy.
    retry: u64,
    /// Segments whose entry in `Recovery::tried` is valid (a read of it failed somewhere).
    tried_segs: u64,
    /// Read repairs: segments with copies to rewrite (the legs are in `Recovery::repair`).
    repair_segs: u64,
    /// The leg being replaced when this write or flush started: its plan has one more child
    /// per segment (per flush), so it is fixed for the parent's life.
    rep: Option<u32>,
}

impl<B: Backend> Slot<B> {
    fn new() -> Self {
        Slot {
            host: None,
            req: IoRequest {
                op: IoOp::Read,
                lba: 0,
                blocks: 0,
            },
            phase: Phase::Free,
            wait: None,
            in_ready: false,
            remaining: 0,
            next: 0,
            total: 0,
            nsegs: 0,
            seg_ok: 0,
            missed_copy: false,
            parked: None,
            retry: 0,
            tried_segs: 0,
            repair_segs: 0,
            rep: None,
        }
    }
}

/// Result of running a parent as far as it can go.
enum Step {
    Running,
    Finished,
    Parked(Wait),
}

/// The mirror engine for one channel (one SPDK reactor, or the simulator).
pub struct Engine<B: Backend, W: WriteIntent = NoBitmap> {
    geo: Geometry,
    cfg: EngineConfig,
    backend: B,
    intent: W,
    /// The real legs, then the replacement leg (`geo.legs()`).
    legs: LegTable,
    /// The leg new writes are mirrored from onto the replacement leg.
    replacement: Option<u32>,
    slots: Vec<Slot<B>>,
    /// One per slot.
    recovery: Vec<Recovery>,
    /// One per slot under `Strategy::Batch`, else `None`.
    batch: Option<Vec<BatchSlot<B>>>,
    free_slots: Vec<ParentId>,
    /// Parents waiting for a slot, each with the legs it already failed to read from (a direct
    /// read handed over after an error; 0 for any other).
    admit_queue: VecDeque<(B::Host, IoRequest, u32)>,
    /// Direct reads in flight (`direct_read.rs`): parents with no slot.
    direct: u32,
    /// Direct writes in flight (`direct_write.rs`): admitted parents with no slot. Each keeps
    /// one of `free_slots` free for its hand-over (`slot_free`), so admission stays a bound:
    /// parents in slots plus direct writes never exceed `max_parents`.
    direct_writes: u32,
    /// Slots kept out of admission: `max_parents` less the bound `set_admission` set (0
    /// unless one was set lower).
    held_back: u32,
    pool_waiters: Vec<VecDeque<ParentId>>,
    /// Bit `leg`: `pool_waiters[leg]` may be non-empty. Set with every push, cleared only when
    /// the queue is seen empty, so it may say "waiting" for an empty queue but never the
    /// reverse. The hot path tests it instead of the queue: no vector to load and bound.
    pool_waiting: u64,
    pool_freed: u64,
    io_waiters: VecDeque<ParentId>,
    io_signal: bool,
    ready: VecDeque<ParentId>,
    draining: bool,
    stats: EngineStats,
    /// Round-robin position for reads.
    read_turn: std::cell::Cell<u64>,
}

impl<B: Backend> Engine<B, NoBitmap> {
    pub fn new(geo: Geometry, cfg: EngineConfig, backend: B) -> Self {
        Engine::with_intent(geo, cfg, backend, NoBitmap)
    }
}

impl<B: Backend, W: WriteIntent> Engine<B, W> {
    pub fn with_intent(geo: Geometry, cfg: EngineConfig, backend: B, intent: W) -> Self {
        // Slot ids stay below `DIRECT_WRITE` (and `DIRECT`).
        let max_parents = cfg.max_parents.clamp(1, DIRECT_WRITE);
        let legs = LegTable::new(geo.legs());
        Engine {
            legs,
            slots: (0..max_parents).map(|_| Slot::new()).collect(),
            recovery: vec![Recovery::NONE; max_parents as usize],
            batch: BatchSlot::for_strategy(cfg.strategy, &geo, max_parents),
            free_slots: (0..max_parents).rev().collect(),
            admit_queue: VecDeque::with_capacity(1024),
            direct: 0,
            direct_writes: 0,
            held_back: 0,
            pool_waiters: (0..=geo.legs())
                .map(|_| VecDeque::with_capacity(max_parents as usize))
                .collect(),
            pool_waiting: 0,
            pool_freed: 0,
            io_waiters: VecDeque::with_capacity(max_parents as usize),
            io_signal: false,
            ready: VecDeque::with_capacity(max_parents as usize),
            draining: false,
            stats: EngineStats::default(),
            read_turn: std::cell::Cell::new(0),
            replacement: None,
            geo,
            cfg: EngineConfig { max_parents, ..cfg },
            backend,
            intent,
        }
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    pub fn intent(&self) -> &W {
        &self.intent
    }

    pub fn intent_mut(&mut self) -> &mut W {
        &mut self.intent
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    pub fn leg_stats(&self, leg: u32) -> &LegStats {
        &self.legs[leg].stats
    }

    pub fn leg_failed(&self, leg: u32) -> bool {
        self.legs[leg].failed
    }

    /// Blocks of I/O outstanding on a leg (the read policy's measure).
    pub fn leg_outstanding_blocks(&self, leg: u32) -> u64 {
        self.legs[leg].outstanding_blocks
    }

    /// Parents admitted and not yet completed.
    pub fn active_parents(&self) -> usize {
        self.slots.len() - self.free_slots.len() + self.direct_writes as usize
    }

    /// Whether a parent may be admitted into a slot: one is free beyond those the direct
    /// writes in flight keep for their hand-overs and those held back (`set_admission`).
    #[inline(always)]
    pub(super) fn slot_free(&self) -> bool {
        self.free_slots.len() > (self.direct_writes + self.held_back) as usize
    }

    /// Parents admitted at once from now on: `bound`, at least 1 and at most `max_parents`
    /// (the slots there are). Lowered below what is admitted now, nothing admitted is touched:
    /// new parents wait until enough have completed. Raised, parents waiting for admission
    /// are let in at the next drain.
    pub fn set_admission(&mut self, bound: u32) {
        let slots = self.slots.len() as u32;
        self.held_back = slots - bound.clamp(1, slots);
    }

    /// Parents admitted at once: `max_parents`, or the lower bound `set_admission` set.
    pub fn admission(&self) -> u32 {
        self.slots.len() as u32 - self.held_back
    }

    /// A free slot for a parent to be admitted into (see `slot_free`).
    #[inline(always)]
    pub(super) fn take_slot(&mut self) -> Option<ParentId> {
        if self.slot_free() {
            self.free_slots.pop()
        } else {
            None
        }
    }

    /// Parents waiting for admission.
    pub fn queued_parents(&self) -> usize {
        self.admit_queue.len()
    }

    /// Direct reads in flight (they hold no slot).
    pub fn direct_reads(&self) -> u32 {
        self.direct
    }

    /// Direct writes in flight (each counts against `max_parents`; none holds a slot).
    pub fn direct_writes(&self) -> usize {
        self.direct_writes as usize
    }

    /// Whether wake-ups are queued (for a caller that ran a direct step: `run_wakeups`).
    #[inline(always)]
    pub fn wakeups_pending(&self) -> bool {
        self.pending()
    }

    /// Nothing admitted, nothing queued, no direct read in flight.
    pub fn is_idle(&self) -> bool {
        self.active_parents() == 0 && self.admit_queue.is_empty() && self.direct == 0
    }

    /// Legs that are not failed, as a bit mask (the replacement leg is not one of them).
    pub fn working_legs(&self) -> u32 {
        (0..self.geo.legs())
            .filter(|&leg| !self.legs[leg].failed)
            .fold(0, |m, leg| m | 1 << leg)
    }

    /// The replacement leg's index (one past the real legs): the backend must give it a pool and
    /// take its children like any leg's. Its `leg_stats`, `leg_failed`, `fail_leg` and
    /// `restore_leg` work as for any leg.
    pub fn replacement_leg(&self) -> u32 {
        self.geo.legs()
    }

    /// The leg whose writes new parents mirror onto the replacement leg, if any.
    pub fn replacement(&self) -> Option<u32> {
        self.replacement
    }

    /// From now on, new writes, unmaps, write-zeroes and flushes to leg `slot` also go to the
    /// replacement leg, at the same leg LBA; `None` stops that for new parents. Parents already
    /// started keep the replacement they started with (see `replacement_parents`). A different
    /// `Some` starts a new replacement: the replacement leg is taken as working again (a failed
    /// one stays failed while the same slot is set again).
    pub fn set_replacement(&mut self, slot: Option<u32>) {
        if let Some(s) = slot {
            assert!(
                s < self.geo.legs(),
                "replacement of leg {s}: legs are 0..{}",
                self.geo.legs()
            );
            if self.replacement != slot {
                let rep = self.replacement_leg();
                self.legs[rep].failed = false;
            }
        }
        self.replacement = slot;
    }

    /// Parents in flight that started with a replacement set: they may still send children to
    /// the replacement leg, so after `set_replacement(None)` its device must stay until this is 0.
    pub fn replacement_parents(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.rep.is_some() && !matches!(s.phase, Phase::Free | Phase::Abandoned))
            .count()
    }

    /// Where every unfinished parent stands (for stall reports).
    pub fn describe_parked(&self) -> String {
        let mut out = Vec::new();
        let direct_writes = self.direct_writes();
        for (i, s) in self.slots.iter().enumerate().filter(|(_, s)| s.phase != Phase::Free) {
            out.push(format!(
                "slot {i}: {:?} {:?} rep {:?} phase {:?} wait {:?} remaining {} next {}/{} retry {:#x} repair {:#x} parked {}",
                s.req.op,
                (s.req.lba, s.req.blocks),
                s.rep,
                s.phase,
                s.wait,
                s.remaining,
                s.next,
                s.total,
                s.retry,
                s.repair_segs,
                s.parked
                    .as_ref()
                    .map(|p| format!("{:?}", (p.1.leg, p.2)))
                    .unwrap_or_default()
            ));
        }
        out.push(format!(
            "pool waiters {:?}, io waiters {:?}, ready {:?}, direct reads {}, direct writes {direct_writes}",
            self.pool_waiters, self.io_waiters, self.ready, self.direct
        ));
        out.join("; ")
    }

    /// After a panic part-way through the engine (a bug): forgets every parent and returns
    /// their hosts, for the caller to fail once the children still in flight are back (the
    /// caller must no longer deliver those to the engine). Parked children's contexts go back
    /// to their pools. Admitted writes end their intent as not written to every copy, so their
    /// regions stay dirty (copies may differ there). Counters are kept; the engine is otherwise
    /// as new and takes I/O again. Direct reads and writes hold no slot and are not among the
    /// hosts: each is still its caller's when its children come back (`direct_read_dropped`,
    /// `direct_write_dropped` count them off).
    pub fn abandon(&mut self) -> Vec<B::Host> {
        let mut hosts = Vec::new();
        for id in 0..self.slots.len() {
            let slot = &mut self.slots[id];
            let (phase, req, wait) = (slot.phase, slot.req, slot.wait);
            if matches!(phase, Phase::Free | Phase::Abandoned) {
                continue;
            }
            let parked = slot.parked.take();
            hosts.extend(slot.host.take());
            slot.wait = None;
            slot.in_ready = false;
            slot.remaining = 0;
            self.batch_free_held(id as ParentId);
            if let Some((child, info, _)) = parked {
                self.backend.free_child(info.leg, child);
            }
            if phase != Phase::Admit {
                self.backend.release_parent();
            }
            let intent_started = req.op.is_write() && phase != Phase::Admit;
            if intent_started {
                self.intent.end_write(req.lba, req.blocks, false);
            }
            if phase == Phase::Intent && wait == Some(Wait::Intent) {
                self.slots[id].phase = Phase::Abandoned;
            } else {
                self.slots[id].phase = Phase::Free;
                self.free_slots.push(id as ParentId);
            }
        }
        hosts.extend(self.admit_queue.drain(..).map(|(h, _, _)| h));
        self.pool_waiters.iter_mut().for_each(VecDeque::clear);
        self.pool_waiting = 0;
        self.io_waiters.clear();
        self.ready.clear();
        self.pool_freed = 0;
        self.io_signal = false;
        self.draining = false;
        for l in self.legs.iter_mut() {
            l.outstanding_blocks = 0;
        }
        self.stats.parents_failed += hosts.len() as u64;
        self.stats.parents_completed += hosts.len() as u64;
        hosts
    }

    /// Fails a leg: it gets no more writes (the mirror runs degraded) and is never read.
    pub fn fail_leg(&mut self, leg: u32) {
        if self.legs[leg].failed {
            return;
        }
        self.fail_leg_quietly(leg);
        self.drain();
    }

    /// Brings a failed leg back into service. Its data must be in sync, or the leg must be made
    /// unreadable until it is (`set_leg_readable`).
    pub fn restore_leg(&mut self, leg: u32) {
        self.legs[leg].failed = false;
    }

    /// A leg being rebuilt takes writes but must not be read.
    pub fn set_leg_readable(&mut self, leg: u32, readable: bool) {
        self.legs[leg].readable = readable;
    }

    /// Changes how reads pick a copy (takes effect for the next read).
    pub fn set_read_policy(&mut self, policy: ReadPolicy) {
        self.cfg.read_policy = policy;
    }

    pub fn read_policy(&self) -> ReadPolicy {
        self.cfg.read_policy
    }

    pub fn leg_readable(&self, leg: u32) -> bool {
        let l = &self.legs[leg];
        l.readable && !l.failed
    }

    // ----- child contexts and leg failure, shared by every path -----

    /// A child context from `leg`'s pool; an empty pool is counted.
    #[inline(always)]
    fn alloc(&mut self, leg: u32) -> Option<B::Child> {
        let child = self.backend.alloc_child(leg);
        if child.is_none() {
            self.legs[leg].stats.pool_empty += 1;
        }
        child
    }

    /// Gives a child context back and wakes the parents waiting on its pool.
    #[inline(always)]
    fn release_child(&mut self, leg: u32, child: B::Child) {
        self.backend.free_child(leg, child);
        self.wake_pool_waiters(leg);
    }

    /// Parents parked on `leg`'s pool (if any may be) run at the next drain: a context came
    /// back, or the leg failed and they can skip it.
    #[inline(always)]
    fn wake_pool_waiters(&mut self, leg: u32) {
        if self.pool_waited(leg) {
            self.pool_freed |= 1 << leg;
        }
    }

    /// Fails a leg without the drain: for inside the engine (a write error), where the caller's
    /// own drain runs the wake-ups; `fail_leg` is this and the drain.
    fn fail_leg_quietly(&mut self, leg: u32) {
        let l = &mut self.legs[leg];
        if !l.failed {
            l.failed = true;
            self.stats.legs_failed += 1;
            self.backend.leg_failed(leg);
            // Parents parked on this leg's pool can now skip it.
            self.wake_pool_waiters(leg);
        }
    }
}

/// Segments `req` spans: none when it is empty (`segment_count` wants at least a block).
fn segment_count_or_max(geo: &Geometry, req: &IoRequest) -> u64 {
    if req.blocks == 0 {
        0
    } else {
        segment_count(geo, req.lba, req.blocks)
    }
}

// The replacement leg (index up to MAX_LEGS) only ever appears in `pool_freed`, a u64.
const _: () = assert!(MAX_LEGS <= 32, "leg masks are u32");
