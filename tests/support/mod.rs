//! Test support for driving real SPDK applications from integration tests.
//!
//! Use it from an integration test with `mod support;`. Everything here talks to SPDK's stock
//! applications (`spdk_tgt`, `bdevperf`, `spdk_dd`) as separate processes, optionally with the
//! mirror module injected through `LD_PRELOAD=<target>/<profile>/libspdk_mirror.so`.
//!
//! Ground rules this module keeps:
//!
//! * **Every wait is bounded.** Start-up, each RPC, each bdevperf/spdk_dd run and shutdown all
//!   have deadlines; a hung SPDK process is killed with SIGKILL and reported as an error, so no
//!   test can hang forever.
//! * **Every app runs without hugepages or PCI** (`--no-huge -s <MB> --no-pci`) with
//!   `--disable-cpumask-locks`, and every app gets its own RPC socket, so tests may run
//!   concurrently (cargo's default) without fighting over `/var/tmp/spdk.sock` or core locks.
//! * **Every app runs on leased CPUs** ([`cpu`]): one way to pick a core, the least used one.
//! * **Every process we start is reaped.** `Target`'s `Drop` sends SIGTERM, waits up to 10 s,
//!   then SIGKILLs and reaps.
//! * **Artifacts live in a per-run directory** under
//!   `std::env::temp_dir()/spdk-mirror-tests/<name>-<pid>-<counter>`. It is removed when the
//!   owner is dropped, except when the thread is panicking (a failed test) or when the
//!   environment variable `SPDK_MIRROR_KEEP_TMP` is set, so logs of failed runs survive.
//!
//! Environment variables understood here:
//!
//! * `SPDK_DIR` — a built SPDK source tree or an install prefix to take SPDK's apps from (read as
//!   the tests run; else the value cargo built them with). See [`SpdkRoots`] for the search order.
//! * `SPDK_MIRROR_LIB` — explicit path of the module library to preload (overrides the search).
//! * `CARGO_TARGET_DIR` — where to look for `release/` and `debug/libspdk_mirror.so`.
//! * `SPDK_MIRROR_KEEP_TMP` — keep per-run temp directories even after successful tests.
//!
//! The modules, by kind:
//!
//! * [`env`]: where SPDK's apps and the module library are ([`spdk_env`], [`require_spdk`]);
//! * [`dirs`]: per-run temp dirs ([`TestDir`]) and sparse files;
//! * [`rpc`]: the JSON-RPC client ([`rpc_call`], [`RpcError`]);
//! * [`process`]: spawning, logging, bounded waits and stopping of app processes;
//! * [`cpu`]: CPU leases ([`lease_core`]) and [`serial`];
//! * [`target`]: a running app with an RPC socket ([`Target`]) and [`rpc_ok`];
//! * [`bdevperf`]: bdevperf runs and servers; its output parser lives in `bdevperf/parse.rs`;
//! * [`spdk_dd`](mod@spdk_dd): one spdk_dd run;
//! * [`config`]: JSON config builders;
//! * [`mirror`]: shorthands for mirror tests (targets, legs, aio bdevs, configs, claims);
//! * [`placement`]: stamped test data checked block by block against the placement.
//!
//! Everything is re-exported here, so a test says `support::Target`, `support::lease_core`.
//! Each test binary compiles this module for itself and uses part of it, hence the `allow`s.

#![allow(dead_code, unused_imports)]

pub mod bdevperf;
pub mod config;
pub mod cpu;
pub mod dirs;
pub mod env;
pub mod mirror;
pub mod placement;
pub mod process;
pub mod rpc;
pub mod spdk_dd;
pub mod target;

pub use bdevperf::*;
pub use config::*;
pub use cpu::*;
pub use dirs::*;
pub use env::*;
pub use mirror::*;
pub use placement::*;
pub use process::{tail_lines, wait_until};
pub use rpc::*;
pub use spdk_dd::*;
pub use target::*;

/// Why an SPDK test is ignored in a build without SPDK. The `#[cfg_attr(not(spdk), ignore =
/// "...")]` on each SPDK test must spell it out (rustc takes only a literal there: a macro
/// compiles but the reason is lost); `find_spdk`'s `every_spdk_test_is_skipped_alike` checks
/// that they all say exactly this.
pub const SKIP_NO_SPDK: &str =
    "SPDK not installed (no SPDK_DIR, no pkg-config spdk_bdev): SPDK integration tests skipped";
