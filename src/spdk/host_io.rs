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

/// Whether a read's buffer is there and aligned as the bdev requires (`align_shift`: its
/// `required_alignment`, a power-of-two shift): what `spdk_bdev_io_get_buf` checks before it
/// calls back at once with the buffer as it is.
///
/// # Safety
/// `view.iovs`, when not null, must have `view.iovcnt` entries.
#[inline(always)]
pub unsafe fn buffer_ready(view: &IoView, align_shift: u8) -> bool {
    if view.iovs.is_null() || view.iovcnt <= 0 {
        return false;
    }
    // SAFETY: not null, with `iovcnt` entries (caller).
    iovs_ready(
        unsafe { std::slice::from_raw_parts(view.iovs, view.iovcnt as usize) },
        align_shift,
    )
}

/// `buffer_ready` over the iovecs themselves: a first base, and every base aligned.
#[inline(always)]
fn iovs_ready(iovs: &[libc::iovec], align_shift: u8) -> bool {
    if iovs[0].iov_base.is_null() {
        return false;
    }
    if align_shift == 0 {
        return true;
    }
    let Some(mask) = 1usize.checked_shl(align_shift as u32).map(|a| a - 1) else {
        return false;
    };
    iovs.iter().all(|v| v.iov_base as usize & mask == 0)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn iov(base: usize) -> libc::iovec {
        libc::iovec {
            iov_base: base as *mut libc::c_void,
            iov_len: 4096,
        }
    }

    #[test]
    fn a_missing_buffer_is_not_ready() {
        assert!(!iovs_ready(&[iov(0)], 0));
        assert!(!iovs_ready(&[iov(0), iov(8192)], 12));
    }

    #[test]
    fn any_buffer_is_ready_without_an_alignment() {
        assert!(iovs_ready(&[iov(0x1003)], 0));
        assert!(iovs_ready(&[iov(0x1003), iov(0x2001)], 0));
    }

    #[test]
    fn every_base_must_be_aligned() {
        assert!(iovs_ready(&[iov(0x2000), iov(0x3000)], 12));
        assert!(!iovs_ready(&[iov(0x2000), iov(0x3200)], 12));
        assert!(!iovs_ready(&[iov(0x2200)], 12));
        assert!(iovs_ready(&[iov(0x2200)], 9));
    }

    #[test]
    fn an_absurd_alignment_is_left_to_the_bdev_layer() {
        assert!(!iovs_ready(&[iov(0)], 200));
        assert!(!iovs_ready(&[iov(0x1000)], 200));
    }

    #[test]
    fn no_iovecs_are_not_ready() {
        let view = IoView {
            ty: 0,
            offset_blocks: 0,
            num_blocks: 1,
            iovs: ptr::null_mut(),
            iovcnt: 1,
        };
        // SAFETY: null iovecs are never read.
        assert!(!unsafe { buffer_ready(&view, 0) });
        let mut one = [iov(0x1000)];
        let view = IoView {
            iovs: one.as_mut_ptr(),
            iovcnt: 0,
            ..view
        };
        // SAFETY: `iovcnt` 0: nothing is read.
        assert!(!unsafe { buffer_ready(&view, 0) });
    }
}
