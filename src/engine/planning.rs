//! Planning: which leg and LBA each child of a parent goes to, given the legs' state now.
//!
//! `plan.rs` cuts a parent into segments (pure arithmetic); this decides each child against the
//! engine's state: copies on failed legs are skipped (the array runs degraded), the replacement
//! gets a copy of what the replaced leg gets, and a read goes to a readable copy it has not
//! failed on yet, chosen by the read policy.

use super::backend::{Backend, ChildInfo, IoOp, ParentId};
use super::intent::WriteIntent;
use super::plan::segment;
use super::{Engine, ReadPolicy};
use crate::placement::{Copy, Row};

/// What the next child of a plan is.
enum Planned {
    Child(ChildInfo),
    /// The copy is on a failed leg: the array runs degraded.
    SkipFailedLeg,
    /// Nothing to issue and no copy missed: no working copy is left to read this segment from,
    /// or a replacement child whose leg holds no copy of the segment, or the replacement failed.
    NoCopy,
}

impl<B: Backend, W: WriteIntent> Engine<B, W> {
    /// The next child of the main plan still to issue (`next` stays on it), skipping copies on
    /// failed legs and segments with no readable copy; `None` once the plan is done.
    pub(super) fn next_planned(&mut self, id: ParentId) -> Option<ChildInfo> {
        let idx = id as usize;
        while self.slots[idx].next < self.slots[idx].total {
            match self.plan(id, self.slots[idx].next) {
                Planned::Child(info) => return Some(info),
                Planned::SkipFailedLeg => self.slots[idx].missed_copy = true,
                Planned::NoCopy => {}
            }
            self.slots[idx].next += 1;
        }
        None
    }

    /// Child `k` of the parent's main plan.
    fn plan(&self, id: ParentId, k: u32) -> Planned {
        let slot = &self.slots[id as usize];
        let req = slot.req;
        match req.op {
            IoOp::Read => match self.plan_read(id, k) {
                Some(info) => Planned::Child(info),
                None => Planned::NoCopy,
            },
            IoOp::Flush => {
                // Child `legs()` (planned only with a replacement) flushes the replacement leg.
                if self.legs[k].failed {
                    return Planned::SkipFailedLeg;
                }
                Planned::Child(ChildInfo {
                    parent: id,
                    op: IoOp::Flush,
                    leg: k,
                    leg_lba: 0,
                    blocks: self.geo.used_leg_blocks(),
                    buf_offset: 0,
                    segment: 0,
                })
            }
            op => {
                // Each segment: its copies in slot order, then (with a replacement) one more.
                let copies = self.geo.copies();
                let per_seg = copies + slot.rep.is_some() as u32;
                let (seg, copy_slot) = (k / per_seg, k % per_seg);
                let (start, len) = segment(&self.geo, req.lba, req.blocks, seg as u64);
                let (leg, leg_lba) = if copy_slot < copies {
                    let copy = self.geo.copy(start, copy_slot);
                    if self.legs[copy.leg].failed {
                        return Planned::SkipFailedLeg;
                    }
                    (copy.leg, copy.lba)
                } else {
                    // The replacement gets what the replaced leg gets, where it gets it (even
                    // if that leg failed meanwhile: the replacement is to take its place).
                    let rep_leg = self.replacement_leg();
                    let replaced = slot.rep.expect("a replacement child is planned only with one");
                    let on_replaced = (0..copies).map(|s| self.geo.copy(start, s)).find(|c| c.leg == replaced);
                    match on_replaced {
                        Some(c) if !self.legs[rep_leg].failed => (rep_leg, c.lba),
                        _ => return Planned::NoCopy,
                    }
                };
                Planned::Child(ChildInfo {
                    parent: id,
                    op,
                    leg,
                    leg_lba,
                    blocks: len,
                    buf_offset: start - req.lba,
                    segment: seg,
                })
            }
        }
    }

    /// A read of segment `seg` from a readable, untried copy chosen by the read policy.
    #[inline(always)]
    pub(super) fn plan_read(&self, id: ParentId, seg: u32) -> Option<ChildInfo> {
        let req = self.slots[id as usize].req;
        let (start, len) = segment(&self.geo, req.lba, req.blocks, seg as u64);
        let copy = self.read_copy(start, len, self.tried(id, seg))?;
        Some(ChildInfo {
            parent: id,
            op: IoOp::Read,
            leg: copy.leg,
            leg_lba: copy.lba,
            blocks: len,
            buf_offset: start - req.lba,
            segment: seg,
        })
    }

    /// The copy to read `len` blocks at `start` (within one chunk) from: a readable one not in
    /// `tried`, chosen by the read policy (the first in placement order while the blocks
    /// await resync).
    #[inline(always)]
    pub(super) fn read_copy(&self, start: u64, len: u64, tried: u32) -> Option<Copy> {
        let row = self.geo.row(start);
        if self.cfg.read_policy != ReadPolicy::LeastOutstanding || self.backend.read_pinned(start, len) {
            return self.read_copy_by_policy(&row, start, len, tried);
        }
        // The default policy in one plain pass (the read path's largest cost when it went
        // through the general chooser): the first of the least busy usable copies.
        let mut best: Option<(Copy, u64)> = None;
        for slot in 0..self.geo.copies() {
            let c = self.geo.copy_in(&row, slot);
            let l = &self.legs[c.leg];
            if l.failed || !l.readable || tried & (1 << c.leg) != 0 {
                continue;
            }
            if best.is_none_or(|(_, o)| l.outstanding_blocks < o) {
                best = Some((c, l.outstanding_blocks));
            }
        }
        best.map(|(c, _)| c)
    }

    /// `read_copy` for blocks awaiting resync (pinned to the first usable copy) and for the
    /// policies other than the default.
    #[inline(never)]
    fn read_copy_by_policy(&self, row: &Row, start: u64, len: u64, tried: u32) -> Option<Copy> {
        let usable = |leg: u32| self.leg_readable(leg) && tried & (1 << leg) == 0;
        let copies = (0..self.geo.copies()).map(|s| self.geo.copy_in(row, s));
        if self.backend.read_pinned(start, len) {
            return copies.clone().find(|c| usable(c.leg));
        }
        let candidates = copies
            .clone()
            .filter(|c| usable(c.leg))
            .map(|c| (c.leg, self.legs[c.leg].outstanding_blocks));
        let turn = self.read_turn.get();
        self.read_turn.set(turn.wrapping_add(1));
        let leg = self.cfg.read_policy.choose(candidates, turn)?;
        copies.clone().find(|c| c.leg == leg)
    }

    /// The legs a read of segment `seg` of parent `id` has failed on.
    #[inline]
    pub(super) fn tried(&self, id: ParentId, seg: u32) -> u32 {
        if self.slots[id as usize].tried_segs & (1 << seg) == 0 {
            0
        } else {
            self.recovery[id as usize].tried[seg as usize]
        }
    }
}
