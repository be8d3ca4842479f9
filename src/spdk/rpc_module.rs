//! The module-wide RPC methods: `bdev_mirror_set_module_options` and `_get_module_options`.

use serde_json::json;
use spdk_sys as sys;

use super::options;
use super::rpc::handle;

pub extern "C" fn rpc_set_module_options(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        let result = (|| {
            p.only(&["degraded_grace_ms", "degraded_assembly"])?;
            // Every field is checked before any is stored: a refused call changes nothing.
            let mut o = options::get();
            if let Some(ms) = p.uint("degraded_grace_ms", 0, options::MAX_DEGRADED_GRACE_MS)? {
                o.degraded_grace_ms = ms;
            }
            if let Some(on) = p.boolean("degraded_assembly")? {
                o.degraded_assembly = on;
            }
            options::set(o);
            Ok(json!(true))
        })();
        if result.is_ok() {
            // Mirrors already waiting for legs decide again under the new options.
            super::examine::options_changed();
        }
        req.reply(result);
    })
}

pub extern "C" fn rpc_get_module_options(request: *mut sys::spdk_jsonrpc_request, params: *const sys::spdk_json_val) {
    handle(request, params, |req, p| {
        req.reply(p.only(&[]).map(|_| options::get().to_json()));
    })
}
