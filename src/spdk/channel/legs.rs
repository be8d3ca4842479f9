//! The engine's view of the mirror's legs on this core: their I/O channels (opened, attached,
//! released), failures and changes brought in from the mirror, and the per-leg counters.

use std::os::raw::{c_int, c_void};
use std::ptr;
use std::sync::atomic::Ordering;

use spdk_sys as sys;

use super::{Channel, PendingRelease};
use crate::engine::{Engine, LegStats};
use crate::spdk::backend::{LegIo, SpdkBackend};
use crate::spdk::ctx_cache::CtxCache;
use crate::spdk::error::Fail;
use crate::spdk::intent::ChannelIntent;

impl Channel {
    /// Gives `engine` (this channel's, or the one replacing it) an I/O channel on every working
    /// leg, and on the replacement being copied if there is one. A leg whose channel cannot be
    /// had fails the whole call when `strict`, else that leg is failed for the mirror (a
    /// reshape cannot be half undone; the failure is recorded like any other).
    pub(super) fn open_legs(&self, engine: &mut Engine<SpdkBackend, ChannelIntent>, strict: bool) -> Result<(), Fail> {
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

    /// Gives the engine's leg channels back and keeps its counters (they belong to the mirror).
    pub(super) fn retire(&self, e: &mut Engine<SpdkBackend, ChannelIntent>) {
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

    /// Brings the engine's view of the legs up to date with the mirror's (on every run: one
    /// load and compare unless a leg changed).
    #[inline]
    pub(super) fn sync_legs(&self, e: &mut Engine<SpdkBackend, ChannelIntent>) {
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

    pub(super) fn finish_releases(&self) {
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
