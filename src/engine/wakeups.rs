//! Wake-ups: the queues parked parents wait in, and the one loop that runs them again.
//!
//! A parent parks on what it ran out of (a leg's child pool, shared I/O, the write-intent
//! bitmap). Whatever frees that (a child completing, `io_available`, `write_intent_ready`,
//! `poll`) only marks it here; `drain` then runs every woken parent in one loop, so the engine
//! never calls itself recursively and parents resume in the order they parked.

use super::backend::{Backend, ParentId};
use super::intent::WriteIntent;
use super::{Engine, Phase, Step, Wait};

impl<B: Backend, W: WriteIntent> Engine<B, W> {
    /// Whether anything waits to be woken: a wake-up queued, or a parent waiting for
    /// admission, which the end of any parent may let in. The quick paths take a child only
    /// while this is false: a parent ending there runs no wake-up, so with a parent waiting
    /// for admission it must end the general way (`drain`), or that parent is stranded (with
    /// `max_parents` 1 nothing else would ever let it in).
    #[inline]
    pub(super) fn pending(&self) -> bool {
        !self.ready.is_empty() || self.pool_freed != 0 || self.io_signal || !self.admit_queue.is_empty()
    }

    /// Whether a wake-up can run now: `pending`, but a parent waiting for admission only while
    /// a slot is free for it. (What a direct read's quick end asks: it frees no admission.)
    #[inline]
    pub(super) fn runnable(&self) -> bool {
        !self.ready.is_empty()
            || self.pool_freed != 0
            || self.io_signal
            || (!self.admit_queue.is_empty() && self.slot_free())
    }

    /// Whether no parent waits for shared I/O (an `spdk_bdev_io` in SPDK). Only then may a
    /// completing child's shared I/O be given back before its host completes (the SPDK glue's
    /// `child_done`): with a parent waiting, it must go to that parent first.
    #[inline(always)]
    pub fn nobody_waits_for_io(&self) -> bool {
        self.io_waiters.is_empty()
    }

    /// Shared I/O may be available again (answers `Backend::wait_for_io`).
    pub fn io_available(&mut self) {
        self.io_signal = true;
        self.drain();
    }

    /// The write-intent bitmap made parent `id`'s intent durable (answers `Gate::Pending`).
    pub fn write_intent_ready(&mut self, id: ParentId) {
        let slot = &mut self.slots[id as usize];
        if slot.phase == Phase::Abandoned {
            slot.phase = Phase::Free;
            self.free_slots.push(id);
        } else if slot.phase == Phase::Intent && slot.wait == Some(Wait::Intent) {
            slot.wait = None;
            slot.phase = Phase::Issue;
            self.push_ready(id);
        }
        self.drain();
    }

    /// Retries every parked parent: for resources freed where the engine cannot see it (an SPDK
    /// mempool shared with other cores). The SPDK glue calls this from a poller.
    pub fn poll(&mut self) {
        for (leg, waiters) in self.pool_waiters.iter().enumerate() {
            if !waiters.is_empty() {
                self.pool_freed |= 1 << leg;
            }
        }
        if !self.io_waiters.is_empty() {
            self.io_signal = true;
        }
        self.drain();
    }

    /// Whether anything is parked (the SPDK poller runs only then).
    pub fn has_parked(&self) -> bool {
        !self.io_waiters.is_empty() || self.pool_waiters.iter().any(|w| !w.is_empty())
    }

    /// Whether parents may wait for `leg`'s pool (see `pool_waiting`).
    #[inline(always)]
    pub(super) fn pool_waited(&self, leg: u32) -> bool {
        self.pool_waiting & (1u64 << (leg & 63)) != 0
    }

    pub(super) fn push_ready(&mut self, id: ParentId) {
        let slot = &mut self.slots[id as usize];
        if !slot.in_ready {
            slot.in_ready = true;
            self.ready.push_back(id);
        }
    }

    /// Runs every queued wake-up until nothing more can move. Never re-entered.
    #[inline]
    pub(super) fn drain(&mut self) {
        if !self.draining && self.runnable() {
            self.drain_pending();
        }
    }

    #[inline(never)]
    fn drain_pending(&mut self) {
        self.draining = true;
        loop {
            while let Some(id) = self.ready.pop_front() {
                let slot = &mut self.slots[id as usize];
                // A stale entry (the parent finished, or the slot was reused) or a parent that
                // parked since: its own wake-up will run it.
                if !std::mem::take(&mut slot.in_ready) || slot.wait.is_some() || slot.phase == Phase::Free {
                    continue;
                }
                let step = self.run(id);
                self.park_after(id, step, false);
            }
            while self.pool_freed != 0 {
                let leg = self.pool_freed.trailing_zeros();
                self.pool_freed &= !(1 << leg);
                while let Some(id) = self.pool_waiters[leg as usize].pop_front() {
                    self.slots[id as usize].wait = None;
                    let step = self.run(id);
                    if let Step::Parked(Wait::Pool(l)) = step {
                        if l == leg {
                            // Still empty: keep its place at the head of the line.
                            self.slots[id as usize].wait = Some(Wait::Pool(l));
                            self.pool_waiters[leg as usize].push_front(id);
                            break;
                        }
                    }
                    self.park_after(id, step, false);
                }
                if self.pool_waiters[leg as usize].is_empty() {
                    self.pool_waiting &= !(1 << leg);
                }
            }
            if std::mem::take(&mut self.io_signal) {
                while let Some(id) = self.io_waiters.pop_front() {
                    self.slots[id as usize].wait = None;
                    let step = self.run(id);
                    if let Step::Parked(Wait::Io(leg)) = step {
                        self.slots[id as usize].wait = Some(Wait::Io(leg));
                        self.io_waiters.push_front(id);
                        self.backend.wait_for_io(leg);
                        break;
                    }
                    self.park_after(id, step, false);
                }
            }
            while !self.admit_queue.is_empty() && self.slot_free() {
                let (host, req, tried) = self.admit_queue.pop_front().expect("checked non-empty");
                let id = self.take_slot().expect("checked free");
                self.start(id, host, req, tried);
                let step = self.run(id);
                self.park_after(id, step, false);
            }
            // Anything the runs above queued goes round again; nothing queued, nothing can move
            // (each loop above runs exactly when its part of `runnable` holds).
            if !self.runnable() {
                break;
            }
        }
        self.draining = false;
    }

    #[inline(always)]
    pub(super) fn park_after(&mut self, id: ParentId, step: Step, front: bool) {
        let Step::Parked(wait) = step else { return };
        self.slots[id as usize].wait = Some(wait);
        match wait {
            Wait::Pool(leg) => {
                self.stats.pool_waits += 1;
                self.pool_waiting |= 1 << leg;
                let q = &mut self.pool_waiters[leg as usize];
                if front {
                    q.push_front(id)
                } else {
                    q.push_back(id)
                }
            }
            Wait::Io(leg) => {
                self.stats.io_waits += 1;
                if front {
                    self.io_waiters.push_front(id)
                } else {
                    self.io_waiters.push_back(id)
                }
                self.backend.wait_for_io(leg);
            }
            Wait::Intent => {}
        }
    }
}
