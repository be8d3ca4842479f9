//! Host resets: every present leg is reset; the host reset completes when they all have.

use std::os::raw::c_void;
use std::sync::atomic::Ordering;

use spdk_sys as sys;

use super::callback::{into_arg, take_arg};
use super::ffi::guard;
use super::host_io::driver_ctx;
use super::leg::Leg;
use super::mirror::Mirror;

/// Per host I/O context (`get_ctx_size`): a reset's outstanding leg resets.
#[repr(C)]
pub struct HostCtx {
    remaining: u32,
    failed: bool,
}

struct ResetChild {
    parent: *mut sys::spdk_bdev_io,
    leg: *const Leg,
    ch: *mut sys::spdk_io_channel,
}

/// Resets every present leg; the host reset completes when they all have.
pub fn reset(io: *mut sys::spdk_bdev_io) {
    // SAFETY: `io` is a live host I/O of our bdev, whose context is its mirror.
    let (m, ctx) = unsafe { (&*((*(*io).bdev).ctxt as *const Mirror), driver_ctx::<HostCtx>(io)) };
    // SAFETY: the driver context is ours for the life of the I/O.
    unsafe {
        (*ctx).remaining = 1;
        (*ctx).failed = false;
    }
    for leg in m.legs().iter().filter(|l| !l.failed.load(Ordering::Acquire)) {
        // A leg being closed on the mirror's thread meanwhile waits for this hold.
        let Some(desc) = leg.hold_desc() else { continue };
        // SAFETY: the desc is held open until `app_io_done`; the channel for this thread is
        // taken here and put back when the leg's reset completes, before the hold goes.
        unsafe {
            let ch = sys::spdk_bdev_get_io_channel(desc);
            if ch.is_null() {
                leg.app_io_done();
                (*ctx).failed = true;
                continue;
            }
            let child = into_arg(ResetChild { parent: io, leg, ch });
            (*ctx).remaining += 1;
            if sys::spdk_bdev_reset(desc, ch, Some(reset_done), child) != 0 {
                drop(take_arg::<ResetChild>(child));
                sys::spdk_put_io_channel(ch);
                leg.app_io_done();
                (*ctx).remaining -= 1;
                (*ctx).failed = true;
            }
        }
    }
    put_reset(io);
}

fn put_reset(io: *mut sys::spdk_bdev_io) {
    // SAFETY: `io` is a live reset whose driver context we initialised.
    unsafe {
        let ctx = driver_ctx::<HostCtx>(io);
        (*ctx).remaining -= 1;
        if (*ctx).remaining == 0 {
            let status = if (*ctx).failed {
                sys::SPDK_BDEV_IO_STATUS_FAILED
            } else {
                sys::SPDK_BDEV_IO_STATUS_SUCCESS
            };
            sys::spdk_bdev_io_complete(io, status);
        }
    }
}

extern "C" fn reset_done(bdev_io: *mut sys::spdk_bdev_io, success: bool, arg: *mut c_void) {
    guard("mirror reset completion", (), || {
        // SAFETY: our boxed child, handed back once; the child bdev_io is ours to free.
        unsafe {
            sys::spdk_bdev_free_io(bdev_io);
            let child = take_arg::<ResetChild>(arg);
            sys::spdk_put_io_channel(child.ch);
            // The leg lives as long as its mirror, which outlives its host I/O.
            (*child.leg).app_io_done();
            if !success {
                (*driver_ctx::<HostCtx>(child.parent)).failed = true;
            }
            put_reset(child.parent);
        }
    })
}
