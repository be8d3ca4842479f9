//! The per-core channel: it owns one engine and guards it against re-entrance.
//!
//! SPDK may call back into the module while the engine is running on this thread: completing a
//! parent (`spdk_bdev_io_complete`) can make the layer above submit a new I/O at once, and
//! freeing a child's `spdk_bdev_io` runs `spdk_bdev_queue_io_wait` callbacks. While the engine
//! is busy such calls only queue their work (in preallocated queues); the outer call drains it
//! before returning. So the engine is never entered twice and `&mut` never aliases.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::VecDeque;
use std::os::raw::{c_int, c_void};
use std::ptr::{self, NonNull};
use std::sync::atomic::Ordering;

use crossbeam_queue::ArrayQueue;
use spdk_sys as sys;

use super::backend::{IoWait, LegIo, SpdkBackend};
use super::child_ctx::{ChannelCalls, ChildCtx};
use super::ctx_cache::CtxCache;
use super::error::Fail;
use super::ffi::{errlog, guard, warnlog};
use super::host_io;
use super::intent::ChannelIntent;
use super::mirror::Mirror;
use crate::engine::{
    Backend, ChildInfo, ChildStatus, DirectWrite, Engine, EngineConfig, HostStatus, IoOp, IoRequest, LegStats,
    Strategy, WriteState, DIRECT, DIRECT_WRITE,
};

/// How often the channel's poller looks for parked I/O (whose pool may have been refilled by
/// another core) and for legs whose channel can be released.
const POLL_PERIOD_US: u64 = 100;

/// A leg being taken out of this channel: released once its last child is back.
struct PendingRelease {
    leg: u32,
    iter: *mut sys::spdk_io_channel_iter,
}

pub struct Channel {
    mirror: *const Mirror,
    engine: UnsafeCell<Engine<SpdkBackend, ChannelIntent>>,
    busy: Cell<bool>,
    /// Replaced only by `reshape`, with the engine idle.
    deferred_children: RefCell<ArrayQueue<(usize, ChildInfo, ChildStatus)>>,
    deferred_parents: RefCell<VecDeque<(NonNull<sys::spdk_bdev_io>, IoRequest)>>,
    io_signal: Cell<bool>,
    /// Something above was queued while the engine was busy.
    deferred: Cell<bool>,
    poller: Cell<*mut sys::spdk_poller>,
    seen_gen: Cell<u64>,
    releases: RefCell<Vec<PendingRelease>>,
    /// Host completions held until a leg failure is recorded on disk.
    held: RefCell<VecDeque<(NonNull<sys::spdk_bdev_io>, crate::engine::HostStatus)>>,
    /// Host flushes held while a reshape waits for every engine to be idle
    /// (`Mirror::hold_flushes`).
    held_flushes: RefCell<VecDeque<NonNull<sys::spdk_bdev_io>>>,
    /// The engine panicked (a bug): its parents were abandoned and are failed once every child
    /// still in flight is back (their buffers are in use until then); meanwhile new host I/O
    /// fails at once and completions only give their contexts back. See `recover`.
    orphans: RefCell<Option<Vec<NonNull<sys::spdk_bdev_io>>>>,
    /// `orphans` is `Some`: read on every I/O, so a plain flag rather than a borrow.
    poisoned: Cell<bool>,
    /// Fault injection for tests (`SPDK_MIRROR_FAULT_PANIC_EVERY`): the engine panics on every
    /// Nth host I/O of this channel; 0: never.
    panic_every: u64,
    submits: Cell<u64>,
}

impl Channel {
    /// Builds the channel for the calling thread: a channel on every working leg.
    pub fn new(mirror: &Mirror) -> Result<Box<Channel>, Fail> {
        let engine = Self::engine_for(mirror)?;
        let chan = Box::new(Channel {
            mirror,
            engine: UnsafeCell::new(engine),
            busy: Cell::new(false),
            deferred_children: RefCell::new(ArrayQueue::new(Self::max_children(mirror))),
            deferred_parents: RefCell::new(VecDeque::with_capacity(256)),
            io_signal: Cell::new(false),
            deferred: Cell::new(false),
            poller: Cell::new(ptr::null_mut()),
            seen_gen: Cell::new(u64::MAX),
            releases: RefCell::new(Vec::new()),
            held: RefCell::new(VecDeque::with_capacity(mirror.opts.max_parents as usize)),
            held_flushes: RefCell::new(VecDeque::new()),
            orphans: RefCell::new(None),
            poisoned: Cell::new(false),
            panic_every: std::env::var("SPDK_MIRROR_FAULT_PANIC_EVERY")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            submits: Cell::new(0),
        });
        // SAFETY: nobody else can see this channel yet.
        let engine = unsafe { &mut *chan.engine.get() };
        chan.open_legs(engine, true)?;
        let me: *const Channel = &*chan;
        // SAFETY: the poller's argument is this boxed channel, which unregisters it on drop.
        let poller = unsafe { sys::spdk_poller_register(Some(poll), me as *mut c_void, POLL_PERIOD_US) };
        chan.poller.set(poller);
        Ok(chan)
    }

    /// Children that can be in flight at once: every context of every slot in use.
    fn max_children(mirror: &Mirror) -> usize {
        ((mirror.num_legs() as usize + 1) * mirror.opts.pool_size as usize).max(1)
    }

    /// An engine for the mirror as it is now, its legs not opened yet (`open_legs`).
    fn engine_for(mirror: &Mirror) -> Result<Engine<SpdkBackend, ChannelIntent>, Fail> {
        let geo = mirror.geo();
        let cfg = EngineConfig {
            // Slots for every parent it may ever admit; `admitted_parents` bounds them now.
            max_parents: mirror.opts.max_parents,
            strategy: Strategy::Immediate,
            read_policy: mirror.read_policy(),
        };
        let backend = SpdkBackend {
            legs: Vec::with_capacity(mirror.num_legs() as usize + 1),
            completions: VecDeque::with_capacity(cfg.max_parents as usize),
            block_size: geo.block_size() as u64,
            failed_legs: 0,
            channel: ptr::null(),
            calls: &CALLS,
            data_offset: mirror.data_offset,
            persist: mirror.persist.as_deref().map_or(ptr::null(), |p| p as *const _),
            rescue_busy: false,
        };
        let intent = ChannelIntent::new(mirror)?;
        let mut engine = Engine::with_intent(geo, cfg, backend, intent);
        engine.set_admission(mirror.admitted_parents());
        Ok(engine)
    }

    /// Gives `engine` (this channel's, or the one replacing it) an I/O channel on every working
    /// leg, and on the replacement being copied if there is one. A leg whose channel cannot be
    /// had fails the whole call when `strict`, else that leg is failed for the mirror (a
    /// reshape cannot be half undone; the failure is recorded like any other).
    fn open_legs(&self, engine: &mut Engine<SpdkBackend, ChannelIntent>, strict: bool) -> Result<(), Fail> {
        let mirror = self.mirror();
        let me = self as *const Channel as *const c_void;
        engine.backend_mut().channel = me;
        for i in 0..=mirror.num_legs() {
            let leg = mirror.slot(i);
            let mut io = LegIo::absent(me);
            io.ctxs = CtxCache::new(leg.pool(), mirror.ctx_cache);
            if leg.present() && !leg.failed.load(Ordering::Acquire) {
                // SAFETY: the desc is open; channels are per thread and this is our thread.
                let ch = unsafe { sys::spdk_bdev_get_io_channel(leg.desc()) };
                if ch.is_null() && strict {
                    Self::put_leg_channels(engine);
                    return Err(Fail::plain(
                        -libc::ENOMEM,
                        format!("no I/O channel for leg {}", leg.name()),
                    ));
                }
                if ch.is_null() {
                    mirror.fail_leg(i, "no I/O channel for it on a core");
                } else {
                    io.bdev = leg.bdev();
                    io.desc = leg.desc();
                    io.ch = ch;
                }
            }
            engine.backend_mut().legs.push(io);
        }
        engine.set_replacement(mirror.replacing());
        self.seen_gen.set(u64::MAX);
        self.sync_legs(engine);
        Ok(())
    }

    /// Rebuilds the engine for the mirror's new shape (legs, geometry, bitmap), on this
    /// channel's thread, with the mirror quiesced: the engine is idle, so nothing is lost.
    /// On failure the old engine stays (and the reshape is undone by its caller).
    pub fn reshape(&self) -> c_int {
        // Called from a channel message, between pollers: the engine is not running.
        if !self.idle() {
            return -libc::EBUSY;
        }
        // SAFETY: idle, so not busy: no other reference to the engine is live on this thread.
        let e = unsafe { &mut *self.engine.get() };
        let mut fresh = match Self::engine_for(self.mirror()) {
            Ok(f) => f,
            Err(why) => {
                errlog!("mirror {}: cannot reshape a channel: {why}", self.mirror().name());
                return -libc::ENOMEM;
            }
        };
        self.retire(e);
        // Not strict: it cannot fail.
        let _ = self.open_legs(&mut fresh, false);
        // A leg's wait entry may still sit in SPDK's io_wait queue although nothing waits on it
        // any more: it carries over to the new engine, and one of a dropped slot is leaked
        // rather than freed under SPDK (a few bytes, only when a shrink meets it queued).
        let (old_legs, new_legs) = (&mut e.backend_mut().legs, &mut fresh.backend_mut().legs);
        for (i, old) in old_legs.iter_mut().enumerate() {
            match new_legs.get_mut(i) {
                Some(new) => std::mem::swap(&mut new.wait, &mut old.wait),
                None if old.wait.queued.get() => {
                    let queued = std::mem::replace(&mut old.wait, IoWait::new(self as *const Channel as *const c_void));
                    Box::leak(queued);
                }
                None => {}
            }
        }
        *e = fresh;
        *self.deferred_children.borrow_mut() = ArrayQueue::new(Self::max_children(self.mirror()));
        0
    }

    /// Gives the engine's leg channels back and keeps its counters (they belong to the mirror).
    fn retire(&self, e: &mut Engine<SpdkBackend, ChannelIntent>) {
        if let Ok(mut retired) = self.mirror().retired_stats.lock() {
            let mut parked = 0;
            self.add_stats_from(e, &mut retired, &mut parked);
        }
        Self::put_leg_channels(e);
    }

    fn put_leg_channels(engine: &mut Engine<SpdkBackend, ChannelIntent>) {
        for leg in &mut engine.backend_mut().legs {
            if !leg.ch.is_null() {
                // SAFETY: we took this channel on this thread.
                unsafe { sys::spdk_put_io_channel(leg.ch) };
                leg.ch = ptr::null_mut();
            }
        }
    }

    pub fn mirror(&self) -> &Mirror {
        // SAFETY: a mirror outlives its channels (its io_device is unregistered only after all
        // channels are destroyed).
        unsafe { &*self.mirror }
    }

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

    /// A host flush: held while a reshape waits for every engine to be idle (SPDK's quiesce
    /// lets flushes through), else submitted.
    pub fn submit_flush(&self, io: NonNull<sys::spdk_bdev_io>) {
        if self.mirror().hold_flushes.load(Ordering::Acquire) {
            return self.held_flushes.borrow_mut().push_back(io);
        }
        self.submit(io, IoOp::Flush)
    }

    /// The reshape ended: the flushes held meanwhile go on (unless another reshape holds them
    /// again already; its end releases them).
    pub fn release_flushes(&self) {
        while !self.mirror().hold_flushes.load(Ordering::Acquire) {
            let Some(io) = self.held_flushes.borrow_mut().pop_front() else {
                return;
            };
            self.submit(io, IoOp::Flush);
        }
    }

    /// Whether the engine holds no host I/O and nothing of it waits here: a reshape may
    /// rebuild it now (`reshape`).
    pub fn idle(&self) -> bool {
        if self.busy.get() || self.poisoned() {
            return false;
        }
        // SAFETY: not busy: no other reference to the engine is live on this thread.
        let e = unsafe { &*self.engine.get() };
        e.is_idle() && self.held.borrow().is_empty() && self.releases.borrow().is_empty()
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

    /// A child back while the engine runs (queued for it) or after it panicked: set aside;
    /// its `spdk_bdev_io` goes back now.
    #[cold]
    fn back_aside(&self, ctx: NonNull<ChildCtx>, status: ChildStatus, io: ChildIo) {
        guard("child completion", (), || self.child_done_aside(ctx, status));
        io.give_back();
    }

    /// A child off the quick path: the engine's run takes it first, so the parents it wakes
    /// can queue for its `spdk_bdev_io` ahead of the layer above (see `child_done`, the
    /// `extern "C"` one), then that goes back.
    #[inline(never)]
    fn back_slow(&self, ctx: NonNull<ChildCtx>, info: ChildInfo, status: ChildStatus, io: ChildIo) {
        self.run(|e| Self::deliver(e, ctx, info, status));
        io.give_back();
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

    /// Holds a finished host I/O until the leg failure being recorded is on disk.
    #[cold]
    fn hold(&self, io: NonNull<sys::spdk_bdev_io>, status: HostStatus) {
        guard("mirror completion", (), || {
            self.held.borrow_mut().push_back((io, status))
        });
    }

    /// Test fault injection (`SPDK_MIRROR_FAULT_PANIC_EVERY`), after a parent entered the engine
    /// (or a direct write's child came back: see `direct_write_back`).
    #[inline]
    fn inject_fault(&self) {
        if self.panic_every != 0 {
            self.submits.set(self.submits.get() + 1);
            if self.submits.get() % self.panic_every == 0 {
                panic!("injected by SPDK_MIRROR_FAULT_PANIC_EVERY");
            }
        }
    }

    fn poisoned(&self) -> bool {
        self.poisoned.get()
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

    /// The engine takes a host I/O outside `run`; only what it leaves queued is run.
    #[inline(never)]
    fn submit_undrained(&self, io: NonNull<sys::spdk_bdev_io>, op: IoOp) {
        if let Some(queued) = self.direct(|e| e.submit_undrained(io, request(io, op))) {
            self.after_direct(queued);
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

    /// Completes a host I/O the engine handed back (not through its queue), or holds it while
    /// a leg failure is being recorded (see `complete_all`).
    #[inline(always)]
    fn complete_now(&self, io: NonNull<sys::spdk_bdev_io>, status: HostStatus) {
        if self.mirror().failure_unrecorded() {
            return self.hold(io, status);
        }
        complete_host(io, status);
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

    /// A child of an abandoned parent is back: its context goes home; once none is left in
    /// flight the orphans are failed and the engine serves again. A direct read's host, which
    /// no engine state held, completes with its child's status.
    fn orphan_child_done(&self, ctx: NonNull<ChildCtx>, info: ChildInfo, status: ChildStatus) {
        // SAFETY: not busy, so no other reference to the engine is live on this thread.
        let e = unsafe { &mut *self.engine.get() };
        if let Some((host, status)) = Self::drop_child(e, ctx, info, status) {
            complete_host(host, status);
        }
        self.recover();
    }

    /// Gives a child's context back without the engine (after a panic in it): a direct read's
    /// host (with its child's status), or a direct write's when this was its last child (failed:
    /// its copies may differ), is returned for the caller to complete.
    fn drop_child(
        e: &mut Engine<SpdkBackend, ChannelIntent>,
        ctx: NonNull<ChildCtx>,
        info: ChildInfo,
        status: ChildStatus,
    ) -> Option<(NonNull<sys::spdk_bdev_io>, HostStatus)> {
        e.backend_mut().child_back(info.leg);
        // SAFETY: a context of ours; a direct child's parent is the live host it serves.
        let host = || unsafe { NonNull::new_unchecked((*ctx.as_ptr()).parent) };
        match info.parent {
            DIRECT => {
                e.direct_read_dropped(ctx, info);
                Some((host(), host_status(status)))
            }
            DIRECT_WRITE => {
                let host = host();
                // SAFETY: the write's state is its host's, and nothing else refers to it now.
                let last = e.direct_write_dropped(ctx, info, unsafe { &mut *write_state(host) });
                last.then_some((host, HostStatus::Failed))
            }
            _ => {
                e.backend_mut().free_child(info.leg, ctx);
                None
            }
        }
    }

    /// Fails the orphans once no child of theirs is in flight, and lifts the poison.
    fn recover(&self) {
        // SAFETY: callers are not busy: no other reference to the engine is live.
        let e = unsafe { &mut *self.engine.get() };
        // (A child on its way through the reserve is counted in its leg's `inflight` too.)
        if e.backend().legs.iter().any(|l| l.inflight > 0) {
            return;
        }
        let Some(orphans) = self.orphans.borrow_mut().take() else {
            return;
        };
        self.poisoned.set(false);
        warnlog!(
            "mirror {}: {} host I/Os abandoned after an internal error failed; this core serves I/O again",
            self.mirror().name(),
            orphans.len()
        );
        for io in orphans {
            complete_host(io, HostStatus::Failed);
        }
    }

    /// After a panic inside the engine (a bug): nothing may stay wedged. Host I/Os the engine
    /// had finished are completed; those it held are abandoned (failed once their children are
    /// back); queued ones are failed; the engine starts afresh. Their writes' regions stay dirty.
    fn poison(&self, e: &mut Engine<SpdkBackend, ChannelIntent>) {
        errlog!(
            "mirror {}: internal error in the I/O engine: failing its outstanding I/O on this core",
            self.mirror().name()
        );
        let finished: Vec<_> = e.backend_mut().completions.drain(..).collect();
        let orphans = e.abandon();
        *self.orphans.borrow_mut() = Some(orphans);
        self.poisoned.set(true);
        self.deferred.set(false);
        self.io_signal.set(false);
        let queued: Vec<_> = self.deferred_parents.borrow_mut().drain(..).collect();
        let children: Vec<_> = std::iter::from_fn(|| self.deferred_children.borrow().pop()).collect();
        let mut direct = Vec::new();
        for (ctx, info, status) in children {
            // SAFETY: the queue holds non-null context pointers.
            let ctx = unsafe { NonNull::new_unchecked(ctx as *mut ChildCtx) };
            direct.extend(Self::drop_child(e, ctx, info, status));
        }
        for (io, status) in finished {
            // Finished, but an acknowledgement still waits for a leg failure to be recorded.
            if self.mirror().failure_unrecorded() {
                self.held.borrow_mut().push_back((io, status));
            } else {
                complete_host(io, status);
            }
        }
        for (io, _) in queued {
            complete_host(io, HostStatus::Failed);
        }
        for (io, status) in direct {
            complete_host(io, status);
        }
        self.recover();
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
    fn complete_finished(&self) {
        // SAFETY: not busy; a quick look.
        if unsafe { !(*self.engine.get()).backend().completions.is_empty() } {
            self.complete_all();
        }
    }

    #[inline(never)]
    fn complete_all(&self) {
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

    /// Brings the engine's view of the legs up to date with the mirror's (on every run: one
    /// load and compare unless a leg changed).
    #[inline]
    fn sync_legs(&self, e: &mut Engine<SpdkBackend, ChannelIntent>) {
        let gen = self.mirror().leg_gen.load(Ordering::Acquire);
        if gen != self.seen_gen.get() {
            self.resync_legs(e, gen);
        }
    }

    #[cold]
    fn resync_legs(&self, e: &mut Engine<SpdkBackend, ChannelIntent>, gen: u64) {
        let mirror = self.mirror();
        self.seen_gen.set(gen);
        // This engine's slots (the legs, then the replacement's), which may lag the mirror's
        // for a moment while a reshape reaches each core (the mirror is quiesced then).
        for i in 0..e.backend().legs.len() as u32 {
            let leg = mirror.slot(i);
            let known = leg.failed.load(Ordering::Acquire);
            let out = known || e.backend().legs[i as usize].ch.is_null();
            if out && !e.leg_failed(i) {
                e.fail_leg(i);
                if known {
                    // The mirror failed it (or it is absent): nothing to report. Reported, it
                    // would fail whatever is in the slot when the report is read, such as a
                    // stale leg attached for its rebuild meanwhile.
                    e.backend_mut().failed_legs &= !(1 << i);
                }
            } else if !out && e.leg_failed(i) {
                e.restore_leg(i);
            }
            e.set_leg_readable(i, !leg.write_only.load(Ordering::Acquire));
        }
        e.set_read_policy(mirror.read_policy());
        e.set_admission(mirror.admitted_parents());
    }

    /// Takes leg `leg` out of this channel; `iter` continues once its children are back.
    pub fn release_leg(&self, leg: u32, iter: *mut sys::spdk_io_channel_iter) {
        self.releases.borrow_mut().push(PendingRelease { leg, iter });
        if !self.busy.get() {
            self.run(|_| {});
            self.finish_releases();
        }
    }

    fn finish_releases(&self) {
        if self.busy.get() || self.releases.borrow().is_empty() {
            return;
        }
        // SAFETY: not busy, so no other reference to the engine is live.
        let e = unsafe { &mut *self.engine.get() };
        let mut releases = self.releases.borrow_mut();
        releases.retain(|r| {
            let leg = &mut e.backend_mut().legs[r.leg as usize];
            if leg.inflight > 0 {
                return true;
            }
            if !leg.ch.is_null() {
                // SAFETY: no child of ours is in flight on it; taken on this thread.
                unsafe { sys::spdk_put_io_channel(leg.ch) };
                leg.ch = ptr::null_mut();
            }
            leg.desc = ptr::null_mut();
            leg.bdev = ptr::null_mut();
            // SAFETY: `iter` is the live iteration that called `release_leg`.
            unsafe { sys::spdk_for_each_channel_continue(r.iter, 0) };
            false
        });
    }

    /// Gives this channel an I/O channel on a leg that was just added.
    pub fn attach_leg(&self, leg: u32) -> c_int {
        let mirror = self.mirror();
        let l = mirror.slot(leg);
        // SAFETY: the desc was opened by the mirror; the channel is taken on this thread.
        let ch = unsafe { sys::spdk_bdev_get_io_channel(l.desc()) };
        if ch.is_null() {
            return -libc::ENOMEM;
        }
        let (bdev, desc) = (l.bdev(), l.desc());
        // Called from a channel message, between pollers: the engine is not running.
        debug_assert!(!self.busy.get());
        // SAFETY: not busy: no other reference to the engine is live on this thread.
        let e = unsafe { &mut *self.engine.get() };
        let io = &mut e.backend_mut().legs[leg as usize];
        io.bdev = bdev;
        io.desc = desc;
        io.ch = ch;
        // Re-read the legs: this one is usable now.
        self.seen_gen.set(u64::MAX);
        self.run(|_| {});
        0
    }

    /// Adds this channel's per-leg counters into `into`.
    pub fn add_stats(&self, into: &mut [LegStats], parked: &mut u64) {
        if self.busy.get() {
            return;
        }
        // SAFETY: not busy: no other reference to the engine is live on this thread.
        let e = unsafe { &*self.engine.get() };
        self.add_stats_from(e, into, parked);
    }

    fn add_stats_from(&self, e: &Engine<SpdkBackend, ChannelIntent>, into: &mut [LegStats], parked: &mut u64) {
        let legs = e.backend().legs.len();
        for (i, s) in into.iter_mut().enumerate().take(legs) {
            let l = e.leg_stats(i as u32);
            s.reads += l.reads;
            s.writes += l.writes;
            s.read_errors += l.read_errors;
            s.write_errors += l.write_errors;
            s.read_repairs += l.read_repairs;
            s.pool_empty += l.pool_empty;
            s.nomem += l.nomem;
        }
        *parked += e.stats().pool_waits + e.stats().io_waits;
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let poller = self.poller.replace(ptr::null_mut());
        if !poller.is_null() {
            let mut p = poller;
            // SAFETY: our own poller, unregistered on its thread.
            unsafe { sys::spdk_poller_unregister(&mut p) };
        }
        let e = self.engine.get_mut() as *mut Engine<SpdkBackend, ChannelIntent>;
        // SAFETY: dropping: nothing else refers to the engine.
        let e = unsafe { &mut *e };
        if !e.is_idle() {
            warnlog!("mirror channel destroyed with I/O outstanding");
        }
        // None can be: each is a host I/O the layer above waits for before it lets go.
        for io in self.held_flushes.get_mut().drain(..) {
            complete_host(io, HostStatus::Failed);
        }
        self.retire(e);
    }
}

/// What the engine is asked to do by host I/O `io`.
#[inline(always)]
fn request(io: NonNull<sys::spdk_bdev_io>, op: IoOp) -> IoRequest {
    // SAFETY: `io` is a live host I/O of ours.
    let v = unsafe { host_io::view(io.as_ptr()) };
    IoRequest {
        op,
        lba: v.offset_blocks,
        blocks: v.num_blocks,
    }
}

/// A direct write's state: in its host `spdk_bdev_io`'s driver context.
#[inline(always)]
fn write_state(io: NonNull<sys::spdk_bdev_io>) -> *mut WriteState {
    // SAFETY: `io` is a live host I/O of ours; its driver context is `get_ctx_size` bytes,
    // which hold a `WriteState` (see `register::ctx_size`).
    unsafe { host_io::driver_ctx::<WriteState>(io.as_ptr()) }
}

/// A direct read's host status after a panic in the engine: its child's, no retry.
fn host_status(status: ChildStatus) -> HostStatus {
    match status {
        ChildStatus::Success => HostStatus::Success,
        ChildStatus::Error => HostStatus::Failed,
    }
}

/// Completes a host I/O to SPDK.
fn complete_host(io: NonNull<sys::spdk_bdev_io>, status: HostStatus) {
    let status = match status {
        HostStatus::Success => sys::SPDK_BDEV_IO_STATUS_SUCCESS,
        HostStatus::Failed => sys::SPDK_BDEV_IO_STATUS_FAILED,
    };
    // SAFETY: callers complete each host I/O of ours exactly once.
    unsafe { sys::spdk_bdev_io_complete(io.as_ptr(), status) };
}

extern "C" fn poll(arg: *mut c_void) -> c_int {
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
        if parked || chan.mirror().leg_gen.load(Ordering::Acquire) != chan.seen_gen.get() {
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

/// What the backend and the reserve call this channel back through.
static CALLS: ChannelCalls = ChannelCalls {
    child_done: Some(child_done),
    io_wait_done: Some(io_wait_done),
    rescue_back,
};

/// Completion of a child I/O (SPDK calls this on the channel's thread).
///
/// Not wrapped in `guard`, unlike the module's other entries: its common path is reads of our
/// own context and flags, the engine's run (under `Channel::run`'s `catch_unwind`, which
/// recovers from a panic in the engine) and completing host I/Os; its slow paths guard
/// themselves (`Channel::child_done`). One `catch_unwind` per completion instead of two.
extern "C" fn child_done(bdev_io: *mut sys::spdk_bdev_io, success: bool, arg: *mut c_void) {
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

/// A completed child's `spdk_bdev_io`, to be given back exactly once (`give_back` takes it).
struct ChildIo(*mut sys::spdk_bdev_io);

impl ChildIo {
    #[inline(always)]
    fn give_back(self) {
        // SAFETY: SPDK handed us the completed child bdev_io exactly once (`child_done`);
        // `ChildIo` is neither Copy nor Clone, so this runs once, and nothing uses it after.
        unsafe { sys::spdk_bdev_free_io(self.0) };
    }
}

/// SPDK's `spdk_bdev_queue_io_wait` callback: an `spdk_bdev_io` was freed on this thread.
///
/// On the I/O path under pool pressure, so like `child_done` not wrapped in `guard`: outside
/// the engine's run (under `Channel::run`'s `catch_unwind`) it only sets flags.
extern "C" fn io_wait_done(arg: *mut c_void) {
    let wait = arg as *const IoWait;
    // SAFETY: `arg` is the boxed IoWait we queued; its channel is live.
    unsafe {
        (*wait).queued.set(false);
        (*((*wait).channel as *const Channel)).signal_io();
    }
}

/// A child sent through the reserve is back on this channel's thread.
fn rescue_back(ctx: NonNull<ChildCtx>, status: ChildStatus) {
    // SAFETY: the context is live and its channel with it.
    unsafe {
        let info = (*ctx.as_ptr()).info;
        (*((*ctx.as_ptr()).channel as *const Channel)).rescue_done(ctx, info, status);
    }
}
