//! What the engine needs from the world below it: leg pools, child submission, completion.
//!
//! Two implementations exist: the deterministic simulator (`crate::sim`) and the SPDK glue
//! (`crate::spdk`, built only when SPDK is installed). The engine itself never touches data
//! buffers or memory: a `Host` handle is the parent I/O (an `spdk_bdev_io *` in SPDK) and a
//! `Child` is a context taken from a leg's bounded pool (an `spdk_mempool` element in SPDK).

/// Kind of a host I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum IoOp {
    Read,
    Write,
    /// Sent to every working leg.
    Flush,
    Unmap,
    WriteZeroes,
}

impl IoOp {
    /// Whether the op changes data, so goes to every copy and passes the write-intent bitmap.
    pub fn is_write(self) -> bool {
        matches!(self, IoOp::Write | IoOp::Unmap | IoOp::WriteZeroes)
    }
}

/// A host I/O on the mirror, in mirror blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoRequest {
    pub op: IoOp,
    pub lba: u64,
    pub blocks: u64,
}

/// How a child I/O ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStatus {
    Success,
    Error,
}

/// How a host I/O ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostStatus {
    Success,
    /// Some block reached no copy (write), or no copy could be read (read).
    Failed,
}

/// Engine slot of a parent I/O (the admission bound is the number of slots).
pub type ParentId = u32;

/// The `parent` of a direct read's child (`Engine::try_direct_read`): it has no slot.
pub const DIRECT: ParentId = ParentId::MAX;

/// The `parent` of a direct write's child (`Engine::try_direct_write`): its state is the
/// caller's `WriteState`.
pub const DIRECT_WRITE: ParentId = ParentId::MAX - 1;

/// Everything the engine needs to know about a child when it comes back. The backend keeps it
/// in the child context and hands it back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildInfo {
    pub parent: ParentId,
    pub op: IoOp,
    pub leg: u32,
    /// Where on the leg.
    pub leg_lba: u64,
    pub blocks: u64,
    /// Offset of this child's data within the parent's buffer, in blocks.
    pub buf_offset: u64,
    /// Which segment of the parent (a chunk-bounded piece) this child serves.
    pub segment: u32,
}

impl ChildInfo {
    /// The write of a one-segment parent's whole buffer to one copy (`leg`, at `leg_lba`).
    #[inline(always)]
    pub fn whole_write(parent: ParentId, leg: u32, leg_lba: u64, blocks: u64) -> ChildInfo {
        ChildInfo {
            parent,
            op: IoOp::Write,
            leg,
            leg_lba,
            blocks,
            buf_offset: 0,
            segment: 0,
        }
    }
}

/// What `Backend::submit` did with a child.
pub enum Submitted<C> {
    /// On its way; `Engine::child_done` will be called later.
    InFlight,
    /// Completed synchronously inside submit (the engine handles it right away).
    Completed(C, ChildInfo, ChildStatus),
    /// No shared I/O could be had (SPDK's -ENOMEM). The child is handed back unsubmitted; the
    /// engine parks its parent at exactly this child and calls `Backend::wait_for_io`.
    NoMem(C, ChildInfo),
}

/// The world below the engine.
pub trait Backend {
    /// A parent (host) I/O handle.
    type Host;
    /// A child context from a leg's bounded pool.
    type Child;

    /// Takes a child context from `leg`'s pool; `None` when the pool is empty.
    fn alloc_child(&mut self, leg: u32) -> Option<Self::Child>;
    /// Returns a child context to `leg`'s pool.
    fn free_child(&mut self, leg: u32, child: Self::Child);
    /// Submits a child. It must not call back into the engine (a synchronous completion is
    /// reported through the return value instead).
    fn submit(&mut self, host: &Self::Host, child: Self::Child, info: ChildInfo) -> Submitted<Self::Child>;
    /// Arranges for `Engine::io_available` to be called once shared I/O may be had again
    /// (SPDK: `spdk_bdev_queue_io_wait`). Calling it again before that is harmless.
    /// `leg` is the leg whose submit said no memory (`None`: the parent's own admission).
    fn wait_for_io(&mut self, leg: Option<u32>);
    /// Completes a host I/O. Called exactly once per host I/O.
    fn complete(&mut self, host: Self::Host, status: HostStatus);

    /// A parent takes the shared I/O it needs for itself when admitted. SPDK's bdev layer has
    /// done this before the module ever sees the parent, so the default takes nothing. `false`:
    /// none available now (the parent waits for `Engine::io_available`).
    fn admit_parent(&mut self, _host: &Self::Host) -> bool {
        true
    }
    /// Releases what `admit_parent` took, after the parent has completed.
    fn release_parent(&mut self) {}
    /// Takes the shared I/O for a child ahead of submission. Only the `batch` strategy (md's
    /// pre-fix behaviour, kept as a demonstration) uses it.
    fn reserve_io(&mut self, _child: &mut Self::Child) -> bool {
        true
    }
    /// A leg was failed by the engine (after a write error).
    fn leg_failed(&mut self, _leg: u32) {}
    /// Whether reads of these mirror blocks must all go to one copy, the first readable in
    /// placement order: after a crash the copies may differ until resync reaches them, and the
    /// resync copies from that same copy, so every read returns what resync will keep.
    fn read_pinned(&self, _lba: u64, _blocks: u64) -> bool {
        false
    }
}
