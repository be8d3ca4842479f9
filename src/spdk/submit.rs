//! The host I/O entry: SPDK's `submit_request` hands each host I/O to this core's channel
//! (reads first get a buffer from the bdev layer when the caller gave none, or one not aligned
//! as the mirror requires).

use std::ptr::NonNull;

use spdk_sys as sys;

use super::channel::Channel;
use super::ffi::guard;
use super::host_io;
use crate::engine::IoOp;

/// The channel stored in an io_channel's context.
///
/// # Safety
/// `ch` must be one of our mirror's io_channels.
pub unsafe fn channel_of<'a>(ch: *mut sys::spdk_io_channel) -> &'a Channel {
    // SAFETY: our channel context holds the boxed channel pointer (see `channel_create`). The
    // context is what SPDK's `spdk_io_channel_get_ctx` (inline in its header) returns: the bytes
    // after the channel's own struct, of the header's fixed size; computed here, not called.
    unsafe { &**((ch as *mut u8).add(sys::SPDK_IO_CHANNEL_STRUCT_SIZE as usize) as *mut *mut Channel) }
}

fn fail_io(io: *mut sys::spdk_bdev_io) {
    // SAFETY: `io` is a live host I/O we have not completed.
    unsafe { sys::spdk_bdev_io_complete(io, sys::SPDK_BDEV_IO_STATUS_FAILED) };
}

/// SPDK's `submit_request`. Reads and writes, the common path, are not wrapped in `guard`:
/// what they do here cannot panic (field reads, the buffer request) and the engine runs under
/// `Channel::run`'s `catch_unwind`. Every other type goes through `guard`.
pub extern "C" fn submit_request(ch: *mut sys::spdk_io_channel, io: *mut sys::spdk_bdev_io) {
    // SAFETY: SPDK hands us a live bdev_io.
    let view = unsafe { host_io::view(io) };
    match view.ty {
        sys::SPDK_BDEV_IO_TYPE_READ => {
            // SAFETY: a live bdev_io of ours, so its bdev is live.
            let bdev = unsafe { &*(*io).bdev };
            // The caller's buffer, there and aligned, is used as it is: what the bdev layer's
            // `spdk_bdev_io_get_buf` would check and then call back with at once, without its
            // call (about 40 instructions a read). Else the bdev layer gives one.
            // SAFETY: the host I/O's iovecs: `iovcnt` entries.
            if unsafe { host_io::buffer_ready(&view, bdev.required_alignment) } {
                return submit_host(ch, io, IoOp::Read);
            }
            let len = view.num_blocks * bdev.blocklen as u64;
            // SAFETY: live bdev_io of ours.
            unsafe { sys::spdk_bdev_io_get_buf(io, Some(read_buf_ready), len) };
        }
        sys::SPDK_BDEV_IO_TYPE_WRITE => submit_host(ch, io, IoOp::Write),
        _ => submit_other(ch, io, &view),
    }
}

/// Every type but read and write.
#[cold]
fn submit_other(ch: *mut sys::spdk_io_channel, io: *mut sys::spdk_bdev_io, view: &host_io::IoView) {
    let handled = guard("mirror submit", false, || {
        let op = match view.ty {
            sys::SPDK_BDEV_IO_TYPE_UNMAP => IoOp::Unmap,
            sys::SPDK_BDEV_IO_TYPE_WRITE_ZEROES => IoOp::WriteZeroes,
            sys::SPDK_BDEV_IO_TYPE_FLUSH => {
                // SAFETY: `ch` is our channel; SPDK's `io` is non-null.
                unsafe { channel_of(ch).submit_flush(NonNull::new_unchecked(io)) };
                return true;
            }
            sys::SPDK_BDEV_IO_TYPE_RESET => {
                super::reset::reset(io);
                return true;
            }
            _ => {
                fail_io(io);
                return true;
            }
        };
        submit_host(ch, io, op);
        true
    });
    if !handled {
        fail_io(io);
    }
}

/// Hands a host I/O to this core's engine.
#[inline(always)]
fn submit_host(ch: *mut sys::spdk_io_channel, io: *mut sys::spdk_bdev_io, op: IoOp) {
    // SAFETY: `ch` is our channel; SPDK's `io` is non-null.
    unsafe { channel_of(ch).submit(NonNull::new_unchecked(io), op) };
}

/// The read's buffer is ready. Not wrapped in `guard`, as `submit_request`'s reads.
extern "C" fn read_buf_ready(ch: *mut sys::spdk_io_channel, io: *mut sys::spdk_bdev_io, success: bool) {
    if !success {
        return fail_io(io);
    }
    submit_host(ch, io, IoOp::Read);
}
