//! One boxed `Mirror` per bdev: the `spdk_bdev` SPDK sees, its leg slots, geometry, options and
//! state, and the registry of mirrors. Data and accessors only; creating, deleting and changing
//! a mirror live in the lifecycle files above (`create`, `teardown`, `legs`, `join`, ...).
//!
//! Threads: creation, deletion, leg removal and addition run on the app thread (RPC and bdev
//! events). I/O runs on any reactor through per-core channels, which read the legs' state
//! through atomics only.

use std::collections::VecDeque;
use std::ffi::CString;
use std::os::raw::c_void;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use serde_json::{json, Value};
use spdk_sys as sys;

use super::error::Fail;
use super::ffi::{bdev_name, errlog, shared_io_pool};
use super::json;
pub use super::leg::Leg;
use super::metadata::Persist;
use super::process_status::{Kind, ProcessStatus};
use super::reserve;
use crate::engine::{admitted_parents, LegStats, ReadPolicy};
use crate::placement::{Geometry, Level};

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
    /// How many mirrors are stacked below this one (`level`).
    pub(super) level: AtomicU32,
    /// No leg takes an `spdk_bdev_io` of its own for a child (`plain_legs`).
    pub(super) plain_legs: AtomicBool,
    pub(super) name: CString,
    /// Changed only with the whole mirror quiesced (`reshape`); read it with `geo()`.
    pub(super) geo: RwLock<Geometry>,
    pub uuid: String,
    pub chunk_kb: u64,
    pub opts: MirrorOpts,
    /// Child contexts each channel may keep per leg (`CtxCache`).
    pub ctx_cache: usize,
    /// Encoded `ReadPolicy` (see `encode_policy`); channels pick it up with the leg state.
    pub(super) read_policy: AtomicU64,
    /// `MAX_LEGS + 1` leg slots: the first `num_legs` are the legs, the one after them holds
    /// a replacement while a leg is being replaced (`replace`). Slots never move, so a leg's
    /// address stays valid for SPDK callbacks; only `num_legs` changes (under quiesce).
    pub(super) slots: Vec<Leg>,
    pub(super) num_legs: AtomicU32,
    /// The leg a replacement is being copied for (`NO_REPLACEMENT` if none).
    pub replacing: AtomicU32,
    /// RPCs that stopped the replace (`replace::stop`), answered once it is dropped.
    pub(super) replacement_stopped: Mutex<Vec<Answer>>,
    /// A leg grew while a process ran: look again when it ends (`resize`).
    pub resize_pending: AtomicBool,
    /// Host flushes wait in their channel while set (`reshape`): SPDK's quiesce holds reads
    /// and writes but lets flushes through, and a reshape needs every engine idle.
    pub hold_flushes: AtomicBool,
    /// Bumped whenever a leg changes state (or a channel comes or goes); channels
    /// resynchronise when it moves.
    pub leg_gen: AtomicU64,
    /// Its live I/O channels: the threads doing I/O to it (`admitted_parents`).
    pub channels: AtomicU32,
    pub process: Mutex<Option<ProcessStatus>>,
    /// A process holds leg channels and I/O: the mirror is freed only after it stops.
    pub process_active: AtomicBool,
    pub last_process: Mutex<Option<Value>>,
    /// Legs to recover once the running process ends.
    pub queued: Mutex<VecDeque<Queued>>,
    pub(super) destruct_pending: AtomicBool,
    pub deleting: AtomicBool,
    /// Deleted over RPC, or a new mirror whose creation failed: the superblocks are zeroed so
    /// the mirror does not come back.
    pub wipe: AtomicBool,
    /// Its bdev is registered (freed through `io_device_gone`, else `free_unregistered`).
    pub(super) registered: AtomicBool,
    /// Management calls in progress that hold the mirror across asynchronous steps (`Pin`):
    /// its io_device is unregistered only once none is left.
    pub(super) pins: std::sync::atomic::AtomicU32,
    /// The io_device is to be unregistered once the last pin goes.
    pub(super) unregister_waiting: AtomicBool,
    /// A delete waiting for the running process to stop before it unregisters the bdev.
    pub(super) unregister_after_process: Mutex<Option<DeleteDone>>,
    /// Bumped by every leg failure before the leg is marked failed; `fail_seen` after it is.
    /// `fail_gen_durable` catches up with the `fail_seen` a metadata write read before it
    /// reconciled the leg table, once that write is on the legs (see `fail_leg`).
    pub fail_gen: AtomicU64,
    pub fail_seen: AtomicU64,
    pub fail_gen_durable: AtomicU64,
    /// Counters of channels that are gone (live channels are summed at query time), per slot.
    pub retired_stats: Mutex<Vec<LegStats>>,
    /// Names this mirror's mempools.
    pub(super) id: u64,
    pub(super) hooks: Hooks,
}

/// Calls into the layers above, given to a mirror at creation: the I/O path and the background
/// work report through them instead of importing what sits above them.
pub struct Hooks {
    /// Asks the mirror's thread for a metadata write (`persist::kick`).
    pub write_metadata: fn(&Mirror),
    /// A background process (or a reshape) ended (`join::process_finished`).
    pub process_finished: fn(&'static Mirror),
}

// SAFETY: a Mirror is shared with reactor threads through raw pointers; everything they touch
// after creation is atomic or immutable; the rest is used on the app thread only.
unsafe impl Send for Mirror {}

// SAFETY: as above.
unsafe impl Sync for Mirror {}

/// Mirrors that exist, by address (app thread).
struct Registry(Vec<usize>);

static REGISTRY: Mutex<Registry> = Mutex::new(Registry(Vec::new()));

pub(super) static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A registered mirror joins the registry.
pub(super) fn registry_add(m: &'static Mirror) {
    REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .0
        .push(m as *const Mirror as usize);
}

/// A mirror being destructed leaves it.
pub(super) fn registry_remove(m: *const Mirror) {
    REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .0
        .retain(|&p| p != m as usize);
}

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

/// The mirror whose running replace copies onto bdev `name` (the replacement: no leg yet).
pub fn find_replacement(name: &str) -> Option<&'static Mirror> {
    all().into_iter().find(|m| {
        let r = m.slot(m.replacement_slot());
        m.replacing().is_some() && r.present() && r.name() == name
    })
}

/// Whether bdev `base` is the mirror called `mirror`, or is built on it through any stack of
/// bdevs (mirrors, passthru, delay, error, an lvol store, ...): such a leg would make the
/// mirror write into itself (a rebuild copying itself forever, every write recursing).
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
        todo.extend(bases_of(&b));
        seen.push(b);
    }
    false
}

/// How many mirrors are stacked at or below bdev `name` (a mirror counts itself), up to `most`.
/// `hops` bounds the walk through other bdevs (whose info may name bdevs they are not built on).
fn mirrors_at_or_below(name: &str, most: usize, hops: usize) -> usize {
    if most == 0 || hops > 16 {
        return 0;
    }
    // A mirror counts itself, and leaves one level fewer to count below it.
    let own = usize::from(find(name).is_some());
    own + bases_of(name)
        .iter()
        .map(|b| mirrors_at_or_below(b, most - own, hops + 1))
        .max()
        .unwrap_or(0)
}

/// The bdevs bdev `name` is built on, as far as SPDK lets one see: a mirror's legs; for any
/// other bdev, every bdev its module's info names (passthru and delay give `base_bdev_name`,
/// error and lvol `base_bdev`, raid its `base_bdevs_list`, ...: any string naming a bdev
/// counts, by its canonical name). Reading too much in only refuses a leg, with a message.
fn bases_of(name: &str) -> Vec<String> {
    if let Some(m) = find(name) {
        return m.legs().iter().filter(|l| l.present()).map(|l| l.name()).collect();
    }
    let Some(bdev) = bdev_by_name(name) else {
        return Vec::new();
    };
    // SAFETY: a registered bdev, looked up on the app thread, where the RPCs that ask run.
    let Some(info) = (unsafe { json::bdev_info(bdev) }) else {
        return Vec::new();
    };
    let mut strings = Vec::new();
    collect_strings(&info, &mut strings);
    let mut out: Vec<String> = strings
        .into_iter()
        .filter_map(bdev_by_name)
        .filter(|&b| b != bdev)
        .map(bdev_name)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The registered bdev called `name` (None also for a name with a NUL, which none has).
pub fn bdev_by_name(name: &str) -> Option<*mut sys::spdk_bdev> {
    let c = CString::new(name).ok()?;
    // SAFETY: a NUL-terminated name; the lookup only reads the bdev list.
    let b = unsafe { sys::spdk_bdev_get_by_name(c.as_ptr()) };
    (!b.is_null()).then_some(b)
}

fn collect_strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

/// The I/O types the mirror offers only while every present leg takes them (every copy must
/// change), with their names for errors; a new leg must take each one offered
/// (`legs::check_new_leg`).
pub const ALL_LEGS_TYPES: [(sys::spdk_bdev_io_type, &str); 3] = [
    (sys::SPDK_BDEV_IO_TYPE_UNMAP, "unmap"),
    (sys::SPDK_BDEV_IO_TYPE_WRITE_ZEROES, "write_zeroes"),
    (sys::SPDK_BDEV_IO_TYPE_RESET, "reset"),
];

/// Why a mirror with a superblock may not sit on bdev `base`, if it may not: `base` is a
/// mirror without one. Its legs would then hold the upper mirror's superblock at their block 0,
/// copies of one another, and at the next start examine would find the upper mirror on them,
/// beneath the lower one, and take them from it.
pub fn superblock_hidden_by(base: &str) -> Option<String> {
    find(base).filter(|m| m.persist.is_none()).map(|_| {
        format!(
            "'{base}' is a mirror without a superblock: a superblock over it would be found on its legs at the next start (give '{base}' one, or this mirror superblock: false)"
        )
    })
}

pub(super) fn encode_policy(p: ReadPolicy) -> u64 {
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

/// `Mirror::replacing` when no leg is being replaced.
pub const NO_REPLACEMENT: u32 = u32::MAX;

/// What a deletion does when it is over, with 0 or a negative errno.
pub type DeleteDone = Box<dyn FnOnce(i32)>;

/// An RPC's answer, given once what it asked for is done.
pub type Answer = Box<dyn FnOnce(Result<(), Fail>)>;

impl Mirror {
    /// Whether the mirror offers `io_type` now (its answer to SPDK's `io_type_supported`). A
    /// new leg must take every all-legs type offered (`legs::check_new_leg`).
    pub fn offers(&self, io_type: sys::spdk_bdev_io_type) -> bool {
        if io_type == sys::SPDK_BDEV_IO_TYPE_READ || io_type == sys::SPDK_BDEV_IO_TYPE_WRITE {
            return true;
        }
        let all_legs = ALL_LEGS_TYPES.iter().any(|&(t, _)| t == io_type);
        if !all_legs && io_type != sys::SPDK_BDEV_IO_TYPE_FLUSH {
            return false;
        }
        let mut takes = self
            .legs()
            .iter()
            .filter(|l| l.present())
            // SAFETY: present legs have open bdevs.
            .map(|l| unsafe { sys::spdk_bdev_io_type_supported(l.bdev(), io_type) });
        if all_legs {
            takes.all(|t| t)
        } else {
            // A flush has work wherever a leg takes one (a leg that does not has nothing to
            // flush, as SPDK's NVMe-oF target assumes of a bdev: its children skip it). Asking
            // for all would hide a leg's volatile cache whenever one leg lacks flush.
            takes.any(|t| t)
        }
    }

    /// Asks the mirror's thread for a metadata write, from any thread.
    #[inline]
    pub fn request_metadata_write(&self) {
        (self.hooks.write_metadata)(self)
    }

    /// A background process or reshape ended (mirror thread).
    pub fn process_finished(&'static self) {
        (self.hooks.process_finished)(self)
    }

    /// The mirror a leg slot belongs to.
    pub fn of_leg(leg: &Leg) -> &Mirror {
        // SAFETY: set at creation to the mirror holding the slot, which outlives its slots.
        unsafe { &*(leg.mirror as *const Mirror) }
    }

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

    /// How many mirrors are stacked below this one, through any stack of bdevs (0: none; else
    /// one more than the highest below), counted up to `reserve::LEVELS - 1`: which reserve
    /// thread serves it (`reserve`). As last counted (`relevel`): a count too high is harmless
    /// (a reserve above the mirrors below still serves), one too low is not, and only an
    /// opened leg can raise it.
    #[inline]
    pub fn level(&self) -> usize {
        self.level.load(Ordering::Acquire) as usize
    }

    /// Counts this mirror's level again (and whether its legs are plain: `plain_legs`), from
    /// its legs as they are now (app thread: it reads the bdevs below through their modules'
    /// info, as `reaches` does). When the level rose, the new level's reserve gets its channels
    /// on the legs, and every other mirror is counted again: one may stand on this one.
    pub fn relevel(&self) {
        self.recount_plain_legs();
        let most = reserve::LEVELS - 1;
        let now = self
            .slots
            .iter()
            .filter(|l| l.present())
            .map(|l| mirrors_at_or_below(&l.name(), most, 0))
            .max()
            .unwrap_or(0);
        if now > self.level.swap(now as u32, Ordering::AcqRel) as usize {
            // The new level's reserve gets its channels on every leg now, while the pool may
            // still have what a thread's first channel takes.
            for leg in self.slots.iter().filter(|l| l.present()) {
                reserve::open_channel(leg, now);
            }
            for m in all().into_iter().filter(|&m| !std::ptr::eq(m, self)) {
                m.relevel();
            }
        }
    }

    /// Whether every leg serves a child without an `spdk_bdev_io` of its own: a bdev that
    /// names no bdev below it (malloc, NVMe, null, aio), or a mirror (which draws on its own
    /// reserve). Another module's layer (delay, passthru, lvol, ...) does not, and a lone
    /// channel then keeps the pool's share of parents (`engine::admission`). Counted with the
    /// level (app thread); a leg read as a layer when it is not only costs the floor.
    fn plain_legs(&self) -> bool {
        self.plain_legs.load(Ordering::Acquire)
    }

    fn recount_plain_legs(&self) {
        let plain = self.slots.iter().filter(|l| l.present()).all(|l| {
            let name = l.name();
            find(&name).is_some() || bases_of(&name).is_empty()
        });
        if self.plain_legs.swap(plain, Ordering::AcqRel) != plain {
            // Every channel takes the admission this implies at its next run.
            self.leg_gen.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The slot a replacement goes into: the one after the legs.
    pub fn replacement_slot(&self) -> u32 {
        self.num_legs()
    }

    /// The leg being replaced, if any.
    pub fn replacing(&self) -> Option<u32> {
        Some(self.replacing.load(Ordering::Acquire)).filter(|&r| r != NO_REPLACEMENT)
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
        self.request_metadata_write();
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

    /// Parameters that recreate this mirror (save_config); `None` when it is offline.
    pub fn create_params(&self) -> Option<Value> {
        // Replayed, the call takes every leg it names as in sync, so a failed, removed or
        // rebuilding leg is saved as missing (null): it comes back as an empty slot to add a
        // leg to, not as a stale copy read as current, and a removed leg put to other use
        // does not fail the replay. An offline mirror is not saved: the legs it still has
        // failed at different times, and taken as in sync they would serve older copies of
        // some blocks (a create without a copy of every block is refused).
        let in_sync = self.in_sync_mask();
        if !self.every_block_covered(in_sync) {
            return None;
        }
        let base_bdevs: Vec<Value> = self
            .legs()
            .iter()
            .map(|l| {
                if in_sync & 1 << l.index != 0 {
                    json!(l.name())
                } else {
                    Value::Null
                }
            })
            .collect();
        let mut p = json!({
            "name": self.name(),
            "level": self.geo().level().as_str(),
            "base_bdevs": base_bdevs,
            "superblock": false,
            "uuid": self.uuid,
            "pool_size": self.opts.pool_size,
            "max_parents": self.opts.max_parents,
            "rebuild_max_mb_per_s": self.rebuild_max_mb.load(Ordering::Acquire),
            // Else the replay sizes it by the legs it finds: without a smaller leg that was
            // out, larger (a far or offset layout then places copies elsewhere).
            "leg_blocks": self.geo().leg_blocks(),
            // A leg added since the mirror was created is registered (and saved) after it.
            "wait_for_legs": true,
        });
        self.policy_json(&mut p);
        if self.geo().level() == Level::Raid10 {
            p["layout"] = json!(self.geo().layout().to_string());
            p["chunk_kb"] = json!(self.chunk_kb);
        }
        Some(p)
    }

    /// Parents each channel admits at once: `max_parents`, capped by SPDK's `spdk_bdev_io`
    /// pool, more tightly while more than one thread does I/O to the mirror
    /// (`engine::admission`).
    pub fn admitted_parents(&self) -> u32 {
        self.admitted_with(self.channels.load(Ordering::Acquire))
    }

    /// `admitted_parents` with `channels` channels open.
    fn admitted_with(&self, channels: u32) -> u32 {
        admitted_parents(
            self.opts.max_parents,
            self.geo().copies(),
            shared_io_pool(),
            channels,
            self.plain_legs(),
        )
    }

    /// A channel was opened: counted, and every channel takes the admission that now implies
    /// at its next run (`Channel::resync_legs`).
    pub fn channel_opened(&self) {
        self.channels.fetch_add(1, Ordering::AcqRel);
        self.leg_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// A channel was closed (or failed to open after `channel_opened`): as `channel_opened`.
    pub fn channel_closed(&self) {
        self.channels.fetch_sub(1, Ordering::AcqRel);
        self.leg_gen.fetch_add(1, Ordering::AcqRel);
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
        let channels = self.channels.load(Ordering::Acquire);
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
            "admitted_parents": self.admitted_with(channels),
            // The threads doing I/O to it now (`admitted_parents` depends on them): one read
            // for both, so the two always agree.
            "io_channels": channels,
            // Which reserve thread serves it (`level`).
            "mirrors_below": self.level(),
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
