//! After a panic in the engine (a bug): the engine is poisoned, the host I/Os it held are
//! abandoned and failed once every child still out is back, and the core serves I/O again.

use std::ptr::NonNull;

use spdk_sys as sys;

use super::{complete_host, host_status, write_state, Channel};
use crate::engine::{Backend, ChildInfo, ChildStatus, Engine, HostStatus, DIRECT, DIRECT_WRITE};
use crate::spdk::backend::SpdkBackend;
use crate::spdk::child_ctx::ChildCtx;
use crate::spdk::ffi::{errlog, warnlog};
use crate::spdk::intent::ChannelIntent;

impl Channel {
    /// After a panic inside the engine (a bug): nothing may stay wedged. Host I/Os the engine
    /// had finished are completed; those it held are abandoned (failed once their children are
    /// back); queued ones are failed; the engine starts afresh. Their writes' regions stay dirty.
    pub(super) fn poison(&self, e: &mut Engine<SpdkBackend, ChannelIntent>) {
        errlog!(
            "mirror {}: internal error in the I/O engine: failing its outstanding I/O on this core",
            self.mirror().name()
        );
        let finished: Vec<_> = e.backend_mut().completions.drain(..).collect();
        let orphans = e.abandon();
        *self.orphans.borrow_mut() = Some(orphans);
        self.poisoned.set(true);
        self.deferred.set(false);
        self.io_signal.set(false);
        let queued: Vec<_> = self.deferred_parents.borrow_mut().drain(..).collect();
        let children: Vec<_> = std::iter::from_fn(|| self.deferred_children.borrow().pop()).collect();
        let mut direct = Vec::new();
        for (ctx, info, status) in children {
            // SAFETY: the queue holds non-null context pointers.
            let ctx = unsafe { NonNull::new_unchecked(ctx as *mut ChildCtx) };
            direct.extend(Self::drop_child(e, ctx, info, status));
        }
        for (io, status) in finished {
            // Finished, but an acknowledgement still waits for a leg failure to be recorded.
            if self.mirror().failure_unrecorded() {
                self.held.borrow_mut().push_back((io, status));
            } else {
                complete_host(io, status);
            }
        }
        for (io, _) in queued {
            complete_host(io, HostStatus::Failed);
        }
        for (io, status) in direct {
            complete_host(io, status);
        }
        self.recover();
    }

    /// A child of an abandoned parent is back: its context goes home; once none is left in
    /// flight the orphans are failed and the engine serves again. A direct read's host, which
    /// no engine state held, completes with its child's status.
    pub(super) fn orphan_child_done(&self, ctx: NonNull<ChildCtx>, info: ChildInfo, status: ChildStatus) {
        // SAFETY: not busy, so no other reference to the engine is live on this thread.
        let e = unsafe { &mut *self.engine.get() };
        if let Some((host, status)) = Self::drop_child(e, ctx, info, status) {
            complete_host(host, status);
        }
        self.recover();
    }

    /// Gives a child's context back without the engine (after a panic in it): a direct read's
    /// host (with its child's status), or a direct write's when this was its last child (failed:
    /// its copies may differ), is returned for the caller to complete.
    fn drop_child(
        e: &mut Engine<SpdkBackend, ChannelIntent>,
        ctx: NonNull<ChildCtx>,
        info: ChildInfo,
        status: ChildStatus,
    ) -> Option<(NonNull<sys::spdk_bdev_io>, HostStatus)> {
        e.backend_mut().child_back(info.leg);
        // SAFETY: a context of ours; a direct child's parent is the live host it serves.
        let host = || unsafe { NonNull::new_unchecked((*ctx.as_ptr()).parent) };
        match info.parent {
            DIRECT => {
                e.direct_read_dropped(ctx, info);
                Some((host(), host_status(status)))
            }
            DIRECT_WRITE => {
                let host = host();
                // SAFETY: the write's state is its host's, and nothing else refers to it now.
                let last = e.direct_write_dropped(ctx, info, unsafe { &mut *write_state(host) });
                last.then_some((host, HostStatus::Failed))
            }
            _ => {
                e.backend_mut().free_child(info.leg, ctx);
                None
            }
        }
    }

    /// Fails the orphans once no child of theirs is in flight, and lifts the poison.
    pub(super) fn recover(&self) {
        // SAFETY: callers are not busy: no other reference to the engine is live.
        let e = unsafe { &mut *self.engine.get() };
        // (A child on its way through the reserve is counted in its leg's `inflight` too.)
        if e.backend().legs.iter().any(|l| l.inflight > 0) {
            return;
        }
        let Some(orphans) = self.orphans.borrow_mut().take() else {
            return;
        };
        self.poisoned.set(false);
        warnlog!(
            "mirror {}: {} host I/Os abandoned after an internal error failed; this core serves I/O again",
            self.mirror().name(),
            orphans.len()
        );
        for io in orphans {
            complete_host(io, HostStatus::Failed);
        }
    }
}
