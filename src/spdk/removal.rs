//! Taking a leg out of a mirror (hot-remove or RPC): failed at once for new I/O, released by
//! every core once its children there are back, then closed.

use std::os::raw::c_int;
use std::sync::atomic::Ordering;

use spdk_sys as sys;

use super::callback::{for_each_channel, PerChannel, Visit};
use super::error::Fail;
use super::farewell;
use super::ffi::noticelog;
use super::legs::close_leg;
use super::mirror::Mirror;
use super::persist;
use super::submit::channel_of;
use super::teardown::Pin;
use crate::superblock::LegRole;

/// What a removal does when it is over.
type RemoveDone = Box<dyn FnOnce(Result<(), Fail>)>;

struct Removal {
    /// Held across the channel iteration: a delete meanwhile waits for it.
    mirror: Pin,
    leg: u32,
    /// The leg's own superblock is to record its removal before it is let go (`farewell`).
    farewell: bool,
    done: RemoveDone,
}

/// Takes a leg out of the mirror: failed at once for new I/O, then each channel lets go of it
/// once its children there are back, then its bdev is released and closed.
pub fn remove_leg(m: &'static Mirror, leg: u32, why: &str, done: RemoveDone) {
    remove(m, leg, why, false, done)
}

/// `remove_leg` for `bdev_mirror_remove_base_bdev`: the slot is recorded as removed, not
/// failed (`Persist::mark_removed`), so the leg does not rejoin by itself.
pub fn remove_leg_on_request(m: &'static Mirror, leg: u32, done: RemoveDone) {
    remove(m, leg, "removed over RPC", true, done)
}

fn remove(m: &'static Mirror, leg: u32, why: &str, on_request: bool, done: RemoveDone) {
    let l = m.slot(leg);
    if !l.present() {
        return done(Err(Fail::new(
            -libc::ENODEV,
            "base_bdev",
            format!("leg {leg} of {} is not present", m.name()),
        )));
    }
    if l.removing.swap(true, Ordering::AcqRel) {
        return done(Err(Fail::new(
            -libc::EBUSY,
            "base_bdev",
            format!("'{}' is already being removed", l.name()),
        )));
    }
    // A leg taken out while it held the mirror's data (in sync, or failed since) is told so
    // (`farewell`); one being rebuilt already says so in its own superblock.
    let mut farewell = false;
    if on_request {
        if let Some(p) = &m.persist {
            farewell = p
                .superblock()
                .legs
                .get(leg as usize)
                .is_some_and(|e| matches!(e.role, LegRole::Active | LegRole::Failed));
            p.mark_removed(leg as usize);
        }
    }
    m.fail_leg(leg, why);
    for_each_channel(
        m.as_io_device(),
        Removal {
            mirror: Pin::new(m),
            leg,
            farewell,
            done,
        },
    );
}

impl PerChannel for Removal {
    const WHAT: &'static str = "mirror leg removal";

    fn on_channel(&mut self, ch: *mut sys::spdk_io_channel, iter: *mut sys::spdk_io_channel_iter) -> Visit {
        // SAFETY: a channel of the mirror's io_device; it continues `iter` once its children
        // on the leg are back.
        unsafe { channel_of(ch) }.release_leg(self.leg, iter);
        Visit::Held
    }

    fn on_panic(&mut self) -> Visit {
        // The iteration stops here for good: closing a leg that a core may still use would be
        // worse than a removal that never ends.
        Visit::Held
    }

    fn done(self: Box<Self>, status: c_int) {
        removal_done(*self, status)
    }
}

/// Every core has let go of the leg: close it, after its farewell if it gets one, which waits
/// for the other legs to record the removal first (so a crash between the two never leaves
/// the leg's own superblock the only one that knows).
fn removal_done(r: Removal, status: c_int) {
    if !r.farewell || status != 0 {
        return close_removed(r, status);
    }
    let (m, leg) = (r.mirror.mirror(), r.leg);
    persist::write(
        m,
        Some(Box::new(move |_| {
            farewell::farewell(m, leg, Box::new(move || close_removed(r, status)))
        })),
    );
}

fn close_removed(r: Removal, status: c_int) {
    let m = r.mirror.mirror();
    let l = m.slot(r.leg);
    close_leg(l);
    l.write_only.store(false, Ordering::Release);
    l.removing.store(false, Ordering::Release);
    m.leg_gen.fetch_add(1, Ordering::AcqRel);
    noticelog!(
        "mirror {}: leg {} ({}) removed; the mirror is {}",
        m.name(),
        r.leg,
        l.name(),
        m.state()
    );
    let Removal { mirror, done, .. } = r;
    done(if status == 0 {
        Ok(())
    } else {
        Err(Fail::plain(status, "leg removal failed"))
    });
    drop(mirror);
}
