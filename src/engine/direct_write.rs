//! Direct writes: a one-chunk write that nothing stands in the way of keeps its parent state
//! with its caller, not in a slot.
//!
//! SPDK's own RAID modules keep a parent's state in the `spdk_bdev_io`'s driver context; a
//! direct write does the same (`WriteState`, which the SPDK glue keeps there and the simulator
//! beside each host I/O). It is admitted by a counter (admission stays a bound: direct writes
//! count in `max_parents`, and each keeps one free slot free for its hand-over), passes the
//! write-intent bitmap, and then, in one loop, takes each copy's context and submits it at
//! once with `remaining` biased by one, dropping the bias after the loop: md's fix, with no
//! slot touched and no run of the state machine. Its children's completions count down the
//! caller's state; the last ends the intent and hands the host back with its status.
//!
//! Anything that intervenes while it issues (the bitmap must be written first, a leg's pool is
//! empty or has waiters, the bdev layer has no `spdk_bdev_io`) hands the write over to the
//! slot kept free for it exactly where it stopped (`hand_over`): the slot gets the same state the
//! straight path would have left (`next`, the parked child, the references held, what was
//! written and missed) and the general machine resumes it. Its children already in flight
//! still come back here, marked `DIRECT_WRITE`, and are passed on to the slot. It goes direct
//! only when no wake-up is pending, nobody waits for admission or shared I/O, so it overtakes
//! no parked parent.

use super::backend::{Backend, ChildInfo, ChildStatus, HostStatus, IoOp, IoRequest, ParentId, Submitted, DIRECT_WRITE};
use super::intent::{Gate, WriteIntent};
use super::{ChildKind, Engine, Phase, Step, Wait};

/// A direct write's parent state, kept by the caller with its host I/O for the engine (SPDK:
/// in the `spdk_bdev_io`'s driver context). Written by `try_direct_write`; nothing in it needs
/// to be set before.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteState {
    lba: u64,
    blocks: u64,
    /// References on the parent: the bias while its children are issued, one per child out.
    /// 0 until the write has started (so a panic before that leaves nothing to undo).
    remaining: u32,
    /// The slot it was handed over to (set by `hand_over`).
    id: ParentId,
    /// The bias is held: the children are being issued.
    issuing: bool,
    /// Its write intent was started (and must be ended).
    intent: bool,
    /// Some copy was written.
    written: bool,
    /// Some copy was not written (a failed leg, an error): the region must stay dirty.
    missed: bool,
    /// Handed over to its slot: its children still out belong to the slot's parent.
    handed: bool,
    /// Its end began (`direct_write_end`): nothing of it is the engine's any more.
    finished: bool,
}

/// What `try_direct_write` did with a write it took.
#[derive(Debug)]
pub enum DirectWrite<H> {
    /// Its children are out; their completions (`direct_write_back`) finish it.
    InFlight,
    /// Every child completed inside its submit: the host is done, with this status, for the
    /// caller to complete.
    Done(H, HostStatus),
    /// Something intervened: the general machine has it (see the module comment), and
    /// completes it through `Backend::complete`.
    Handed,
}

impl<B: Backend, W: WriteIntent> Engine<B, W> {
    /// Issues `req` as a direct write if it can be. `Err` hands the host back with nothing
    /// taken: it goes through `submit`. After `Handed` or `Done` the caller runs what is left
    /// queued (`wakeups_pending`, `run_wakeups`); after `InFlight` nothing is (it went direct
    /// with nothing to wake, and wakes no one), though a leg may have failed (an error inside
    /// a submit) for the caller to note.
    #[inline(always)]
    pub fn try_direct_write(
        &mut self,
        host: B::Host,
        req: &IoRequest,
        st: &mut WriteState,
    ) -> Result<DirectWrite<B::Host>, B::Host> {
        st.remaining = 0;
        if req.op != IoOp::Write || !self.straight(req) || !self.io_waiters.is_empty() {
            return Err(host);
        }
        // Admitted only with a slot free for its hand-over: the last free one, which nothing
        // takes before the hand-over could (`ticket`, for the bitmap to answer).
        let ticket = match self.free_slots.last() {
            Some(&id) if self.slot_free() => id,
            _ => return Err(host),
        };
        // (SPDK's bdev layer took the parent's own I/O before the module saw it: a no-op there.)
        if !self.backend.admit_parent(&host) {
            return Err(host);
        }
        self.direct_writes += 1;
        *st = WriteState {
            lba: req.lba,
            blocks: req.blocks,
            remaining: 1,
            id: 0,
            issuing: true,
            intent: false,
            written: false,
            missed: false,
            handed: false,
            finished: false,
        };
        self.stats.parents_submitted += 1;
        self.stats.direct_writes += 1;
        self.stats.intent_starts += 1;
        // Pending: the bitmap answers `ticket`, the slot the hand-over below takes at once.
        if self.intent.start_write(ticket, req.lba, req.blocks) == Gate::Pending {
            return Ok(self.hand_over(host, st, 0, Wait::Intent, None));
        }
        st.intent = true;
        let row = self.geo.row(req.lba);
        for k in 0..self.geo.copies() {
            let copy = self.geo.copy_in(&row, k);
            let leg = &self.legs[copy.leg];
            if leg.failed {
                // The array runs degraded: the region stays dirty.
                st.missed = true;
                continue;
            }
            if self.pool_waited(copy.leg) {
                // Behind the parents waiting for this pool, not ahead of them.
                return Ok(self.hand_over(host, st, k, Wait::Pool(copy.leg), None));
            }
            let info = ChildInfo::whole_write(DIRECT_WRITE, copy.leg, copy.lba, req.blocks);
            let Some(child) = self.alloc(copy.leg) else {
                return Ok(self.hand_over(host, st, k, Wait::Pool(copy.leg), None));
            };
            self.legs[copy.leg].outstanding_blocks += req.blocks;
            match self.backend.submit(&host, child, info) {
                Submitted::InFlight => {
                    self.stats.children_submitted += 1;
                    st.remaining += 1;
                }
                Submitted::Completed(child, info, status) => {
                    self.stats.children_submitted += 1;
                    self.stats.inline_completions += 1;
                    self.write_child_back(child, &info, status, st);
                }
                Submitted::NoMem(child, info) => {
                    self.legs[copy.leg].outstanding_blocks -= req.blocks;
                    self.legs[copy.leg].stats.nomem += 1;
                    return Ok(self.hand_over(host, st, k, Wait::Io(Some(copy.leg)), Some((child, info))));
                }
            }
        }
        st.issuing = false;
        st.remaining -= 1;
        if st.remaining > 0 {
            return Ok(DirectWrite::InFlight);
        }
        let status = self.direct_write_end(st, st.written);
        Ok(DirectWrite::Done(host, status))
    }

    /// Whether a direct write's child may be taken by `direct_write_ok`: it succeeded, its
    /// write was not handed over, and nothing waits to be woken (nor for admission, which its
    /// end frees: `pending`).
    #[inline(always)]
    pub fn direct_write_quick(&self, info: &ChildInfo, status: ChildStatus, st: &WriteState) -> bool {
        status == ChildStatus::Success && !st.handed && !self.pool_waited(info.leg) && !self.pending()
    }

    /// A child `direct_write_quick` said yes to: counted, its context given back. `Some`: it
    /// was the last, the host is done with this status, for the caller to complete.
    #[inline(always)]
    pub fn direct_write_ok(&mut self, child: B::Child, info: ChildInfo, st: &mut WriteState) -> Option<HostStatus> {
        // First: after a panic below, the caller knows this child's reference is gone
        // (`direct_write_lost`).
        st.remaining -= 1;
        self.write_child_back(child, &info, ChildStatus::Success, st);
        if st.remaining > 0 {
            return None;
        }
        Some(self.direct_write_end(st, st.written))
    }

    /// A direct write's child is back (`info.parent == DIRECT_WRITE`), `st` its write's state,
    /// any way it ended. `Some`: the host is done with this status, for the caller to
    /// complete. A write handed over to its slot completes through the backend.
    pub fn direct_write_back(
        &mut self,
        child: B::Child,
        info: ChildInfo,
        status: ChildStatus,
        st: &mut WriteState,
    ) -> Option<HostStatus> {
        let done = if st.handed {
            // The slot holds this child's reference now.
            let info = ChildInfo { parent: st.id, ..info };
            self.child_finished(child, info, status);
            None
        } else {
            self.write_child_back(child, &info, status, st);
            st.remaining -= 1;
            (st.remaining == 0).then(|| self.direct_write_end(st, st.written))
        };
        self.drain();
        done
    }

    /// What every direct write's child undoes, and what it tells its write: the leg's
    /// outstanding blocks, the counters, the context (which may wake a parent waiting for its
    /// pool); a copy written, or missed (and the leg failed, as for any write error).
    #[inline(always)]
    fn write_child_back(&mut self, child: B::Child, info: &ChildInfo, status: ChildStatus, st: &mut WriteState) {
        debug_assert_eq!(info.parent, DIRECT_WRITE);
        self.stats.children_completed += 1;
        let leg = &mut self.legs[info.leg];
        // Saturating: `abandon` zeroes the count (a guard; see `direct_child_back`, for reads).
        leg.outstanding_blocks = leg.outstanding_blocks.saturating_sub(info.blocks);
        leg.stats.writes += 1;
        self.release_child(info.leg, child);
        if status == ChildStatus::Success {
            st.written = true;
        } else {
            self.legs[info.leg].stats.write_errors += 1;
            st.missed = true;
            self.fail_leg_quietly(info.leg);
        }
    }

    /// The write's last reference is gone: its intent ends (the region clean again only if
    /// every copy was written), its admission ends, and its status is what a slot's would be.
    /// `ok`: some copy was written (false for a write given up after a panic, whose region
    /// then stays dirty: its copies may differ).
    #[inline(always)]
    fn direct_write_end(&mut self, st: &mut WriteState, ok: bool) -> HostStatus {
        st.finished = true;
        // (Not started only when a panic came before the bitmap answered.)
        if st.intent {
            self.stats.intent_ends += 1;
            self.intent.end_write(st.lba, st.blocks, ok && !st.missed);
        }
        self.direct_writes -= 1;
        self.stats.parents_completed += 1;
        self.backend.release_parent();
        if ok {
            HostStatus::Success
        } else {
            self.stats.parents_failed += 1;
            HostStatus::Failed
        }
    }

    // ----- where a direct write hands over, and after a panic -----

    /// Something intervened at copy `next` (what the write waits for: `wait`; the child the
    /// bdev layer refused: `parked`): the write moves into the slot kept free for it (the last
    /// free one, the one its intent named) as the straight path would have left it there, and
    /// parks. Its children out hold their references on the slot's parent from now on
    /// (`direct_write_back` passes them on).
    #[cold]
    #[inline(never)]
    fn hand_over(
        &mut self,
        host: B::Host,
        st: &mut WriteState,
        next: u32,
        wait: Wait,
        parked: Option<(B::Child, ChildInfo)>,
    ) -> DirectWrite<B::Host> {
        let id = self.free_slots.pop().expect("a direct write keeps a slot free");
        self.direct_writes -= 1;
        st.id = id;
        let req = IoRequest {
            op: IoOp::Write,
            lba: st.lba,
            blocks: st.blocks,
        };
        self.fill_slot(id, host, req, self.geo.copies(), 1, None);
        let slot = &mut self.slots[id as usize];
        slot.remaining = st.remaining;
        slot.next = next;
        slot.seg_ok = st.written as u64;
        slot.missed_copy = st.missed;
        slot.parked = parked.map(|(child, info)| (child, ChildInfo { parent: id, ..info }, ChildKind::Main));
        slot.phase = if wait == Wait::Intent {
            Phase::Intent
        } else {
            Phase::Issue
        };
        st.handed = true;
        self.stats.direct_handovers += 1;
        self.park_after(id, Step::Parked(wait), false);
        DirectWrite::Handed
    }

    /// After a panic in the engine while `st`'s write was being issued (`try_direct_write`
    /// did not return): its bias is dropped, as the loop would have. True: nothing of it is
    /// out any more, and the caller fails its host now; else its children's returns
    /// (`direct_write_dropped`) do. A write handed over is the slot's, abandoned with it.
    pub fn direct_write_unwound(&mut self, st: &mut WriteState) -> bool {
        if st.remaining == 0 || st.handed || !st.issuing {
            // Not started (the host is the caller's), or the slot's, or no longer issuing
            // (`try_direct_write` finished with it before the panic: cannot be, as nothing
            // after the loop panics; failing the host would be a second completion).
            return st.remaining == 0;
        }
        st.issuing = false;
        st.remaining -= 1;
        if st.remaining > 0 {
            return false;
        }
        self.direct_write_end(st, false);
        true
    }

    /// A panic in the engine while it took a direct write's child back (`direct_write_ok` did
    /// not return; its reference was dropped first). True when that was the write's last
    /// reference: the caller fails its host (if its end had not begun, it is ended here as
    /// after any panic: the region stays dirty). Otherwise its other children finish it.
    pub fn direct_write_lost(&mut self, st: &mut WriteState) -> bool {
        if st.remaining > 0 || st.handed {
            return false;
        }
        if !st.finished {
            self.direct_write_end(st, false);
        }
        true
    }

    /// A direct write's child is back while the engine cannot take it (after a panic in it):
    /// only counted off, its context given back. True: it was its write's last, and the
    /// caller fails its host.
    pub fn direct_write_dropped(&mut self, child: B::Child, info: ChildInfo, st: &mut WriteState) -> bool {
        self.stats.children_completed += 1;
        self.backend.free_child(info.leg, child);
        if st.handed {
            // Its host was abandoned with the slot.
            return false;
        }
        st.remaining -= 1;
        if st.remaining > 0 {
            return false;
        }
        self.direct_write_end(st, false);
        true
    }
}
