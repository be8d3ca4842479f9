//! The reserve: a child that cannot get an `spdk_bdev_io` while its channel has nothing in
//! flight is submitted from its mirror's level's reserve thread instead (`reserve`), whose
//! per-thread `spdk_bdev_io` cache only these children and the metadata writes of mirrors of
//! that level use (the mirror's own thread if SPDK gave no such thread). Parents that waited
//! for the bitmap may hold every `spdk_bdev_io` of the shared pool; without a reserve none of
//! them could ever issue a child (md avoids the same trap with mempools that keep a minimum of
//! elements back). One child per channel at a time goes this way; its completion frees the
//! parent's `spdk_bdev_io` and the ordinary path takes over again.

use std::os::raw::{c_int, c_void};
use std::ptr::NonNull;

use spdk_sys as sys;

use super::callback::send_msg;
use super::child_ctx::{slice_parent_iovs, ChildCtx, RescueBack};
use super::ffi::{errlog, guard};
use super::leg::wait_for_io;
use super::mirror::Mirror;
use super::reserve;
use crate::engine::{ChildStatus, IoOp};

/// The mirror a child context works for: its parent's bdev's.
///
/// # Safety
/// `ctx` must be a live child context whose parent is set.
unsafe fn mirror_of<'a>(ctx: *mut ChildCtx) -> &'a Mirror {
    // SAFETY: the parent is a live host I/O of the mirror's bdev, whose context is the mirror.
    unsafe { &*((*(*(*ctx).parent).bdev).ctxt as *const Mirror) }
}

/// Sends child `ctx` (its fields set, its leg's `inflight` counted) from its channel's thread
/// to its mirror's level's reserve thread (`reserve`; the mirror's own if there is none); it
/// comes back through `back`, on this thread.
pub fn send(ctx: *mut ChildCtx, to: RescueBack) {
    // SAFETY: a live context of ours; its mirror outlives it.
    let thread = unsafe {
        (*ctx).home = sys::spdk_get_thread();
        (*ctx).rescue_back = Some(to);
        let m = mirror_of(ctx);
        match reserve::thread(m.level()) {
            t if t.is_null() => m.thread,
            t => t,
        }
    };
    // SAFETY: the message carries the context, which stays ours until `back` delivers it.
    let rc = unsafe { sys::spdk_thread_send_msg(thread, Some(on_reserve_thread), ctx as *mut c_void) };
    if rc != 0 {
        errlog!("mirror: cannot reach the reserve thread for a reserve I/O");
        back(ctx, ChildStatus::Error);
    }
}

extern "C" fn on_reserve_thread(arg: *mut c_void) {
    guard("mirror reserve submit", (), || submit(arg as *mut ChildCtx))
}

fn submit(ctx: *mut ChildCtx) {
    // SAFETY: ours until `back`; the mirror outlives its children.
    let (m, info, parent) = unsafe { (mirror_of(ctx), (*ctx).info, (*ctx).parent) };
    let leg = m.slot(info.leg);
    // Held while the child is out (`done` lets go): the leg is closed, on the mirror's thread,
    // only once nothing holds it.
    let Some(desc) = leg.hold_desc() else {
        return back(ctx, ChildStatus::Error);
    };
    let ch = reserve::channel_here(leg, desc);
    if ch.is_null() {
        // No channel to be had now: SPDK makes a thread's first channel with its bdev
        // management channel, which takes spdk_bdev_io from the shared pool, empty now. That
        // is no fault of the leg (failing the child failed the leg, and with it the mirror):
        // try again shortly. (Legs get this channel when they are opened, so this is rare.)
        leg.app_io_done();
        return retry_later(ctx);
    }
    let lba = info.leg_lba + m.data_offset;
    let arg = ctx as *mut c_void;
    let (mut iovs, mut iovcnt) = (std::ptr::null_mut(), 0);
    if matches!(info.op, IoOp::Read | IoOp::Write) {
        // SAFETY: a live context with its parent and info set (it was submitted once already).
        match unsafe { slice_parent_iovs(ctx, m.geo().block_size() as u64) } {
            Some(v) => (iovs, iovcnt) = v,
            None => {
                leg.app_io_done();
                return back(ctx, ChildStatus::Error);
            }
        }
    }
    // SAFETY: open desc and this thread's channel; the parent and its buffers are live while
    // its child is outstanding.
    let rc = unsafe {
        match info.op {
            IoOp::Read | IoOp::Write => sys::spdk_mirror_shim_rw(
                desc,
                ch,
                parent,
                info.op == IoOp::Write,
                iovs as *mut sys::iovec,
                iovcnt,
                lba,
                info.blocks,
                Some(done),
                arg,
            ),
            IoOp::Unmap => sys::spdk_bdev_unmap_blocks(desc, ch, lba, info.blocks, Some(done), arg),
            IoOp::WriteZeroes => sys::spdk_bdev_write_zeroes_blocks(desc, ch, lba, info.blocks, Some(done), arg),
            IoOp::Flush => sys::spdk_bdev_flush_blocks(desc, ch, lba, info.blocks, Some(done), arg),
        }
    };
    extern "C" fn retry(arg: *mut c_void) {
        guard("mirror reserve retry", (), || submit(arg as *mut ChildCtx))
    }
    if rc == 0 {
        // The hold counts it until `done`.
        return;
    }
    leg.app_io_done();
    // On -ENOMEM, only reserve I/O runs on this thread: one of them completes and wakes us.
    // SAFETY: the wait entry lives in the context, which waits for it.
    if !(rc == -libc::ENOMEM && unsafe { wait_for_io(leg.bdev(), ch, &mut (*ctx).wait, retry, arg) }) {
        back(ctx, ChildStatus::Error);
    }
}

/// Submits `ctx` again in a millisecond, from this thread (a one-shot poller).
fn retry_later(ctx: *mut ChildCtx) {
    extern "C" fn again(arg: *mut c_void) -> c_int {
        guard("mirror reserve retry", sys::SPDK_POLLER_BUSY as c_int, || {
            let ctx = arg as *mut ChildCtx;
            // SAFETY: the context is ours and waits for this poller, which is its own.
            unsafe { sys::spdk_poller_unregister(&mut (*ctx).retry) };
            submit(ctx);
            sys::SPDK_POLLER_BUSY as c_int
        })
    }
    // SAFETY: the context stays ours until `back`; the poller runs on this thread.
    unsafe {
        (*ctx).retry = sys::spdk_poller_register(Some(again), ctx as *mut c_void, 1000);
        if (*ctx).retry.is_null() {
            errlog!("mirror: cannot schedule a reserve I/O again");
            back(ctx, ChildStatus::Error);
        }
    }
}

extern "C" fn done(bdev_io: *mut sys::spdk_bdev_io, success: bool, arg: *mut c_void) {
    guard("mirror reserve completion", (), || {
        // SAFETY: completed I/O of ours; freed here so it goes back to this thread's cache.
        unsafe { sys::spdk_bdev_free_io(bdev_io) };
        let ctx = arg as *mut ChildCtx;
        // SAFETY: the context is live; its mirror with it.
        unsafe { mirror_of(ctx).slot((*ctx).info.leg).app_io_done() };
        back(
            arg as *mut ChildCtx,
            if success {
                ChildStatus::Success
            } else {
                ChildStatus::Error
            },
        );
    })
}

/// Hands the child back to its channel's thread.
fn back(ctx: *mut ChildCtx, status: ChildStatus) {
    // SAFETY: both set in `send`, on the channel's thread; the context is ours.
    let (thread, to) = unsafe { ((*ctx).home, (*ctx).rescue_back) };
    let Some((to, ctx)) = to.zip(NonNull::new(ctx)) else {
        return errlog!("BUG: a reserve I/O without its way back");
    };
    if send_msg(thread, move || to(ctx, status)).is_err() {
        errlog!("mirror: cannot return a reserve I/O to its channel");
    }
}
