//! A restart after a crash, decided by the code the SPDK module's examine path decides with:
//! every leg's superblock is read back (encoded and decoded, as it would come off the disk) and
//! `superblock::choose_legs` picks the newest and the fresh legs (the newest `events`, Active in
//! that newest superblock); those are the legs trusted. Then the promise is checked:
//! every acknowledged write is on every trusted copy that will be read — outside the dirty
//! regions that is every trusted copy, inside them the copy resync reads from and writes over the
//! others (the first trusted copy in placement order, `process::read_source`).

use serde::Serialize;

use super::metadata::OnDisk;
use crate::bitmap::Bits;
use crate::placement::Geometry;
use crate::superblock::{choose_legs, Superblock};

/// What the restart found. The workload adds what it knew at the crash.
#[derive(Debug, Clone, Serialize)]
pub struct RestartReport {
    /// Each leg's superblock `events`, by slot.
    pub events: Vec<u64>,
    /// Legs assembly trusts.
    pub trusted: Vec<u32>,
    /// Superblocks that did not decode or that `choose_legs` rejected: the simulator wrote
    /// something the module would not accept. Must be 0.
    pub rejected: usize,
    /// Whether the trusted legs hold a copy of every block. If not, examine waits for the
    /// missing fresh legs (which are stale) and the mirror does not come up by itself; no data
    /// is served, so none is wrong.
    pub assembles: bool,
    /// Regions dirty in the union of the trusted legs' bitmaps: what resync covers.
    pub dirty_regions: usize,
    /// Blocks whose last acknowledged write is missing from a trusted copy that will be read.
    /// Must be 0.
    pub lost_acked_blocks: u64,
    /// Blocks with no copy on a trusted leg.
    pub uncovered_blocks: u64,
    /// A leg the mirror had failed before the crash is trusted (its superblock looked as new
    /// as the others'): safe only if no write that missed it was acknowledged.
    pub failed_leg_trusted: bool,
    /// The failure was in the superblocks of the working legs before the crash.
    pub failure_recorded: bool,
    /// Host completions held back (not acknowledged) at the crash.
    pub acks_held: u64,
    /// Host I/Os acknowledged between the first leg failure and the crash.
    pub acked_since_failure: u64,
    /// Host writes issued and not acknowledged when the first leg failed.
    pub writes_in_flight_at_failure: u64,
}

/// What the host knew at the crash, per mirror block: the value its last acknowledged write
/// left (`None`: a write there failed, so nothing was promised), and the value of a write to it
/// still unacknowledged (which may or may not have landed).
pub struct HostView<'a> {
    pub acked: &'a [Option<u64>],
    pub unacked: &'a [Option<u64>],
}

/// Assembles from `disks` and checks every block. `leg_data(leg)` is what the leg's data area
/// holds; `failed` the legs the mirror had failed before the crash; `region_blocks` (at least 1)
/// the bitmap's region.
pub fn restart<'d>(
    geo: &Geometry,
    disks: &[OnDisk],
    region_blocks: u64,
    leg_data: impl Fn(u32) -> &'d [u64],
    failed: u32,
    host: &HostView,
) -> RestartReport {
    // Off the disk and back: assembly sees only what the codec keeps.
    let found: Vec<Superblock> = disks
        .iter()
        .filter_map(|d| d.sb.encode().ok().and_then(|b| Superblock::decode(&b).ok()))
        .collect();
    let assembly = choose_legs(&found);
    let trusted_mask = assembly.as_ref().map_or(0, |a| a.fresh);
    let regions = geo.data_blocks().div_ceil(region_blocks) as usize;
    let mut dirty = Bits::new(regions);
    for (leg, d) in disks.iter().enumerate().filter(|(l, _)| trusted_mask & (1 << l) != 0) {
        debug_assert_eq!(d.sb.this_slot as usize, leg);
        for r in (0..regions).filter(|&r| d.bits.get(r)) {
            dirty.set(r, true);
        }
    }
    let (mut lost, mut uncovered) = (0, 0);
    for lba in 0..geo.data_blocks() {
        let Some(want) = host.acked[lba as usize] else { continue };
        let unacked = host.unacked[lba as usize];
        let copies = geo.map_unchecked(lba);
        let mut on_trusted = copies.as_slice().iter().filter(|c| trusted_mask & (1 << c.leg) != 0);
        let has = |c: &crate::placement::Copy| {
            let v = leg_data(c.leg)[c.lba as usize];
            v == want || Some(v) == unacked
        };
        let Some(first) = on_trusted.next() else {
            uncovered += 1;
            continue;
        };
        let ok = if dirty.get((lba / region_blocks) as usize) {
            has(first)
        } else {
            has(first) && on_trusted.all(has)
        };
        lost += u64::from(!ok);
    }
    RestartReport {
        events: disks.iter().map(|d| d.sb.events).collect(),
        trusted: (0..geo.legs()).filter(|l| trusted_mask & (1 << l) != 0).collect(),
        rejected: disks.len() - found.len() + assembly.as_ref().map_or(found.len(), |a| a.rejected.len()),
        assembles: assembly.as_ref().is_some_and(|a| a.covers_every_block()),
        dirty_regions: dirty.count(),
        lost_acked_blocks: lost,
        uncovered_blocks: uncovered,
        failed_leg_trusted: trusted_mask & failed != 0,
        failure_recorded: false,
        acks_held: 0,
        acked_since_failure: 0,
        writes_in_flight_at_failure: 0,
    }
}
