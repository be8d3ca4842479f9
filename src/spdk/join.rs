//! A leg joining a mirror (a new leg rebuilt, a returning one recovered), and what follows the
//! end of a background process (a waiting delete, the next queued leg, a pending resize).

use std::sync::atomic::Ordering;

use spdk_sys as sys;

use super::error::Fail;
use super::ffi::errlog;
use super::leg::Leg;
use super::leg_events::open_leg;
use super::legs::{attach_leg, unfit_leg};
use super::mirror::{reaches, Mirror, Queued};
use super::process::{self, Kind};
use super::removal::remove_leg;
use super::teardown::{finish_destruct, unregister};
use super::uuid::random_uuid;

/// A process stopped: finishes a deletion that waited for it, or recovers the next queued leg.
pub fn process_finished(m: &'static Mirror) {
    if m.destruct_pending.swap(false, Ordering::AcqRel) {
        return finish_destruct(m);
    }
    if m.deleting.load(Ordering::Acquire) {
        let waiting = m.unregister_after_process.lock().ok().and_then(|mut u| u.take());
        if let Some(done) = waiting {
            unregister(m, done);
        }
        return;
    }
    let next = m.queued.lock().ok().and_then(|mut q| q.pop_front());
    if let Some(q) = next {
        let bdev = q.bdev.clone();
        join_leg(
            m,
            q.slot,
            &q.bdev,
            q.kind,
            true,
            Box::new(move |r| {
                // Its examine-time caller is long gone: the log is where it is told.
                if let Err(e) = r {
                    errlog!("mirror {}: leg {bdev} cannot rejoin: {e}", m.name());
                }
            }),
        );
    }
    if !m.process_active.load(Ordering::Acquire) && m.resize_pending.swap(false, Ordering::AcqRel) {
        super::resize::leg_resized(m);
    }
}

/// Puts bdev `name` into slot `slot` and recovers it: `Recovery` copies the bitmap's missed
/// regions (a leg that returns), `Rebuild` everything (a new leg). While a process runs it is
/// queued when `queue` (a leg found at examine), else refused.
///
/// Everything that can fail is done before the mirror changes: the process slot and its buffer
/// are reserved first, the bdev opened and checked next; only an attach to every core can still
/// fail afterwards, and then the leg is taken out again. A call that fails changes nothing.
pub fn join_leg(
    m: &'static Mirror,
    slot: u32,
    name: &str,
    kind: Kind,
    queue: bool,
    done: Box<dyn FnOnce(Result<(), Fail>)>,
) {
    if queue && m.process_active.load(Ordering::Acquire) {
        if let Ok(mut q) = m.queued.lock() {
            q.push_back(Queued {
                slot,
                bdev: name.to_string(),
                kind,
            });
        }
        return done(Ok(()));
    }
    if reaches(name, m.name()) {
        return done(Err(Fail::invalid(
            "base_bdev",
            format!("'{name}' is the mirror '{}' itself or is built on it", m.name()),
        )));
    }
    if m.slot(slot).present() {
        return done(Err(Fail::new(
            -libc::EBUSY,
            "base_bdev",
            format!("slot {slot} of {} was filled meanwhile", m.name()),
        )));
    }
    let reserved = match process::reserve(m, kind, Some(slot)) {
        Ok(r) => r,
        Err(e) => return done(Err(Fail::new(-libc::EBUSY, "name", format!("{}: {e}", m.name())))),
    };
    let leg: *const Leg = m.slot(slot);
    let (bdev, desc) = match open_leg(leg, name) {
        Ok(x) => x,
        Err(e) => return done(Err(e.in_field("base_bdev"))),
    };
    if let Some(msg) = unfit_leg(
        bdev,
        name,
        m.geo().block_size(),
        m.data_offset + m.geo().used_leg_blocks(),
    ) {
        // SAFETY: claimed and opened just above, on this thread.
        unsafe {
            sys::spdk_bdev_module_release_bdev(bdev);
            sys::spdk_bdev_close(desc);
        }
        return done(Err(Fail::invalid("base_bdev", msg)));
    }
    let old_name = m.slot(slot).name();
    let old_uuid = m.persist.as_ref().map(|p| p.superblock().legs[slot as usize].uuid);
    if let (Some(p), Kind::Rebuild) = (&m.persist, kind) {
        // A new member: a new identity in the leg table.
        p.superblock().legs[slot as usize].uuid = random_uuid();
    }
    attach_leg(
        m,
        slot,
        bdev,
        desc,
        name,
        Box::new(move |rc| {
            if rc != 0 {
                // Back as it was: the slot's identity, and no leg in it.
                if let (Some(p), Some(u)) = (&m.persist, old_uuid) {
                    p.superblock().legs[slot as usize].uuid = u;
                }
                remove_leg(
                    m,
                    slot,
                    "could not be attached to every core",
                    Box::new(move |_| {
                        let l = m.slot(slot);
                        if let Ok(mut n) = l.name.lock() {
                            *n = old_name;
                        }
                        drop(reserved);
                        done(Err(Fail::new(
                            rc,
                            "base_bdev",
                            "could not attach the leg on every core",
                        )))
                    }),
                );
                return;
            }
            m.request_metadata_write();
            // Every core writes the leg now, so what it missed can no longer grow; writes still
            // in flight that skipped it are waited for at the process's end (`quiesce_all`).
            let ranges = match (&m.persist, kind) {
                (Some(p), Kind::Recovery) => p.missed_ranges(m.geo().data_blocks(), None),
                _ => vec![(0, m.geo().data_blocks())],
            };
            reserved.start(ranges, None);
            done(Ok(()))
        }),
    );
}
