//! The slow path beside `io_path`: the engine's general run (everything queued while it was
//! busy, then the host I/Os it finished), completions set aside or taken off the quick path,
//! the reserve's returns, `io_wait` callbacks and the channel's poller.

use std::os::raw::{c_int, c_void};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use spdk_sys as sys;

use super::io_path::ChildIo;
use super::{complete_host, request, write_state, Channel};
use crate::engine::{Backend, ChildInfo, ChildStatus, Engine, HostStatus, IoOp, DIRECT, DIRECT_WRITE};
use crate::spdk::backend::{IoWait, SpdkBackend};
use crate::spdk::child_ctx::ChildCtx;
use crate::spdk::ffi::{errlog, guard};
use crate::spdk::intent::ChannelIntent;

impl Channel {
    /// A child back while the engine runs (queued for it) or after it panicked: set aside;
    /// its `spdk_bdev_io` goes back now.
    #[cold]
    pub(super) fn back_aside(&self, ctx: NonNull<ChildCtx>, status: ChildStatus, io: ChildIo) {
        guard("child completion", (), || self.child_done_aside(ctx, status));
        io.give_back();
    }

    /// A child off the quick path: the engine's run takes it first, so the parents it wakes
    /// can queue for its `spdk_bdev_io` ahead of the layer above (see `child_done`, the
    /// `extern "C"` one), then that goes back.
    #[inline(never)]
    pub(super) fn back_slow(&self, ctx: NonNull<ChildCtx>, info: ChildInfo, status: ChildStatus, io: ChildIo) {
        self.run(|e| Self::deliver(e, ctx, info, status));
        io.give_back();
    }

    /// A child back while the engine runs (queued for it) or after it panicked (see `recover`).
    #[cold]
    fn child_done_aside(&self, ctx: NonNull<ChildCtx>, status: ChildStatus) {
        // SAFETY: a context of ours, live until it is given back.
        let info = unsafe { (*ctx.as_ptr()).info };
        if self.poisoned() && !self.busy.get() {
            return self.orphan_child_done(ctx, info, status);
        }
        if self.busy.get() {
            if self
                .deferred_children
                .borrow()
                .push((ctx.as_ptr() as usize, info, status))
                .is_err()
            {
                // Cannot happen: every in-flight child holds one of the contexts counted.
                errlog!("BUG: deferred completion queue full");
            }
            self.deferred.set(true);
        } else {
            self.run(|e| Self::deliver(e, ctx, info, status));
        }
    }

    /// A child sent through the reserve is back (on this channel's thread).
    pub fn rescue_done(&self, ctx: NonNull<ChildCtx>, info: ChildInfo, status: ChildStatus) {
        if self.poisoned() && !self.busy.get() {
            // SAFETY: not busy: no other reference to the engine is live.
            unsafe { (*self.engine.get()).backend_mut().rescue_busy = false };
            return self.orphan_child_done(ctx, info, status);
        }
        if self.busy.get() {
            // Cannot be: messages run between pollers, never inside the engine. Deliver it
            // anyway; this channel just stops using the reserve.
            errlog!("BUG: reserve completion while the engine runs");
            return guard("child completion", (), || self.child_done_aside(ctx, status));
        }
        self.run(|e| {
            e.backend_mut().rescue_busy = false;
            e.backend_mut().rescued += 1;
            Self::deliver(e, ctx, info, status);
            // A child that found the pool empty while this one was out parked for an
            // `spdk_bdev_io` of this thread; this one's went back on the reserve's thread,
            // which wakes nobody here: without this, the parked one waited for the poller
            // (100 us an I/O; a mirror over mirrors crawled at 9 K IOPS under a starved pool).
            if !e.nobody_waits_for_io() {
                e.io_available();
            }
        });
    }

    #[inline(always)]
    fn deliver(
        e: &mut Engine<SpdkBackend, ChannelIntent>,
        ctx: NonNull<ChildCtx>,
        info: ChildInfo,
        status: ChildStatus,
    ) {
        e.backend_mut().child_back(info.leg);
        match info.parent {
            DIRECT => {
                // SAFETY: a context of ours; its parent is the live host read it serves.
                let host = unsafe { NonNull::new_unchecked((*ctx.as_ptr()).parent) };
                if let Some(host) = e.direct_read_done(host, request(host, IoOp::Read), ctx, info, status) {
                    e.backend_mut().complete(host, HostStatus::Success);
                }
            }
            DIRECT_WRITE => {
                // SAFETY: a context of ours; its parent is the live host write it serves.
                let host = unsafe { NonNull::new_unchecked((*ctx.as_ptr()).parent) };
                // SAFETY: the write's state is its host's, referred to only here meanwhile.
                let st = unsafe { &mut *write_state(host) };
                if let Some(status) = e.direct_write_back(ctx, info, status, st) {
                    e.backend_mut().complete(host, status);
                }
            }
            _ => e.child_done(ctx, info, status),
        }
    }

    /// An `spdk_bdev_io` may be free again.
    #[inline(always)]
    pub fn signal_io(&self) {
        if self.poisoned() {
            return;
        }
        if self.busy.get() {
            self.io_signal.set(true);
            self.deferred.set(true);
        } else {
            self.run(|e| e.io_available());
        }
    }

    /// Runs `f` on the engine, then everything that queued up meanwhile, then completes the
    /// host I/Os that finished, until nothing is left.
    #[inline(always)]
    pub fn run(&self, f: impl FnOnce(&mut Engine<SpdkBackend, ChannelIntent>)) {
        debug_assert!(!self.busy.get());
        if self.poisoned() {
            return;
        }
        self.busy.set(true);
        // SAFETY: `busy` makes this the only live reference to the engine: every other entry
        // point only queues work while it is set.
        let e = unsafe { &mut *self.engine.get() };
        // A panic here must not leave `busy` set (every later I/O of this core would queue
        // forever) nor any host I/O uncompleted: see `poison`. Unwinding costs nothing unless
        // it happens.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_engine(e, f)));
        self.busy.set(false);
        if ran.is_err() {
            return guard("mirror engine recovery", (), || self.poison(e));
        }
        self.complete_finished();
    }

    #[inline(always)]
    fn run_engine(
        &self,
        e: &mut Engine<SpdkBackend, ChannelIntent>,
        f: impl FnOnce(&mut Engine<SpdkBackend, ChannelIntent>),
    ) {
        self.sync_legs(e);
        f(e);
        // Re-entrant calls are rare: one flag keeps the common path off the queues.
        while self.deferred.replace(false) {
            loop {
                let next = self.deferred_children.borrow().pop();
                let Some((ctx, info, status)) = next else { break };
                // SAFETY: the queue holds non-null context pointers.
                Self::deliver(e, unsafe { NonNull::new_unchecked(ctx as *mut ChildCtx) }, info, status);
            }
            loop {
                let next = self.deferred_parents.borrow_mut().pop_front();
                let Some((io, req)) = next else { break };
                e.submit(io, req);
                self.inject_fault();
            }
            if self.io_signal.take() {
                e.io_available();
            }
        }
        // Before any completion is released: a leg failure must be visible as unrecorded.
        if e.backend().failed_legs != 0 {
            self.note_failed_legs(e);
        }
    }

    #[inline(never)]
    pub(super) fn complete_all(&self) {
        loop {
            // SAFETY: not busy; the reference ends before the completion below may re-enter.
            let next = unsafe { (*self.engine.get()).backend_mut().completions.pop_front() };
            let Some((io, status)) = next else { break };
            // While a leg failure is not yet in the superblocks, no host I/O is acknowledged:
            // a write that missed the failed leg must not be acked before the metadata says
            // the leg is stale, or a crash now could let that leg be trusted again.
            if self.mirror().failure_unrecorded() {
                guard("mirror completion", (), || {
                    self.held.borrow_mut().push_back((io, status))
                });
                continue;
            }
            // The engine completes each host I/O exactly once.
            complete_host(io, status);
        }
    }

    /// Holds a finished host I/O until the leg failure being recorded is on disk.
    #[cold]
    pub(super) fn hold(&self, io: NonNull<sys::spdk_bdev_io>, status: HostStatus) {
        guard("mirror completion", (), || {
            self.held.borrow_mut().push_back((io, status))
        });
    }

    /// Acknowledges the host I/Os held while a leg failure was being recorded.
    fn release_held(&self) {
        loop {
            let next = self.held.borrow_mut().pop_front();
            let Some((io, status)) = next else { break };
            // Held once by `run`, completed once here; not busy, so a submit it triggers runs
            // the engine normally.
            complete_host(io, status);
        }
    }

    /// Legs the engine failed (an error on anything that changes data: a write, write-zeroes,
    /// unmap or flush) become failed for the whole mirror.
    fn note_failed_legs(&self, e: &mut Engine<SpdkBackend, ChannelIntent>) {
        let failed = std::mem::take(&mut e.backend_mut().failed_legs);
        if failed != 0 {
            for leg in 0..32 {
                if failed & (1 << leg) != 0 {
                    self.mirror()
                        .fail_leg(leg, "a write, write-zeroes, unmap or flush failed on it");
                }
            }
        }
    }
}

/// SPDK's `spdk_bdev_queue_io_wait` callback: an `spdk_bdev_io` was freed on this thread.
///
/// On the I/O path under pool pressure, so like `child_done` not wrapped in `guard`: outside
/// the engine's run (under `Channel::run`'s `catch_unwind`) it only sets flags.
pub(super) extern "C" fn io_wait_done(arg: *mut c_void) {
    let wait = arg as *const IoWait;
    // SAFETY: `arg` is the boxed IoWait we queued; its channel is live.
    unsafe {
        (*wait).queued.set(false);
        let channel = &*((*wait).channel as *const Channel);
        // Stalled, the channel leaves the freed `spdk_bdev_io` to whoever waits behind it
        // (the layer below, see `stall`); its poller retries.
        if !channel.stall.stalled() {
            channel.signal_io();
        }
    }
}

/// A child sent through the reserve is back on this channel's thread.
pub(super) fn rescue_back(ctx: NonNull<ChildCtx>, status: ChildStatus) {
    // SAFETY: the context is live and its channel with it.
    unsafe {
        let info = (*ctx.as_ptr()).info;
        (*((*ctx.as_ptr()).channel as *const Channel)).rescue_done(ctx, info, status);
    }
}

pub(super) extern "C" fn poll(arg: *mut c_void) -> c_int {
    guard("mirror poller", sys::SPDK_POLLER_IDLE as c_int, || {
        // SAFETY: the poller's argument is its live channel.
        let chan = unsafe { &*(arg as *const Channel) };
        if chan.busy.get() {
            return sys::SPDK_POLLER_IDLE as c_int;
        }
        let mut busy = false;
        if chan.poisoned() {
            chan.recover();
            busy = true;
        }
        // While poisoned the engine does not run: bitmap answers stay queued for it.
        let persist = chan.mirror().persist.as_deref().filter(|_| !chan.poisoned());
        if let Some(p) = persist {
            if p.ready_count.load(Ordering::Acquire) != 0 {
                // SAFETY: not busy: a quick read-only look.
                let me = unsafe { &*chan.engine.get() }.intent().chan();
                let ready = p.take_ready(me);
                if !ready.is_empty() {
                    chan.run(|e| {
                        for id in ready {
                            e.write_intent_ready(id);
                        }
                    });
                    busy = true;
                }
            }
        }
        // SAFETY: not busy: a quick read-only look.
        let parked = unsafe { &*chan.engine.get() }.has_parked();
        let let_in_more = !chan.poisoned() && chan.watch_stall();
        if parked || let_in_more || chan.mirror().leg_gen.load(Ordering::Acquire) != chan.seen_gen.get() {
            chan.run(|e| e.poll());
            busy = true;
        }
        if !chan.releases.borrow().is_empty() {
            chan.finish_releases();
            busy = true;
        }
        if !chan.held.borrow().is_empty() {
            if chan.mirror().failure_unrecorded() {
                // Make sure a metadata write is on its way (a no-op when one is queued).
                chan.mirror().request_metadata_write();
            } else {
                chan.release_held();
                busy = true;
            }
        }
        if busy {
            sys::SPDK_POLLER_BUSY as c_int
        } else {
            sys::SPDK_POLLER_IDLE as c_int
        }
    })
}
