//! One leg slot of a mirror: its open descriptor, child context pool and state. Data and
//! accessors; the fields channels read are atomics.

use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::Mutex;

use spdk_sys as sys;

/// One leg. Fields that channels read are atomics.
pub struct Leg {
    pub index: u32,
    pub(super) name: Mutex<String>,
    pub(super) bdev: AtomicPtr<sys::spdk_bdev>,
    pub(super) desc: AtomicPtr<sys::spdk_bdev_desc>,
    /// The slot's child contexts (made when the slot first holds a leg, kept until the mirror
    /// goes: a slot emptied by a shrink may be filled again by a grow).
    pub(super) pool: AtomicPtr<sys::spdk_mempool>,
    pub failed: AtomicBool,
    /// Being rebuilt: written, never read.
    pub write_only: AtomicBool,
    pub(super) removing: AtomicBool,
    /// The mirror thread's channel on this leg (metadata and background processes), kept open:
    /// under I/O pressure a new channel may be impossible to get.
    pub(super) app_ch: AtomicPtr<sys::spdk_io_channel>,
    /// I/O in flight on `app_ch`: the channel and desc are closed only once it is back.
    pub(super) app_io: std::sync::atomic::AtomicU32,
    /// The `Mirror` holding this slot (opaque at this layer: a mirror is made of its legs;
    /// `Mirror::of_leg` reads it).
    pub(super) mirror: *const c_void,
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
        // SAFETY: the caller's contract.
        rc == -libc::ENOMEM && unsafe { wait_for_io(self.bdev(), ch, wait, retry, arg) }
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

/// Queues `wait` to call `retry(arg)` once an `spdk_bdev_io` is free on `ch` (an I/O of the
/// mirror's thread refused with `-ENOMEM`). False when it could not be queued.
///
/// # Safety
/// `ch` is a channel of this thread on `bdev`; `wait` must stay valid until it is called back.
pub unsafe fn wait_for_io(
    bdev: *mut sys::spdk_bdev,
    ch: *mut sys::spdk_io_channel,
    wait: &mut sys::spdk_bdev_io_wait_entry,
    retry: extern "C" fn(*mut c_void),
    arg: *mut c_void,
) -> bool {
    wait.bdev = bdev;
    wait.cb_fn = Some(retry);
    wait.cb_arg = arg;
    // SAFETY: the caller keeps `wait` alive until the callback.
    unsafe { sys::spdk_bdev_queue_io_wait(bdev, ch, wait) == 0 }
}
