//! The engine on the simulator: liveness where md's old behaviour stalls, and every byte checked.

use std::collections::HashSet;

use spdk_mirror::engine::Strategy;
use spdk_mirror::placement::{GeometrySpec, Level, Raid10Layout};
use spdk_mirror::sim::{run, Faults, SimConfig, SimReport};

fn spec(level: Level, layout: Option<&str>, legs: u32) -> GeometrySpec {
    GeometrySpec {
        level,
        layout: layout.map(|l| Raid10Layout::parse(l).unwrap()),
        legs,
        chunk_bytes: Some(8192),
        block_size: 512,
        leg_blocks: 4096,
    }
}

/// The geometries every liveness test runs on.
fn shapes() -> Vec<GeometrySpec> {
    vec![
        spec(Level::Raid1, None, 2),
        spec(Level::Raid1, None, 3),
        spec(Level::Raid10, Some("n2"), 3),
        spec(Level::Raid10, Some("n2"), 4),
        spec(Level::Raid10, Some("f2"), 4),
        spec(Level::Raid10, Some("o2"), 3),
        spec(Level::Raid10, Some("n3"), 4),
    ]
}

fn tight(geo: GeometrySpec, strategy: Strategy, seed: u64, leg_pool: u32, qd: u32) -> SimConfig {
    let mut c = SimConfig::new(geo);
    c.strategy = strategy;
    c.seed = seed;
    c.leg_pool = leg_pool;
    c.qd = qd;
    c.max_parents = Some(qd);
    c.io_pool = qd + 1; // barely above the admission bound
    c.ios = 1500;
    c.max_io_blocks = 40; // crosses 16-block chunks
    c
}

fn assert_clean(r: &SimReport, what: &str) {
    assert!(r.clean(), "{what}: {r:?}");
    assert!(r.pools_full, "{what}: a context or shared I/O leaked: {r:?}");
    assert_eq!(r.engine.parents_completed, r.submitted, "{what}");
    assert_eq!(r.engine.children_submitted, r.engine.children_completed, "{what}");
}

#[test]
fn immediate_never_stalls_with_pools_down_to_one_context() {
    let mut stalls_seen_for_batch = 0;
    let mut runs = 0;
    for geo in shapes() {
        for seed in 1..=6 {
            for (leg_pool, qd) in [(1, 4), (1, 16), (2, 8), (3, 32)] {
                let what = format!("{geo:?} seed {seed} leg_pool {leg_pool} qd {qd}");
                let r = run(&tight(geo.clone(), Strategy::Immediate, seed, leg_pool, qd)).unwrap();
                assert_clean(&r, &what);
                assert!(
                    r.engine.io_waits + r.engine.pool_waits > 0,
                    "{what}: pools were never dry"
                );
                let b = run(&tight(geo.clone(), Strategy::Batch, seed, leg_pool, qd)).unwrap();
                stalls_seen_for_batch += u32::from(b.stalled);
                runs += 1;
            }
        }
    }
    // md's pre-fix behaviour deadlocks under the same pressure.
    assert!(
        stalls_seen_for_batch * 2 > runs,
        "batch stalled in only {stalls_seen_for_batch} of {runs} runs"
    );
}

#[test]
fn batch_stalls_and_says_so() {
    // Three copies: a parent holds two shared I/Os and waits for a third that only parents hold.
    let r = run(&tight(spec(Level::Raid1, None, 3), Strategy::Batch, 1, 1, 8)).unwrap();
    assert!(r.stalled, "{r:?}");
    assert!(r.completed < r.submitted);
    assert!(!r.clean());
}

#[test]
fn overlapping_random_writes_keep_every_copy_identical() {
    for geo in shapes() {
        let mut c = SimConfig::new(geo.clone());
        c.ios = 20_000;
        c.read_pct = 30;
        c.qd = 64;
        c.max_io_blocks = 64;
        c.seed = 42;
        let r = run(&c).unwrap();
        assert_clean(&r, &format!("{geo:?}"));
        assert!(r.engine.children_submitted > r.submitted);
    }
}

#[test]
fn degraded_writes_with_a_dead_leg() {
    for (geo, leg) in [
        (spec(Level::Raid1, None, 2), 0),
        (spec(Level::Raid1, None, 3), 2),
        (spec(Level::Raid10, Some("n2"), 4), 1),
        (spec(Level::Raid10, Some("f2"), 4), 3),
        (spec(Level::Raid10, Some("o2"), 3), 0),
    ] {
        let mut c = SimConfig::new(geo.clone());
        c.ios = 10_000;
        c.fail_leg = Some(leg);
        c.leg_pool = 2;
        c.io_pool = 12;
        c.qd = 8;
        let r = run(&c).unwrap();
        assert_clean(&r, &format!("{geo:?} leg {leg}"));
        assert_eq!(r.legs_failed, vec![leg], "{geo:?}");
        assert!(r.engine.legs_failed == 1);
    }
}

#[test]
fn synchronous_completion_inside_submit_is_safe() {
    for geo in shapes() {
        let mut c = tight(geo.clone(), Strategy::Immediate, 9, 2, 8);
        c.faults = Faults {
            inline_pct: 60,
            ..Faults::default()
        };
        let r = run(&c).unwrap();
        assert_clean(&r, &format!("{geo:?}"));
        assert!(r.engine.inline_completions > 100, "{r:?}");
    }
}

#[test]
fn injected_no_memory_is_survived() {
    for geo in shapes() {
        let mut c = tight(geo.clone(), Strategy::Immediate, 5, 2, 8);
        c.faults = Faults {
            nomem_pct: 30,
            inline_pct: 10,
            ..Faults::default()
        };
        let r = run(&c).unwrap();
        assert_clean(&r, &format!("{geo:?}"));
        assert!(r.engine.io_waits > 50, "{r:?}");
    }
}

#[test]
fn read_errors_are_retried_on_another_copy_and_repaired() {
    for geo in shapes() {
        let mut c = SimConfig::new(geo.clone());
        c.read_pct = 70;
        c.ios = 5000;
        c.faults = Faults {
            read_error_leg: Some((1, 30)),
            inline_pct: 10,
            ..Faults::default()
        };
        let r = run(&c).unwrap();
        assert_clean(&r, &format!("{geo:?}"));
        assert!(r.engine.read_retries > 100, "{r:?}");
        // Every failed copy was rewritten from a good one and stays in the mirror.
        assert!(r.engine.read_repairs >= r.engine.read_retries, "{r:?}");
        assert!(r.legs_failed.is_empty(), "{r:?}");
    }
}

#[test]
fn reads_go_direct_when_nothing_waits_and_a_failed_one_is_still_repaired() {
    for geo in shapes() {
        let mut c = SimConfig::new(geo.clone());
        c.read_pct = 70;
        c.ios = 5000;
        c.max_io_blocks = 8; // mostly inside one 16-block chunk
        c.faults = Faults {
            read_error_leg: Some((0, 20)),
            ..Faults::default()
        };
        let r = run(&c).unwrap();
        assert_clean(&r, &format!("{geo:?}"));
        // A read served direct never takes a slot (one that failed does, for its retry).
        let direct = r.engine.parents_submitted - r.engine.parents_admitted;
        assert!(direct > c.ios / 4, "{geo:?}: only {direct} reads went direct: {r:?}");
        assert!(r.engine.read_retries > 50, "{r:?}");
        assert!(r.engine.read_repairs >= r.engine.read_retries, "{r:?}");
        assert!(r.legs_failed.is_empty(), "{r:?}");
    }
}

/// Writes inside one chunk go direct (their state kept beside the host I/O, not in a slot);
/// whatever intervenes while one issues (an empty leg pool, "no memory", the bitmap) hands it
/// over to its slot where it stopped. Every byte is still checked, every leg compared, every
/// context and shared I/O back in its pool.
#[test]
fn writes_go_direct_and_hand_over_to_a_slot_when_something_intervenes() {
    let mut handovers = 0;
    for geo in shapes() {
        for seed in 1..=3 {
            // Plenty of everything: nearly every one-chunk write goes direct and stays so.
            let mut c = SimConfig::new(geo.clone());
            c.seed = seed;
            c.read_pct = 30;
            c.ios = 3000;
            c.max_io_blocks = 8;
            let r = run(&c).unwrap();
            let what = format!("{geo:?} seed {seed}");
            assert_clean(&r, &what);
            assert!(r.engine.direct_writes > 3000 / 4, "{what}: {r:?}");
            assert_eq!(r.engine.direct_handovers, 0, "{what}: {r:?}");
            // Tiny pools, refusals, inline completions, a leg failing some writes, the bitmap.
            let mut c = tight(geo.clone(), Strategy::Immediate, seed, 1, 16);
            c.read_pct = 30;
            c.max_io_blocks = 8;
            c.faults = Faults {
                nomem_pct: 20,
                inline_pct: 20,
                ..Faults::default()
            };
            let r = run(&c).unwrap();
            assert_clean(&r, &format!("{what} tight"));
            assert!(r.engine.direct_writes > 0, "{what} tight: {r:?}");
            handovers += r.engine.direct_handovers;
            let mut c = with_bitmap(geo.clone(), seed);
            c.max_io_blocks = 8;
            c.faults.error_leg = Some((1, 2));
            let r = run(&c).unwrap();
            assert!(r.mismatches == 0 && !r.stalled, "{what} bitmap: {r:?}");
            assert_eq!(r.legs_failed, vec![1], "{what} bitmap: {r:?}");
            assert!(
                r.engine.direct_handovers > 0,
                "{what} bitmap: the bitmap never held one: {r:?}"
            );
            assert_eq!(r.engine.intent_starts, r.engine.intent_ends, "{what} bitmap: {r:?}");
        }
    }
    assert!(
        handovers > 100,
        "pools were never dry under a direct write: {handovers}"
    );
}

#[test]
fn a_leg_failing_every_io_is_dropped_and_reads_still_succeed() {
    let mut c = SimConfig::new(spec(Level::Raid10, Some("n2"), 4));
    c.read_pct = 50;
    c.ios = 5000;
    c.faults = Faults {
        error_leg: Some((2, 100)),
        ..Faults::default()
    };
    let r = run(&c).unwrap();
    assert_clean(&r, "dead leg");
    assert_eq!(r.legs_failed, vec![2]);
}

#[test]
fn no_child_is_submitted_twice_and_none_is_skipped() {
    for geo in shapes() {
        let mut c = tight(geo.clone(), Strategy::Immediate, 3, 1, 16);
        c.read_pct = 0;
        c.faults = Faults {
            nomem_pct: 20,
            inline_pct: 20,
            ..Faults::default()
        };
        c.log_submissions = true;
        let r = run(&c).unwrap();
        assert_clean(&r, &format!("{geo:?}"));
        let mut seen = HashSet::new();
        for s in &r.submissions {
            assert!(seen.insert(*s), "{geo:?}: child {s:?} submitted twice");
        }
        // Every write id reached every copy of each of its segments.
        let copies = spdk_mirror::placement::Geometry::new(&geo).unwrap().copies() as usize;
        let mut per_write = std::collections::HashMap::<u64, HashSet<u32>>::new();
        for (id, seg, _) in &r.submissions {
            per_write.entry(*id).or_default().insert(*seg);
        }
        assert_eq!(per_write.len() as u64, r.submitted);
        let expected: usize = per_write.values().map(|segs| segs.len() * copies).sum();
        assert_eq!(r.submissions.len(), expected, "{geo:?}: a copy was skipped");
    }
}

#[test]
fn same_seed_same_run() {
    let mut c = SimConfig::new(spec(Level::Raid10, Some("f2"), 4));
    c.ios = 5000;
    c.faults.inline_pct = 10;
    let a = run(&c).unwrap();
    let b = run(&c).unwrap();
    assert_eq!(
        (a.sim_time_us, a.engine.children_submitted),
        (b.sim_time_us, b.engine.children_submitted)
    );
    c.seed = 2;
    let d = run(&c).unwrap();
    assert_ne!(a.sim_time_us, d.sim_time_us);
}

#[test]
fn bad_simulation_parameters_name_the_field() {
    let mut c = SimConfig::new(spec(Level::Raid1, None, 2));
    c.io_pool = 4;
    c.max_parents = Some(4);
    assert!(run(&c).unwrap_err().to_string().starts_with("io_pool:"));
    c.max_parents = None;
    c.leg_pool = 0;
    assert!(run(&c).unwrap_err().to_string().starts_with("leg_pool:"));
    c.leg_pool = 1;
    c.fail_leg = Some(2);
    assert!(run(&c).unwrap_err().to_string().starts_with("fail_leg:"));
}

/// Random interleavings of completions, inline completions, no-memory answers, read errors, a
/// stalled leg and a leg dying mid-run: whatever happens, every host I/O completes exactly once
/// (the workload panics on a second completion), nothing stalls, every read that succeeds
/// returns the last write, and every child context and shared I/O is back at the end.
#[test]
fn property_every_parent_completes_once_and_nothing_leaks() {
    let shapes = shapes();
    for seed in 0..400u64 {
        let mut pick = spdk_mirror::sim::rng::Rng::new(seed * 7919);
        let geo = shapes[pick.below(shapes.len() as u64) as usize].clone();
        let legs = geo.legs;
        let mut c = SimConfig::new(geo.clone());
        c.seed = seed;
        c.ios = 1500;
        c.qd = 1 + pick.below(32) as u32;
        c.leg_pool = 1 + pick.below(4) as u32;
        c.max_parents = Some(1 + pick.below(c.qd as u64) as u32);
        c.io_pool = c.max_parents.unwrap() + 1 + pick.below(8) as u32;
        c.read_pct = pick.below(101) as u32;
        c.max_io_blocks = 1 + pick.below(48);
        let bad = pick.below(legs as u64) as u32;
        c.faults = Faults {
            inline_pct: pick.below(50) as u32,
            nomem_pct: pick.below(30) as u32,
            read_error_leg: Some((bad, pick.below(30) as u32)),
            stall: Some(((bad + 1) % legs, pick.below(2_000_000), pick.below(500_000))),
            ..Faults::default()
        };
        if pick.percent(50) {
            c.fail_leg = Some((bad + 1) % legs);
            c.fail_after = Some(pick.below(c.ios));
        }
        let what = format!("seed {seed}: {c:?}");
        let r = run(&c).unwrap();
        assert!(!r.stalled, "{what}: {r:?}");
        assert_eq!(r.completed, r.submitted, "{what}");
        assert_eq!(r.engine.parents_completed, r.submitted, "{what}");
        assert_eq!(r.mismatches, 0, "{what}: {r:?}");
        assert!(r.pools_full, "{what}: leaked: {r:?}");
        assert_eq!(r.engine.children_submitted, r.engine.children_completed, "{what}");
    }
}

fn reads_by_policy(policy: spdk_mirror::engine::ReadPolicy) -> Vec<u64> {
    let mut c = SimConfig::new(spec(Level::Raid1, None, 3));
    c.read_pct = 100;
    c.ios = 6000;
    c.qd = 16;
    c.read_policy = policy;
    let r = run(&c).unwrap();
    assert_clean(&r, policy.name());
    r.leg_reads
}

#[test]
fn read_policies_spread_reads_as_they_say() {
    use spdk_mirror::engine::ReadPolicy;
    // Round robin: copies in turn, to within one.
    let rr = reads_by_policy(ReadPolicy::RoundRobin);
    assert!(rr.iter().max().unwrap() - rr.iter().min().unwrap() <= 1, "{rr:?}");
    // Least outstanding: every leg used, none starved.
    let lo = reads_by_policy(ReadPolicy::LeastOutstanding);
    assert!(lo.iter().all(|&n| n > 6000 / 6), "{lo:?}");
    // Preferred: nearly everything from the chosen leg while it is not far busier.
    let pref = reads_by_policy(ReadPolicy::Preferred(2));
    assert!(pref[2] * 10 >= 6000 * 9, "{pref:?}");
}

fn with_bitmap(geo: GeometrySpec, seed: u64) -> SimConfig {
    let mut c = SimConfig::new(geo);
    c.seed = seed;
    c.ios = 4000;
    c.read_pct = 20;
    c.qd = 32;
    c.bitmap = Some(spdk_mirror::sim::BitmapConfig {
        region_blocks: 64,
        flush_latency_ns: 30_000,
        idle_clear_ns: 200_000,
    });
    c
}

/// md's promise: after a crash, only regions the bitmap made durably dirty can differ between
/// legs, so resyncing them is enough. Without the bitmap the same crashes leave divergence
/// nobody knows about (which proves the check can fail).
#[test]
fn after_a_crash_every_divergent_block_is_in_a_dirty_region() {
    let mut divergent_seen = 0;
    let mut unknown_without_bitmap = 0;
    for geo in shapes() {
        for seed in 1..=8u64 {
            let mut c = with_bitmap(geo.clone(), seed);
            c.crash_after = Some(300 + seed * 300);
            let r = run(&c).unwrap();
            let crash = r.crash.clone().unwrap_or_else(|| panic!("no crash: {r:?}"));
            assert_eq!(crash.uncovered_blocks, 0, "{geo:?} seed {seed}: {r:?}");
            assert!(crash.resync_blocks >= crash.divergent_blocks);
            divergent_seen += crash.divergent_blocks;
            c.bitmap = None;
            let r = run(&c).unwrap();
            unknown_without_bitmap += r.crash.unwrap().uncovered_blocks;
        }
    }
    assert!(divergent_seen > 0, "crashes mid-write should leave some legs different");
    assert!(unknown_without_bitmap > 0);
}

#[test]
fn the_bitmap_costs_a_flush_only_for_clean_regions() {
    let r = run(&with_bitmap(spec(Level::Raid10, Some("n2"), 4), 3)).unwrap();
    assert_clean(&r, "bitmap run");
    let b = r.bitmap.expect("bitmap report");
    assert!(
        b.free_rides > b.waits,
        "most writes should find their region already dirty: {b:?}"
    );
    assert!(b.flushes < r.engine.intent_starts / 2, "{b:?}");
    assert!(b.cleared > 0, "idle regions are cleared lazily: {b:?}");
    assert!(b.dirty_regions < b.regions, "{b:?}");
}
