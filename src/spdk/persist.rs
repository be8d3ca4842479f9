//! A mirror's on-leg metadata: the superblock and the write-intent bitmap, written together at
//! block 0 of every working leg (layout: `docs/superblock.md`).
//!
//! One bitmap per mirror, shared by every core's engine. A write to a region that is already
//! dirty on disk takes no lock: it counts itself in its core's own per-region counter and reads
//! the region's "fast" bit (md's bitmap counters, made per core so cores never share a cache
//! line on the I/O path). Only a write to a region that is not durable yet takes the mutex; it
//! parks and asks the mirror's thread (the app thread that created it) to write the metadata;
//! all metadata writes happen there, one at a time, so they never race. When the write is done,
//! the parked writes' tokens are handed back to their cores, whose pollers resume them.
//!
//! Clearing a region races with writes that take the fast path; it is decided Dekker-style:
//! the clearer drops the fast bit and then sums the counters, a writer raises its counter and
//! then reads the fast bit (all sequentially consistent), so either the clearer sees the write
//! and backs off, or the writer sees the bit gone and takes the mutex.
//!
//! Every metadata write also reconciles the superblock's leg table with the legs' live state
//! (a failed or missing leg becomes `Failed`, a leg being rebuilt `Rebuilding`, a leg back in
//! sync `Active`) and bumps `events` when it changed, so assembly can tell stale legs.
//!
//! Every metadata write also carries the mirror's tunables (read policy, rebuild cap, pool
//! size, max parents) in their own record (`TunablesRecord`), with the generation of their last
//! change, so an assembled mirror starts with them. A change does not bump `events`.

use std::cell::UnsafeCell;
use std::os::raw::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use spdk_sys as sys;

use super::ffi::{errlog, guard};
use super::mirror::Mirror;
use crate::bitmap::{Bits, WriteIntentBitmap};
use crate::engine::{Gate, ParentId, WriteIntent};
use crate::superblock::{LegRole, MetaLayout, Superblock, Tunables, TunablesRecord, SUPERBLOCK_BYTES};

/// A region is cleared once no write has touched it for this long (md's daemon_sleep).
pub const IDLE_CLEAR_MS: u64 = 5000;
/// How often the mirror's thread looks for regions to clear.
const TICK_US: u64 = 1_000_000;
/// Parent ids take the low bits of a bitmap waiter token, the channel the rest.
const PARENT_BITS: u32 = 20;
const MAX_CHANNELS: usize = 1 << (32 - PARENT_BITS);

pub type MetaDone = Box<dyn FnOnce(Result<(), String>)>;

/// What the last metadata write of a mirror's life does.
struct Closing {
    /// Zero the superblock (the mirror was deleted) instead of writing a clean bitmap.
    wipe: bool,
    then: Box<dyn FnOnce()>,
}

#[derive(Default)]
struct Writer {
    busy: bool,
    again: bool,
    waiters: Vec<MetaDone>,
    closing: Option<Closing>,
    closed: bool,
}

/// What depends on the number of bitmap regions: replaced only when the mirror grows.
struct Regions {
    layout: MetaLayout,
    /// Regions writes may enter without the mutex (dirty on disk, wanted, not being cleared).
    fast: Vec<AtomicU64>,
    /// Regions awaiting resync (reads there are pinned to one copy).
    unsynced: Vec<AtomicU64>,
}

impl Regions {
    fn new(layout: MetaLayout) -> Regions {
        let words = (layout.regions as usize).div_ceil(64);
        Regions {
            layout,
            fast: (0..words).map(|_| AtomicU64::new(0)).collect(),
            unsynced: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

pub struct Persist {
    /// Read on every core's write path without a lock; replaced only by `resize`, whose
    /// contract keeps every reader away meanwhile.
    regions: UnsafeCell<Regions>,
    sb: Mutex<Superblock>,
    bitmap: Mutex<WriteIntentBitmap>,
    /// Waiter tokens whose intent is durable, for their channels to pick up.
    ready: Mutex<Vec<u32>>,
    pub ready_count: AtomicU32,
    /// Per channel number: its counters while it exists.
    channels: Mutex<Vec<Option<Arc<ChanCounts>>>>,
    /// When each region was last seen written (ms since `started`; the tick's own view).
    last_write: Mutex<Vec<u64>>,
    kick_queued: AtomicBool,
    /// Messages in flight to the mirror's thread: the mirror is freed only when none is.
    pub msgs: AtomicU32,
    writer: Mutex<Writer>,
    unsynced_count: AtomicU64,
    started: Instant,
    tick: AtomicPtr<sys::spdk_poller>,
    retry: AtomicPtr<sys::spdk_poller>,
    /// Generation of the tunables on the legs: bumped by each change (`record_tunables`).
    tunables_gen: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Persist {
    /// For a mirror of `data_blocks`. `dirty`: the bitmap read from the legs at assembly
    /// (`None` for a new mirror); `tunables_gen`: the generation of the tunables it starts with
    /// (restored, or 1 when new).
    pub fn new(
        layout: MetaLayout,
        data_blocks: u64,
        sb: Superblock,
        dirty: Option<Bits>,
        tunables_gen: u64,
    ) -> Persist {
        let regions = layout.regions as usize;
        // The real size, not whole regions: a resize treats what lies beyond it as new space.
        let bitmap = WriteIntentBitmap::new(data_blocks, layout.region_blocks, dirty, IDLE_CLEAR_MS);
        let p = Persist {
            regions: UnsafeCell::new(Regions::new(layout)),
            sb: Mutex::new(sb),
            bitmap: Mutex::new(bitmap),
            ready: Mutex::new(Vec::new()),
            ready_count: AtomicU32::new(0),
            channels: Mutex::new(Vec::new()),
            last_write: Mutex::new(vec![0; regions]),
            kick_queued: AtomicBool::new(false),
            msgs: AtomicU32::new(0),
            writer: Mutex::new(Writer::default()),
            unsynced_count: AtomicU64::new(0),
            started: Instant::now(),
            tick: AtomicPtr::new(ptr::null_mut()),
            retry: AtomicPtr::new(ptr::null_mut()),
            tunables_gen: AtomicU64::new(tunables_gen),
        };
        // Regions dirty on disk (at assembly) take writes without asking.
        p.refresh_fast(&p.bitmap());
        p
    }

    fn r(&self) -> &Regions {
        // SAFETY: `resize` is the only writer, and its contract keeps every reader away.
        unsafe { &*self.regions.get() }
    }

    pub fn layout(&self) -> MetaLayout {
        self.r().layout
    }

    /// The bitmap for a mirror grown to `data_blocks` (from `old_blocks`), in `layout`:
    /// dirty, missed and held bits carried over (merged when regions grow), the new space dirty
    /// and awaiting resync (`unsynced_ranges`).
    ///
    /// # Safety
    /// Only on the mirror's thread, with the mirror quiesced, no process running and no
    /// metadata write in flight; every channel must rejoin (`ChannelIntent::new`) before I/O
    /// resumes. Then nothing reads the region state while it is replaced.
    pub unsafe fn resize(&self, layout: MetaLayout, data_blocks: u64, old_blocks: u64) {
        let mut bm = self.bitmap();
        let old_rb = bm.region_blocks();
        let was_unsynced: Vec<bool> = (0..bm.regions()).map(|r| self.is_unsynced(r)).collect();
        *bm = bm.resized(data_blocks, layout.region_blocks);
        let fresh = Regions::new(layout);
        let rb = layout.region_blocks;
        let mut unsynced = Bits::new(layout.regions as usize);
        for r in 0..layout.regions as usize {
            let (from, to) = (r as u64 * rb, (r as u64 + 1) * rb);
            let lo = ((from / old_rb) as usize).min(was_unsynced.len());
            let hi = (to.div_ceil(old_rb) as usize).clamp(lo, was_unsynced.len());
            if to > old_blocks || was_unsynced[lo..hi].iter().any(|&u| u) {
                unsynced.set(r, true);
                fresh.unsynced[r / 64].fetch_or(1 << (r % 64), Ordering::AcqRel);
            }
        }
        // SAFETY: the caller's contract: no reader of the region state exists now.
        unsafe { *self.regions.get() = fresh };
        self.unsynced_count.store(unsynced.count() as u64, Ordering::Release);
        *lock(&self.last_write) = vec![self.now_ms(); layout.regions as usize];
        self.refresh_fast(&bm);
    }

    /// The mirror ranges of the regions awaiting resync, for a mirror of `data_blocks`.
    pub fn unsynced_ranges(&self, data_blocks: u64) -> Vec<(u64, u64)> {
        let layout = self.layout();
        let mut todo = Bits::new(layout.regions as usize);
        for r in (0..layout.regions as usize).filter(|&r| self.is_unsynced(r)) {
            todo.set(r, true);
        }
        crate::bitmap::resync_plan(&todo, layout.regions as usize, layout.region_blocks, data_blocks)
    }

    fn is_unsynced(&self, r: usize) -> bool {
        self.r().unsynced[r / 64].load(Ordering::Acquire) & (1 << (r % 64)) != 0
    }

    pub fn bitmap(&self) -> MutexGuard<'_, WriteIntentBitmap> {
        lock(&self.bitmap)
    }

    fn fast(&self, r: usize) -> bool {
        self.r().fast[r / 64].load(Ordering::SeqCst) & (1 << (r % 64)) != 0
    }

    fn set_fast(&self, r: usize, on: bool) {
        if on {
            self.r().fast[r / 64].fetch_or(1 << (r % 64), Ordering::SeqCst);
        } else {
            self.r().fast[r / 64].fetch_and(!(1 << (r % 64)), Ordering::SeqCst);
        }
    }

    /// After a flush: the fast bits follow what is durable now.
    fn refresh_fast(&self, bm: &WriteIntentBitmap) {
        for r in 0..bm.regions() {
            self.set_fast(r, bm.fast_ok(r));
        }
    }

    /// The bitmap regions `[lba, lba + blocks)` touches (runs twice per write).
    #[inline]
    fn regions_of(&self, lba: u64, blocks: u64) -> std::ops::RangeInclusive<usize> {
        let layout = &self.r().layout;
        crate::bitmap::region_span(lba, blocks, layout.region_blocks, layout.regions as usize)
    }

    /// The lazy clear (md's daemon): regions idle for `IDLE_CLEAR_MS` with no write in flight
    /// become clean in the next image. Returns whether a flush is wanted.
    fn tick(&self) -> bool {
        let now = self.now_ms();
        let chans: Vec<Arc<ChanCounts>> = lock(&self.channels).iter().flatten().cloned().collect();
        let mut last = lock(&self.last_write);
        let mut bm = self.bitmap();
        for c in &chans {
            for (w, t) in c.touched.iter().enumerate() {
                let mut bits = t.swap(0, Ordering::AcqRel);
                while bits != 0 {
                    let r = w * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    if r < last.len() {
                        last[r] = now;
                    }
                }
            }
        }
        for r in 0..bm.regions() {
            if !bm.clearable(r) || now.saturating_sub(last[r]) < IDLE_CLEAR_MS {
                continue;
            }
            self.set_fast(r, false);
            // (A channel still counting in the regions before a resize has none in flight.)
            let busy = chans
                .iter()
                .any(|c| c.counts.get(r).is_some_and(|n| n.load(Ordering::SeqCst) != 0));
            if busy {
                self.set_fast(r, bm.fast_ok(r));
                last[r] = now;
            } else {
                bm.clear(r);
            }
        }
        bm.needs_flush()
    }

    pub fn superblock(&self) -> MutexGuard<'_, Superblock> {
        lock(&self.sb)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Marks every dirty region as awaiting resync: kept dirty, reads pinned.
    pub fn hold_dirty_for_resync(&self) {
        let mut bm = self.bitmap();
        let dirty = bm.on_disk().clone();
        for r in 0..bm.regions() {
            if dirty.get(r) {
                bm.hold(r, true);
                self.r().unsynced[r / 64].fetch_or(1 << (r % 64), Ordering::AcqRel);
                self.unsynced_count.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Region `r` was resynced: reads may go anywhere again and it may clear.
    pub fn region_synced(&self, r: usize) {
        let bit = 1u64 << (r % 64);
        if self.r().unsynced[r / 64].fetch_and(!bit, Ordering::AcqRel) & bit != 0 {
            self.unsynced_count.fetch_sub(1, Ordering::AcqRel);
            self.bitmap().hold(r, false);
        }
    }

    pub fn resync_pending(&self) -> bool {
        self.unsynced_count.load(Ordering::Acquire) != 0
    }

    /// Whether reads of these mirror blocks must go to the resync source (see `read_pinned`).
    pub fn pinned(&self, lba: u64, blocks: u64) -> bool {
        if self.unsynced_count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.regions_of(lba, blocks).any(|r| self.is_unsynced(r))
    }

    /// The mirror ranges of regions some copy missed, leaving out regions in `done`.
    pub fn missed_ranges(&self, data_blocks: u64, done: Option<&Bits>) -> Vec<(u64, u64)> {
        let bm = self.bitmap();
        let mut todo = bm.missed().clone();
        if let Some(d) = done {
            for r in (0..bm.regions()).filter(|&r| d.get(r)) {
                todo.set(r, false);
            }
        }
        crate::bitmap::resync_plan(&todo, bm.regions(), bm.region_blocks(), data_blocks)
    }

    /// Hands out a channel number for waiter tokens, and the channel's counters.
    fn join(&self) -> (u32, Arc<ChanCounts>) {
        let regions = self.r().layout.regions as usize;
        let counts = Arc::new(ChanCounts {
            counts: (0..regions).map(|_| AtomicU32::new(0)).collect(),
            touched: (0..regions.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        });
        let mut ch = lock(&self.channels);
        let i = match ch.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                ch.push(None);
                ch.len() - 1
            }
        };
        ch[i] = Some(counts.clone());
        (i as u32, counts)
    }

    fn leave(&self, chan: u32) {
        if let Some(c) = lock(&self.channels).get_mut(chan as usize) {
            *c = None;
        }
    }

    /// Parents of channel `chan` whose intent became durable.
    pub fn take_ready(&self, chan: u32) -> Vec<ParentId> {
        let mut ready = lock(&self.ready);
        let mut mine = Vec::new();
        ready.retain(|&t| {
            if t >> PARENT_BITS == chan {
                mine.push(t & ((1 << PARENT_BITS) - 1));
                false
            } else {
                true
            }
        });
        self.ready_count.fetch_sub(mine.len() as u32, Ordering::AcqRel);
        mine
    }
}

/// One channel's writes per region: in flight, and touched since the last tick. Written only
/// by its channel; read by the tick.
pub struct ChanCounts {
    counts: Box<[AtomicU32]>,
    touched: Box<[AtomicU64]>,
}

/// One channel's view of the bitmap: the engine's `WriteIntent`.
pub struct ChannelIntent {
    mirror: *const Mirror,
    chan: u32,
    counts: Option<Arc<ChanCounts>>,
}

impl ChannelIntent {
    pub fn new(m: &Mirror) -> Result<ChannelIntent, String> {
        let (chan, counts) = match &m.persist {
            Some(p) => {
                let (c, counts) = p.join();
                (c, Some(counts))
            }
            None => (0, None),
        };
        if chan as usize >= MAX_CHANNELS {
            if let Some(p) = &m.persist {
                p.leave(chan);
            }
            return Err(format!("more than {MAX_CHANNELS} channels"));
        }
        Ok(ChannelIntent {
            mirror: m,
            chan,
            counts,
        })
    }

    fn persist(&self) -> Option<&Persist> {
        // SAFETY: a mirror outlives its channels' engines.
        unsafe { (*self.mirror).persist.as_deref() }
    }

    pub fn chan(&self) -> u32 {
        self.chan
    }
}

impl Drop for ChannelIntent {
    fn drop(&mut self) {
        if let Some(p) = self.persist() {
            p.leave(self.chan);
        }
    }
}

impl WriteIntent for ChannelIntent {
    fn start_write(&mut self, parent: ParentId, lba: u64, blocks: u64) -> Gate {
        let (Some(p), Some(c)) = (self.persist(), self.counts.as_deref()) else {
            return Gate::Ready;
        };
        let mut fast = true;
        for r in p.regions_of(lba, blocks) {
            // Counted first, then the bit read: see the module comment.
            c.counts[r].fetch_add(1, Ordering::SeqCst);
            let (w, bit) = (&c.touched[r / 64], 1u64 << (r % 64));
            if w.load(Ordering::Relaxed) & bit == 0 {
                w.fetch_or(bit, Ordering::Relaxed);
            }
            fast &= p.fast(r);
        }
        if fast {
            return Gate::Ready;
        }
        let gate = p.bitmap().mark_wanted(self.chan << PARENT_BITS | parent, lba, blocks);
        if gate == Gate::Pending {
            // SAFETY: as in `persist`.
            kick(unsafe { &*self.mirror });
        }
        gate
    }

    fn end_write(&mut self, lba: u64, blocks: u64, all_copies: bool) {
        let (Some(p), Some(c)) = (self.persist(), self.counts.as_deref()) else {
            return;
        };
        if !all_copies {
            // Before the count drops, so the region cannot be cleared in between.
            p.bitmap().mark_missed(lba, blocks);
        }
        for r in p.regions_of(lba, blocks) {
            // Only this channel's thread writes its counters, so no locked read-modify-write
            // is needed to drop one; Release keeps the write's end (and `mark_missed`) before it.
            // (Raising one is a SeqCst RMW: the Dekker half that must precede the bit read.)
            let n = &c.counts[r];
            n.store(n.load(Ordering::Relaxed) - 1, Ordering::Release);
        }
    }
}

/// Asks the mirror's thread for a metadata write, from any thread.
pub fn kick(m: &Mirror) {
    let Some(p) = &m.persist else { return };
    if p.kick_queued.swap(true, Ordering::AcqRel) {
        return;
    }
    p.msgs.fetch_add(1, Ordering::AcqRel);
    extern "C" fn on_thread(arg: *mut c_void) {
        guard("mirror metadata kick", (), || {
            // SAFETY: the mirror is freed only once no message is in flight (`msgs`).
            let m = unsafe { &*(arg as *const Mirror) };
            if let Some(p) = &m.persist {
                p.kick_queued.store(false, Ordering::Release);
                write(m, None);
                p.msgs.fetch_sub(1, Ordering::AcqRel);
            }
        })
    }
    // SAFETY: the mirror's thread lives as long as the app; the mirror outlives the message.
    let rc = unsafe { sys::spdk_thread_send_msg(m.thread, Some(on_thread), m as *const Mirror as *mut c_void) };
    if rc != 0 {
        p.kick_queued.store(false, Ordering::Release);
        p.msgs.fetch_sub(1, Ordering::AcqRel);
        errlog!(
            "mirror {}: cannot reach the mirror's thread for a metadata write",
            m.name()
        );
    }
}

/// No metadata write is in flight or waiting to retry (mirror thread).
pub fn writer_idle(m: &Mirror) -> bool {
    let Some(p) = &m.persist else { return true };
    !lock(&p.writer).busy && p.retry.load(Ordering::Acquire).is_null()
}

/// Writes the metadata to every working leg (on the mirror's thread); `done` runs once a write
/// that started after this call is on the legs.
pub fn write(m: &'static Mirror, done: Option<MetaDone>) {
    let Some(p) = &m.persist else {
        if let Some(d) = done {
            d(Ok(()));
        }
        return;
    };
    let mut w = lock(&p.writer);
    if w.closed {
        drop(w);
        if let Some(d) = done {
            d(Err("the mirror is closing".into()));
        }
        return;
    }
    if let Some(d) = done {
        w.waiters.push(d);
    }
    if w.busy {
        w.again = true;
        return;
    }
    w.busy = true;
    drop(w);
    start(m);
}

/// A tunable of `m` changed (read policy, rebuild cap): writes it to the legs under a new
/// generation (on the mirror's thread, where RPCs run). `done` runs once a write that read the
/// new value is on the legs; at once for a mirror without a superblock, which keeps none.
pub fn record_tunables(m: &'static Mirror, done: MetaDone) {
    if let Some(p) = &m.persist {
        p.tunables_gen.fetch_add(1, Ordering::AcqRel);
    }
    write(m, Some(done));
}

/// The tunables `m` runs with now, as a record of their current generation.
fn tunables_record(m: &Mirror, p: &Persist) -> TunablesRecord {
    TunablesRecord {
        generation: p.tunables_gen.load(Ordering::Acquire),
        tunables: Tunables {
            read_policy: m.read_policy(),
            rebuild_max_mb_per_s: m.rebuild_max_mb.load(Ordering::Acquire),
            pool_size: m.opts.pool_size,
            max_parents: m.opts.max_parents,
        },
    }
}

/// The last write of a mirror's life (on its thread): a clean bitmap, or a zeroed superblock
/// when the mirror was deleted. `then` runs after it, whatever happened.
pub fn close(m: &'static Mirror, wipe: bool, then: Box<dyn FnOnce()>) {
    let Some(p) = &m.persist else { return then() };
    stop_ticking(m);
    let mut w = lock(&p.writer);
    if w.closed {
        drop(w);
        return then();
    }
    w.closing = Some(Closing { wipe, then });
    if w.busy {
        return;
    }
    w.busy = true;
    drop(w);
    start(m);
}

/// Starts the lazy clearing of idle regions (on the mirror's thread).
pub fn start_ticking(m: &'static Mirror) {
    let Some(p) = &m.persist else { return };
    extern "C" fn tick(arg: *mut c_void) -> i32 {
        guard("mirror bitmap tick", sys::SPDK_POLLER_IDLE as i32, || {
            // SAFETY: the poller is unregistered (`stop_ticking`) before the mirror goes.
            let m = unsafe { &*(arg as *const Mirror) };
            let Some(p) = &m.persist else {
                return sys::SPDK_POLLER_IDLE as i32;
            };
            if p.tick() {
                write(m, None);
                sys::SPDK_POLLER_BUSY as i32
            } else {
                sys::SPDK_POLLER_IDLE as i32
            }
        })
    }
    // SAFETY: the argument is the mirror, which unregisters the poller before it is freed.
    let poller = unsafe { sys::spdk_poller_register(Some(tick), m as *const Mirror as *mut c_void, TICK_US) };
    p.tick.store(poller, Ordering::Release);
}

fn stop_ticking(m: &Mirror) {
    if let Some(p) = &m.persist {
        let mut poller = p.tick.swap(ptr::null_mut(), Ordering::AcqRel);
        if !poller.is_null() {
            // SAFETY: registered on this (the mirror's) thread in `start_ticking`.
            unsafe { sys::spdk_poller_unregister(&mut poller) };
        }
    }
}

/// Brings the leg table in line with the legs; bumps `events` if anything changed.
fn reconcile(m: &Mirror, sb: &mut Superblock) {
    let mut changed = false;
    for (i, leg) in m.legs().iter().enumerate() {
        let e = &mut sb.legs[i];
        let role = if !leg.present() || leg.failed.load(Ordering::Acquire) {
            match e.role {
                LegRole::Active | LegRole::Rebuilding => LegRole::Failed,
                other => other,
            }
        } else if leg.write_only.load(Ordering::Acquire) {
            LegRole::Rebuilding
        } else {
            LegRole::Active
        };
        if role != e.role {
            e.failed_at_events = if role == LegRole::Failed { sb.events } else { 0 };
            e.role = role;
            changed = true;
        }
    }
    if changed {
        sb.events += 1;
    }
}

/// One metadata write in flight.
struct MetaOp {
    m: &'static Mirror,
    /// The leg failures this write records.
    fail_gen: u64,
    remaining: u32,
    targets: u32,
    failed: u32,
    took_flush: bool,
    waiters: Vec<MetaDone>,
    closing: Option<Closing>,
}

/// One leg's part of it.
struct MetaIo {
    op: *mut MetaOp,
    leg: u32,
    ch: *mut sys::spdk_io_channel,
    buf: *mut c_void,
    blocks: u64,
    flushing: bool,
    wait: sys::spdk_bdev_io_wait_entry,
}

fn start(m: &'static Mirror) {
    let p = m.persist.as_ref().expect("only mirrors with metadata write it");
    // A channel may be unobtainable for a moment (the shared spdk_bdev_io pool is empty): that
    // is no fault of the leg, so try again shortly rather than fail it.
    let short = m
        .legs()
        .iter()
        .any(|l| l.present() && !l.failed.load(Ordering::Acquire) && l.app_channel().is_null());
    if short {
        extern "C" fn again(arg: *mut c_void) -> i32 {
            guard("mirror metadata retry", 0, || {
                // SAFETY: the mirror waits for its writer (busy) before it goes.
                let m = unsafe { &*(arg as *const Mirror) };
                if let Some(p) = &m.persist {
                    let mut poller = p.retry.swap(ptr::null_mut(), Ordering::AcqRel);
                    // SAFETY: our one-shot poller, on its thread.
                    unsafe { sys::spdk_poller_unregister(&mut poller) };
                }
                start(m);
                sys::SPDK_POLLER_BUSY as i32
            })
        }
        // SAFETY: the argument is the mirror, which outlives its busy writer.
        let poller = unsafe { sys::spdk_poller_register(Some(again), m as *const Mirror as *mut c_void, 1000) };
        p.retry.store(poller, Ordering::Release);
        return;
    }
    let (waiters, closing) = {
        let mut w = lock(&p.writer);
        w.again = false;
        let closing = w.closing.take();
        if closing.is_some() {
            w.closed = true;
        }
        (std::mem::take(&mut w.waiters), closing)
    };
    let wipe = closing.as_ref().is_some_and(|c| c.wipe);
    let (image, took_flush) = {
        let mut bm = p.bitmap();
        if closing.is_some() {
            (bm.clean_image(), false)
        } else {
            match bm.take_flush() {
                Some(img) => (img, true),
                None => (bm.on_disk().clone(), false),
            }
        }
    };
    // Read before the leg table is reconciled: every failure counted here had its leg marked
    // failed already (see `Mirror::fail_leg`), so this write records it.
    let fail_gen = m.fail_seen.load(Ordering::SeqCst);
    let sb = {
        let mut sb = p.superblock();
        reconcile(m, &mut sb);
        sb.clone()
    };
    // Read after the writer took the waiters: a change whose caller waits is in this write.
    let tunables = tunables_record(m, p);
    let op = Box::into_raw(Box::new(MetaOp {
        m,
        fail_gen,
        remaining: 1,
        targets: 0,
        failed: 0,
        took_flush,
        waiters,
        closing,
    }));
    let bs = m.geo().block_size() as usize;
    let layout = p.layout();
    let blocks = layout.meta_blocks();
    let bitmap_at = layout.bitmap_offset_blocks as usize * bs;
    let bitmap_room = layout.bitmap_blocks as usize * bs;
    let image = image.to_bytes();
    for leg in m
        .legs()
        .iter()
        .filter(|l| l.present() && !l.failed.load(Ordering::Acquire))
    {
        // SAFETY: a zeroed DMA buffer of `blocks` blocks, freed in `io_finished`.
        let buf = unsafe { sys::spdk_dma_zmalloc(blocks as usize * bs, 0x1000, ptr::null_mut()) };
        let ch = if buf.is_null() {
            ptr::null_mut()
        } else {
            leg.app_channel()
        };
        // SAFETY: `op` is live until its last leg finishes.
        let o = unsafe { &mut *op };
        o.targets |= 1 << leg.index;
        if ch.is_null() {
            errlog!("mirror {}: no memory to write leg {}'s metadata", m.name(), leg.index);
            o.failed |= 1 << leg.index;
            // SAFETY: null or ours.
            unsafe { sys::spdk_dma_free(buf) };
            continue;
        }
        if !wipe {
            let mut s = sb.clone();
            s.this_slot = leg.index;
            let bytes = s.encode_with(&tunables).unwrap_or_else(|_| vec![0; SUPERBLOCK_BYTES]);
            let n = image.len().min(bitmap_room);
            // SAFETY: the buffer holds `blocks` blocks: the superblock, then the bitmap area.
            unsafe {
                ptr::copy_nonoverlapping(bytes.as_ptr(), buf as *mut u8, SUPERBLOCK_BYTES);
                ptr::copy_nonoverlapping(image.as_ptr(), (buf as *mut u8).add(bitmap_at), n);
            }
        }
        o.remaining += 1;
        let io = Box::into_raw(Box::new(MetaIo {
            op,
            leg: leg.index,
            ch,
            buf,
            blocks,
            flushing: false,
            wait: sys::spdk_bdev_io_wait_entry::default(),
        }));
        submit(io);
    }
    op_put(op);
}

fn submit(io: *mut MetaIo) {
    // SAFETY: ours until `io_finished`.
    let mi = unsafe { &mut *io };
    // SAFETY: the op outlives its legs' I/O.
    let m = unsafe { (*mi.op).m };
    let leg = m.slot(mi.leg);
    if !leg.present() {
        return io_finished(io, false);
    }
    let arg = io as *mut c_void;
    // SAFETY: open desc, this thread's channel, a buffer of `blocks` blocks.
    let rc = unsafe {
        if mi.flushing {
            sys::spdk_bdev_flush_blocks(leg.desc(), mi.ch, 0, mi.blocks, Some(io_done), arg)
        } else {
            sys::spdk_bdev_write_blocks(leg.desc(), mi.ch, mi.buf, 0, mi.blocks, Some(io_done), arg)
        }
    };
    extern "C" fn retry(arg: *mut c_void) {
        guard("mirror metadata retry", (), || submit(arg as *mut MetaIo))
    }
    // SAFETY: the wait entry lives in the MetaIo, which waits for it.
    if !unsafe { leg.submitted(rc, mi.ch, &mut mi.wait, retry, arg) } {
        io_finished(io, false);
    }
}

extern "C" fn io_done(bdev_io: *mut sys::spdk_bdev_io, success: bool, arg: *mut c_void) {
    guard("mirror metadata write", (), || {
        // SAFETY: a completed I/O of ours.
        unsafe { sys::spdk_bdev_free_io(bdev_io) };
        let io = arg as *mut MetaIo;
        // SAFETY: ours until `io_finished`.
        let mi = unsafe { &mut *io };
        // SAFETY: as in `submit`.
        let m = unsafe { (*mi.op).m };
        let leg = m.slot(mi.leg);
        leg.app_io_done();
        // A volatile write cache must not hold the bitmap: flush it where the leg has one.
        // SAFETY: the leg's bdev is open while it is present.
        if success && !mi.flushing && leg.present() && unsafe { sys::spdk_bdev_has_write_cache(leg.bdev()) } {
            mi.flushing = true;
            return submit(io);
        }
        io_finished(io, success);
    })
}

fn io_finished(io: *mut MetaIo, success: bool) {
    // SAFETY: the last use of this leg's part.
    let mi = unsafe { Box::from_raw(io) };
    // SAFETY: allocated in `start`.
    unsafe { sys::spdk_dma_free(mi.buf) };
    if !success {
        // SAFETY: the op is live until `op_put` drops its last reference.
        let o = unsafe { &mut *mi.op };
        errlog!("mirror {}: metadata write to leg {} failed", o.m.name(), mi.leg);
        o.failed |= 1 << mi.leg;
    }
    op_put(mi.op);
}

fn op_put(op: *mut MetaOp) {
    // SAFETY: live until the last reference (this one, when `remaining` reaches 0).
    let o = unsafe { &mut *op };
    o.remaining -= 1;
    if o.remaining > 0 {
        return;
    }
    // SAFETY: last reference.
    let o = unsafe { Box::from_raw(op) };
    let m = o.m;
    let p = m.persist.as_ref().expect("metadata op of a mirror with metadata");
    if o.took_flush {
        let tokens = {
            let mut bm = p.bitmap();
            let t = bm.flush_done();
            p.refresh_fast(&bm);
            t
        };
        if !tokens.is_empty() {
            let n = tokens.len() as u32;
            lock(&p.ready).extend(tokens);
            p.ready_count.fetch_add(n, Ordering::AcqRel);
        }
    }
    let result = if o.targets == 0 {
        Err("no working leg to write the metadata to".to_string())
    } else if o.failed == o.targets {
        Err("the metadata write failed on every leg".to_string())
    } else {
        Ok(())
    };
    for leg in 0..32 {
        if o.failed & (1 << leg) != 0 && o.closing.is_none() {
            m.fail_leg(leg, "metadata write failed");
        }
    }
    // Held acknowledgements may go (if every leg failed there is nothing left to protect).
    m.fail_gen_durable.fetch_max(o.fail_gen, Ordering::SeqCst);
    for w in o.waiters {
        w(result.clone());
    }
    if let Some(c) = o.closing {
        (c.then)();
        return;
    }
    let mut w = lock(&p.writer);
    if w.again || !w.waiters.is_empty() || w.closing.is_some() {
        drop(w);
        start(m);
    } else {
        w.busy = false;
    }
}
