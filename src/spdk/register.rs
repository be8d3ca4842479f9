//! Registers the `spdk_bdev_module` named `mirror` and its JSON-RPC methods from an ELF
//! constructor when the library is loaded (as `SPDK_BDEV_MODULE_REGISTER` and
//! `SPDK_RPC_REGISTER` do in C).

use std::os::raw::c_int;

use spdk_sys as sys;

use super::ffi::guard;
use super::module::set_module;
use super::rpc::{Handler, RUNTIME, STARTUP_TOO};
use super::{rpc_legs, rpc_mirror, rpc_module, rpc_wipe};

/// Runs when the shared library is loaded (LD_PRELOAD into spdk_tgt, bdevperf, nvmf_tgt…),
/// before the app initialises its subsystems.
#[used]
#[link_section = ".init_array"]
static REGISTER: extern "C" fn() = register;

extern "C" fn register() {
    guard("mirror module registration", (), || {
        // The module struct must live forever: SPDK keeps it on its module list.
        let m = Box::leak(Box::new(sys::spdk_bdev_module::default()));
        m.name = c"mirror".as_ptr();
        m.module_init = Some(module_init);
        m.module_fini = Some(module_fini);
        m.get_ctx_size = Some(ctx_size);
        m.examine_disk = Some(super::examine::examine_disk);
        m.fini_start = Some(super::teardown::fini_start);
        // save_config replays the module options, and creates still waiting for their legs,
        // before the bdevs.
        m.config_json = Some(config_json);
        m.async_fini_start = true;
        set_module(m);
        // SAFETY: `m` is a complete module description with a 'static lifetime.
        unsafe { sys::spdk_bdev_module_list_add(m) };
        register_rpcs();
    })
}

extern "C" fn config_json(w: *mut sys::spdk_json_write_ctx) -> c_int {
    let rc = super::options::config_json(w);
    guard("mirror config_json", (), || super::deferred::write_config(w));
    rc
}

extern "C" fn module_init() -> c_int {
    0
}

extern "C" fn module_fini() {
    guard("mirror module fini", (), super::reserve::stop)
}

/// Per host I/O context SPDK reserves for us: a direct write's state, or a reset's (never
/// both: they are different I/O types).
extern "C" fn ctx_size() -> c_int {
    let write = std::mem::size_of::<crate::engine::WriteState>();
    write.max(std::mem::size_of::<super::reset::HostCtx>()) as c_int
}

/// The `bdev_mirror_*` JSON-RPC methods.
fn register_rpcs() {
    let methods: [(&std::ffi::CStr, Handler, u32); 13] = [
        (c"bdev_mirror_set_options", rpc_mirror::rpc_set_options, RUNTIME),
        (c"bdev_mirror_check", rpc_mirror::rpc_check, RUNTIME),
        (c"bdev_mirror_set_read_policy", rpc_mirror::rpc_set_read_policy, RUNTIME),
        (c"bdev_mirror_create", rpc_mirror::rpc_create, RUNTIME),
        (c"bdev_mirror_delete", rpc_mirror::rpc_delete, RUNTIME),
        (c"bdev_mirror_get_bdevs", rpc_mirror::rpc_get_bdevs, RUNTIME),
        (c"bdev_mirror_add_base_bdev", rpc_legs::rpc_add_base_bdev, RUNTIME),
        (c"bdev_mirror_remove_base_bdev", rpc_legs::rpc_remove_base_bdev, RUNTIME),
        (c"bdev_mirror_wipe_superblock", rpc_wipe::rpc_wipe_superblock, RUNTIME),
        (
            c"bdev_mirror_replace_base_bdev",
            rpc_legs::rpc_replace_base_bdev,
            RUNTIME,
        ),
        (c"bdev_mirror_set_num_legs", rpc_legs::rpc_set_num_legs, RUNTIME),
        (
            c"bdev_mirror_set_module_options",
            rpc_module::rpc_set_module_options,
            STARTUP_TOO,
        ),
        (
            c"bdev_mirror_get_module_options",
            rpc_module::rpc_get_module_options,
            STARTUP_TOO,
        ),
    ];
    for (name, f, states) in methods {
        // SAFETY: static name; the handler is a valid extern "C" function for the life of
        // the process.
        unsafe { sys::spdk_rpc_register_method(name.as_ptr(), Some(f), states) };
    }
}
