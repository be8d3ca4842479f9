//! Module-wide options (`bdev_mirror_set_module_options`), in SPDK's `*_set_options` style: set
//! before `framework_start_init` so they already apply to the mirrors assembled while the
//! startup config's bdevs appear, and changeable at runtime.
//!
//! They are read on the app thread (examine) and written by RPCs on the same thread; atomics
//! keep that sound without a lock and let any thread read them.

use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{json, Value};
use spdk_sys as sys;

use super::ffi::guard;
use super::json;

/// How long a mirror that could run degraded waits for its missing legs, by default: mdadm's
/// last-resort timer (30 s). A missing leg that its fresh legs call active may hold writes
/// they lack (it ran on while they were away): assembled without it, the mirror serves their
/// older data. A short grace made that a matter of one leg attached a few seconds late.
pub const DEFAULT_DEGRADED_GRACE_MS: u64 = 30_000;
/// Longest grace accepted: an hour. Longer is "never", which `degraded_assembly: false` says.
pub const MAX_DEGRADED_GRACE_MS: u64 = 3_600_000;

static DEGRADED_GRACE_MS: AtomicU64 = AtomicU64::new(DEFAULT_DEGRADED_GRACE_MS);
static DEGRADED_ASSEMBLY: AtomicBool = AtomicBool::new(true);

/// A full set of module options (what `bdev_mirror_get_module_options` shows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleOptions {
    /// Wait for missing legs before assembling degraded, in ms.
    pub degraded_grace_ms: u64,
    /// `false`: never assemble degraded; wait for every leg the newest superblock calls active.
    pub degraded_assembly: bool,
}

/// The options in force.
pub fn get() -> ModuleOptions {
    ModuleOptions {
        degraded_grace_ms: DEGRADED_GRACE_MS.load(Ordering::Acquire),
        degraded_assembly: DEGRADED_ASSEMBLY.load(Ordering::Acquire),
    }
}

/// Replaces the options; the caller validated them all first, so a refused call changes none.
pub fn set(o: ModuleOptions) {
    DEGRADED_GRACE_MS.store(o.degraded_grace_ms.min(MAX_DEGRADED_GRACE_MS), Ordering::Release);
    DEGRADED_ASSEMBLY.store(o.degraded_assembly, Ordering::Release);
}

/// The grace period in µs, as `spdk_poller_register` takes it.
pub fn degraded_grace_us() -> u64 {
    get().degraded_grace_ms * 1000
}

pub fn degraded_assembly() -> bool {
    get().degraded_assembly
}

impl ModuleOptions {
    pub fn to_json(self) -> Value {
        json!({
            "degraded_grace_ms": self.degraded_grace_ms,
            "degraded_assembly": self.degraded_assembly,
        })
    }
}

/// The module's `config_json` callback: `save_config` replays the options before the bdevs,
/// so a restarted target assembles with them.
pub extern "C" fn config_json(w: *mut sys::spdk_json_write_ctx) -> c_int {
    guard("mirror config_json", 0, || {
        let call = json!({"method": "bdev_mirror_set_module_options", "params": get().to_json()});
        // SAFETY: SPDK hands a live writer with an array open, expecting whole objects.
        unsafe { json::write_value(w, &call) };
        0
    })
}
