//! One boxed `Mirror` per bdev: its legs (open, claimed descriptors), its per-leg child pools,
//! the `spdk_bdev` SPDK sees and the function table SPDK calls.
//!
//! Threads: creation, deletion, leg removal and addition run on the app thread (RPC and bdev
//! events). I/O runs on any reactor through per-core channels, which read the legs' state
//! through atomics only.

use std::collections::VecDeque;
use std::ffi::CString;
use std::os::raw::{c_int, c_void};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use serde_json::{json, Value};
use spdk_sys as sys;

use super::channel::Channel;
use super::ffi::{bdev_name, errlog, guard, noticelog, warnlog};
use super::host_io;
use super::json;
use super::module::module_ptr;
use super::persist::{self, Persist};
use super::process::{self, Kind, ProcessStatus};
use crate::engine::{IoOp, IoRequest, LegStats, ReadPolicy};
use crate::placement::{Geometry, Level, MAX_LEGS};
use crate::superblock::{LegEntry, LegRole, MetaLayout, Superblock};

/// Per-mirror tunables (create-time).
#[derive(Debug, Clone, Copy)]
pub struct MirrorOpts {
    /// Child contexts in each leg's mempool.
    pub pool_size: u32,
    /// Parents admitted per channel.
    pub max_parents: u32,
}

/// Small on purpose: each context is submitted the moment it is taken, so a small pool is safe
/// (md's point) and stays hot in the CPU cache; 256 per leg fits hundreds of mirrors per GiB.
pub const DEFAULT_POOL_SIZE: u32 = 256;
pub const DEFAULT_MAX_PARENTS: u32 = 1024;

/// One leg. Fields that channels read are atomics.
pub struct Leg {
    pub index: u32,
    name: Mutex<String>,
    bdev: AtomicPtr<sys::spdk_bdev>,
    desc: AtomicPtr<sys::spdk_bdev_desc>,
    /// The slot's child contexts (made when the slot first holds a leg, kept until the mirror
    /// goes: a slot emptied by a shrink may be filled again by a grow).
    pool: AtomicPtr<sys::spdk_mempool>,
    pub failed: AtomicBool,
    /// Being rebuilt: written, never read.
    pub write_only: AtomicBool,
    removing: AtomicBool,
    /// The mirror thread's channel on this leg (metadata and background processes), kept open:
    /// under I/O pressure a new channel may be impossible to get.
    app_ch: AtomicPtr<sys::spdk_io_channel>,
    /// I/O in flight on `app_ch`: the channel and desc are closed only once it is back.
    app_io: std::sync::atomic::AtomicU32,
    mirror: *const Mirror,
}

impl Leg {
    pub fn name(&self) -> String {
        self.name.lock().map(|n| n.clone()).unwrap_or_default()
    }
    pub fn bdev(&self) -> *mut sys::spdk_bdev {
        self.bdev.load(Ordering::Acquire)
    }
    pub fn desc(&self) -> *mut sys::spdk_bdev_desc {
        self.desc.load(Ordering::Acquire)
    }
    pub fn pool(&self) -> *mut sys::spdk_mempool {
        self.pool.load(Ordering::Acquire)
    }
    /// The leg has an open, claimed bdev.
    pub fn present(&self) -> bool {
        !self.desc().is_null()
    }
    /// Holds good data and can be read.
    pub fn in_sync(&self) -> bool {
        self.present() && !self.failed.load(Ordering::Acquire) && !self.write_only.load(Ordering::Acquire)
    }
    /// The mirror thread's channel on this leg (null if absent or unobtainable). Mirror thread
    /// only.
    pub fn app_channel(&self) -> *mut sys::spdk_io_channel {
        let ch = self.app_ch.load(Ordering::Acquire);
        if !ch.is_null() || !self.present() {
            return ch;
        }
        // SAFETY: the desc is open; the channel is put in `close_leg`, on this thread.
        let ch = unsafe { sys::spdk_bdev_get_io_channel(self.desc()) };
        self.app_ch.store(ch, Ordering::Release);
        ch
    }

    /// An I/O was submitted on `app_channel()`; `app_io_done` when it completes.
    pub fn app_io_started(&self) {
        self.app_io.fetch_add(1, Ordering::SeqCst);
    }

    /// From any thread: the leg's descriptor, held open (counted in `app_io`) until
    /// `app_io_done`; `None` if the leg is gone. Counted first, then the descriptor read, while
    /// `close_leg` clears the descriptor first, then reads the count (both sequentially
    /// consistent): either this sees no descriptor, or the close sees the count and waits.
    pub fn hold_desc(&self) -> Option<*mut sys::spdk_bdev_desc> {
        self.app_io.fetch_add(1, Ordering::SeqCst);
        let desc = self.desc.load(Ordering::SeqCst);
        if desc.is_null() {
            self.app_io_done();
            return None;
        }
        Some(desc)
    }

    /// Being taken out (`remove_leg`), until every core has let go of it.
    pub fn removing(&self) -> bool {
        self.removing.load(Ordering::Acquire)
    }

    /// No I/O of the mirror's thread is outstanding on this leg.
    pub fn app_io_idle(&self) -> bool {
        self.app_io.load(Ordering::Acquire) == 0
    }

    pub fn app_io_done(&self) {
        self.app_io.fetch_sub(1, Ordering::AcqRel);
    }

    /// After submitting on `app_channel()`: counts the I/O if it went, or on `-ENOMEM` queues
    /// `wait` to call `retry(arg)` once an `spdk_bdev_io` is free. False when neither happened.
    ///
    /// # Safety
    /// `ch` is this leg's app channel; `wait` must stay valid until it is called back.
    pub unsafe fn submitted(
        &self,
        rc: c_int,
        ch: *mut sys::spdk_io_channel,
        wait: &mut sys::spdk_bdev_io_wait_entry,
        retry: extern "C" fn(*mut c_void),
        arg: *mut c_void,
    ) -> bool {
        if rc == 0 {
            self.app_io_started();
            return true;
        }
        if rc != -libc::ENOMEM {
            return false;
        }
        wait.bdev = self.bdev();
        wait.cb_fn = Some(retry);
        wait.cb_arg = arg;
        // SAFETY: the caller keeps `wait` alive until the callback.
        unsafe { sys::spdk_bdev_queue_io_wait(self.bdev(), ch, wait) == 0 }
    }

    pub fn state(&self) -> &'static str {
        if !self.present() {
            "removed"
        } else if self.failed.load(Ordering::Acquire) {
            "failed"
        } else if self.write_only.load(Ordering::Acquire) {
            "rebuilding"
        } else {
            "online"
        }
    }
}

/// A leg waiting for the running process to end before it is recovered.
pub struct Queued {
    pub slot: u32,
    pub bdev: String,
    pub kind: Kind,
}

pub struct Mirror {
    pub bdev: sys::spdk_bdev,
    /// The thread that created the mirror: metadata writes and processes run there.
    pub thread: *mut sys::spdk_thread,
    /// Superblock and bitmap, when the mirror keeps them on its legs.
    pub persist: Option<Box<Persist>>,
    /// Blocks reserved before the data on every leg (0 without a superblock).
    pub data_offset: u64,
    /// Bandwidth cap of rebuild, recovery, resync and check, MiB/s (0: none).
    pub rebuild_max_mb: AtomicU64,
    name: CString,
    /// Changed only with the whole mirror quiesced (`reshape`); read it with `geo()`.
    geo: RwLock<Geometry>,
    pub uuid: String,
    pub chunk_kb: u64,
    pub opts: MirrorOpts,
    /// Child contexts each channel may keep per leg (`CtxCache`).
    pub ctx_cache: usize,
    /// Encoded `ReadPolicy` (see `encode_policy`); channels pick it up with the leg state.
    read_policy: AtomicU64,
    /// `MAX_LEGS + 1` leg slots: the first `num_legs` are the legs, the one after them holds
    /// a replacement while a leg is being replaced (`replace`). Slots never move, so a leg's
    /// address stays valid for SPDK callbacks; only `num_legs` changes (under quiesce).
    slots: Vec<Leg>,
    num_legs: AtomicU32,
    /// The leg a replacement is being copied for (`NO_REPLACEMENT` if none).
    pub replacing: AtomicU32,
    /// A leg grew while a process ran: look again when it ends (`resize`).
    pub resize_pending: AtomicBool,
    /// Bumped whenever a leg changes state; channels resynchronise when it moves.
    pub leg_gen: AtomicU64,
    pub process: Mutex<Option<ProcessStatus>>,
    /// A process holds leg channels and I/O: the mirror is freed only after it stops.
    pub process_active: AtomicBool,
    pub last_process: Mutex<Option<Value>>,
    /// Legs to recover once the running process ends.
    pub queued: Mutex<VecDeque<Queued>>,
    destruct_pending: AtomicBool,
    pub deleting: AtomicBool,
    /// Deleted over RPC, or a new mirror whose creation failed: the superblocks are zeroed so
    /// the mirror does not come back.
    pub wipe: AtomicBool,
    /// Its bdev is registered (freed through `io_device_gone`, else `free_unregistered`).
    registered: AtomicBool,
    /// Management calls in progress that hold the mirror across asynchronous steps (`Pin`):
    /// its io_device is unregistered only once none is left.
    pins: std::sync::atomic::AtomicU32,
    /// The io_device is to be unregistered once the last pin goes.
    unregister_waiting: AtomicBool,
    /// A delete waiting for the running process to stop before it unregisters the bdev.
    unregister_after_process: Mutex<Option<DeleteDone>>,
    /// Bumped by every leg failure before the leg is marked failed; `fail_seen` after it is.
    /// `fail_gen_durable` catches up with the `fail_seen` a metadata write read before it
    /// reconciled the leg table, once that write is on the legs (see `fail_leg`).
    pub fail_gen: AtomicU64,
    pub fail_seen: AtomicU64,
    pub fail_gen_durable: AtomicU64,
    /// Counters of channels that are gone (live channels are summed at query time), per slot.
    pub retired_stats: Mutex<Vec<LegStats>>,
    /// Names this mirror's mempools.
    id: u64,
}

// SAFETY: a Mirror is shared with reactor threads through raw pointers; everything they touch
// after creation is atomic or immutable; the rest is used on the app thread only.
unsafe impl Send for Mirror {}
// SAFETY: as above.
unsafe impl Sync for Mirror {}

/// Mirrors that exist, by address (app thread).
struct Registry(Vec<usize>);
static REGISTRY: Mutex<Registry> = Mutex::new(Registry(Vec::new()));
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

pub fn all() -> Vec<&'static Mirror> {
    let reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: registered mirrors are live until removed from the registry in `destruct`.
    reg.0.iter().map(|&p| unsafe { &*(p as *const Mirror) }).collect()
}

pub fn find(name: &str) -> Option<&'static Mirror> {
    all().into_iter().find(|m| m.name() == name)
}

/// The mirror and leg slot holding base bdev `name`.
pub fn find_leg(name: &str) -> Option<(&'static Mirror, u32)> {
    all().into_iter().find_map(|m| {
        m.legs()
            .iter()
            .find(|l| l.present() && l.name() == name)
            .map(|l| (m, l.index))
    })
}

/// Whether bdev `base` is the mirror called `mirror`, or a mirror whose legs, followed down
/// through mirrors, reach it: such a leg would make the mirror write into itself (a rebuild
/// copying itself forever, every write recursing).
pub fn reaches(base: &str, mirror: &str) -> bool {
    let mut todo = vec![base.to_string()];
    let mut seen = Vec::new();
    while let Some(b) = todo.pop() {
        if b == mirror {
            return true;
        }
        if seen.contains(&b) {
            continue;
        }
        if let Some(m) = find(&b) {
            todo.extend(m.legs().iter().filter(|l| l.present()).map(|l| l.name()));
        }
        seen.push(b);
    }
    false
}

/// Metadata of a mirror being created (`found: None`) or assembled from its legs.
pub struct PersistSpec {
    pub region_kb: u32,
    pub layout: MetaLayout,
    /// Assembly: the newest superblock, the union of the fresh legs' bitmaps, and the
    /// generation of the tunables restored (the spec's `opts`, `read_policy`, `rebuild_max_mb`).
    pub found: Option<(Superblock, crate::bitmap::Bits, u64)>,
}

/// What `create` needs, already validated.
pub struct CreateSpec {
    pub name: String,
    pub geo: Geometry,
    pub chunk_kb: u64,
    pub uuid: Option<sys::spdk_uuid>,
    /// By slot; `None`: the slot's leg is missing (assembly only).
    pub base_bdevs: Vec<Option<String>>,
    pub opts: MirrorOpts,
    pub read_policy: ReadPolicy,
    pub persist: Option<PersistSpec>,
    pub rebuild_max_mb: u64,
}

fn encode_policy(p: ReadPolicy) -> u64 {
    match p {
        ReadPolicy::LeastOutstanding => 0,
        ReadPolicy::RoundRobin => 1,
        ReadPolicy::Preferred(leg) => 2 + leg as u64,
    }
}

fn decode_policy(v: u64) -> ReadPolicy {
    match v {
        0 => ReadPolicy::LeastOutstanding,
        1 => ReadPolicy::RoundRobin,
        n => ReadPolicy::Preferred((n - 2) as u32),
    }
}

/// An error for an RPC: negative errno and a message naming the field.
#[derive(Debug)]
pub struct Fail(pub i32, pub String);

/// `Mirror::replacing` when no leg is being replaced.
pub const NO_REPLACEMENT: u32 = u32::MAX;

impl Mirror {
    pub fn name(&self) -> &str {
        self.name.to_str().unwrap_or("")
    }

    /// The geometry (a copy: it may change under a reshape).
    pub fn geo(&self) -> Geometry {
        self.geo.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Only with the whole mirror quiesced (`reshape`).
    pub fn set_geo(&self, g: Geometry) {
        *self.geo.write().unwrap_or_else(|e| e.into_inner()) = g;
    }

    pub fn num_legs(&self) -> u32 {
        self.num_legs.load(Ordering::Acquire)
    }

    /// Only with the whole mirror quiesced (`reshape`), after the slots' pools exist.
    pub fn set_num_legs(&self, n: u32) {
        self.num_legs.store(n, Ordering::Release);
    }

    /// The mirror's legs (slots `0..num_legs`).
    pub fn legs(&self) -> &[Leg] {
        &self.slots[..self.num_legs() as usize]
    }

    /// Any slot, a replacement's included.
    pub fn slot(&self, i: u32) -> &Leg {
        &self.slots[i as usize]
    }

    /// The slot a replacement goes into: the one after the legs.
    pub fn replacement_slot(&self) -> u32 {
        self.num_legs()
    }

    /// The leg being replaced, if any.
    pub fn replacing(&self) -> Option<u32> {
        Some(self.replacing.load(Ordering::Acquire)).filter(|&r| r != NO_REPLACEMENT)
    }

    /// Makes slot `i`'s child context pool if it has none yet (app thread).
    pub fn ensure_pool(&self, i: u32) -> Result<(), Fail> {
        let leg = self.slot(i);
        if !leg.pool().is_null() {
            return Ok(());
        }
        let pname = CString::new(format!("mirror{}_{i}", self.id)).expect("no NUL");
        // SAFETY: valid name; element size is our context's.
        let pool = unsafe {
            sys::spdk_mempool_create(
                pname.as_ptr(),
                self.opts.pool_size as usize,
                std::mem::size_of::<super::backend::ChildCtx>(),
                0,
                sys::SPDK_ENV_NUMA_ID_ANY,
            )
        };
        if pool.is_null() {
            return Err(Fail(
                -libc::ENOMEM,
                format!(
                    "pool_size: cannot allocate {} child contexts per leg",
                    self.opts.pool_size
                ),
            ));
        }
        leg.pool.store(pool, Ordering::Release);
        Ok(())
    }

    /// A leg failed and the superblocks do not say so yet.
    #[inline]
    pub fn failure_unrecorded(&self) -> bool {
        self.fail_gen.load(Ordering::SeqCst) != self.fail_gen_durable.load(Ordering::SeqCst)
    }

    pub fn read_policy(&self) -> ReadPolicy {
        decode_policy(self.read_policy.load(Ordering::Acquire))
    }

    /// Changes the read policy on every channel (they resynchronise on their next I/O).
    pub fn set_read_policy(&self, p: ReadPolicy) {
        self.read_policy.store(encode_policy(p), Ordering::Release);
        self.leg_gen.fetch_add(1, Ordering::AcqRel);
    }

    fn policy_json(&self, v: &mut Value) {
        let p = self.read_policy();
        v["read_policy"] = json!(p.name());
        if let ReadPolicy::Preferred(leg) = p {
            v["preferred_leg"] = json!(leg);
        }
    }

    pub fn as_io_device(&self) -> *mut c_void {
        self as *const Mirror as *mut c_void
    }

    /// The bdev, as SPDK's calls take it.
    pub fn bdev_ptr(&self) -> *mut sys::spdk_bdev {
        &self.bdev as *const sys::spdk_bdev as *mut sys::spdk_bdev
    }

    /// Marks a leg failed for every channel.
    ///
    /// Order matters (a write that skipped the leg must never be acknowledged before the
    /// superblocks say the leg is stale): the failure is first counted as unrecorded
    /// (`fail_gen`), only then made visible (`failed`, `leg_gen`), and last counted as visible
    /// (`fail_seen`). Any core that sees the leg failed, through `failed` or `leg_gen`, thus
    /// also sees `failure_unrecorded()`; the metadata writer counts a failure durable only if it
    /// was visible before the writer read the legs' state (`fail_seen`).
    pub fn fail_leg(&self, leg: u32, why: &str) {
        let l = self.slot(leg);
        if l.failed.load(Ordering::Acquire) {
            return;
        }
        // A replacement is no member yet: its failure only ends the replacement.
        let recorded = self.persist.is_some() && leg < self.num_legs();
        if recorded {
            self.fail_gen.fetch_add(1, Ordering::SeqCst);
        }
        let first = !l.failed.swap(true, Ordering::SeqCst);
        if first {
            self.leg_gen.fetch_add(1, Ordering::SeqCst);
        }
        if recorded {
            self.fail_seen.fetch_add(1, Ordering::SeqCst);
        }
        if first {
            errlog!(
                "mirror {}: leg {} ({}) failed: {}; the mirror is now {}",
                self.name(),
                leg,
                l.name(),
                why,
                self.state()
            );
        }
        // The superblocks must say so (and the bitmap keep what the leg misses).
        persist::kick(self);
    }

    /// Legs holding good, readable data, as a mask.
    pub fn in_sync_mask(&self) -> u32 {
        self.legs()
            .iter()
            .filter(|l| l.in_sync())
            .fold(0, |m, l| m | 1 << l.index)
    }

    /// Whether every block keeps a readable copy when only the legs in `mask` are used.
    pub fn every_block_covered(&self, mask: u32) -> bool {
        self.geo().every_block_covered(mask)
    }

    pub fn state(&self) -> &'static str {
        let mask = self.in_sync_mask();
        if mask.count_ones() == self.geo().legs() {
            "online"
        } else if self.every_block_covered(mask) {
            "degraded"
        } else {
            "offline"
        }
    }

    /// Parameters that recreate this mirror (save_config).
    pub fn create_params(&self) -> Value {
        let mut p = json!({
            "name": self.name(),
            "level": self.geo().level().as_str(),
            "base_bdevs": self.legs().iter().map(|l| l.name()).collect::<Vec<_>>(),
            "superblock": false,
            "uuid": self.uuid,
            "pool_size": self.opts.pool_size,
            "max_parents": self.opts.max_parents,
        });
        self.policy_json(&mut p);
        if self.geo().level() == Level::Raid10 {
            p["layout"] = json!(self.geo().layout().to_string());
            p["chunk_kb"] = json!(self.chunk_kb);
        }
        p
    }

    /// What `bdev_mirror_get_bdevs` and `bdev_get_bdevs` report.
    pub fn info(&self, stats: Option<&[LegStats]>) -> Value {
        let legs: Vec<Value> = self
            .legs()
            .iter()
            .map(|l| {
                let mut v = json!({ "slot": l.index, "bdev": l.name(), "state": l.state() });
                if let Some(s) = stats.and_then(|s| s.get(l.index as usize)) {
                    v["reads"] = json!(s.reads);
                    v["writes"] = json!(s.writes);
                    v["read_errors"] = json!(s.read_errors);
                    v["write_errors"] = json!(s.write_errors);
                    v["read_repairs"] = json!(s.read_repairs);
                    v["pool_empty"] = json!(s.pool_empty);
                    v["nomem"] = json!(s.nomem);
                }
                v
            })
            .collect();
        let mut v = json!({
            "name": self.name(),
            "uuid": self.uuid,
            "level": self.geo().level().as_str(),
            "state": self.state(),
            "block_size": self.geo().block_size(),
            "data_blocks": self.geo().data_blocks(),
            "data_size_mb": self.geo().data_blocks() * self.geo().block_size() as u64 / (1024 * 1024),
            "num_legs": self.geo().legs(),
            "pool_size": self.opts.pool_size,
            "max_parents": self.opts.max_parents,
            "legs": legs,
        });
        self.policy_json(&mut v);
        if self.geo().level() == Level::Raid10 {
            v["layout"] = json!(self.geo().layout().to_string());
            v["chunk_kb"] = json!(self.chunk_kb);
        } else {
            v["layout"] = Value::Null;
            v["chunk_kb"] = Value::Null;
        }
        if let Some(r) = self.process.lock().ok().and_then(|r| r.as_ref().map(|r| r.json())) {
            v["process"] = r;
        }
        if let Some(k) = self.replacing() {
            let r = self.slot(self.replacement_slot());
            v["replacement"] = json!({"replaces_slot": k, "bdev": r.name(), "state": r.state()});
        }
        if let Some(r) = self.last_process.lock().ok().and_then(|r| r.clone()) {
            v["last_process"] = r;
        }
        v["rebuild_max_mb_per_s"] = json!(self.rebuild_max_mb.load(Ordering::Acquire));
        v["superblock"] = json!(self.persist.is_some());
        v["data_offset_blocks"] = json!(self.data_offset);
        match &self.persist {
            Some(p) => {
                let bm = p.bitmap();
                let sb = p.superblock();
                v["events"] = json!(sb.events);
                v["bitmap"] = json!({
                    "region_kb": sb.bitmap_region_kb,
                    "regions": bm.regions(),
                    "dirty_regions": bm.dirty_regions(),
                });
            }
            None => {
                v["events"] = Value::Null;
                v["bitmap"] = Value::Null;
            }
        }
        v
    }
}

/// Opens and claims `name` for `leg` (its hot-remove events go to that leg). Returns (bdev, desc).
pub fn open_leg(leg: *const Leg, name: &str) -> Result<(*mut sys::spdk_bdev, *mut sys::spdk_bdev_desc), Fail> {
    let cname = CString::new(name).map_err(|_| Fail(-libc::EINVAL, "base_bdevs: name has a NUL".into()))?;
    let mut desc = ptr::null_mut();
    // SAFETY: the event context is the leg, which lives as long as its mirror, which outlives
    // the descriptor (closed in `close_leg`).
    let rc = unsafe { sys::spdk_bdev_open_ext(cname.as_ptr(), true, Some(leg_event), leg as *mut c_void, &mut desc) };
    if rc != 0 {
        let msg = if rc == -libc::ENODEV {
            format!("base_bdevs: no bdev named '{name}'")
        } else if rc == -libc::EPERM {
            return Err(Fail(
                -libc::EBUSY,
                format!("base_bdevs: '{name}' is already claimed by another module"),
            ));
        } else {
            format!(
                "base_bdevs: cannot open '{name}': {}",
                std::io::Error::from_raw_os_error(-rc)
            )
        };
        return Err(Fail(rc, msg));
    }
    // SAFETY: desc is open.
    let bdev = unsafe { sys::spdk_bdev_desc_get_bdev(desc) };
    // SAFETY: bdev, desc and our module are live.
    let rc = unsafe { sys::spdk_bdev_module_claim_bdev(bdev, desc, module_ptr()) };
    if rc != 0 {
        // SAFETY: opened above on this thread.
        unsafe { sys::spdk_bdev_close(desc) };
        return Err(Fail(
            -libc::EBUSY,
            format!("base_bdevs: '{name}' is already claimed by another module"),
        ));
    }
    Ok((bdev, desc))
}

/// Releases and closes a leg's bdev.
fn close_leg(leg: &Leg) {
    let ch = leg.app_ch.swap(ptr::null_mut(), Ordering::SeqCst);
    let desc = leg.desc.swap(ptr::null_mut(), Ordering::SeqCst);
    let bdev = leg.bdev.swap(ptr::null_mut(), Ordering::SeqCst);
    let c = Closing {
        leg,
        ch,
        desc,
        bdev,
        poller: ptr::null_mut(),
    };
    // Read after the descriptor was cleared: see `Leg::hold_desc`.
    if leg.app_io.load(Ordering::SeqCst) == 0 {
        return c.close();
    }
    // Metadata or process I/O is still on its way back through this channel: close after it.
    extern "C" fn retry(arg: *mut c_void) -> c_int {
        guard("mirror leg close", 0, || {
            // SAFETY: boxed below, freed once the close happened.
            let c = unsafe { &mut *(arg as *mut Closing) };
            // SAFETY: the leg lives as long as its mirror, which waits for its legs' closes.
            if unsafe { (*c.leg).app_io.load(Ordering::Acquire) } == 0 {
                // SAFETY: our poller, on its thread; the box's last use.
                unsafe {
                    sys::spdk_poller_unregister(&mut c.poller);
                    Box::from_raw(arg as *mut Closing).close();
                }
            }
            sys::SPDK_POLLER_BUSY as c_int
        })
    }
    let c = Box::into_raw(Box::new(c));
    // SAFETY: `c` lives until the poller closes it.
    unsafe { (*c).poller = sys::spdk_poller_register(Some(retry), c as *mut c_void, 1000) };
}

/// A leg's channel and descriptor, being let go.
struct Closing {
    leg: *const Leg,
    ch: *mut sys::spdk_io_channel,
    desc: *mut sys::spdk_bdev_desc,
    bdev: *mut sys::spdk_bdev,
    poller: *mut sys::spdk_poller,
}

impl Closing {
    fn close(self) {
        // SAFETY: taken and opened on this (the mirror's) thread; no I/O of ours uses them now.
        unsafe {
            if !self.ch.is_null() {
                sys::spdk_put_io_channel(self.ch);
            }
            if !self.desc.is_null() {
                sys::spdk_bdev_module_release_bdev(self.bdev);
                sys::spdk_bdev_close(self.desc);
            }
        }
    }
}

/// What a creation does when it is over (on the app thread).
pub type CreateDone = Box<dyn FnOnce(Result<&'static Mirror, Fail>)>;

/// Creates a mirror: opens and claims its legs, writes the metadata to them (with a
/// superblock), registers the bdev, then calls `done`. On error nothing is left behind.
pub fn create(spec: CreateSpec, done: CreateDone) {
    let m = match prepare(spec) {
        Ok(m) => m,
        Err(e) => return done(Err(e)),
    };
    if m.persist.is_none() {
        return done(register(m));
    }
    persist::write(
        m,
        Some(Box::new(move |r| match r {
            Ok(()) => {
                let r = register(m);
                if r.is_ok() {
                    persist::start_ticking(m);
                }
                done(r)
            }
            Err(e) => {
                let msg = format!("base_bdevs: cannot write the superblock: {e}");
                abandon(m);
                done(Err(Fail(-libc::EIO, msg)))
            }
        })),
    );
}

/// A random 16-byte id.
pub fn random_uuid() -> [u8; 16] {
    let mut u = sys::spdk_uuid::default();
    // SAFETY: writes a fresh uuid into `u`.
    unsafe { sys::spdk_uuid_generate(&mut u) };
    uuid_bytes(&u)
}

/// A uuid in SPDK's lower-case text form.
pub fn uuid_text(u: &sys::spdk_uuid) -> String {
    let mut buf = [0 as std::os::raw::c_char; sys::SPDK_UUID_STRING_LEN as usize];
    // SAFETY: buffer of the documented size.
    unsafe { sys::spdk_uuid_fmt_lower(buf.as_mut_ptr(), buf.len(), u) };
    // SAFETY: NUL-terminated by spdk_uuid_fmt_lower.
    unsafe { super::ffi::cstr(buf.as_ptr()) }.into_owned()
}

/// The `spdk_uuid` of 16 bytes (as superblocks store it).
pub fn uuid_of(bytes: &[u8; 16]) -> sys::spdk_uuid {
    // SAFETY: `spdk_uuid` is 16 plain bytes.
    unsafe { std::mem::transmute_copy(bytes) }
}

pub fn uuid_bytes(u: &sys::spdk_uuid) -> [u8; 16] {
    // SAFETY: `spdk_uuid` is 16 plain bytes.
    unsafe { std::mem::transmute_copy(u) }
}

/// Opens the legs, makes the pools and fills in the bdev; nothing is registered yet.
fn prepare(spec: CreateSpec) -> Result<&'static Mirror, Fail> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let name = CString::new(spec.name.clone()).map_err(|_| Fail(-libc::EINVAL, "name: has a NUL".into()))?;
    let data_offset = spec.persist.as_ref().map(|p| p.layout.data_offset_blocks).unwrap_or(0);
    let mut mirror = Box::new(Mirror {
        bdev: sys::spdk_bdev::default(),
        // SAFETY: plain query; creation runs on an SPDK thread.
        thread: unsafe { sys::spdk_get_thread() },
        persist: None,
        data_offset,
        rebuild_max_mb: AtomicU64::new(spec.rebuild_max_mb),
        name,
        geo: RwLock::new(spec.geo.clone()),
        uuid: String::new(),
        chunk_kb: spec.chunk_kb,
        opts: spec.opts,
        ctx_cache: 0,
        read_policy: AtomicU64::new(encode_policy(spec.read_policy)),
        slots: Vec::with_capacity(MAX_LEGS + 1),
        num_legs: AtomicU32::new(0),
        replacing: AtomicU32::new(NO_REPLACEMENT),
        resize_pending: AtomicBool::new(false),
        leg_gen: AtomicU64::new(0),
        process: Mutex::new(None),
        process_active: AtomicBool::new(false),
        last_process: Mutex::new(None),
        queued: Mutex::new(VecDeque::new()),
        destruct_pending: AtomicBool::new(false),
        deleting: AtomicBool::new(false),
        // A new mirror's superblocks go if its creation fails; an assembled one's stay.
        wipe: AtomicBool::new(spec.persist.as_ref().is_some_and(|p| p.found.is_none())),
        registered: AtomicBool::new(false),
        pins: std::sync::atomic::AtomicU32::new(0),
        unregister_waiting: AtomicBool::new(false),
        unregister_after_process: Mutex::new(None),
        fail_gen: AtomicU64::new(0),
        fail_seen: AtomicU64::new(0),
        fail_gen_durable: AtomicU64::new(0),
        retired_stats: Mutex::new(vec![LegStats::default(); MAX_LEGS + 1]),
        id,
    });
    let mp: *const Mirror = &*mirror;
    for i in 0..=MAX_LEGS {
        let n = spec.base_bdevs.get(i).cloned().flatten();
        mirror.slots.push(Leg {
            index: i as u32,
            name: Mutex::new(n.clone().unwrap_or_default()),
            bdev: AtomicPtr::new(ptr::null_mut()),
            desc: AtomicPtr::new(ptr::null_mut()),
            pool: AtomicPtr::new(ptr::null_mut()),
            failed: AtomicBool::new(n.is_none()),
            write_only: AtomicBool::new(false),
            removing: AtomicBool::new(false),
            app_ch: AtomicPtr::new(ptr::null_mut()),
            app_io: std::sync::atomic::AtomicU32::new(0),
            mirror: mp,
        });
    }
    mirror.set_num_legs(spec.base_bdevs.len() as u32);
    let undo = |m: &mut Mirror| free_legs(m);
    // Open and claim every leg.
    let needed = data_offset + spec.geo.used_leg_blocks();
    for i in 0..spec.base_bdevs.len() {
        let Some(leg_name) = spec.base_bdevs[i].clone() else {
            continue;
        };
        let legp: *const Leg = &mirror.slots[i];
        match open_leg(legp, &leg_name) {
            Ok((bdev, desc)) => {
                mirror.slots[i].bdev.store(bdev, Ordering::Release);
                mirror.slots[i].desc.store(desc, Ordering::Release);
                if let Some(msg) = unfit_leg(bdev, &leg_name, spec.geo.block_size(), needed) {
                    undo(&mut mirror);
                    return Err(Fail(-libc::EINVAL, format!("base_bdevs: {msg}")));
                }
            }
            Err(e) => {
                undo(&mut mirror);
                return Err(e);
            }
        }
    }
    // Child context pools, one per leg.
    // SAFETY: plain query.
    let cores = unsafe { sys::spdk_env_get_core_count() }.max(1);
    // Each channel caches up to a quarter of a pool split across the cores (`CtxCache`);
    // the mempools themselves have no DPDK cache (about 1 MiB per pool).
    mirror.ctx_cache = (spec.opts.pool_size / (4 * cores)) as usize;
    for i in 0..spec.base_bdevs.len() as u32 {
        if let Err(e) = mirror.ensure_pool(i) {
            undo(&mut mirror);
            return Err(e);
        }
    }
    // The bdev.
    let mut uuid = spec.uuid.unwrap_or_default();
    if spec.uuid.is_none() {
        // SAFETY: writes a fresh uuid into `uuid`.
        unsafe { sys::spdk_uuid_generate(&mut uuid) };
    }
    mirror.uuid = uuid_text(&uuid);
    if let Some(ps) = spec.persist {
        // A new mirror's tunables are generation 1; an assembled one's count on from the legs'.
        let (sb, dirty, tunables_gen) = match ps.found {
            Some((sb, bits, gen)) => (sb, Some(bits), gen),
            None => (
                Superblock {
                    mirror_uuid: uuid_bytes(&uuid),
                    name: spec.name.clone(),
                    level: spec.geo.level(),
                    layout: spec.geo.layout(),
                    chunk_kb: spec.chunk_kb as u32,
                    block_size: spec.geo.block_size(),
                    data_offset_blocks: ps.layout.data_offset_blocks,
                    leg_data_blocks: spec.geo.leg_blocks(),
                    events: 1,
                    this_slot: 0,
                    bitmap_region_kb: ps.region_kb,
                    bitmap_offset_blocks: ps.layout.bitmap_offset_blocks,
                    bitmap_blocks: ps.layout.bitmap_blocks,
                    legs: (0..spec.geo.legs())
                        .map(|_| LegEntry {
                            uuid: random_uuid(),
                            role: LegRole::Active,
                            failed_at_events: 0,
                        })
                        .collect(),
                },
                None,
                1,
            ),
        };
        let assembled = dirty.is_some();
        let p = Persist::new(ps.layout, spec.geo.data_blocks(), sb, dirty, tunables_gen);
        if assembled {
            // Anything dirty may differ between the legs: resync it before it may clear.
            p.hold_dirty_for_resync();
            if mirror.legs().iter().any(|l| !l.present()) {
                p.bitmap().miss_all_dirty();
            }
        }
        mirror.persist = Some(Box::new(p));
    }
    let mut align = 0u8;
    let mut write_cache = false;
    for leg in mirror.legs().iter().filter(|l| l.present()) {
        // SAFETY: legs are open.
        unsafe {
            align = align.max((*leg.bdev()).required_alignment);
            write_cache |= sys::spdk_bdev_has_write_cache(leg.bdev());
        }
    }
    let b = &mut mirror.bdev;
    b.name = mirror.name.as_ptr() as *mut _;
    b.product_name = c"Mirror".as_ptr() as *mut _;
    b.blocklen = spec.geo.block_size();
    b.blockcnt = spec.geo.data_blocks();
    b.required_alignment = align;
    b.write_cache = write_cache as i32;
    b.uuid = uuid;
    if spec.geo.level() == Level::Raid10 {
        // Children never straddle a chunk: the bdev layer splits host I/O for us.
        b.optimal_io_boundary = spec.geo.chunk_blocks() as u32;
        b.__bindgen_anon_1.set_split_on_optimal_io_boundary(1);
    }
    b.ctxt = mp as *mut c_void;
    b.fn_table = &FN_TABLE;
    b.module = module_ptr();
    Ok(Box::leak(mirror))
}

/// Why a bdev cannot be a leg of this mirror, if it cannot.
pub fn unfit_leg(bdev: *mut sys::spdk_bdev, name: &str, block_size: u32, blocks_needed: u64) -> Option<String> {
    // SAFETY: an open bdev; queries only.
    let (bl, md, n) = unsafe {
        (
            sys::spdk_bdev_get_block_size(bdev),
            sys::spdk_bdev_get_md_size(bdev),
            sys::spdk_bdev_get_num_blocks(bdev),
        )
    };
    if md != 0 {
        Some(format!("'{name}' has {md} bytes of metadata per block; not supported"))
    } else if bl != block_size {
        Some(format!("block sizes differ ('{name}' has {bl}, expected {block_size})"))
    } else if n < blocks_needed {
        Some(format!("'{name}' has {n} blocks, the mirror needs {blocks_needed}"))
    } else {
        None
    }
}

/// Frees a prepared mirror that was never registered, once its metadata writer is done with
/// it: this runs inside the writer's own completion (the create's first write failed), which
/// still uses the mirror after calling back, and leg failures it recorded have queued kicks.
fn abandon(m: &'static Mirror) {
    let wipe = m.wipe.load(Ordering::Acquire);
    persist::close(
        m,
        wipe,
        Box::new(move || free_unregistered(m as *const Mirror as *mut c_void)),
    );
}

/// Registers a prepared mirror's io_device and bdev.
fn register(mirror: &'static Mirror) -> Result<&'static Mirror, Fail> {
    let name = mirror.name().to_string();
    let dev_name = CString::new(format!("mirror_{name}")).unwrap_or_default();
    // SAFETY: the io_device is the mirror, live until `io_device_gone`.
    unsafe {
        sys::spdk_io_device_register(
            mirror.as_io_device(),
            Some(channel_create),
            Some(channel_destroy),
            std::mem::size_of::<*mut Channel>() as u32,
            dev_name.as_ptr(),
        )
    };
    let b = mirror.bdev_ptr();
    // SAFETY: the bdev is fully described and lives in the leaked box.
    let rc = unsafe { sys::spdk_bdev_register(b) };
    if rc != 0 {
        // A new mirror's superblocks are on its legs already: zero them, or the mirror that
        // was never created would assemble at the next start. (An assembled mirror keeps its
        // own: they describe a mirror that exists.) Then the io_device goes, and the mirror.
        let dev = mirror.as_io_device() as usize;
        persist::close(
            mirror,
            mirror.wipe.load(Ordering::Acquire),
            Box::new(move || {
                // SAFETY: the io_device is ours; the mirror is freed once it is gone.
                unsafe { sys::spdk_io_device_unregister(dev as *mut c_void, Some(free_unregistered)) };
            }),
        );
        let msg = if rc == -libc::EEXIST {
            format!("name: a bdev named '{name}' already exists")
        } else {
            format!(
                "cannot register bdev '{name}': {}",
                std::io::Error::from_raw_os_error(-rc)
            )
        };
        return Err(Fail(rc, msg));
    }
    mirror.registered.store(true, Ordering::Release);
    // Created: from now on only a delete zeroes the superblocks (a stop keeps them).
    mirror.wipe.store(false, Ordering::Release);
    REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .0
        .push(mirror as *const Mirror as usize);
    noticelog!(
        "mirror {}: {}, {} {} legs, {} blocks of {} bytes{}",
        name,
        if mirror.persist.as_ref().is_some_and(|p| p.resync_pending()) {
            "registered (resync pending)"
        } else {
            "registered"
        },
        mirror.geo().level(),
        mirror.geo().legs(),
        mirror.geo().data_blocks(),
        mirror.geo().block_size(),
        if mirror.persist.is_some() {
            ", superblock and bitmap on every leg"
        } else {
            ""
        }
    );
    Ok(mirror)
}

/// Frees a mirror whose bdev never registered, once no metadata kick is on its way to it.
extern "C" fn free_unregistered(dev: *mut c_void) {
    guard("mirror cleanup", (), || {
        if kicks_in_flight(dev) {
            return;
        }
        // SAFETY: leaked in `create`, never registered; its writer is closed and no message
        // refers to it any more.
        let mut m = unsafe { Box::from_raw(dev as *mut Mirror) };
        free_legs(&mut m);
    })
}

/// Whether a metadata kick is still on its way to mirror `dev`; if so, asks the thread to call
/// `free_unregistered`/`io_device_gone` again after it (messages run in order).
fn kicks_in_flight(dev: *mut c_void) -> bool {
    // SAFETY: the mirror is live until the caller frees it.
    let m = unsafe { &*(dev as *const Mirror) };
    let pending = m.persist.as_ref().is_some_and(|p| p.msgs.load(Ordering::Acquire) != 0);
    if pending {
        let again: extern "C" fn(*mut c_void) = if m.registered.load(Ordering::Acquire) {
            io_device_gone
        } else {
            free_unregistered
        };
        // SAFETY: same thread; the mirror stays live until `again` frees it.
        unsafe { sys::spdk_thread_send_msg(sys::spdk_get_thread(), Some(again), dev) };
    }
    pending
}

fn free_legs(m: &mut Mirror) {
    for leg in &m.slots {
        close_leg(leg);
        let pool = leg.pool.swap(ptr::null_mut(), Ordering::AcqRel);
        if !pool.is_null() {
            // SAFETY: no channel exists any more (or none was made), so no context is in use.
            unsafe { sys::spdk_mempool_free(pool) };
        }
    }
}

/// What a deletion does when it is over, with 0 or a negative errno.
pub type DeleteDone = Box<dyn FnOnce(i32)>;

/// Starts deleting a mirror; `done(rc)` runs when it is gone. A running process stops first:
/// the bdev layer tears the bdev down (its locks included) before it calls `destruct`, so no
/// range may be quiesced, or about to be, once the bdev is unregistered.
pub fn delete(mirror: &'static Mirror, done: DeleteDone) {
    mirror.deleting.store(true, Ordering::Release);
    mirror.wipe.store(true, Ordering::Release);
    if mirror.process_active.load(Ordering::Acquire) {
        if let Ok(mut u) = mirror.unregister_after_process.lock() {
            *u = Some(done);
            return;
        }
    }
    unregister(mirror, done);
}

fn unregister(mirror: &'static Mirror, done: DeleteDone) {
    let arg = Box::into_raw(Box::new(done)) as *mut c_void;
    let b = mirror.bdev_ptr();
    // SAFETY: the bdev is registered; `arg` is reclaimed in the callback.
    unsafe { sys::spdk_bdev_unregister(b, Some(unregistered), arg) };
}

extern "C" fn unregistered(arg: *mut c_void, rc: c_int) {
    guard("mirror delete", (), || {
        // SAFETY: boxed in `delete`.
        let done = unsafe { Box::from_raw(arg as *mut DeleteDone) };
        done(rc);
    })
}

static FN_TABLE: sys::spdk_bdev_fn_table = sys::spdk_bdev_fn_table {
    destruct: Some(destruct),
    submit_request: Some(submit_request),
    io_type_supported: Some(io_type_supported),
    get_io_channel: Some(get_io_channel),
    dump_info_json: Some(dump_info_json),
    write_config_json: Some(write_config_json),
    get_spin_time: None,
    get_module_ctx: None,
    get_memory_domains: None,
    get_memory_domain_types: None,
    reset_device_stat: None,
    dump_device_stat_json: None,
    accel_sequence_supported: None,
};

extern "C" fn destruct(ctx: *mut c_void) -> c_int {
    guard("mirror destruct", 0, || {
        let m = ctx as *const Mirror;
        REGISTRY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .retain(|&p| p != m as usize);
        // SAFETY: `ctx` is a live mirror.
        let mirror = unsafe { &*m };
        mirror.deleting.store(true, Ordering::Release);
        if mirror.process_active.load(Ordering::Acquire) {
            // The process sees `deleting`, stops, and calls `process_finished`.
            mirror.destruct_pending.store(true, Ordering::Release);
        } else {
            finish_destruct(mirror);
        }
        1 // asynchronous: spdk_bdev_destruct_done follows
    })
}

/// The last metadata write (a clean bitmap, or zeroed superblocks after a delete), then the
/// io_device goes once no management call holds the mirror.
fn finish_destruct(m: &'static Mirror) {
    let wipe = m.wipe.load(Ordering::Acquire);
    persist::close(
        m,
        wipe,
        Box::new(move || {
            if m.pins.load(Ordering::Acquire) == 0 {
                unregister_io_device(m);
            } else {
                m.unregister_waiting.store(true, Ordering::Release);
            }
        }),
    );
}

fn unregister_io_device(m: &Mirror) {
    // SAFETY: our io_device; freed in `io_device_gone` once every channel is destroyed.
    unsafe { sys::spdk_io_device_unregister(m.as_io_device(), Some(io_device_gone)) };
}

/// A management call's hold on a mirror across asynchronous steps (app thread): the mirror is
/// not freed while one exists, so the reference stays valid even if it is deleted meanwhile
/// (check `deleting` before acting on it).
pub struct Pin(&'static Mirror);

impl Pin {
    pub fn new(m: &'static Mirror) -> Pin {
        m.pins.fetch_add(1, Ordering::AcqRel);
        Pin(m)
    }

    pub fn mirror(&self) -> &'static Mirror {
        self.0
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let m = self.0;
        if m.pins.fetch_sub(1, Ordering::AcqRel) == 1 && m.unregister_waiting.swap(false, Ordering::AcqRel) {
            unregister_io_device(m);
        }
    }
}

extern "C" fn io_device_gone(dev: *mut c_void) {
    guard("mirror free", (), || {
        let m = dev as *mut Mirror;
        if kicks_in_flight(dev) {
            return;
        }
        // SAFETY: no channel is left; nobody else refers to the mirror now.
        unsafe {
            free_legs(&mut *m);
            noticelog!(
                "mirror {}: {}",
                (*m).name(),
                if (*m).wipe.load(Ordering::Acquire) {
                    "deleted"
                } else {
                    "stopped"
                }
            );
            sys::spdk_bdev_destruct_done(&mut (*m).bdev, 0);
            drop(Box::from_raw(m));
        }
    })
}

/// The channel stored in an io_channel's context.
///
/// # Safety
/// `ch` must be one of our mirror's io_channels.
pub unsafe fn channel_of<'a>(ch: *mut sys::spdk_io_channel) -> &'a Channel {
    // SAFETY: our channel context holds the boxed channel pointer (see `channel_create`).
    unsafe { &**(sys::spdk_mirror_shim_io_channel_get_ctx(ch) as *mut *mut Channel) }
}

extern "C" fn channel_create(dev: *mut c_void, buf: *mut c_void) -> c_int {
    guard("mirror channel create", -libc::ENOMEM, || {
        // SAFETY: `dev` is a live mirror (the io_device).
        let m = unsafe { &*(dev as *const Mirror) };
        match Channel::new(m) {
            Ok(chan) => {
                // SAFETY: `buf` has room for one pointer (the context size we registered).
                unsafe { *(buf as *mut *mut Channel) = Box::into_raw(chan) };
                0
            }
            Err(e) => {
                errlog!("mirror {}: {e}", m.name());
                -libc::ENOMEM
            }
        }
    })
}

extern "C" fn channel_destroy(_dev: *mut c_void, buf: *mut c_void) {
    guard("mirror channel destroy", (), || {
        // SAFETY: set in `channel_create`; destroyed once, on its thread.
        drop(unsafe { Box::from_raw(*(buf as *mut *mut Channel)) });
    })
}

extern "C" fn get_io_channel(ctx: *mut c_void) -> *mut sys::spdk_io_channel {
    // SAFETY: `ctx` is our registered io_device.
    guard("mirror get_io_channel", ptr::null_mut(), || unsafe {
        sys::spdk_get_io_channel(ctx)
    })
}

extern "C" fn io_type_supported(ctx: *mut c_void, io_type: sys::spdk_bdev_io_type) -> bool {
    guard("mirror io_type_supported", false, || {
        // SAFETY: `ctx` is a live mirror.
        let m = unsafe { &*(ctx as *const Mirror) };
        match io_type {
            sys::SPDK_BDEV_IO_TYPE_READ | sys::SPDK_BDEV_IO_TYPE_WRITE => true,
            sys::SPDK_BDEV_IO_TYPE_FLUSH
            | sys::SPDK_BDEV_IO_TYPE_UNMAP
            | sys::SPDK_BDEV_IO_TYPE_WRITE_ZEROES
            | sys::SPDK_BDEV_IO_TYPE_RESET => m
                .legs()
                .iter()
                .filter(|l| l.present())
                // SAFETY: present legs have open bdevs.
                .all(|l| unsafe { sys::spdk_bdev_io_type_supported(l.bdev(), io_type) }),
            _ => false,
        }
    })
}

fn fail_io(io: *mut sys::spdk_bdev_io) {
    // SAFETY: `io` is a live host I/O we have not completed.
    unsafe { sys::spdk_bdev_io_complete(io, sys::SPDK_BDEV_IO_STATUS_FAILED) };
}

extern "C" fn submit_request(ch: *mut sys::spdk_io_channel, io: *mut sys::spdk_bdev_io) {
    let handled = guard("mirror submit", false, || {
        // SAFETY: SPDK hands us a live bdev_io.
        let view = unsafe { host_io::view(io) };
        let op = match view.ty {
            sys::SPDK_BDEV_IO_TYPE_READ => {
                // SAFETY: the channel is ours; the mirror is its bdev's context.
                let bl = unsafe { (*(*io).bdev).blocklen } as u64;
                // Reads need a buffer; the bdev layer gives one if the caller did not.
                // SAFETY: live bdev_io of ours.
                unsafe { sys::spdk_bdev_io_get_buf(io, Some(read_buf_ready), view.num_blocks * bl) };
                return true;
            }
            sys::SPDK_BDEV_IO_TYPE_WRITE => IoOp::Write,
            sys::SPDK_BDEV_IO_TYPE_UNMAP => IoOp::Unmap,
            sys::SPDK_BDEV_IO_TYPE_WRITE_ZEROES => IoOp::WriteZeroes,
            sys::SPDK_BDEV_IO_TYPE_FLUSH => IoOp::Flush,
            sys::SPDK_BDEV_IO_TYPE_RESET => {
                super::reset::reset(io);
                return true;
            }
            _ => {
                fail_io(io);
                return true;
            }
        };
        submit_host(ch, io, op, &view);
        true
    });
    if !handled {
        fail_io(io);
    }
}

/// Hands a host I/O to this core's engine.
fn submit_host(ch: *mut sys::spdk_io_channel, io: *mut sys::spdk_bdev_io, op: IoOp, view: &host_io::IoView) {
    let req = IoRequest {
        op,
        lba: view.offset_blocks,
        blocks: view.num_blocks,
    };
    // SAFETY: `ch` is our channel; SPDK's `io` is non-null.
    unsafe { channel_of(ch).submit(NonNull::new_unchecked(io), req) };
}

extern "C" fn read_buf_ready(ch: *mut sys::spdk_io_channel, io: *mut sys::spdk_bdev_io, success: bool) {
    let handled = guard("mirror read", false, || {
        if !success {
            fail_io(io);
            return true;
        }
        // SAFETY: live bdev_io.
        let view = unsafe { host_io::view(io) };
        submit_host(ch, io, IoOp::Read, &view);
        true
    });
    if !handled {
        fail_io(io);
    }
}

extern "C" fn dump_info_json(ctx: *mut c_void, w: *mut sys::spdk_json_write_ctx) -> c_int {
    guard("mirror dump_info_json", 0, || {
        // SAFETY: `ctx` is a live mirror; `w` a live writer with an object open.
        unsafe { json::write_named(w, "mirror", &(*(ctx as *const Mirror)).info(None)) };
        0
    })
}

extern "C" fn write_config_json(bdev: *mut sys::spdk_bdev, w: *mut sys::spdk_json_write_ctx) {
    guard("mirror write_config_json", (), || {
        // SAFETY: our bdev's context is its mirror.
        let m = unsafe { &*((*bdev).ctxt as *const Mirror) };
        if m.persist.is_some() {
            // Its superblocks describe it: it assembles itself when its legs appear.
            return;
        }
        let call = json!({"method": "bdev_mirror_create", "params": m.create_params()});
        // SAFETY: `w` is live and expects one value.
        unsafe { json::write_value(w, &call) };
    })
}

/// A base bdev event: removal makes the leg go away (the mirror degrades); a resize may let
/// the mirror grow (`resize`).
extern "C" fn leg_event(ty: sys::spdk_bdev_event_type, bdev: *mut sys::spdk_bdev, ctx: *mut c_void) {
    guard("mirror leg event", (), || {
        // SAFETY: the event context is a slot of a live mirror (slots never move).
        let m = unsafe { &*(*(ctx as *const Leg)).mirror };
        // The bdev may have moved to another slot since it was opened (`move_leg`).
        let Some(slot) = (0..=m.num_legs()).find(|&i| m.slot(i).bdev() == bdev) else {
            return;
        };
        match ty {
            sys::SPDK_BDEV_EVENT_REMOVE => {
                warnlog!("mirror {}: base bdev {} is being removed", m.name(), bdev_name(bdev));
                if slot == m.replacement_slot() {
                    // The replacement's copy stops on it and the replacement is dropped.
                    m.fail_leg(slot, "hot-removed");
                } else {
                    remove_leg(m, slot, "hot-removed", Box::new(|_| {}));
                }
            }
            sys::SPDK_BDEV_EVENT_RESIZE => super::resize::leg_resized(m),
            _ => {}
        }
    })
}

/// What a removal does when it is over.
type RemoveDone = Box<dyn FnOnce(Result<(), Fail>)>;

struct Removal {
    /// Held across the channel iteration: a delete meanwhile waits for it.
    mirror: Pin,
    leg: u32,
    done: RemoveDone,
}

/// Takes a leg out of the mirror: failed at once for new I/O, then each channel lets go of it
/// once its children there are back, then its bdev is released and closed.
pub fn remove_leg(m: &'static Mirror, leg: u32, why: &str, done: RemoveDone) {
    let l = m.slot(leg);
    if !l.present() {
        return done(Err(Fail(
            -libc::ENODEV,
            format!("base_bdev: leg {leg} of {} is not present", m.name()),
        )));
    }
    if l.removing.swap(true, Ordering::AcqRel) {
        return done(Err(Fail(
            -libc::EBUSY,
            format!("base_bdev: '{}' is already being removed", l.name()),
        )));
    }
    m.fail_leg(leg, why);
    let r = Box::into_raw(Box::new(Removal {
        mirror: Pin::new(m),
        leg,
        done,
    }));
    // SAFETY: our io_device; `r` is reclaimed in `removal_done`.
    unsafe {
        sys::spdk_for_each_channel(
            m.as_io_device(),
            Some(removal_on_channel),
            r as *mut c_void,
            Some(removal_done),
        )
    };
}

extern "C" fn removal_on_channel(i: *mut sys::spdk_io_channel_iter) {
    guard("mirror leg removal", (), || {
        // SAFETY: the iteration's context is our Removal; its channel is ours.
        unsafe {
            let r = &*(sys::spdk_io_channel_iter_get_ctx(i) as *const Removal);
            channel_of(sys::spdk_io_channel_iter_get_channel(i)).release_leg(r.leg, i);
        }
    })
}

extern "C" fn removal_done(i: *mut sys::spdk_io_channel_iter, status: c_int) {
    guard("mirror leg removal done", (), || {
        // SAFETY: boxed in `remove_leg`; this is the last use.
        let r = unsafe { Box::from_raw(sys::spdk_io_channel_iter_get_ctx(i) as *mut Removal) };
        let m = r.mirror.mirror();
        let l = m.slot(r.leg);
        close_leg(l);
        l.write_only.store(false, Ordering::Release);
        l.removing.store(false, Ordering::Release);
        m.leg_gen.fetch_add(1, Ordering::AcqRel);
        noticelog!(
            "mirror {}: leg {} ({}) removed; the mirror is {}",
            m.name(),
            r.leg,
            l.name(),
            m.state()
        );
        let Removal { mirror, done, .. } = *r;
        done(if status == 0 {
            Ok(())
        } else {
            Err(Fail(status, "leg removal failed".into()))
        });
        drop(mirror);
    })
}

/// Puts an opened, claimed bdev into an empty slot, written but not read until it is in sync.
pub fn fill_slot(l: &Leg, name: &str, bdev: *mut sys::spdk_bdev, desc: *mut sys::spdk_bdev_desc) {
    if let Ok(mut n) = l.name.lock() {
        *n = name.to_string();
    }
    l.write_only.store(true, Ordering::Release);
    l.failed.store(false, Ordering::Release);
    l.bdev.store(bdev, Ordering::Release);
    l.desc.store(desc, Ordering::Release);
}

/// Empties a slot that holds no open bdev (reshape, with the mirror quiesced).
pub fn clear_slot(l: &Leg) {
    debug_assert!(!l.present());
    if let Ok(mut n) = l.name.lock() {
        n.clear();
    }
    l.failed.store(true, Ordering::Release);
    l.write_only.store(false, Ordering::Release);
    l.removing.store(false, Ordering::Release);
}

/// Moves the leg in slot `from` into the empty slot `to`, superblock entry included. Only in
/// a reshape: the mirror is quiesced and no I/O of the mirror's thread is outstanding, so no
/// one holds the slot's descriptor or channel. SPDK's events for the bdev still carry the old
/// slot as context; `leg_event` finds the bdev wherever it is.
pub fn move_leg(m: &Mirror, from: u32, to: u32) {
    let (a, b) = (m.slot(from), m.slot(to));
    debug_assert!(!b.present() && a.app_io_idle());
    let name = a.name();
    if let Ok(mut n) = b.name.lock() {
        *n = name;
    }
    b.bdev
        .store(a.bdev.swap(ptr::null_mut(), Ordering::AcqRel), Ordering::Release);
    b.app_ch
        .store(a.app_ch.swap(ptr::null_mut(), Ordering::AcqRel), Ordering::Release);
    b.failed.store(a.failed.load(Ordering::Acquire), Ordering::Release);
    b.write_only
        .store(a.write_only.load(Ordering::Acquire), Ordering::Release);
    b.desc
        .store(a.desc.swap(ptr::null_mut(), Ordering::AcqRel), Ordering::Release);
    clear_slot(a);
    if let Some(p) = &m.persist {
        let mut sb = p.superblock();
        if (from as usize) < sb.legs.len() && (to as usize) < sb.legs.len() {
            sb.legs.swap(from as usize, to as usize);
            let events = sb.events;
            sb.legs[from as usize].role = LegRole::Removed;
            sb.legs[from as usize].failed_at_events = events;
        }
    }
}

/// Closes the bdev in slot `i` (reshape, with the mirror quiesced and every channel about to
/// be rebuilt, so none keeps an I/O channel on it) and empties the slot.
pub fn drop_slot(m: &Mirror, i: u32) {
    let l = m.slot(i);
    l.failed.store(true, Ordering::Release);
    close_leg(l);
    clear_slot(l);
}

/// Why bdev `name` cannot become a new leg of `m` (a missing, claimed, too small or
/// self-referencing bdev), named after the RPC's `field`. Checked before anything changes.
pub fn check_new_leg(m: &Mirror, name: &str, field: &str) -> Result<(), Fail> {
    let cname = CString::new(name).map_err(|_| Fail(-libc::EINVAL, format!("{field}: name has a NUL")))?;
    // SAFETY: NUL-terminated name; lookup only (app thread).
    let bdev = unsafe { sys::spdk_bdev_get_by_name(cname.as_ptr()) };
    if bdev.is_null() {
        return Err(Fail(-libc::ENODEV, format!("{field}: no bdev named '{name}'")));
    }
    if reaches(name, m.name()) {
        return Err(Fail(
            -libc::EINVAL,
            format!(
                "{field}: '{name}' is the mirror '{}' itself or is built on it",
                m.name()
            ),
        ));
    }
    if find_leg(name).is_some() {
        return Err(Fail(
            -libc::EBUSY,
            format!("{field}: '{name}' is already a leg of a mirror"),
        ));
    }
    // SAFETY: a registered bdev, read on the app thread where claims change.
    if unsafe { (*bdev).internal.claim_type } != sys::SPDK_BDEV_CLAIM_NONE {
        return Err(Fail(-libc::EBUSY, format!("{field}: '{name}' is already claimed")));
    }
    let geo = m.geo();
    if let Some(msg) = unfit_leg(bdev, name, geo.block_size(), m.data_offset + geo.used_leg_blocks()) {
        return Err(Fail(-libc::EINVAL, format!("{field}: {msg}")));
    }
    Ok(())
}

/// Puts a newly opened bdev into slot `leg` and gives every channel an I/O channel on it.
pub fn attach_leg(
    m: &'static Mirror,
    leg: u32,
    bdev: *mut sys::spdk_bdev,
    desc: *mut sys::spdk_bdev_desc,
    name: &str,
    done: Box<dyn FnOnce(i32)>,
) {
    fill_slot(m.slot(leg), name, bdev, desc);
    m.leg_gen.fetch_add(1, Ordering::AcqRel);
    struct Attach {
        leg: u32,
        done: Box<dyn FnOnce(i32)>,
    }
    extern "C" fn on_channel(i: *mut sys::spdk_io_channel_iter) {
        let rc = guard("mirror leg attach", -libc::EIO, || {
            // SAFETY: our iteration and channel.
            unsafe {
                let a = &*(sys::spdk_io_channel_iter_get_ctx(i) as *const Attach);
                channel_of(sys::spdk_io_channel_iter_get_channel(i)).attach_leg(a.leg)
            }
        });
        // SAFETY: live iteration.
        unsafe { sys::spdk_for_each_channel_continue(i, rc) };
    }
    extern "C" fn all_done(i: *mut sys::spdk_io_channel_iter, status: c_int) {
        guard("mirror leg attach done", (), || {
            // SAFETY: boxed below; last use.
            let a = unsafe { Box::from_raw(sys::spdk_io_channel_iter_get_ctx(i) as *mut Attach) };
            (a.done)(status);
        })
    }
    let a = Box::into_raw(Box::new(Attach { leg, done }));
    // SAFETY: our io_device; `a` reclaimed in `all_done`.
    unsafe { sys::spdk_for_each_channel(m.as_io_device(), Some(on_channel), a as *mut c_void, Some(all_done)) };
}

/// Sums the per-leg counters of every channel, then calls `done` on the app thread.
pub fn collect_stats(m: &'static Mirror, done: Box<dyn FnOnce(Vec<LegStats>)>) {
    struct Collect {
        stats: Vec<LegStats>,
        parked: u64,
        done: Option<Box<dyn FnOnce(Vec<LegStats>)>>,
    }
    extern "C" fn on_channel(i: *mut sys::spdk_io_channel_iter) {
        guard("mirror stats", (), || {
            // SAFETY: our iteration and channel.
            unsafe {
                let c = &mut *(sys::spdk_io_channel_iter_get_ctx(i) as *mut Collect);
                channel_of(sys::spdk_io_channel_iter_get_channel(i)).add_stats(&mut c.stats, &mut c.parked);
            }
        });
        // SAFETY: live iteration.
        unsafe { sys::spdk_for_each_channel_continue(i, 0) };
    }
    extern "C" fn all_done(i: *mut sys::spdk_io_channel_iter, _status: c_int) {
        guard("mirror stats done", (), || {
            // SAFETY: boxed below; last use.
            let mut c = unsafe { Box::from_raw(sys::spdk_io_channel_iter_get_ctx(i) as *mut Collect) };
            if let Some(done) = c.done.take() {
                done(std::mem::take(&mut c.stats));
            }
        })
    }
    let retired = m.retired_stats.lock().map(|s| s.clone()).unwrap_or_default();
    let c = Box::into_raw(Box::new(Collect {
        stats: retired,
        parked: 0,
        done: Some(done),
    }));
    // SAFETY: our io_device; `c` reclaimed in `all_done`.
    unsafe { sys::spdk_for_each_channel(m.as_io_device(), Some(on_channel), c as *mut c_void, Some(all_done)) };
}

/// The bdev layer is shutting down (module `fini_start`, asynchronous): every mirror's process
/// stops before the bdev layer unregisters the mirrors, since it tears a bdev down before it
/// calls `destruct`. Answers `spdk_bdev_module_fini_start_done` once none runs.
pub extern "C" fn fini_start() {
    guard("mirror shutdown", (), || {
        for m in all() {
            m.deleting.store(true, Ordering::Release);
        }
        extern "C" fn wait(_: *mut c_void) -> c_int {
            guard("mirror shutdown wait", 0, || {
                if all().iter().any(|m| m.process_active.load(Ordering::Acquire)) {
                    return sys::SPDK_POLLER_IDLE as c_int;
                }
                let mut p = FINI_POLLER.swap(ptr::null_mut(), Ordering::AcqRel);
                // SAFETY: our poller, on this (the app) thread; the bdev layer goes on after.
                unsafe {
                    sys::spdk_poller_unregister(&mut p);
                    sys::spdk_bdev_module_fini_start_done();
                }
                sys::SPDK_POLLER_BUSY as c_int
            })
        }
        // SAFETY: a poller on the app thread with no argument.
        let p = unsafe { sys::spdk_poller_register(Some(wait), ptr::null_mut(), 1000) };
        FINI_POLLER.store(p, Ordering::Release);
    })
}

static FINI_POLLER: AtomicPtr<sys::spdk_poller> = AtomicPtr::new(ptr::null_mut());

/// A process stopped: finishes a deletion that waited for it, or recovers the next queued leg.
pub fn process_finished(m: &'static Mirror) {
    if m.destruct_pending.swap(false, Ordering::AcqRel) {
        return finish_destruct(m);
    }
    if m.deleting.load(Ordering::Acquire) {
        let waiting = m.unregister_after_process.lock().ok().and_then(|mut u| u.take());
        if let Some(done) = waiting {
            unregister(m, done);
        }
        return;
    }
    let next = m.queued.lock().ok().and_then(|mut q| q.pop_front());
    if let Some(q) = next {
        join_leg(m, q.slot, &q.bdev, q.kind, true, Box::new(|_| {}));
    }
    if !m.process_active.load(Ordering::Acquire) && m.resize_pending.swap(false, Ordering::AcqRel) {
        super::resize::leg_resized(m);
    }
}

/// Puts bdev `name` into slot `slot` and recovers it: `Recovery` copies the bitmap's missed
/// regions (a leg that returns), `Rebuild` everything (a new leg). While a process runs it is
/// queued when `queue` (a leg found at examine), else refused.
///
/// Everything that can fail is done before the mirror changes: the process slot and its buffer
/// are reserved first, the bdev opened and checked next; only an attach to every core can still
/// fail afterwards, and then the leg is taken out again. A call that fails changes nothing.
pub fn join_leg(
    m: &'static Mirror,
    slot: u32,
    name: &str,
    kind: Kind,
    queue: bool,
    done: Box<dyn FnOnce(Result<(), Fail>)>,
) {
    if queue && m.process_active.load(Ordering::Acquire) {
        if let Ok(mut q) = m.queued.lock() {
            q.push_back(Queued {
                slot,
                bdev: name.to_string(),
                kind,
            });
        }
        return done(Ok(()));
    }
    if reaches(name, m.name()) {
        return done(Err(Fail(
            -libc::EINVAL,
            format!(
                "base_bdev: '{name}' is the mirror '{}' itself or is built on it",
                m.name()
            ),
        )));
    }
    if m.slot(slot).present() {
        return done(Err(Fail(
            -libc::EBUSY,
            format!("base_bdev: slot {slot} of {} was filled meanwhile", m.name()),
        )));
    }
    let reserved = match process::reserve(m, kind, Some(slot)) {
        Ok(r) => r,
        Err(e) => return done(Err(Fail(-libc::EBUSY, format!("name: {}: {e}", m.name())))),
    };
    let leg: *const Leg = m.slot(slot);
    let (bdev, desc) = match open_leg(leg, name) {
        Ok(x) => x,
        Err(Fail(rc, msg)) => return done(Err(Fail(rc, msg.replacen("base_bdevs:", "base_bdev:", 1)))),
    };
    if let Some(msg) = unfit_leg(
        bdev,
        name,
        m.geo().block_size(),
        m.data_offset + m.geo().used_leg_blocks(),
    ) {
        // SAFETY: claimed and opened just above, on this thread.
        unsafe {
            sys::spdk_bdev_module_release_bdev(bdev);
            sys::spdk_bdev_close(desc);
        }
        return done(Err(Fail(-libc::EINVAL, format!("base_bdev: {msg}"))));
    }
    let old_name = m.slot(slot).name();
    let old_uuid = m.persist.as_ref().map(|p| p.superblock().legs[slot as usize].uuid);
    if let (Some(p), Kind::Rebuild) = (&m.persist, kind) {
        // A new member: a new identity in the leg table.
        p.superblock().legs[slot as usize].uuid = random_uuid();
    }
    attach_leg(
        m,
        slot,
        bdev,
        desc,
        name,
        Box::new(move |rc| {
            if rc != 0 {
                // Back as it was: the slot's identity, and no leg in it.
                if let (Some(p), Some(u)) = (&m.persist, old_uuid) {
                    p.superblock().legs[slot as usize].uuid = u;
                }
                remove_leg(
                    m,
                    slot,
                    "could not be attached to every core",
                    Box::new(move |_| {
                        let l = m.slot(slot);
                        if let Ok(mut n) = l.name.lock() {
                            *n = old_name;
                        }
                        drop(reserved);
                        done(Err(Fail(
                            rc,
                            "base_bdev: could not attach the leg on every core".into(),
                        )))
                    }),
                );
                return;
            }
            persist::kick(m);
            // Every core writes the leg now, so what it missed can no longer grow; writes still
            // in flight that skipped it are waited for at the process's end (`quiesce_all`).
            let ranges = match (&m.persist, kind) {
                (Some(p), Kind::Recovery) => p.missed_ranges(m.geo().data_blocks(), None),
                _ => vec![(0, m.geo().data_blocks())],
            };
            reserved.start(ranges, None);
            done(Ok(()))
        }),
    );
}
