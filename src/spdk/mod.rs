//! The SPDK glue: everything `unsafe` and everything that talks to SPDK lives here.
//!
//! Built only with `cfg(spdk)` (an SPDK install was found at build time). Loaded into SPDK's
//! stock apps with `LD_PRELOAD=libspdk_mirror.so`, an ELF constructor registers the bdev module
//! `mirror` and its JSON-RPC methods, as SPDK's `SPDK_BDEV_MODULE_REGISTER` and
//! `SPDK_RPC_REGISTER` macros do.
//!
//! Layout, after SPDK's `module/bdev/raid` and openebs' spdk-rs:
//! - `module`: the `spdk_bdev_module` and its registration;
//! - `mirror`: one boxed `Mirror` per bdev (legs, claims, pools, the fn table);
//! - `channel`: the per-core channel that owns the engine, and its re-entrancy guard;
//! - `backend`: the engine's `Backend` over SPDK (mempool child contexts, `*_blocks_ext`,
//!   `spdk_bdev_queue_io_wait`);
//! - `rpc`: the `bdev_mirror_*` JSON-RPC methods; `json`: JSON between SPDK and serde;
//! - `options`: module-wide options (`bdev_mirror_set_module_options`);
//! - `ffi`: logging, panic guards and small helpers.

mod backend;
mod channel;
mod ctx_cache;
mod examine;
mod ffi;
mod host_io;
mod json;
mod mirror;
mod module;
mod num_legs;
mod options;
mod persist;
mod process;
mod replace;
mod rescue;
mod reset;
mod reshape;
mod resize;
mod rpc;
