//! How many parents one engine admits at once: `max_parents`, capped by the shared I/O pool.
//!
//! Every admitted write takes one shared I/O per copy for its children (SPDK: an
//! `spdk_bdev_io` of the global pool, which the layers above take their own from too). With a
//! small pool, a channel that admits many parents lets its children take the last of it. SPDK
//! wakes an `spdk_bdev_queue_io_wait` entry only when an I/O allocated on the same thread is
//! freed, so another thread that got its host I/O but then found the pool empty, with nothing
//! of its own in flight, waits for good: two thin lvols written on two threads over the mirror
//! stalled where over one plain bdev (no children) they ran. Capped, the children of one
//! channel take at most an eighth of the pool (twice as many already stalled that stack), and
//! the other seven stay for the layers above, which over a plain bdev would have all. With SPDK's
//! default pool (65,535) the cap is above the default `max_parents` (1,024) up to seven copies
//! and 1,023 at eight.

/// Shared I/O a channel's children may hold at most: one part in this many of the pool.
pub const POOL_SHARE: u32 = 8;

/// Parents one engine admits: `max_parents`, but no more than whose children (`copies` each)
/// fit in `shared_pool / POOL_SHARE`, and never fewer than one.
pub fn admitted_parents(max_parents: u32, copies: u32, shared_pool: u32) -> u32 {
    let cap = shared_pool / POOL_SHARE / copies.max(1);
    max_parents.min(cap).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdk_default_pool_leaves_max_parents_alone() {
        assert_eq!(admitted_parents(1024, 2, 65535), 1024);
        assert_eq!(admitted_parents(1024, 3, 65535), 1024);
    }

    #[test]
    fn a_small_pool_caps_the_children_at_an_eighth_of_it() {
        assert_eq!(admitted_parents(1024, 2, 128), 8);
        assert_eq!(admitted_parents(1024, 3, 128), 5);
        assert_eq!(admitted_parents(4, 2, 128), 4);
    }

    #[test]
    fn never_below_one() {
        assert_eq!(admitted_parents(1024, 2, 8), 1);
        assert_eq!(admitted_parents(0, 2, 65535), 1);
        assert_eq!(admitted_parents(16, 0, 0), 1);
    }
}
