//! Direct reads: a one-chunk read that nothing stands in the way of needs no parent state.
//!
//! Its one child is planned, its context taken and the child submitted in one go, with no slot,
//! no plan and no run of the state machine; its completion hands the host straight back to the
//! caller. This is SPDK raid1's read path (one `spdk_bdev_io` per child and nothing else), and
//! it is why a read over the mirror costs about what one over SPDK raid1 does: through the slot
//! table and the general machine it cost the module twice the instructions.
//!
//! md's rule holds without the machine: a direct read never waits holding anything. If its
//! context cannot be had at once, it takes nothing and the caller hands the read to `submit`;
//! refused shared I/O, it gives its context back and parks in a slot for shared I/O, where the
//! general way would have parked it after the same refusal. It goes direct only when no
//! wake-up is pending, no parent waits for shared I/O and none for its leg's pool, so it never
//! overtakes a parked parent (and needs no admission slot: it cannot hold what a child needs;
//! at most as many go direct at once as parents are admitted, so their children's shared I/O
//! stays bounded).
//! A direct read that fails is handed to the general machine as a parent that already failed
//! on that copy: it is retried on another and the copy that failed is rewritten, as for any
//! read.
//!
//! Only the caller knows its host while the child is out (SPDK: the child context's parent
//! pointer), so it gives it back with the completion (`direct_read_done`).

use super::backend::{Backend, ChildInfo, ChildStatus, IoOp, IoRequest, Submitted, DIRECT};
use super::intent::WriteIntent;
use super::{Engine, Phase, Step, Wait};

impl<B: Backend, W: WriteIntent> Engine<B, W> {
    /// Issues `req` as a direct read if it can be, and then only. `Err` hands the host back,
    /// nothing taken: it goes through `submit`. A backend that completes the child inside its
    /// submit gets it back as `Err` too (the read is then submitted again the general way).
    /// One that answers "no memory" gets the read parked in a slot for shared I/O (submitted
    /// again at once, it would only be refused again): `Ok(true)`, the engine has it (the
    /// caller then sees to what it finished, as after `submit`). `Ok(false)`: it went direct.
    #[inline(always)]
    pub fn try_direct_read(&mut self, host: B::Host, req: &IoRequest) -> Result<bool, B::Host> {
        let Some(info) = self.plan_direct_read(req) else {
            return Err(host);
        };
        // (SPDK's bdev layer took the parent's own I/O before the module saw it: a no-op there.)
        if !self.backend.admit_parent(&host) {
            return Err(host);
        }
        let Some(child) = self.backend.alloc_child(info.leg) else {
            self.backend.release_parent();
            return Err(host);
        };
        match self.backend.submit(&host, child, info) {
            Submitted::InFlight => {
                // Nothing from here on may panic: the SPDK glue takes a panic here for one
                // before the child went out.
                self.stats.parents_submitted += 1;
                self.stats.children_submitted += 1;
                // (A masked index: it cannot panic.)
                self.legs[info.leg].outstanding_blocks += info.blocks;
                self.direct += 1;
                Ok(false)
            }
            Submitted::NoMem(child, _) => {
                // No waiter on this pool (`plan_direct_read`): nobody to wake.
                self.backend.free_child(info.leg, child);
                self.backend.release_parent();
                self.submit_parked_on_io(host, *req, info.leg);
                Ok(true)
            }
            Submitted::Completed(child, _, _) => {
                self.backend.free_child(info.leg, child);
                self.backend.release_parent();
                Err(host)
            }
        }
    }

    /// A one-chunk read whose child `leg` just refused for want of shared I/O: admitted into
    /// a slot and parked for shared I/O before its first child, where the straight path would
    /// have parked it after the same refusal (resumed, it plans its read again). Without a free
    /// slot it takes the general way.
    #[cold]
    fn submit_parked_on_io(&mut self, host: B::Host, req: IoRequest, leg: u32) {
        self.stats.parents_submitted += 1;
        let Some(id) = self.take_slot() else {
            return self.submit_general(host, req, 0);
        };
        self.fill_slot(id, host, req, 1, 1, None);
        let host = self.slots[id as usize].host.as_ref().expect("just set");
        let wait = if self.backend.admit_parent(host) {
            self.slots[id as usize].phase = Phase::Issue;
            Wait::Io(Some(leg))
        } else {
            Wait::Io(None)
        };
        self.park_after(id, Step::Parked(wait), false);
    }

    /// The child a direct read of `req` would issue, if it may go direct (see the module
    /// comment): a read inside one chunk, nothing to wake, nothing waiting for shared I/O or
    /// for the pool of the copy it reads.
    #[inline(always)]
    fn plan_direct_read(&self, req: &IoRequest) -> Option<ChildInfo> {
        // As many direct reads at once as parents are admitted: past that a read takes the
        // general way, where admission bounds it (the shared I/O its child takes is bounded
        // so: `admission.rs`).
        if req.op != IoOp::Read || !self.straight(req) || !self.io_waiters.is_empty() || self.direct >= self.admission()
        {
            return None;
        }
        let copy = self.read_copy(req.lba, req.blocks, 0)?;
        if self.pool_waited(copy.leg) {
            return None;
        }
        Some(ChildInfo {
            parent: DIRECT,
            op: IoOp::Read,
            leg: copy.leg,
            leg_lba: copy.lba,
            blocks: req.blocks,
            buf_offset: 0,
            segment: 0,
        })
    }

    /// Whether a direct read's completion may be taken by `direct_read_ok`, without the
    /// engine's wake-up loop: it succeeded and nothing waits to be woken (by its context or
    /// anything else).
    #[inline(always)]
    pub fn direct_read_quick(&self, info: &ChildInfo, status: ChildStatus) -> bool {
        status == ChildStatus::Success && !self.pool_waited(info.leg) && !self.runnable()
    }

    /// A direct read's child is back, succeeded, and `direct_read_quick` said so: counted, its
    /// context given back. Its host is done; the caller completes it.
    #[inline(always)]
    pub fn direct_read_ok(&mut self, child: B::Child, info: ChildInfo) {
        self.direct_child_back(child, &info);
        self.legs[info.leg].stats.reads += 1;
        self.stats.parents_completed += 1;
        self.backend.release_parent();
    }

    /// A direct read's child is back (`info.parent == DIRECT`); `host` and `req` are its host
    /// I/O. Succeeded: the host is handed back for the caller to complete as succeeded. Failed:
    /// the engine takes the read over, as a parent that already failed on that copy (retried
    /// elsewhere, the copy repaired), and completes it through the backend: `None`.
    pub fn direct_read_done(
        &mut self,
        host: B::Host,
        req: IoRequest,
        child: B::Child,
        info: ChildInfo,
        status: ChildStatus,
    ) -> Option<B::Host> {
        let back = if status == ChildStatus::Success {
            self.direct_read_ok(child, info);
            Some(host)
        } else {
            self.direct_child_back(child, &info);
            self.legs[info.leg].stats.read_errors += 1;
            // Its first read in the general machine is this read's retry.
            self.stats.read_retries += 1;
            // Admitted again there, like any parent.
            self.backend.release_parent();
            self.submit_general(host, req, 1 << info.leg);
            None
        };
        self.drain();
        back
    }

    /// What every direct read's return undoes: the count, the leg's outstanding blocks, the
    /// context (which may wake a parent waiting for its pool).
    #[inline(always)]
    fn direct_child_back(&mut self, child: B::Child, info: &ChildInfo) {
        debug_assert_eq!(info.parent, DIRECT);
        self.direct -= 1;
        self.stats.children_completed += 1;
        let leg = &mut self.legs[info.leg];
        // Saturating: `abandon` zeroes the count. (Direct reads out across it come back through
        // `direct_read_dropped`, which leaves the count alone; this is only a guard.)
        leg.outstanding_blocks = leg.outstanding_blocks.saturating_sub(info.blocks);
        self.release_child(info.leg, child);
    }

    /// A direct read's child is back while the engine cannot take the read over (after a panic
    /// in it): only counted off, its context given back. The caller completes the host.
    pub fn direct_read_dropped(&mut self, child: B::Child, info: ChildInfo) {
        self.direct -= 1;
        self.stats.children_completed += 1;
        self.stats.parents_completed += 1;
        self.backend.free_child(info.leg, child);
        self.backend.release_parent();
    }
}
