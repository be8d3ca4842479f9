//! Growing and shrinking the number of RAID1 copies (md's `--grow --raid-devices`).
//!
//! Growing adds empty slots (the superblock's leg table grows with `Removed` entries) and then
//! puts the given bdevs into them, each rebuilt in the background, one after the other, as
//! `bdev_mirror_add_base_bdev` would. Shrinking drops slots: like md's `raid1_reshape`, legs
//! in the dropped slots move down into empty ones first, so the copies that remain are never
//! touched; it is refused when more legs are present than slots remain. Both run as a reshape
//! (the mirror quiesced): RAID1 places every block at the same LBA on every leg, so the data
//! never moves.

use std::sync::atomic::Ordering;

use super::error::Fail;
use super::legs;
use super::mirror::Mirror;
use super::process::Kind;
use super::reshape;
use super::{join, uuid};
use crate::engine::ReadPolicy;
use crate::placement::{Geometry, GeometrySpec, Level, MAX_LEGS};
use crate::superblock::{LegEntry, LegRole};

/// What a change of the number of legs reports (on the app thread).
pub type Done = Box<dyn FnOnce(Result<(), Fail>)>;

/// Sets `m`'s number of legs to `num_legs`; on growth, `base_bdevs` fill new slots in order
/// (fewer than the new slots leaves the rest empty, as md's `--grow -n` without `--add` does).
pub fn set_num_legs(m: &'static Mirror, num_legs: u32, base_bdevs: Vec<String>, done: Done) {
    let geo = m.geo();
    let cur = m.num_legs();
    let checked = (|| {
        if geo.level() != Level::Raid1 {
            return Err(Fail::invalid(
                "num_legs",
                format!(
                    "mirror '{}' is {}: only raid1 changes its number of legs in place",
                    m.name(),
                    geo.level()
                ),
            ));
        }
        if !(2..=MAX_LEGS as u32).contains(&num_legs) {
            return Err(Fail::invalid(
                "num_legs",
                format!("must be from 2 to {MAX_LEGS}, got {num_legs}"),
            ));
        }
        if num_legs < cur && !base_bdevs.is_empty() {
            return Err(Fail::invalid("base_bdevs", "only a growing mirror takes new bdevs"));
        }
        if base_bdevs.len() as u32 > num_legs.saturating_sub(cur) {
            return Err(Fail::invalid(
                "base_bdevs",
                format!(
                    "{} bdevs for {} new slots",
                    base_bdevs.len(),
                    num_legs.saturating_sub(cur)
                ),
            ));
        }
        if num_legs > cur && m.persist.is_none() && (base_bdevs.len() as u32) < num_legs - cur {
            // Such a mirror lives on in save_config's create call, which names every leg.
            return Err(Fail::invalid(
                "base_bdevs",
                format!(
                    "mirror '{}' has no superblock, so every new slot needs a bdev ({} given for {})",
                    m.name(),
                    base_bdevs.len(),
                    num_legs - cur
                ),
            ));
        }
        // (The RPC refuses a name listed twice.)
        for b in &base_bdevs {
            legs::check_new_leg(m, b, "base_bdevs")?;
        }
        let present = m.legs().iter().filter(|l| l.present()).count() as u32;
        if num_legs < cur && present > num_legs {
            return Err(Fail::new(
                -libc::EBUSY,
                "num_legs",
                format!(
                    "{present} legs of '{}' are present; remove {} of them first",
                    m.name(),
                    present - num_legs
                ),
            ));
        }
        Ok(())
    })();
    if let Err(e) = checked {
        return done(Err(e));
    }
    if num_legs == cur {
        return done(Ok(()));
    }
    let what = if num_legs > cur { "grow" } else { "shrink" };
    reshape::reshape(
        m,
        what,
        Box::new(move |m| apply(m, num_legs)),
        Box::new(move |r| {
            if let Err(e) = r {
                return done(Err(e));
            }
            // Into the new slots, rebuilt one after the other (queued behind the first).
            for (slot, name) in (cur..).zip(base_bdevs) {
                let bdev = name.clone();
                join::join_leg(
                    m,
                    slot,
                    &bdev,
                    Kind::Rebuild,
                    true,
                    Box::new(move |r| {
                        if let Err(why) = r {
                            super::ffi::errlog!("mirror: new leg '{name}' could not join: {why}");
                        }
                    }),
                );
            }
            done(Ok(()))
        }),
    );
}

/// The change itself, with the mirror quiesced: nothing is changed unless all of it can be.
fn apply(m: &'static Mirror, num_legs: u32) -> Result<(), Fail> {
    let old = m.geo();
    let cur = m.num_legs();
    let geo = Geometry::new(&GeometrySpec {
        level: Level::Raid1,
        layout: None,
        legs: num_legs,
        chunk_bytes: Some(m.chunk_kb * 1024),
        block_size: old.block_size(),
        leg_blocks: old.leg_blocks(),
    })
    .map_err(|e| Fail::named(-libc::EINVAL, e))?;
    debug_assert_eq!(geo.data_blocks(), old.data_blocks(), "raid1 keeps its size");
    if num_legs > cur {
        for s in cur..num_legs {
            super::legs::ensure_pool(m, s)?;
        }
        for s in cur..num_legs {
            legs::clear_slot(m.slot(s));
        }
    } else {
        // md's raid1_reshape: the legs that stay move into the slots that stay (checked
        // before anything moves: there are enough empty ones).
        let movers: Vec<u32> = (num_legs..cur).filter(|&s| m.slot(s).present()).collect();
        let free: Vec<u32> = (0..num_legs).filter(|&s| !m.slot(s).present()).collect();
        if movers.len() > free.len() {
            return Err(Fail::new(-libc::EBUSY, "num_legs", "no empty slot to move a leg into"));
        }
        let mut policy = m.read_policy();
        for (&from, &to) in movers.iter().zip(&free) {
            legs::move_leg(m, from, to);
            if policy == ReadPolicy::Preferred(from) {
                policy = ReadPolicy::Preferred(to);
            }
        }
        // A preferred leg follows its bdev; one whose slot is gone is no preference any more.
        if let ReadPolicy::Preferred(p) = policy {
            if p >= num_legs {
                policy = ReadPolicy::default();
            }
        }
        if policy != m.read_policy() {
            m.set_read_policy(policy);
        }
    }
    if let Some(p) = &m.persist {
        let mut sb = p.superblock();
        let events = sb.events;
        sb.legs.resize(
            num_legs as usize,
            LegEntry {
                uuid: [0; 16],
                role: LegRole::Removed,
                failed_at_events: events,
            },
        );
        for e in sb.legs.iter_mut().skip(cur as usize) {
            e.uuid = uuid::random_uuid();
        }
        sb.layout = geo.layout();
        sb.events += 1;
    }
    m.set_geo(geo);
    m.set_num_legs(num_legs);
    for s in num_legs..cur {
        legs::clear_slot(m.slot(s));
    }
    m.leg_gen.fetch_add(1, Ordering::AcqRel);
    Ok(())
}
