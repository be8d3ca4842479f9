//! Small FFI helpers: logging through SPDK's log, the panic guard for `extern "C"` entries (the
//! I/O path's entries rely on `Channel::run`'s instead: one `catch_unwind` per callback).

use std::ffi::{CStr, CString};

use spdk_sys as sys;

/// SPDK log levels (`enum spdk_log_level`).
#[derive(Clone, Copy)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Notice = 2,
}

pub fn log(level: Level, msg: &str) {
    let msg = CString::new(msg.replace('\0', " ")).expect("NULs replaced");
    // SAFETY: `msg` is a valid NUL-terminated string for the duration of the call; the shim
    // passes it to spdk_log as a "%s" argument.
    unsafe { sys::spdk_mirror_shim_log(level as i32, msg.as_ptr()) }
}

macro_rules! errlog {
    ($($arg:tt)*) => { $crate::spdk::ffi::log($crate::spdk::ffi::Level::Error, &format!($($arg)*)) };
}
macro_rules! warnlog {
    ($($arg:tt)*) => { $crate::spdk::ffi::log($crate::spdk::ffi::Level::Warn, &format!($($arg)*)) };
}
macro_rules! noticelog {
    ($($arg:tt)*) => { $crate::spdk::ffi::log($crate::spdk::ffi::Level::Notice, &format!($($arg)*)) };
}
pub(crate) use {errlog, noticelog, warnlog};

/// Runs `f`, and if it panics, logs it and returns `on_panic` instead: no panic crosses FFI.
pub fn guard<T>(what: &str, on_panic: T, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            let msg = e
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| e.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            log(Level::Error, &format!("BUG: panic in {what}: {msg}"));
            on_panic
        }
    }
}

/// A borrowed C string as `&str` (lossy).
///
/// # Safety
/// `p` must be NULL or a valid NUL-terminated string that outlives the returned value.
pub unsafe fn cstr<'a>(p: *const std::os::raw::c_char) -> std::borrow::Cow<'a, str> {
    if p.is_null() {
        return "".into();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(p) }.to_string_lossy()
}

/// Name of an SPDK bdev.
pub fn bdev_name(bdev: *mut sys::spdk_bdev) -> String {
    // SAFETY: callers pass a live bdev; its name lives as long as the bdev.
    unsafe { cstr(sys::spdk_bdev_get_name(bdev)) }.into_owned()
}

/// SPDK's `bdev_io_pool_size`: the pool every bdev's `spdk_bdev_io` comes from.
pub fn shared_io_pool() -> u32 {
    bdev_opts().bdev_io_pool_size
}

/// SPDK's `bdev_io_cache_size`: the `spdk_bdev_io`s each thread keeps for itself, a reserve
/// thread's whole reserve among them.
pub fn io_cache_per_thread() -> u32 {
    bdev_opts().bdev_io_cache_size
}

fn bdev_opts() -> sys::spdk_bdev_opts {
    // SAFETY: a plain C struct, for which all zeroes is a valid value.
    let mut o: sys::spdk_bdev_opts = unsafe { std::mem::zeroed() };
    // SAFETY: `o` is ours; SPDK fills it up to the size given, which is its own.
    unsafe { sys::spdk_bdev_get_opts(&mut o, std::mem::size_of::<sys::spdk_bdev_opts>()) };
    o
}
