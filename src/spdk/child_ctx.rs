//! A child I/O's context (an element of its leg's `spdk_mempool`), the iovecs it carries, and
//! the calls a channel hands the layers below it so that they can report back to it.

use std::os::raw::c_void;
use std::ptr::NonNull;

use spdk_sys as sys;

use super::host_io;
use crate::engine::{ChildInfo, ChildStatus};

/// Most iovecs a child may need when it carries part of its parent's buffer (a RAID10 request
/// across chunks). A RAID10 bdev asks the bdev layer to cut host I/O with more (`create`), so
/// a child never needs more; RAID1 children take the parent's iovecs whole.
pub const MAX_CHILD_IOVS: usize = 32;

/// One child context: an element of a leg's `spdk_mempool`.
#[repr(C)]
pub struct ChildCtx {
    /// The `Channel` that issued it (opaque below the channel's layer; see `ChannelCalls`).
    pub channel: *const c_void,
    pub parent: *mut sys::spdk_bdev_io,
    pub info: ChildInfo,
    // The fields above are all a child touches on the common path: one cache line (mempool
    // elements are cache-line aligned). Those below are for the slow paths.
    /// Used only by a child going through the reserve (`rescue`), to wait for I/O there.
    pub wait: sys::spdk_bdev_io_wait_entry,
    /// A child in the reserve: the thread it comes back to, and what it is handed to there.
    pub home: *mut sys::spdk_thread,
    pub rescue_back: Option<RescueBack>,
    /// A child in the reserve waiting for a channel on its leg from the thread it is submitted
    /// from (see `rescue::submit`): the one-shot poller that tries again.
    pub retry: *mut sys::spdk_poller,
    iovs: [libc::iovec; MAX_CHILD_IOVS],
}

// The common-path fields of a child context stay within one cache line.
const _: () = assert!(std::mem::offset_of!(ChildCtx, wait) <= 64);

/// Where a child sent through the reserve (`rescue`) is handed back, on its channel's thread.
pub type RescueBack = fn(NonNull<ChildCtx>, ChildStatus);

/// A channel's entry points for the layers below it (`backend`, `rescue`), which cannot name
/// the channel: SPDK's callback for a child's completion (its argument the child context), for
/// a freed `spdk_bdev_io` (its argument the leg's `IoWait`), and the return of a child from the
/// reserve.
pub struct ChannelCalls {
    pub child_done: sys::spdk_bdev_io_completion_cb,
    pub io_wait_done: sys::spdk_bdev_io_wait_cb,
    pub rescue_back: RescueBack,
}

/// The iovecs of the child's part of the parent's buffer: the parent's own when the child
/// covers all of it, else built in the context's `iovs`. `None` if they do not fit.
///
/// # Safety
/// `ctx` must be a live child context whose `parent` and `info` are set.
pub unsafe fn slice_parent_iovs(ctx: *mut ChildCtx, block_size: u64) -> Option<(*mut libc::iovec, i32)> {
    // SAFETY: the parent is live while its children are being issued.
    let view = unsafe { host_io::view((*ctx).parent) };
    // SAFETY: exclusive access to our own context.
    let ctx = unsafe { &mut *ctx };
    if ctx.info.buf_offset == 0 && ctx.info.blocks == view.num_blocks {
        // The whole parent (always, for RAID1 and chunk-split RAID10): its iovecs as they are.
        return Some((view.iovs, view.iovcnt));
    }
    // SAFETY: the parent's iovec array has `iovcnt` entries.
    let iovs = unsafe { std::slice::from_raw_parts(view.iovs as *const libc::iovec, view.iovcnt as usize) };
    let mut skip = ctx.info.buf_offset * block_size;
    let mut want = ctx.info.blocks * block_size;
    let mut n = 0usize;
    for iov in iovs {
        if want == 0 {
            break;
        }
        let len = iov.iov_len as u64;
        if skip >= len {
            skip -= len;
            continue;
        }
        if n == MAX_CHILD_IOVS {
            return None;
        }
        let take = (len - skip).min(want);
        ctx.iovs[n] = libc::iovec {
            // SAFETY: stays inside this iovec's buffer (skip + take <= len).
            iov_base: unsafe { (iov.iov_base as *mut u8).add(skip as usize) } as *mut c_void,
            iov_len: take as usize,
        };
        n += 1;
        want -= take;
        skip = 0;
    }
    (want == 0).then_some((ctx.iovs.as_mut_ptr(), n as i32))
}
