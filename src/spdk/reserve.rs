//! The reserve thread: an SPDK thread of the module's own, from which children that cannot get
//! an `spdk_bdev_io` are submitted (`rescue`). SPDK keeps a cache of `spdk_bdev_io` per thread
//! (`bdev_io_cache_size`); only this thread's is sure to be there when the layer above holds
//! the rest of the shared pool, because nothing but these children is submitted from it. The
//! reserve used to be the mirror's own thread (the app thread), whose cache anything else on
//! that thread also takes: another bdev's examine reading a mirror created meanwhile took it,
//! that mirror's child then waited for it, and every mirror stalled for good.

use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

use spdk_sys as sys;

use super::callback::send_msg;
use super::ffi::errlog;
use super::leg::Leg;

static THREAD: AtomicPtr<sys::spdk_thread> = AtomicPtr::new(ptr::null_mut());

/// The reserve thread, if it was made (null before the first leg was opened, or if SPDK could
/// not make it: the mirror's own thread serves then).
pub fn thread() -> *mut sys::spdk_thread {
    THREAD.load(Ordering::Acquire)
}

/// The reserve thread, made now if it was not (on the app thread: a leg is being opened).
fn thread_made() -> *mut sys::spdk_thread {
    let t = thread();
    if !t.is_null() {
        return t;
    }
    // SAFETY: a name SPDK copies; no cpumask: any core.
    let t = unsafe { sys::spdk_thread_create(c"mirror_reserve".as_ptr(), ptr::null()) };
    if t.is_null() {
        errlog!("mirror: cannot make the reserve thread; the mirrors' own thread serves instead");
    }
    THREAD.store(t, Ordering::Release);
    t
}

/// The reserve thread's channels, by the descriptor they were got for (reserve thread only).
/// Keyed by descriptor, not by leg slot: a slot may hold another bdev before its old one's
/// channel is put.
static CHANNELS: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

fn channels() -> std::sync::MutexGuard<'static, Vec<(usize, usize)>> {
    CHANNELS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The reserve thread's channel for `desc`, got now if it was not (null if SPDK has none to
/// give). Reserve thread only, with `desc` held open (`Leg::hold_desc`).
pub fn channel(desc: *mut sys::spdk_bdev_desc) -> *mut sys::spdk_io_channel {
    let mut l = channels();
    if let Some(&(_, ch)) = l.iter().find(|(d, _)| *d == desc as usize) {
        return ch as *mut sys::spdk_io_channel;
    }
    // SAFETY: the descriptor is open and held; the channel is put by `release_channel`, on this
    // thread, before the descriptor is closed.
    let ch = unsafe { sys::spdk_bdev_get_io_channel(desc) };
    if !ch.is_null() {
        l.push((desc as usize, ch as usize));
    }
    ch
}

/// Gets the reserve thread's channel on `leg`, just opened, soon: SPDK makes a thread's bdev
/// management channel (its `spdk_bdev_io` cache) with its first channel, taking it from the
/// shared pool, which is still there now and may not be when the reserve is needed.
pub fn open_channel(leg: &Leg) {
    let t = thread_made();
    if t.is_null() {
        return;
    }
    // Held until the thread has it: the leg is not closed (nor its mirror freed) meanwhile.
    let Some(desc) = leg.hold_desc() else {
        return;
    };
    let (lp, dp) = (leg as *const Leg as usize, desc as usize);
    let got = send_msg(t, move || {
        channel(dp as *mut sys::spdk_bdev_desc);
        // SAFETY: the leg stays while its descriptor is held (`Leg::hold_desc`).
        unsafe { (*(lp as *const Leg)).app_io_done() };
    });
    if got.is_err() {
        leg.app_io_done();
    }
}

/// `desc` is about to be closed, with nothing of ours in flight on it: its reserve channel,
/// if it has one, is put (on the reserve thread; messages to it run in order, so this runs
/// before any channel is got for a descriptor opened later at the same address).
pub fn release_channel(desc: *mut sys::spdk_bdev_desc) {
    let t = thread();
    if t.is_null() || desc.is_null() {
        return;
    }
    let dp = desc as usize;
    let put = move || {
        let mut l = channels();
        if let Some(i) = l.iter().position(|(d, _)| *d == dp) {
            let (_, ch) = l.swap_remove(i);
            // SAFETY: got on this thread; nothing uses it any more.
            unsafe { sys::spdk_put_io_channel(ch as *mut sys::spdk_io_channel) }
        }
    };
    if send_msg(t, put).is_err() {
        errlog!("mirror: cannot reach the reserve thread to put a channel");
    }
}

/// The module stops (every mirror is gone, their channels put): the reserve thread exits.
pub fn stop() {
    let t = THREAD.swap(ptr::null_mut(), Ordering::AcqRel);
    if t.is_null() {
        return;
    }
    let exit = || {
        // SAFETY: runs on the reserve thread itself, as SPDK requires.
        unsafe { sys::spdk_thread_exit(sys::spdk_get_thread()) };
    };
    if send_msg(t, exit).is_err() {
        errlog!("mirror: cannot stop the reserve thread");
    }
}
