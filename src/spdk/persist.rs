//! The metadata writer: every metadata write is made on the mirror's thread, one at a time, so
//! they never race (its I/O goes from the level's reserve thread, `meta_io`); when one is
//! done, the writes parked on it are handed back to their cores, whose pollers resume them.
//! Also the lazy clear (md's daemon) and the tunables record.
//!
//! Every metadata write also reconciles the superblock's leg table with the legs' live state
//! (a failed or missing leg becomes `Failed`, a leg being rebuilt `Rebuilding`, a leg back in
//! sync `Active`) and bumps `events` when it changed, so assembly can tell stale legs.
//!
//! Every metadata write also carries the mirror's tunables (read policy, rebuild cap, pool
//! size, max parents) in their own record (`TunablesRecord`), with the generation of their last
//! change, so an assembled mirror starts with them. A change does not bump `events`.

use std::os::raw::c_void;
use std::ptr;
use std::sync::atomic::Ordering;

use spdk_sys as sys;

use super::callback::{end_chain, start_chain};
use super::error::Fail;
use super::ffi::{errlog, guard};
use super::meta_io::write_leg;
use super::metadata::{lock, Closing, MetaDone, Persist, ASSEMBLY_EVENTS};
use super::mirror::Mirror;
use super::reserve;
use crate::superblock::{LegRole, Superblock, Tunables, TunablesRecord, SUPERBLOCK_BYTES};

/// How often the mirror's thread looks for regions to clear.
const TICK_US: u64 = 1_000_000;

/// Asks the mirror's thread for a metadata write, from any thread.
pub fn kick(m: &Mirror) {
    let Some(p) = &m.persist else { return };
    if p.kick_queued.swap(true, Ordering::AcqRel) {
        return;
    }
    p.msgs.fetch_add(1, Ordering::AcqRel);
    extern "C" fn on_thread(arg: *mut c_void) {
        guard("mirror metadata kick", (), || {
            // SAFETY: the mirror is freed only once no message is in flight (`msgs`).
            let m = unsafe { &*(arg as *const Mirror) };
            if let Some(p) = &m.persist {
                p.kick_queued.store(false, Ordering::Release);
                write(m, None);
                p.msgs.fetch_sub(1, Ordering::AcqRel);
            }
        })
    }
    // SAFETY: the mirror's thread lives as long as the app; the mirror outlives the message.
    let rc = unsafe { sys::spdk_thread_send_msg(m.thread, Some(on_thread), m as *const Mirror as *mut c_void) };
    if rc != 0 {
        p.kick_queued.store(false, Ordering::Release);
        p.msgs.fetch_sub(1, Ordering::AcqRel);
        errlog!(
            "mirror {}: cannot reach the mirror's thread for a metadata write",
            m.name()
        );
    }
}

/// No metadata write is in flight or waiting to retry (mirror thread).
pub fn writer_idle(m: &Mirror) -> bool {
    let Some(p) = &m.persist else { return true };
    !lock(&p.writer).busy && p.retry.load(Ordering::Acquire).is_null()
}

/// Writes the metadata to every working leg (on the mirror's thread); `done` runs once a write
/// that started after this call is on the legs.
pub fn write(m: &'static Mirror, done: Option<MetaDone>) {
    let Some(p) = &m.persist else {
        if let Some(d) = done {
            d(Ok(()));
        }
        return;
    };
    let mut w = lock(&p.writer);
    if w.closed {
        drop(w);
        if let Some(d) = done {
            d(Err(Fail::plain(-libc::ENODEV, "the mirror is closing")));
        }
        return;
    }
    if let Some(d) = done {
        w.waiters.push(d);
    }
    if w.busy {
        w.again = true;
        return;
    }
    w.busy = true;
    drop(w);
    start(m);
}

/// A tunable of `m` changed (read policy, rebuild cap): writes it to the legs under a new
/// generation (on the mirror's thread, where RPCs run). `done` runs once a write that read the
/// new value is on the legs; at once for a mirror without a superblock, which keeps none.
pub fn record_tunables(m: &'static Mirror, done: MetaDone) {
    if let Some(p) = &m.persist {
        p.tunables_gen.fetch_add(1, Ordering::AcqRel);
    }
    write(m, Some(done));
}

/// The tunables `m` runs with now, as a record of their current generation.
pub fn tunables_record(m: &Mirror, p: &Persist) -> TunablesRecord {
    TunablesRecord {
        generation: p.tunables_gen.load(Ordering::Acquire),
        tunables: Tunables {
            read_policy: m.read_policy(),
            rebuild_max_mb_per_s: m.rebuild_max_mb.load(Ordering::Acquire),
            pool_size: m.opts.pool_size,
            max_parents: m.opts.max_parents,
        },
    }
}

/// The last write of a mirror's life (on its thread): a clean bitmap, or a zeroed superblock
/// when the mirror was deleted. `then` runs after it, whatever happened.
pub fn close(m: &'static Mirror, wipe: bool, then: Box<dyn FnOnce()>) {
    let Some(p) = &m.persist else { return then() };
    stop_ticking(m);
    let mut w = lock(&p.writer);
    if w.closed {
        drop(w);
        return then();
    }
    w.closing = Some(Closing { wipe, then });
    if w.busy {
        return;
    }
    w.busy = true;
    drop(w);
    start(m);
}

/// Starts the lazy clearing of idle regions (on the mirror's thread).
pub fn start_ticking(m: &'static Mirror) {
    let Some(p) = &m.persist else { return };
    extern "C" fn tick(arg: *mut c_void) -> i32 {
        guard("mirror bitmap tick", sys::SPDK_POLLER_IDLE as i32, || {
            // SAFETY: the poller is unregistered (`stop_ticking`) before the mirror goes.
            let m = unsafe { &*(arg as *const Mirror) };
            let Some(p) = &m.persist else {
                return sys::SPDK_POLLER_IDLE as i32;
            };
            if p.tick() {
                write(m, None);
                sys::SPDK_POLLER_BUSY as i32
            } else {
                sys::SPDK_POLLER_IDLE as i32
            }
        })
    }
    // SAFETY: the argument is the mirror, which unregisters the poller before it is freed.
    let poller = unsafe { sys::spdk_poller_register(Some(tick), m as *const Mirror as *mut c_void, TICK_US) };
    p.tick.store(poller, Ordering::Release);
}

fn stop_ticking(m: &Mirror) {
    if let Some(p) = &m.persist {
        let mut poller = p.tick.swap(ptr::null_mut(), Ordering::AcqRel);
        if !poller.is_null() {
            // SAFETY: registered on this (the mirror's) thread in `start_ticking`.
            unsafe { sys::spdk_poller_unregister(&mut poller) };
        }
    }
}

/// Brings the leg table in line with the legs; bumps `events` if anything changed.
fn reconcile(m: &Mirror, sb: &mut Superblock) {
    let mut changed = false;
    for (i, leg) in m.legs().iter().enumerate() {
        let e = &mut sb.legs[i];
        let role = if !leg.present() || leg.failed.load(Ordering::Acquire) {
            match e.role {
                LegRole::Active | LegRole::Rebuilding => LegRole::Failed,
                other => other,
            }
        } else if leg.write_only.load(Ordering::Acquire) {
            LegRole::Rebuilding
        } else {
            LegRole::Active
        };
        if role != e.role {
            e.failed_at_events = if role == LegRole::Failed { sb.events } else { 0 };
            e.role = role;
            changed = true;
        }
    }
    if changed {
        // Cannot wrap: assembly starts below MAX_EVENTS.
        sb.events += 1;
    }
}

/// One metadata write in flight.
struct MetaOp {
    m: &'static Mirror,
    /// The leg failures this write records.
    fail_gen: u64,
    remaining: u32,
    targets: u32,
    failed: u32,
    took_flush: bool,
    waiters: Vec<MetaDone>,
    closing: Option<Closing>,
}

fn start(m: &'static Mirror) {
    let p = m.persist.as_ref().expect("only mirrors with metadata write it");
    // Without a reserve thread the legs are written from here (`meta_io`). A channel may be
    // unobtainable for a moment (the shared spdk_bdev_io pool is empty): that is no fault of
    // the leg, so try again shortly rather than fail it.
    let short = reserve::thread(m.level()).is_null()
        && m.legs()
            .iter()
            .any(|l| l.present() && !l.failed.load(Ordering::Acquire) && l.app_channel().is_null());
    if short {
        extern "C" fn again(arg: *mut c_void) -> i32 {
            guard("mirror metadata retry", 0, || {
                // SAFETY: the mirror waits for its writer (busy) before it goes.
                let m = unsafe { &*(arg as *const Mirror) };
                if let Some(p) = &m.persist {
                    let mut poller = p.retry.swap(ptr::null_mut(), Ordering::AcqRel);
                    // SAFETY: our one-shot poller, on its thread.
                    unsafe { sys::spdk_poller_unregister(&mut poller) };
                }
                start(m);
                sys::SPDK_POLLER_BUSY as i32
            })
        }
        // SAFETY: the argument is the mirror, which outlives its busy writer.
        let poller = unsafe { sys::spdk_poller_register(Some(again), m as *const Mirror as *mut c_void, 1000) };
        p.retry.store(poller, Ordering::Release);
        return;
    }
    let (waiters, closing) = {
        let mut w = lock(&p.writer);
        w.again = false;
        let closing = w.closing.take();
        if closing.is_some() {
            w.closed = true;
        }
        (std::mem::take(&mut w.waiters), closing)
    };
    let wipe = closing.as_ref().is_some_and(|c| c.wipe);
    let (image, took_flush) = {
        let mut bm = p.bitmap();
        if closing.is_some() {
            (bm.clean_image(), false)
        } else {
            match bm.take_flush() {
                Some(img) => (img, true),
                None => (bm.on_disk().clone(), false),
            }
        }
    };
    // Read before the leg table is reconciled: every failure counted here had its leg marked
    // failed already (see `Mirror::fail_leg`), so this write records it.
    let fail_gen = m.fail_seen.load(Ordering::SeqCst);
    let sb = {
        let mut sb = p.superblock();
        reconcile(m, &mut sb);
        if p.assembly_bump.swap(false, Ordering::AcqRel) {
            sb.events += ASSEMBLY_EVENTS;
        }
        sb.clone()
    };
    // Read after the writer took the waiters: a change whose caller waits is in this write.
    let tunables = tunables_record(m, p);
    let op = start_chain(MetaOp {
        m,
        fail_gen,
        remaining: 1,
        targets: 0,
        failed: 0,
        took_flush,
        waiters,
        closing,
    });
    let bs = m.geo().block_size() as usize;
    let layout = p.layout();
    let blocks = layout.meta_blocks();
    let bitmap_at = layout.bitmap_offset_blocks as usize * bs;
    let bitmap_room = layout.bitmap_blocks as usize * bs;
    let image = image.to_bytes();
    for leg in m
        .legs()
        .iter()
        .filter(|l| l.present() && !l.failed.load(Ordering::Acquire))
    {
        // SAFETY: a zeroed DMA buffer of `blocks` blocks, freed in `leg_written`.
        let buf = unsafe { sys::spdk_dma_zmalloc(blocks as usize * bs, 0x1000, ptr::null_mut()) };
        // SAFETY: `op` is live until its last leg finishes.
        let o = unsafe { &mut *op };
        o.targets |= 1 << leg.index;
        if buf.is_null() {
            errlog!("mirror {}: no memory to write leg {}'s metadata", m.name(), leg.index);
            o.failed |= 1 << leg.index;
            continue;
        }
        if !wipe {
            let mut s = sb.clone();
            s.this_slot = leg.index;
            let bytes = s.encode_with(&tunables).unwrap_or_else(|_| vec![0; SUPERBLOCK_BYTES]);
            let n = image.len().min(bitmap_room);
            // SAFETY: the buffer holds `blocks` blocks: the superblock, then the bitmap area.
            unsafe {
                ptr::copy_nonoverlapping(bytes.as_ptr(), buf as *mut u8, SUPERBLOCK_BYTES);
                ptr::copy_nonoverlapping(image.as_ptr(), (buf as *mut u8).add(bitmap_at), n);
            }
        }
        o.remaining += 1;
        let (opp, bufp, index) = (op as usize, buf as usize, leg.index);
        write_leg(
            m,
            index,
            buf,
            blocks,
            Box::new(move |ok| leg_written(opp as *mut MetaOp, index, bufp as *mut c_void, ok)),
        );
    }
    op_put(op);
}

/// Leg `leg`'s part of `op` is over (mirror thread).
fn leg_written(op: *mut MetaOp, leg: u32, buf: *mut c_void, success: bool) {
    // SAFETY: allocated in `start`; the write is over.
    unsafe { sys::spdk_dma_free(buf) };
    if !success {
        // SAFETY: the op is live until `op_put` drops its last reference.
        let o = unsafe { &mut *op };
        errlog!("mirror {}: metadata write to leg {leg} failed", o.m.name());
        o.failed |= 1 << leg;
    }
    op_put(op);
}

fn op_put(op: *mut MetaOp) {
    // SAFETY: live until the last reference (this one, when `remaining` reaches 0).
    let o = unsafe { &mut *op };
    o.remaining -= 1;
    if o.remaining > 0 {
        return;
    }
    // SAFETY: last reference.
    let o = unsafe { end_chain(op) };
    let m = o.m;
    let p = m.persist.as_ref().expect("metadata op of a mirror with metadata");
    if o.took_flush {
        let tokens = {
            let mut bm = p.bitmap();
            let t = bm.flush_done();
            p.refresh_fast(&bm);
            t
        };
        if !tokens.is_empty() {
            let n = tokens.len() as u32;
            lock(&p.ready).extend(tokens);
            p.ready_count.fetch_add(n, Ordering::AcqRel);
        }
    }
    let result = if o.targets == 0 {
        Err(Fail::plain(-libc::ENODEV, "no working leg to write the metadata to"))
    } else if o.failed == o.targets {
        Err(Fail::plain(-libc::EIO, "the metadata write failed on every leg"))
    } else {
        Ok(())
    };
    for leg in 0..32 {
        if o.failed & (1 << leg) != 0 && o.closing.is_none() {
            m.fail_leg(leg, "metadata write failed");
        }
    }
    // Held acknowledgements may go (if every leg failed there is nothing left to protect).
    m.fail_gen_durable.fetch_max(o.fail_gen, Ordering::SeqCst);
    for w in o.waiters {
        w(result.clone());
    }
    if let Some(c) = o.closing {
        (c.then)();
        return;
    }
    let mut w = lock(&p.writer);
    if w.again || !w.waiters.is_empty() || w.closing.is_some() {
        drop(w);
        start(m);
    } else {
        w.busy = false;
    }
}
