//! What the mirror reads of a host `spdk_bdev_io`, straight from its fields: inlined on the I/O
//! path, where a call into the C shim per child cost more than the read itself.

use std::ptr;

use spdk_sys as sys;

/// The parts of a host I/O the mirror plans and slices with.
#[derive(Clone, Copy)]
pub struct IoView {
    pub ty: u32,
    pub offset_blocks: u64,
    pub num_blocks: u64,
    pub iovs: *mut libc::iovec,
    pub iovcnt: i32,
}

/// # Safety
/// `io` must be a live `spdk_bdev_io`.
#[inline]
pub unsafe fn view(io: *const sys::spdk_bdev_io) -> IoView {
    // SAFETY: `io` is live (caller). `u.bdev` is the union member of every block I/O type; for
    // others (reset) it holds plain integers and pointers the caller does not use.
    unsafe {
        let b = &(*io).u.bdev;
        IoView {
            ty: (*io).type_ as u32,
            offset_blocks: b.offset_blocks,
            num_blocks: b.num_blocks,
            iovs: b.iovs as *mut libc::iovec,
            iovcnt: b.iovcnt,
        }
    }
}

/// The module's per-I/O context at the end of `io` (`get_ctx_size` bytes).
///
/// # Safety
/// `io` must be a live `spdk_bdev_io` of a mirror bdev.
#[inline]
pub unsafe fn driver_ctx<T>(io: *mut sys::spdk_bdev_io) -> *mut T {
    // SAFETY: the flexible array member's address is the driver context (caller: `io` is live).
    unsafe { ptr::addr_of_mut!((*io).driver_ctx) as *mut T }
}
