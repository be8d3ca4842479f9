//! JSON between SPDK and serde: RPC params in, results and config out.

use std::os::raw::{c_int, c_void};

use serde_json::{Map, Number, Value};
use spdk_sys as sys;

use super::error::Fail;
use super::ffi::guard;

/// Converts SPDK's parsed JSON (a flat array of values) into a `serde_json::Value`.
///
/// # Safety
/// `vals` must point at a valid, complete `spdk_json_val` sequence as handed to an RPC handler.
pub unsafe fn to_value(vals: *const sys::spdk_json_val) -> Result<Value, Fail> {
    if vals.is_null() {
        return Ok(Value::Null);
    }
    let mut i = 0usize;
    // SAFETY: forwarded from the caller.
    unsafe { parse(vals, &mut i) }
}

/// # Safety
/// As `to_value`; `*i` indexes a value inside the sequence.
unsafe fn parse(vals: *const sys::spdk_json_val, i: &mut usize) -> Result<Value, Fail> {
    // SAFETY: the sequence is complete, so every index reached by walking it is in bounds.
    let v = unsafe { &*vals.add(*i) };
    *i += 1;
    // SAFETY: strings, names and numbers point at `len` bytes of the request buffer.
    let text = || unsafe { std::slice::from_raw_parts(v.start as *const u8, v.len as usize) };
    Ok(match v.type_ {
        sys::SPDK_JSON_VAL_NULL => Value::Null,
        sys::SPDK_JSON_VAL_TRUE => Value::Bool(true),
        sys::SPDK_JSON_VAL_FALSE => Value::Bool(false),
        sys::SPDK_JSON_VAL_STRING => Value::String(String::from_utf8_lossy(text()).into_owned()),
        sys::SPDK_JSON_VAL_NUMBER => {
            let s = std::str::from_utf8(text()).map_err(|_| Fail::invalid("params", "bad number"))?;
            match serde_json::from_str::<Number>(s) {
                Ok(n) => Value::Number(n),
                // Valid JSON serde cannot hold (1e400): kept as a value no field accepts, so
                // the error names the field it was given for.
                Err(_) => serde_json::json!({ "unrepresentable_number": s }),
            }
        }
        sys::SPDK_JSON_VAL_ARRAY_BEGIN => {
            let mut out = Vec::new();
            loop {
                // SAFETY: in bounds: the array's END value terminates the loop.
                let next = unsafe { &*vals.add(*i) };
                if next.type_ == sys::SPDK_JSON_VAL_ARRAY_END {
                    *i += 1;
                    break;
                }
                // SAFETY: as above.
                out.push(unsafe { parse(vals, i) }?);
            }
            Value::Array(out)
        }
        sys::SPDK_JSON_VAL_OBJECT_BEGIN => {
            let mut out = Map::new();
            loop {
                // SAFETY: in bounds: the object's END value terminates the loop.
                let name = unsafe { &*vals.add(*i) };
                if name.type_ == sys::SPDK_JSON_VAL_OBJECT_END {
                    *i += 1;
                    break;
                }
                if name.type_ != sys::SPDK_JSON_VAL_NAME {
                    return Err(Fail::plain(-libc::EINVAL, "malformed object"));
                }
                // SAFETY: a name points at `len` bytes of the request buffer.
                let key = unsafe { std::slice::from_raw_parts(name.start as *const u8, name.len as usize) };
                let key = String::from_utf8_lossy(key).into_owned();
                *i += 1;
                // SAFETY: a name is always followed by its value.
                let value = unsafe { parse(vals, i) }?;
                out.insert(key, value);
            }
            Value::Object(out)
        }
        other => return Err(Fail::invalid("params", format!("unexpected JSON token {other}"))),
    })
}

/// Writes `value` as the next value of `w`.
///
/// # Safety
/// `w` must be a live SPDK JSON write context.
pub unsafe fn write_value(w: *mut sys::spdk_json_write_ctx, value: &Value) {
    let text = value.to_string();
    // SAFETY: `text` is valid JSON of `len` bytes; the context copies it out.
    unsafe { sys::spdk_json_write_val_raw(w, text.as_ptr() as *const _, text.len()) };
}

/// Writes `"name": value` into the object being written to `w`.
///
/// # Safety
/// As `write_value`, and an object must be open in `w`.
pub unsafe fn write_named(w: *mut sys::spdk_json_write_ctx, name: &str, value: &Value) {
    let name = std::ffi::CString::new(name).expect("names have no NUL");
    // SAFETY: `name` is NUL-terminated; `w` is live (caller).
    unsafe {
        sys::spdk_json_write_name(w, name.as_ptr());
        write_value(w, value);
    }
}

/// What bdev `bdev`'s module says of it (`spdk_bdev_dump_info_json`: `bdev_get_bdevs`'s
/// `driver_specific`), as one JSON object; `None` if that is not valid JSON.
///
/// # Safety
/// `bdev` must be a live bdev, and this runs on the app thread (as `bdev_get_bdevs` does).
pub unsafe fn bdev_info(bdev: *mut sys::spdk_bdev) -> Option<Value> {
    unsafe extern "C" fn collect(ctx: *mut c_void, data: *const c_void, size: usize) -> c_int {
        guard("mirror bdev info", -1, || {
            // SAFETY: `ctx` is the buffer below, alive while the writer is; `data` holds `size`
            // bytes for the length of this call.
            unsafe { (*(ctx as *mut Vec<u8>)).extend_from_slice(std::slice::from_raw_parts(data as *const u8, size)) };
            0
        })
    }
    let mut out: Vec<u8> = Vec::new();
    // SAFETY: the callback and its buffer outlive the writer, which ends below.
    let w = unsafe { sys::spdk_json_write_begin(Some(collect), &mut out as *mut Vec<u8> as *mut c_void, 0) };
    if w.is_null() {
        return None;
    }
    // SAFETY: `w` is live until `spdk_json_write_end`; the module writes named members, so
    // they go inside an object of ours.
    unsafe {
        sys::spdk_json_write_object_begin(w);
        sys::spdk_bdev_dump_info_json(bdev, w);
        sys::spdk_json_write_object_end(w);
        sys::spdk_json_write_end(w);
    }
    serde_json::from_slice(&out).ok()
}
