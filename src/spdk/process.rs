//! A mirror's background process, one at a time: `rebuild` (a new leg, every block),
//! `recovery` (a returning leg, only the bitmap regions written while it was away), `resync`
//! (after an unclean shutdown, the regions the bitmap says may differ) and `check` (compare the
//! copies, md's check/repair).
//!
//! All work in windows (a chunk for RAID10, at most 1 MiB, never across a placement run).
//! Each window's mirror LBA range is quiesced (`spdk_bdev_quiesce_range`) while it is read and
//! written, so no host write lands between the read and the writes; host writes elsewhere go to
//! every working leg, a leg being rebuilt included, so what was copied stays in sync. The source
//! of a window is its first in-sync copy in placement order, the copy reads of unsynced regions
//! are pinned to. A bandwidth cap (`rebuild_max_mb_per_s`, MiB/s) delays the next window until
//! the average rate is back under it. A rebuild or recovery ends with the whole mirror quiesced:
//! writes that skipped the target before it was attached are complete then, and what they missed
//! is copied before the target turns readable.

use std::os::raw::{c_int, c_void};
use std::ptr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use spdk_sys as sys;

use super::callback::{end_chain, start_chain};
use super::error::Fail;
use super::ffi::{errlog, guard, noticelog};
use super::mirror::Mirror;
use super::module::module_ptr;
pub use super::process_status::{Kind, Outcome, ProcessDone};
use super::process_status::{ProcessStatus, MIB};
use crate::bitmap::Bits;
use crate::placement::{Copy, Level, MAX_LEGS};

const MAX_CREDIT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    ReadSource,
    /// Check: reading copy `i` of `dsts`.
    ReadCopy(usize),
    /// Writing the source data to `dsts[i]`.
    Write(usize),
}

struct Job {
    mirror: &'static Mirror,
    kind: Kind,
    target: Option<u32>,
    /// The leg whose placement the target takes: the target itself, or the leg a
    /// replacement (the target) is for.
    follows: Option<u32>,
    ranges: Vec<(u64, u64)>,
    range: usize,
    pos: u64,
    window: u64,
    len: u64,
    src: Copy,
    dsts: Vec<Copy>,
    /// Check: how many blocks of each copy in `dsts` differ from the source in this window.
    differ: Vec<u64>,
    /// Check: which copies in `dsts` could not be read in this window (rewritten whole).
    unread: Vec<bool>,
    tried: u32,
    stage: Stage,
    /// `copies` windows: the source's data first, then each copy read by a check.
    buf: *mut c_void,
    wait: sys::spdk_bdev_io_wait_entry,
    delay: *mut sys::spdk_poller,
    started: Instant,
    /// Bytes read from sources so far: what the bandwidth cap measures.
    bytes: u64,
    outcome: Outcome,
    /// Recovery: bitmap regions copied so far.
    regions_done: Option<Bits>,
    done: Option<ProcessDone>,
}

/// A process slot taken and its buffer allocated, not started yet: what a leg addition needs
/// before it changes anything, so that a failure afterwards is impossible. Dropped unstarted,
/// it gives the slot back.
pub struct Reserved {
    m: &'static Mirror,
    kind: Kind,
    target: Option<u32>,
    window: u64,
    buf: *mut c_void,
}

/// Takes the mirror's one process slot for `kind` and allocates its buffer.
pub fn reserve(m: &'static Mirror, kind: Kind, target: Option<u32>) -> Result<Reserved, Fail> {
    if m.process_active.swap(true, Ordering::AcqRel) {
        return Err(Fail::plain(-libc::EBUSY, "another process is running"));
    }
    let bs = m.geo().block_size() as u64;
    // At most 1 MiB per window (a RAID10 chunk may be far larger): windows never cross a
    // placement run (`run_len`), whatever their size.
    let mib = ((1 << 20) / bs).max(1);
    let window = match m.geo().level() {
        Level::Raid10 => m.geo().chunk_blocks().min(mib),
        Level::Raid1 => mib,
    }
    .min(m.geo().data_blocks());
    let copies = m.geo().copies() as u64;
    // SAFETY: plain DMA-able allocation, freed in `finish` (or when the reservation is dropped).
    let buf = unsafe { sys::spdk_dma_malloc((window * bs * copies) as usize, 0x1000, ptr::null_mut()) };
    if buf.is_null() {
        m.process_active.store(false, Ordering::Release);
        return Err(Fail::plain(
            -libc::ENOMEM,
            format!("cannot allocate a {} KiB buffer", window * bs * copies / 1024),
        ));
    }
    Ok(Reserved {
        m,
        kind,
        target,
        window,
        buf,
    })
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if self.buf.is_null() {
            return; // started: the job owns the buffer and the slot
        }
        // SAFETY: allocated in `reserve`, never handed to a job.
        unsafe { sys::spdk_dma_free(self.buf) };
        self.m.process_active.store(false, Ordering::Release);
        // A deletion may have waited for the slot.
        self.m.process_finished();
    }
}

/// Starts a process over the mirror `ranges` (start, blocks). `target`: the leg a rebuild or
/// recovery writes.
pub fn start(
    m: &'static Mirror,
    kind: Kind,
    target: Option<u32>,
    ranges: Vec<(u64, u64)>,
    done: Option<ProcessDone>,
) -> Result<(), Fail> {
    reserve(m, kind, target)?.start(ranges, done);
    Ok(())
}

impl Reserved {
    /// Runs the reserved process over the mirror `ranges` (start, blocks).
    pub fn start(mut self, ranges: Vec<(u64, u64)>, done: Option<ProcessDone>) {
        let (m, kind, target, window) = (self.m, self.kind, self.target, self.window);
        let buf = std::mem::replace(&mut self.buf, ptr::null_mut());
        drop(self);
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        let target_name = target.map(|t| m.slot(t).name());
        if let Ok(mut s) = m.process.lock() {
            *s = Some(ProcessStatus {
                kind,
                target,
                target_name: target_name.clone(),
                blocks_done: 0,
                blocks_total: total,
                bytes_copied: 0,
                started: Instant::now(),
            });
        }
        noticelog!(
            "mirror {}: {} started{} over {} blocks",
            m.name(),
            kind.name(),
            target_name.map(|n| format!(" onto leg {n}")).unwrap_or_default(),
            total
        );
        let pos = ranges.first().map(|r| r.0).unwrap_or(0);
        let j = start_chain(Job {
            mirror: m,
            kind,
            target,
            follows: if kind == Kind::Replace { m.replacing() } else { target },
            ranges,
            range: 0,
            pos,
            window,
            len: 0,
            src: Copy { leg: 0, lba: 0 },
            dsts: Vec::with_capacity(MAX_LEGS),
            differ: Vec::with_capacity(MAX_LEGS),
            unread: Vec::with_capacity(MAX_LEGS),
            tried: 0,
            stage: Stage::ReadSource,
            buf,
            wait: sys::spdk_bdev_io_wait_entry::default(),
            delay: ptr::null_mut(),
            started: Instant::now(),
            bytes: 0,
            outcome: Outcome::default(),
            regions_done: m
                .persist
                .as_ref()
                .filter(|_| kind == Kind::Recovery)
                .map(|p| Bits::new(p.layout().regions as usize)),
            done,
        });
        step(j);
    }
}

fn progress(j: &Job, blocks: u64, copied: u64) {
    if let Ok(mut s) = j.mirror.process.lock() {
        if let Some(s) = s.as_mut() {
            s.blocks_done += blocks;
            s.bytes_copied += copied;
        }
    }
}

/// Finds the next window with work, waits for the bandwidth cap, quiesces it.
fn step(j: *mut Job) {
    // SAFETY: the job is ours until `finish` frees it.
    let jb = unsafe { &mut *j };
    let m = jb.mirror;
    loop {
        if m.deleting.load(Ordering::Acquire) {
            return finish(
                j,
                Err(Fail::plain(-libc::ECANCELED, "cancelled: the mirror is going away")),
            );
        }
        if let Some(t) = jb.target {
            let t = m.slot(t);
            if !t.present() || t.failed.load(Ordering::Acquire) {
                return finish(
                    j,
                    Err(Fail::plain(-libc::ECANCELED, "cancelled: the target leg went away")),
                );
            }
        }
        let Some(&(start, blocks)) = jb.ranges.get(jb.range) else {
            // A replacement needs no final pass: every write since it was attached also went
            // to it, and the swap that ends it quiesces the mirror anyway.
            if jb.target.is_some() && jb.kind != Kind::Replace {
                return quiesce_all(j);
            }
            return finish(j, Ok(()));
        };
        if jb.pos >= start + blocks {
            range_done(jb);
            jb.range += 1;
            if let Some(&(s, _)) = jb.ranges.get(jb.range) {
                jb.pos = s;
            }
            continue;
        }
        jb.len = jb.window.min(start + blocks - jb.pos).min(m.geo().run_len(jb.pos));
        if let Some(t) = jb.follows {
            if m.geo().map_unchecked(jb.pos).on_leg(t).is_none() {
                progress(jb, jb.len, 0);
                jb.pos += jb.len;
                continue;
            }
        }
        break;
    }
    // The cap: wait until the bytes done so far fit the allowed rate.
    let cap = m.rebuild_max_mb.load(Ordering::Acquire);
    if cap > 0 {
        let due = Duration::from_secs_f64(jb.bytes as f64 / (cap as f64 * MIB));
        let mut elapsed = jb.started.elapsed();
        // Time the process fell behind (host load, a slow leg) is not saved up for a burst
        // above the cap later: at most half a second of credit.
        if elapsed > due + MAX_CREDIT {
            jb.started += elapsed - due - MAX_CREDIT;
            elapsed = due + MAX_CREDIT;
        }
        if due > elapsed {
            extern "C" fn resume(arg: *mut c_void) -> c_int {
                guard("mirror process delay", 0, || {
                    let j = arg as *mut Job;
                    // SAFETY: the job waits for this poller, unregistered here.
                    unsafe { sys::spdk_poller_unregister(&mut (*j).delay) };
                    quiesce(j);
                    sys::SPDK_POLLER_BUSY as c_int
                })
            }
            let us = (due - elapsed).as_micros().max(1) as u64;
            // SAFETY: the job outlives the poller (unregistered when it fires).
            jb.delay = unsafe { sys::spdk_poller_register(Some(resume), j as *mut c_void, us) };
            if !jb.delay.is_null() {
                return;
            }
        }
    }
    quiesce(j);
}

fn quiesce(j: *mut Job) {
    // SAFETY: ours until `finish`.
    let jb = unsafe { &mut *j };
    // The cap's delay may end after a delete or shutdown began: never quiesce then.
    if jb.mirror.deleting.load(Ordering::Acquire) {
        return finish(
            j,
            Err(Fail::plain(-libc::ECANCELED, "cancelled: the mirror is going away")),
        );
    }
    let b = jb.mirror.bdev_ptr();
    // SAFETY: our registered bdev; `j` lives until the callback.
    let rc = unsafe { sys::spdk_bdev_quiesce_range(b, module_ptr(), jb.pos, jb.len, Some(quiesced), j as *mut c_void) };
    if rc != 0 {
        finish(
            j,
            Err(Fail::plain(
                rc,
                format!(
                    "cannot quiesce blocks {}+{}: {}",
                    jb.pos,
                    jb.len,
                    std::io::Error::from_raw_os_error(-rc)
                ),
            )),
        );
    }
}

/// The last step of a rebuild or recovery: with the whole mirror quiesced, every host write
/// is complete, including any planned before the target was attached that skipped it; each such
/// write marked its regions missed when it completed. The target is in sync only if no region
/// is left that the process has not copied since; otherwise those regions are copied first.
fn quiesce_all(j: *mut Job) {
    // SAFETY: ours until `finish`.
    let jb = unsafe { &mut *j };
    let b = jb.mirror.bdev_ptr();
    // SAFETY: our registered bdev; `j` lives until the callback.
    let rc = unsafe { sys::spdk_bdev_quiesce(b, module_ptr(), Some(all_quiesced), j as *mut c_void) };
    if rc != 0 {
        finish(
            j,
            Err(Fail::plain(
                rc,
                format!("cannot quiesce the mirror: {}", std::io::Error::from_raw_os_error(-rc)),
            )),
        );
    }
}

extern "C" fn all_quiesced(arg: *mut c_void, status: c_int) {
    guard("mirror process", (), || {
        let j = arg as *mut Job;
        if status != 0 {
            return finish(j, Err(Fail::plain(status, format!("quiesce failed: {status}"))));
        }
        // SAFETY: ours until `finish`.
        let jb = unsafe { &mut *j };
        let m = jb.mirror;
        let more = match (&m.persist, &jb.regions_done) {
            (Some(p), Some(done)) => p.missed_ranges(m.geo().data_blocks(), Some(done)),
            _ => Vec::new(),
        };
        let t = jb.target.map(|t| m.slot(t));
        let target_ok = t.is_some_and(|t| t.present() && !t.failed.load(Ordering::Acquire));
        let in_sync = more.is_empty() && target_ok;
        if in_sync {
            // Nothing is in flight: the leg turns readable between two host I/Os.
            mark_in_sync(jb);
        } else {
            let extra: u64 = more.iter().map(|r| r.1).sum();
            if let Ok(mut s) = m.process.lock() {
                if let Some(s) = s.as_mut() {
                    s.blocks_total += extra;
                }
            }
            jb.ranges.extend(more);
            if let Some(&(s, _)) = jb.ranges.get(jb.range) {
                jb.pos = s;
            }
        }
        extern "C" fn unquiesced_all(arg: *mut c_void, status: c_int) {
            guard("mirror process", (), || {
                let j = arg as *mut Job;
                // SAFETY: ours until `finish`.
                let jb = unsafe { &*j };
                let done = jb
                    .target
                    .is_some_and(|t| !jb.mirror.slot(t).write_only.load(Ordering::Acquire));
                match (done, status) {
                    (true, _) => finish(j, Ok(())),
                    (false, 0) => step(j),
                    (false, rc) => finish(j, Err(Fail::plain(rc, format!("cannot unquiesce the mirror: {rc}")))),
                }
            })
        }
        let b = m.bdev_ptr();
        // SAFETY: the bdev we quiesced; `j` lives until the callback.
        let rc = unsafe { sys::spdk_bdev_unquiesce(b, module_ptr(), Some(unquiesced_all), j as *mut c_void) };
        if rc != 0 {
            finish(j, Err(Fail::plain(-libc::EIO, "cannot unquiesce the mirror")));
        }
    })
}

/// The target holds every block: readable from now on; with every leg in sync, nothing is
/// missed any more. Runs with the mirror quiesced, so no write can mark a region meanwhile.
fn mark_in_sync(jb: &Job) {
    let m = jb.mirror;
    let Some(t) = jb.target else { return };
    m.slot(t).write_only.store(false, Ordering::Release);
    m.leg_gen.fetch_add(1, Ordering::AcqRel);
    if let Some(p) = &m.persist {
        if m.legs().iter().all(|l| l.in_sync()) {
            p.bitmap().forget_missed();
        }
    }
}

extern "C" fn quiesced(arg: *mut c_void, status: c_int) {
    guard("mirror process", (), || {
        let j = arg as *mut Job;
        if status != 0 {
            return finish(j, Err(Fail::plain(status, format!("quiesce failed: {status}"))));
        }
        // SAFETY: ours until `finish`.
        unsafe { (*j).tried = 0 };
        read_source(j);
    })
}

/// Picks the window's source, the first in-sync copy in placement order not yet tried, and the
/// copies to write (or compare), then reads the source.
fn read_source(j: *mut Job) {
    // SAFETY: ours until `finish`.
    let jb = unsafe { &mut *j };
    let m = jb.mirror;
    let copies = m.geo().map_unchecked(jb.pos);
    let src = copies
        .as_slice()
        .iter()
        .find(|c| Some(c.leg) != jb.target && jb.tried & (1 << c.leg) == 0 && m.slot(c.leg).in_sync())
        .copied();
    let Some(src) = src else {
        return unquiesce_then_finish(j, "no in-sync copy left to read");
    };
    jb.tried |= 1 << src.leg;
    jb.src = src;
    jb.dsts.clear();
    if let (Kind::Replace, Some(t), Some(f)) = (jb.kind, jb.target, jb.follows) {
        // The replaced leg's copy, written to the replacement at the same leg LBA.
        if let Some(c) = copies.as_slice().iter().find(|c| c.leg == f) {
            jb.dsts.push(Copy { leg: t, lba: c.lba });
        }
    }
    for c in copies
        .as_slice()
        .iter()
        .filter(|c| c.leg != src.leg && jb.kind != Kind::Replace)
    {
        let l = m.slot(c.leg);
        let wanted = match jb.kind {
            Kind::Rebuild | Kind::Recovery | Kind::Replace => Some(c.leg) == jb.target,
            Kind::Resync => l.present() && !l.failed.load(Ordering::Acquire),
            Kind::Check { .. } => l.in_sync(),
        };
        if wanted {
            jb.dsts.push(*c);
        }
    }
    jb.differ.clear();
    jb.differ.resize(jb.dsts.len(), 0);
    jb.unread.clear();
    jb.unread.resize(jb.dsts.len(), false);
    jb.stage = Stage::ReadSource;
    submit(j);
}

fn window_buf(jb: &Job, i: usize) -> *mut c_void {
    let bytes = (jb.window * jb.mirror.geo().block_size() as u64) as usize;
    // SAFETY: the buffer holds `copies` windows and `i` < copies.
    unsafe { (jb.buf as *mut u8).add(i * bytes) as *mut c_void }
}

fn submit(j: *mut Job) {
    // SAFETY: ours until `finish`.
    let jb = unsafe { &mut *j };
    let m = jb.mirror;
    let (copy, buf, write) = match jb.stage {
        Stage::ReadSource => (jb.src, window_buf(jb, 0), false),
        Stage::ReadCopy(i) => (jb.dsts[i], window_buf(jb, i + 1), false),
        Stage::Write(i) => (jb.dsts[i], window_buf(jb, 0), true),
    };
    let l = m.slot(copy.leg);
    let ch = l.app_channel();
    if ch.is_null() || !l.present() {
        return unquiesce_then_finish(j, "a leg went away");
    }
    let lba = copy.lba + m.data_offset;
    // SAFETY: open desc and our channel on this thread; the buffer holds `len` blocks.
    let rc = unsafe {
        if write {
            sys::spdk_bdev_write_blocks(l.desc(), ch, buf, lba, jb.len, Some(io_done), j as *mut c_void)
        } else {
            sys::spdk_bdev_read_blocks(l.desc(), ch, buf, lba, jb.len, Some(io_done), j as *mut c_void)
        }
    };
    extern "C" fn retry(arg: *mut c_void) {
        guard("mirror process retry", (), || submit(arg as *mut Job))
    }
    // SAFETY: the wait entry lives in the job, which waits for it.
    if !unsafe { l.submitted(rc, ch, &mut jb.wait, retry, j as *mut c_void) } {
        unquiesce_then_finish(j, "an I/O was refused");
    }
}

extern "C" fn io_done(io: *mut sys::spdk_bdev_io, success: bool, arg: *mut c_void) {
    guard("mirror process I/O", (), || {
        // SAFETY: completed child bdev_io, ours to free.
        unsafe { sys::spdk_bdev_free_io(io) };
        let j = arg as *mut Job;
        // SAFETY: ours until `finish`.
        let jb = unsafe { &mut *j };
        let m = jb.mirror;
        let leg = match jb.stage {
            Stage::ReadSource => jb.src.leg,
            Stage::ReadCopy(i) | Stage::Write(i) => jb.dsts[i].leg,
        };
        m.slot(leg).app_io_done();
        match (jb.stage, success) {
            (Stage::ReadSource, false) => {
                errlog!(
                    "mirror {}: {} read failed on leg {}",
                    m.name(),
                    jb.kind.name(),
                    jb.src.leg
                );
                read_source(j)
            }
            (Stage::ReadSource, true) => {
                jb.bytes += jb.len * m.geo().block_size() as u64;
                jb.stage = match jb.kind {
                    Kind::Check { .. } => Stage::ReadCopy(0),
                    _ => Stage::Write(0),
                };
                next_io(j)
            }
            (Stage::ReadCopy(i), ok) => {
                compare(jb, i, ok);
                jb.stage = Stage::ReadCopy(i + 1);
                next_io(j)
            }
            (Stage::Write(i), false) => {
                let leg = jb.dsts[i].leg;
                m.fail_leg(leg, &format!("{} write error", jb.kind.name()));
                if Some(leg) == jb.target {
                    return unquiesce_then_finish(j, "write to the target leg failed");
                }
                jb.stage = Stage::Write(i + 1);
                next_io(j)
            }
            (Stage::Write(i), true) => {
                if let Kind::Check { .. } = jb.kind {
                    jb.outcome.repaired_blocks += jb.differ[i];
                }
                jb.stage = Stage::Write(i + 1);
                next_io(j)
            }
        }
    })
}

/// Check: compares copy `i` with the source, block by block. A copy that could not be read
/// is counted unreadable, and its window is rewritten from the source (a failing rewrite fails
/// the leg, as any write error does).
fn compare(jb: &mut Job, i: usize, read_ok: bool) {
    let m = jb.mirror;
    let bs = m.geo().block_size() as usize;
    if !read_ok {
        errlog!(
            "mirror {}: check could not read leg {} (blocks {}..{} of the mirror); rewriting them from leg {}",
            m.name(),
            jb.dsts[i].leg,
            jb.pos,
            jb.pos + jb.len,
            jb.src.leg
        );
        jb.outcome.unreadable_blocks += jb.len;
        jb.unread[i] = true;
        jb.differ[i] = jb.len;
        return;
    }
    // SAFETY: both windows hold `len` blocks just read.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(window_buf(jb, 0) as *const u8, jb.len as usize * bs),
            std::slice::from_raw_parts(window_buf(jb, i + 1) as *const u8, jb.len as usize * bs),
        )
    };
    let differ = a.chunks(bs).zip(b.chunks(bs)).filter(|(x, y)| x != y).count() as u64;
    jb.outcome.mismatch_blocks += differ;
    jb.differ[i] = differ;
}

/// Issues the window's next read or write, or closes the window when none is left.
fn next_io(j: *mut Job) {
    // SAFETY: ours until `finish`.
    let jb = unsafe { &mut *j };
    loop {
        match jb.stage {
            Stage::ReadCopy(i) if i < jb.dsts.len() => return submit(j),
            Stage::ReadCopy(_) => {
                jb.stage = Stage::Write(0);
            }
            Stage::Write(i) if i < jb.dsts.len() => {
                let skip = match jb.kind {
                    // An unreadable copy is rewritten even by a plain check, as md's is.
                    Kind::Check { repair } => !(jb.unread[i] || (repair && jb.differ[i] != 0)),
                    _ => !jb.mirror.slot(jb.dsts[i].leg).present(),
                };
                if !skip {
                    return submit(j);
                }
                jb.stage = Stage::Write(i + 1);
            }
            _ => break,
        }
    }
    let m = jb.mirror;
    let copied = match jb.kind {
        Kind::Check { .. } => 0,
        _ => jb.len * m.geo().block_size() as u64,
    };
    if let Kind::Check { .. } = jb.kind {
        jb.outcome.blocks_checked += jb.len;
    }
    progress(jb, jb.len, copied);
    let b = m.bdev_ptr();
    // SAFETY: the range we quiesced; `j` lives until the callback.
    let rc =
        unsafe { sys::spdk_bdev_unquiesce_range(b, module_ptr(), jb.pos, jb.len, Some(unquiesced), j as *mut c_void) };
    if rc != 0 {
        finish(j, Err(Fail::plain(-libc::EIO, "cannot unquiesce")));
    }
}

extern "C" fn unquiesced(arg: *mut c_void, _status: c_int) {
    guard("mirror process", (), || {
        let j = arg as *mut Job;
        // SAFETY: ours until `finish`.
        let jb = unsafe { &mut *j };
        jb.pos += jb.len;
        if jb.kind == Kind::Resync {
            regions_synced(jb, jb.pos - jb.len, jb.pos);
        }
        step(j);
    })
}

/// Resync: the regions whose last block the window `from..upto` copied are in sync now
/// (ranges start on region boundaries, so no region before `from` is left out).
fn regions_synced(jb: &Job, from: u64, upto: u64) {
    let Some(p) = &jb.mirror.persist else { return };
    let rb = p.layout().region_blocks;
    for r in from / rb..upto / rb {
        p.region_synced(r as usize);
    }
}

/// The current range is copied: a recovery notes its regions done, a resync releases them
/// (the last region of the mirror may be partial, so it is not caught per window).
fn range_done(jb: &mut Job) {
    let (Some(p), Some(&(start, blocks))) = (jb.mirror.persist.as_ref(), jb.ranges.get(jb.range)) else {
        return;
    };
    let rb = p.layout().region_blocks;
    for r in (start / rb) as usize..(start + blocks).div_ceil(rb) as usize {
        if let Some(done) = jb.regions_done.as_mut() {
            done.set(r, true);
        }
        if jb.kind == Kind::Resync {
            p.region_synced(r);
        }
    }
}

fn unquiesce_then_finish(j: *mut Job, why: &'static str) {
    // SAFETY: ours until `finish`.
    let jb = unsafe { &mut *j };
    extern "C" fn after_unquiesce(arg: *mut c_void, _status: c_int) {
        guard("mirror process", (), || {
            finish(arg as *mut Job, Err(Fail::plain(-libc::EIO, "aborted")))
        })
    }
    errlog!("mirror {}: {}: {why}", jb.mirror.name(), jb.kind.name());
    let b = jb.mirror.bdev_ptr();
    // SAFETY: exactly the range we quiesced; `j` lives until the callback.
    let rc = unsafe {
        sys::spdk_bdev_unquiesce_range(b, module_ptr(), jb.pos, jb.len, Some(after_unquiesce), j as *mut c_void)
    };
    if rc != 0 {
        finish(j, Err(Fail::plain(-libc::EIO, why)));
    }
}

fn finish(j: *mut Job, result: Result<(), Fail>) {
    // SAFETY: the last use of the job.
    let mut jb = unsafe { end_chain(j) };
    let m = jb.mirror;
    // SAFETY: allocated in `start`.
    unsafe { sys::spdk_dma_free(jb.buf) };
    let result = result.map(|_| jb.outcome);
    match (&result, jb.target) {
        (Ok(_), Some(t)) => {
            // `mark_in_sync` ran while the mirror was quiesced.
            let l = m.slot(t);
            noticelog!(
                "mirror {}: {} of leg {} ({}) complete; the mirror is {}",
                m.name(),
                jb.kind.name(),
                t,
                l.name(),
                m.state()
            );
        }
        (Ok(o), None) => match jb.kind {
            Kind::Check { .. } => noticelog!(
                "mirror {}: check complete: {} of {} blocks mismatched, {} unreadable, {} repaired",
                m.name(),
                o.mismatch_blocks,
                o.blocks_checked,
                o.unreadable_blocks,
                o.repaired_blocks
            ),
            kind => noticelog!("mirror {}: {} complete", m.name(), kind.name()),
        },
        (Err(e), target) => {
            errlog!("mirror {}: {} stopped: {e}", m.name(), jb.kind.name());
            if let Some(t) = target {
                if m.slot(t).present() {
                    m.fail_leg(t, "its recovery did not finish");
                }
            }
        }
    }
    let ended = m
        .process
        .lock()
        .ok()
        .and_then(|mut s| s.take())
        .map(|s| s.ended(&result));
    if let (Some(v), Ok(mut last)) = (ended, m.last_process.lock()) {
        *last = Some(v);
    }
    m.process_active.store(false, Ordering::Release);
    super::persist::kick(m);
    if let Some(done) = jb.done.take() {
        done(result);
    }
    m.process_finished();
}
