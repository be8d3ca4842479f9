//! Typed callback contexts for SPDK's asynchronous calls (openebs spdk-rs's way: `extern "C"`
//! trampolines into safe Rust). A context goes to SPDK as the `void *` argument boxed by
//! `into_arg`, and comes back exactly once through `take_arg` (or is looked at, while SPDK still
//! holds it, with `arg_mut`). Two common chains get whole trampolines: a visit of every channel
//! of an io_device (`for_each_channel`) and a message to another thread (`send_msg`).
//!
//! The longer chains (a process's `Job`, a metadata write's `MetaOp`/`MetaIo`, a `Reshape`, a
//! superblock wipe or read) carry one typed pointer from step to step: `start_chain` makes it,
//! `end_chain` takes it back in the chain's last step. (A mirror and a channel are owned by SPDK
//! objects instead: `create`/`teardown`, `fn_table`.)

use std::os::raw::{c_int, c_void};

use spdk_sys as sys;

use super::ffi::guard;

/// Boxes `v` for SPDK to hold as a callback argument.
pub fn into_arg<T>(v: T) -> *mut c_void {
    Box::into_raw(Box::new(v)) as *mut c_void
}

/// Takes back a callback argument for good.
///
/// # Safety
/// `arg` came from `into_arg::<T>` and was not taken back before; nothing uses it after.
pub unsafe fn take_arg<T>(arg: *mut c_void) -> Box<T> {
    // SAFETY: the caller's contract: a live box of a `T`, given up by SPDK.
    unsafe { Box::from_raw(arg as *mut T) }
}

/// Looks at a callback argument SPDK still holds.
///
/// # Safety
/// `arg` came from `into_arg::<T>`, is not taken back yet, and nothing else refers to it
/// while the reference lives.
pub unsafe fn arg_mut<'a, T>(arg: *mut c_void) -> &'a mut T {
    // SAFETY: the caller's contract.
    unsafe { &mut *(arg as *mut T) }
}

/// Starts an asynchronous chain whose state `v` SPDK's callbacks carry from step to step (as
/// their `void *`, cast back to `*mut T`).
pub fn start_chain<T>(v: T) -> *mut T {
    Box::into_raw(Box::new(v))
}

/// Ends a chain: its state, taken back for good.
///
/// # Safety
/// `p` came from `start_chain` and was not ended before; no callback of the chain is pending.
pub unsafe fn end_chain<T>(p: *mut T) -> Box<T> {
    // SAFETY: the caller's contract.
    unsafe { Box::from_raw(p) }
}

/// What a visit of one channel leaves to do.
pub enum Visit {
    /// Go on to the next channel (a non-zero status ends the iteration with it).
    Next(c_int),
    /// The channel took the iteration and continues it later itself
    /// (`spdk_for_each_channel_continue`).
    Held,
}

/// A visit of every channel of an io_device, one after the other, each on its own thread.
pub trait PerChannel: Sized {
    /// For the panic guard's message.
    const WHAT: &'static str;
    /// On channel `ch`'s thread; `iter` is the iteration (for `Visit::Held`).
    fn on_channel(&mut self, ch: *mut sys::spdk_io_channel, iter: *mut sys::spdk_io_channel_iter) -> Visit;
    /// What to do when `on_channel` panicked (a bug) on a channel.
    fn on_panic(&mut self) -> Visit;
    /// On the calling thread once every channel was visited (or one ended it with `status`).
    fn done(self: Box<Self>, status: c_int);
}

/// Visits every channel of `io_device` with `ctx`, then calls its `done`.
pub fn for_each_channel<T: PerChannel>(io_device: *mut c_void, ctx: T) {
    extern "C" fn visit<T: PerChannel>(i: *mut sys::spdk_io_channel_iter) {
        // SAFETY: the iteration's context is the `T` boxed below, held by SPDK until
        // `all_done`; channels are visited one at a time, and the reference ends with this call.
        let ctx = || unsafe { arg_mut::<T>(sys::spdk_io_channel_iter_get_ctx(i)) };
        let next = guard(T::WHAT, None, || {
            // SAFETY: a live iteration.
            Some(ctx().on_channel(unsafe { sys::spdk_io_channel_iter_get_channel(i) }, i))
        })
        .unwrap_or_else(|| guard(T::WHAT, Visit::Held, || ctx().on_panic()));
        if let Visit::Next(rc) = next {
            // SAFETY: a live iteration, continued once.
            unsafe { sys::spdk_for_each_channel_continue(i, rc) };
        }
    }
    extern "C" fn all_done<T: PerChannel>(i: *mut sys::spdk_io_channel_iter, status: c_int) {
        guard(T::WHAT, (), || {
            // SAFETY: boxed below; SPDK's last call with it.
            let ctx = unsafe { take_arg::<T>(sys::spdk_io_channel_iter_get_ctx(i)) };
            ctx.done(status);
        })
    }
    let arg = into_arg(ctx);
    // SAFETY: the caller's io_device is registered; `arg` is taken back in `all_done`.
    unsafe { sys::spdk_for_each_channel(io_device, Some(visit::<T>), arg, Some(all_done::<T>)) };
}

/// Runs `f` on `thread`. If the message cannot be sent, `f` is handed back.
pub fn send_msg<F: FnOnce() + 'static>(thread: *mut sys::spdk_thread, f: F) -> Result<(), F> {
    extern "C" fn run<F: FnOnce()>(arg: *mut c_void) {
        guard("mirror message", (), || {
            // SAFETY: boxed below, delivered once.
            let f = unsafe { take_arg::<F>(arg) };
            f()
        })
    }
    let arg = into_arg(f);
    // SAFETY: `arg` is taken back by `run`, or below when the message was not sent.
    if unsafe { sys::spdk_thread_send_msg(thread, Some(run::<F>), arg) } == 0 {
        Ok(())
    } else {
        // SAFETY: not sent: still ours.
        Err(*unsafe { take_arg::<F>(arg) })
    }
}
