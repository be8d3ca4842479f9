//! UUIDs as SPDK and the superblocks hold them.

use spdk_sys as sys;

/// A random 16-byte id.
pub fn random_uuid() -> [u8; 16] {
    let mut u = sys::spdk_uuid::default();
    // SAFETY: writes a fresh uuid into `u`.
    unsafe { sys::spdk_uuid_generate(&mut u) };
    uuid_bytes(&u)
}

/// A uuid in SPDK's lower-case text form.
pub fn uuid_text(u: &sys::spdk_uuid) -> String {
    let mut buf = [0 as std::os::raw::c_char; sys::SPDK_UUID_STRING_LEN as usize];
    // SAFETY: buffer of the documented size.
    unsafe { sys::spdk_uuid_fmt_lower(buf.as_mut_ptr(), buf.len(), u) };
    // SAFETY: NUL-terminated by spdk_uuid_fmt_lower.
    unsafe { super::ffi::cstr(buf.as_ptr()) }.into_owned()
}

/// The `spdk_uuid` of 16 bytes (as superblocks store it).
pub fn uuid_of(bytes: &[u8; 16]) -> sys::spdk_uuid {
    // SAFETY: `spdk_uuid` is 16 plain bytes.
    unsafe { std::mem::transmute_copy(bytes) }
}

pub fn uuid_bytes(u: &sys::spdk_uuid) -> [u8; 16] {
    // SAFETY: `spdk_uuid` is 16 plain bytes.
    unsafe { std::mem::transmute_copy(u) }
}
