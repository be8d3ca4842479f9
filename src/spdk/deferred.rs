//! Creates that wait for their legs (`bdev_mirror_create` with `wait_for_legs`, as
//! `save_config` writes it).
//!
//! SPDK saves a config's bdevs in the order they were registered, so a leg added to a mirror
//! after the mirror was created (a replace, an add) is created after the mirror's create call
//! in the saved config. Replayed, that call found no such bdev, and the whole config failed to
//! load (spdk_tgt stopped at start-up). A create that may wait is kept here instead, listed as
//! configuring (as SPDK's raid lists a raid whose base bdevs are not all there), and runs once
//! the last of its legs is registered: from `examine_disk`, before any other module's examine
//! of that bdev can claim it.

use std::sync::Mutex;

use serde_json::{json, Value};

use spdk_sys as sys;

use super::ffi::noticelog;
use super::json;
use super::mirror;

/// What creates the mirror once its legs are all registered.
pub type Go = Box<dyn FnOnce() + Send>;

struct Deferred {
    name: String,
    /// The call's params, for `save_config` (they ask to wait) and the listing.
    params: Value,
    /// By slot; `None`: a missing leg (none awaited there).
    legs: Vec<Option<String>>,
    go: Go,
}

static DEFERRED: Mutex<Vec<Deferred>> = Mutex::new(Vec::new());

fn list() -> std::sync::MutexGuard<'static, Vec<Deferred>> {
    DEFERRED.lock().unwrap_or_else(|e| e.into_inner())
}

fn missing(legs: &[Option<String>]) -> Vec<String> {
    legs.iter()
        .flatten()
        .filter(|b| mirror::bdev_by_name(b).is_none())
        .cloned()
        .collect()
}

/// Whether some named leg in `legs` is not registered yet.
pub fn waits(legs: &[Option<String>]) -> bool {
    !missing(legs).is_empty()
}

/// Keeps mirror `name`'s create (`go`) until every bdev named in `legs` is registered.
pub fn defer(name: String, params: Value, legs: Vec<Option<String>>, go: Go) {
    noticelog!(
        "mirror {name}: waiting for {} to be registered before it is created (wait_for_legs)",
        missing(&legs).join(", ")
    );
    list().push(Deferred { name, params, legs, go });
}

/// Whether a create of a mirror called `name` waits for its legs.
pub fn named(name: &str) -> bool {
    list().iter().any(|d| d.name == name)
}

/// Drops the waiting create of `name` (`bdev_mirror_delete`); false if there is none.
pub fn withdraw(name: &str) -> bool {
    let mut l = list();
    let before = l.len();
    l.retain(|d| d.name != name);
    l.len() != before
}

/// A bdev was registered: runs every create whose legs are all there now (outside the lock:
/// a create registers a bdev, which comes back here).
pub fn bdev_registered() {
    let ready: Vec<Deferred> = {
        let mut l = list();
        let (ready, waiting) = std::mem::take(&mut *l).into_iter().partition(|d| !waits(&d.legs));
        *l = waiting;
        ready
    };
    for d in ready {
        noticelog!("mirror {}: its legs are registered; creating it", d.name);
        (d.go)()
    }
}

/// The waiting creates as calls for `save_config` (written with the module's options, before
/// any bdev: replayed, they wait for their legs again).
pub fn write_config(w: *mut sys::spdk_json_write_ctx) {
    for d in list().iter() {
        let call = json!({"method": "bdev_mirror_create", "params": d.params});
        // SAFETY: SPDK hands a live writer with an array open, expecting whole objects.
        unsafe { json::write_value(w, &call) };
    }
}

/// The waiting creates, as `bdev_mirror_get_bdevs` lists them (category `configuring`).
pub fn listing() -> Vec<Value> {
    list()
        .iter()
        .map(|d| {
            let legs: Vec<Value> = (0..d.legs.len())
                .map(|slot| {
                    let (bdev, state) = match &d.legs[slot] {
                        None => (Value::Null, "missing"),
                        Some(b) if mirror::bdev_by_name(b).is_some() => (json!(b), "found"),
                        Some(b) => (json!(b), "awaited"),
                    };
                    json!({"slot": slot, "bdev": bdev, "state": state})
                })
                .collect();
            json!({
                "name": d.name,
                "state": "configuring",
                "level": d.params["level"],
                "num_legs": d.legs.len(),
                "legs": legs,
                "waiting_for": missing(&d.legs),
            })
        })
        .collect()
}
