//! The I/O path allocates nothing: a counting global allocator watches a burst of I/O through
//! the engine (writes, reads, raid10 splits, pool and no-memory parking, with and without a
//! replacement leg) after a warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use spdk_mirror::engine::{Engine, EngineConfig, IoOp, IoRequest, ReadPolicy, Strategy};
use spdk_mirror::placement::{Geometry, GeometrySpec, Level, Raid10Layout};
use spdk_mirror::sim::backend::Notice;
use spdk_mirror::sim::rng::Rng;
use spdk_mirror::sim::{Faults, LegModel, SimBackend};

struct Counting;

thread_local! {
    /// Set on the test's own thread only, around the burst: other threads (libtest's main
    /// thread) may allocate meanwhile, and that is not the I/O path. (A CI run once counted
    /// four allocations here that the seeded, single-threaded burst did not repeat in nine
    /// runs; another thread, descheduled past the warm-up, is the likely source.)
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCS: AtomicU64 = AtomicU64::new(0);

/// Whether this thread counts (a const-initialised thread-local: reading it never allocates).
fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Drives `ios` random host I/Os at queue depth `qd` and returns how many completed.
fn burst(engine: &mut Engine<SimBackend>, rng: &mut Rng, ios: u64, qd: u32, next_id: &mut u64) -> u64 {
    let data = engine.geometry().data_blocks();
    let mut free: [u32; 64] = [0; 64];
    let mut nfree = 0;
    for slot in 0..qd {
        free[nfree] = slot;
        nfree += 1;
    }
    let (mut issued, mut done) = (0, 0);
    while done < ios {
        while issued < ios && nfree > 0 {
            nfree -= 1;
            let slot = free[nfree];
            let blocks = 1 + rng.below(40);
            let op = if rng.percent(50) { IoOp::Read } else { IoOp::Write };
            let lba = rng.below(data - blocks);
            *next_id += 1;
            let h = &mut engine.backend_mut().hosts[slot as usize];
            h.lba = lba;
            h.write_id = *next_id;
            engine.submit(slot, IoRequest { op, lba, blocks });
            issued += 1;
        }
        match engine.backend_mut().next_notice() {
            Some(Notice::ChildDone(c, info, st)) => engine.child_done(c, info, st),
            Some(Notice::Poll) => engine.poll(),
            Some(Notice::BitmapFlushed) => unreachable!("no bitmap in this run"),
            None => panic!("stalled"),
        }
        loop {
            if engine.backend_mut().take_io_signal() {
                engine.io_available();
                continue;
            }
            let Some((slot, _)) = engine.backend_mut().completed.pop() else {
                break;
            };
            free[nfree] = slot;
            nfree += 1;
            done += 1;
        }
    }
    done
}

#[test]
fn a_burst_of_io_allocates_nothing() {
    for (level, layout, legs, replacement) in [
        (Level::Raid1, None, 3, None),
        (Level::Raid10, Some("n2"), 4, None),
        (Level::Raid10, Some("f2"), 5, None),
        (Level::Raid1, None, 2, Some(1)),
        (Level::Raid10, Some("n2"), 4, Some(2)),
    ] {
        let geo = Geometry::new(&GeometrySpec {
            level,
            layout: layout.map(|l| Raid10Layout::parse(l).unwrap()),
            legs,
            chunk_bytes: Some(8192),
            block_size: 512,
            leg_blocks: 8192,
        })
        .unwrap();
        let qd = 32;
        let backend = SimBackend::new(
            legs,
            geo.used_leg_blocks(),
            LegModel {
                latency_ns: 10_000,
                jitter_ns: 10_000,
                queue_depth: 8,
            },
            2, // tiny leg pools: parents park and resume
            qd + 3,
            qd,
            64,
            Faults {
                inline_pct: 20,
                nomem_pct: 10,
                ..Faults::default()
            },
            7,
        );
        let cfg = EngineConfig {
            max_parents: qd,
            strategy: Strategy::Immediate,
            read_policy: ReadPolicy::RoundRobin,
        };
        let mut engine = Engine::new(geo, cfg, backend);
        engine.set_replacement(replacement);
        let mut rng = Rng::new(3);
        let mut id = 0;
        assert_eq!(burst(&mut engine, &mut rng, 5_000, qd, &mut id), 5_000, "warm-up");
        ALLOCS.store(0, Ordering::SeqCst);
        COUNTING.with(|c| c.set(true));
        let done = burst(&mut engine, &mut rng, 20_000, qd, &mut id);
        COUNTING.with(|c| c.set(false));
        assert_eq!(done, 20_000);
        let s = engine.stats();
        assert!(
            s.pool_waits > 0 && s.io_waits > 0 && s.inline_completions > 0,
            "the slow paths ran: {s:?}"
        );
        let rep = engine.replacement_leg();
        assert_eq!(engine.leg_stats(rep).writes > 0, replacement.is_some());
        assert_eq!(
            ALLOCS.load(Ordering::SeqCst),
            0,
            "{level:?} {layout:?} replacing {replacement:?}: heap allocations on the I/O path"
        );
    }
}
