//! Assembly: the bdev module's examine path reads every new bdev's block 0; a mirror superblock
//! there makes the bdev a candidate leg of that mirror (by its uuid). The mirror is registered
//! again, under its old name and uuid, once every leg its newest superblock calls active is
//! there with that newest `events` (in any order); if some never come (missing, or rejected for
//! a bad superblock) but the fresh legs hold every block, it assembles degraded after the
//! module's `degraded_grace_ms` (never, with `degraded_assembly: false`; see `options.rs`).
//! Legs whose superblock is older (stale) are not trusted: they join afterwards and
//! are recovered, from the bitmap when it covers their absence, else by a full rebuild. Which
//! copy is the truth and which leg serves each slot is decided by `choose_legs` (pure, in
//! `superblock/assembly.rs`) from the superblocks alone, never from the order the bdevs
//! appeared in.

use std::os::raw::{c_int, c_void};
use std::ptr;
use std::sync::Mutex;

use spdk_sys as sys;

use super::callback::{end_chain, into_arg, start_chain, take_arg};
use super::create::{self, CreateSpec, PersistSpec};
use super::deferred;
use super::error::Fail;
use super::ffi::{bdev_name, errlog, guard, noticelog, warnlog};
use super::join;
use super::mirror::{self, Mirror, MirrorOpts, DEFAULT_MAX_PARENTS, DEFAULT_POOL_SIZE};
use super::module::module_ptr;
use super::options;
use super::process::{self, Kind};
use super::scratch::ScratchBdev;
use super::uuid;
use crate::bitmap::{resync_plan, Bits};
use crate::engine::ReadPolicy;
use crate::superblock::{
    choose_legs, rejoin, restore_tunables, slot_by_uuid, Assembly, LegRole, Rejection, Rejoin, Restored, Superblock,
    SuperblockError, Tunables, TunablesRead, TunablesRecord, MAX_EVENTS, SUPERBLOCK_BYTES,
};

/// A bdev that carries a mirror superblock.
pub struct Found {
    pub bdev: String,
    /// The uuid of the bdev it was read from: a bdev of the same name registered after that
    /// one went away is another bdev (`still_there`).
    pub bdev_uuid: [u8; 16],
    pub sb: Superblock,
    /// The bitmap as read, sized by this leg's own superblock: it is only turned into bits
    /// against the geometry the mirror is assembled with.
    pub bitmap: Vec<u8>,
    /// The tunables record beside the superblock (decoded apart: a bad one costs only the
    /// tunables, never the leg).
    pub tunables: TunablesRead,
}

pub type ReadDone = Box<dyn FnOnce(Result<Option<Found>, Fail>)>;

struct Reader {
    name: String,
    io: ScratchBdev,
    sb: Option<Superblock>,
    done: Option<ReadDone>,
}

/// Reads bdev `name`'s superblock and bitmap: `Ok(None)` when it carries no mirror superblock,
/// `Err` when it carries a bad one (the message says what is wrong).
pub fn read_superblock(name: &str, done: ReadDone) {
    let Ok(cname) = std::ffi::CString::new(name) else {
        return done(Ok(None));
    };
    // Every bdev is examined: read only the superblock's blocks at first.
    let blocks = |bs: u64| (SUPERBLOCK_BYTES as u64).div_ceil(bs);
    let io = match ScratchBdev::open(&cname, false, blocks) {
        Ok(io) => io,
        Err(rc) => {
            return done(Err(Fail::plain(
                rc,
                format!("cannot open: {}", std::io::Error::from_raw_os_error(-rc)),
            )))
        }
    };
    let (ready, n, blocks) = (io.ready(), io.num_blocks(), blocks(io.bs));
    let r = start_chain(Reader {
        name: name.to_string(),
        io,
        sb: None,
        done: Some(done),
    });
    if !ready {
        return read_finished(r, Err(Fail::plain(-libc::EIO, "no memory to read the superblock")));
    }
    // Fewer blocks than the reserved area only lack a superblock.
    if n < blocks {
        return read_finished(r, Ok(None));
    }
    read_blocks(r, blocks);
}

fn read_blocks(r: *mut Reader, blocks: u64) {
    // SAFETY: ours until `read_finished`.
    let rd = unsafe { &mut *r };
    // SAFETY: open desc, this thread's channel, a buffer of at least `blocks` blocks.
    let rc = unsafe {
        sys::spdk_bdev_read_blocks(
            rd.io.desc,
            rd.io.ch,
            rd.io.buf,
            0,
            blocks,
            Some(read_done),
            r as *mut c_void,
        )
    };
    if rc != 0 {
        read_finished(
            r,
            Err(Fail::plain(
                rc,
                format!("cannot read: {}", std::io::Error::from_raw_os_error(-rc)),
            )),
        );
    }
}

extern "C" fn read_done(io: *mut sys::spdk_bdev_io, success: bool, arg: *mut c_void) {
    guard("mirror examine read", (), || {
        // SAFETY: a completed I/O of ours.
        unsafe { sys::spdk_bdev_free_io(io) };
        let r = arg as *mut Reader;
        if !success {
            return read_finished(r, Err(Fail::plain(-libc::EIO, "read error")));
        }
        // SAFETY: ours until `read_finished`.
        let rd = unsafe { &mut *r };
        if let Some(sb) = rd.sb.take() {
            // The bitmap is in.
            let at = (sb.bitmap_offset_blocks * rd.io.bs) as usize;
            let len = (sb.bitmap_blocks * rd.io.bs) as usize;
            // SAFETY: the buffer holds the metadata blocks just read.
            let bytes = unsafe { std::slice::from_raw_parts((rd.io.buf as *const u8).add(at), len) };
            // SAFETY: as above; the superblock's bytes come first.
            let head = unsafe { std::slice::from_raw_parts(rd.io.buf as *const u8, SUPERBLOCK_BYTES) };
            // SAFETY: an open bdev; its uuid lives as long as it does (copied here).
            let bdev_uuid = uuid::uuid_bytes(unsafe { &*sys::spdk_bdev_get_uuid(rd.io.bdev()) });
            let found = Found {
                bdev: rd.name.clone(),
                bdev_uuid,
                tunables: TunablesRecord::read(head, sb.legs.len()),
                sb,
                bitmap: bytes.to_vec(),
            };
            return read_finished(r, Ok(Some(found)));
        }
        // SAFETY: the buffer holds at least the superblock's bytes.
        let head = unsafe { std::slice::from_raw_parts(rd.io.buf as *const u8, SUPERBLOCK_BYTES) };
        let sb = match Superblock::decode(head) {
            Ok(sb) => sb,
            Err(SuperblockError::Magic) => return read_finished(r, Ok(None)),
            Err(e) => return read_finished(r, Err(Fail::named(-libc::EINVAL, e))),
        };
        // SAFETY: open desc.
        let n = rd.io.num_blocks();
        let checked = sb
            .geometry()
            .map_err(|e| Fail::named(-libc::EINVAL, e))
            .and_then(|(_, layout)| {
                // `geometry` refused a sum that overflows.
                let need = sb.data_offset_blocks.saturating_add(sb.leg_data_blocks);
                if sb.block_size as u64 != rd.io.bs {
                    Err(Fail::new(
                        -libc::EINVAL,
                        "superblock",
                        format!("records {}-byte blocks, the bdev has {}", sb.block_size, rd.io.bs),
                    ))
                } else if n < need {
                    Err(Fail::new(
                        -libc::EINVAL,
                        "superblock",
                        format!("records {need} blocks per leg, the bdev has {n}"),
                    ))
                } else {
                    Ok(layout)
                }
            });
        match checked {
            Ok(layout) => {
                // A mirror leg: now the superblock and bitmap together.
                // (The read into the old buffer is complete.)
                if !rd.io.regrow(layout.meta_blocks()) {
                    return read_finished(r, Err(Fail::plain(-libc::EIO, "no memory to read the bitmap")));
                }
                rd.sb = Some(sb);
                read_blocks(r, layout.meta_blocks());
            }
            Err(e) => read_finished(r, Err(e)),
        }
    })
}

fn read_finished(r: *mut Reader, result: Result<Option<Found>, Fail>) {
    // SAFETY: the last use of the reader.
    let mut rd = unsafe { end_chain(r) };
    let done = rd.done.take();
    // The bdev is let go of before the answer.
    drop(rd);
    if let Some(done) = done {
        done(result);
    }
}

/// The module's `examine_disk`.
pub extern "C" fn examine_disk(bdev: *mut sys::spdk_bdev) {
    let started = guard("mirror examine", false, || {
        // A create waiting for this bdev runs first, so that it claims the bdev before any
        // other module's examine can.
        deferred::bdev_registered();
        // A mirror's own bdev is examined too: a mirror with a superblock over mirrors (each
        // with one: `superblock_hidden_by`) is found on them.
        let name = bdev_name(bdev);
        let n2 = name.clone();
        read_superblock(
            &name,
            Box::new(move |r| {
                guard("mirror examine", (), || match r {
                    Ok(Some(found)) => offer(found),
                    Ok(None) => {}
                    Err(e) => errlog!("mirror: bdev {n2} rejected as a mirror leg: {e}"),
                });
                // SAFETY: answers this examine_disk call, once.
                unsafe { sys::spdk_bdev_module_examine_done(module_ptr()) };
            }),
        );
        true
    });
    if !started {
        // SAFETY: as above.
        unsafe { sys::spdk_bdev_module_examine_done(module_ptr()) };
    }
}

/// Mirrors waiting for legs, by uuid (app thread).
struct Pending {
    uuid: [u8; 16],
    found: Vec<Found>,
    timer: *mut sys::spdk_poller,
    /// The timer's argument (the uuid, boxed), freed with the timer.
    /// The grace timer's argument (`into_arg` of the mirror's uuid).
    timer_arg: *mut c_void,
    /// Rejections already logged (bdev and reason), so each is logged once.
    reported: Vec<(String, String)>,
}

struct PendingList(Vec<Pending>);

impl PendingList {
    /// Drops the candidate legs `keep` refuses from every waiting mirror; a mirror left with
    /// none stops waiting (its timer stopped).
    fn retain_found(&mut self, mut keep: impl FnMut(&Found) -> bool) {
        for p in self.0.iter_mut() {
            p.found.retain(&mut keep);
            if p.found.is_empty() {
                cancel_timer(p);
            }
        }
        self.0.retain(|p| !p.found.is_empty());
    }
}

/// Records that `bdev` was refused for `why`: true the first time, so each is logged once.
fn first_report(reported: &mut Vec<(String, String)>, bdev: &str, why: &str) -> bool {
    if reported.iter().any(|(b, w)| b == bdev && w == why) {
        return false;
    }
    reported.push((bdev.to_string(), why.to_string()));
    true
}
// SAFETY: touched on the app thread only; the Mutex is for Rust's sake.
unsafe impl Send for PendingList {}
static PENDING: Mutex<PendingList> = Mutex::new(PendingList(Vec::new()));

/// The waiting mirrors, each left with only the candidate legs still registered under their
/// names (`kept_if_there`): what every decision and listing looks at.
fn pending_now() -> std::sync::MutexGuard<'static, PendingList> {
    let mut list = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    list.retain_found(kept_if_there);
    list
}

fn live_mirror(uuid: &[u8; 16]) -> Option<&'static Mirror> {
    mirror::all()
        .into_iter()
        .find(|m| m.persist.as_ref().is_some_and(|p| p.superblock().mirror_uuid == *uuid))
}

/// A bdev with a mirror superblock appeared.
fn offer(f: Found) {
    if let Some(m) = live_mirror(&f.sb.mirror_uuid) {
        return returning(m, f);
    }
    let uuid = f.sb.mirror_uuid;
    {
        let mut list = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        let idx = match list.0.iter().position(|p| p.uuid == uuid) {
            Some(i) => i,
            None => {
                list.0.push(Pending {
                    uuid,
                    found: Vec::new(),
                    timer: ptr::null_mut(),
                    timer_arg: ptr::null_mut(),
                    reported: Vec::new(),
                });
                list.0.len() - 1
            }
        };
        let p = &mut list.0[idx];
        // A bdev examined again (it went away and came back) is read anew: its old copy goes.
        p.found.retain(|o| o.bdev != f.bdev);
        noticelog!(
            "mirror {}: found leg {} (slot {}, events {})",
            f.sb.name,
            f.bdev,
            f.sb.this_slot,
            f.sb.events
        );
        // Kept in name order: copies that tie in every way (a cloned leg) are then told apart
        // by name, the same whichever appeared first.
        let at = p.found.partition_point(|o| o.bdev < f.bdev);
        p.found.insert(at, f);
    }
    evaluate(uuid, false);
}

/// Logs, once each, the copies the assembly does not use and why.
fn report(p: &mut Pending, a: &Assembly) {
    for (i, rejection) in &a.rejected {
        let (f, why) = (&p.found[*i], rejection.to_string());
        if !first_report(&mut p.reported, &f.bdev, &why) {
            continue;
        }
        let why_named = match rejection {
            Rejection::SlotTaken { winner, .. } => format!("{why} ({})", p.found[*winner].bdev),
            _ => why,
        };
        errlog!("mirror {}: bdev {} not used: {why_named}", f.sb.name, f.bdev);
    }
}

/// Whether the newest superblock's `events` is past [`MAX_EVENTS`]: then nothing assembles
/// (logged once per bdev; its legs stay untouched and unclaimed for an operator).
fn refuse_exhausted(p: &mut Pending, a: &Assembly) -> bool {
    let f = &p.found[a.newest];
    if f.sb.events < MAX_EVENTS {
        return false;
    }
    let why = format!(
        "events {} is beyond any real mirror's (below {MAX_EVENTS}): a crafted or corrupted superblock",
        f.sb.events
    );
    if first_report(&mut p.reported, &f.bdev, &why) {
        errlog!("mirror {}: not assembled: bdev {}'s {why}", f.sb.name, f.bdev);
    }
    cancel_timer(p);
    true
}

/// Whether the bdev `f` was read from is still registered under its name. A waiting mirror
/// is not told when a candidate leg goes away (examine only reads it), and a bdev registered
/// under the same name since is another one: assembled as that leg, it would serve as an
/// in-sync copy data it never held.
fn still_there(f: &Found) -> bool {
    mirror::bdev_by_name(&f.bdev).is_some_and(|b| {
        // SAFETY: a registered bdev, looked up on the app thread.
        uuid::uuid_bytes(unsafe { &*sys::spdk_bdev_get_uuid(b) }) == f.bdev_uuid
    })
}

/// `still_there`, a candidate leg that went away logged as it is forgotten.
fn kept_if_there(f: &Found) -> bool {
    let there = still_there(f);
    if !there {
        noticelog!(
            "mirror {}: bdev {} went away since its superblock was read; no longer a candidate leg",
            f.sb.name,
            f.bdev
        );
    }
    there
}

/// Assembles the mirror if it can (now, or after the grace period).
fn evaluate(uuid: [u8; 16], grace_over: bool) {
    let mut list = pending_now();
    let Some(idx) = list.0.iter().position(|p| p.uuid == uuid) else {
        return;
    };
    let Some(a) = choose_legs(&list.0[idx].found.iter().map(|f| &f.sb).collect::<Vec<_>>()) else {
        return;
    };
    report(&mut list.0[idx], &a);
    if refuse_exhausted(&mut list.0[idx], &a) {
        return;
    }
    let complete = a.complete();
    // Read at every decision, so an option changed while a mirror waits applies to it.
    let degraded_ok = a.covers_every_block() && options::degraded_assembly();
    if complete || (grace_over && degraded_ok) {
        let mut p = list.0.remove(idx);
        drop(list);
        cancel_timer(&mut p);
        return assemble(p.found, a);
    }
    if a.covers_every_block() && !degraded_ok {
        noticelog!(
            "mirror {}: not assembling degraded (degraded_assembly is off): waiting for every active leg",
            list.0[idx].found[a.newest].sb.name
        );
    }
    if degraded_ok && list.0[idx].timer.is_null() {
        extern "C" fn fire(arg: *mut c_void) -> c_int {
            guard("mirror assembly timer", 0, || {
                // SAFETY: boxed below; the poller fires once (evaluate unregisters it).
                let uuid = unsafe { *(arg as *const [u8; 16]) };
                {
                    let mut list = PENDING.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(p) = list.0.iter_mut().find(|p| p.uuid == uuid) {
                        let mut t = std::mem::replace(&mut p.timer, ptr::null_mut());
                        p.timer_arg = ptr::null_mut();
                        // SAFETY: our poller, on its thread; its argument is freed below.
                        unsafe { sys::spdk_poller_unregister(&mut t) };
                    }
                }
                // SAFETY: boxed in `evaluate`; freed once, here (the entry forgot it above).
                drop(unsafe { take_arg::<[u8; 16]>(arg) });
                evaluate(uuid, true);
                0
            })
        }
        let arg = into_arg(uuid);
        let grace_us = options::degraded_grace_us();
        // SAFETY: the argument lives until the poller fires or is unregistered (freed there).
        list.0[idx].timer = unsafe { sys::spdk_poller_register(Some(fire), arg, grace_us) };
        list.0[idx].timer_arg = arg;
        noticelog!(
            "mirror {}: waiting {} ms for its missing legs before assembling degraded",
            list.0[idx].found[a.newest].sb.name,
            grace_us / 1000
        );
    }
}

/// Stops a waiting mirror's grace timer, if it runs.
fn cancel_timer(p: &mut Pending) {
    let mut timer = std::mem::replace(&mut p.timer, ptr::null_mut());
    if timer.is_null() {
        return;
    }
    // SAFETY: registered on this thread by `evaluate`; its argument was boxed there and is
    // freed once, here, now that the poller cannot fire.
    unsafe {
        sys::spdk_poller_unregister(&mut timer);
        drop(take_arg::<[u8; 16]>(p.timer_arg));
    }
    p.timer_arg = ptr::null_mut();
}

/// The module options changed: every waiting mirror decides again (one that may now assemble
/// degraded starts its grace period; a running grace period keeps its length).
pub fn options_changed() {
    let waiting: Vec<[u8; 16]> = {
        let list = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        list.0.iter().map(|p| p.uuid).collect()
    };
    for uuid in waiting {
        evaluate(uuid, false);
    }
}

/// Forgets bdev `name` as a found leg of every waiting mirror (its superblock is being
/// wiped): a half-assembled mirror must not later use it. A mirror left with no leg found
/// stops waiting; the others decide again without it.
pub fn forget(name: &str) {
    let touched: Vec<[u8; 16]> = {
        let mut list = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        let touched = list
            .0
            .iter()
            .filter(|p| p.found.iter().any(|f| f.bdev == name))
            .map(|p| p.uuid)
            .collect();
        list.retain_found(|f| f.bdev != name);
        touched
    };
    for uuid in touched {
        noticelog!("mirror: bdev {name} is no longer a candidate leg (its superblock is wiped)");
        evaluate(uuid, false);
    }
}

/// Stops waiting for the mirror called `name` (`bdev_mirror_delete` of one still assembling):
/// its timer stops and its candidate legs are forgotten, their bdevs returned for the caller
/// to wipe. `Ok(None)`: no mirror of that name waits; `Err(n)`: `n` of them do.
pub fn withdraw_pending(name: &str) -> Result<Option<Vec<String>>, usize> {
    let mut list = pending_now();
    let named: Vec<usize> = (0..list.0.len())
        .filter(|&i| pending_name(&list.0[i]).as_deref() == Some(name))
        .collect();
    match named[..] {
        [] => Ok(None),
        [i] => {
            let mut p = list.0.remove(i);
            cancel_timer(&mut p);
            Ok(Some(p.found.into_iter().map(|f| f.bdev).collect()))
        }
        _ => Err(named.len()),
    }
}

/// The waiting mirror that found bdev `name` as one of its legs, by the name it is listed
/// under. Such a bdev must not be made another mirror's leg (or any other use of it written):
/// that mirror would assemble later with a leg whose data was overwritten, or fail to.
pub fn waiting_for_leg(name: &str) -> Option<String> {
    let list = pending_now();
    list.0
        .iter()
        .find(|p| p.found.iter().any(|f| f.bdev == name))
        .and_then(pending_name)
}

/// Whether a mirror waiting for its legs is listed as `name`.
pub fn waiting_named(name: &str) -> bool {
    let list = pending_now();
    list.0.iter().any(|p| pending_name(p).as_deref() == Some(name))
}

/// The name a waiting mirror is listed under: its newest superblock's.
fn pending_name(p: &Pending) -> Option<String> {
    let a = choose_legs(&p.found.iter().map(|f| &f.sb).collect::<Vec<_>>());
    Some(p.found.get(a.as_ref().map_or(0, |a| a.newest))?.sb.name.clone())
}

/// The mirrors waiting for legs, as `bdev_mirror_get_bdevs` shows them (category
/// `configuring`).
pub fn pending_mirrors() -> Vec<serde_json::Value> {
    let list = pending_now();
    list.0.iter().filter_map(describe_pending).collect()
}

/// One waiting mirror: who it is (from its newest superblock), each slot's leg and state, the
/// bdevs found and the slots it still waits for.
fn describe_pending(p: &Pending) -> Option<serde_json::Value> {
    let a = choose_legs(&p.found.iter().map(|f| &f.sb).collect::<Vec<_>>());
    let sb = &p.found.get(a.as_ref().map_or(0, |a| a.newest))?.sb;
    let legs: Vec<serde_json::Value> = (0..sb.legs.len())
        .map(|slot| {
            let kept = a.as_ref().and_then(|a| a.slots.get(slot).copied().flatten());
            let fresh = a.as_ref().is_some_and(|a| a.fresh & (1 << slot) != 0);
            let state = match (kept, fresh, sb.legs[slot].role) {
                (Some(_), true, _) => "found",
                (Some(_), false, _) => "stale",
                (None, _, LegRole::Active) => "awaited",
                (None, _, LegRole::Failed) => "failed",
                (None, _, LegRole::Removed) => "removed",
                (None, _, LegRole::Rebuilding) => "rebuilding",
            };
            serde_json::json!({
                "slot": slot,
                "bdev": kept.map(|i| p.found[i].bdev.clone()),
                "state": state,
            })
        })
        .collect();
    let awaited: Vec<usize> = match &a {
        Some(a) => (0..sb.legs.len())
            .filter(|s| a.active & !a.fresh & (1 << s) != 0)
            .collect(),
        None => Vec::new(),
    };
    Some(serde_json::json!({
        "name": sb.name,
        "uuid": uuid::uuid_text(&uuid::uuid_of(&p.uuid)),
        "state": "configuring",
        "level": sb.level.as_str(),
        "num_legs": sb.legs.len(),
        "events": sb.events,
        "legs": legs,
        "found_bdevs": p.found.iter().map(|f| f.bdev.clone()).collect::<Vec<_>>(),
        "awaited_slots": awaited,
        "degraded_assembly_scheduled": !p.timer.is_null(),
    }))
}

/// Registers the mirror from its fresh legs; its stale legs rejoin afterwards. Rejected
/// copies (logged by `report`) are dropped.
fn assemble(found: Vec<Found>, a: Assembly) {
    let regions = a.layout.regions as usize;
    let newest = found[a.newest].sb.clone();
    let restored = tunables_of(&found, &a);
    let mut found: Vec<Option<Found>> = found.into_iter().map(Some).collect();
    let mut bits = Bits::new(regions);
    let mut base_bdevs = vec![None; newest.legs.len()];
    for (slot, i) in a.slots.iter().enumerate() {
        let Some(f) = i.and_then(|i| found[i].as_ref()) else {
            continue;
        };
        if a.fresh & (1 << slot) != 0 {
            // A fresh leg's bitmap has the newest's regions (reading it at that size pads or
            // cuts, never overruns), unless it missed the write of a reshape that changed them:
            // then its bits, from before that write, are all in the newest's bitmap anyway.
            if a.same_bitmap(slot as u32) {
                let theirs = Bits::from_bytes(&f.bitmap, regions);
                for r in 0..regions {
                    if theirs.get(r) {
                        bits.set(r, true);
                    }
                }
            }
            base_bdevs[slot] = Some(f.bdev.clone());
        }
    }
    let rest: Vec<Found> = a.stale().filter_map(|(_, i)| found[i].take()).collect();
    let (geo, layout) = (a.geometry, a.layout);
    let uuid = uuid::uuid_of(&newest.mirror_uuid);
    let name = newest.name.clone();
    let spec = |opts: MirrorOpts| CreateSpec {
        name: name.clone(),
        geo: geo.clone(),
        chunk_kb: newest.chunk_kb as u64,
        uuid: Some(uuid),
        base_bdevs: base_bdevs.clone(),
        opts,
        read_policy: restored.tunables.read_policy,
        persist: Some(PersistSpec {
            region_kb: newest.bitmap_region_kb,
            layout,
            found: Some((newest.clone(), bits.clone(), restored.generation)),
        }),
        rebuild_max_mb: restored.tunables.rebuild_max_mb_per_s,
    };
    let recorded = MirrorOpts {
        pool_size: restored.tunables.pool_size,
        max_parents: restored.tunables.max_parents,
    };
    let defaults = MirrorOpts {
        pool_size: DEFAULT_POOL_SIZE,
        max_parents: DEFAULT_MAX_PARENTS,
    };
    // The record may ask for more memory than this process has (written by a larger one):
    // that costs the tunables, never the mirror (`docs/superblock.md`).
    let fallback = (recorded.pool_size != defaults.pool_size || recorded.max_parents != defaults.max_parents)
        .then(|| spec(defaults));
    let first = spec(recorded);
    let finish = move |r: Result<&'static Mirror, Fail>| match r {
        Err(e) => errlog!("mirror {name}: cannot assemble: {e}"),
        Ok(m) => {
            noticelog!(
                "mirror {name}: assembled from its superblocks; the mirror is {}",
                m.state()
            );
            start_resync(m);
            for f in rest {
                returning(m, f);
            }
        }
    };
    create::create(
        first,
        Box::new(move |r| match (r, fallback) {
            (Err(e), Some(spec)) if e.errno == -libc::ENOMEM => {
                warnlog!(
                    "mirror {}: the pool_size {} and max_parents {} its superblock records do not fit ({e}): assembling with the defaults ({}, {}); bdev_mirror_set_options sets others",
                    spec.name,
                    recorded.pool_size,
                    recorded.max_parents,
                    defaults.pool_size,
                    defaults.max_parents
                );
                create::create(spec, Box::new(finish));
            }
            (r, _) => finish(r),
        }),
    );
}

/// The tunables the assembled mirror starts with (`restore_tunables`), each record that could
/// not be used logged with its bdev and the field at fault.
fn tunables_of(found: &[Found], a: &Assembly) -> Restored {
    let defaults = Tunables {
        read_policy: ReadPolicy::default(),
        rebuild_max_mb_per_s: 0,
        pool_size: DEFAULT_POOL_SIZE,
        max_parents: DEFAULT_MAX_PARENTS,
    };
    let sbs: Vec<&Superblock> = found.iter().map(|f| &f.sb).collect();
    let records: Vec<TunablesRead> = found.iter().map(|f| f.tunables.clone()).collect();
    let r = restore_tunables(&sbs, &records, a, defaults);
    let (name, bdev) = (&found[a.newest].sb.name, |i: usize| &found[i].bdev);
    for (i, e) in &r.unusable {
        if e.is_unknown_version() {
            warnlog!("mirror {name}: bdev {}: {e}", bdev(*i));
        } else {
            errlog!("mirror {name}: bdev {}: tunables record not used: {e}", bdev(*i));
        }
    }
    let t = &r.tunables;
    let what = format!(
        "read_policy {}{}, rebuild_max_mb_per_s {}, pool_size {}, max_parents {}",
        t.read_policy.name(),
        match t.read_policy {
            ReadPolicy::Preferred(leg) => format!(" (leg {leg})"),
            _ => String::new(),
        },
        t.rebuild_max_mb_per_s,
        t.pool_size,
        t.max_parents
    );
    match r.from {
        Some(i) => noticelog!(
            "mirror {name}: tunables restored from bdev {} (generation {}): {what}",
            bdev(i),
            r.generation
        ),
        None if r.unusable.is_empty() => {
            noticelog!("mirror {name}: its legs record no tunables (an older format); defaults: {what}")
        }
        None => errlog!("mirror {name}: no usable tunables record on its current legs; defaults: {what}"),
    }
    r
}

/// After an unclean shutdown: resyncs every region the bitmap says may differ.
fn start_resync(m: &'static Mirror) {
    let Some(p) = &m.persist else { return };
    if !p.resync_pending() {
        return;
    }
    let in_sync = m.legs().iter().filter(|l| l.in_sync()).count();
    if in_sync < 2 {
        // Nothing for the one copy to differ from: a resync would only read it (at the cap,
        // holding off bdev_mirror_add_base_bdev). The regions stay dirty for the legs that are
        // away (`miss_all_dirty`), and their recovery copies them.
        p.release_unsynced();
        noticelog!(
            "mirror {}: no resync: one copy is in sync; its dirty regions are kept for the missing legs",
            m.name()
        );
        return;
    }
    let ranges = {
        let bm = p.bitmap();
        resync_plan(bm.on_disk(), bm.regions(), bm.region_blocks(), m.geo().data_blocks())
    };
    if let Err(e) = process::start(m, Kind::Resync, None, ranges, None) {
        errlog!("mirror {}: cannot start the resync: {e}", m.name());
    }
}

/// How a leg that carries this mirror's superblock comes back when it is added over RPC:
/// from the bitmap if it left in sync and has not been written since (`superblock::rejoin`),
/// else in full (the operator asked for it, also for a leg that ran apart).
pub fn rejoin_kind(m: &Mirror, f: &Found) -> Kind {
    match rejoin_of(m, f) {
        Rejoin::Recovery => Kind::Recovery,
        Rejoin::Rebuild | Rejoin::Diverged => Kind::Rebuild,
    }
}

/// The role the running mirror records for `slot` if it records this copy's leg there (the
/// uuid its own superblock gives its slot), else `None`: a leg replaced while it was away.
/// Only a recorded leg comes back by itself, and not one `Removed` on request
/// (`Persist::mark_removed`). (A mirror without a superblock records no identity to compare.)
fn recorded_role(m: &Mirror, f: &Found, slot: u32) -> Option<LegRole> {
    let Some(p) = &m.persist else {
        return Some(LegRole::Active);
    };
    let own = f.sb.own_uuid()?;
    p.superblock()
        .legs
        .get(slot as usize)
        .filter(|e| e.uuid == own)
        .map(|e| e.role)
}

fn rejoin_of(m: &Mirror, f: &Found) -> Rejoin {
    match &m.persist {
        Some(p) => rejoin(&p.superblock(), &f.sb),
        None => Rejoin::Rebuild,
    }
}

/// What to add when a leg refused as newer or diverged had itself marked failed legs this
/// mirror runs on: the mirror came up without it, on legs that lack its later writes.
fn late_hint(m: &Mirror, f: &Found) -> String {
    let Some(running) = m.persist.as_ref().map(|p| p.superblock()) else {
        return String::new();
    };
    let dropped: Vec<String> =
        f.sb.legs
            .iter()
            .zip(&running.legs)
            .enumerate()
            .filter(|(_, (theirs, ours))| {
                matches!(theirs.role, LegRole::Failed | LegRole::Removed) && ours.role == LegRole::Active
            })
            .map(|(s, _)| m.slot(s as u32).name())
            .collect();
    if dropped.is_empty() {
        return String::new();
    }
    format!(
        "; it had marked {} failed, and this mirror runs on them without it: it came up without this leg (assembled degraded before this leg appeared? attach legs within degraded_grace_ms, or set degraded_assembly false), so this leg's writes since are not in it",
        dropped.join(", ")
    )
}

/// A leg of a live mirror appeared (stale at assembly, or back after it went away). One
/// that was away while the mirror was reshaped goes back to the slot its identity holds now,
/// and is rebuilt in full.
fn returning(m: &'static Mirror, f: Found) {
    let slot = match m.persist.as_ref().map(|p| p.superblock().clone()) {
        None => f.sb.this_slot,
        Some(sb) => {
            if let Some(field) = sb.reshape_disagreement(&f.sb) {
                return errlog!(
                    "mirror {}: bdev {} not used: its superblock disagrees with the running mirror's on {field}",
                    m.name(),
                    f.bdev
                );
            }
            if sb.disagreement(&f.sb).is_none() {
                f.sb.this_slot
            } else {
                // Away while the mirror was reshaped: its identity says where it belongs now.
                match slot_by_uuid(&sb, &f.sb) {
                    Some(s) => s as u32,
                    None => {
                        return warnlog!(
                            "mirror {}: bdev {} was a member before the mirror was reshaped and is none now; ignored",
                            m.name(),
                            f.bdev
                        )
                    }
                }
            }
        }
    };
    if slot >= m.num_legs() {
        return warnlog!(
            "mirror {}: bdev {} carries slot {slot}, beyond the mirror's {} legs; ignored",
            m.name(),
            f.bdev,
            m.num_legs()
        );
    }
    if m.slot(slot).present() {
        return warnlog!(
            "mirror {}: bdev {} carries slot {}, which is in use; ignored",
            m.name(),
            f.bdev,
            slot
        );
    }
    let events = m.persist.as_ref().map_or(0, |p| p.superblock().events);
    if f.sb.events > events {
        // The running mirror was assembled from legs older than this one (it came too late):
        // copying over it would lose its newer data. An operator must decide.
        return errlog!(
            "mirror {}: bdev {} has a newer superblock (events {} > {}) than the running mirror; not added{}",
            m.name(),
            f.bdev,
            f.sb.events,
            events,
            late_hint(m, &f)
        );
    }
    match recorded_role(m, &f, slot) {
        // Replaced while it was away (its slot now holds another leg's identity, perhaps one
        // still rebuilding, present or not): it is no member, and rebuilding over it would
        // destroy what an operator took out, whichever bdev showed up first.
        None => return warnlog!(
            "mirror {}: bdev {} carries slot {slot}, which the mirror now records for another leg (replaced while it was away); not used (bdev_mirror_add_base_bdev takes it in, rebuilt in full)",
            m.name(),
            f.bdev
        ),
        // An operator took it out: it may be in other use by now.
        Some(LegRole::Removed) => return warnlog!(
            "mirror {}: bdev {} was removed from slot {slot} over RPC; not used (bdev_mirror_add_base_bdev takes it back)",
            m.name(),
            f.bdev
        ),
        Some(_) => {}
    }
    let kind = match rejoin_of(m, &f) {
        Rejoin::Recovery => Kind::Recovery,
        Rejoin::Rebuild => Kind::Rebuild,
        Rejoin::Diverged => {
            // Copying over it would lose the writes it took alone.
            return errlog!(
                "mirror {}: bdev {} ran apart from the running mirror: written (events {}) after the mirror dropped it, each holds writes the other lacks; not used (to rebuild it from the mirror, losing its own writes: bdev_mirror_add_base_bdev){}",
                m.name(),
                f.bdev,
                f.sb.events,
                late_hint(m, &f)
            );
        }
    };
    noticelog!(
        "mirror {}: leg {} (slot {}, events {}) rejoins by {}",
        m.name(),
        f.bdev,
        slot,
        f.sb.events,
        kind.name()
    );
    let (name, bdev) = (m.name().to_string(), f.bdev.clone());
    join::join_leg(
        m,
        slot,
        &f.bdev,
        kind,
        true,
        Box::new(move |r| {
            if let Err(e) = r {
                errlog!("mirror {name}: leg {bdev} cannot rejoin: {e}");
            }
        }),
    );
}
