//! Write-intent bitmap hooks, in md's order: start before the first child write, end after the
//! last child completion. The real bitmap implements this trait; `NoBitmap` does nothing.

use super::backend::ParentId;

/// Whether a write may go on to its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Ready,
    /// The intent is being made durable; the engine parks the parent until
    /// `Engine::write_intent_ready(parent)`.
    Pending,
}

pub trait WriteIntent {
    fn start_write(&mut self, parent: ParentId, lba: u64, blocks: u64) -> Gate;
    /// `all_copies` is false when some copy was not written (a leg failed or was missing), so
    /// the region must stay dirty (md's `bitmap_endwrite(..., success)`).
    fn end_write(&mut self, lba: u64, blocks: u64, all_copies: bool);
}

/// No bitmap: every write may go at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoBitmap;

impl WriteIntent for NoBitmap {
    fn start_write(&mut self, _: ParentId, _: u64, _: u64) -> Gate {
        Gate::Ready
    }
    fn end_write(&mut self, _: u64, _: u64, _: bool) {}
}
