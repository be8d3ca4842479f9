//! Work that runs beside the engine: host resets, and the rebuild of a leg added with
//! `bdev_mirror_add_base_bdev`.
//!
//! Rebuild copies, window by window (a chunk for RAID10, 1 MiB for RAID1), every block whose copy
//! lives on the new leg from a leg that is in sync. Each window's mirror LBA range is quiesced
//! (`spdk_bdev_quiesce_range`) while it is copied, so no host write can land between the read
//! and the write; host writes elsewhere go to the new leg too (it is in the mirror, write-only),
//! so what was copied stays in sync. The new leg is read only once the last window is done.

use std::os::raw::{c_int, c_void};
use std::ptr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::{json, Value};
use spdk_sys as sys;

use super::ffi::{errlog, guard, noticelog};
use super::mirror::Mirror;
use super::module::module_ptr;
use crate::placement::Level;

/// Per host I/O context (`get_ctx_size`): a reset's outstanding leg resets.
#[repr(C)]
pub struct HostCtx {
    remaining: u32,
    failed: bool,
}

struct ResetChild {
    parent: *mut sys::spdk_bdev_io,
    ch: *mut sys::spdk_io_channel,
}

/// Resets every present leg; the host reset completes when they all have.
pub fn reset(io: *mut sys::spdk_bdev_io) {
    // SAFETY: `io` is a live host I/O of our bdev, whose context is its mirror.
    let (m, ctx) = unsafe {
        let mut view = sys::spdk_mirror_io_view::default();
        sys::spdk_mirror_shim_io_view(io, &mut view);
        (&*((*(*io).bdev).ctxt as *const Mirror), view.driver_ctx as *mut HostCtx)
    };
    // SAFETY: the driver context is ours for the life of the I/O.
    unsafe {
        (*ctx).remaining = 1;
        (*ctx).failed = false;
    }
    for leg in m
        .legs
        .iter()
        .filter(|l| l.present() && !l.failed.load(Ordering::Acquire))
    {
        // SAFETY: the leg's desc is open; its channel for this thread is taken and put back
        // when the reset completes.
        unsafe {
            let ch = sys::spdk_bdev_get_io_channel(leg.desc());
            if ch.is_null() {
                (*ctx).failed = true;
                continue;
            }
            let child = Box::into_raw(Box::new(ResetChild { parent: io, ch }));
            (*ctx).remaining += 1;
            if sys::spdk_bdev_reset(leg.desc(), ch, Some(reset_done), child as *mut c_void) != 0 {
                drop(Box::from_raw(child));
                sys::spdk_put_io_channel(ch);
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
        let mut view = sys::spdk_mirror_io_view::default();
        sys::spdk_mirror_shim_io_view(io, &mut view);
        let ctx = view.driver_ctx as *mut HostCtx;
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
            let child = Box::from_raw(arg as *mut ResetChild);
            sys::spdk_put_io_channel(child.ch);
            if !success {
                let mut view = sys::spdk_mirror_io_view::default();
                sys::spdk_mirror_shim_io_view(child.parent, &mut view);
                (*(view.driver_ctx as *mut HostCtx)).failed = true;
            }
            put_reset(child.parent);
        }
    })
}

/// Progress of a rebuild, as `bdev_mirror_get_bdevs` shows it.
#[derive(Debug, Clone)]
pub struct RebuildStatus {
    pub target: u32,
    pub target_name: String,
    pub blocks_done: u64,
    pub blocks_total: u64,
    pub bytes_copied: u64,
    pub started: Instant,
}

impl RebuildStatus {
    pub fn json(&self) -> Value {
        let secs = self.started.elapsed().as_secs_f64().max(1e-6);
        json!({
            "type": "rebuild",
            "target": self.target_name,
            "target_slot": self.target,
            "progress": {
                "blocks": self.blocks_done,
                "percent": (self.blocks_done as f64 * 100.0 / self.blocks_total.max(1) as f64 * 100.0).floor() / 100.0,
            },
            "bytes_copied": self.bytes_copied,
            "rate_mb_per_s": ((self.bytes_copied as f64 / secs / 1e6) * 100.0).floor() / 100.0,
        })
    }
}

struct Rebuild {
    mirror: &'static Mirror,
    target: u32,
    window: u64,
    pos: u64,
    len: u64,
    src_leg: u32,
    src_lba: u64,
    dst_lba: u64,
    /// Legs already tried as the source of the current window.
    tried: u32,
    buf: *mut c_void,
    chans: Vec<*mut sys::spdk_io_channel>,
    wait: sys::spdk_bdev_io_wait_entry,
    writing: bool,
}

/// Starts rebuilding leg `target` (already attached, write-only) in the background.
pub fn start(m: &'static Mirror, target: u32) -> Result<(), String> {
    let bs = m.geo.block_size() as u64;
    let window = match m.geo.level() {
        Level::Raid10 => m.geo.chunk_blocks(),
        Level::Raid1 => ((1 << 20) / bs).max(1),
    }
    .min(m.geo.data_blocks());
    // SAFETY: plain DMA-able allocation, freed in `finish`.
    let buf = unsafe { sys::spdk_dma_malloc((window * bs) as usize, 0x1000, ptr::null_mut()) };
    if buf.is_null() {
        return Err(format!("cannot allocate a {} KiB rebuild buffer", window * bs / 1024));
    }
    let chans = m
        .legs
        .iter()
        .map(|l| {
            if l.present() {
                // SAFETY: open desc; channel for the app thread, put in `finish`.
                unsafe { sys::spdk_bdev_get_io_channel(l.desc()) }
            } else {
                ptr::null_mut()
            }
        })
        .collect();
    if let Ok(mut s) = m.rebuild.lock() {
        *s = Some(RebuildStatus {
            target,
            target_name: m.legs[target as usize].name(),
            blocks_done: 0,
            blocks_total: m.geo.data_blocks(),
            bytes_copied: 0,
            started: Instant::now(),
        });
    }
    m.rebuild_active.store(true, Ordering::Release);
    noticelog!(
        "mirror {}: rebuilding leg {} ({})",
        m.name(),
        target,
        m.legs[target as usize].name()
    );
    let r = Box::into_raw(Box::new(Rebuild {
        mirror: m,
        target,
        window,
        pos: 0,
        len: 0,
        src_leg: 0,
        src_lba: 0,
        dst_lba: 0,
        tried: 0,
        buf,
        chans,
        wait: sys::spdk_bdev_io_wait_entry::default(),
        writing: false,
    }));
    step(r);
    Ok(())
}

fn progress(r: &Rebuild, blocks: u64, copied: u64) {
    if let Ok(mut s) = r.mirror.rebuild.lock() {
        if let Some(s) = s.as_mut() {
            s.blocks_done += blocks;
            s.bytes_copied += copied;
        }
    }
}

/// Finds the next window with a copy on the target and quiesces it; finishes at the end.
fn step(r: *mut Rebuild) {
    // SAFETY: the rebuild is ours until `finish` frees it.
    let rb = unsafe { &mut *r };
    let m = rb.mirror;
    loop {
        let t = &m.legs[rb.target as usize];
        if m.deleting.load(Ordering::Acquire) || !t.present() || t.failed.load(Ordering::Acquire) {
            return finish(r, Err("cancelled: the leg or the mirror went away".into()));
        }
        if rb.pos >= m.geo.data_blocks() {
            return finish(r, Ok(()));
        }
        rb.len = rb.window.min(m.geo.data_blocks() - rb.pos).min(m.geo.run_len(rb.pos));
        let copies = m.geo.map_unchecked(rb.pos);
        let Some(dst) = copies.on_leg(rb.target) else {
            progress(rb, rb.len, 0);
            rb.pos += rb.len;
            continue;
        };
        rb.dst_lba = dst.lba;
        rb.tried = 0;
        break;
    }
    let b = &m.bdev as *const sys::spdk_bdev as *mut sys::spdk_bdev;
    // SAFETY: our registered bdev; `r` lives until the callback.
    let rc = unsafe { sys::spdk_bdev_quiesce_range(b, module_ptr(), rb.pos, rb.len, Some(quiesced), r as *mut c_void) };
    if rc != 0 {
        finish(
            r,
            Err(format!(
                "cannot quiesce blocks {}+{}: {}",
                rb.pos,
                rb.len,
                std::io::Error::from_raw_os_error(-rc)
            )),
        );
    }
}

extern "C" fn quiesced(arg: *mut c_void, status: c_int) {
    guard("mirror rebuild", (), || {
        let r = arg as *mut Rebuild;
        if status != 0 {
            return finish(r, Err(format!("quiesce failed: {status}")));
        }
        read_window(r);
    })
}

/// Reads the window from an in-sync copy not yet tried.
fn read_window(r: *mut Rebuild) {
    // SAFETY: ours until `finish`.
    let rb = unsafe { &mut *r };
    let m = rb.mirror;
    let copies = m.geo.map_unchecked(rb.pos);
    let src = copies
        .as_slice()
        .iter()
        .find(|c| c.leg != rb.target && rb.tried & (1 << c.leg) == 0 && m.legs[c.leg as usize].in_sync());
    let Some(src) = src.copied() else {
        return unquiesce_then_finish(r, "no in-sync copy left to rebuild from");
    };
    rb.tried |= 1 << src.leg;
    rb.src_leg = src.leg;
    rb.src_lba = src.lba;
    rb.writing = false;
    submit(r);
}

fn submit(r: *mut Rebuild) {
    // SAFETY: ours until `finish`.
    let rb = unsafe { &mut *r };
    let m = rb.mirror;
    let (leg, lba) = if rb.writing {
        (rb.target, rb.dst_lba)
    } else {
        (rb.src_leg, rb.src_lba)
    };
    let l = &m.legs[leg as usize];
    let ch = rb.chans[leg as usize];
    if ch.is_null() || !l.present() {
        return unquiesce_then_finish(r, "a leg went away during the rebuild");
    }
    // SAFETY: open desc and our channel on this thread; the buffer holds `len` blocks.
    let rc = unsafe {
        if rb.writing {
            sys::spdk_bdev_write_blocks(l.desc(), ch, rb.buf, lba, rb.len, Some(io_done), r as *mut c_void)
        } else {
            sys::spdk_bdev_read_blocks(l.desc(), ch, rb.buf, lba, rb.len, Some(io_done), r as *mut c_void)
        }
    };
    if rc == -libc::ENOMEM {
        rb.wait.bdev = l.bdev();
        rb.wait.cb_fn = Some(retry);
        rb.wait.cb_arg = r as *mut c_void;
        // SAFETY: the entry lives in the rebuild, which waits for it.
        if unsafe { sys::spdk_bdev_queue_io_wait(l.bdev(), ch, &mut rb.wait) } != 0 {
            retry(r as *mut c_void);
        }
    } else if rc != 0 {
        unquiesce_then_finish(r, "a rebuild I/O was refused");
    }
}

extern "C" fn retry(arg: *mut c_void) {
    guard("mirror rebuild retry", (), || submit(arg as *mut Rebuild))
}

extern "C" fn io_done(io: *mut sys::spdk_bdev_io, success: bool, arg: *mut c_void) {
    guard("mirror rebuild I/O", (), || {
        // SAFETY: completed child bdev_io, ours to free.
        unsafe { sys::spdk_bdev_free_io(io) };
        let r = arg as *mut Rebuild;
        // SAFETY: ours until `finish`.
        let rb = unsafe { &mut *r };
        match (rb.writing, success) {
            (false, true) => {
                rb.writing = true;
                submit(r);
            }
            (false, false) => {
                errlog!("mirror {}: rebuild read failed on leg {}", rb.mirror.name(), rb.src_leg);
                read_window(r);
            }
            (true, false) => {
                rb.mirror.fail_leg(rb.target, "rebuild write error");
                unquiesce_then_finish(r, "write to the new leg failed");
            }
            (true, true) => {
                progress(rb, rb.len, rb.len * rb.mirror.geo.block_size() as u64);
                let b = &rb.mirror.bdev as *const sys::spdk_bdev as *mut sys::spdk_bdev;
                // SAFETY: the range we quiesced; `r` lives until the callback.
                let rc = unsafe {
                    sys::spdk_bdev_unquiesce_range(b, module_ptr(), rb.pos, rb.len, Some(unquiesced), r as *mut c_void)
                };
                if rc != 0 {
                    finish(r, Err("cannot unquiesce".into()));
                }
            }
        }
    })
}

extern "C" fn unquiesced(arg: *mut c_void, _status: c_int) {
    guard("mirror rebuild", (), || {
        let r = arg as *mut Rebuild;
        // SAFETY: ours until `finish`.
        let rb = unsafe { &mut *r };
        rb.pos += rb.len;
        step(r);
    })
}

fn unquiesce_then_finish(r: *mut Rebuild, why: &'static str) {
    // SAFETY: ours until `finish`.
    let rb = unsafe { &mut *r };
    extern "C" fn after_unquiesce(arg: *mut c_void, _status: c_int) {
        guard("mirror rebuild", (), || {
            finish(arg as *mut Rebuild, Err("aborted".into()))
        })
    }
    errlog!("mirror {}: rebuild of leg {}: {why}", rb.mirror.name(), rb.target);
    let b = &rb.mirror.bdev as *const sys::spdk_bdev as *mut sys::spdk_bdev;
    // SAFETY: exactly the range we quiesced; `r` lives until the callback.
    let rc = unsafe {
        sys::spdk_bdev_unquiesce_range(b, module_ptr(), rb.pos, rb.len, Some(after_unquiesce), r as *mut c_void)
    };
    if rc != 0 {
        finish(r, Err(why.into()));
    }
}

fn finish(r: *mut Rebuild, result: Result<(), String>) {
    // SAFETY: the last use of the rebuild.
    let rb = unsafe { Box::from_raw(r) };
    let m = rb.mirror;
    for ch in rb.chans.iter().filter(|c| !c.is_null()) {
        // SAFETY: taken in `start` on this thread.
        unsafe { sys::spdk_put_io_channel(*ch) };
    }
    // SAFETY: allocated in `start`.
    unsafe { sys::spdk_dma_free(rb.buf) };
    let t = &m.legs[rb.target as usize];
    match result {
        Ok(()) => {
            t.write_only.store(false, Ordering::Release);
            m.leg_gen.fetch_add(1, Ordering::AcqRel);
            noticelog!(
                "mirror {}: rebuild of leg {} ({}) complete; the mirror is {}",
                m.name(),
                rb.target,
                t.name(),
                m.state()
            );
        }
        Err(e) => {
            errlog!("mirror {}: rebuild of leg {} stopped: {e}", m.name(), rb.target);
            if t.present() {
                m.fail_leg(rb.target, "rebuild did not finish");
            }
        }
    }
    if let Ok(mut s) = m.rebuild.lock() {
        *s = None;
    }
    m.rebuild_active.store(false, Ordering::Release);
    super::mirror::rebuild_finished(m);
}
