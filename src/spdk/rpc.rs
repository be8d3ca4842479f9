//! JSON-RPC plumbing for the `bdev_mirror_*` methods, in SPDK's conventions: snake_case params,
//! errors with a negative errno and a message naming the field, nothing changed when a call
//! fails. The methods are in `rpc_mirror`, `rpc_legs`, `rpc_wipe` and `rpc_module`; `register`
//! lists them.

use std::ffi::CString;
use std::os::raw::c_char;

use serde_json::{Map, Value};
use spdk_sys as sys;

use super::error::Fail;
use super::ffi::guard;
use super::json;
use super::mirror::{self};
use super::{deferred, examine};

pub type Handler = extern "C" fn(*mut sys::spdk_jsonrpc_request, *const sys::spdk_json_val);

/// Methods that work once the bdev layer is up.
pub const RUNTIME: u32 = sys::SPDK_RPC_RUNTIME;

/// Also before `framework_start_init` (`--wait-for-rpc`), as SPDK's own `*_set_options`: the
/// module options must be in force when the startup config's bdevs appear and are examined.
pub const STARTUP_TOO: u32 = sys::SPDK_RPC_STARTUP | sys::SPDK_RPC_RUNTIME;

/// A pending JSON-RPC request (answered exactly once).
#[derive(Clone, Copy)]
pub struct Request(*mut sys::spdk_jsonrpc_request);

impl Request {
    /// The answer of a method whose work answers `true` once it is done.
    pub fn answer_true(self) -> Box<dyn FnOnce(Result<(), Fail>)> {
        Box::new(move |r| self.reply(r.map(|_| serde_json::json!(true))))
    }

    /// The answer of a tunable's change, which is in effect at once but answered only once the
    /// superblocks hold it, so that it survives a crash.
    pub fn answer_recorded(self, field: &'static str) -> Box<dyn FnOnce(Result<(), Fail>)> {
        Box::new(move |r| {
            self.reply(r.map(|_| serde_json::json!(true)).map_err(|e| {
                Fail::new(
                    -libc::EIO,
                    field,
                    format!("in effect, but not recorded on the legs: {e}"),
                )
            }))
        })
    }
    pub fn reply(self, result: Result<Value, Fail>) {
        match result {
            Ok(v) => {
                // SAFETY: the request is live until answered, and this answers it.
                unsafe {
                    let w = sys::spdk_jsonrpc_begin_result(self.0);
                    if !w.is_null() {
                        json::write_value(w, &v);
                        sys::spdk_jsonrpc_end_result(self.0, w);
                    }
                }
            }
            Err(e) => {
                let msg = CString::new(e.to_string().replace('\0', " ")).expect("NULs replaced");
                // SAFETY: as above; the message is NUL-terminated.
                unsafe { sys::spdk_jsonrpc_send_error_response(self.0, e.errno, msg.as_ptr() as *const c_char) };
            }
        }
    }
}

/// A method in SPDK's two steps: `check` looks at every param (and whatever else it needs)
/// and changes nothing, and a refusal is answered at once; only then does `start` act on what
/// was checked, answering now or once its asynchronous work is over.
pub fn handle_checked<T>(
    request: *mut sys::spdk_jsonrpc_request,
    params: *const sys::spdk_json_val,
    check: fn(&Params) -> Result<T, Fail>,
    start: fn(Request, T),
) {
    handle(request, params, move |req, p| match check(&p) {
        Ok(checked) => start(req, checked),
        Err(e) => req.reply(Err(e)),
    })
}

/// Runs a handler body with params decoded, answering with an internal error if it panics.
pub fn handle(
    request: *mut sys::spdk_jsonrpc_request,
    params: *const sys::spdk_json_val,
    f: impl FnOnce(Request, Params),
) {
    let req = Request(request);
    let ok = guard("mirror RPC", false, || {
        // SAFETY: SPDK hands us the request's parsed params (or NULL).
        match unsafe { json::to_value(params) } {
            Ok(Value::Object(map)) => f(req, Params(map)),
            Ok(Value::Null) => f(req, Params(Map::new())),
            Ok(_) => req.reply(Err(Fail::invalid("params", "expected an object"))),
            Err(e) => req.reply(Err(e.in_field("params"))),
        }
        true
    });
    if !ok {
        req.reply(Err(Fail::plain(
            sys::SPDK_JSONRPC_ERROR_INTERNAL_ERROR,
            "internal error",
        )));
    }
}

/// Params of one call; every accessor names the field in its error.
pub struct Params(Map<String, Value>);

impl Params {
    /// The params as they were given.
    pub fn to_value(&self) -> Value {
        Value::Object(self.0.clone())
    }
}

pub fn bad(field: &str, what: &str) -> Fail {
    Fail::invalid(field.to_string(), what)
}

impl Params {
    /// Whether the call gave `field` at all.
    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    pub fn only(&self, allowed: &[&str]) -> Result<(), Fail> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(bad(k, "unknown parameter")),
            None => Ok(()),
        }
    }

    pub fn string(&self, field: &str) -> Result<Option<String>, Fail> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Err(bad(field, "must not be empty")),
            Some(Value::String(s)) if s.contains('\0') => Err(bad(field, "must not contain NUL")),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad(field, "must be a string")),
        }
    }

    pub fn required_string(&self, field: &str) -> Result<String, Fail> {
        self.string(field)?.ok_or_else(|| bad(field, "required"))
    }

    pub fn uint(&self, field: &str, min: u64, max: u64) -> Result<Option<u64>, Fail> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
                _ => Err(bad(field, &format!("must be an integer from {min} to {max}"))),
            },
            Some(_) => Err(bad(field, "must be an integer")),
        }
    }

    pub fn boolean(&self, field: &str) -> Result<Option<bool>, Fail> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(bad(field, "must be true or false")),
        }
    }

    pub fn strings(&self, field: &str) -> Result<Vec<String>, Fail> {
        self.names_or_missing(field)?
            .into_iter()
            .map(|n| n.ok_or_else(|| bad(field, "must be an array of non-empty bdev names")))
            .collect()
    }

    /// A list of bdev names in which `null` stands for a missing member (mdadm's `missing`).
    pub fn names_or_missing(&self, field: &str) -> Result<Vec<Option<String>>, Fail> {
        let Some(v) = self.0.get(field) else {
            return Err(bad(field, "required"));
        };
        let Value::Array(items) = v else {
            return Err(bad(field, "must be an array of bdev names"));
        };
        let mut out: Vec<Option<String>> = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Value::Null => out.push(None),
                Value::String(s) if !s.is_empty() && !s.contains('\0') => {
                    if out.iter().flatten().any(|o| o == s) {
                        return Err(bad(field, &format!("'{s}' is listed twice")));
                    }
                    out.push(Some(s.clone()));
                }
                _ => return Err(bad(field, "must be an array of non-empty bdev names")),
            }
        }
        Ok(out)
    }
}

/// The mirror called `name`, or an error naming the field.
pub fn mirror_named(name: &str) -> Result<&'static mirror::Mirror, Fail> {
    mirror::find(name).ok_or_else(|| no_mirror(name))
}

pub fn no_mirror(name: &str) -> Fail {
    if examine::waiting_named(name) || deferred::named(name) {
        return Fail::new(
            -libc::EBUSY,
            "name",
            format!(
                "mirror '{name}' is still waiting for its legs (configuring): only bdev_mirror_delete applies to it"
            ),
        );
    }
    Fail::new(-libc::ENODEV, "name", format!("no mirror named '{name}'"))
}

/// Refuses bdev `name` as a new leg when a mirror waiting for its legs found it as one of
/// its own (`examine::waiting_for_leg`), naming `field`.
pub fn not_a_waiting_leg(name: &str, field: &str) -> Result<(), Fail> {
    match examine::waiting_for_leg(name) {
        None => Ok(()),
        Some(m) => Err(Fail::new(
            -libc::EBUSY,
            field.to_string(),
            format!("'{name}' is a leg of mirror '{m}', which waits for its other legs: bdev_mirror_delete '{m}' (or bdev_mirror_wipe_superblock '{name}') first"),
        )),
    }
}

pub fn bdev_exists(name: &str) -> bool {
    mirror::bdev_by_name(name).is_some()
}
