//! Taking a leg out of a mirror (hot-remove or RPC): failed at once for new I/O, released by
//! every core once its children there are back, then closed.

use std::os::raw::{c_int, c_void};
use std::sync::atomic::Ordering;

use spdk_sys as sys;

use super::error::Fail;
use super::ffi::{guard, noticelog};
use super::legs::close_leg;
use super::mirror::Mirror;
use super::submit::channel_of;
use super::teardown::Pin;

/// What a removal does when it is over.
type RemoveDone = Box<dyn FnOnce(Result<(), Fail>)>;

struct Removal {
    /// Held across the channel iteration: a delete meanwhile waits for it.
    mirror: Pin,
    leg: u32,
    done: RemoveDone,
}

/// Takes a leg out of the mirror: failed at once for new I/O, then each channel lets go of it
/// once its children there are back, then its bdev is released and closed.
pub fn remove_leg(m: &'static Mirror, leg: u32, why: &str, done: RemoveDone) {
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
    m.fail_leg(leg, why);
    let r = Box::into_raw(Box::new(Removal {
        mirror: Pin::new(m),
        leg,
        done,
    }));
    // SAFETY: our io_device; `r` is reclaimed in `removal_done`.
    unsafe {
        sys::spdk_for_each_channel(
            m.as_io_device(),
            Some(removal_on_channel),
            r as *mut c_void,
            Some(removal_done),
        )
    };
}

extern "C" fn removal_on_channel(i: *mut sys::spdk_io_channel_iter) {
    guard("mirror leg removal", (), || {
        // SAFETY: the iteration's context is our Removal; its channel is ours.
        unsafe {
            let r = &*(sys::spdk_io_channel_iter_get_ctx(i) as *const Removal);
            channel_of(sys::spdk_io_channel_iter_get_channel(i)).release_leg(r.leg, i);
        }
    })
}

extern "C" fn removal_done(i: *mut sys::spdk_io_channel_iter, status: c_int) {
    guard("mirror leg removal done", (), || {
        // SAFETY: boxed in `remove_leg`; this is the last use.
        let r = unsafe { Box::from_raw(sys::spdk_io_channel_iter_get_ctx(i) as *mut Removal) };
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
        let Removal { mirror, done, .. } = *r;
        done(if status == 0 {
            Ok(())
        } else {
            Err(Fail::plain(status, "leg removal failed"))
        });
        drop(mirror);
    })
}
