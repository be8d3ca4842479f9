//! The general state machine: every parent the straight path (`straight.rs`) does not take
//! from start to finish, and every parent it parks, moves through `run`.
//!
//! A parent goes Admit (its own shared I/O) -> Intent (the write-intent bitmap) -> Issue (the
//! main plan, bias held) -> Tail (children and read recovery outstanding). `run` takes it as far
//! as it can and says what it parked on; `wakeups.rs` runs it again when that is freed, and it
//! resumes exactly where it stopped (a parked child first, then `next` in the plan).

use super::backend::{Backend, ChildInfo, IoOp, IoRequest, ParentId};
use super::intent::{Gate, WriteIntent};
use super::plan::segment_count;
use super::{ChildKind, Engine, Phase, Step, Strategy, Wait};

impl<B: Backend, W: WriteIntent> Engine<B, W> {
    /// Admits `host` into slot `id`. `tried`: legs a read already failed on (one segment), to be
    /// retried elsewhere and repaired like any failed read.
    pub(super) fn start(&mut self, id: ParentId, host: B::Host, req: IoRequest, tried: u32) {
        let nsegs = if req.op == IoOp::Flush {
            1
        } else {
            segment_count(&self.geo, req.lba, req.blocks) as u32
        };
        // Writes and flushes take the replacement now, and one more child per segment (flush)
        // for it: the plan stays the same whatever `set_replacement` does meanwhile.
        let rep = if req.op == IoOp::Read { None } else { self.replacement };
        let extra = rep.is_some() as u32;
        let total = match req.op {
            IoOp::Read => nsegs,
            IoOp::Flush => self.geo.legs() + extra,
            _ => nsegs * (self.geo.copies() + extra),
        };
        self.fill_slot(id, host, req, total, nsegs, rep);
        if tried != 0 {
            debug_assert!(req.op == IoOp::Read && nsegs == 1);
            self.slots[id as usize].tried_segs = 1;
            self.recovery[id as usize].tried[0] = tried;
        }
        // Here, not in `fill_slot`: Batch parents never take the straight path, which need not pay.
        self.batch_start(id);
    }

    /// Admits `host` into the free slot `id`: `total` children in its main plan over `nsegs`
    /// segments, `rep` the replacement it copies to. Holds the bias.
    #[inline]
    pub(super) fn fill_slot(
        &mut self,
        id: ParentId,
        host: B::Host,
        req: IoRequest,
        total: u32,
        nsegs: u32,
        rep: Option<u32>,
    ) {
        let slot = &mut self.slots[id as usize];
        debug_assert_eq!(slot.phase, Phase::Free);
        slot.host = Some(host);
        slot.req = req;
        slot.phase = Phase::Admit;
        slot.wait = None;
        slot.remaining = 1; // the bias: dropped once the main plan is issued
        slot.next = 0;
        slot.total = total;
        slot.nsegs = nsegs;
        slot.seg_ok = 0;
        slot.missed_copy = false;
        slot.retry = 0;
        slot.tried_segs = 0;
        slot.repair_segs = 0;
        slot.rep = rep;
        self.stats.parents_admitted += 1;
    }

    /// Moves a parent as far as it can go. The caller must not touch the slot after `Finished`.
    pub(super) fn run(&mut self, id: ParentId) -> Step {
        let idx = id as usize;
        if self.slots[idx].phase == Phase::Admit {
            let slot = &self.slots[idx];
            if !self
                .backend
                .admit_parent(slot.host.as_ref().expect("admitted parent has a host"))
            {
                return Step::Parked(Wait::Io(None));
            }
            let req = slot.req;
            self.slots[idx].phase = Phase::Intent;
            if req.op.is_write() {
                self.stats.intent_starts += 1;
                if self.intent.start_write(id, req.lba, req.blocks) == Gate::Pending {
                    return Step::Parked(Wait::Intent);
                }
            }
            self.slots[idx].phase = Phase::Issue;
        }
        if self.slots[idx].phase == Phase::Intent {
            return Step::Parked(Wait::Intent);
        }
        // Hold a reference while issuing so a child completing inside submit cannot complete
        // the parent under our feet; the main bias is separate and dropped after the main plan.
        self.slots[idx].remaining += 1;
        let parked = self.issue(id);
        let finished = self.put(id);
        match parked {
            Some(wait) => {
                debug_assert!(!finished, "a parked parent holds its bias or a retry");
                Step::Parked(wait)
            }
            None if finished => Step::Finished,
            None => Step::Running,
        }
    }

    /// Issues what the parent still owes: a parked child first, then the main plan, then read
    /// retries. Returns what it parked on, if anything. Inline in `run`, its one caller.
    #[inline(always)]
    fn issue(&mut self, id: ParentId) -> Option<Wait> {
        let idx = id as usize;
        if self.straight_shaped(id) {
            // A one-chunk read or write, as the straight path parks them: its loop resumes it
            // (cheaper than the general plan, and this is every wake-up under pool pressure).
            if let Some(wait) = self.issue_straight(id) {
                return Some(wait);
            }
        } else if let Some(wait) = self.issue_general(id) {
            return Some(wait);
        }
        if self.slots[idx].phase == Phase::Issue {
            self.slots[idx].phase = Phase::Tail;
            let dropped_to_zero = self.put(id);
            debug_assert!(!dropped_to_zero, "issue() holds its own reference");
        }
        if let Some(wait) = self.issue_retries(id) {
            return Some(wait);
        }
        self.issue_repairs(id)
    }

    /// `issue`'s first part for any parent: a parked child, then the main plan.
    fn issue_general(&mut self, id: ParentId) -> Option<Wait> {
        let idx = id as usize;
        // In batch's allocation phase a parked child still needs its reservation, not a submit.
        let batch_allocating = self.batch_allocating(id) && self.slots[idx].phase == Phase::Issue;
        let parked = if batch_allocating {
            None
        } else {
            self.slots[idx].parked.take()
        };
        if let Some(parked) = parked {
            if let Some(wait) = self.issue_parked(id, parked) {
                return Some(wait);
            }
        }
        if self.slots[idx].phase == Phase::Issue {
            return match self.cfg.strategy {
                Strategy::Immediate => self.issue_main_immediate(id),
                Strategy::Batch => self.issue_main_batch(id),
            };
        }
        None
    }

    /// Submits the child a parent parked on "no memory" (its context given back instead when
    /// its leg failed meanwhile: a write's copy is then missed, a read or retry planned again).
    /// Returns the wait when it is refused again. Inline: every resume under pool pressure.
    #[inline(always)]
    pub(super) fn issue_parked(&mut self, id: ParentId, parked: (B::Child, ChildInfo, ChildKind)) -> Option<Wait> {
        let idx = id as usize;
        let (child, info, kind) = parked;
        if self.legs[info.leg].failed {
            // The leg failed while we waited: give the context back and re-plan this child.
            self.release_child(info.leg, child);
            match kind {
                ChildKind::Main if info.op != IoOp::Read => {
                    // A replacement that failed is dropped; it is no copy the array misses.
                    if info.leg != self.replacement_leg() {
                        self.slots[idx].missed_copy = true;
                    }
                    self.slots[idx].next += 1;
                }
                ChildKind::Repair => self.recovery[idx].repair[info.segment as usize] &= !(1 << info.leg),
                _ => {}
            }
            return None;
        }
        let counted = kind == ChildKind::Retry;
        // Cleared before submitting: a retry failing inside submit sets it again.
        if counted {
            self.slots[idx].retry &= !(1 << info.segment);
        }
        if let Err(back) = self.submit_child(child, info, counted) {
            if counted {
                self.slots[idx].retry |= 1 << info.segment;
            }
            self.slots[idx].parked = Some((back.0, back.1, kind));
            return Some(Wait::Io(Some(info.leg)));
        }
        match kind {
            ChildKind::Main => self.slots[idx].next += 1,
            ChildKind::Retry => {}
            ChildKind::Repair => self.recovery[idx].repair[info.segment as usize] &= !(1 << info.leg),
        }
        None
    }

    fn issue_main_immediate(&mut self, id: ParentId) -> Option<Wait> {
        let idx = id as usize;
        while let Some(info) = self.next_planned(id) {
            let Some(child) = self.alloc(info.leg) else {
                return Some(Wait::Pool(info.leg));
            };
            if let Err((child, info)) = self.submit_child(child, info, false) {
                self.slots[idx].parked = Some((child, info, ChildKind::Main));
                return Some(Wait::Io(Some(info.leg)));
            }
            self.slots[idx].next += 1;
        }
        None
    }
}
