//! A mirror's per-leg counters, summed over every core's channel (and the channels gone).

use std::os::raw::c_int;

use spdk_sys as sys;

use super::callback::{for_each_channel, PerChannel, Visit};
use super::mirror::Mirror;
use super::submit::channel_of;
use crate::engine::LegStats;

/// Sums the per-leg counters of every channel, then calls `done` on the app thread.
pub fn collect_stats(m: &'static Mirror, done: Box<dyn FnOnce(Vec<LegStats>)>) {
    let stats = m.retired_stats.lock().map(|s| s.clone()).unwrap_or_default();
    for_each_channel(m.as_io_device(), Collect { stats, parked: 0, done });
}

struct Collect {
    stats: Vec<LegStats>,
    parked: u64,
    done: Box<dyn FnOnce(Vec<LegStats>)>,
}

impl PerChannel for Collect {
    const WHAT: &'static str = "mirror stats";

    fn on_channel(&mut self, ch: *mut sys::spdk_io_channel, _: *mut sys::spdk_io_channel_iter) -> Visit {
        // SAFETY: a channel of the mirror's io_device.
        unsafe { channel_of(ch) }.add_stats(&mut self.stats, &mut self.parked);
        Visit::Next(0)
    }

    fn on_panic(&mut self) -> Visit {
        // The counters of one core are missing from the sum; that is all.
        Visit::Next(0)
    }

    fn done(self: Box<Self>, _status: c_int) {
        (self.done)(self.stats)
    }
}
