//! Changing a mirror's shape while it serves: the number of legs (grow, shrink), its size
//! (resize) and the swap that ends a replacement.
//!
//! md reshapes under `mddev_suspend`; SPDK's equivalent is `spdk_bdev_quiesce`: every host I/O
//! is complete and no new one is admitted. Then, with no metadata write in flight, the change is
//! applied on the mirror's thread, every channel rebuilds its engine for the new shape (each
//! engine is idle, so nothing is carried over but counters), the new size is announced, the
//! metadata is written (the superblock records the new shape), and only then does I/O resume.
//! The mirror's process slot is held throughout, so no rebuild, recovery or other reshape runs
//! meanwhile, and a delete waits for it.

use std::os::raw::{c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

use spdk_sys as sys;

use super::callback::{end_chain, for_each_channel, start_chain, PerChannel, Visit};
use super::error::Fail;
use super::ffi::{errlog, guard, noticelog};
use super::mirror::Mirror;
use super::module::module_ptr;
use super::persist;
use super::submit::channel_of;
use super::teardown::Pin;

/// The change itself, applied on the mirror's thread with the mirror quiesced. An error
/// must leave the mirror as it was.
pub type Apply = Box<dyn FnOnce(&'static Mirror) -> Result<(), Fail>>;
/// Called once I/O has resumed (or the reshape was refused).
pub type Done = Box<dyn FnOnce(Result<(), Fail>)>;

struct Reshape {
    mirror: Pin,
    what: &'static str,
    apply: Option<Apply>,
    done: Option<Done>,
    result: Result<(), Fail>,
    blocks_before: u64,
    poller: *mut sys::spdk_poller,
    /// When the wait for the metadata writer began: I/O is held meanwhile, so not forever.
    waiting_since: std::time::Instant,
    /// Cores whose channel could not be rebuilt (counted from their threads).
    failed_cores: AtomicU32,
    /// A look at every core's engine is under way (`check_idle`).
    checking: bool,
    /// This reshape set `Mirror::hold_flushes`; its end lifts it.
    holding_flushes: bool,
}

/// How long a reshape waits, with I/O held, for metadata I/O to finish before it gives up.
const IDLE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reshapes `m` with `apply` (see the module comment); `what` names the change in logs.
pub fn reshape(m: &'static Mirror, what: &'static str, apply: Apply, done: Done) {
    if m.deleting.load(Ordering::Acquire) {
        return done(Err(Fail::new(-libc::ENODEV, "name", "the mirror is being deleted")));
    }
    if m.process_active.swap(true, Ordering::AcqRel) {
        return done(Err(Fail::new(
            -libc::EBUSY,
            "name",
            format!(
                "mirror '{}' is running a background process or another change",
                m.name()
            ),
        )));
    }
    let r = start_chain(Reshape {
        mirror: Pin::new(m),
        what,
        apply: Some(apply),
        done: Some(done),
        result: Ok(()),
        blocks_before: m.geo().data_blocks(),
        poller: ptr::null_mut(),
        waiting_since: std::time::Instant::now(),
        failed_cores: AtomicU32::new(0),
        checking: false,
        holding_flushes: false,
    });
    // The whole bdev as it is now, by range: a resize changes its size before the unquiesce,
    // which must name the same range.
    let b = m.bdev_ptr();
    // SAFETY: our registered bdev; `r` lives until `finish`.
    let rc = unsafe {
        sys::spdk_bdev_quiesce_range(b, module_ptr(), 0, (*r).blocks_before, Some(quiesced), r as *mut c_void)
    };
    if rc != 0 {
        fail(
            r,
            Fail::plain(
                rc,
                format!("cannot quiesce the mirror: {}", std::io::Error::from_raw_os_error(-rc)),
            ),
        );
        finish(r);
    }
}

extern "C" fn quiesced(arg: *mut c_void, status: c_int) {
    guard("mirror reshape", (), || {
        let r = arg as *mut Reshape;
        if status != 0 {
            fail(r, Fail::plain(status, format!("cannot quiesce the mirror: {status}")));
            return finish(r);
        }
        // SAFETY: ours until `finish`.
        let rs = unsafe { &mut *r };
        // The quiesce holds reads and writes, not flushes: they wait in their channels from
        // now on, and those already in an engine are waited for (`check_idle`).
        rs.mirror.mirror().hold_flushes.store(true, Ordering::Release);
        rs.holding_flushes = true;
        rs.waiting_since = std::time::Instant::now();
        check_idle(r);
    })
}

/// Looks at every core's engine (a flush the quiesce let through may still be in one) and,
/// back on the mirror's thread, at its metadata I/O; applies the change once all are idle,
/// looking again every millisecond meanwhile, for at most `IDLE_WAIT`.
fn check_idle(r: *mut Reshape) {
    // SAFETY: ours until `finish`.
    let rs = unsafe { &mut *r };
    rs.checking = true;
    for_each_channel(rs.mirror.mirror().as_io_device(), IdleCheck { r, busy: 0 });
}

/// Counts the cores whose engine is not idle.
struct IdleCheck {
    r: *mut Reshape,
    busy: u32,
}

impl PerChannel for IdleCheck {
    const WHAT: &'static str = "mirror reshape";

    fn on_channel(&mut self, ch: *mut sys::spdk_io_channel, _: *mut sys::spdk_io_channel_iter) -> Visit {
        // SAFETY: a channel of the mirror's io_device.
        if !unsafe { channel_of(ch) }.idle() {
            self.busy += 1;
        }
        Visit::Next(0)
    }

    fn on_panic(&mut self) -> Visit {
        self.busy += 1;
        Visit::Next(0)
    }

    fn done(self: Box<Self>, status: c_int) {
        let (r, busy) = (self.r, self.busy);
        // SAFETY: ours until `finish`.
        let rs = unsafe { &mut *r };
        rs.checking = false;
        let meta_idle = idle(rs.mirror.mirror());
        if status == 0 && busy == 0 && meta_idle {
            stop_poller(rs);
            return apply(r);
        }
        if rs.waiting_since.elapsed() >= IDLE_WAIT {
            stop_poller(rs);
            let why = if busy != 0 {
                format!("host I/O on {busy} core(s) that the quiesce lets through (flushes) did not finish; try again")
            } else {
                "metadata I/O to the legs did not finish; try again".to_string()
            };
            fail(r, Fail::plain(-libc::EBUSY, why));
            return unquiesce(r);
        }
        if rs.poller.is_null() {
            extern "C" fn again(arg: *mut c_void) -> c_int {
                guard("mirror reshape", 0, || {
                    let r = arg as *mut Reshape;
                    // SAFETY: ours until `finish`; the poller goes before.
                    if unsafe { (*r).checking } {
                        return sys::SPDK_POLLER_IDLE as c_int;
                    }
                    check_idle(r);
                    sys::SPDK_POLLER_BUSY as c_int
                })
            }
            // SAFETY: `r` outlives the poller, which is unregistered before `apply` or
            // `unquiesce`.
            rs.poller = unsafe { sys::spdk_poller_register(Some(again), r as *mut c_void, 1000) };
        }
    }
}

fn stop_poller(rs: &mut Reshape) {
    if !rs.poller.is_null() {
        // SAFETY: our poller, on its thread.
        unsafe { sys::spdk_poller_unregister(&mut rs.poller) };
    }
}

/// No metadata write in flight and no leg I/O of the mirror's thread outstanding.
fn idle(m: &Mirror) -> bool {
    persist::writer_idle(m) && (0..=m.num_legs()).all(|i| m.slot(i).app_io_idle())
}

fn apply(r: *mut Reshape) {
    // SAFETY: ours until `finish`.
    let rs = unsafe { &mut *r };
    let m = rs.mirror.mirror();
    let f = rs.apply.take().expect("applied once");
    // A leg being taken out is released by slot once every core let go of it: no leg may move
    // or go meanwhile.
    if (0..=m.num_legs()).any(|i| m.slot(i).removing()) {
        fail(
            r,
            Fail::new(-libc::EBUSY, "base_bdev", "a leg is being removed; try again"),
        );
        return unquiesce(r);
    }
    if let Err(e) = f(m) {
        fail(r, e);
        return unquiesce(r);
    }
    m.leg_gen.fetch_add(1, Ordering::AcqRel);
    for_each_channel(m.as_io_device(), NewShape(r));
}

/// Every channel takes the new shape; the reshape (`r`, live until `finish`) goes on after.
struct NewShape(*mut Reshape);

impl PerChannel for NewShape {
    const WHAT: &'static str = "mirror reshape";

    fn on_channel(&mut self, ch: *mut sys::spdk_io_channel, _: *mut sys::spdk_io_channel_iter) -> Visit {
        // SAFETY: a channel of the mirror's io_device.
        if unsafe { channel_of(ch) }.reshape() != 0 {
            // SAFETY: the reshape lives until `finish`; only this counter is shared.
            unsafe { (*self.0).failed_cores.fetch_add(1, Ordering::AcqRel) };
        }
        // Every other core still takes the new shape: an error would stop the iteration here.
        Visit::Next(0)
    }

    fn on_panic(&mut self) -> Visit {
        // As a refusal: counted, and the other cores still take the new shape.
        // SAFETY: as in `on_channel`.
        unsafe { (*self.0).failed_cores.fetch_add(1, Ordering::AcqRel) };
        Visit::Next(0)
    }

    fn done(self: Box<Self>, status: c_int) {
        channels_done(self.0, status)
    }
}

fn channels_done(r: *mut Reshape, status: c_int) {
    // SAFETY: ours until `finish`.
    let rs = unsafe { &mut *r };
    let m = rs.mirror.mirror();
    let failed = rs.failed_cores.load(Ordering::Acquire);
    if status != 0 || failed != 0 {
        // A core kept its old engine. This is a bug: a channel reshapes only when idle,
        // which the quiesce guarantees.
        errlog!("mirror {}: {failed} core(s) could not take the new shape", m.name());
        fail(r, Fail::plain(-libc::EIO, "a core could not take the new shape"));
    }
    let blocks = m.geo().data_blocks();
    if blocks != rs.blocks_before {
        // SAFETY: our registered bdev; the layer tells every open descriptor.
        let rc = unsafe { sys::spdk_bdev_notify_blockcnt_change(m.bdev_ptr(), blocks) };
        if rc != 0 {
            errlog!("mirror {}: cannot announce the new size: {rc}", m.name());
        }
    }
    // I/O resumes only once the legs record the new shape.
    persist::write(
        m,
        Some(Box::new(move |w| {
            if let Err(e) = w {
                errlog!("mirror {}: metadata write after a change failed: {e}", m.name());
            }
            unquiesce(r);
        })),
    );
}

fn unquiesce(r: *mut Reshape) {
    extern "C" fn unquiesced(arg: *mut c_void, _status: c_int) {
        guard("mirror reshape", (), || finish(arg as *mut Reshape))
    }
    // SAFETY: ours until `finish`.
    let (m, blocks) = unsafe { ((*r).mirror.mirror(), (*r).blocks_before) };
    // SAFETY: the range we quiesced; `r` lives until the callback.
    let rc = unsafe {
        sys::spdk_bdev_unquiesce_range(
            m.bdev_ptr(),
            module_ptr(),
            0,
            blocks,
            Some(unquiesced),
            r as *mut c_void,
        )
    };
    if rc != 0 {
        errlog!("mirror {}: cannot unquiesce after a change: {rc}", m.name());
        finish(r);
    }
}

fn fail(r: *mut Reshape, e: Fail) {
    // SAFETY: ours until `finish`.
    let rs = unsafe { &mut *r };
    if rs.result.is_ok() {
        rs.result = Err(e);
    }
}

fn finish(r: *mut Reshape) {
    // SAFETY: the last use of the box made in `reshape`.
    let mut rs = unsafe { end_chain(r) };
    let m = rs.mirror.mirror();
    match &rs.result {
        Ok(()) => noticelog!("mirror {}: {} done; the mirror is {}", m.name(), rs.what, m.state()),
        Err(why) => errlog!("mirror {}: {} refused: {why}", m.name(), rs.what),
    }
    if rs.holding_flushes {
        m.hold_flushes.store(false, Ordering::Release);
        for_each_channel(m.as_io_device(), ReleaseFlushes { _pin: Pin::new(m) });
    }
    m.process_active.store(false, Ordering::Release);
    let result = std::mem::replace(&mut rs.result, Ok(()));
    if let Some(done) = rs.done.take() {
        done(result);
    }
    // Queued legs join now, or a delete that waited goes on (the pin still holds the mirror).
    m.process_finished();
    drop(rs);
}

/// Every core submits the flushes it held (`Mirror::hold_flushes`).
struct ReleaseFlushes {
    /// Keeps the mirror (its io_device) until every core was visited.
    _pin: Pin,
}

impl PerChannel for ReleaseFlushes {
    const WHAT: &'static str = "mirror flush release";

    fn on_channel(&mut self, ch: *mut sys::spdk_io_channel, _: *mut sys::spdk_io_channel_iter) -> Visit {
        // SAFETY: a channel of the mirror's io_device.
        unsafe { channel_of(ch) }.release_flushes();
        Visit::Next(0)
    }

    fn on_panic(&mut self) -> Visit {
        Visit::Next(0)
    }

    fn done(self: Box<Self>, _: c_int) {}
}
