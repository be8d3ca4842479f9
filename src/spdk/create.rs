//! Creating a mirror (RPC or assembly from its legs): legs opened and claimed, pools made,
//! metadata written, bdev registered; on error nothing is left behind.

use std::collections::VecDeque;
use std::ffi::CString;
use std::os::raw::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use spdk_sys as sys;

use super::channel::Channel;
use super::child_ctx::MAX_CHILD_IOVS;
use super::error::Fail;
use super::ffi::noticelog;
use super::fn_table::{channel_create, channel_destroy, FN_TABLE};
use super::join::process_finished;
use super::leg::Leg;
use super::leg_events::open_leg;
use super::legs::{ensure_pool, free_legs, open_channels, unfit_leg};
use super::metadata::Persist;
use super::mirror::{encode_policy, registry_add, Hooks, Mirror, MirrorOpts, NEXT_ID, NO_REPLACEMENT};
use super::module::module_ptr;
use super::persist;
use super::teardown::free_unregistered;
use super::uuid::{random_uuid, uuid_bytes, uuid_text};
use crate::engine::plan::max_request_blocks;
use crate::engine::{LegStats, ReadPolicy};
use crate::placement::{Geometry, MAX_LEGS};
use crate::superblock::{LegEntry, LegRole, MetaLayout, Superblock};

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
                let err = Fail::new(-libc::EIO, "base_bdevs", format!("cannot write the superblock: {e}"));
                abandon(m);
                done(Err(err))
            }
        })),
    );
}

/// Opens the legs, makes the pools and fills in the bdev; nothing is registered yet.
fn prepare(spec: CreateSpec) -> Result<&'static Mirror, Fail> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let name = CString::new(spec.name.clone()).map_err(|_| Fail::invalid("name", "has a NUL"))?;
    let data_offset = spec.persist.as_ref().map(|p| p.layout.data_offset_blocks).unwrap_or(0);
    let mut mirror = Box::new(Mirror {
        bdev: sys::spdk_bdev::default(),
        // SAFETY: plain query; creation runs on an SPDK thread.
        thread: unsafe { sys::spdk_get_thread() },
        persist: None,
        data_offset,
        rebuild_max_mb: AtomicU64::new(spec.rebuild_max_mb),
        level: AtomicU32::new(0),
        plain_legs: AtomicBool::new(true),
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
        replacement_stopped: Mutex::new(Vec::new()),
        resize_pending: AtomicBool::new(false),
        hold_flushes: AtomicBool::new(false),
        leg_gen: AtomicU64::new(0),
        channels: AtomicU32::new(0),
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
        hooks: Hooks {
            write_metadata: persist::kick,
            process_finished,
        },
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
            mirror: mp as *const c_void,
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
                    return Err(Fail::invalid("base_bdevs", msg));
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
        if let Err(e) = ensure_pool(&mirror, i) {
            undo(&mut mirror);
            return Err(e);
        }
    }
    // The leg channels, while the shared pool has room (see the function). After every step
    // that can fail and retry: a channel being got holds its leg open a moment, and a retry
    // (assembly with default tunables) opens the same bdevs again at once.
    for l in &mirror.slots[..spec.base_bdevs.len()] {
        if l.present() {
            open_channels(l);
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
    // RAID10: the engine cuts a request at chunk boundaries itself (its children carry their
    // part of the host's iovecs) and takes at most MAX_SEGMENTS chunks a request, so have the
    // bdev layer cut only longer ones (a whole-device discard, a huge read or write), and those
    // with more iovecs than a child can carry. Not split at every chunk by the bdev layer, as it
    // was: its split parents each hold an `spdk_bdev_io` while they wait in SPDK's line for
    // their pieces', which no parked child of ours can pass, and under a starved pool they
    // held it all (a replace's range lock waiting for them, host I/O held up behind it, for
    // good). The boundary stays as a hint for hosts.
    if let Some(max) = max_request_blocks(&spec.geo) {
        let max = max.min(u32::MAX as u64) as u32;
        b.optimal_io_boundary = spec.geo.chunk_blocks() as u32;
        b.max_rw_size = max;
        b.max_num_segments = MAX_CHILD_IOVS as u32;
        b.max_segment_size = u32::MAX;
        b.max_unmap = max;
        b.max_unmap_segments = 1;
        b.max_write_zeroes = max;
    }
    b.ctxt = mp as *mut c_void;
    b.fn_table = &FN_TABLE;
    b.module = module_ptr();
    Ok(Box::leak(mirror))
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
        return Err(if rc == -libc::EEXIST {
            Fail::new(rc, "name", format!("a bdev named '{name}' already exists"))
        } else {
            Fail::plain(
                rc,
                format!(
                    "cannot register bdev '{name}': {}",
                    std::io::Error::from_raw_os_error(-rc)
                ),
            )
        });
    }
    mirror.registered.store(true, Ordering::Release);
    // Created: from now on only a delete zeroes the superblocks (a stop keeps them).
    mirror.wipe.store(false, Ordering::Release);
    registry_add(mirror);
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
