//! Opening a base bdev as a leg: claimed for the module, its events (hot-remove, resize)
//! routed to the mirror.

use std::ffi::CString;
use std::os::raw::c_void;
use std::ptr;

use spdk_sys as sys;

use super::error::Fail;
use super::ffi::{bdev_name, guard, warnlog};
use super::leg::Leg;
use super::mirror::Mirror;
use super::module::module_ptr;
use super::removal::remove_leg;

/// Opens and claims `name` for `leg` (its hot-remove events go to that leg). Returns (bdev, desc).
pub fn open_leg(leg: *const Leg, name: &str) -> Result<(*mut sys::spdk_bdev, *mut sys::spdk_bdev_desc), Fail> {
    let cname = CString::new(name).map_err(|_| Fail::invalid("base_bdevs", "name has a NUL"))?;
    let mut desc = ptr::null_mut();
    // SAFETY: the event context is the leg, which lives as long as its mirror, which outlives
    // the descriptor (closed in `close_leg`).
    let rc = unsafe { sys::spdk_bdev_open_ext(cname.as_ptr(), true, Some(leg_event), leg as *mut c_void, &mut desc) };
    if rc != 0 {
        let (rc, msg) = match rc {
            rc if rc == -libc::ENODEV => (rc, format!("no bdev named '{name}'")),
            rc if rc == -libc::EPERM => (-libc::EBUSY, format!("'{name}' is already claimed by another module")),
            rc => (
                rc,
                format!("cannot open '{name}': {}", std::io::Error::from_raw_os_error(-rc)),
            ),
        };
        return Err(Fail::new(rc, "base_bdevs", msg));
    }
    // SAFETY: desc is open.
    let bdev = unsafe { sys::spdk_bdev_desc_get_bdev(desc) };
    // SAFETY: bdev, desc and our module are live.
    let rc = unsafe { sys::spdk_bdev_module_claim_bdev(bdev, desc, module_ptr()) };
    if rc != 0 {
        // SAFETY: opened above on this thread.
        unsafe { sys::spdk_bdev_close(desc) };
        return Err(Fail::new(
            -libc::EBUSY,
            "base_bdevs",
            format!("'{name}' is already claimed by another module"),
        ));
    }
    Ok((bdev, desc))
}

/// A base bdev event: removal makes the leg go away (the mirror degrades); a resize may let
/// the mirror grow (`resize`).
extern "C" fn leg_event(ty: sys::spdk_bdev_event_type, bdev: *mut sys::spdk_bdev, ctx: *mut c_void) {
    guard("mirror leg event", (), || {
        // SAFETY: the event context is a slot of a live mirror (slots never move).
        let m = unsafe { Mirror::of_leg(&*(ctx as *const Leg)) };
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
