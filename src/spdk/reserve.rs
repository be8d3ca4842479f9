//! The reserve threads: SPDK threads of the module's own, from which children that cannot get
//! an `spdk_bdev_io` are submitted (`rescue`) and metadata is written (`persist`). SPDK keeps a
//! cache of `spdk_bdev_io` per thread (`bdev_io_cache_size`); only a thread's own cache is sure
//! to be there when the layer above holds the rest of the shared pool, because nothing but
//! these I/O is submitted from it. The reserve used to be the mirror's own thread (the app
//! thread), whose cache anything else on that thread also takes: another bdev's examine
//! reading a mirror created meanwhile took it, that mirror's child then waited for it, and
//! every mirror stalled for good.
//!
//! One reserve per level (`level`: how many mirrors sit below a mirror's legs). An I/O from
//! level `h`'s reserve goes to a leg of a level-`h` mirror, which is a plain bdev or a mirror
//! of a lower level; what that lower mirror needs in turn (its own children's rescue, its
//! metadata) comes from its own, lower, reserve. So every I/O a reserve holds completes
//! without that reserve: with one reserve for all, a mirror over mirrors stalled at once (the
//! upper mirror's rescued child or metadata write held the one cached `spdk_bdev_io`, and the
//! lower mirror's own rescue or metadata, needed to complete it, waited for that same one).

use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

use spdk_sys as sys;

use super::callback::send_msg;
use super::ffi::errlog;
use super::leg::Leg;

/// Reserve threads, one per level; mirrors stacked deeper share the last.
pub const LEVELS: usize = 4;

static THREADS: [AtomicPtr<sys::spdk_thread>; LEVELS] = [const { AtomicPtr::new(ptr::null_mut()) }; LEVELS];

/// Level `level`'s reserve thread, if it was made (null before a leg of a mirror of that level
/// was opened, or if SPDK could not make it: the mirror's own thread serves then).
pub fn thread(level: usize) -> *mut sys::spdk_thread {
    THREADS[level.min(LEVELS - 1)].load(Ordering::Acquire)
}

/// Whether the calling thread is a reserve thread.
fn on_reserve_thread() -> bool {
    // SAFETY: plain query.
    let me = unsafe { sys::spdk_get_thread() };
    !me.is_null() && THREADS.iter().any(|t| t.load(Ordering::Acquire) == me)
}

/// Level `level`'s reserve thread, made now if it was not (on the app thread: a leg is being
/// opened).
fn thread_made(level: usize) -> *mut sys::spdk_thread {
    let level = level.min(LEVELS - 1);
    let t = thread(level);
    if !t.is_null() {
        return t;
    }
    let name = std::ffi::CString::new(format!("mirror_reserve{level}")).unwrap_or_default();
    // SAFETY: a name SPDK copies; no cpumask: any core.
    let t = unsafe { sys::spdk_thread_create(name.as_ptr(), ptr::null()) };
    if t.is_null() {
        errlog!("mirror: cannot make reserve thread {level}; the mirrors' own thread serves instead");
    }
    THREADS[level].store(t, Ordering::Release);
    t
}

/// The reserve threads' channels, by the thread and descriptor they were got for. Keyed by
/// descriptor, not by leg slot: a slot may hold another bdev before its old one's channel is
/// put.
static CHANNELS: Mutex<Vec<(usize, usize, usize)>> = Mutex::new(Vec::new());

fn channels() -> std::sync::MutexGuard<'static, Vec<(usize, usize, usize)>> {
    CHANNELS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The calling reserve thread's channel for `desc`, got now if it was not (null if SPDK has
/// none to give). A reserve thread only, with `desc` held open (`Leg::hold_desc`).
fn channel(desc: *mut sys::spdk_bdev_desc) -> *mut sys::spdk_io_channel {
    // SAFETY: plain query.
    let me = unsafe { sys::spdk_get_thread() } as usize;
    let mut l = channels();
    if let Some(&(_, _, ch)) = l.iter().find(|(t, d, _)| *t == me && *d == desc as usize) {
        return ch as *mut sys::spdk_io_channel;
    }
    // SAFETY: the descriptor is open and held; the channel is put by `release_channel`, on this
    // thread, before the descriptor is closed.
    let ch = unsafe { sys::spdk_bdev_get_io_channel(desc) };
    if !ch.is_null() {
        l.push((me, desc as usize, ch as usize));
    }
    ch
}

/// This thread's channel on `leg` (whose descriptor `desc` is held): a reserve thread's own
/// (`channel`), else the mirror thread's (`Leg::app_channel`). Null if none can be had now.
pub fn channel_here(leg: &Leg, desc: *mut sys::spdk_bdev_desc) -> *mut sys::spdk_io_channel {
    if on_reserve_thread() {
        channel(desc)
    } else {
        leg.app_channel()
    }
}

/// Gets level `level`'s reserve channel on `leg`, just opened, soon: SPDK makes a thread's
/// bdev management channel (its `spdk_bdev_io` cache) with its first channel, taking it from
/// the shared pool, which is still there now and may not be when the reserve is needed.
pub fn open_channel(leg: &Leg, level: usize) {
    let t = thread_made(level);
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

/// `desc` is about to be closed, with nothing of ours in flight on it: every reserve
/// thread's channel on it is put (on that thread; messages to a thread run in order, so this
/// runs before any channel is got there for a descriptor opened later at the same address).
pub fn release_channel(desc: *mut sys::spdk_bdev_desc) {
    if desc.is_null() {
        return;
    }
    for t in THREADS
        .iter()
        .map(|t| t.load(Ordering::Acquire))
        .filter(|t| !t.is_null())
    {
        let (tp, dp) = (t as usize, desc as usize);
        let put = move || {
            let mut l = channels();
            if let Some(i) = l.iter().position(|(t, d, _)| *t == tp && *d == dp) {
                let (_, _, ch) = l.swap_remove(i);
                // SAFETY: got on this thread; nothing uses it any more.
                unsafe { sys::spdk_put_io_channel(ch as *mut sys::spdk_io_channel) }
            }
        };
        if send_msg(t, put).is_err() {
            errlog!("mirror: cannot reach a reserve thread to put a channel");
        }
    }
}

/// The module stops (every mirror is gone, their channels put): the reserve threads exit.
pub fn stop() {
    for slot in &THREADS {
        let t = slot.swap(ptr::null_mut(), Ordering::AcqRel);
        if t.is_null() {
            continue;
        }
        let exit = || {
            // SAFETY: runs on the reserve thread itself, as SPDK requires.
            unsafe { sys::spdk_thread_exit(sys::spdk_get_thread()) };
        };
        if send_msg(t, exit).is_err() {
            errlog!("mirror: cannot stop a reserve thread");
        }
    }
}
