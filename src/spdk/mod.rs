//! The SPDK glue: everything `unsafe` and everything that talks to SPDK lives here.
//!
//! Built only with `cfg(spdk)` (an SPDK install was found at build time). Loaded into SPDK's
//! stock apps with `LD_PRELOAD=libspdk_mirror.so`, an ELF constructor registers the bdev module
//! `mirror` and its JSON-RPC methods, as SPDK's `SPDK_BDEV_MODULE_REGISTER` and
//! `SPDK_RPC_REGISTER` macros do.
//!
//! The files stand in layers, after SPDK's `module/bdev/raid` and openebs' spdk-rs. A file uses
//! only files of its own layer or the layers before it, and no two files use each other
//! (`tests/layers.rs` checks both from the `layer` lines below). What runs above reaches what
//! runs below through calls it hands down: a mirror's `Hooks`, a channel's `ChannelCalls`.

// layer 0, leaves: logging and panic guards, typed callback contexts, JSON, the error type,
// the module pointer, UUIDs, a host I/O's fields, a bdev opened for a one-off read or write.
mod callback;
mod error;
mod ffi;
mod host_io;
mod json;
mod module;
mod scratch;
mod uuid;

// layer 1, state: a mirror, its legs, its metadata in memory, a process's status, the module
// options, the reserve thread. Data and accessors.
mod leg;
mod metadata;
mod mirror;
mod options;
mod process_status;
mod reserve;

// layer 2, I/O: child contexts and their per-core caches, the reserve, the engine's backend
// and write intent, the per-core channel, host I/O submission, resets.
mod backend;
mod channel;
mod child_ctx;
mod ctx_cache;
mod intent;
mod rescue;
mod reset;
mod submit;

// layer 3, metadata and background work: the metadata writer, rebuild/recovery/resync/check.
mod meta_io;
mod persist;
mod process;

// layer 4, lifecycle: create, delete, legs (open, remove, attach, join), the bdev function
// table, reshapes (resize, replace, leg count), counters.
mod create;
mod farewell;
mod fn_table;
mod join;
mod leg_events;
mod legs;
mod num_legs;
mod removal;
mod replace;
mod reshape;
mod resize;
mod stats;
mod teardown;

// layer 5, top: JSON-RPC (the plumbing, then the methods), examine (assembly from
// superblocks), module registration.
mod deferred;
mod examine;
mod register;
mod rpc;
mod rpc_legs;
mod rpc_mirror;
mod rpc_module;
mod rpc_wipe;
