//! The engine's `Backend` over SPDK: child contexts from one `spdk_mempool` per leg, each child
//! submitted with `spdk_bdev_{readv,writev}_blocks_ext` (or unmap / write_zeroes / flush) the
//! moment it is allocated, `-ENOMEM` handed back to the engine, and `spdk_bdev_queue_io_wait`
//! (with `dep_unblock`, so our children go ahead of new parents) to hear when I/O frees up.

use std::cell::Cell;
use std::os::raw::c_void;
use std::ptr::{self, NonNull};

use spdk_sys as sys;

use super::child_ctx::{slice_parent_iovs, ChannelCalls, ChildCtx, MAX_CHILD_IOVS};
use super::ctx_cache::CtxCache;
use super::ffi::errlog;
use super::host_io;
use crate::engine::{Backend, ChildInfo, ChildStatus, HostStatus, IoOp, Submitted};

/// A leg's wait for shared `spdk_bdev_io`s; boxed so SPDK can hold its address.
#[repr(C)]
pub struct IoWait {
    pub entry: sys::spdk_bdev_io_wait_entry,
    /// The channel waiting (opaque here; see `ChannelCalls`).
    pub channel: *const c_void,
    pub queued: Cell<bool>,
}

/// A leg as one channel sees it.
pub struct LegIo {
    pub bdev: *mut sys::spdk_bdev,
    pub desc: *mut sys::spdk_bdev_desc,
    /// Null when the leg is absent from this channel (removed, or never opened).
    pub ch: *mut sys::spdk_io_channel,
    /// The leg's child contexts, through this channel's own cache.
    pub ctxs: CtxCache,
    pub wait: Box<IoWait>,
    /// Children of this channel in flight on this leg (to know when its channel may be put).
    pub inflight: u32,
}

pub struct SpdkBackend {
    pub legs: Vec<LegIo>,
    /// Host I/Os the engine completed, completed to SPDK outside the engine.
    pub completions: std::collections::VecDeque<(NonNull<sys::spdk_bdev_io>, HostStatus)>,
    pub block_size: u64,
    /// Legs the engine failed that the mirror must hear of.
    pub failed_legs: u32,
    /// The channel owning this backend (set once it is boxed), recorded in each child.
    pub channel: *const c_void,
    /// The channel's callbacks.
    pub calls: &'static ChannelCalls,
    /// Blocks reserved before the data on every leg (superblock and bitmap).
    pub data_offset: u64,
    /// The mirror's metadata, if it keeps any (for reads pinned during a resync).
    pub persist: *const super::metadata::Persist,
    /// A child of this channel is on its way through the mirror thread's reserve.
    pub rescue_busy: bool,
    /// Children are out but none comes back (the channel's stall watch): children go
    /// through the reserve as if none were out, and no wait is queued at the head of SPDK's
    /// line (see `channel::stall`).
    pub stalled: bool,
    /// Children that came back through the reserve (the stall watch counts the rest).
    pub rescued: u64,
}

impl Backend for SpdkBackend {
    type Host = NonNull<sys::spdk_bdev_io>;
    type Child = NonNull<ChildCtx>;

    #[inline(always)]
    fn alloc_child(&mut self, leg: u32) -> Option<NonNull<ChildCtx>> {
        self.legs[leg as usize].ctxs.get()
    }

    #[inline(always)]
    fn free_child(&mut self, leg: u32, child: NonNull<ChildCtx>) {
        self.legs[leg as usize].ctxs.put(child)
    }

    /// Reads and writes over the parent's own iovecs go straight to the bdev layer; the rest
    /// (other types, a partial buffer, an absent leg, a refusal) is `submit_other`/`refused`.
    #[inline(always)]
    fn submit(
        &mut self,
        host: &NonNull<sys::spdk_bdev_io>,
        child: NonNull<ChildCtx>,
        info: ChildInfo,
    ) -> Submitted<NonNull<ChildCtx>> {
        // SAFETY: `host` is a live parent.
        let parent = unsafe { host_io::view(host.as_ptr()) };
        let whole = info.buf_offset == 0 && info.blocks == parent.num_blocks;
        let ctx = child.as_ptr();
        let (arg, cb, lba) = self.prepare(ctx, host, &info);
        // Indexed once (after `prepare`, which borrows all of `self`).
        let leg = &mut self.legs[info.leg as usize];
        if leg.ch.is_null() || !matches!(info.op, IoOp::Read | IoOp::Write) || !whole {
            return self.submit_other(host, child, info, (arg, cb, lba));
        }
        if self.stalled {
            // Not where the children out are stuck: through the reserve, one at a time.
            return self.refused(child, info, -libc::ENOMEM);
        }
        let iovs = parent.iovs as *mut sys::iovec;
        // SAFETY: desc and ch belong to this leg on this thread; the context and the parent's
        // iovecs outlive the I/O.
        let rc = unsafe {
            if !(*host.as_ptr()).u.bdev.memory_domain.is_null() {
                let write = info.op == IoOp::Write;
                sys::spdk_mirror_shim_rw(
                    leg.desc,
                    leg.ch,
                    host.as_ptr(),
                    write,
                    iovs,
                    parent.iovcnt,
                    lba,
                    info.blocks,
                    cb,
                    arg,
                )
            } else if info.op == IoOp::Write {
                // Nothing for ext options to carry: the plain call, without building them.
                sys::spdk_bdev_writev_blocks(leg.desc, leg.ch, iovs, parent.iovcnt, lba, info.blocks, cb, arg)
            } else {
                sys::spdk_bdev_readv_blocks(leg.desc, leg.ch, iovs, parent.iovcnt, lba, info.blocks, cb, arg)
            }
        };
        if rc == 0 {
            leg.inflight += 1;
            return Submitted::InFlight;
        }
        if rc == -libc::ENOMEM && (self.rescue_busy || self.children_in_flight()) {
            // The common refusal under a starved pool, handed back here rather than through
            // `refused`'s call (every resumed child that finds the pool empty again).
            return Submitted::NoMem(child, info);
        }
        self.refused(child, info, rc)
    }

    #[inline(always)]
    fn read_pinned(&self, lba: u64, blocks: u64) -> bool {
        // SAFETY: the mirror's metadata outlives its channels' backends.
        !self.persist.is_null() && unsafe { (*self.persist).pinned(lba, blocks) }
    }

    fn wait_for_io(&mut self, leg: Option<u32>) {
        let Some(leg) = leg else { return };
        if self.stalled {
            // At the head of SPDK's line this wait would take the next `spdk_bdev_io` freed
            // here before the layer below, whose wait for one is what holds our children: the
            // channel's poller retries instead (`channel::stall`).
            return;
        }
        let leg = &mut self.legs[leg as usize];
        if leg.wait.queued.get() || leg.ch.is_null() {
            return;
        }
        let wait: *mut IoWait = &mut *leg.wait;
        // SAFETY: the wait entry is boxed and lives as long as the channel, which outlives it
        // being queued (a channel is destroyed only with no I/O parked).
        let rc = unsafe {
            (*wait).entry.bdev = leg.bdev;
            (*wait).entry.cb_fn = self.calls.io_wait_done;
            (*wait).entry.cb_arg = wait as *mut c_void;
            // Children unblock parents that hold resources: queue at the head (SPDK's fix for
            // spdk/spdk#3710, as its raid module does).
            (*wait).entry.dep_unblock = true;
            sys::spdk_bdev_queue_io_wait(leg.bdev, leg.ch, &mut (*wait).entry)
        };
        if rc == 0 {
            leg.wait.queued.set(true);
        } else {
            // An spdk_bdev_io is already free in this thread's cache: retry at once, as if
            // SPDK had called back.
            if let Some(f) = self.calls.io_wait_done {
                // SAFETY: the channel's own callback with its own wait entry; the channel
                // outlives its backend.
                unsafe { f(wait as *mut c_void) };
            }
        }
    }

    fn complete(&mut self, host: NonNull<sys::spdk_bdev_io>, status: HostStatus) {
        self.completions.push_back((host, status));
    }

    fn leg_failed(&mut self, leg: u32) {
        self.failed_legs |= 1 << leg;
    }
}

/// Writes `info` into the context field by field. `info` was built moments ago, field by field,
/// on the stack; copied whole, it is read back with 16-byte loads that span several of those
/// narrower stores, which the CPU cannot forward, and each such load waits for the store buffer
/// to drain (the largest single stall of the submit path in the profile). Volatile keeps the
/// compiler from merging the copies back into wide ones.
///
/// # Safety
/// `ctx` must be a live context we own.
#[inline(always)]
unsafe fn write_info(ctx: *mut ChildCtx, info: &ChildInfo) {
    // SAFETY: the caller owns the live context; every field is a plain value.
    unsafe {
        let d = ptr::addr_of_mut!((*ctx).info);
        ptr::write_volatile(ptr::addr_of_mut!((*d).parent), info.parent);
        ptr::write_volatile(ptr::addr_of_mut!((*d).op), info.op);
        ptr::write_volatile(ptr::addr_of_mut!((*d).leg), info.leg);
        ptr::write_volatile(ptr::addr_of_mut!((*d).leg_lba), info.leg_lba);
        ptr::write_volatile(ptr::addr_of_mut!((*d).blocks), info.blocks);
        ptr::write_volatile(ptr::addr_of_mut!((*d).buf_offset), info.buf_offset);
        ptr::write_volatile(ptr::addr_of_mut!((*d).segment), info.segment);
    }
}

impl SpdkBackend {
    /// Fills a child's context for its submission: the callback argument, the callback and
    /// the leg LBA (past the metadata) to submit it with.
    #[inline(always)]
    fn prepare(
        &self,
        ctx: *mut ChildCtx,
        host: &NonNull<sys::spdk_bdev_io>,
        info: &ChildInfo,
    ) -> (*mut c_void, sys::spdk_bdev_io_completion_cb, u64) {
        // SAFETY: `ctx` is a context we own until its completion; `host` is a live parent.
        unsafe {
            (*ctx).channel = self.channel;
            (*ctx).parent = host.as_ptr();
            write_info(ctx, info);
        }
        (
            ctx as *mut c_void,
            self.calls.child_done,
            info.leg_lba + self.data_offset,
        )
    }

    /// A child of this channel on `leg` is back (or handed back after a panic).
    #[inline(always)]
    pub fn child_back(&mut self, leg: u32) {
        if let Some(leg) = self.legs.get_mut(leg as usize) {
            leg.inflight -= 1;
        }
    }

    #[inline(always)]
    pub fn children_in_flight(&self) -> bool {
        self.legs.iter().any(|l| l.inflight > 0)
    }

    /// `submit` for everything but a read or write of the parent's whole buffer on a present
    /// leg: unmap, write-zeroes, flush, a child covering part of its parent, an absent leg.
    /// `prepared`: what `prepare` gave for the child, its context already filled.
    #[inline(never)]
    fn submit_other(
        &mut self,
        host: &NonNull<sys::spdk_bdev_io>,
        child: NonNull<ChildCtx>,
        info: ChildInfo,
        prepared: (*mut c_void, sys::spdk_bdev_io_completion_cb, u64),
    ) -> Submitted<NonNull<ChildCtx>> {
        let leg = &mut self.legs[info.leg as usize];
        if leg.ch.is_null() {
            return Submitted::Completed(child, info, ChildStatus::Error);
        }
        if info.op == IoOp::Flush {
            // SAFETY: a present leg's open bdev.
            let takes_flush = unsafe { sys::spdk_bdev_io_type_supported(leg.bdev, sys::SPDK_BDEV_IO_TYPE_FLUSH) };
            if !takes_flush {
                // Nothing to flush on a leg without the command (see `io_type_supported`).
                return Submitted::Completed(child, info, ChildStatus::Success);
            }
        }
        let ctx = child.as_ptr();
        let (arg, cb, lba) = prepared;
        // SAFETY: desc and ch belong to this leg on this thread; the context outlives the I/O.
        let rc = unsafe {
            match info.op {
                IoOp::Read | IoOp::Write => {
                    let Some((iovs, iovcnt)) = slice_parent_iovs(ctx, self.block_size) else {
                        errlog!("child I/O needs more than {MAX_CHILD_IOVS} iovecs");
                        return Submitted::Completed(child, info, ChildStatus::Error);
                    };
                    let write = info.op == IoOp::Write;
                    let iovs = iovs as *mut sys::iovec;
                    sys::spdk_mirror_shim_rw(
                        leg.desc,
                        leg.ch,
                        host.as_ptr(),
                        write,
                        iovs,
                        iovcnt,
                        lba,
                        info.blocks,
                        cb,
                        arg,
                    )
                }
                IoOp::Unmap => sys::spdk_bdev_unmap_blocks(leg.desc, leg.ch, lba, info.blocks, cb, arg),
                IoOp::WriteZeroes => sys::spdk_bdev_write_zeroes_blocks(leg.desc, leg.ch, lba, info.blocks, cb, arg),
                IoOp::Flush => sys::spdk_bdev_flush_blocks(leg.desc, leg.ch, lba, info.blocks, cb, arg),
            }
        };
        if rc == 0 {
            leg.inflight += 1;
            return Submitted::InFlight;
        }
        self.refused(child, info, rc)
    }

    /// The bdev layer refused a child: no `spdk_bdev_io` (`-ENOMEM`), or an error.
    #[cold]
    #[inline(never)]
    fn refused(&mut self, child: NonNull<ChildCtx>, info: ChildInfo, rc: i32) -> Submitted<NonNull<ChildCtx>> {
        if rc == -libc::ENOMEM && !self.rescue_busy && (self.stalled || !self.children_in_flight()) {
            // Nothing of ours is in flight (or nothing of it comes back: `stalled`), so no
            // completion here will free an spdk_bdev_io: every one may be held by parents
            // waiting on us (after a bitmap write, say). Send this child through the mirror
            // thread's own cache, a reserve no parent can take (md's mempool reserve); its
            // completion frees the way.
            self.rescue_busy = true;
            self.legs[info.leg as usize].inflight += 1;
            super::rescue::send(child.as_ptr(), self.calls.rescue_back);
            return Submitted::InFlight;
        }
        if rc == -libc::ENOMEM {
            return Submitted::NoMem(child, info);
        }
        errlog!(
            "leg {} refused a child I/O: {}",
            info.leg,
            std::io::Error::from_raw_os_error(-rc)
        );
        Submitted::Completed(child, info, ChildStatus::Error)
    }
}

impl IoWait {
    pub fn new(channel: *const c_void) -> Box<Self> {
        Box::new(IoWait {
            entry: sys::spdk_bdev_io_wait_entry::default(),
            channel,
            queued: Cell::new(false),
        })
    }
}

impl LegIo {
    pub fn absent(channel: *const c_void) -> Self {
        LegIo {
            bdev: ptr::null_mut(),
            desc: ptr::null_mut(),
            ch: ptr::null_mut(),
            ctxs: CtxCache::new(ptr::null_mut(), 0),
            wait: IoWait::new(channel),
            inflight: 0,
        }
    }
}
