//! The simulator's metadata writer, after the SPDK glue's (`src/spdk/persist.rs`): one write at
//! a time carries the superblock and the bitmap image to every working leg, each leg's part
//! landing after its own latency. A leg failure bumps `fail_gen`; `fail_gen_durable` catches up
//! only when a write that started after the failure has finished on every leg it went to. Each
//! leg keeps what last landed on it, so a crash leaves the legs' metadata as a real one would,
//! for assembly (`super::assembly`) to read.

use super::rng::Rng;
use crate::bitmap::Bits;
use crate::placement::Geometry;
use crate::superblock::{LegEntry, LegRole, MetaLayout, Superblock};

/// What one leg's metadata area holds.
#[derive(Debug, Clone)]
pub struct OnDisk {
    pub sb: Superblock,
    pub bits: Bits,
}

/// The one metadata write in flight.
struct Op {
    /// The leg failures this write records (`fail_gen` read before the leg table was
    /// reconciled, as `persist::start` does).
    fail_gen: u64,
    took_flush: bool,
    sb: Superblock,
    image: Bits,
    /// Legs whose part has not landed yet.
    pending: u32,
    /// Legs whose part will fail (an injected write error), drawn at issue.
    doomed: u32,
    /// Legs whose part failed.
    failed: u32,
}

/// A metadata write finished on every leg it went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpDone {
    /// It carried a bitmap image taken with `take_flush`: `flush_done` is due.
    pub took_flush: bool,
    /// Legs whose part failed: the mirror fails them (the writer already counted them).
    pub failed_legs: u32,
}

pub struct MetaWriter {
    legs: u32,
    /// The superblock in memory: what the next write carries after reconciling.
    sb: Superblock,
    disks: Vec<OnDisk>,
    /// Legs the mirror has failed (the glue's `Leg::failed`).
    failed: u32,
    fail_gen: u64,
    fail_gen_durable: u64,
    /// Something besides the bitmap wants writing (the glue's `writer.again`).
    again: bool,
    op: Option<Op>,
    latency_ns: u64,
    error_leg: Option<(u32, u32)>,
    rng: Rng,
    pub writes: u64,
}

impl MetaWriter {
    /// A freshly created mirror: every leg holds `sb` (all legs active) and a clean bitmap of
    /// `regions` bits. One leg's part of a write takes `latency_ns` to twice that; `error_leg`
    /// (leg, percent) fails parts on that leg as it fails its data I/O.
    pub fn new(sb: Superblock, regions: usize, latency_ns: u64, error_leg: Option<(u32, u32)>, seed: u64) -> Self {
        let legs = sb.legs.len() as u32;
        let disks = (0..legs)
            .map(|leg| OnDisk {
                sb: Superblock {
                    this_slot: leg,
                    ..sb.clone()
                },
                bits: Bits::new(regions),
            })
            .collect();
        MetaWriter {
            legs,
            sb,
            disks,
            failed: 0,
            fail_gen: 0,
            fail_gen_durable: 0,
            again: false,
            op: None,
            latency_ns,
            error_leg,
            // Its own stream, so metadata timing does not shift the legs' data timing.
            rng: Rng::new(seed ^ 0x5EB0_0C4D_0000_0001),
            writes: 0,
        }
    }

    /// What each leg's metadata area holds now.
    pub fn disks(&self) -> &[OnDisk] {
        &self.disks
    }

    /// The mirror fails `leg` (the glue's `Mirror::fail_leg`): the superblocks must say so
    /// before any host I/O is acknowledged. Returns whether it was newly failed.
    pub fn fail_leg(&mut self, leg: u32) -> bool {
        if self.failed & (1 << leg) != 0 {
            return false;
        }
        self.failed |= 1 << leg;
        self.fail_gen += 1;
        self.again = true;
        true
    }

    /// A leg failed and the superblocks on the working legs do not say so yet.
    pub fn failure_unrecorded(&self) -> bool {
        self.fail_gen != self.fail_gen_durable
    }

    /// Whether a write should start now: none is in flight and the bitmap or the leg table
    /// has something to write.
    pub fn wants_write(&self, bitmap_needs_flush: bool) -> bool {
        self.op.is_none() && (self.again || bitmap_needs_flush)
    }

    /// Starts a write of `image` (the bitmap; `took_flush` if `take_flush` handed it out) and
    /// the reconciled superblock to every working leg. Returns each leg's latency; when it
    /// went to no leg, `take_done` has it finished at once.
    pub fn start(&mut self, image: Bits, took_flush: bool) -> Vec<(u32, u64)> {
        debug_assert!(self.op.is_none(), "one metadata write at a time");
        self.again = false;
        self.writes += 1;
        let fail_gen = self.fail_gen;
        self.reconcile();
        let mut op = Op {
            fail_gen,
            took_flush,
            sb: self.sb.clone(),
            image,
            pending: 0,
            doomed: 0,
            failed: 0,
        };
        let mut landings = Vec::new();
        for leg in (0..self.legs).filter(|l| self.failed & (1 << l) == 0) {
            op.pending |= 1 << leg;
            if matches!(self.error_leg, Some((l, pct)) if l == leg && self.rng.percent(pct)) {
                op.doomed |= 1 << leg;
            }
            landings.push((leg, self.latency_ns + self.rng.below(self.latency_ns + 1)));
        }
        self.op = Some(op);
        landings
    }

    /// `leg`'s part landed; `device_ok`: the leg's device was there to take it.
    pub fn landed(&mut self, leg: u32, device_ok: bool) {
        let op = self.op.as_mut().expect("a metadata write in flight");
        op.pending &= !(1 << leg);
        if device_ok && op.doomed & (1 << leg) == 0 {
            self.disks[leg as usize] = OnDisk {
                sb: Superblock {
                    this_slot: leg,
                    ..op.sb.clone()
                },
                bits: op.image.clone(),
            };
        } else {
            op.failed |= 1 << leg;
        }
    }

    /// The write in flight, once every part is back (`persist::op_put`): legs whose part
    /// failed are failed, and the failures it recorded are durable.
    pub fn take_done(&mut self) -> Option<OpDone> {
        if self.op.as_ref()?.pending != 0 {
            return None;
        }
        let op = self.op.take().expect("checked above");
        for leg in (0..self.legs).filter(|l| op.failed & (1 << l) != 0) {
            self.fail_leg(leg);
        }
        // As the glue does: even if every part failed, nothing is left to protect.
        self.fail_gen_durable = self.fail_gen_durable.max(op.fail_gen);
        Some(OpDone {
            took_flush: op.took_flush,
            failed_legs: op.failed,
        })
    }

    /// Brings the leg table in line with the legs; bumps `events` if anything changed
    /// (`persist::reconcile`, for the one change the simulator makes: a leg failing).
    fn reconcile(&mut self) {
        let mut changed = false;
        for (i, e) in self.sb.legs.iter_mut().enumerate() {
            if self.failed & (1 << i) != 0 && matches!(e.role, LegRole::Active | LegRole::Rebuilding) {
                e.role = LegRole::Failed;
                e.failed_at_events = self.sb.events;
                changed = true;
            }
        }
        if changed {
            self.sb.events += 1;
        }
    }
}

/// The superblock a new mirror of this geometry writes on every leg, laid out as the create RPC
/// lays it out.
pub fn initial_superblock(geo: &Geometry, region_kb: u32, layout: &MetaLayout) -> Superblock {
    let bs = geo.block_size();
    Superblock {
        mirror_uuid: [0x5A; 16],
        name: "sim".into(),
        level: geo.level(),
        // RAID1 is `n<legs>`, as the glue stores it.
        layout: geo.layout(),
        chunk_kb: (geo.chunk_blocks() * bs as u64 / 1024) as u32,
        block_size: bs,
        data_offset_blocks: layout.data_offset_blocks,
        leg_data_blocks: geo.leg_blocks(),
        events: 1,
        this_slot: 0,
        bitmap_region_kb: region_kb,
        bitmap_offset_blocks: layout.bitmap_offset_blocks,
        bitmap_blocks: layout.bitmap_blocks,
        legs: (0..geo.legs())
            .map(|leg| LegEntry {
                uuid: [leg as u8 + 1; 16],
                role: LegRole::Active,
                failed_at_events: 0,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{GeometrySpec, Level};

    fn writer() -> MetaWriter {
        let geo = Geometry::new(&GeometrySpec {
            level: Level::Raid1,
            layout: None,
            legs: 3,
            chunk_bytes: None,
            block_size: 512,
            leg_blocks: 4096,
        })
        .unwrap();
        let layout = MetaLayout::new(512, geo.data_blocks(), 32).unwrap();
        MetaWriter::new(initial_superblock(&geo, 32, &layout), 64, 1000, None, 1)
    }

    fn land_all(w: &mut MetaWriter, landings: &[(u32, u64)]) -> OpDone {
        for &(leg, _) in landings {
            assert!(w.take_done().is_none(), "done before every leg landed");
            w.landed(leg, true);
        }
        w.take_done().expect("done once every leg landed")
    }

    #[test]
    fn a_failure_is_recorded_only_by_a_write_that_started_after_it() {
        let mut w = writer();
        assert!(initial_superblock_valid(&w));
        let first = w.start(Bits::new(64), false);
        assert_eq!(first.len(), 3);
        assert!(w.fail_leg(2) && !w.fail_leg(2), "a leg fails once");
        assert!(w.failure_unrecorded());
        land_all(&mut w, &first);
        assert!(w.failure_unrecorded(), "that write began before the failure");
        assert!(w.wants_write(false));
        let second = w.start(Bits::new(64), false);
        assert_eq!(
            second.iter().map(|l| l.0).collect::<Vec<_>>(),
            vec![0, 1],
            "not to the failed leg"
        );
        w.landed(0, true);
        assert_eq!(w.disks()[0].sb.events, 2, "leg 0 has the record");
        assert_eq!(w.disks()[1].sb.events, 1, "leg 1 not yet");
        assert!(w.failure_unrecorded(), "not durable until every leg has it");
        w.landed(1, true);
        assert_eq!(w.take_done().map(|d| d.failed_legs), Some(0));
        assert!(!w.failure_unrecorded());
        let sb = &w.disks()[1].sb;
        assert_eq!((sb.legs[2].role, sb.legs[2].failed_at_events), (LegRole::Failed, 1));
        assert_eq!(w.disks()[2].sb.events, 1, "the failed leg keeps its old superblock");
    }

    #[test]
    fn a_leg_whose_part_fails_is_failed_and_recorded_by_the_next_write() {
        let mut w = writer();
        let first = w.start(Bits::new(64), false);
        w.landed(0, true);
        w.landed(1, false);
        w.landed(2, true);
        let done = w.take_done().unwrap();
        assert_eq!(done.failed_legs, 0b10);
        assert!(w.failure_unrecorded() && w.wants_write(false));
        assert_eq!(first.len(), 3);
        let second = w.start(Bits::new(64), false);
        land_all(&mut w, &second);
        assert!(!w.failure_unrecorded());
        assert_eq!(w.disks()[0].sb.legs[1].role, LegRole::Failed);
    }

    fn initial_superblock_valid(w: &MetaWriter) -> bool {
        w.disks().iter().all(|d| d.sb.geometry().is_ok())
    }
}
