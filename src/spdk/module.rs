//! The `spdk_bdev_module` named `mirror`, as everything below the top layer sees it: a pointer
//! to hand SPDK (claims, quiesce). It is described and registered by `register`.

use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use spdk_sys as sys;

static MODULE: AtomicPtr<sys::spdk_bdev_module> = AtomicPtr::new(ptr::null_mut());

/// Our module, as SPDK knows it.
pub fn module_ptr() -> *mut sys::spdk_bdev_module {
    MODULE.load(Ordering::Acquire)
}

/// Records the module once it is described (`register`).
pub fn set_module(m: *mut sys::spdk_bdev_module) {
    MODULE.store(m, Ordering::Release);
}
