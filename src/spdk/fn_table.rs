//! The `spdk_bdev_fn_table` of every mirror, and the io_device's channel constructors: what
//! SPDK calls on a registered mirror besides I/O (`submit`).

use std::os::raw::{c_int, c_void};
use std::ptr;

use serde_json::json;
use spdk_sys as sys;

use super::channel::Channel;
use super::ffi::{errlog, guard};
use super::json;
use super::mirror::Mirror;
use super::submit::submit_request;
use super::teardown::destruct;

pub static FN_TABLE: sys::spdk_bdev_fn_table = sys::spdk_bdev_fn_table {
    destruct: Some(destruct),
    submit_request: Some(submit_request),
    io_type_supported: Some(io_type_supported),
    get_io_channel: Some(get_io_channel),
    dump_info_json: Some(dump_info_json),
    write_config_json: Some(write_config_json),
    get_spin_time: None,
    get_module_ctx: None,
    get_memory_domains: None,
    get_memory_domain_types: None,
    reset_device_stat: None,
    dump_device_stat_json: None,
    accel_sequence_supported: None,
};

pub extern "C" fn channel_create(dev: *mut c_void, buf: *mut c_void) -> c_int {
    guard("mirror channel create", -libc::ENOMEM, || {
        // SAFETY: `dev` is a live mirror (the io_device).
        let m = unsafe { &*(dev as *const Mirror) };
        m.channel_opened();
        match Channel::new(m) {
            Ok(chan) => {
                // SAFETY: `buf` has room for one pointer (the context size we registered).
                unsafe { *(buf as *mut *mut Channel) = Box::into_raw(chan) };
                0
            }
            Err(e) => {
                m.channel_closed();
                errlog!("mirror {}: {e}", m.name());
                -libc::ENOMEM
            }
        }
    })
}

pub extern "C" fn channel_destroy(dev: *mut c_void, buf: *mut c_void) {
    guard("mirror channel destroy", (), || {
        // SAFETY: set in `channel_create`; destroyed once, on its thread.
        drop(unsafe { Box::from_raw(*(buf as *mut *mut Channel)) });
        // SAFETY: the io_device, live until its last channel is gone.
        unsafe { &*(dev as *const Mirror) }.channel_closed();
    })
}

extern "C" fn get_io_channel(ctx: *mut c_void) -> *mut sys::spdk_io_channel {
    // SAFETY: `ctx` is our registered io_device.
    guard("mirror get_io_channel", ptr::null_mut(), || unsafe {
        sys::spdk_get_io_channel(ctx)
    })
}

extern "C" fn io_type_supported(ctx: *mut c_void, io_type: sys::spdk_bdev_io_type) -> bool {
    guard("mirror io_type_supported", false, || {
        // SAFETY: `ctx` is a live mirror.
        unsafe { &*(ctx as *const Mirror) }.offers(io_type)
    })
}

extern "C" fn dump_info_json(ctx: *mut c_void, w: *mut sys::spdk_json_write_ctx) -> c_int {
    guard("mirror dump_info_json", 0, || {
        // SAFETY: `ctx` is a live mirror; `w` a live writer with an object open.
        unsafe { json::write_named(w, "mirror", &(*(ctx as *const Mirror)).info(None)) };
        0
    })
}

extern "C" fn write_config_json(bdev: *mut sys::spdk_bdev, w: *mut sys::spdk_json_write_ctx) {
    guard("mirror write_config_json", (), || {
        // SAFETY: our bdev's context is its mirror.
        let m = unsafe { &*((*bdev).ctxt as *const Mirror) };
        if m.persist.is_some() {
            // Its superblocks describe it: it assembles itself when its legs appear.
            return;
        }
        let Some(params) = m.create_params() else {
            errlog!(
                "mirror {}: not saved: it is offline (no leg in sync holds some blocks), and a \
                 bdev_mirror_create call would take its failed legs, older copies, as in sync",
                m.name()
            );
            return;
        };
        let call = json!({"method": "bdev_mirror_create", "params": params});
        // SAFETY: `w` is live and expects one value.
        unsafe { json::write_value(w, &call) };
    })
}
