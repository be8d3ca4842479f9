//! Registers the `spdk_bdev_module` named `mirror` and its JSON-RPC methods from an ELF
//! constructor when the library is loaded (as `SPDK_BDEV_MODULE_REGISTER` and
//! `SPDK_RPC_REGISTER` do in C).

use std::os::raw::c_int;

use spdk_sys as sys;

use super::ffi::guard;
use super::module::set_module;

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
        // save_config replays the module options before the bdevs.
        m.config_json = Some(super::options::config_json);
        m.async_fini_start = true;
        set_module(m);
        // SAFETY: `m` is a complete module description with a 'static lifetime.
        unsafe { sys::spdk_bdev_module_list_add(m) };
        super::rpc::register();
    })
}

extern "C" fn module_init() -> c_int {
    0
}

extern "C" fn module_fini() {}

/// Per host I/O context SPDK reserves for us (used by resets).
extern "C" fn ctx_size() -> c_int {
    std::mem::size_of::<super::reset::HostCtx>() as c_int
}
