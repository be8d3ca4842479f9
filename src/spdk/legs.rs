//! A mirror's leg slots changing hands: closing a leg, filling, moving and emptying slots,
//! checking a new leg, attaching one to every core, and the slots' child context pools.

use std::ffi::CString;
use std::os::raw::{c_int, c_void};
use std::ptr;
use std::sync::atomic::Ordering;

use spdk_sys as sys;

use super::callback::{arg_mut, for_each_channel, into_arg, take_arg, PerChannel, Visit};
use super::child_ctx::ChildCtx;
use super::error::Fail;
use super::ffi::{errlog, guard};
use super::leg::Leg;
use super::mirror::{bdev_by_name, find_leg, reaches, superblock_hidden_by, Mirror, ALL_LEGS_TYPES};
use super::reserve;
use super::submit::channel_of;
use crate::superblock::LegRole;

/// Makes slot `i`'s child context pool if it has none yet (app thread).
pub fn ensure_pool(m: &Mirror, i: u32) -> Result<(), Fail> {
    let leg = m.slot(i);
    if !leg.pool().is_null() {
        return Ok(());
    }
    let pname = CString::new(format!("mirror{}_{i}", m.id)).expect("no NUL");
    // SAFETY: valid name; element size is our context's.
    let pool = unsafe {
        sys::spdk_mempool_create(
            pname.as_ptr(),
            m.opts.pool_size as usize,
            std::mem::size_of::<ChildCtx>(),
            0,
            sys::SPDK_ENV_NUMA_ID_ANY,
        )
    };
    if pool.is_null() {
        return Err(Fail::new(
            -libc::ENOMEM,
            "pool_size",
            format!("cannot allocate {} child contexts per leg", m.opts.pool_size),
        ));
    }
    leg.pool.store(pool, Ordering::Release);
    Ok(())
}

/// Releases and closes a leg's bdev.
pub fn close_leg(leg: &Leg) {
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
            let c = unsafe { arg_mut::<Closing>(arg) };
            // SAFETY: the leg lives as long as its mirror, which waits for its legs' closes.
            if unsafe { (*c.leg).app_io.load(Ordering::Acquire) } == 0 {
                // SAFETY: our poller, on its thread; the box's last use.
                unsafe {
                    sys::spdk_poller_unregister(&mut c.poller);
                    take_arg::<Closing>(arg).close();
                }
            }
            sys::SPDK_POLLER_BUSY as c_int
        })
    }
    let arg = into_arg(c);
    // SAFETY: `arg` lives until the poller closes it; nothing else refers to it yet.
    unsafe { arg_mut::<Closing>(arg).poller = sys::spdk_poller_register(Some(retry), arg, 1000) };
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
        // Before the descriptor is closed (a new one may get its address), with nothing of
        // ours in flight on it.
        reserve::release_channel(self.desc);
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

pub fn free_legs(m: &mut Mirror) {
    for leg in &m.slots {
        close_leg(leg);
        let pool = leg.pool.swap(ptr::null_mut(), Ordering::AcqRel);
        if !pool.is_null() {
            // SAFETY: no channel exists any more (or none was made), so no context is in use.
            unsafe { sys::spdk_mempool_free(pool) };
        }
    }
}

/// A leg's bdev taken out of its slot still open and claimed (the leg a replacement took the
/// place of), for one last write before it is let go (`close`).
pub struct Retired {
    pub name: String,
    pub desc: *mut sys::spdk_bdev_desc,
    /// The mirror's thread's channel on it (null if it had none yet).
    pub ch: *mut sys::spdk_io_channel,
    pub bdev: *mut sys::spdk_bdev,
}

impl Retired {
    /// Lets the bdev go, as `close_leg` does (nothing of ours is in flight on it).
    pub fn close(self) {
        Closing {
            leg: ptr::null(),
            ch: self.ch,
            desc: self.desc,
            bdev: self.bdev,
            poller: ptr::null_mut(),
        }
        .close()
    }
}

/// Empties slot `i` as `drop_slot` does (in a reshape, no core keeping a channel on it and no
/// I/O of the mirror's thread outstanding), but keeps its bdev open: for the caller to write
/// it once more and then close it.
pub fn retire_slot(m: &Mirror, i: u32) -> Retired {
    let l = m.slot(i);
    l.failed.store(true, Ordering::Release);
    let r = Retired {
        name: l.name(),
        ch: l.app_ch.swap(ptr::null_mut(), Ordering::SeqCst),
        desc: l.desc.swap(ptr::null_mut(), Ordering::SeqCst),
        bdev: l.bdev.swap(ptr::null_mut(), Ordering::SeqCst),
    };
    clear_slot(l);
    r
}

/// Why a bdev's metadata keeps it from being a leg, if it has any: the mirror carries none.
/// Checked before its block size, which for interleaved metadata counts the metadata bytes
/// too (4104 for 4096 + 8) and would only confuse.
pub fn unfit_metadata(bdev: *mut sys::spdk_bdev, name: &str) -> Option<String> {
    // SAFETY: a registered bdev; queries only.
    let (md, interleaved) = unsafe { (sys::spdk_bdev_get_md_size(bdev), sys::spdk_bdev_is_md_interleaved(bdev)) };
    if md == 0 {
        None
    } else if interleaved {
        Some(format!(
            "'{name}' has {md} bytes of metadata per block, interleaved with the data; not supported"
        ))
    } else {
        Some(format!("'{name}' has {md} bytes of metadata per block; not supported"))
    }
}

/// Why a bdev cannot be a leg of this mirror, if it cannot.
pub fn unfit_leg(bdev: *mut sys::spdk_bdev, name: &str, block_size: u32, blocks_needed: u64) -> Option<String> {
    if let Some(msg) = unfit_metadata(bdev, name) {
        return Some(msg);
    }
    // SAFETY: an open bdev; queries only.
    let (bl, n) = unsafe { (sys::spdk_bdev_get_block_size(bdev), sys::spdk_bdev_get_num_blocks(bdev)) };
    if bl != block_size {
        Some(format!("block sizes differ ('{name}' has {bl}, expected {block_size})"))
    } else if n < blocks_needed {
        Some(format!("'{name}' has {n} blocks, the mirror needs {blocks_needed}"))
    } else {
        None
    }
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
    open_channels(l);
}

/// Gets the mirror thread's and the reserve thread's channels on a leg just opened (mirror
/// thread only), after counting the mirror's level again (`Mirror::relevel`). SPDK makes
/// a thread's first bdev channel with its management channel, which takes
/// `bdev_io_cache_size` `spdk_bdev_io` from the shared pool; made later, on the first reserve
/// child or metadata write, it failed whenever the pool was empty, which is exactly when those
/// are needed. A failure here is not fatal: it is tried again on use.
pub fn open_channels(l: &Leg) {
    // A level that rose with this leg gets its reserve's channels on every leg there.
    let m = Mirror::of_leg(l);
    m.relevel();
    reserve::open_channel(l, m.level());
    if l.app_channel().is_null() {
        errlog!(
            "mirror: no channel on leg {} from the mirror's thread yet (no memory); it is tried again when needed",
            l.index
        );
    }
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
    let Some(bdev) = bdev_by_name(name) else {
        return Err(Fail::new(
            -libc::ENODEV,
            field.to_string(),
            format!("no bdev named '{name}'"),
        ));
    };
    if reaches(name, m.name()) {
        return Err(Fail::invalid(
            field.to_string(),
            format!("'{name}' is the mirror '{}' itself or is built on it", m.name()),
        ));
    }
    if find_leg(name).is_some() {
        return Err(Fail::new(
            -libc::EBUSY,
            field.to_string(),
            format!("'{name}' is already a leg of a mirror"),
        ));
    }
    // SAFETY: a registered bdev, read on the app thread where claims change.
    if unsafe { (*bdev).internal.claim_type } != sys::SPDK_BDEV_CLAIM_NONE {
        return Err(Fail::new(
            -libc::EBUSY,
            field.to_string(),
            format!("'{name}' is already claimed"),
        ));
    }
    let geo = m.geo();
    if let Some(msg) = unfit_leg(bdev, name, geo.block_size(), m.data_offset + geo.used_leg_blocks()) {
        return Err(Fail::invalid(field.to_string(), msg));
    }
    if let Some(msg) = missing_io_types(m, bdev, name) {
        return Err(Fail::invalid(field.to_string(), msg));
    }
    if let Some(msg) = superblock_hidden_by(name).filter(|_| m.persist.is_some()) {
        return Err(Fail::invalid(field.to_string(), msg));
    }
    Ok(())
}

/// Why bdev `name` cannot join `m` for the I/O it would be sent: a type the mirror offers now
/// because every present leg takes it, which this bdev does not take (its first such I/O would
/// fail it). Flush is not asked for: the mirror offers it when any leg takes it, and a leg
/// without one has nothing to flush.
fn missing_io_types(m: &Mirror, bdev: *mut sys::spdk_bdev, name: &str) -> Option<String> {
    let missing: Vec<&str> = ALL_LEGS_TYPES
        .iter()
        .filter(|&&(t, _)| {
            // SAFETY: a registered bdev, queried on the app thread.
            m.offers(t) && !unsafe { sys::spdk_bdev_io_type_supported(bdev, t) }
        })
        .map(|&(_, what)| what)
        .collect();
    let list = match missing.as_slice() {
        [] => return None,
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    };
    Some(format!("'{name}' does not take {list}, which the mirror offers"))
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
    for_each_channel(m.as_io_device(), Attach { leg, done });
}

/// Opens an I/O channel on a new leg in every channel.
struct Attach {
    leg: u32,
    done: Box<dyn FnOnce(i32)>,
}

impl PerChannel for Attach {
    const WHAT: &'static str = "mirror leg attach";

    fn on_channel(&mut self, ch: *mut sys::spdk_io_channel, _: *mut sys::spdk_io_channel_iter) -> Visit {
        // SAFETY: a channel of the mirror's io_device.
        Visit::Next(unsafe { channel_of(ch) }.attach_leg(self.leg))
    }

    fn on_panic(&mut self) -> Visit {
        // The attach fails, and the caller takes the leg out again.
        Visit::Next(-libc::EIO)
    }

    fn done(self: Box<Self>, status: c_int) {
        (self.done)(status)
    }
}
