//! A leg's farewell: the superblock written to a leg an operator removes, just before the
//! removal lets go of it, recording its own slot as removed.
//!
//! Without it the leg keeps the superblock it last had as a member (active, at the events of
//! that time). Found alone later (the mirror deleted, or its other legs slow to appear at a
//! start), nothing on it tells it from a leg that died while the host was down, and after the
//! degraded grace it would assemble the mirror by itself with its older data. With it, the
//! leg's own superblock says it is no member: it never assembles anything (assembly takes
//! only legs the newest superblock calls active), and `bdev_mirror_add_base_bdev` still takes
//! it back from the bitmap (`superblock::rejoin` reads when it was dropped).

use std::os::raw::c_void;
use std::ptr;

use spdk_sys as sys;

use super::callback::{end_chain, start_chain};
use super::ffi::{errlog, guard};
use super::mirror::Mirror;
use super::persist::tunables_record;
use crate::superblock::SUPERBLOCK_BYTES;

/// What runs when the farewell is over, written or not.
pub type FarewellDone = Box<dyn FnOnce()>;

struct Farewell {
    m: &'static Mirror,
    slot: u32,
    ch: *mut sys::spdk_io_channel,
    buf: *mut c_void,
    blocks: u64,
    flushing: bool,
    wait: sys::spdk_bdev_io_wait_entry,
    done: FarewellDone,
}

/// Writes leg `slot`'s superblock as the running mirror holds it (its slot recorded removed:
/// `Persist::mark_removed`), on the mirror's thread, while the leg is still open and no
/// other metadata write reaches it (it is failed). Best effort: a leg that cannot be written
/// keeps its old superblock, which is logged. Only the superblock's blocks are written.
pub fn farewell(m: &'static Mirror, slot: u32, done: FarewellDone) {
    let Some(p) = &m.persist else { return done() };
    let leg = m.slot(slot);
    let bs = m.geo().block_size() as u64;
    let blocks = (SUPERBLOCK_BYTES as u64).div_ceil(bs);
    let bytes = {
        let mut sb = p.superblock().clone();
        sb.this_slot = slot;
        sb.encode_with(&tunables_record(m, p))
    };
    let Ok(bytes) = bytes else {
        return failed(m, slot, "it cannot be encoded", done);
    };
    // SAFETY: a zeroed DMA buffer of `blocks` blocks, freed in `finished`.
    let buf = unsafe { sys::spdk_dma_zmalloc((blocks * bs) as usize, 0x1000, ptr::null_mut()) };
    let ch = if buf.is_null() {
        ptr::null_mut()
    } else {
        leg.app_channel()
    };
    if ch.is_null() {
        // SAFETY: null or ours.
        unsafe { sys::spdk_dma_free(buf) };
        return failed(m, slot, "no memory", done);
    }
    // SAFETY: the buffer holds `blocks * bs >= SUPERBLOCK_BYTES` bytes.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), buf as *mut u8, SUPERBLOCK_BYTES) };
    submit(start_chain(Farewell {
        m,
        slot,
        ch,
        buf,
        blocks,
        flushing: false,
        wait: sys::spdk_bdev_io_wait_entry::default(),
        done,
    }));
}

fn failed(m: &Mirror, slot: u32, why: &str, done: FarewellDone) {
    errlog!(
        "mirror {}: cannot record on leg {slot} that it was removed ({why}); it keeps its old superblock: bdev_mirror_wipe_superblock it before other use",
        m.name()
    );
    done()
}

fn submit(f: *mut Farewell) {
    // SAFETY: ours until `finished`.
    let fw = unsafe { &mut *f };
    let leg = fw.m.slot(fw.slot);
    if !leg.present() {
        return finished(f, false);
    }
    let arg = f as *mut c_void;
    // SAFETY: the leg's open desc and this thread's channel; the buffer holds `blocks` blocks.
    let rc = unsafe {
        if fw.flushing {
            sys::spdk_bdev_flush_blocks(leg.desc(), fw.ch, 0, fw.blocks, Some(io_done), arg)
        } else {
            sys::spdk_bdev_write_blocks(leg.desc(), fw.ch, fw.buf, 0, fw.blocks, Some(io_done), arg)
        }
    };
    extern "C" fn retry(arg: *mut c_void) {
        guard("mirror leg farewell retry", (), || submit(arg as *mut Farewell))
    }
    // SAFETY: the wait entry lives in the Farewell, which waits for it.
    if !unsafe { leg.submitted(rc, fw.ch, &mut fw.wait, retry, arg) } {
        finished(f, false);
    }
}

extern "C" fn io_done(bdev_io: *mut sys::spdk_bdev_io, success: bool, arg: *mut c_void) {
    guard("mirror leg farewell", (), || {
        // SAFETY: a completed I/O of ours.
        unsafe { sys::spdk_bdev_free_io(bdev_io) };
        let f = arg as *mut Farewell;
        // SAFETY: ours until `finished`.
        let fw = unsafe { &mut *f };
        let leg = fw.m.slot(fw.slot);
        leg.app_io_done();
        // As every metadata write: not left in a volatile write cache.
        // SAFETY: the leg's bdev is open while it is present.
        if success && !fw.flushing && leg.present() && unsafe { sys::spdk_bdev_has_write_cache(leg.bdev()) } {
            fw.flushing = true;
            return submit(f);
        }
        finished(f, success);
    })
}

fn finished(f: *mut Farewell, success: bool) {
    // SAFETY: the last use of the chain.
    let fw = unsafe { end_chain(f) };
    // SAFETY: allocated in `farewell`.
    unsafe { sys::spdk_dma_free(fw.buf) };
    if success {
        (fw.done)()
    } else {
        failed(fw.m, fw.slot, "the write failed", fw.done)
    }
}
