//! Assembly, from the superblocks alone: which copies make the mirror (newest `events` wins,
//! in any order they are found) and how a leg that was away rejoins a running mirror.

use std::borrow::Borrow;

use thiserror::Error;

use super::layout::MetaLayout;
use super::{LegRole, Superblock, SuperblockError};
use crate::placement::{Geometry, MAX_LEGS};

/// Why a copy found on a bdev is not used to assemble its mirror.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    #[error("{0}")]
    Invalid(SuperblockError),
    #[error("its superblock disagrees with the newest one (events {events}) on {field}")]
    Disagrees { field: &'static str, events: u64 },
    #[error("slot {slot} goes to another copy, newer or with the leg uuid the newest superblock records")]
    SlotTaken { slot: u32, winner: usize },
}

/// What to assemble a mirror from, decided from its legs' superblocks alone (never from the
/// order they were found in). Indexes point into the slice given to [`choose_legs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembly {
    /// The superblock that is the truth: the highest `events`.
    pub newest: usize,
    pub geometry: Geometry,
    pub layout: MetaLayout,
    /// Per slot: the copy kept for it. A kept copy that is not fresh is stale: it may rejoin
    /// after assembly (recovered or rebuilt), never read before.
    pub slots: Vec<Option<usize>>,
    /// Slots whose kept copy is fresh: the newest `events`, the leg uuid the newest superblock
    /// records for the slot, and a slot it calls `Active`.
    pub fresh: u32,
    /// Slots the newest superblock calls `Active`.
    pub active: u32,
    /// Slots whose kept copy predates a reshape (leg count or size) it missed: written before
    /// the newest, it differs from it only as [`Superblock::reshape_disagreement`] allows, and
    /// holds its slot because the newest records its leg uuid there (its own `this_slot` and
    /// leg table are those from before the reshape).
    pub reshaped: u32,
    /// Slots whose kept copy's bitmap is laid out differently from the newest's (its
    /// `MetaLayout` differs: a resize it missed). Such a bitmap must not be read at the newest's
    /// layout; a fresh copy's dirty regions are all in the newest's bitmap anyway, as it missed
    /// only the last metadata write. A subset of `reshaped`. See [`Assembly::same_bitmap`].
    pub bitmap_differs: u32,
    /// Copies not used, and why.
    pub rejected: Vec<(usize, Rejection)>,
}

impl Assembly {
    /// Every slot the newest superblock calls active has its fresh leg.
    pub fn complete(&self) -> bool {
        self.fresh != 0 && self.active & !self.fresh == 0
    }

    /// The fresh legs hold a copy of every block: enough to run degraded.
    pub fn covers_every_block(&self) -> bool {
        self.fresh != 0 && self.geometry.every_block_covered(self.fresh)
    }

    /// A copy is kept for `slot` and its bitmap has the newest's layout (same region size,
    /// region count and length), so it can be read, and OR-ed, at the newest's layout.
    pub fn same_bitmap(&self, slot: u32) -> bool {
        let differs = 1u32.checked_shl(slot).is_some_and(|b| self.bitmap_differs & b != 0);
        self.slots.get(slot as usize).is_some_and(Option::is_some) && !differs
    }

    /// Kept copies that are not fresh, with their slots.
    pub fn stale(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(s, c)| c.map(|i| (s as u32, i)))
            .filter(|&(s, _)| self.fresh & (1 << s) == 0)
    }
}

/// Decides, from the superblocks found on one mirror's legs (same `mirror_uuid`), which one is
/// the truth and which copy serves each slot. Copies that do not validate are rejected. A copy
/// that agrees with the newest on everything but `events`, `this_slot` and the leg table claims
/// its `this_slot`. An older copy that differs from the newest only by reshapes
/// ([`Superblock::reshape_disagreement`]: RAID1 leg count, size, bitmap) claims the one slot
/// where the newest records its own leg uuid (a shrink may have moved its leg to another
/// slot); from then on it is judged like an agreeing copy. Every other copy is rejected. When
/// several copies claim a slot (a removed leg's old superblock and its replacement), the higher
/// `events` wins, then the one whose leg uuid the newest superblock records for that slot.
/// `None` when no copy validates.
pub fn choose_legs<S: Borrow<Superblock>>(found: &[S]) -> Option<Assembly> {
    let sbs: Vec<&Superblock> = found.iter().map(Borrow::borrow).collect();
    let mut rejected = Vec::new();
    let mut valid = Vec::with_capacity(sbs.len());
    let mut metas: Vec<Option<MetaLayout>> = vec![None; sbs.len()];
    for (i, sb) in sbs.iter().enumerate() {
        match sb.geometry() {
            Ok((_, meta)) => {
                valid.push(i);
                metas[i] = Some(meta);
            }
            Err(e) => rejected.push((i, Rejection::Invalid(e))),
        }
    }
    // Ties are broken by content, so the order the legs appeared in never matters.
    let bytes: Vec<Vec<u8>> = sbs.iter().map(|s| s.encode().unwrap_or_default()).collect();
    let newest = pick_newest(&sbs, &valid, &bytes)?;
    let nsb = sbs[newest];
    let (geometry, layout) = nsb.geometry().ok()?;
    // The slot each copy claims, and whether it claims it by its uuid across a reshape. An
    // agreeing copy has the newest's leg count, and `geometry` checked its slot against it.
    let mut claim: Vec<Option<(usize, bool)>> = vec![None; sbs.len()];
    for &i in &valid {
        let Some(field) = nsb.disagreement(sbs[i]) else {
            claim[i] = Some((sbs[i].this_slot as usize, false));
            continue;
        };
        let older = sbs[i].events < nsb.events;
        let beyond = if older { nsb.reshape_disagreement(sbs[i]) } else { None };
        match slot_by_uuid(nsb, sbs[i]).filter(|_| older && beyond.is_none()) {
            Some(s) => claim[i] = Some((s, true)),
            None => rejected.push((
                i,
                Rejection::Disagrees {
                    field: beyond.unwrap_or(field),
                    events: nsb.events,
                },
            )),
        }
    }
    let claiming: Vec<usize> = valid.iter().copied().filter(|&i| claim[i].is_some()).collect();
    let slot = |i: usize| claim[i].map_or(usize::MAX, |c| c.0);
    let uuid_matches =
        |i: usize| sbs[i].own_uuid().is_some() && sbs[i].own_uuid() == nsb.legs.get(slot(i)).map(|l| l.uuid);
    let better = |a: usize, b: usize| {
        let key = |i: usize| (sbs[i].events, uuid_matches(i), i == newest, &bytes[i]);
        key(a) > key(b)
    };
    let mut slots: Vec<Option<usize>> = vec![None; nsb.legs.len()];
    for &i in &claiming {
        if slots[slot(i)].is_none_or(|j| better(i, j)) {
            slots[slot(i)] = Some(i);
        }
    }
    for &i in &claiming {
        if let Some(winner) = slots[slot(i)].filter(|&w| w != i) {
            rejected.push((
                i,
                Rejection::SlotTaken {
                    slot: slot(i) as u32,
                    winner,
                },
            ));
        }
    }
    let active = mask(nsb.legs.iter().map(|l| l.role == LegRole::Active));
    // A leg the newest superblock calls active is trusted at the newest `events`, or one behind
    // it: metadata writes go one at a time to every working leg, so an active leg can miss only
    // the last one, when the mirror stopped while it was on its way. Such a leg holds every
    // acknowledged write: had it missed one it would have failed, and no write is acknowledged
    // before a leg failure is in the superblocks (md likewise accepts a member whose event
    // count is behind by what its bitmap covers). Without this, a crash in the middle of the
    // write that records a failure could leave too few legs at the newest `events` to run.
    // The same holds across a reshape: reshapes never move data, and the space a resize adds is
    // dirty in the newest's bitmap, so a leg that missed only the reshape's write is fresh.
    let fresh = mask(slots.iter().enumerate().map(|(s, c)| {
        c.is_some_and(|i| sbs[i].events.saturating_add(1) >= nsb.events && uuid_matches(i)) && active & (1 << s) != 0
    }));
    let reshaped = mask(slots.iter().map(|c| c.is_some_and(|i| claim[i].is_some_and(|c| c.1))));
    let bitmap_differs = mask(slots.iter().map(|c| c.is_some_and(|i| metas[i] != Some(layout))));
    rejected.sort_by_key(|r| r.0);
    Some(Assembly {
        newest,
        geometry,
        layout,
        slots,
        fresh,
        active,
        reshaped,
        bitmap_differs,
        rejected,
    })
}

/// How a leg comes back to a running mirror (`Superblock`s: the running mirror's and the
/// leg's own, for the slot the leg's copy records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejoin {
    /// From the bitmap (md's re-add): the running mirror dropped it while it was in sync, and
    /// it has not been written since; every write it missed is in the bitmap.
    Recovery,
    /// In full: nothing on it can be trusted to be current.
    Rebuild,
    /// It was written (its `events` moved on) after the running mirror dropped it: another
    /// assembly ran on it without this one's legs while this one ran without it (split brain),
    /// so each holds acknowledged writes the other lacks. Copying either way loses some; not
    /// for the module to decide (mdadm refuses a member that thinks the newest has failed).
    Diverged,
}

/// [`Rejoin`] for a leg whose own superblock is `theirs`, back to a mirror running with
/// `running` that dropped it (failed, or removed on request). The bitmap covers what the leg missed only if the leg was current when the
/// running mirror marked it failed: its `events` at most `failed_at_events` (what it was
/// written at last) and at least one below (the metadata write it may have missed, as
/// [`choose_legs`] allows a fresh leg). Further behind, it missed writes from before its
/// failure that no bitmap holds; further ahead, it ran apart. A leg that recorded its own
/// removal as it was taken out is judged by when it was dropped (its own entry's
/// `failed_at_events`), not by the events of that last write.
pub fn rejoin(running: &Superblock, theirs: &Superblock) -> Rejoin {
    if running.disagreement(theirs).is_some() {
        // Its data is laid out for another geometry: nothing on it can be kept.
        return Rejoin::Rebuild;
    }
    let slot = theirs.this_slot as usize;
    let (Some(mine), Some(own)) = (running.legs.get(slot), theirs.legs.get(slot)) else {
        return Rejoin::Rebuild;
    };
    let dropped = matches!(mine.role, LegRole::Failed | LegRole::Removed);
    if !dropped || mine.uuid != own.uuid {
        return Rejoin::Rebuild;
    }
    // When it was last written as a member: its own `events`, or, for a leg that recorded
    // its own removal as it was taken out (the SPDK glue's farewell), when it was dropped.
    let last = match own.role {
        LegRole::Active => theirs.events,
        LegRole::Removed => own.failed_at_events,
        LegRole::Failed | LegRole::Rebuilding => return Rejoin::Rebuild,
    };
    if last > mine.failed_at_events {
        Rejoin::Diverged
    } else if last.saturating_add(1) >= mine.failed_at_events {
        Rejoin::Recovery
    } else {
        Rejoin::Rebuild
    }
}

/// The one slot where `newest` records the leg uuid `older` carries (`None` when it records it
/// nowhere, or, in a damaged table, more than once).
pub fn slot_by_uuid(newest: &Superblock, older: &Superblock) -> Option<usize> {
    let own = older.own_uuid()?;
    let mut at = newest
        .legs
        .iter()
        .enumerate()
        .filter(|(_, l)| l.uuid == own)
        .map(|(s, _)| s);
    match (at.next(), at.next()) {
        (Some(s), None) => Some(s),
        _ => None,
    }
}

/// The copy with the highest `events`. Among equals (which normally carry the same fields
/// and leg table), the one most of them agree with, then the one whose leg table most of them
/// share, then the greatest encoding: any fixed order does, it only has to ignore arrival order.
fn pick_newest(sbs: &[&Superblock], valid: &[usize], bytes: &[Vec<u8>]) -> Option<usize> {
    let top = valid.iter().map(|&i| sbs[i].events).max()?;
    let tops: Vec<usize> = valid.iter().copied().filter(|&i| sbs[i].events == top).collect();
    let count = |same: &dyn Fn(&Superblock) -> bool| tops.iter().filter(|&&j| same(sbs[j])).count();
    tops.iter().copied().max_by_key(|&i| {
        let agree = count(&|o| sbs[i].disagreement(o).is_none());
        let table = count(&|o| sbs[i].legs == o.legs);
        (agree, table, &bytes[i])
    })
}

/// A leg mask from one flag per slot (at most `MAX_LEGS`, which fits a `u32`).
fn mask(flags: impl Iterator<Item = bool>) -> u32 {
    flags
        .enumerate()
        .filter(|&(i, f)| f && i < MAX_LEGS)
        .fold(0, |m, (i, _)| m | 1 << i)
}
