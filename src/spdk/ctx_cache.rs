//! A channel's own cache of one leg's child contexts, in front of the leg's `spdk_mempool`.
//!
//! The mempools are created without DPDK's per-lcore caches: those cost about 1 MiB per pool
//! whatever its size (an array for every possible lcore), which held a target to a few dozen
//! mirrors. This cache does their job for the one thread a channel runs on: a get or put is a
//! pop or push on a preallocated stack, and the pool is touched in bulk, half a cache at a time.
//! At most `max` contexts stay here (a quarter of the pool split across the cores, as before),
//! so other cores can always reach most of the pool; a channel gives its cache back when it goes.

use std::os::raw::c_void;
use std::ptr::{self, NonNull};

use spdk_sys as sys;

use super::child_ctx::ChildCtx;

/// The most contexts one channel keeps per leg.
pub const MAX_CACHED: usize = 64;

pub struct CtxCache {
    pool: *mut sys::spdk_mempool,
    stack: Vec<NonNull<ChildCtx>>,
    max: usize,
}

impl CtxCache {
    /// A cache of at most `max` (≤ `MAX_CACHED`) contexts of `pool` (null: a leg with no pool).
    pub fn new(pool: *mut sys::spdk_mempool, max: usize) -> CtxCache {
        let max = max.min(MAX_CACHED);
        CtxCache {
            pool,
            stack: Vec::with_capacity(max),
            max,
        }
    }

    #[inline(always)]
    pub fn get(&mut self) -> Option<NonNull<ChildCtx>> {
        if let Some(c) = self.stack.pop() {
            return Some(c);
        }
        self.get_from_pool()
    }

    #[inline(always)]
    pub fn put(&mut self, ctx: NonNull<ChildCtx>) {
        if self.stack.len() < self.max {
            return self.stack.push(ctx);
        }
        self.put_to_pool(ctx)
    }

    /// The cache is empty: half a cache from the pool, or one context.
    #[cold]
    #[inline(never)]
    fn get_from_pool(&mut self) -> Option<NonNull<ChildCtx>> {
        if self.pool.is_null() {
            return None;
        }
        if self.max > 1 && self.refill(self.max / 2) {
            return self.stack.pop();
        }
        // SAFETY: the leg's live mempool of `ChildCtx`-sized elements.
        NonNull::new(unsafe { sys::spdk_mempool_get(self.pool) } as *mut ChildCtx)
    }

    /// The cache is full: half of it goes back to the pool first.
    #[cold]
    #[inline(never)]
    fn put_to_pool(&mut self, ctx: NonNull<ChildCtx>) {
        if self.stack.len() == self.max {
            self.spill(self.max / 2);
        }
        if self.stack.len() < self.max {
            self.stack.push(ctx);
        } else {
            // SAFETY: the context came from this pool and is no longer in use.
            unsafe { sys::spdk_mempool_put(self.pool, ctx.as_ptr() as *mut c_void) };
        }
    }

    /// Takes `n` contexts from the pool at once (all or none, as DPDK's bulk get does).
    fn refill(&mut self, n: usize) -> bool {
        let mut got = [ptr::null_mut::<c_void>(); MAX_CACHED];
        // SAFETY: `got` has room for `n` <= MAX_CACHED pointers; the pool is live.
        if unsafe { sys::spdk_mempool_get_bulk(self.pool, got.as_mut_ptr(), n) } != 0 {
            return false;
        }
        self.stack
            .extend(got[..n].iter().filter_map(|&p| NonNull::new(p as *mut ChildCtx)));
        true
    }

    /// Gives the `n` oldest cached contexts back to the pool.
    fn spill(&mut self, n: usize) {
        let n = n.min(self.stack.len());
        let mut back = [ptr::null_mut::<c_void>(); MAX_CACHED];
        for (slot, c) in back.iter_mut().zip(self.stack.drain(..n)) {
            *slot = c.as_ptr() as *mut c_void;
        }
        if n > 0 {
            // SAFETY: `n` contexts of this pool, none in use.
            unsafe { sys::spdk_mempool_put_bulk(self.pool, back.as_mut_ptr(), n) };
        }
    }
}

impl Drop for CtxCache {
    fn drop(&mut self) {
        while !self.stack.is_empty() {
            self.spill(MAX_CACHED);
        }
    }
}
