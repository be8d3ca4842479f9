//! The engine's `WriteIntent` over the mirror's bitmap, one per channel: a write to a region
//! already dirty on disk raises this core's counter and reads one shared bit; any other write
//! parks until the mirror's thread has written the metadata (see `metadata`).

use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::error::Fail;
use super::metadata::{ChanCounts, Persist, MAX_CHANNELS, PARENT_BITS};
use super::mirror::Mirror;
use crate::engine::{Gate, ParentId, WriteIntent};

/// One channel's view of the bitmap: the engine's `WriteIntent`.
pub struct ChannelIntent {
    mirror: *const Mirror,
    chan: u32,
    /// The mirror's bitmap (set before its first channel, kept for its life) and this
    /// channel's counters in it; `None` for a mirror without one. One option for both: one
    /// test on every write's start and end.
    bitmap: Option<(NonNull<Persist>, Arc<ChanCounts>)>,
}

impl ChannelIntent {
    pub fn new(m: &Mirror) -> Result<ChannelIntent, Fail> {
        let (chan, bitmap) = match &m.persist {
            Some(p) => {
                let (c, counts) = p.join();
                (c, Some((NonNull::from(&**p), counts)))
            }
            None => (0, None),
        };
        if chan as usize >= MAX_CHANNELS {
            if let Some(p) = &m.persist {
                p.leave(chan);
            }
            return Err(Fail::plain(-libc::ENOSPC, format!("more than {MAX_CHANNELS} channels")));
        }
        Ok(ChannelIntent {
            mirror: m,
            chan,
            bitmap,
        })
    }

    /// The bitmap and this channel's counters, if the mirror has a bitmap.
    #[inline(always)]
    fn bitmap(&self) -> Option<(&Persist, &ChanCounts)> {
        let (p, c) = self.bitmap.as_ref()?;
        // SAFETY: the mirror's boxed `Persist`, never replaced, outlives its channels' engines.
        Some((unsafe { p.as_ref() }, c))
    }

    pub fn chan(&self) -> u32 {
        self.chan
    }
}

impl Drop for ChannelIntent {
    fn drop(&mut self) {
        if let Some((p, _)) = self.bitmap() {
            p.leave(self.chan);
        }
    }
}

impl ChannelIntent {
    /// This core enters region `r` for one write: counted first, then the fast bit read (the
    /// Dekker half, see `metadata`'s module comment). Returns whether the region takes writes
    /// without the mutex.
    ///
    /// Only the first write in (count 0 -> 1) needs the locked SeqCst RMW. While this core
    /// already counts in `r`, the clearer cannot see the count at 0 unless it read it before
    /// that first raise, and then (Dekker) dropped the fast bit before it, so this write's own
    /// SeqCst bit read, later in program order than the raise, sees the bit gone too. A plain
    /// store suffices then, as in `leave` (only this core writes its counters); it saves a
    /// locked instruction on nearly every write, since writes cluster in regions.
    ///
    /// The touched bit (when the region was last written, for the lazy clear) is set on the
    /// way in from zero only: while this core counts in `r` the tick finds the region busy,
    /// which it takes as written now. It only times the clear; what makes a clear safe is the
    /// count and the fast bit.
    #[inline(always)]
    fn enter(p: &Persist, c: &ChanCounts, r: usize) -> bool {
        let n = &c.counts[r];
        let held = n.load(Ordering::Relaxed);
        if held == 0 {
            n.fetch_add(1, Ordering::SeqCst);
            let (w, bit) = (&c.touched[r / 64], 1u64 << (r % 64));
            if w.load(Ordering::Relaxed) & bit == 0 {
                w.fetch_or(bit, Ordering::Relaxed);
            }
        } else {
            n.store(held + 1, Ordering::Relaxed);
        }
        p.fast(r)
    }

    /// This core leaves region `r`. Only this channel's thread writes its counters, so no
    /// locked read-modify-write is needed to drop one; Release keeps the write's end (and
    /// `mark_missed`) before it. (Raising one from zero is a SeqCst RMW: the Dekker half that
    /// must precede the bit read; see `enter`.)
    #[inline(always)]
    fn leave(c: &ChanCounts, r: usize) {
        let n = &c.counts[r];
        n.store(n.load(Ordering::Relaxed) - 1, Ordering::Release);
    }

    /// A write some of whose regions are not durable yet: it waits for a metadata write.
    #[cold]
    #[inline(never)]
    fn start_slow(&self, p: &Persist, parent: ParentId, lba: u64, blocks: u64) -> Gate {
        let gate = p.bitmap().mark_wanted(self.chan << PARENT_BITS | parent, lba, blocks);
        if gate == Gate::Pending {
            // SAFETY: as in `persist`.
            unsafe { &*self.mirror }.request_metadata_write();
        }
        gate
    }
}

impl WriteIntent for ChannelIntent {
    /// Inline on the write path: a write inside one region already dirty on disk (the common
    /// case) costs the count, the touched bit and the fast bit, with no call.
    #[inline(always)]
    fn start_write(&mut self, parent: ParentId, lba: u64, blocks: u64) -> Gate {
        let Some((p, c)) = self.bitmap() else {
            return Gate::Ready;
        };
        let (mut r, last) = p.region_bounds(lba, blocks);
        // Nearly every write lies in one region: no loop for it.
        let fast = if r == last {
            Self::enter(p, c, r)
        } else {
            let mut fast = true;
            // Every region is counted, even after one is found slow: `end_write` drops them
            // all. (A plain loop: a range's iterator costs more.)
            while r <= last {
                fast &= Self::enter(p, c, r);
                r += 1;
            }
            fast
        };
        if fast {
            return Gate::Ready;
        }
        self.start_slow(p, parent, lba, blocks)
    }

    #[inline]
    fn end_write(&mut self, lba: u64, blocks: u64, all_copies: bool) {
        let Some((p, c)) = self.bitmap() else {
            return;
        };
        if !all_copies {
            // Before the count drops, so the region cannot be cleared in between.
            p.mark_missed(lba, blocks);
        }
        let (mut r, last) = p.region_bounds(lba, blocks);
        if r == last {
            return Self::leave(c, r);
        }
        while r <= last {
            Self::leave(c, r);
            r += 1;
        }
    }
}
