//! spdk-mirror: a mirror (RAID1 with N legs, RAID10 with Linux md's near/far/offset layouts)
//! bdev module for SPDK that never deadlocks when memory pools run dry.
//!
//! - [`placement`]: where every block lives (md-identical RAID10 math). Pure.
//! - [`engine`]: the I/O state machine (submit-at-once children, biased `remaining`, park and
//!   resume at the exact child). Pure, generic over a [`engine::Backend`].
//! - [`sim`]: a deterministic discrete-event backend to test the engine without SPDK.
//! - [`bdevperf`]: SPDK bdevperf's output, parsed (for the tests and the benchmark).
//! - `spdk` (only when SPDK was found at build time): the FFI glue that makes it a bdev module.

pub mod bdevperf;
pub mod bitmap;
pub mod engine;
pub mod placement;
pub mod sim;
#[cfg(spdk)]
mod spdk;
pub mod superblock;
