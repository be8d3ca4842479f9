//! Issue #12: a leg fails while writes are in flight and the mirror crashes at a random point
//! after; at restart no acknowledged write is missing from the copies assembly trusts.
//!
//! The simulator models each leg's superblock and bitmap, written by one metadata writer whose
//! parts land on the legs one by one (`sim::metadata`), the SPDK glue's rule that no host I/O is
//! acknowledged while a leg failure is not in the superblocks (`sim::workload::deliver`), and the
//! restart as examine decides it, with the real `superblock::choose_legs` (`sim::assembly`).

use spdk_mirror::placement::{GeometrySpec, Level, Raid10Layout};
use spdk_mirror::sim::rng::Rng;
use spdk_mirror::sim::{run, BitmapConfig, CrashPoint, RestartReport, SimConfig, SimReport};

/// Scenarios per geometry (about 3 ms each in release).
const SEEDS: u64 = 500;

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

fn shapes() -> Vec<GeometrySpec> {
    vec![
        spec(Level::Raid1, None, 2),
        spec(Level::Raid1, None, 3),
        spec(Level::Raid10, Some("n2"), 4),
        spec(Level::Raid10, Some("f2"), 4),
        spec(Level::Raid10, Some("o2"), 3),
    ]
}

/// One seeded scenario. A random leg fails while writes are in flight: either its device dies
/// after a random number of completions, or it gets injected write errors from the start (and
/// stays readable, as a leg with a flaky path would be). The crash comes a random number of
/// acknowledgements, or a random time (up to a few metadata writes of 30-60 us), after the mirror
/// notices.
fn scenario(geo: &GeometrySpec, seed: u64, hold: bool) -> SimConfig {
    let mut pick = Rng::new(seed.wrapping_mul(0x9E37_79B9) ^ u64::from(geo.legs) << 40);
    let mut c = SimConfig::new(geo.clone());
    c.seed = seed;
    c.ios = 1_000_000; // an upper bound: the crash comes first
    c.read_pct = 30;
    c.qd = 32;
    c.bitmap = Some(BitmapConfig {
        region_blocks: 64,
        flush_latency_ns: 30_000,
        idle_clear_ns: 200_000,
    });
    c.superblock = true;
    c.hold_acks_until_failure_recorded = hold;
    let leg = pick.below(geo.legs as u64) as u32;
    if pick.percent(50) {
        c.fail_leg = Some(leg);
        c.fail_after = Some(50 + pick.below(1500));
    } else {
        c.faults.error_leg = Some((leg, 1 + pick.below(3) as u32));
    }
    c.crash_after_failure = Some(if pick.percent(50) {
        CrashPoint::Acks(pick.below(64))
    } else {
        CrashPoint::Ns(pick.below(150_000))
    });
    c
}

fn restart_of<'a>(r: &'a SimReport, what: &str) -> &'a RestartReport {
    assert!(!r.stalled, "{what}: stalled: {r:?}");
    r.restart
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no crash after the failure: {r:?}"))
}

/// How often the dangerous situations came up, so a pass is not vacuous.
#[derive(Debug, Default)]
struct Coverage {
    runs: u64,
    /// Crashed before the failure was in the superblocks.
    unrecorded: u64,
    /// Crashed with completions held back.
    held: u64,
    /// Assembly trusted the leg that had failed (its superblock looked as new as the others').
    failed_leg_trusted: u64,
    /// The trusted legs did not cover every block: the crash came while the write recording the
    /// failure had reached some working legs and not others, so the rest look stale and examine
    /// waits for them. No data is served, so none is wrong; counted (it is an availability
    /// limit of assembly), not asserted.
    not_assembled: u64,
    /// Acknowledgements between the failure and the crash.
    acked_after_failure: u64,
}

impl Coverage {
    fn add(&mut self, s: &RestartReport) {
        self.runs += 1;
        self.unrecorded += u64::from(!s.failure_recorded);
        self.held += u64::from(s.acks_held > 0);
        self.failed_leg_trusted += u64::from(s.failed_leg_trusted);
        self.not_assembled += u64::from(!s.assembles);
        self.acked_after_failure += u64::from(s.acked_since_failure > 0);
    }
}

/// The property, with the glue's rule: over every geometry and seed, the crash loses no
/// acknowledged write, although it often lands before the failure is recorded and assembly
/// then trusts the failed leg.
#[test]
fn no_acknowledged_write_is_lost_when_a_leg_fails_and_the_mirror_crashes() {
    for geo in shapes() {
        let mut cov = Coverage::default();
        for seed in 1..=SEEDS {
            let what = format!("{geo:?} seed {seed}");
            let r = run(&scenario(&geo, seed, true)).unwrap();
            let s = restart_of(&r, &what);
            assert_eq!(s.rejected, 0, "{what}: a superblock the module would reject: {r:?}");
            assert!(!s.trusted.is_empty(), "{what}: assembly trusted no leg: {r:?}");
            assert_eq!(s.lost_acked_blocks, 0, "{what}: an acknowledged write is lost: {r:?}");
            assert_eq!(r.mismatches, 0, "{what}: a read returned stale data: {r:?}");
            assert!(
                s.writes_in_flight_at_failure > 0,
                "{what}: no write in flight at the failure"
            );
            cov.add(s);
        }
        eprintln!("{geo:?}: {cov:?}");
        assert!(
            cov.unrecorded * 10 > cov.runs,
            "{geo:?}: too few crashes before the failure was recorded: {cov:?}"
        );
        assert!(cov.held > 0 && cov.acked_after_failure > 0, "{geo:?}: {cov:?}");
        assert!(
            cov.failed_leg_trusted > 0,
            "{geo:?}: the failed leg was never trusted: {cov:?}"
        );
    }
}

/// The same scenarios with acknowledgements not held (the defect this rule fixed): on every
/// geometry some crash loses an acknowledged write — the failed leg's superblock looks as new
/// as the others', assembly trusts it, and resync copies from it — so the property above can
/// fail. Removing the hold from the simulator's `deliver` by hand makes the test above fail the
/// same way (checked when it was written: at raid1 over 2 legs, seed 4, 69 blocks lost).
#[test]
fn without_the_hold_an_acknowledged_write_is_lost() {
    for geo in shapes() {
        let mut lost_here = Vec::new();
        for seed in 1..=SEEDS / 3 {
            let r = run(&scenario(&geo, seed, false)).unwrap();
            let s = restart_of(&r, &format!("{geo:?} seed {seed} without the hold"));
            if s.lost_acked_blocks > 0 {
                lost_here.push((seed, s.lost_acked_blocks));
            }
        }
        eprintln!("{geo:?} without the hold: (seed, blocks lost) {lost_here:?}");
        assert!(
            !lost_here.is_empty(),
            "{geo:?}: no crash lost an acknowledged write without the hold"
        );
    }
}

#[test]
fn same_seed_same_crash() {
    let c = scenario(&spec(Level::Raid10, Some("n2"), 4), 7, true);
    let (a, b) = (run(&c).unwrap(), run(&c).unwrap());
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

#[test]
fn superblocks_need_the_bitmap_and_a_whole_kib_region() {
    let mut c = scenario(&spec(Level::Raid1, None, 2), 1, true);
    c.bitmap = None;
    assert_eq!(
        run(&c).unwrap_err().to_string(),
        "superblock: needs the bitmap (they are written together)"
    );
    let mut c = scenario(&spec(Level::Raid1, None, 2), 1, true);
    c.bitmap.as_mut().unwrap().region_blocks = 3;
    assert!(run(&c)
        .unwrap_err()
        .to_string()
        .starts_with("bitmap region: 1536 bytes"));
}
