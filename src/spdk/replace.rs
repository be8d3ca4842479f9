//! Replacing a leg while it keeps serving (md's `--replace`): the mirror is never degraded on
//! the way.
//!
//! 1. A reshape puts the new bdev into the replacement slot (the one after the legs) and tells
//!    every engine to mirror each write of the replaced leg onto it, at the same leg LBA.
//! 2. A `replace` process copies every block the replaced leg holds onto it, window by window
//!    under a range quiesce (as rebuilds do), reading any in-sync copy.
//! 3. A second reshape swaps: the new bdev takes the old one's slot with a new identity in the
//!    superblock, written before I/O resumes; the old bdev's superblock is zeroed (`farewell`:
//!    found alone later it would pass for a member), then it is closed and released.
//!
//! If the replacement fails, is removed (hot-removed, or `bdev_mirror_remove_base_bdev` with its
//! name: `stop`), or the copy stops, the replacement is dropped and the mirror stays as it was.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use super::error::Fail;
use super::farewell;
use super::ffi::{errlog, noticelog};
use super::leg_events;
use super::legs;
use super::mirror::{Mirror, NO_REPLACEMENT};
use super::process::{self, Kind};
use super::reshape;
use super::uuid;

pub type Done = Box<dyn FnOnce(Result<(), Fail>)>;

/// Starts replacing leg `leg` of `m` with bdev `new_name`; `done` once the copy has started.
pub fn replace(m: &'static Mirror, leg: u32, new_name: String, done: Done) {
    let l = m.slot(leg);
    if !l.in_sync() {
        return done(Err(Fail::invalid(
            "base_bdev",
            format!(
                "'{}' is {}; only an in-sync leg is replaced (remove it and add the new bdev instead)",
                l.name(),
                l.state()
            ),
        )));
    }
    if m.num_legs() as usize >= crate::placement::MAX_LEGS {
        return done(Err(Fail::new(
            -libc::ENOSPC,
            "name",
            "a mirror of the most legs has no slot for a replacement",
        )));
    }
    if let Err(e) = legs::check_new_leg(m, &new_name, "new_base_bdev") {
        return done(Err(e));
    }
    let name2 = new_name.clone();
    reshape::reshape(
        m,
        "replacement start",
        Box::new(move |m| attach(m, leg, &name2)),
        Box::new(move |r| {
            if let Err(e) = r {
                return done(Err(e));
            }
            let r = m.replacement_slot();
            let started = process::start(
                m,
                Kind::Replace,
                Some(r),
                vec![(0, m.geo().data_blocks())],
                Some(Box::new(move |res| copied(m, leg, res.map(|_| ())))),
            );
            match started {
                Ok(()) => done(Ok(())),
                Err(why) => {
                    cancel(m, &why.to_string());
                    done(Err(why.in_field("name")))
                }
            }
        }),
    );
}

/// Opens the new bdev into the replacement slot (mirror quiesced).
fn attach(m: &'static Mirror, leg: u32, name: &str) -> Result<(), Fail> {
    if !m.slot(leg).in_sync() {
        return Err(Fail::invalid("base_bdev", "the leg left the mirror meanwhile"));
    }
    let r = m.replacement_slot();
    super::legs::ensure_pool(m, r)?;
    let slot = m.slot(r);
    let (bdev, desc) = leg_events::open_leg(slot, name).map_err(|e| e.in_field("new_base_bdev"))?;
    legs::fill_slot(slot, name, bdev, desc);
    m.replacing.store(leg, Ordering::Release);
    noticelog!(
        "mirror {}: replacing leg {leg} ({}) with {name}",
        m.name(),
        m.slot(leg).name()
    );
    Ok(())
}

/// The copy ended: swap on success, else drop the replacement.
fn copied(m: &'static Mirror, leg: u32, res: Result<(), Fail>) {
    if let Err(why) = res {
        return cancel(m, &why.to_string());
    }
    // The replaced bdev, taken out by the swap still open, for its superblock to be zeroed.
    let retired = Rc::new(Cell::new(None));
    let kept = retired.clone();
    reshape::reshape(
        m,
        "replacement",
        Box::new(move |m| swap(m, leg, &kept)),
        Box::new(move |r| {
            if let Some(old) = retired.take() {
                farewell::wipe_retired(m, old, Box::new(|| {}));
            }
            if let Err(why) = r {
                cancel(m, &why.to_string());
            }
        }),
    );
}

/// The replacement takes the replaced leg's slot (mirror quiesced); the replaced bdev goes to
/// `retired`, still open.
fn swap(m: &'static Mirror, leg: u32, retired: &Cell<Option<legs::Retired>>) -> Result<(), Fail> {
    let r = m.replacement_slot();
    let new = m.slot(r);
    if !new.present() || new.failed.load(Ordering::Acquire) {
        return Err(Fail::new(-libc::EIO, "new_base_bdev", "the replacement failed"));
    }
    let old_name = m.slot(leg).name();
    if m.slot(leg).present() {
        retired.set(Some(legs::retire_slot(m, leg)));
    }
    legs::move_leg(m, r, leg);
    let l = m.slot(leg);
    l.write_only.store(false, Ordering::Release);
    l.failed.store(false, Ordering::Release);
    if let Some(p) = &m.persist {
        // A new member: a new identity, so the old bdev's superblock can never pass for it.
        let mut sb = p.superblock();
        sb.legs[leg as usize].uuid = uuid::random_uuid();
        sb.legs[leg as usize].role = crate::superblock::LegRole::Active;
        sb.legs[leg as usize].failed_at_events = 0;
        sb.events += 1;
    }
    m.replacing.store(NO_REPLACEMENT, Ordering::Release);
    noticelog!("mirror {}: leg {leg}: {old_name} replaced by {}", m.name(), l.name());
    Ok(())
}

/// Stops the running replace onto bdev slot `replacement_slot()` (the RPC's removal of the
/// replacement): it fails, as a hot-removal fails it, so the copy stops and `cancel` drops it;
/// `done` is answered then, once the bdev is released. The replaced leg stays as it was.
pub fn stop(m: &'static Mirror, done: Done) {
    if let Ok(mut w) = m.replacement_stopped.lock() {
        w.push(done);
    }
    m.fail_leg(m.replacement_slot(), "removed over RPC");
}

/// Answers the RPCs waiting for the replacement to be dropped (`stop`).
fn answer_stopped(m: &'static Mirror, r: &Result<(), Fail>) {
    let waiting = m
        .replacement_stopped
        .lock()
        .map(|mut w| std::mem::take(&mut *w))
        .unwrap_or_default();
    for done in waiting {
        done(r.clone());
    }
}

/// Drops the replacement (after a failed copy or swap); the mirror keeps its legs.
fn cancel(m: &'static Mirror, why: &str) {
    errlog!("mirror {}: replacement abandoned: {why}", m.name());
    if m.replacing().is_none() {
        return answer_stopped(m, &Ok(()));
    }
    reshape::reshape(
        m,
        "replacement cancel",
        Box::new(|m| {
            let r = m.replacement_slot();
            if m.slot(r).present() {
                legs::drop_slot(m, r);
            }
            legs::clear_slot(m.slot(r));
            m.replacing.store(NO_REPLACEMENT, Ordering::Release);
            Ok(())
        }),
        Box::new(move |r| {
            if let Err(why) = &r {
                // Deleting: the slot is closed with the mirror.
                errlog!("mirror {}: could not drop the replacement: {why}", m.name());
            }
            answer_stopped(m, &r);
        }),
    );
}
