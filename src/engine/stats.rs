//! Counters the engine keeps, for tests, the CLI and `bdev_mirror_get_bdevs`.

use serde::Serialize;

/// Engine-wide counters.
#[derive(Debug, Default, Clone, Serialize)]
pub struct EngineStats {
    pub parents_submitted: u64,
    pub parents_admitted: u64,
    pub parents_completed: u64,
    pub parents_failed: u64,
    /// Rejected at submit (out of range, too many segments).
    pub parents_rejected: u64,
    pub children_submitted: u64,
    pub children_completed: u64,
    /// Children that completed inside `Backend::submit`.
    pub inline_completions: u64,
    /// Times a parent parked on an empty leg pool.
    pub pool_waits: u64,
    /// Times a parent parked on shared I/O (SPDK's -ENOMEM).
    pub io_waits: u64,
    pub read_retries: u64,
    /// Copies rewritten after a read error.
    pub read_repairs: u64,
    pub legs_failed: u64,
    pub intent_starts: u64,
    pub intent_ends: u64,
    /// Writes taken direct (`Engine::try_direct_write`), and of those, handed over to a slot.
    pub direct_writes: u64,
    pub direct_handovers: u64,
}

/// Per-leg counters.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LegStats {
    pub reads: u64,
    pub writes: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    /// Blocks ranges rewritten after a read error (md's fix_read_error).
    pub read_repairs: u64,
    /// Allocations that found the leg's pool empty.
    pub pool_empty: u64,
    /// Submissions answered with "no memory".
    pub nomem: u64,
}
