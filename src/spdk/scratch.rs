//! A bdev opened apart from any mirror for a one-off read or write on the app thread (examine's
//! superblock read, the superblock wipe): its descriptor, an I/O channel and a DMA buffer, all
//! released together when it is dropped.

use std::ffi::CStr;
use std::os::raw::{c_int, c_void};
use std::ptr;

use spdk_sys as sys;

pub struct ScratchBdev {
    pub desc: *mut sys::spdk_bdev_desc,
    /// Null if none could be had (`ready`).
    pub ch: *mut sys::spdk_io_channel,
    /// Zeroed, DMA-able; null if none could be had (`ready`).
    pub buf: *mut c_void,
    /// The bdev's block size.
    pub bs: u64,
}

extern "C" fn ignore_event(_: sys::spdk_bdev_event_type, _: *mut sys::spdk_bdev, _: *mut c_void) {}

impl ScratchBdev {
    /// Opens bdev `name` (read-write when `write`), with a channel and a buffer of `blocks`
    /// blocks; `Err` is the open's negative errno. A hot-remove meanwhile fails the I/O, which
    /// ends the caller's work and drops this.
    pub fn open(name: &CStr, write: bool, blocks: impl FnOnce(u64) -> u64) -> Result<ScratchBdev, c_int> {
        let mut desc = ptr::null_mut();
        // SAFETY: NUL-terminated name; the descriptor is closed on drop.
        let rc =
            unsafe { sys::spdk_bdev_open_ext(name.as_ptr(), write, Some(ignore_event), ptr::null_mut(), &mut desc) };
        if rc != 0 {
            return Err(rc);
        }
        // SAFETY: an open descriptor; the channel is put on drop.
        let (bdev, ch) = unsafe { (sys::spdk_bdev_desc_get_bdev(desc), sys::spdk_bdev_get_io_channel(desc)) };
        // SAFETY: an open bdev.
        let bs = unsafe { sys::spdk_bdev_get_block_size(bdev) } as u64;
        let mut s = ScratchBdev {
            desc,
            ch,
            buf: ptr::null_mut(),
            bs,
        };
        s.regrow(blocks(bs));
        Ok(s)
    }

    /// Both the channel and the buffer were had.
    pub fn ready(&self) -> bool {
        !self.ch.is_null() && !self.buf.is_null()
    }

    pub fn bdev(&self) -> *mut sys::spdk_bdev {
        // SAFETY: an open descriptor.
        unsafe { sys::spdk_bdev_desc_get_bdev(self.desc) }
    }

    pub fn num_blocks(&self) -> u64 {
        // SAFETY: an open bdev.
        unsafe { sys::spdk_bdev_get_num_blocks(self.bdev()) }
    }

    /// Replaces the buffer with a zeroed one of `blocks` blocks; false if none could be had
    /// (then the buffer is null).
    pub fn regrow(&mut self, blocks: u64) -> bool {
        // SAFETY: our own buffer (or null), no I/O in flight on it; a plain DMA allocation.
        unsafe {
            sys::spdk_dma_free(self.buf);
            self.buf = sys::spdk_dma_zmalloc((blocks * self.bs) as usize, 0x1000, ptr::null_mut());
        }
        !self.buf.is_null()
    }
}

impl Drop for ScratchBdev {
    fn drop(&mut self) {
        // SAFETY: taken, allocated and opened in `open` on this thread; no I/O of ours is in
        // flight once the owner lets go.
        unsafe {
            if !self.ch.is_null() {
                sys::spdk_put_io_channel(self.ch);
            }
            sys::spdk_dma_free(self.buf);
            sys::spdk_bdev_close(self.desc);
        }
    }
}
