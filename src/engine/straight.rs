//! The slot-based path, top to bottom: a host I/O comes in, its children go out one by one as
//! their contexts are taken, and their completions finish it.
//!
//! Most one-chunk reads and writes go direct (`direct_read.rs`, `direct_write.rs`) and never
//! come here; a direct write handed over to its slot resumes in this file's loop. One the
//! direct paths declined (a parent waits for shared I/O or a pool, or the caller did not try
//! them) that arrives while no wake-up is pending takes the straight path: its slot is filled, each child is planned, allocated and submitted in one loop
//! (the bias held), and the bias is dropped after it. The moment anything intervenes (an empty
//! pool, "no memory", a pending bitmap write, a parent's own admission) the parent is parked
//! exactly where the loop stopped, in the same slot state the general state machine
//! (`Engine::run`) keeps, and that machine resumes it there, through the same loop
//! (`issue_straight`: under pool pressure every child waits once, so the resume is as common
//! as the first pass). Everything else (flushes, unmaps, I/O spanning chunks, replacement
//! writes, parents queued for admission) goes through the general machine from the start.
//!
//! In call order: `submit` -> `submit_straight` -> `issue_straight` -> `submit_child` (each
//! child) -> `child_done` -> `child_finished` -> `put` (the host completes on the last
//! reference). The general machine (`machine.rs`: `run`/`issue`; `wakeups.rs`: the queues and
//! the drain; `recovery.rs`: retries and repairs) uses the same child submission and
//! completion, and takes over through the last two functions here.

use super::backend::{Backend, ChildInfo, ChildStatus, HostStatus, IoOp, IoRequest, ParentId, Submitted};
use super::intent::{Gate, WriteIntent};
use super::plan::{full_mask, MAX_SEGMENTS};
use super::{segment_count_or_max, ChildKind, Engine, Phase, Step, Strategy, Wait};

impl<B: Backend, W: WriteIntent> Engine<B, W> {
    /// Takes a host I/O. It completes through `Backend::complete`, possibly before this returns.
    #[inline(always)]
    pub fn submit(&mut self, host: B::Host, req: IoRequest) {
        if self.submit_undrained(host, req) {
            self.drain();
        }
    }

    /// `submit` without running the wake-ups the straight path may leave queued: true when
    /// there are some, for the caller to run (`run_wakeups`) before anything else enters the
    /// engine. (The SPDK glue takes the common case, nothing queued, without its run.)
    #[inline(always)]
    pub fn submit_undrained(&mut self, host: B::Host, req: IoRequest) -> bool {
        self.stats.parents_submitted += 1;
        if self.straight(&req) {
            if let Some(id) = self.take_slot() {
                self.submit_straight(id, host, req);
                return self.pending();
            }
        }
        self.submit_general(host, req, 0);
        false
    }

    /// Runs the wake-ups left queued (see `submit_undrained`, `child_quick`).
    pub fn run_wakeups(&mut self) {
        self.drain();
    }

    /// Whether `req` may take the straight path: a read or write inside one chunk (so one
    /// segment, in range), no replacement to copy it to, and no wake-up waiting that it could
    /// overtake.
    #[inline(always)]
    pub(super) fn straight(&self, req: &IoRequest) -> bool {
        matches!(req.op, IoOp::Read | IoOp::Write)
            && req.blocks > 0
            && self.geo.in_one_run(req.lba, req.blocks)
            && (req.op == IoOp::Read || self.replacement.is_none())
            && self.cfg.strategy == Strategy::Immediate
            && !self.draining
            && self.admit_queue.is_empty()
            && !self.pending()
    }

    /// Starts parent `id` and issues its children one by one. Leaves the slot as `run` would:
    /// parked at the child it stopped on, or issued with the bias dropped. Runs no wake-ups.
    #[inline(always)]
    fn submit_straight(&mut self, id: ParentId, host: B::Host, req: IoRequest) {
        let idx = id as usize;
        let write = req.op == IoOp::Write;
        let total = if write { self.geo.copies() } else { 1 };
        self.fill_slot(id, host, req, total, 1, None);
        let host = self.slots[idx].host.as_ref().expect("just set");
        if !self.backend.admit_parent(host) {
            return self.park_straight(id, Wait::Io(None));
        }
        self.slots[idx].phase = Phase::Intent;
        if write {
            self.stats.intent_starts += 1;
            if self.intent.start_write(id, req.lba, req.blocks) == Gate::Pending {
                return self.park_straight(id, Wait::Intent);
            }
        }
        self.slots[idx].phase = Phase::Issue;
        if let Some(wait) = self.issue_straight(id) {
            return self.park_straight(id, wait);
        }
        let slot = &mut self.slots[idx];
        slot.phase = Phase::Tail;
        // A child that failed inside its submit left a retry or repair behind, holding its own
        // reference: the general machine issues it.
        if slot.retry != 0 || slot.repair_segs != 0 {
            self.push_ready(id);
        }
        self.put(id);
    }

    /// Issues a one-chunk read's or write's children from `next` on, a child parked on shared
    /// I/O first: the straight path's loop, for its first pass and for every resume of a
    /// parent it parked (`issue` calls it for those; see `straight_shaped`). Returns what it
    /// parked on: `next` is then the child it stopped on (held in `parked` after "no memory").
    #[inline(always)]
    pub(super) fn issue_straight(&mut self, id: ParentId) -> Option<Wait> {
        let idx = id as usize;
        let slot = &mut self.slots[idx];
        let (req, parked) = (slot.req, slot.parked.take());
        let write = req.op == IoOp::Write;
        if let Some(parked) = parked {
            debug_assert_eq!(
                parked.2,
                ChildKind::Main,
                "straight-shaped parents park only main children"
            );
            if let Some(wait) = self.issue_parked(id, parked) {
                return Some(wait);
            }
        }
        let (total, mut k) = (self.slots[idx].total, self.slots[idx].next);
        let row = self.geo.row(req.lba);
        while k < total {
            let info = if write {
                let copy = self.geo.copy_in(&row, k);
                if self.legs[copy.leg].failed {
                    // The array runs degraded: the region stays dirty.
                    self.slots[idx].missed_copy = true;
                    k += 1;
                    continue;
                }
                ChildInfo::whole_write(id, copy.leg, copy.lba, req.blocks)
            } else {
                match self.plan_read(id, 0) {
                    Some(info) => info,
                    // No readable copy: the segment is never marked done, so the read fails.
                    None => {
                        k += 1;
                        continue;
                    }
                }
            };
            let Some(child) = self.alloc(info.leg) else {
                self.slots[idx].next = k;
                return Some(Wait::Pool(info.leg));
            };
            if let Err((child, info)) = self.submit_child(child, info, false) {
                self.slots[idx].next = k;
                self.slots[idx].parked = Some((child, info, ChildKind::Main));
                return Some(Wait::Io(Some(info.leg)));
            }
            k += 1;
        }
        self.slots[idx].next = total;
        None
    }

    /// Whether parent `id` is one the straight path could have started and `issue_straight`
    /// can go on with: a read or write of one segment with no replacement, still issuing its
    /// main plan under the immediate strategy, with no read retry, repair or failed try and
    /// no parked child but a main one. Its plan is then exactly the straight loop's.
    #[inline]
    pub(super) fn straight_shaped(&self, id: ParentId) -> bool {
        let slot = &self.slots[id as usize];
        slot.phase == Phase::Issue
            && matches!(slot.req.op, IoOp::Read | IoOp::Write)
            && slot.nsegs == 1
            && slot.rep.is_none()
            && slot.retry == 0
            && slot.repair_segs == 0
            && slot.tried_segs == 0
            && self.cfg.strategy == Strategy::Immediate
            && matches!(slot.parked, None | Some((_, _, ChildKind::Main)))
    }

    /// Submits one child. `counted`: its reference on the parent is already held (a read retry
    /// inherits the failed child's). On `NoMem` the child is handed back and nothing changed.
    #[inline(always)]
    pub(super) fn submit_child(
        &mut self,
        child: B::Child,
        info: ChildInfo,
        counted: bool,
    ) -> Result<(), (B::Child, ChildInfo)> {
        let idx = info.parent as usize;
        // The slot indexed once for its count and its host (each index is a bound check).
        let slot = &mut self.slots[idx];
        if !counted {
            slot.remaining += 1;
        }
        let host = slot.host.as_ref().expect("issuing parent has a host");
        self.legs[info.leg].outstanding_blocks += info.blocks;
        match self.backend.submit(host, child, info) {
            Submitted::InFlight => {
                self.stats.children_submitted += 1;
                Ok(())
            }
            Submitted::Completed(child, info, status) => {
                self.stats.children_submitted += 1;
                self.stats.inline_completions += 1;
                self.child_finished(child, info, status);
                Ok(())
            }
            Submitted::NoMem(child, info) => {
                self.legs[info.leg].outstanding_blocks -= info.blocks;
                self.legs[info.leg].stats.nomem += 1;
                if !counted {
                    self.slots[idx].remaining -= 1;
                }
                Err((child, info))
            }
        }
    }

    /// A child submitted earlier has completed (SPDK: its completion callback fired).
    #[inline(always)]
    pub fn child_done(&mut self, child: B::Child, info: ChildInfo, status: ChildStatus) {
        self.child_finished(child, info, status);
        self.drain();
    }

    /// Whether a child's completion may be taken by `child_ok`: the common case (see
    /// `plain`), with nothing to wake afterwards (nobody waits for its leg's pool or for
    /// admission, no wake-up is queued), so no run of the general machine follows it. (Asked
    /// as `runnable` and the admission queue rather than `pending`: the same answer, in the
    /// shape LLVM still inlines the slow path's closure for; `pending` cost a starved pool's
    /// completions ~120 instructions each.)
    #[inline(always)]
    pub fn child_quick(&self, info: &ChildInfo, status: ChildStatus) -> bool {
        self.plain(info, status) && !self.pool_waited(info.leg) && !self.runnable() && self.admit_queue.is_empty()
    }

    /// A child `child_quick` said yes to: accounted, and when it was its parent's last
    /// reference the parent is finished and its host handed back with its status, for the
    /// caller to complete (instead of through `Backend::complete`).
    #[inline(always)]
    pub fn child_ok(&mut self, child: B::Child, info: ChildInfo) -> Option<(B::Host, HostStatus)> {
        self.child_back(child, &info);
        let id = info.parent;
        let slot = &mut self.slots[id as usize];
        slot.seg_ok |= 1u64 << info.segment;
        slot.remaining -= 1;
        if slot.remaining > 0 {
            return None;
        }
        Some(self.finish_take(id))
    }

    /// The common completion: a copy written, or a read served by a copy no earlier try of
    /// this segment failed on (nothing to repair), and not the replacement's copy.
    #[inline(always)]
    fn plain(&self, info: &ChildInfo, status: ChildStatus) -> bool {
        let Some(slot) = self.slots.get(info.parent as usize) else {
            return false;
        };
        status == ChildStatus::Success
            && info.leg != self.replacement_leg()
            && match info.op {
                IoOp::Read => slot.tried_segs & (1u64 << info.segment) == 0,
                _ => slot.req.op != IoOp::Read,
            }
    }

    /// What every finished child undoes: the leg's outstanding blocks, the counters, the
    /// context (which may wake a parent waiting for its pool).
    #[inline(always)]
    fn child_back(&mut self, child: B::Child, info: &ChildInfo) {
        let leg = &mut self.legs[info.leg];
        leg.outstanding_blocks -= info.blocks;
        self.stats.children_completed += 1;
        match info.op {
            IoOp::Read => leg.stats.reads += 1,
            _ => leg.stats.writes += 1,
        }
        self.release_child(info.leg, child);
    }

    /// Accounts a finished child. Completes the parent when it was the last reference.
    #[inline(always)]
    pub(super) fn child_finished(&mut self, child: B::Child, info: ChildInfo, status: ChildStatus) {
        let plain = self.plain(&info, status);
        self.child_back(child, &info);
        if plain {
            self.slots[info.parent as usize].seg_ok |= 1u64 << info.segment;
            self.put(info.parent);
        } else {
            self.child_finished_slow(info, status);
        }
    }

    /// `child_finished` for a failed child, a read after a failed try (repairs), a repair write
    /// or the replacement's copy.
    #[inline(never)]
    fn child_finished_slow(&mut self, info: ChildInfo, status: ChildStatus) {
        let id = info.parent;
        let idx = id as usize;
        let repair = info.op == IoOp::Write && self.slots[idx].req.op == IoOp::Read;
        // The replacement is not a copy yet: it never decides the host's status.
        let replacement = info.leg == self.replacement_leg();
        match (info.op, status) {
            (IoOp::Read, ChildStatus::Success) => {
                self.slots[idx].seg_ok |= 1 << info.segment;
                // Copies that failed this read get the good data back (md's fix_read_error).
                let seg = info.segment as usize;
                let bad = self.tried(id, info.segment) & self.working_legs();
                if bad != 0 {
                    self.recovery[idx].repair[seg] = bad;
                    let slot = &mut self.slots[idx];
                    slot.repair_segs |= 1 << seg;
                    // This read's reference now holds the parent until the rewrites are issued.
                    if slot.phase == Phase::Tail && slot.wait.is_none() {
                        self.push_ready(id);
                    }
                    return;
                }
            }
            (_, ChildStatus::Success) => {
                if !replacement {
                    self.slots[idx].seg_ok |= 1 << info.segment;
                }
                if repair {
                    self.legs[info.leg].stats.read_repairs += 1;
                    self.stats.read_repairs += 1;
                }
            }
            (IoOp::Read, ChildStatus::Error) => {
                self.legs[info.leg].stats.read_errors += 1;
                let (seg, bit) = (info.segment as usize, 1u64 << info.segment);
                let slot = &mut self.slots[idx];
                if slot.tried_segs & bit == 0 {
                    slot.tried_segs |= bit;
                    self.recovery[idx].tried[seg] = 0;
                }
                self.recovery[idx].tried[seg] |= 1 << info.leg;
                let slot = &mut self.slots[idx];
                slot.retry |= bit;
                // The failed child's reference passes to its retry.
                if slot.phase == Phase::Tail && slot.wait.is_none() {
                    self.push_ready(id);
                }
                return;
            }
            (_, ChildStatus::Error) => {
                self.legs[info.leg].stats.write_errors += 1;
                // A failing replacement is dropped (later writes skip it); no copy was missed.
                if !replacement {
                    self.slots[idx].missed_copy = true;
                }
                self.fail_leg_quietly(info.leg);
            }
        }
        self.put(id);
    }

    /// Drops one reference; completes the parent on the last. Returns whether it completed.
    #[inline(always)]
    pub(super) fn put(&mut self, id: ParentId) -> bool {
        let slot = &mut self.slots[id as usize];
        debug_assert!(slot.remaining > 0);
        slot.remaining -= 1;
        if slot.remaining > 0 {
            return false;
        }
        self.finish(id);
        true
    }

    /// The parent's last reference is gone: its write intent ends and the host I/O completes.
    #[inline(never)]
    fn finish(&mut self, id: ParentId) {
        let (host, status) = self.finish_take(id);
        self.backend.complete(host, status);
    }

    /// `finish` up to the host's completion: the host, and how it ended.
    #[inline(always)]
    fn finish_take(&mut self, id: ParentId) -> (B::Host, HostStatus) {
        let slot = &mut self.slots[id as usize];
        debug_assert_eq!(slot.phase, Phase::Tail, "a parent completed before its plan was issued");
        let req = slot.req;
        let ok = slot.seg_ok == full_mask(slot.nsegs);
        let missed = slot.missed_copy;
        let host = slot.host.take().expect("completing parent has a host");
        slot.phase = Phase::Free;
        slot.wait = None;
        slot.in_ready = false;
        self.free_slots.push(id);
        if req.op.is_write() {
            self.stats.intent_ends += 1;
            self.intent.end_write(req.lba, req.blocks, ok && !missed);
        }
        let status = if ok { HostStatus::Success } else { HostStatus::Failed };
        if !ok {
            self.stats.parents_failed += 1;
        }
        self.stats.parents_completed += 1;
        self.backend.release_parent();
        (host, status)
    }

    // ----- where the straight path hands over -----

    /// Parks a parent the straight path could not finish issuing; the general machine takes it
    /// from here (`run` resumes at `next`, or at the parked child).
    fn park_straight(&mut self, id: ParentId, wait: Wait) {
        self.park_after(id, Step::Parked(wait), false);
    }

    /// Takes a host I/O the straight path cannot: checks it, then admits it in arrival order.
    /// `tried`: legs this read already failed on (see `start`).
    pub(super) fn submit_general(&mut self, host: B::Host, req: IoRequest, tried: u32) {
        let in_range = req
            .lba
            .checked_add(req.blocks)
            .is_some_and(|end| end <= self.geo.data_blocks());
        if req.op != IoOp::Flush && (!in_range || segment_count_or_max(&self.geo, &req) > MAX_SEGMENTS) {
            self.stats.parents_rejected += 1;
            self.stats.parents_completed += 1;
            self.backend.complete(host, HostStatus::Failed);
            return;
        }
        if req.op != IoOp::Flush && req.blocks == 0 {
            self.stats.parents_completed += 1;
            self.backend.complete(host, HostStatus::Success);
            return;
        }
        if !self.draining && self.admit_queue.is_empty() {
            // A slot is free and nobody is ahead in line.
            if let Some(id) = self.take_slot() {
                self.start(id, host, req, tried);
                let step = self.run(id);
                self.park_after(id, step, false);
                self.drain();
                return;
            }
        }
        self.admit_queue.push_back((host, req, tried));
        self.drain();
    }
}
