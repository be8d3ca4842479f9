//! One leg's part of a metadata write: issued from the reserve thread of the mirror's level
//! (`reserve`; the mirror's own thread if SPDK gave none), then flushed where the leg has a
//! volatile write cache, its result handed back to the mirror's thread.
//!
//! Why not from the mirror's thread (the app thread), as it was: whatever reaches a mirror from
//! that thread holds the thread's one cached `spdk_bdev_io` while the mirror writes its
//! metadata. An upper mirror's own metadata write into a lower mirror is such an I/O: the lower
//! mirror, its region clean, then wrote its metadata from the same thread, found the cache held
//! by that write and the pool empty, and waited there for good (a mirror over mirrors, pool 16,
//! after the regions went clean). A level's reserve issues only I/O to bdevs below that level,
//! whose metadata goes from a lower reserve, so what it holds always comes back.

use std::os::raw::{c_int, c_void};
use std::ptr;

use spdk_sys as sys;

use super::callback::{end_chain, send_msg, start_chain};
use super::ffi::{errlog, guard};
use super::leg::wait_for_io;
use super::mirror::Mirror;
use super::reserve;

/// Called on the mirror's thread with whether the leg's write (and flush) succeeded.
pub type Written = Box<dyn FnOnce(bool)>;

struct LegWrite {
    m: &'static Mirror,
    leg: u32,
    /// Held open (`Leg::hold_desc`) from `write_leg` until the result goes back.
    desc: *mut sys::spdk_bdev_desc,
    buf: *mut c_void,
    blocks: u64,
    flushing: bool,
    wait: sys::spdk_bdev_io_wait_entry,
    retry: *mut sys::spdk_poller,
    /// Set once the I/O is over: the result waiting to reach the mirror's thread.
    result: Option<bool>,
    done: Option<Written>,
}

/// Writes `blocks` blocks of `buf` at the start of leg `leg` (mirror thread). `done` runs on
/// the mirror's thread; the buffer stays the caller's and must live until then.
pub fn write_leg(m: &'static Mirror, leg: u32, buf: *mut c_void, blocks: u64, done: Written) {
    let Some(desc) = m.slot(leg).hold_desc() else {
        return done(false);
    };
    let w = start_chain(LegWrite {
        m,
        leg,
        desc,
        buf,
        blocks,
        flushing: false,
        wait: sys::spdk_bdev_io_wait_entry::default(),
        retry: ptr::null_mut(),
        result: None,
        done: Some(done),
    });
    let t = reserve::thread(m.level());
    let wp = w as usize;
    if t.is_null() || send_msg(t, move || issue(wp as *mut LegWrite)).is_err() {
        issue(w);
    }
}

/// Submits the write (or its flush) from this thread: a reserve thread, or the mirror's.
fn issue(w: *mut LegWrite) {
    // SAFETY: ours until `finish` hands it back.
    let lw = unsafe { &mut *w };
    let leg = lw.m.slot(lw.leg);
    let ch = reserve::channel_here(leg, lw.desc);
    if ch.is_null() {
        // The pool is empty and this thread has no channel on the leg yet: no fault of the
        // leg's; try again shortly.
        return later(w);
    }
    let arg = w as *mut c_void;
    // SAFETY: the descriptor is held open, the channel is this thread's, the buffer holds
    // `blocks` blocks and lives until `done`.
    let rc = unsafe {
        if lw.flushing {
            sys::spdk_bdev_flush_blocks(lw.desc, ch, 0, lw.blocks, Some(io_done), arg)
        } else {
            sys::spdk_bdev_write_blocks(lw.desc, ch, lw.buf, 0, lw.blocks, Some(io_done), arg)
        }
    };
    extern "C" fn retry(arg: *mut c_void) {
        guard("mirror metadata retry", (), || issue(arg as *mut LegWrite))
    }
    // On -ENOMEM: I/O of this thread is in flight (on a reserve, only I/O that comes back
    // without it), and its return wakes this.
    // SAFETY: the wait entry lives in the LegWrite, which waits for it.
    if rc != 0 && !(rc == -libc::ENOMEM && unsafe { wait_for_io(leg.bdev(), ch, &mut lw.wait, retry, arg) }) {
        finish(w, false);
    }
}

extern "C" fn io_done(bdev_io: *mut sys::spdk_bdev_io, success: bool, arg: *mut c_void) {
    guard("mirror metadata write", (), || {
        // SAFETY: a completed I/O of ours; freed here, on its thread.
        unsafe { sys::spdk_bdev_free_io(bdev_io) };
        let w = arg as *mut LegWrite;
        // SAFETY: ours until `finish`.
        let lw = unsafe { &mut *w };
        // A volatile write cache must not hold the bitmap: flush it where the leg has one.
        // SAFETY: the leg's bdev is open (held).
        if success && !lw.flushing && unsafe { sys::spdk_bdev_has_write_cache(lw.m.slot(lw.leg).bdev()) } {
            lw.flushing = true;
            return issue(w);
        }
        finish(w, success);
    })
}

/// The I/O is over: the leg is let go and the result goes to the mirror's thread.
fn finish(w: *mut LegWrite, success: bool) {
    // SAFETY: ours.
    let lw = unsafe { &mut *w };
    lw.m.slot(lw.leg).app_io_done();
    lw.result = Some(success);
    back(w);
}

fn back(w: *mut LegWrite) {
    // SAFETY: ours.
    let m = unsafe { (*w).m };
    // SAFETY: plain query.
    if unsafe { sys::spdk_get_thread() } == m.thread {
        return written(w);
    }
    let wp = w as usize;
    if send_msg(m.thread, move || written(wp as *mut LegWrite)).is_err() {
        // No message to be had now: try again shortly from here.
        later(w);
    }
}

/// On the mirror's thread: the caller's `done`.
fn written(w: *mut LegWrite) {
    // SAFETY: the chain's last step.
    let mut lw = unsafe { end_chain(w) };
    if let Some(done) = lw.done.take() {
        done(lw.result.unwrap_or(false));
    }
}

/// Runs the next step (`issue`, or `back` once the result is set) in a millisecond, from this
/// thread (a one-shot poller).
fn later(w: *mut LegWrite) {
    extern "C" fn again(arg: *mut c_void) -> c_int {
        guard("mirror metadata retry", sys::SPDK_POLLER_BUSY as c_int, || {
            let w = arg as *mut LegWrite;
            // SAFETY: ours; the poller is its own, on this thread.
            let lw = unsafe { &mut *w };
            // SAFETY: as above.
            unsafe { sys::spdk_poller_unregister(&mut lw.retry) };
            if lw.result.is_some() {
                back(w);
            } else {
                issue(w);
            }
            sys::SPDK_POLLER_BUSY as c_int
        })
    }
    // SAFETY: the LegWrite stays ours until `written`; the poller runs on this thread.
    unsafe {
        (*w).retry = sys::spdk_poller_register(Some(again), w as *mut c_void, 1000);
        if (*w).retry.is_null() {
            errlog!("mirror {}: cannot schedule a metadata write again", (*w).m.name());
            if (*w).result.is_none() {
                finish(w, false);
            }
        }
    }
}
