//! The write-intent bitmap (md's bitmap, one bit per region): a region is marked dirty, and
//! that mark made durable on the legs, before the first child write touching it; writes to an
//! already-dirty region pay nothing; a region is cleared lazily, once no write has touched it for
//! a while (md's daemon_sleep) and every copy got every write. After a crash only dirty regions
//! can differ between legs, so only they need resync; while a leg is missing, the regions
//! written meanwhile stay dirty and are what a returning leg must copy (fast re-add).
//!
//! Pure state machine: the owner performs the bitmap writes it asks for (`take_flush`) and
//! reports them done (`flush_done`), which releases the parents that waited.

use std::collections::VecDeque;

use crate::engine::{Gate, ParentId, WriteIntent};

/// One bit per region, in a `u64` vector: the on-disk image is these words, little-endian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bits(Vec<u64>);

impl Bits {
    pub fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    pub fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    pub fn set(&mut self, i: usize, v: bool) {
        if v {
            self.0[i / 64] |= 1 << (i % 64)
        } else {
            self.0[i / 64] &= !(1 << (i % 64))
        }
    }
    pub fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
    /// The on-disk image.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
    pub fn from_bytes(b: &[u8], n: usize) -> Self {
        let mut bits = Bits::new(n);
        for (i, w) in bits.0.iter_mut().enumerate() {
            let mut word = [0u8; 8];
            let src = b.get(i * 8..(i * 8 + 8).min(b.len())).unwrap_or(&[]);
            word[..src.len()].copy_from_slice(src);
            *w = u64::from_le_bytes(word);
        }
        bits
    }
}

#[derive(Debug, Clone)]
pub struct WriteIntentBitmap {
    /// Mirror blocks covered (what `new` or `resized` was given).
    data_blocks: u64,
    region_blocks: u64,
    regions: usize,
    /// Writes in flight per region.
    inflight: Vec<u32>,
    /// What the legs will say once the pending flush lands.
    wanted: Bits,
    /// What the legs say now (durable).
    on_disk: Bits,
    /// The image being written, while a flush is in flight.
    flushing: Option<Bits>,
    /// Regions some write did not reach on every copy: never cleared lazily.
    missed: Bits,
    /// Regions that must stay dirty whatever happens (awaiting resync).
    hold: Bits,
    last_write: Vec<u64>,
    /// Parents waiting for the next flush, and for the one in flight.
    waiting: VecDeque<ParentId>,
    in_flight_waiters: Vec<ParentId>,
    /// Set by `resized`: the legs hold an image of the old shape (other regions, another
    /// region size), so no region counts as durable and a flush is due until an image taken
    /// after the resize has landed.
    reshaped: bool,
    now: u64,
    /// Idle time after which a clean-able region is cleared (md's daemon_sleep).
    pub idle_clear: u64,
    pub stats: BitmapStats,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BitmapStats {
    pub flushes: u64,
    /// Writes that found every region they touch already durable-dirty.
    pub free_rides: u64,
    pub waits: u64,
    pub cleared: u64,
}

impl WriteIntentBitmap {
    /// A bitmap over `data_blocks` mirror blocks, `region_blocks` per bit, starting from the
    /// on-disk image `on_disk` (all clean for a new mirror). Give the mirror's true size:
    /// [`WriteIntentBitmap::resized`] takes the blocks from there on as new space.
    pub fn new(data_blocks: u64, region_blocks: u64, on_disk: Option<Bits>, idle_clear: u64) -> Self {
        let region_blocks = region_blocks.max(1);
        let regions = data_blocks.div_ceil(region_blocks) as usize;
        let on_disk = on_disk.unwrap_or_else(|| Bits::new(regions));
        WriteIntentBitmap {
            data_blocks,
            region_blocks,
            regions,
            inflight: vec![0; regions],
            wanted: on_disk.clone(),
            missed: Bits::new(regions),
            hold: Bits::new(regions),
            on_disk,
            flushing: None,
            last_write: vec![0; regions],
            waiting: VecDeque::new(),
            in_flight_waiters: Vec::new(),
            reshaped: false,
            now: 0,
            idle_clear,
            stats: BitmapStats::default(),
        }
    }

    /// The bitmap of the mirror grown to `data_blocks` blocks, `region_blocks` per bit (the
    /// current region size or a power-of-two multiple of it, as [`MetaLayout::resized`] picks).
    ///
    /// Only for a quiesced mirror: no write in flight (counted here), no flush in flight, no
    /// parent waiting (checked in debug builds); the caller also holds back writes it counts
    /// itself.
    ///
    /// Each new region is dirty (on disk and wanted), missed or held when any old region it
    /// overlaps was, and keeps the latest write time among them. Every region covering blocks
    /// at or beyond the old size (new space, never synced between the legs) is wanted dirty
    /// and held: the owner must resync it and then release it with `hold(r, false)`, and a
    /// crash before that must find it dirty. Until an image taken after this call has landed
    /// (`take_flush` then `flush_done`), no region counts as durable (`fast_ok` is false:
    /// the legs still hold the old shape) and `needs_flush` is true, so the next metadata
    /// write carries the new shape, to go with the new superblock. `idle_clear`, the clock
    /// and the stats carry over.
    ///
    /// [`MetaLayout::resized`]: crate::superblock::MetaLayout::resized
    pub fn resized(&self, data_blocks: u64, region_blocks: u64) -> WriteIntentBitmap {
        debug_assert!(self.inflight.iter().all(|&n| n == 0), "resize with writes in flight");
        debug_assert!(self.flushing.is_none(), "resize with a flush in flight");
        debug_assert!(
            self.waiting.is_empty() && self.in_flight_waiters.is_empty(),
            "resize with waiters"
        );
        debug_assert!(
            region_blocks % self.region_blocks == 0 && (region_blocks / self.region_blocks).is_power_of_two(),
            "region of {region_blocks} blocks is not a power-of-two multiple of {}",
            self.region_blocks
        );
        debug_assert!(data_blocks >= self.data_blocks, "a bitmap only grows");
        let mut b = WriteIntentBitmap::new(data_blocks, region_blocks, None, self.idle_clear);
        let (old_rb, new_rb) = (self.region_blocks, b.region_blocks);
        for r in 0..b.regions {
            let (start, end) = (r as u64 * new_rb, (r as u64 + 1) * new_rb);
            let first = (start / old_rb) as usize;
            let last = (end.div_ceil(old_rb) as usize).min(self.regions);
            for o in first..last {
                for (from, to) in [
                    (&self.on_disk, &mut b.on_disk),
                    (&self.wanted, &mut b.wanted),
                    (&self.missed, &mut b.missed),
                    (&self.hold, &mut b.hold),
                ] {
                    if from.get(o) {
                        to.set(r, true);
                    }
                }
                b.last_write[r] = b.last_write[r].max(self.last_write[o]);
            }
            if end.min(data_blocks) > self.data_blocks {
                b.wanted.set(r, true);
                b.hold.set(r, true);
            }
        }
        b.reshaped = true;
        b.now = self.now;
        b.stats = self.stats.clone();
        b
    }

    /// Mirror blocks the bitmap covers.
    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }

    pub fn regions(&self) -> usize {
        self.regions
    }

    pub fn region_blocks(&self) -> u64 {
        self.region_blocks
    }

    fn span(&self, lba: u64, blocks: u64) -> std::ops::RangeInclusive<usize> {
        region_span(lba, blocks, self.region_blocks, self.regions)
    }

    /// Durable dirty regions: what resync after a crash must cover.
    pub fn on_disk(&self) -> &Bits {
        &self.on_disk
    }

    pub fn dirty_regions(&self) -> usize {
        self.on_disk.count()
    }

    /// Regions written while some copy missed the write (what a returning leg must copy).
    pub fn missed(&self) -> &Bits {
        &self.missed
    }

    /// A returning leg was recovered: its missed regions may be cleared again.
    pub fn forget_missed(&mut self) {
        self.missed = Bits::new(self.regions);
    }

    /// Assembled with a leg missing: every region dirty on disk may be one it lacks, so they
    /// all stay dirty until it is recovered.
    pub fn miss_all_dirty(&mut self) {
        self.missed = self.on_disk.clone();
    }

    /// Keeps region `r` dirty (`true`, e.g. until it is resynced) or lets it clear again.
    pub fn hold(&mut self, r: usize, keep: bool) {
        self.hold.set(r, keep);
    }

    /// Regions kept dirty until resynced (`hold`; after `resized`, the new space too).
    pub fn held(&self) -> &Bits {
        &self.hold
    }

    /// A clean stop: no write is in flight, so every region may clear at once except those a
    /// missing leg needs and those still awaiting resync. Returns the image to write.
    pub fn clean_image(&self) -> Bits {
        let mut img = Bits::new(self.regions);
        for r in (0..self.regions).filter(|&r| self.missed.get(r) || self.hold.get(r) || self.inflight[r] > 0) {
            img.set(r, true);
        }
        img
    }

    /// The regions a range of mirror blocks touches.
    pub fn regions_of(&self, lba: u64, blocks: u64) -> std::ops::RangeInclusive<usize> {
        self.span(lba, blocks)
    }

    /// Advances time; clears, in memory, the regions idle long enough (the next flush writes
    /// them out).
    pub fn tick(&mut self, now: u64) {
        self.now = now;
        for r in 0..self.regions {
            if self.wanted.get(r)
                && self.inflight[r] == 0
                && !self.missed.get(r)
                && !self.hold.get(r)
                && now.saturating_sub(self.last_write[r]) >= self.idle_clear
            {
                self.wanted.set(r, false);
                self.stats.cleared += 1;
            }
        }
    }

    // ----- for owners that count in-flight writes themselves (the SPDK glue counts them per
    // core, lock-free, and asks here only when a region is not already durable) -----

    /// `start_write` without the in-flight count: marks the regions wanted and says whether
    /// they are durable; if not, `waiter` is released by a later `flush_done`.
    pub fn mark_wanted(&mut self, waiter: ParentId, lba: u64, blocks: u64) -> Gate {
        let mut durable = true;
        for r in self.span(lba, blocks) {
            self.wanted.set(r, true);
            durable &= self.fast_ok(r);
        }
        if durable {
            self.stats.free_rides += 1;
            Gate::Ready
        } else {
            self.stats.waits += 1;
            self.waiting.push_back(waiter);
            Gate::Pending
        }
    }

    /// A write there missed a copy: its regions stay dirty until `forget_missed`.
    pub fn mark_missed(&mut self, lba: u64, blocks: u64) {
        for r in self.span(lba, blocks) {
            self.missed.set(r, true);
        }
    }

    /// Whether a write to region `r` may go without asking: it is dirty on disk, wanted, and
    /// no image without it is being written.
    pub fn fast_ok(&self, r: usize) -> bool {
        !self.reshaped && self.on_disk.get(r) && self.wanted.get(r) && self.flushing.as_ref().is_none_or(|f| f.get(r))
    }

    /// Whether region `r` is wanted dirty and nothing (a missing leg, a pending resync) keeps it.
    pub fn clearable(&self, r: usize) -> bool {
        self.wanted.get(r) && !self.missed.get(r) && !self.hold.get(r)
    }

    /// Lets region `r` clear (the caller checked that no write is in flight there and that it
    /// was idle long enough); the next flush writes it clean.
    pub fn clear(&mut self, r: usize) {
        if self.clearable(r) {
            self.wanted.set(r, false);
            self.stats.cleared += 1;
        }
    }

    /// Whether `take_flush` would hand out an image.
    pub fn needs_flush(&self) -> bool {
        self.flushing.is_none() && (self.wanted != self.on_disk || !self.waiting.is_empty() || self.reshaped)
    }

    /// The image to write to every leg now, if one is due and none is in flight.
    pub fn take_flush(&mut self) -> Option<Bits> {
        if !self.needs_flush() {
            return None;
        }
        self.in_flight_waiters.extend(self.waiting.drain(..));
        self.flushing = Some(self.wanted.clone());
        self.stats.flushes += 1;
        self.flushing.clone()
    }

    /// The flush landed on the legs: returns the parents that may now issue their writes.
    pub fn flush_done(&mut self) -> Vec<ParentId> {
        if let Some(img) = self.flushing.take() {
            // Bits set since the snapshot stay wanted; bits it cleared are clean on disk.
            self.on_disk = img;
            // The image was taken after any resize: the legs hold the current shape.
            self.reshaped = false;
        }
        std::mem::take(&mut self.in_flight_waiters)
    }
}

impl WriteIntent for WriteIntentBitmap {
    fn start_write(&mut self, parent: ParentId, lba: u64, blocks: u64) -> Gate {
        for r in self.span(lba, blocks) {
            self.inflight[r] += 1;
            self.last_write[r] = self.now;
        }
        self.mark_wanted(parent, lba, blocks)
    }

    fn end_write(&mut self, lba: u64, blocks: u64, all_copies: bool) {
        for r in self.span(lba, blocks) {
            self.inflight[r] -= 1;
            self.last_write[r] = self.now;
            if !all_copies {
                self.missed.set(r, true);
            }
        }
    }
}

/// The regions of `region_blocks` blocks each (`regions` in all) that `[lba, lba + blocks)`
/// touches; at least one.
#[inline]
pub fn region_span(lba: u64, blocks: u64, region_blocks: u64, regions: usize) -> std::ops::RangeInclusive<usize> {
    let (first, last) = region_bounds(lba, blocks, region_blocks, regions);
    first..=last
}

/// `region_span` as its first and last region.
#[inline(always)]
pub fn region_bounds(lba: u64, blocks: u64, region_blocks: u64, regions: usize) -> (usize, usize) {
    RegionMap::new(region_blocks, regions).bounds(lba, blocks)
}

/// Finds the regions a block range touches, the region size's shift worked out once. It runs
/// on every start and end of a write, so a region that is a power of two of blocks (always,
/// with power-of-two blocks) is found by shifts, not two 64-bit divisions, and the test for
/// which is not redone each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionMap {
    region_blocks: u64,
    /// `log2(region_blocks)`, or `NOT_POW2`.
    shift: u32,
    /// The last region.
    last: usize,
}

const NOT_POW2: u32 = u32::MAX;

impl RegionMap {
    /// `region_blocks` (at least 1) per region, `regions` (at least 1) in all.
    #[inline(always)]
    pub fn new(region_blocks: u64, regions: usize) -> RegionMap {
        let region_blocks = region_blocks.max(1);
        RegionMap {
            region_blocks,
            shift: if region_blocks.is_power_of_two() {
                region_blocks.trailing_zeros()
            } else {
                NOT_POW2
            },
            last: regions.max(1) - 1,
        }
    }

    /// The first and last region `[lba, lba + blocks)` touches (a range of no blocks: the
    /// region of `lba`), the last no further than the map's.
    #[inline(always)]
    pub fn bounds(&self, lba: u64, blocks: u64) -> (usize, usize) {
        let end = lba + blocks.max(1) - 1;
        let (first, last) = if self.shift != NOT_POW2 {
            (lba >> self.shift, end >> self.shift)
        } else {
            (lba / self.region_blocks, end / self.region_blocks)
        };
        (first as usize, (last as usize).min(self.last))
    }
}

/// Ranges of mirror blocks to resync: every dirty region, merged where adjacent.
pub fn resync_plan(dirty: &Bits, regions: usize, region_blocks: u64, data_blocks: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for r in (0..regions).filter(|&r| dirty.get(r)) {
        let start = r as u64 * region_blocks;
        let len = region_blocks.min(data_blocks - start);
        match out.last_mut() {
            Some((s, l)) if *s + *l == start => *l += len,
            _ => out.push((start, len)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_span_by_shifts_matches_division() {
        // Power-of-two regions take the shift path; the answers are the division's.
        for (lba, blocks) in [(0, 1), (0, 0), (127, 1), (127, 2), (128, 128), (1000, 300), (4095, 10)] {
            let by_division = {
                let last = ((lba + u64::max(blocks, 1) - 1) / 128).min(31);
                (lba / 128) as usize..=last as usize
            };
            assert_eq!(region_span(lba, blocks, 128, 32), by_division, "({lba}, {blocks})");
        }
        assert_eq!(region_span(350, 100, 100, 10), 3..=4);
        assert_eq!(region_span(999, 1, 100, 10), 9..=9);
    }

    #[test]
    fn region_map_agrees_with_division_for_every_size() {
        // Power-of-two and other region sizes, one region and many, ranges past the end.
        for (region_blocks, regions) in [
            (1, 1),
            (1, 7),
            (2, 5),
            (3, 4),
            (64, 33),
            (100, 10),
            (128, 32),
            (4096, 2),
        ] {
            let map = RegionMap::new(region_blocks, regions);
            for lba in [0u64, 1, 2, 63, 64, 99, 100, 127, 128, 999, 4095, 4096, 1 << 20] {
                for blocks in [0u64, 1, 2, 3, 64, 100, 128, 1000] {
                    let first = (lba / region_blocks) as usize;
                    let last = (((lba + blocks.max(1) - 1) / region_blocks) as usize).min(regions - 1);
                    assert_eq!(
                        map.bounds(lba, blocks),
                        (first, last),
                        "{region_blocks}x{regions}: ({lba}, {blocks})"
                    );
                }
            }
        }
    }

    #[test]
    fn first_write_waits_for_the_flush_later_ones_ride_free() {
        let mut b = WriteIntentBitmap::new(1000, 100, None, 10);
        assert_eq!(b.start_write(1, 150, 10), Gate::Pending);
        assert_eq!(b.start_write(2, 160, 10), Gate::Pending, "not durable yet");
        let img = b.take_flush().unwrap();
        assert!(img.get(1) && !img.get(0));
        assert_eq!(b.flush_done(), vec![1, 2]);
        assert_eq!(b.start_write(3, 199, 1), Gate::Ready);
        assert_eq!(b.stats.free_rides, 1);
        assert_eq!(b.take_flush(), None, "nothing new to write");
    }

    #[test]
    fn regions_clear_lazily_only_when_idle_and_complete() {
        let mut b = WriteIntentBitmap::new(1000, 100, None, 10);
        b.start_write(1, 0, 250); // regions 0..=2
        b.take_flush();
        b.flush_done();
        b.tick(50);
        assert_eq!(b.take_flush(), None, "writes still in flight keep their regions");
        b.end_write(0, 250, true);
        b.start_write(2, 210, 5);
        b.end_write(210, 5, false); // a copy missed it: region 2 stays dirty
        b.tick(55);
        assert_eq!(b.take_flush(), None, "not idle long enough");
        b.tick(70);
        let img = b.take_flush().unwrap();
        b.flush_done();
        assert!(!img.get(0) && !img.get(1) && img.get(2));
        assert_eq!(b.dirty_regions(), 1);
        assert_eq!(resync_plan(b.on_disk(), b.regions(), 100, 1000), vec![(200, 100)]);
    }

    #[test]
    fn held_and_missed_regions_survive_idle_and_a_clean_stop() {
        let mut b = WriteIntentBitmap::new(1000, 100, None, 10);
        for (id, lba) in [(1, 0), (2, 300), (3, 600)] {
            b.start_write(id, lba, 1);
        }
        b.take_flush();
        b.flush_done();
        b.end_write(0, 1, true);
        b.end_write(300, 1, false); // a leg missed it
        b.end_write(600, 1, true);
        b.hold(6, true); // awaiting resync
        b.tick(100);
        let img = b.take_flush().unwrap();
        b.flush_done();
        assert_eq!((img.get(0), img.get(3), img.get(6)), (false, true, true));
        assert_eq!(b.clean_image(), img);
        b.hold(6, false);
        b.forget_missed();
        b.tick(200);
        b.take_flush();
        b.flush_done();
        assert_eq!(b.dirty_regions(), 0);
        // Assembled with a leg away: what is dirty is what it may lack.
        let mut on = Bits::new(10);
        on.set(4, true);
        let mut b = WriteIntentBitmap::new(1000, 100, Some(on), 10);
        b.miss_all_dirty();
        b.tick(100);
        assert_eq!(b.take_flush(), None, "region 4 stays dirty for the missing leg");
        assert_eq!(b.regions_of(350, 100), 3..=4);
    }

    #[test]
    fn owner_counted_writes_ride_free_once_durable_and_clear_on_request() {
        let mut b = WriteIntentBitmap::new(1000, 100, None, 10);
        assert_eq!(b.mark_wanted(7, 150, 10), Gate::Pending);
        assert!(!b.fast_ok(1));
        b.take_flush().unwrap();
        assert_eq!(
            b.mark_wanted(8, 160, 1),
            Gate::Pending,
            "the image being written has it, not yet durable"
        );
        assert_eq!(
            b.flush_done(),
            vec![7],
            "8 came after the image was taken: the next flush"
        );
        assert!(b.needs_flush());
        b.take_flush().unwrap();
        assert_eq!(b.flush_done(), vec![8]);
        assert!(b.fast_ok(1) && !b.fast_ok(0));
        assert_eq!(b.mark_wanted(9, 199, 1), Gate::Ready);
        b.mark_missed(150, 1);
        assert!(!b.clearable(1), "a missed region stays");
        b.forget_missed();
        b.clear(1);
        assert!(!b.fast_ok(1), "writes must ask once a region may be cleared");
        let img = b.take_flush().unwrap();
        assert!(!img.get(1));
        assert_eq!(
            b.mark_wanted(10, 120, 1),
            Gate::Pending,
            "the clean image is being written"
        );
        b.flush_done();
        assert_eq!(b.dirty_regions(), 0);
        b.take_flush().unwrap();
        assert_eq!(b.flush_done(), vec![10]);
        assert!(b.fast_ok(1));
    }

    /// 1000 blocks in regions of 100: region 3 dirty on disk, 6 missed, 8 held, all idle.
    fn settled() -> WriteIntentBitmap {
        let mut b = WriteIntentBitmap::new(1000, 100, None, 10);
        for (id, lba) in [(1, 350), (2, 650), (3, 850)] {
            b.start_write(id, lba, 1);
        }
        b.take_flush().unwrap();
        assert_eq!(b.flush_done(), vec![1, 2, 3]);
        b.tick(5);
        b.end_write(350, 1, true);
        b.end_write(650, 1, false);
        b.end_write(850, 1, true);
        b.hold(8, true);
        b.tick(6);
        assert!(!b.needs_flush());
        b
    }

    fn set(bits: &Bits, n: usize) -> Vec<usize> {
        (0..n).filter(|&r| bits.get(r)).collect()
    }

    #[test]
    fn growing_with_doubled_regions_merges_the_old_bits() {
        let old = settled();
        let b = old.resized(2000, 200);
        assert_eq!((b.regions(), b.region_blocks(), b.data_blocks()), (10, 200, 2000));
        // Old regions 2r and 2r+1 make new region r; 5.. is new space.
        assert_eq!(set(b.on_disk(), 10), vec![1, 3, 4]);
        assert_eq!(set(&b.wanted, 10), vec![1, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(set(b.missed(), 10), vec![3]);
        assert_eq!(set(b.held(), 10), vec![4, 5, 6, 7, 8, 9]);
        assert_eq!(
            (b.last_write[0], b.last_write[1]),
            (0, 5),
            "the latest write of the merged regions"
        );
        assert_eq!((b.idle_clear, &b.stats, b.now), (10, &old.stats, 6));
        // Same region size: bits stay where they were.
        let b = old.resized(1500, 100);
        assert_eq!(set(b.on_disk(), 15), vec![3, 6, 8]);
        assert_eq!(set(b.held(), 15), vec![8, 10, 11, 12, 13, 14]);
        // Regions four times as large.
        let b = old.resized(1000, 400);
        let clean = WriteIntentBitmap::new(1000, 100, None, 10).resized(1000, 400);
        assert_eq!(
            (set(&clean.wanted, 3), set(clean.held(), 3)),
            (vec![], vec![]),
            "blocks 1000..1200 of region 2 do not exist: no new space"
        );
        assert_eq!(
            (set(b.on_disk(), 3), set(b.missed(), 3), set(b.held(), 3)),
            (vec![0, 1, 2], vec![1], vec![2])
        );
    }

    #[test]
    fn new_space_is_dirty_and_held_until_resynced() {
        // 950 blocks: the last old region, 9, ends short of its 100 blocks.
        let mut b = WriteIntentBitmap::new(950, 100, None, 10).resized(1234, 100);
        assert_eq!(b.regions(), 13);
        assert_eq!(
            set(b.held(), 13),
            vec![9, 10, 11, 12],
            "region 9 gains blocks 950..1000"
        );
        let img = b.take_flush().unwrap();
        assert_eq!(set(&img, 13), vec![9, 10, 11, 12]);
        b.flush_done();
        b.tick(1000);
        assert_eq!(b.take_flush(), None, "held: not cleared however idle");
        assert_eq!(resync_plan(b.on_disk(), b.regions(), 100, 1234), vec![(900, 334)]);
        for r in 9..13 {
            b.hold(r, false);
        }
        b.tick(2000);
        assert!(b.take_flush().is_some());
        b.flush_done();
        assert_eq!(b.dirty_regions(), 0);
    }

    #[test]
    fn old_dirty_bits_survive_growth_and_are_durable_again_after_the_flush() {
        let mut b = settled().resized(3000, 100);
        assert!(!b.fast_ok(3), "the legs still hold the old shape");
        assert_eq!(b.mark_wanted(9, 350, 1), Gate::Pending);
        let img = b.take_flush().unwrap();
        assert!(img.get(3) && img.get(6) && img.get(8) && !img.get(0) && img.get(10) && img.get(29));
        assert_eq!(b.flush_done(), vec![9]);
        assert!(b.fast_ok(3) && b.fast_ok(20) && !b.fast_ok(0));
        assert_eq!(b.start_write(10, 399, 1), Gate::Ready);
    }

    #[test]
    fn growing_always_asks_for_a_flush() {
        let old = settled();
        for (blocks, region) in [(1000, 100), (1000, 200), (1001, 100), (5000, 800)] {
            let mut b = old.resized(blocks, region);
            assert!(b.needs_flush(), "{blocks} blocks, regions of {region}");
            b.take_flush().unwrap();
            assert!(!b.needs_flush(), "one in flight");
            b.flush_done();
            assert!(!b.needs_flush(), "{blocks} blocks, regions of {region}: written");
        }
        // The region holding the old end was dirty on disk already: the images agree, yet the
        // legs hold the old shape.
        let mut b = WriteIntentBitmap::new(950, 100, None, 10);
        b.start_write(1, 940, 1);
        b.take_flush();
        b.flush_done();
        b.end_write(940, 1, true);
        let g = b.resized(1000, 100);
        assert_eq!(g.wanted, *g.on_disk());
        assert!(g.needs_flush());
    }

    #[test]
    fn image_round_trips_and_plan_merges_neighbours() {
        let mut bits = Bits::new(130);
        for i in [0, 1, 2, 64, 129] {
            bits.set(i, true);
        }
        assert_eq!(Bits::from_bytes(&bits.to_bytes(), 130), bits);
        assert_eq!(
            resync_plan(&bits, 130, 8, 130 * 8 - 3),
            vec![(0, 24), (512, 8), (1032, 5)]
        );
    }
}
