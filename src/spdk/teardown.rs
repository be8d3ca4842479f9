//! A mirror going away: delete (zeroing its superblocks), SPDK's `destruct`, the io_device's
//! end, management calls' pins that hold it meanwhile, and the module's shutdown.

use std::os::raw::{c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use spdk_sys as sys;

use super::callback::{into_arg, take_arg};
use super::ffi::{guard, noticelog};
use super::legs::free_legs;
use super::mirror::{all, registry_remove, DeleteDone, Mirror};
use super::persist;

/// Starts deleting a mirror; `done(rc)` runs when it is gone. A running process stops first:
/// the bdev layer tears the bdev down (its locks included) before it calls `destruct`, so no
/// range may be quiesced, or about to be, once the bdev is unregistered.
pub fn delete(mirror: &'static Mirror, done: DeleteDone) {
    mirror.deleting.store(true, Ordering::Release);
    mirror.wipe.store(true, Ordering::Release);
    if mirror.process_active.load(Ordering::Acquire) {
        if let Ok(mut u) = mirror.unregister_after_process.lock() {
            *u = Some(done);
            return;
        }
    }
    unregister(mirror, done);
}

pub fn unregister(mirror: &'static Mirror, done: DeleteDone) {
    let arg = into_arg(done);
    let b = mirror.bdev_ptr();
    // SAFETY: the bdev is registered; `arg` is reclaimed in the callback.
    unsafe { sys::spdk_bdev_unregister(b, Some(unregistered), arg) };
}

extern "C" fn unregistered(arg: *mut c_void, rc: c_int) {
    guard("mirror delete", (), || {
        // SAFETY: boxed in `delete`.
        let done = unsafe { take_arg::<DeleteDone>(arg) };
        done(rc);
    })
}

pub extern "C" fn destruct(ctx: *mut c_void) -> c_int {
    guard("mirror destruct", 0, || {
        let m = ctx as *const Mirror;
        registry_remove(m);
        // SAFETY: `ctx` is a live mirror.
        let mirror = unsafe { &*m };
        mirror.deleting.store(true, Ordering::Release);
        if mirror.process_active.load(Ordering::Acquire) {
            // The process sees `deleting`, stops, and calls `process_finished`.
            mirror.destruct_pending.store(true, Ordering::Release);
        } else {
            finish_destruct(mirror);
        }
        1 // asynchronous: spdk_bdev_destruct_done follows
    })
}

/// The last metadata write (a clean bitmap, or zeroed superblocks after a delete), then the
/// io_device goes once no management call holds the mirror.
pub fn finish_destruct(m: &'static Mirror) {
    let wipe = m.wipe.load(Ordering::Acquire);
    persist::close(
        m,
        wipe,
        Box::new(move || {
            if m.pins.load(Ordering::Acquire) == 0 {
                unregister_io_device(m);
            } else {
                m.unregister_waiting.store(true, Ordering::Release);
            }
        }),
    );
}

fn unregister_io_device(m: &Mirror) {
    // SAFETY: our io_device; freed in `io_device_gone` once every channel is destroyed.
    unsafe { sys::spdk_io_device_unregister(m.as_io_device(), Some(io_device_gone)) };
}

/// A management call's hold on a mirror across asynchronous steps (app thread): the mirror is
/// not freed while one exists, so the reference stays valid even if it is deleted meanwhile
/// (check `deleting` before acting on it).
pub struct Pin(&'static Mirror);

impl Pin {
    pub fn new(m: &'static Mirror) -> Pin {
        m.pins.fetch_add(1, Ordering::AcqRel);
        Pin(m)
    }

    pub fn mirror(&self) -> &'static Mirror {
        self.0
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let m = self.0;
        if m.pins.fetch_sub(1, Ordering::AcqRel) == 1 && m.unregister_waiting.swap(false, Ordering::AcqRel) {
            unregister_io_device(m);
        }
    }
}

extern "C" fn io_device_gone(dev: *mut c_void) {
    guard("mirror free", (), || {
        let m = dev as *mut Mirror;
        if kicks_in_flight(dev) {
            return;
        }
        // SAFETY: no channel is left; nobody else refers to the mirror now.
        unsafe {
            free_legs(&mut *m);
            noticelog!(
                "mirror {}: {}",
                (*m).name(),
                if (*m).wipe.load(Ordering::Acquire) {
                    "deleted"
                } else {
                    "stopped"
                }
            );
            sys::spdk_bdev_destruct_done(&mut (*m).bdev, 0);
            drop(Box::from_raw(m));
        }
    })
}

/// Frees a mirror whose bdev never registered, once no metadata kick is on its way to it.
pub extern "C" fn free_unregistered(dev: *mut c_void) {
    guard("mirror cleanup", (), || {
        if kicks_in_flight(dev) {
            return;
        }
        // SAFETY: leaked in `create`, never registered; its writer is closed and no message
        // refers to it any more.
        let mut m = unsafe { Box::from_raw(dev as *mut Mirror) };
        free_legs(&mut m);
    })
}

/// Whether a metadata kick is still on its way to mirror `dev`; if so, asks the thread to call
/// `free_unregistered`/`io_device_gone` again after it (messages run in order).
fn kicks_in_flight(dev: *mut c_void) -> bool {
    // SAFETY: the mirror is live until the caller frees it.
    let m = unsafe { &*(dev as *const Mirror) };
    let pending = m.persist.as_ref().is_some_and(|p| p.msgs.load(Ordering::Acquire) != 0);
    if pending {
        let again: extern "C" fn(*mut c_void) = if m.registered.load(Ordering::Acquire) {
            io_device_gone
        } else {
            free_unregistered
        };
        // SAFETY: same thread; the mirror stays live until `again` frees it.
        unsafe { sys::spdk_thread_send_msg(sys::spdk_get_thread(), Some(again), dev) };
    }
    pending
}

/// The bdev layer is shutting down (module `fini_start`, asynchronous): every mirror's process
/// stops before the bdev layer unregisters the mirrors, since it tears a bdev down before it
/// calls `destruct`. Answers `spdk_bdev_module_fini_start_done` once none runs.
pub extern "C" fn fini_start() {
    guard("mirror shutdown", (), || {
        for m in all() {
            m.deleting.store(true, Ordering::Release);
        }
        extern "C" fn wait(_: *mut c_void) -> c_int {
            guard("mirror shutdown wait", 0, || {
                if all().iter().any(|m| m.process_active.load(Ordering::Acquire)) {
                    return sys::SPDK_POLLER_IDLE as c_int;
                }
                let mut p = FINI_POLLER.swap(ptr::null_mut(), Ordering::AcqRel);
                // SAFETY: our poller, on this (the app) thread; the bdev layer goes on after.
                unsafe {
                    sys::spdk_poller_unregister(&mut p);
                    sys::spdk_bdev_module_fini_start_done();
                }
                sys::SPDK_POLLER_BUSY as c_int
            })
        }
        // SAFETY: a poller on the app thread with no argument.
        let p = unsafe { sys::spdk_poller_register(Some(wait), ptr::null_mut(), 1000) };
        FINI_POLLER.store(p, Ordering::Release);
    })
}

static FINI_POLLER: AtomicPtr<sys::spdk_poller> = AtomicPtr::new(ptr::null_mut());
