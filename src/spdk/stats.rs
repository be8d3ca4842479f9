//! A mirror's per-leg counters, summed over every core's channel (and the channels gone).

use std::os::raw::{c_int, c_void};

use spdk_sys as sys;

use super::ffi::guard;
use super::mirror::Mirror;
use super::submit::channel_of;
use crate::engine::LegStats;

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
