//! A leg's farewell: the superblock written to a leg an operator removes, just before the
//! removal lets go of it, recording its own slot as removed (and the superblock of a leg a
//! replacement took the place of, zeroed).
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
use super::leg::{wait_for_io, Leg};
use super::legs::Retired;
use super::mirror::Mirror;
use super::persist::tunables_record;
use crate::superblock::SUPERBLOCK_BYTES;

/// What runs when the farewell is over, written or not.
pub type FarewellDone = Box<dyn FnOnce()>;

/// One farewell write (and its flush) in flight, on the mirror's thread.
struct Farewell {
    /// The mirror's name and the bdev's, for the log.
    mirror: String,
    bdev_name: String,
    desc: *mut sys::spdk_bdev_desc,
    ch: *mut sys::spdk_io_channel,
    bdev: *mut sys::spdk_bdev,
    /// The slot whose I/O this is (counted so its close waits for it), or null for a retired
    /// bdev, which its own `done` closes.
    leg: *const Leg,
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
    let bytes = {
        let mut sb = p.superblock().clone();
        sb.this_slot = slot;
        sb.encode_with(&tunables_record(m, p))
    };
    let target = (leg.desc(), leg.app_channel(), leg.bdev(), leg as *const Leg);
    match bytes {
        Ok(bytes) => write_head(m, &leg.name(), target, &bytes, done),
        Err(_) => failed(m.name(), &leg.name(), "it cannot be encoded", done),
    }
}

/// Zeroes the superblock of `r`, the bdev a replacement took the place of, then lets it go.
/// Its superblock still called it an active member: found alone later, it would assemble the
/// mirror by itself with the data it had when it was replaced (a replaced leg never comes
/// back from the bitmap: the slot's identity is its replacement's now). Its data stays.
pub fn wipe_retired(m: &'static Mirror, mut r: Retired, done: FarewellDone) {
    if m.persist.is_none() {
        r.close();
        return done();
    }
    if r.ch.is_null() {
        // SAFETY: the descriptor is open, on this (the mirror's) thread; `close` puts it.
        r.ch = unsafe { sys::spdk_bdev_get_io_channel(r.desc) };
    }
    let target = (r.desc, r.ch, r.bdev, ptr::null());
    let name = r.name.clone();
    write_head(
        m,
        &name,
        target,
        &[0; SUPERBLOCK_BYTES],
        Box::new(move || {
            r.close();
            done()
        }),
    );
}

fn failed(mirror: &str, bdev: &str, why: &str, done: FarewellDone) {
    errlog!(
        "mirror {mirror}: cannot record on {bdev}, taken out of the mirror, that it is no member ({why}); its superblock still calls it one: bdev_mirror_wipe_superblock it before other use"
    );
    done()
}

/// Writes `bytes` over the superblock's blocks of `target` (descriptor, channel of this
/// thread, bdev, slot or null), flushed where there is a write cache.
fn write_head(
    m: &Mirror,
    bdev_name: &str,
    (desc, ch, bdev, leg): (
        *mut sys::spdk_bdev_desc,
        *mut sys::spdk_io_channel,
        *mut sys::spdk_bdev,
        *const Leg,
    ),
    bytes: &[u8],
    done: FarewellDone,
) {
    let bs = m.geo().block_size() as u64;
    let blocks = (SUPERBLOCK_BYTES as u64).div_ceil(bs);
    // SAFETY: a zeroed DMA buffer of `blocks` blocks, freed in `finished`.
    let buf = unsafe { sys::spdk_dma_zmalloc((blocks * bs) as usize, 0x1000, ptr::null_mut()) };
    if buf.is_null() || ch.is_null() || desc.is_null() {
        // SAFETY: null or ours.
        unsafe { sys::spdk_dma_free(buf) };
        return failed(m.name(), bdev_name, "no memory", done);
    }
    // SAFETY: the buffer holds `blocks * bs >= SUPERBLOCK_BYTES >= bytes.len()` bytes.
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), buf as *mut u8, bytes.len().min(SUPERBLOCK_BYTES)) };
    submit(start_chain(Farewell {
        mirror: m.name().to_string(),
        bdev_name: bdev_name.to_string(),
        desc,
        ch,
        bdev,
        leg,
        buf,
        blocks,
        flushing: false,
        wait: sys::spdk_bdev_io_wait_entry::default(),
        done,
    }));
}

fn submit(f: *mut Farewell) {
    // SAFETY: ours until `finished`.
    let fw = unsafe { &mut *f };
    let arg = f as *mut c_void;
    // SAFETY: an open descriptor and this thread's channel on it; the buffer holds `blocks`
    // blocks.
    let rc = unsafe {
        if fw.flushing {
            sys::spdk_bdev_flush_blocks(fw.desc, fw.ch, 0, fw.blocks, Some(io_done), arg)
        } else {
            sys::spdk_bdev_write_blocks(fw.desc, fw.ch, fw.buf, 0, fw.blocks, Some(io_done), arg)
        }
    };
    if rc == 0 {
        // SAFETY: a slot's leg lives as long as its mirror, which outlives this write.
        if let Some(leg) = unsafe { fw.leg.as_ref() } {
            leg.app_io_started();
        }
        return;
    }
    extern "C" fn retry(arg: *mut c_void) {
        guard("mirror leg farewell retry", (), || submit(arg as *mut Farewell))
    }
    // SAFETY: this thread's channel on the bdev; the wait entry lives in the Farewell, which
    // waits for it.
    if rc != -libc::ENOMEM || !unsafe { wait_for_io(fw.bdev, fw.ch, &mut fw.wait, retry, arg) } {
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
        // SAFETY: as in `submit`.
        if let Some(leg) = unsafe { fw.leg.as_ref() } {
            leg.app_io_done();
        }
        // As every metadata write: not left in a volatile write cache.
        // SAFETY: the bdev is open (its descriptor is).
        if success && !fw.flushing && unsafe { sys::spdk_bdev_has_write_cache(fw.bdev) } {
            fw.flushing = true;
            return submit(f);
        }
        finished(f, success);
    })
}

fn finished(f: *mut Farewell, success: bool) {
    // SAFETY: the last use of the chain.
    let fw = unsafe { end_chain(f) };
    // SAFETY: allocated in `write_head`.
    unsafe { sys::spdk_dma_free(fw.buf) };
    if success {
        (fw.done)()
    } else {
        failed(&fw.mirror, &fw.bdev_name, "the write failed", fw.done)
    }
}
