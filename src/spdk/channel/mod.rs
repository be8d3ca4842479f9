//! The per-core channel: it owns one engine and guards it against re-entrance.
//!
//! SPDK may call back into the module while the engine is running on this thread: completing a
//! parent (`spdk_bdev_io_complete`) can make the layer above submit a new I/O at once, and
//! freeing a child's `spdk_bdev_io` runs `spdk_bdev_queue_io_wait` callbacks. While the engine
//! is busy such calls only queue their work (in preallocated queues); the outer call drains it
//! before returning. So the engine is never entered twice and `&mut` never aliases.
//!
//! Here: the channel, its making and reshaping, and the helpers every path shares. The I/O
//! path, top to bottom, is in `io_path` (submit, children, completions, the host's
//! completion); what it hands off is in `run` (the engine's general run, completions set
//! aside, the poller), `poison` (after a panic in the engine), `legs` (the engine's view of
//! the legs, their channels and counters) and `stall` (children held below, none coming back).

mod io_path;
mod legs;
mod poison;
mod run;
mod stall;

use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::VecDeque;
use std::os::raw::{c_int, c_void};
use std::ptr::{self, NonNull};
use std::sync::atomic::Ordering;

use crossbeam_queue::ArrayQueue;
use spdk_sys as sys;

use super::backend::{IoWait, SpdkBackend};
use super::child_ctx::ChannelCalls;
use super::error::Fail;
use super::ffi::{errlog, warnlog};
use super::host_io;
use super::intent::ChannelIntent;
use super::mirror::Mirror;
use crate::engine::{ChildInfo, ChildStatus, Engine, EngineConfig, HostStatus, IoOp, IoRequest, Strategy, WriteState};
use io_path::child_done;
use run::{io_wait_done, poll, rescue_back};
use stall::StallWatch;

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
    stall: StallWatch,
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
            stall: StallWatch::default(),
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
            stalled: false,
            rescued: 0,
        };
        let intent = ChannelIntent::new(mirror)?;
        let mut engine = Engine::with_intent(geo, cfg, backend, intent);
        engine.set_admission(mirror.admitted_parents());
        Ok(engine)
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
        self.stall.reset();
        *self.deferred_children.borrow_mut() = ArrayQueue::new(Self::max_children(self.mirror()));
        0
    }

    pub fn mirror(&self) -> &Mirror {
        // SAFETY: a mirror outlives its channels (its io_device is unregistered only after all
        // channels are destroyed).
        unsafe { &*self.mirror }
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

    /// Test fault injection (`SPDK_MIRROR_FAULT_PANIC_EVERY`), after a parent entered the engine
    /// (or a direct write's child came back: see `direct_write_back`).
    #[inline]
    pub(super) fn inject_fault(&self) {
        if self.panic_every != 0 {
            self.submits.set(self.submits.get() + 1);
            if self.submits.get() % self.panic_every == 0 {
                panic!("injected by SPDK_MIRROR_FAULT_PANIC_EVERY");
            }
        }
    }

    pub(super) fn poisoned(&self) -> bool {
        self.poisoned.get()
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

/// What the backend and the reserve call this channel back through.
static CALLS: ChannelCalls = ChannelCalls {
    child_done: Some(child_done),
    io_wait_done: Some(io_wait_done),
    rescue_back,
};
