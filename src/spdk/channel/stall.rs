//! The stall watch: children out, none coming back, parents waiting.
//!
//! The reserve (`rescue`) serves a channel with nothing in flight, whose completions therefore
//! cannot free an `spdk_bdev_io`. A leg that is another module's layer (delay, passthru, lvol,
//! crypto, ...) takes an `spdk_bdev_io` of its own for each child, and waits for one in SPDK's
//! line on this thread when the pool is dry: SPDK wakes that line only when an `spdk_bdev_io`
//! is freed on the same thread, whatever the pool holds. With our children out and held there,
//! either our own wait (queued at the head of the line, `dep_unblock`) took each one freed here
//! before the layer below could, or every admitted parent had its children so held, none
//! parked, and nothing was freed on this thread any more: children out, none ever back (gdb on
//! the stuck process: 84 free in a pool of 192). bdevperf verify over two `bdev_delay` legs,
//! cache 16, stalled for good at every pool up to 160 on one core (QD128) and up to 224 on two
//! (QD64 each), where one delay bdev runs from 96.
//!
//! So when parents wait (for an `spdk_bdev_io` or for admission) and no child of this channel
//! came back but through the reserve for `STALL_US`, the channel counts as stalled: its
//! children go through the reserve one at a time as if none were out, it queues no wait in
//! SPDK's line (its poller retries instead), so what is freed here goes to the layer below, and
//! it lets one parent more in at a time, whose host's `spdk_bdev_io`, freed here when it
//! completes, wakes that line. The first child back the ordinary way ends it. It runs so at a
//! crawl (one child at a time, 2-9 K IOPS), but runs.

use std::cell::Cell;

use spdk_sys as sys;

use super::Channel;
use crate::spdk::ffi::io_cache_per_thread;

/// How long children may all stay out, with parents waiting for an `spdk_bdev_io`, before the
/// channel counts as stalled. Far above any one child's time on a device that is not stuck (a
/// stall found late costs only this once); a false alarm costs one child sent through the
/// reserve and the head of SPDK's line for a poller period.
const STALL_US: u64 = 2_000;

/// `spdk_bdev_io`s the reserve thread needs for a child to pass a layer below: the child's and
/// the layer's own. With SPDK's per-thread cache smaller than that (`bdev_io_cache_size` 1),
/// a child sent there waits in that layer for one freed on the reserve thread, which nothing
/// there will ever free; the watch stays off (one core over two delay legs, cache 1, stalled at
/// pool 160 with it on, and runs there without it).
const RESERVE_NEEDED: u32 = 2;

/// The watch's state, on the channel's thread.
#[derive(Default)]
pub(super) struct StallWatch {
    /// Children back the ordinary way when last looked at.
    back: Cell<u64>,
    /// When `back` last moved (or nothing waited), in ticks.
    since: Cell<u64>,
    /// The engine's backend counts as stalled (`SpdkBackend::stalled`).
    stalled: Cell<bool>,
}

impl StallWatch {
    /// Whether the channel counts as stalled: its `io_wait` callback then leaves the freed
    /// `spdk_bdev_io` to whoever waits behind it.
    #[inline(always)]
    pub(super) fn stalled(&self) -> bool {
        self.stalled.get()
    }

    /// For a fresh engine (its backend starts not stalled).
    pub(super) fn reset(&self) {
        self.stalled.set(false);
    }
}

impl Channel {
    /// One look of the watch, from the poller with the engine idle (not busy). True when it
    /// let one more parent in (the caller then runs the engine's wake-ups).
    pub(super) fn watch_stall(&self) -> bool {
        // SAFETY: not busy (the poller checked): no other reference to the engine is live.
        let e = unsafe { &mut *self.engine.get() };
        let w = &self.stall;
        let back = e.stats().children_completed.wrapping_sub(e.backend().rescued);
        // SAFETY: plain reads of SPDK's tick counter.
        let now = unsafe { sys::spdk_get_ticks() };
        let waiting = !e.nobody_waits_for_io() || e.queued_parents() != 0;
        if !waiting || back != w.back.get() {
            w.back.set(back);
            w.since.set(now);
            if w.stalled.replace(false) {
                e.backend_mut().stalled = false;
                e.set_admission(self.mirror().admitted_parents());
            }
            return false;
        }
        if !w.stalled.get() {
            // SAFETY: as above.
            let limit = unsafe { sys::spdk_get_ticks_hz() } / 1_000_000 * STALL_US;
            // Children out the ordinary way (none through the reserve): a child through the
            // reserve comes back there whatever holds this thread's line, and counting it
            // took plain legs on two cores under a starved pool, where the reserve carries
            // the channel a while, for stalled (and slowed them by half).
            if now.wrapping_sub(w.since.get()) < limit
                || e.backend().rescue_busy
                || !e.backend().children_in_flight()
                || io_cache_per_thread() < RESERVE_NEEDED
            {
                return false;
            }
            w.stalled.set(true);
            e.backend_mut().stalled = true;
        }
        // Stalled, and nothing goes through the reserve or waits to: one parent more than
        // are admitted now. Its children go through the reserve, and its host's
        // `spdk_bdev_io`, freed here when it completes, wakes SPDK's line on this thread (the
        // admitted parents may all have their children stuck below, none parked). Counted
        // from those admitted, not from admission: a parent let in so may have had a child
        // out the ordinary way before the stall ended and began again.
        if e.backend().rescue_busy || e.has_parked() || e.queued_parents() == 0 {
            return false;
        }
        let active = e.active_parents() as u32;
        if e.admission() > active {
            return false;
        }
        e.set_admission(active + 1);
        true
    }
}
