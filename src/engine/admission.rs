//! How many parents one engine admits at once: `max_parents`, capped by the shared I/O pool
//! (less tightly while only one thread does I/O to the mirror).
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
//!
//! With one channel (one thread doing I/O to the mirror) there is no such other thread: the
//! layers above the mirror wait on the pool on that thread, and every `spdk_bdev_io` the
//! mirror's children free there wakes them. (A thread doing I/O only to other bdevs can be
//! left waiting so by any busy thread, over a plain bdev as much as over the mirror: that is
//! SPDK's own.) So one channel admits at least `ONE_CHANNEL_FLOOR` parents. Measured (bdevperf
//! verify QD128 straight on the mirror, one core, pools 16 to 256, cache 1 and 16): admitting
//! the pool's share alone ran at 0.76 of SPDK raid1 at a pool of 16 (one parent admitted) and
//! 0.87 at 32 to 128; admitting every parent 0.89 to 0.96, and 0.88 to 0.93 at 256, where
//! parents beyond what the pool can give their children only park and wake again; at least 64,
//! 0.87 to 1.04 (medians of five pairs, the 0.87 row 0.95 run again;
//! `bench/results/2026-12-03-051900-pressure.md`).
//!
//! The floor holds only while the legs are plain: bdevs that take no `spdk_bdev_io` of their
//! own to serve a child (malloc, NVMe, null, aio), or mirrors (which draw what they need from
//! their own reserves). A leg that is another module's layer (delay, passthru, lvol, split,
//! crypto, ...) takes one more for each child, and 64 parents' children can hold all a small
//! pool has left beside the host I/O: each then waits in that layer for an `spdk_bdev_io` only
//! a child's return could free, and none returns (one core, bdevperf verify QD128 over two
//! delay legs stalled for good at pools up to 224, cache 1, where one delay bdev runs from
//! 128). A mirror with such a leg keeps the pool's share on one channel too (runs from 160).

/// Shared I/O a channel's children may hold at most: one part in this many of the pool.
pub const POOL_SHARE: u32 = 8;

/// Parents one channel admits at least when it is the mirror's only one and its legs are
/// plain (if `max_parents` allows).
pub const ONE_CHANNEL_FLOOR: u32 = 64;

/// Parents one engine admits while `channels` threads do I/O to the mirror: `max_parents`,
/// but no more than whose children (`copies` each) fit in `shared_pool / POOL_SHARE`, and
/// never fewer than one; with one channel and `plain_legs` (no leg takes an `spdk_bdev_io` of
/// its own for a child), never fewer than `ONE_CHANNEL_FLOOR` either.
pub fn admitted_parents(max_parents: u32, copies: u32, shared_pool: u32, channels: u32, plain_legs: bool) -> u32 {
    let mut cap = shared_pool / POOL_SHARE / copies.max(1);
    if channels <= 1 && plain_legs {
        cap = cap.max(ONE_CHANNEL_FLOOR);
    }
    max_parents.min(cap).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdk_default_pool_leaves_max_parents_alone() {
        assert_eq!(admitted_parents(1024, 2, 65535, 2, true), 1024);
        assert_eq!(admitted_parents(1024, 3, 65535, 2, true), 1024);
    }

    #[test]
    fn a_small_pool_caps_the_children_at_an_eighth_of_it() {
        assert_eq!(admitted_parents(1024, 2, 128, 2, true), 8);
        assert_eq!(admitted_parents(1024, 3, 128, 3, true), 5);
        assert_eq!(admitted_parents(4, 2, 128, 2, true), 4);
    }

    #[test]
    fn never_below_one() {
        assert_eq!(admitted_parents(1024, 2, 8, 2, true), 1);
        assert_eq!(admitted_parents(0, 2, 65535, 2, true), 1);
        assert_eq!(admitted_parents(16, 0, 0, 2, true), 1);
    }

    #[test]
    fn one_channel_admits_at_least_its_floor() {
        assert_eq!(admitted_parents(1024, 2, 16, 1, true), ONE_CHANNEL_FLOOR);
        assert_eq!(admitted_parents(1024, 2, 16, 0, true), ONE_CHANNEL_FLOOR);
        assert_eq!(admitted_parents(1024, 2, 4096, 1, true), 256);
        assert_eq!(admitted_parents(1024, 2, 65535, 1, true), 1024);
        assert_eq!(admitted_parents(8, 2, 16, 1, true), 8);
        assert_eq!(admitted_parents(0, 2, 16, 1, true), 1);
        // A second channel caps them all again.
        assert_eq!(admitted_parents(1024, 2, 16, 2, true), 1);
    }

    #[test]
    fn one_channel_over_layered_legs_keeps_the_pools_share() {
        // Legs that take an `spdk_bdev_io` of their own for each child: no floor.
        assert_eq!(admitted_parents(1024, 2, 16, 1, false), 1);
        assert_eq!(admitted_parents(1024, 2, 192, 1, false), 12);
        assert_eq!(admitted_parents(1024, 2, 192, 2, false), 12);
        assert_eq!(admitted_parents(1024, 2, 65535, 1, false), 1024);
        assert_eq!(admitted_parents(0, 2, 16, 1, false), 1);
    }
}
