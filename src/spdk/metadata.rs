//! A mirror's metadata in memory: the superblock, the write-intent bitmap and what the I/O path
//! reads of it without a lock. Data and accessors only; the metadata writer (`persist`) and the
//! engine's per-channel view (`intent`) work on it. On the legs: `docs/superblock.md`.
//!
//! One bitmap per mirror, shared by every core's engine. A write to a region that is already
//! dirty on disk takes no lock: it counts itself in its core's own per-region counter and reads
//! the region's "fast" bit (md's bitmap counters, made per core so cores never share a cache
//! line on the I/O path). Only a write to a region that is not durable yet takes the mutex; it
//! parks and asks the mirror's thread (the app thread that created it) to write the metadata.
//!
//! Clearing a region races with writes that take the fast path; it is decided Dekker-style:
//! the clearer drops the fast bit and then sums the counters, a writer raises its counter and
//! then reads the fast bit (all sequentially consistent), so either the clearer sees the write
//! and backs off, or the writer sees the bit gone and takes the mutex. (A raise above zero is a
//! plain store: the first raise already decided the race for every write that follows it
//! while the count stays up; see `intent::ChannelIntent::enter`.)

use std::cell::UnsafeCell;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use spdk_sys as sys;

use super::error::Fail;
use crate::bitmap::{Bits, RegionMap, WriteIntentBitmap};
use crate::engine::ParentId;
use crate::superblock::{LegRole, MetaLayout, Superblock};

/// A region is cleared once no write has touched it for this long (md's daemon_sleep).
pub const IDLE_CLEAR_MS: u64 = 5000;
/// Parent ids take the low bits of a bitmap waiter token, the channel the rest.
pub(super) const PARENT_BITS: u32 = 20;
pub(super) const MAX_CHANNELS: usize = 1 << (32 - PARENT_BITS);

pub type MetaDone = Box<dyn FnOnce(Result<(), Fail>)>;

/// What the last metadata write of a mirror's life does.
pub(super) struct Closing {
    /// Zero the superblock (the mirror was deleted) instead of writing a clean bitmap.
    pub(super) wipe: bool,
    pub(super) then: Box<dyn FnOnce()>,
}

#[derive(Default)]
pub(super) struct Writer {
    pub(super) busy: bool,
    pub(super) again: bool,
    pub(super) waiters: Vec<MetaDone>,
    pub(super) closing: Option<Closing>,
    pub(super) closed: bool,
}

/// What depends on the number of bitmap regions: replaced only when the mirror grows.
pub(super) struct Regions {
    pub(super) layout: MetaLayout,
    /// The layout's regions, for finding a write's.
    pub(super) map: RegionMap,
    /// Regions writes may enter without the mutex (dirty on disk, wanted, not being cleared).
    pub(super) fast: Vec<AtomicU64>,
    /// Regions awaiting resync (reads there are pinned to one copy).
    pub(super) unsynced: Vec<AtomicU64>,
}

impl Regions {
    pub(super) fn new(layout: MetaLayout) -> Regions {
        let words = (layout.regions as usize).div_ceil(64);
        Regions {
            layout,
            map: RegionMap::new(layout.region_blocks, layout.regions as usize),
            fast: (0..words).map(|_| AtomicU64::new(0)).collect(),
            unsynced: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

pub struct Persist {
    /// Read on every core's write path without a lock; replaced only by `resize`, whose
    /// contract keeps every reader away meanwhile.
    pub(super) regions: UnsafeCell<Regions>,
    pub(super) sb: Mutex<Superblock>,
    pub(super) bitmap: Mutex<WriteIntentBitmap>,
    /// Waiter tokens whose intent is durable, for their channels to pick up.
    pub(super) ready: Mutex<Vec<u32>>,
    pub ready_count: AtomicU32,
    /// Per channel number: its counters while it exists.
    pub(super) channels: Mutex<Vec<Option<Arc<ChanCounts>>>>,
    /// When each region was last seen written (ms since `started`; the tick's own view).
    pub(super) last_write: Mutex<Vec<u64>>,
    pub(super) kick_queued: AtomicBool,
    /// Messages in flight to the mirror's thread: the mirror is freed only when none is.
    pub msgs: AtomicU32,
    pub(super) writer: Mutex<Writer>,
    pub(super) unsynced_count: AtomicU64,
    pub(super) started: Instant,
    pub(super) tick: AtomicPtr<sys::spdk_poller>,
    pub(super) retry: AtomicPtr<sys::spdk_poller>,
    /// Generation of the tunables on the legs: bumped by each change (`record_tunables`).
    pub(super) tunables_gen: AtomicU64,
    /// Assembled from superblocks: the first metadata write moves `events` on by
    /// `ASSEMBLY_EVENTS` (see there).
    pub(super) assembly_bump: AtomicBool,
}

/// How far an assembly moves `events` on, once the legs it found absent are recorded failed
/// at the events they were last written at. Two, past the one-behind a fresh leg may be: a
/// copy of a leg from before this start (a disk image put back, a snapshot restored while
/// the mirror was stopped) is then stale and rebuilt, where it used to be taken as fresh and
/// read (`events` otherwise moves only with the legs, not with writes).
pub(super) const ASSEMBLY_EVENTS: u64 = 2;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
        let assembled = dirty.is_some();
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
            assembly_bump: AtomicBool::new(assembled),
            tunables_gen: AtomicU64::new(tunables_gen),
        };
        // Regions dirty on disk (at assembly) take writes without asking.
        p.refresh_fast(&p.bitmap());
        p
    }

    pub(super) fn r(&self) -> &Regions {
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

    pub(super) fn is_unsynced(&self, r: usize) -> bool {
        self.r().unsynced[r / 64].load(Ordering::Acquire) & (1 << (r % 64)) != 0
    }

    pub fn bitmap(&self) -> MutexGuard<'_, WriteIntentBitmap> {
        lock(&self.bitmap)
    }

    pub(super) fn fast(&self, r: usize) -> bool {
        self.r().fast[r / 64].load(Ordering::SeqCst) & (1 << (r % 64)) != 0
    }

    pub(super) fn set_fast(&self, r: usize, on: bool) {
        if on {
            self.r().fast[r / 64].fetch_or(1 << (r % 64), Ordering::SeqCst);
        } else {
            self.r().fast[r / 64].fetch_and(!(1 << (r % 64)), Ordering::SeqCst);
        }
    }

    /// After a flush: the fast bits follow what is durable now.
    pub(super) fn refresh_fast(&self, bm: &WriteIntentBitmap) {
        for r in 0..bm.regions() {
            self.set_fast(r, bm.fast_ok(r));
        }
    }

    /// The bitmap regions `[lba, lba + blocks)` touches.
    #[inline]
    pub(super) fn regions_of(&self, lba: u64, blocks: u64) -> std::ops::RangeInclusive<usize> {
        let (first, last) = self.region_bounds(lba, blocks);
        first..=last
    }

    /// `regions_of` as its first and last region (on every write's start and end).
    #[inline(always)]
    pub(super) fn region_bounds(&self, lba: u64, blocks: u64) -> (usize, usize) {
        self.r().map.bounds(lba, blocks)
    }

    /// A write ended without reaching every copy: its regions stay dirty until recovery.
    #[cold]
    #[inline(never)]
    pub(super) fn mark_missed(&self, lba: u64, blocks: u64) {
        self.bitmap().mark_missed(lba, blocks);
    }

    /// The lazy clear (md's daemon): regions idle for `IDLE_CLEAR_MS` with no write in flight
    /// become clean in the next image. Returns whether a flush is wanted.
    pub(super) fn tick(&self) -> bool {
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

    /// Records slot `slot` as removed on request (`bdev_mirror_remove_base_bdev`) rather than
    /// failed: a leg an operator took out does not rejoin by itself when it is found again
    /// (it may be in other use by then); an add over RPC still takes it back, from the bitmap
    /// if it can. Written with the removal's own metadata write.
    pub fn mark_removed(&self, slot: usize) {
        let mut sb = self.superblock();
        let events = sb.events;
        let Some(e) = sb.legs.get_mut(slot) else { return };
        match e.role {
            LegRole::Removed => return,
            // Dropped now: what it was last written at (a failed leg keeps its own).
            LegRole::Active | LegRole::Rebuilding => e.failed_at_events = events,
            LegRole::Failed => {}
        }
        e.role = LegRole::Removed;
        sb.events += 1;
    }

    pub fn superblock(&self) -> MutexGuard<'_, Superblock> {
        lock(&self.sb)
    }

    pub(super) fn now_ms(&self) -> u64 {
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

    /// Every region awaiting resync is released at once (one copy in sync: none to differ).
    pub fn release_unsynced(&self) {
        let regions = self.bitmap().regions();
        for r in (0..regions).filter(|&r| self.is_unsynced(r)) {
            self.region_synced(r);
        }
    }

    pub fn resync_pending(&self) -> bool {
        self.unsynced_count.load(Ordering::Acquire) != 0
    }

    /// Whether reads of these mirror blocks must go to the resync source (see `read_pinned`).
    #[inline(always)]
    pub fn pinned(&self, lba: u64, blocks: u64) -> bool {
        self.unsynced_count.load(Ordering::Relaxed) != 0 && self.pinned_regions(lba, blocks)
    }

    #[inline(never)]
    fn pinned_regions(&self, lba: u64, blocks: u64) -> bool {
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
    pub(super) fn join(&self) -> (u32, Arc<ChanCounts>) {
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

    pub(super) fn leave(&self, chan: u32) {
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
    pub(super) counts: Box<[AtomicU32]>,
    pub(super) touched: Box<[AtomicU64]>,
}
