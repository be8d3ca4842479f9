//! Growing the mirror when its legs have grown (md's `--grow --size=max`), on SPDK's bdev
//! resize events.
//!
//! Once every present leg has room for more than the mirror uses, the geometry is redone for
//! the smallest leg (`Geometry::resized`: RAID1, RAID10 near and offset keep every block where
//! it is; far layouts would move data and are refused, as md refuses them), the bitmap grows
//! with it (larger regions if it no longer fits the reserved area), the superblock records the
//! new size, and the bdev layer announces it. The new space has never been written on every
//! copy, so it is marked dirty and awaiting resync before I/O resumes (reads there stay on one
//! copy), and a resync copies it, as md resyncs the space a grow adds.

use std::sync::atomic::Ordering;

use spdk_sys as sys;

use super::error::Fail;
use super::ffi::{errlog, noticelog, warnlog};
use super::mirror::Mirror;
use super::process::{self, Kind};
use super::reshape;
use crate::placement::Geometry;
use crate::superblock::MetaLayout;

/// A leg of `m` changed size (app thread): grows the mirror if every present leg allows it.
/// While a process or another change runs, the check is repeated when it ends.
pub fn leg_resized(m: &'static Mirror) {
    let geo = m.geo();
    let smallest = m
        .legs()
        .iter()
        .filter(|l| l.present())
        // SAFETY: a present leg's bdev is open.
        .map(|l| unsafe { sys::spdk_bdev_get_num_blocks(l.bdev()) })
        .min();
    let Some(smallest) = smallest else { return };
    let leg_blocks = smallest.saturating_sub(m.data_offset);
    if leg_blocks <= geo.leg_blocks() {
        // Not every leg has grown yet (or one shrank, which changes nothing: the mirror
        // still fits the blocks it uses).
        return;
    }
    let grown = match geo.resized(leg_blocks) {
        Ok(g) if g.data_blocks() > geo.data_blocks() => g,
        Ok(_) => return,
        Err(e) => {
            warnlog!("mirror {}: its legs grew but the mirror keeps its size: {e}", m.name());
            return;
        }
    };
    if m.process_active.load(Ordering::Acquire) {
        m.resize_pending.store(true, Ordering::Release);
        return;
    }
    let old_blocks = geo.data_blocks();
    reshape::reshape(
        m,
        "resize",
        Box::new(move |m| apply(m, grown)),
        Box::new(move |r| {
            if let Err(why) = r {
                errlog!("mirror {}: cannot grow: {why}", m.name());
                return;
            }
            noticelog!(
                "mirror {}: grew from {old_blocks} to {} blocks",
                m.name(),
                m.geo().data_blocks()
            );
            let blocks = m.geo().data_blocks();
            let ranges = match &m.persist {
                Some(p) => p.unsynced_ranges(blocks),
                // No bitmap: the new space is resynced, but a crash before that is not remembered.
                None => vec![(old_blocks, blocks - old_blocks)],
            };
            if ranges.is_empty() {
                return;
            }
            if let Err(why) = process::start(m, Kind::Resync, None, ranges, None) {
                // Reads of the new space stay on one copy until a resync runs (the regions
                // stay dirty, so the next start resyncs them).
                warnlog!("mirror {}: resync of the new space not started: {why}", m.name());
            }
        }),
    );
}

/// The change, with the mirror quiesced.
fn apply(m: &'static Mirror, grown: Geometry) -> Result<(), Fail> {
    let old = m.geo();
    if let Some(p) = &m.persist {
        let region_kb = p.superblock().bitmap_region_kb;
        let (layout, region_kb) = MetaLayout::resized(grown.block_size(), grown.data_blocks(), region_kb)
            .map_err(|e| Fail::named(-libc::ENOSPC, e))?;
        // SAFETY: a reshape: quiesced, no process, no metadata write in flight, on the
        // mirror's thread; every channel rejoins before I/O resumes.
        unsafe { p.resize(layout, grown.data_blocks(), old.data_blocks()) };
        let mut sb = p.superblock();
        sb.leg_data_blocks = grown.leg_blocks();
        sb.bitmap_region_kb = region_kb;
        sb.bitmap_blocks = layout.bitmap_blocks;
        sb.events += 1;
    }
    m.set_geo(grown);
    Ok(())
}
