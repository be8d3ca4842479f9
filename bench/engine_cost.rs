//! What the pure engine costs per host I/O, without SPDK: `cargo run --release --example
//! engine_cost`.
//!
//! The engine runs over a backend that does nothing but hand contexts out of a stack and queue
//! each child; children complete in submission order, keeping `QD` host I/Os in flight, as a
//! null bdev under bdevperf would. No bitmap. What it prints is the engine's own share of the
//! mirror's per-I/O cost (the SPDK glue, the bdev layer and the bitmap come on top), measured
//! on one thread with nothing else in the loop, so it moves much less with a busy machine than
//! an SPDK benchmark does. Best of `ROUNDS`.

use std::collections::VecDeque;
use std::time::Instant;

use spdk_mirror::engine::{
    Backend, ChildInfo, ChildStatus, Engine, EngineConfig, HostStatus, IoOp, IoRequest, ReadPolicy, Strategy, Submitted,
};
use spdk_mirror::placement::{Geometry, GeometrySpec, Level, Raid10Layout};

const QD: usize = 128;
const IOS: u64 = 4_000_000;
const ROUNDS: usize = 5;
const LEG_BLOCKS: u64 = 1 << 18;

struct Quiet {
    pools: Vec<Vec<u32>>,
    in_flight: VecDeque<(u32, ChildInfo)>,
    completed: u64,
}

impl Backend for Quiet {
    type Host = u64;
    type Child = u32;

    fn alloc_child(&mut self, leg: u32) -> Option<u32> {
        self.pools[leg as usize].pop()
    }
    fn free_child(&mut self, leg: u32, child: u32) {
        self.pools[leg as usize].push(child)
    }
    fn submit(&mut self, _host: &u64, child: u32, info: ChildInfo) -> Submitted<u32> {
        self.in_flight.push_back((child, info));
        Submitted::InFlight
    }
    fn wait_for_io(&mut self, _leg: Option<u32>) {}
    fn complete(&mut self, _host: u64, _status: HostStatus) {
        self.completed += 1;
    }
}

fn geometry(level: Level, legs: u32) -> Geometry {
    Geometry::new(&GeometrySpec {
        level,
        layout: (level == Level::Raid10).then_some(Raid10Layout::N2),
        legs,
        chunk_bytes: (level == Level::Raid10).then_some(64 * 1024),
        block_size: 4096,
        leg_blocks: LEG_BLOCKS,
    })
    .expect("a valid geometry")
}

/// Nanoseconds per host I/O of `op` (one block, random) at queue depth `QD`.
fn run(geo: &Geometry, op: IoOp) -> f64 {
    let backend = Quiet {
        pools: vec![(0..256).collect(); geo.legs() as usize + 1],
        in_flight: VecDeque::with_capacity(4 * QD),
        completed: 0,
    };
    let cfg = EngineConfig {
        max_parents: 1024,
        strategy: Strategy::Immediate,
        read_policy: ReadPolicy::default(),
    };
    let mut e = Engine::new(geo.clone(), cfg, backend);
    let children = if op == IoOp::Write { geo.copies() as usize } else { 1 };
    let mut lba = 1u64;
    let start = Instant::now();
    for host in 0..IOS {
        // A fixed LCG: the same "random" blocks every run.
        lba = lba.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        e.submit(
            host,
            IoRequest {
                op,
                lba: (lba >> 20) % geo.data_blocks(),
                blocks: 1,
            },
        );
        while e.backend().in_flight.len() > children * QD {
            let (child, info) = e.backend_mut().in_flight.pop_front().expect("non-empty");
            e.child_done(child, info, ChildStatus::Success);
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / IOS as f64;
    assert_eq!(
        e.backend().completed,
        IOS - (QD as u64),
        "every host I/O but the last QD completed"
    );
    ns
}

fn main() {
    println!("pure engine, ns per host I/O (4K, QD{QD}, best of {ROUNDS} x {IOS} I/Os, no bitmap)");
    for (name, geo) in [
        ("raid1, 2 legs", geometry(Level::Raid1, 2)),
        ("raid10 n2, 4 legs", geometry(Level::Raid10, 4)),
    ] {
        for op in [IoOp::Write, IoOp::Read] {
            let best = (0..ROUNDS).map(|_| run(&geo, op)).fold(f64::INFINITY, f64::min);
            println!("{name:18} {:5}  {best:6.1} ns", format!("{op:?}").to_lowercase());
        }
    }
}
