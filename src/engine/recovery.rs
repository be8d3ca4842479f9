//! Read recovery (md's read error handling): a read that fails on one copy is retried on
//! another, and once a retry succeeds, the copies that failed are rewritten with its data
//! (md's fix_read_error).
//!
//! `child_finished` records a failure in `Slot::retry` and `Recovery::tried` (and a repair to
//! do in `Slot::repair_segs` and `Recovery::repair`); the functions here issue the retries and
//! rewrites. The per-segment tables live apart from the slots, in `Engine::recovery`: the common
//! path never touches them.

use super::backend::{Backend, ChildInfo, IoOp, ParentId};
use super::intent::WriteIntent;
use super::plan::{segment, MAX_SEGMENTS};
use super::{ChildKind, Engine, Wait};

/// A parent's read-recovery state, apart from its slot: touched only after a read error, so
/// the slots the common path walks stay a few cache lines each.
#[derive(Clone, Copy)]
pub(super) struct Recovery {
    /// Per segment: the legs a read of it has failed on (valid where `Slot::tried_segs` says).
    pub(super) tried: [u32; MAX_SEGMENTS as usize],
    /// Per segment in `Slot::repair_segs`: the legs to rewrite.
    pub(super) repair: [u32; MAX_SEGMENTS as usize],
}

impl Recovery {
    /// No read has failed: what a slot's table holds before it is first needed.
    pub(super) const NONE: Recovery = Recovery {
        tried: [0; MAX_SEGMENTS as usize],
        repair: [0; MAX_SEGMENTS as usize],
    };
}

impl<B: Backend, W: WriteIntent> Engine<B, W> {
    /// Reads each segment awaiting a retry from a copy it has not failed on; a segment with no
    /// such copy left fails. Each retry carries the failed read's reference.
    pub(super) fn issue_retries(&mut self, id: ParentId) -> Option<Wait> {
        let idx = id as usize;
        while self.slots[idx].retry != 0 {
            let seg = self.slots[idx].retry.trailing_zeros();
            let info = self.plan_read(id, seg);
            let Some(info) = info else {
                // Every copy has been tried: this segment fails; release the retry's reference.
                self.slots[idx].retry &= !(1 << seg);
                let finished = self.put(id);
                debug_assert!(!finished, "issue() holds its own reference");
                continue;
            };
            let Some(child) = self.alloc(info.leg) else {
                return Some(Wait::Pool(info.leg));
            };
            self.stats.read_retries += 1;
            // Cleared before submitting: a retry failing inside submit sets it again.
            self.slots[idx].retry &= !(1 << seg);
            if let Err((child, info)) = self.submit_child(child, info, true) {
                self.slots[idx].retry |= 1 << seg;
                self.slots[idx].parked = Some((child, info, ChildKind::Retry));
                return Some(Wait::Io(Some(info.leg)));
            }
        }
        None
    }

    /// Rewrites copies that failed a read with the data a retry read from another copy. The
    /// successful read's reference is held until every rewrite is issued.
    pub(super) fn issue_repairs(&mut self, id: ParentId) -> Option<Wait> {
        let idx = id as usize;
        while self.slots[idx].repair_segs != 0 {
            let seg = self.slots[idx].repair_segs.trailing_zeros();
            while self.recovery[idx].repair[seg as usize] != 0 {
                let leg = self.recovery[idx].repair[seg as usize].trailing_zeros();
                let req = self.slots[idx].req;
                let (start, len) = segment(&self.geo, req.lba, req.blocks, seg as u64);
                let copy = self.geo.map_unchecked(start).on_leg(leg);
                let Some(copy) = copy.filter(|_| !self.legs[leg].failed) else {
                    self.recovery[idx].repair[seg as usize] &= !(1 << leg);
                    continue;
                };
                let info = ChildInfo {
                    parent: id,
                    op: IoOp::Write,
                    leg,
                    leg_lba: copy.lba,
                    blocks: len,
                    buf_offset: start - req.lba,
                    segment: seg,
                };
                let Some(child) = self.alloc(leg) else {
                    return Some(Wait::Pool(leg));
                };
                if let Err((child, info)) = self.submit_child(child, info, false) {
                    self.slots[idx].parked = Some((child, info, ChildKind::Repair));
                    return Some(Wait::Io(Some(leg)));
                }
                self.recovery[idx].repair[seg as usize] &= !(1 << leg);
            }
            self.slots[idx].repair_segs &= !(1 << seg);
            let finished = self.put(id);
            debug_assert!(!finished, "issue() holds its own reference");
        }
        None
    }
}
