//! The I/O path, in the order an I/O takes it: a host I/O's submit, a read or write going
//! direct (its children out at once), a child's completion, the host's completion. Anything
//! that intervenes leaves this file for `run` (the engine's general run) or `poison`.

use std::os::raw::c_void;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use spdk_sys as sys;

use super::{complete_host, request, write_state, Channel};
use crate::engine::{ChildStatus, DirectWrite, Engine, HostStatus, IoOp, DIRECT, DIRECT_WRITE};
use crate::spdk::backend::SpdkBackend;
use crate::spdk::child_ctx::ChildCtx;
use crate::spdk::ffi::guard;
use crate::spdk::intent::ChannelIntent;

impl Channel {
    /// A host I/O for this channel. As for `child_done`, the common way (the engine idle and
    /// sound) cannot panic outside `run`'s own guard.
    ///
    /// The request is read off the `spdk_bdev_io` here, inside the engine's run, rather than
    /// handed in: built by the caller and copied through the stack, it was read back with wide
    /// loads spanning narrower stores, which stall the CPU until its store buffer drains.
    #[inline(always)]
    pub fn submit(&self, io: NonNull<sys::spdk_bdev_io>, op: IoOp) {
        if !self.busy.get() && !self.poisoned() {
            // The common way, when no leg changed since the engine last looked (a run brings
            // its view up to date first): a read or write direct if it can go so, else the
            // engine takes it, and only what that leaves queued is run. With faults injected
            // (which count every host I/O through the engine's run), only writes go direct,
            // their own steps injecting (see `direct_write`).
            if self.mirror().leg_gen.load(Ordering::Acquire) == self.seen_gen.get() {
                let direct = match op {
                    IoOp::Read if self.panic_every == 0 => self.direct_read(io),
                    IoOp::Write => self.direct_write(io),
                    _ => false,
                };
                if direct {
                    return;
                }
                if self.panic_every == 0 {
                    return self.submit_undrained(io, op);
                }
            }
            return self.run(|e| {
                e.submit(io, request(io, op));
                self.inject_fault();
            });
        }
        let req = request(io, op);
        guard("mirror submit", (), || {
            if self.busy.get() {
                self.deferred_parents.borrow_mut().push_back((io, req));
                self.deferred.set(true);
            } else {
                complete_host(io, HostStatus::Failed);
            }
        });
    }

    /// Issues a read direct (`Engine::try_direct_read`: no slot, no run of the engine) when it
    /// can go so. False when it did not, having taken nothing: it goes through `run`.
    #[inline(never)]
    fn direct_read(&self, io: NonNull<sys::spdk_bdev_io>) -> bool {
        match self.direct(|e| e.try_direct_read(io, &request(io, IoOp::Read))) {
            Some(Ok(false)) => true,
            Some(Ok(true)) => {
                // Refused for shared I/O, it was parked or took the general way.
                self.complete_finished();
                true
            }
            Some(Err(_)) => false,
            None => {
                // A panic before the child went out (nothing after its submit can panic).
                complete_host(io, HostStatus::Failed);
                true
            }
        }
    }

    /// Issues a write direct (`Engine::try_direct_write`: its state in the `spdk_bdev_io`'s
    /// driver context, no slot filled, no run of the engine) when it can go so. False when it
    /// did not, having taken nothing: it goes through the engine's `submit`.
    #[inline(never)]
    fn direct_write(&self, io: NonNull<sys::spdk_bdev_io>) -> bool {
        let st = write_state(io);
        let took = self.direct(|e| {
            // SAFETY: the driver context is this host I/O's, ours until it completes, and no
            // other reference to it is live (its children are not out yet).
            let r = e.try_direct_write(io, &request(io, IoOp::Write), unsafe { &mut *st });
            if r.is_ok() {
                // Tests: a panic once the write's children are out (or it is done).
                self.inject_fault();
            }
            Took::from(r)
        });
        match took {
            Some(Took::Declined) => false,
            // Nothing is queued after a write went out whole (it went direct only with nothing
            // to wake, and nothing it did can wake anyone): only a leg failure to note.
            Some(Took::InFlight) => {
                self.after_direct(false);
                true
            }
            Some(Took::Handed) => {
                self.after_direct(true);
                true
            }
            Some(done @ (Took::Done | Took::DoneFailed)) => {
                // A leg failure (a child refused inside its submit) is noted before the host
                // is acknowledged (`complete_now` holds it until it is on disk).
                self.after_direct(true);
                let status = if done == Took::Done {
                    HostStatus::Success
                } else {
                    HostStatus::Failed
                };
                self.complete_now(io, status);
                true
            }
            None => {
                // A panic: the engine was abandoned; the write's children out (if any) come
                // back through `drop_child`, the last failing the host.
                let fail_now = guard("mirror engine recovery", false, || {
                    // SAFETY: not busy any more (`direct` returned); the context is the host's.
                    unsafe { (*self.engine.get()).direct_write_unwound(&mut *st) }
                });
                if fail_now {
                    complete_host(io, HostStatus::Failed);
                }
                true
            }
        }
    }
}

/// What `Engine::try_direct_write` did, as one machine word. It comes back through
/// `catch_unwind` in memory: `Result<DirectWrite, host>` was stored with a one-byte tag and
/// read back as whole words, a store the CPU cannot forward to the load, which stalled every
/// write (perf: a third of `Channel::direct_write`'s time on that load). Its host is always
/// the one submitted, so no pointer needs to come back.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
enum Took {
    Declined,
    InFlight,
    Handed,
    Done,
    DoneFailed,
}

impl From<Result<DirectWrite<NonNull<sys::spdk_bdev_io>>, NonNull<sys::spdk_bdev_io>>> for Took {
    #[inline(always)]
    fn from(r: Result<DirectWrite<NonNull<sys::spdk_bdev_io>>, NonNull<sys::spdk_bdev_io>>) -> Took {
        match r {
            Err(_) => Took::Declined,
            Ok(DirectWrite::InFlight) => Took::InFlight,
            Ok(DirectWrite::Handed) => Took::Handed,
            Ok(DirectWrite::Done(_, HostStatus::Success)) => Took::Done,
            Ok(DirectWrite::Done(_, HostStatus::Failed)) => Took::DoneFailed,
        }
    }
}

/// Completion of a child I/O (SPDK calls this on the channel's thread).
///
/// Not wrapped in `guard`, unlike the module's other entries: its common path is reads of our
/// own context and flags, the engine's run (under `Channel::run`'s `catch_unwind`, which
/// recovers from a panic in the engine) and completing host I/Os; its slow paths guard
/// themselves (`Channel::child_done`). One `catch_unwind` per completion instead of two.
pub(super) extern "C" fn child_done(bdev_io: *mut sys::spdk_bdev_io, success: bool, arg: *mut c_void) {
    let ctx = arg as *mut ChildCtx;
    // SAFETY: `arg` is the context we passed at submit; it stays ours until freed.
    let channel = unsafe { (*ctx).channel as *const Channel };
    let status = if success {
        ChildStatus::Success
    } else {
        ChildStatus::Error
    };
    // Whoever takes the child gives its spdk_bdev_io back. Off the quick path the engine goes
    // first: parents parked on this leg's pool resume now and, finding no spdk_bdev_io, queue
    // their wait at the head (dep_unblock); only then is it freed, and SPDK hands it to them.
    // Freed first, it would go to whoever waited longest (the app above, submitting one more
    // parent) and, with tiny leg pools, parents end up holding every spdk_bdev_io (a deadlock
    // the pressure tests caught). On the quick path nobody of ours waits for the leg's pool,
    // and when nobody waits for an spdk_bdev_io either it goes back first (`then_complete`).
    let io = ChildIo(bdev_io);
    // SAFETY: the channel outlives every child it issued; `ctx` is non-null and ours.
    unsafe {
        match (*ctx).info.parent {
            DIRECT => (*channel).direct_read_back(NonNull::new_unchecked(ctx), status, io),
            DIRECT_WRITE => (*channel).direct_write_back(NonNull::new_unchecked(ctx), status, io),
            _ => (*channel).child_done(NonNull::new_unchecked(ctx), status, io),
        }
    }
}

impl Channel {
    /// A direct read's child is back. The common case (it succeeded, the engine is idle and
    /// sound, nothing waits to be woken) completes the host here, without `run`'s queues;
    /// anything else goes the way of any child.
    #[inline(always)]
    fn direct_read_back(&self, ctx: NonNull<ChildCtx>, status: ChildStatus, io: ChildIo) {
        if self.busy.get() || self.poisoned() {
            return self.back_aside(ctx, status, io);
        }
        // SAFETY: a context of ours, live until it is given back; its parent is the live host
        // read it serves.
        let (info, host) = unsafe { ((*ctx.as_ptr()).info, NonNull::new_unchecked((*ctx.as_ptr()).parent)) };
        // SAFETY: not busy: no other reference to the engine is live on this thread; a quick look.
        if !unsafe { &*self.engine.get() }.direct_read_quick(&info, status) {
            return self.back_slow(ctx, info, status, io);
        }
        // The read is done whatever happens below: its data is in the host's buffer.
        let _ = self.direct(|e| {
            e.backend_mut().child_back(info.leg);
            e.direct_read_ok(ctx, info)
        });
        self.then_complete(io, || self.complete_now(host, HostStatus::Success));
    }

    /// A direct write's child is back. The common case (it succeeded, the engine is idle and
    /// sound, nothing waits to be woken) counts down the write's state outside `run`, and the
    /// last completes the host here; anything else goes the way of any child.
    #[inline(always)]
    fn direct_write_back(&self, ctx: NonNull<ChildCtx>, status: ChildStatus, io: ChildIo) {
        if self.busy.get() || self.poisoned() {
            return self.back_aside(ctx, status, io);
        }
        // SAFETY: a context of ours, live until it is given back; its parent is the live host
        // write it serves.
        let (info, host) = unsafe { ((*ctx.as_ptr()).info, NonNull::new_unchecked((*ctx.as_ptr()).parent)) };
        let st = write_state(host);
        // SAFETY: not busy: a quick look at the engine; the write's state is its host's.
        if !unsafe { (*self.engine.get()).direct_write_quick(&info, status, &*st) } {
            return self.back_slow(ctx, info, status, io);
        }
        let done = self.direct(|e| {
            e.backend_mut().child_back(info.leg);
            // SAFETY: as above; nothing else refers to the state meanwhile.
            let done = e.direct_write_ok(ctx, info, unsafe { &mut *st });
            if done.is_some() {
                // Tests: a panic once the write's last child was taken back and the write
                // finished, its host not yet completed.
                self.inject_fault();
            }
            done
        });
        let Some(done) = done else {
            // A panic (the engine was abandoned): if that was the write's last child, its
            // host fails now, else its other children's returns (`drop_child`) finish it.
            io.give_back();
            // SAFETY: not busy any more (`direct` returned); the state is the host's.
            if guard("mirror engine recovery", false, || unsafe {
                (*self.engine.get()).direct_write_lost(&mut *st)
            }) {
                complete_host(host, HostStatus::Failed);
            }
            return;
        };
        self.then_complete(io, || {
            if let Some(status) = done {
                self.complete_now(host, status);
            }
        });
    }

    /// A child of this channel is back. The common case (the engine idle and sound, the child
    /// plain: `Engine::child_quick`) is counted at once outside `run`, its host completed if it
    /// was the last; anything else runs the engine. Nothing outside a guard can panic on
    /// either way. (Direct reads' children come back through `direct_read_back`.)
    #[inline(always)]
    fn child_done(&self, ctx: NonNull<ChildCtx>, status: ChildStatus, io: ChildIo) {
        if self.busy.get() || self.poisoned() {
            return self.back_aside(ctx, status, io);
        }
        // SAFETY: a context of ours, live until it is given back.
        let info = unsafe { (*ctx.as_ptr()).info };
        // SAFETY: not busy: no other reference to the engine is live on this thread; a quick look.
        if !unsafe { &*self.engine.get() }.child_quick(&info, status) {
            return self.back_slow(ctx, info, status, io);
        }
        // The common completion: counted, and its parent finished if it was the last child.
        let finished = self.direct(|e| {
            e.backend_mut().child_back(info.leg);
            e.child_ok(ctx, info)
        });
        self.then_complete(io, || {
            if let Some(Some((host, status))) = finished {
                self.complete_now(host, status);
            }
        });
    }

    /// The end of a child's quick path, once the engine has counted it: `complete` (its host's
    /// completion, if any) and the child's `spdk_bdev_io` given back. That goes back first when
    /// no parent of this engine waits for one (as SPDK raid1 frees its children first): the
    /// app's next I/O, submitted from the host's completion, then reuses it from the thread's
    /// cache while it is still in the CPU cache (two cores at QD128: reads +18 %). With a
    /// parent waiting (`Wait::Io`) it goes back after, as off the quick path, for that parent.
    #[inline(always)]
    fn then_complete(&self, io: ChildIo, complete: impl FnOnce()) {
        // SAFETY: not busy (checked by the caller): a quick look at the engine.
        if unsafe { &*self.engine.get() }.nobody_waits_for_io() {
            io.give_back();
            complete();
        } else {
            complete();
            io.give_back();
        }
    }

    /// Completes a host I/O the engine handed back (not through its queue), or holds it while
    /// a leg failure is being recorded (see `complete_all`).
    #[inline(always)]
    fn complete_now(&self, io: NonNull<sys::spdk_bdev_io>, status: HostStatus) {
        if self.mirror().failure_unrecorded() {
            return self.hold(io, status);
        }
        complete_host(io, status);
    }

    /// Runs `f` on the engine outside `run`, for the common cases (a direct read, a submit,
    /// a plain completion), without `run`'s checks, wake-ups and completion queue: the caller
    /// sees to what `f` leaves (`after_direct`). Under the same guard: a panic (a bug) poisons
    /// the engine as in `run`, and gives `None`. `busy` is set meanwhile, so a call back into
    /// this channel (SPDK defers a completion made inside a submit, but an `io_wait` entry
    /// may fire at once) only queues, and is run here after.
    #[inline(always)]
    fn direct<R>(&self, f: impl FnOnce(&mut Engine<SpdkBackend, ChannelIntent>) -> R) -> Option<R> {
        self.busy.set(true);
        // SAFETY: it was not busy: no other reference to the engine is live on this thread,
        // and `busy` keeps it so until this ends.
        let e = unsafe { &mut *self.engine.get() };
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(e)));
        self.busy.set(false);
        match ran {
            Ok(r) => {
                if self.deferred.get() {
                    self.run(|_| {});
                }
                Some(r)
            }
            Err(_) => {
                guard("mirror engine recovery", (), || self.poison(e));
                None
            }
        }
    }

    /// After a direct step (`direct`) that may have left work behind: runs the wake-ups it
    /// queued (`queued`) and a leg failure to note, and completes the host I/Os it finished.
    #[inline(always)]
    fn after_direct(&self, queued: bool) {
        // SAFETY: not busy: a quick read-only look.
        if queued || unsafe { &*self.engine.get() }.backend().failed_legs != 0 {
            return self.run(|e| e.run_wakeups());
        }
        self.complete_finished();
    }

    /// The engine takes a host I/O outside `run`; only what it leaves queued is run.
    #[inline(never)]
    fn submit_undrained(&self, io: NonNull<sys::spdk_bdev_io>, op: IoOp) {
        if let Some(queued) = self.direct(|e| e.submit_undrained(io, request(io, op))) {
            self.after_direct(queued);
        }
    }

    /// Completes the host I/Os the engine finished, with the engine idle (not `busy`).
    ///
    /// Completing one frees its `spdk_bdev_io`, and the layer above usually submits the next
    /// I/O at once. With the engine idle, the `spdk_bdev_io_wait` callback that the free runs
    /// enters the engine there and then, so a child parked for want of an `spdk_bdev_io` takes
    /// the freed one before a new parent can; were the engine busy, the callback could only
    /// note it, and SPDK would hand the `spdk_bdev_io` to the next waiter in line, the layer
    /// above: under pool pressure parents would keep taking what their children need (md's
    /// trap again) and the mirror would crawl.
    #[inline(always)]
    pub(super) fn complete_finished(&self) {
        // SAFETY: not busy; a quick look.
        if unsafe { !(*self.engine.get()).backend().completions.is_empty() } {
            self.complete_all();
        }
    }
}

/// A completed child's `spdk_bdev_io`, to be given back exactly once (`give_back` takes it).
pub(super) struct ChildIo(*mut sys::spdk_bdev_io);

impl ChildIo {
    #[inline(always)]
    pub(super) fn give_back(self) {
        // SAFETY: SPDK handed us the completed child bdev_io exactly once (`child_done`);
        // `ChildIo` is neither Copy nor Clone, so this runs once, and nothing uses it after.
        unsafe { sys::spdk_bdev_free_io(self.0) };
    }
}
