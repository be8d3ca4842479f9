use super::tunables::{bad_tunable, TUNABLES_CRC};
use super::*;
use crate::engine::ReadPolicy;

fn sample() -> Superblock {
    Superblock {
        mirror_uuid: [7; 16],
        name: "mir0".into(),
        level: Level::Raid10,
        layout: Raid10Layout {
            near: 1,
            far: 2,
            offset: true,
        },
        chunk_kb: 64,
        block_size: 4096,
        data_offset_blocks: 256,
        leg_data_blocks: 1 << 20,
        events: 42,
        this_slot: 2,
        bitmap_region_kb: 65536,
        bitmap_offset_blocks: 1,
        bitmap_blocks: 1,
        legs: (0..4)
            .map(|i| LegEntry {
                uuid: [i as u8; 16],
                role: if i == 3 { LegRole::Failed } else { LegRole::Active },
                failed_at_events: if i == 3 { 40 } else { 0 },
            })
            .collect(),
    }
}

/// A superblock for any level and layout, its metadata fields as the geometry derives them
/// when it builds (else left as they are: the geometry is refused first).
fn shaped(level: Level, layout: Raid10Layout, legs: usize, chunk_kb: u32, bs: u32) -> Superblock {
    let mut sb = Superblock {
        level,
        layout,
        chunk_kb,
        block_size: bs,
        this_slot: 0,
        legs: (0..legs)
            .map(|i| LegEntry {
                uuid: [i as u8 + 1; 16],
                role: LegRole::Active,
                failed_at_events: 0,
            })
            .collect(),
        ..sample()
    };
    sb.leg_data_blocks = 5000;
    let spec = GeometrySpec {
        level,
        layout: (level == Level::Raid10).then_some(layout),
        legs: legs as u32,
        chunk_bytes: Some(chunk_kb as u64 * 1024),
        block_size: bs,
        leg_blocks: sb.leg_data_blocks,
    };
    if let Ok(geo) = Geometry::new(&spec) {
        let meta = MetaLayout::new(bs, geo.data_blocks(), sb.bitmap_region_kb).unwrap();
        sb.data_offset_blocks = meta.data_offset_blocks;
        sb.bitmap_offset_blocks = meta.bitmap_offset_blocks;
        sb.bitmap_blocks = meta.bitmap_blocks;
    }
    sb
}

/// Encodes `sb` as it is, checks nothing, and decodes it (the checksum is right).
fn through_disk(sb: &Superblock) -> Result<Superblock, SuperblockError> {
    let mut b = vec![0u8; SUPERBLOCK_BYTES];
    let good = sample().encode().unwrap();
    b.copy_from_slice(&good);
    b[32..96].fill(0);
    let n = sb.name.len().min(NAME_BYTES);
    b[32..32 + n].copy_from_slice(&sb.name.as_bytes()[..n]);
    b[96] = if sb.level == Level::Raid1 { 1 } else { 10 };
    (b[97], b[98], b[99]) = (sb.layout.near as u8, sb.layout.far as u8, sb.layout.offset as u8);
    put32(&mut b, 100, sb.chunk_kb);
    put32(&mut b, 104, sb.block_size);
    put32(&mut b, 108, sb.legs.len() as u32);
    put64(&mut b, 112, sb.data_offset_blocks);
    put64(&mut b, 120, sb.leg_data_blocks);
    put64(&mut b, 128, sb.events);
    put32(&mut b, 136, sb.this_slot);
    put32(&mut b, 140, sb.bitmap_region_kb);
    put64(&mut b, 144, sb.bitmap_offset_blocks);
    put64(&mut b, 152, sb.bitmap_blocks);
    b[LEG_TABLE_OFFSET..CRC_OFFSET].fill(0);
    for (i, leg) in sb.legs.iter().enumerate().take(MAX_LEGS) {
        let o = LEG_TABLE_OFFSET + i * LEG_ENTRY_BYTES;
        b[o..o + 16].copy_from_slice(&leg.uuid);
        b[o + 16] = leg.role as u8;
        put64(&mut b, o + 24, leg.failed_at_events);
    }
    let crc = crc32c(&b[..CRC_OFFSET]);
    put32(&mut b, CRC_OFFSET, crc);
    Superblock::decode(&b)
}

#[test]
fn crc32c_known_answer() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
}

#[test]
fn round_trip() {
    let sb = sample();
    let bytes = sb.encode().unwrap();
    assert_eq!(bytes.len(), SUPERBLOCK_BYTES);
    assert_eq!(Superblock::decode(&bytes).unwrap(), sb);
    assert_eq!(through_disk(&sb).unwrap(), sb);
}

#[test]
fn every_corruption_is_caught() {
    let bytes = sample().encode().unwrap();
    for i in [0, 9, 17, 40, 97, 130, 170, 2000, CRC_OFFSET] {
        let mut bad = bytes.clone();
        bad[i] ^= 0x10;
        assert!(Superblock::decode(&bad).is_err(), "flip at byte {i} went unnoticed");
    }
    assert_eq!(
        Superblock::decode(&vec![0; SUPERBLOCK_BYTES]),
        Err(SuperblockError::Magic)
    );
    assert_eq!(Superblock::decode(&bytes[..100]), Err(SuperblockError::Short(100)));
}

#[test]
fn decode_refuses_what_the_rpc_would_not_create() {
    let refused = |f: &dyn Fn(&mut Superblock), what: &str| {
        let mut sb = sample();
        f(&mut sb);
        let e = through_disk(&sb).expect_err(what).to_string();
        assert!(e.contains(what), "{what}: got '{e}'");
    };
    refused(&|s| s.name.clear(), "name is empty");
    refused(&|s| s.layout.near = 2, "mixes near and far");
    refused(&|s| s.layout.far = 1, "at least 2 copies");
    refused(&|s| s.chunk_kb = 0, "chunk_kb");
    refused(&|s| s.chunk_kb = 96, "chunk_kb");
    refused(&|s| s.chunk_kb = 1 << 21, "chunk_kb");
    refused(&|s| s.bitmap_region_kb = 3, "bitmap_region_kb");
    refused(&|s| s.bitmap_region_kb = 1 << 31, "bitmap_region_kb");
    refused(&|s| s.data_offset_blocks = 255, "data_offset_blocks");
    refused(&|s| s.bitmap_offset_blocks = 0, "bitmap_offset_blocks");
    refused(&|s| s.leg_data_blocks = u64::MAX, "leg_blocks");
    refused(&|s| s.legs[1].failed_at_events = 43, "failed_at_events");
    refused(&|s| s.this_slot = 4, "this_slot");
    refused(&|s| s.block_size = 1000, "block_size");
    refused(
        &|s| {
            s.legs.truncate(1);
            s.this_slot = 0;
        },
        "copies but there are only 1 legs",
    );
    // On disk a name ends at its first NUL; in memory one cannot hold one.
    let nul = Superblock {
        name: "a\0b".into(),
        ..sample()
    };
    assert_eq!(nul.geometry().unwrap_err(), SuperblockError::NameNotUtf8);
    refused(
        &|s| {
            s.level = Level::Raid1;
            s.chunk_kb = 0;
        },
        "layout",
    );
}

#[test]
fn decode_refuses_bad_bytes_the_struct_cannot_hold() {
    let good = sample().encode().unwrap();
    let patched = |at: usize, v: &[u8]| {
        let mut b = good.clone();
        b[at..at + v.len()].copy_from_slice(v);
        let crc = crc32c(&b[..CRC_OFFSET]);
        put32(&mut b, CRC_OFFSET, crc);
        Superblock::decode(&b)
    };
    assert_eq!(patched(32, &[0xff, 0xfe]), Err(SuperblockError::NameNotUtf8));
    assert_eq!(patched(32, &[0]), Err(SuperblockError::NameEmpty));
    assert_eq!(
        patched(12, &[0, 2, 0, 0]),
        Err(SuperblockError::BadField("header_len", 512))
    );
    assert_eq!(patched(99, &[3]), Err(SuperblockError::BadField("flags", 3)));
    assert_eq!(patched(96, &[2]), Err(SuperblockError::BadField("level", 2)));
    assert_eq!(patched(108, &[0, 0, 0, 0]), Err(SuperblockError::BadField("legs", 0)));
    assert_eq!(patched(108, &[33, 0, 0, 0]), Err(SuperblockError::BadField("legs", 33)));
    assert_eq!(
        patched(LEG_TABLE_OFFSET + 16, &[9]),
        Err(SuperblockError::BadField("role", 9))
    );
}

#[test]
fn decode_and_the_rpc_agree_on_every_small_layout() {
    for bs in [512, 4096] {
        for legs in 1..=8usize {
            for near in 0..=4 {
                for far in 0..=4 {
                    for offset in [false, true] {
                        let layout = Raid10Layout { near, far, offset };
                        let sb = shaped(Level::Raid10, layout, legs, 64, bs);
                        let decoded = through_disk(&sb).is_ok();
                        // The RPC's path: a layout name, parsed, then Geometry::new.
                        let rpc = Raid10Layout::parse(&layout.to_string()).is_ok_and(|p| {
                            p == layout
                                && Geometry::new(&GeometrySpec {
                                    level: Level::Raid10,
                                    layout: Some(p),
                                    legs: legs as u32,
                                    chunk_bytes: Some(64 * 1024),
                                    block_size: bs,
                                    leg_blocks: sb.leg_data_blocks,
                                })
                                .is_ok()
                        });
                        assert_eq!(decoded, rpc, "{layout:?} on {legs} legs of {bs}-byte blocks");
                        if decoded {
                            let (geo, meta) = sb.geometry().unwrap();
                            assert!(geo.data_blocks() <= meta.regions * meta.region_blocks);
                        }
                    }
                }
            }
        }
        for legs in 1..=8 {
            let n = Raid10Layout {
                near: legs as u32,
                far: 1,
                offset: false,
            };
            assert_eq!(through_disk(&shaped(Level::Raid1, n, legs, 0, bs)).is_ok(), legs >= 2);
            let n2 = Raid10Layout::N2;
            assert_eq!(
                through_disk(&shaped(Level::Raid1, n2, legs, 64, bs)).is_ok(),
                legs == 2,
                "raid1 on {legs} legs stores n{legs}"
            );
        }
    }
}

fn leg(uuid: u8, role: LegRole) -> LegEntry {
    LegEntry {
        uuid: [uuid; 16],
        role,
        failed_at_events: 0,
    }
}

/// Copy `slot` of a 3-leg RAID1 at `events` whose leg table holds `uuids` (all active).
fn raid1(slot: u32, events: u64, uuids: [u8; 3]) -> Superblock {
    let mut sb = shaped(
        Level::Raid1,
        Raid10Layout {
            near: 3,
            far: 1,
            offset: false,
        },
        3,
        0,
        512,
    );
    sb.this_slot = slot;
    sb.events = events;
    sb.legs = uuids.iter().map(|&u| leg(u, LegRole::Active)).collect();
    sb.geometry().unwrap();
    sb
}

/// The running mirror's copy after it marked slot 2 failed at `failed_at`.
fn running_without_slot_2(failed_at: u64) -> Superblock {
    let mut sb = raid1(0, failed_at + 1, [1, 2, 3]);
    sb.legs[2] = LegEntry {
        failed_at_events: failed_at,
        ..leg(3, LegRole::Failed)
    };
    sb
}

#[test]
fn a_leg_current_when_dropped_recovers_from_the_bitmap() {
    let running = running_without_slot_2(10);
    // Written last at the events it was dropped at, or one before (it missed that write).
    assert_eq!(rejoin(&running, &raid1(2, 10, [1, 2, 3])), Rejoin::Recovery);
    assert_eq!(rejoin(&running, &raid1(2, 9, [1, 2, 3])), Rejoin::Recovery);
}

#[test]
fn a_leg_further_behind_than_its_drop_is_rebuilt_in_full() {
    // It missed writes from before the running mirror dropped it: no bitmap holds them
    // (an old copy of the leg put back, or a leg that was away across earlier changes).
    let running = running_without_slot_2(10);
    for events in [1, 5, 8] {
        assert_eq!(
            rejoin(&running, &raid1(2, events, [1, 2, 3])),
            Rejoin::Rebuild,
            "{events}"
        );
    }
}

#[test]
fn a_leg_written_after_its_drop_ran_apart() {
    // Another assembly ran on it without the others (split brain): its own copy marks
    // the running mirror's legs failed and its events moved on.
    let running = running_without_slot_2(1);
    let mut theirs = raid1(2, 2, [1, 2, 3]);
    theirs.legs[0] = LegEntry {
        failed_at_events: 1,
        ..leg(1, LegRole::Failed)
    };
    assert_eq!(rejoin(&running, &theirs), Rejoin::Diverged);
    assert_eq!(rejoin(&running, &raid1(2, 7, [1, 2, 3])), Rejoin::Diverged);
}

#[test]
fn a_leg_removed_on_request_is_judged_as_a_failed_one() {
    let mut running = running_without_slot_2(10);
    running.legs[2].role = LegRole::Removed;
    assert_eq!(rejoin(&running, &raid1(2, 10, [1, 2, 3])), Rejoin::Recovery);
    assert_eq!(rejoin(&running, &raid1(2, 3, [1, 2, 3])), Rejoin::Rebuild);
    assert_eq!(rejoin(&running, &raid1(2, 11, [1, 2, 3])), Rejoin::Diverged);
}

#[test]
fn a_leg_that_recorded_its_own_removal_is_judged_by_when_it_was_dropped() {
    let mut running = running_without_slot_2(10);
    running.legs[2].role = LegRole::Removed;
    // Its farewell: the running mirror's table as it was written after the drop.
    let farewell = |dropped_at: u64| {
        let mut sb = running.clone();
        sb.this_slot = 2;
        sb.legs[2].failed_at_events = dropped_at;
        sb
    };
    assert_eq!(rejoin(&running, &farewell(10)), Rejoin::Recovery);
    assert_eq!(rejoin(&running, &farewell(9)), Rejoin::Recovery);
    assert_eq!(rejoin(&running, &farewell(4)), Rejoin::Rebuild);
    assert_eq!(rejoin(&running, &farewell(12)), Rejoin::Diverged);
    // Alone, it assembles nothing: the newest copy (its own) calls no leg found active.
    let a = choose_legs(&[farewell(10)]).expect("a valid superblock");
    assert_eq!(a.fresh, 0);
}

#[test]
fn only_a_failed_active_leg_of_the_same_identity_recovers() {
    let running = running_without_slot_2(10);
    // Another leg in the slot (replaced meanwhile), a leg that was still being rebuilt, a
    // slot the running mirror never failed, another geometry: in full.
    assert_eq!(rejoin(&running, &raid1(2, 10, [1, 2, 9])), Rejoin::Rebuild);
    let mut rebuilding = raid1(2, 10, [1, 2, 3]);
    rebuilding.legs[2].role = LegRole::Rebuilding;
    assert_eq!(rejoin(&running, &rebuilding), Rejoin::Rebuild);
    assert_eq!(
        rejoin(&raid1(0, 11, [1, 2, 3]), &raid1(2, 10, [1, 2, 3])),
        Rejoin::Rebuild
    );
    let mut other = raid1(2, 10, [1, 2, 3]);
    other.bitmap_region_kb *= 2;
    assert_eq!(rejoin(&running, &other), Rejoin::Rebuild);
}

#[test]
fn newest_events_win_and_older_legs_are_stale() {
    let found = [
        raid1(1, 40, [1, 2, 3]),
        raid1(0, 42, [1, 2, 3]),
        raid1(2, 42, [1, 2, 3]),
    ];
    let a = choose_legs(&found).unwrap();
    assert_eq!(found[a.newest].events, 42);
    assert_eq!(a.slots, vec![Some(1), Some(0), Some(2)]);
    assert_eq!((a.fresh, a.active), (0b101, 0b111));
    assert!(!a.complete() && a.covers_every_block());
    assert_eq!(a.stale().collect::<Vec<_>>(), vec![(1, 0)]);
    assert!(a.rejected.is_empty());
}

#[test]
fn an_active_leg_one_write_behind_is_fresh() {
    // The mirror stopped while the write of events 42 was on its way: slot 1 still has 41.
    let found = [
        raid1(1, 41, [1, 2, 3]),
        raid1(0, 42, [1, 2, 3]),
        raid1(2, 42, [1, 2, 3]),
    ];
    let a = choose_legs(&found).unwrap();
    assert_eq!(found[a.newest].events, 42);
    assert_eq!((a.fresh, a.active), (0b111, 0b111));
    assert!(a.complete());
    // But not a leg the newest superblock says failed, however recent.
    let failed_1 = |slot| {
        let mut sb = raid1(slot, 42, [1, 2, 3]);
        sb.legs[1].role = LegRole::Failed;
        sb.legs[1].failed_at_events = 41;
        sb
    };
    let found = [raid1(1, 41, [1, 2, 3]), failed_1(0), failed_1(2)];
    let a = choose_legs(&found).unwrap();
    assert_eq!((a.fresh, a.active), (0b101, 0b101));
}

#[test]
fn a_replaced_legs_old_superblock_loses_its_slot_whatever_the_order() {
    // Slot 1's old leg (uuid 2) was removed at events 10 and replaced by uuid 9.
    let old = raid1(1, 10, [1, 2, 3]);
    let new = raid1(1, 12, [1, 9, 3]);
    let peer = raid1(0, 12, [1, 9, 3]);
    for found in [
        vec![old.clone(), new.clone(), peer.clone()],
        vec![new.clone(), old.clone(), peer.clone()],
        vec![peer.clone(), old.clone(), new.clone()],
    ] {
        let a = choose_legs(&found).unwrap();
        let kept = a.slots[1].unwrap();
        assert_eq!(found[kept], new);
        let lost = found.iter().position(|s| *s == old).unwrap();
        assert_eq!(a.rejected, vec![(lost, Rejection::SlotTaken { slot: 1, winner: kept })]);
        assert_eq!(a.fresh, 0b011);
    }
}

#[test]
fn at_equal_events_the_leg_uuid_the_newest_records_wins_the_slot() {
    let newest = raid1(0, 7, [1, 2, 3]);
    let right = raid1(2, 7, [1, 2, 3]);
    let mut wrong = raid1(2, 7, [1, 2, 3]);
    wrong.legs[2].uuid = [8; 16];
    for found in [
        vec![newest.clone(), wrong.clone(), right.clone()],
        vec![newest.clone(), right.clone(), wrong.clone()],
    ] {
        let a = choose_legs(&found).unwrap();
        assert_eq!(found[a.slots[2].unwrap()], right);
        assert_eq!(a.fresh, 0b101);
    }
    // Alone in its slot, a leg whose uuid is not the one newest records is kept, not fresh
    // (newest: the leg table two of the three copies share).
    let peer = raid1(1, 7, [1, 2, 3]);
    let a = choose_legs(&[wrong.clone(), newest.clone(), peer]).unwrap();
    assert_eq!((a.slots[2], a.fresh), (Some(0), 0b011));
    assert_eq!(a.stale().collect::<Vec<_>>(), vec![(2, 0)]);
}

#[test]
fn a_leg_that_disagrees_is_rejected_and_the_others_assemble() {
    let good = [raid1(0, 5, [1, 2, 3]), raid1(1, 5, [1, 2, 3])];
    let mut odd = raid1(2, 5, [1, 2, 3]);
    odd.leg_data_blocks = 4000; // a different size: also a different bitmap
    let meta = MetaLayout::new(512, 4000, odd.bitmap_region_kb).unwrap();
    odd.bitmap_blocks = meta.bitmap_blocks;
    odd.geometry().unwrap();
    for found in [
        vec![odd.clone(), good[0].clone(), good[1].clone()],
        vec![good[0].clone(), good[1].clone(), odd.clone()],
    ] {
        let a = choose_legs(&found).unwrap();
        let at = found.iter().position(|s| *s == odd).unwrap();
        assert_eq!(
            a.rejected,
            vec![(
                at,
                Rejection::Disagrees {
                    field: "leg_data_blocks",
                    events: 5
                }
            )]
        );
        assert_eq!((a.fresh, a.slots[2]), (0b011, None));
        assert!(a.covers_every_block() && !a.complete());
    }
    let mut other = raid1(2, 5, [1, 2, 3]);
    other.name = "other".into();
    let a = choose_legs(&[good[0].clone(), other]).unwrap();
    assert!(a.rejected[0].1.to_string().ends_with("on name"), "{:?}", a.rejected);
}

#[test]
fn invalid_copies_are_rejected_and_none_valid_means_no_assembly() {
    let mut bad = raid1(2, 99, [1, 2, 3]);
    bad.name.clear();
    let a = choose_legs(&[bad.clone(), raid1(0, 5, [1, 2, 3])]).unwrap();
    assert_eq!(a.newest, 1);
    assert_eq!(a.rejected, vec![(0, Rejection::Invalid(SuperblockError::NameEmpty))]);
    assert!(choose_legs(&[bad]).is_none());
    assert!(choose_legs::<Superblock>(&[]).is_none());
}

/// Copy `slot` of a RAID1 at `events` whose leg table holds `legs` (layout `n<legs>`), the
/// other fields as `raid1` makes them.
fn raid1_legs(slot: u32, events: u64, legs: &[(u8, LegRole)]) -> Superblock {
    let mut sb = raid1(0, events, [1, 2, 3]);
    sb.legs = legs.iter().map(|&(u, r)| leg(u, r)).collect();
    sb.layout = Raid10Layout {
        near: legs.len() as u32,
        far: 1,
        offset: false,
    };
    sb.this_slot = slot;
    sb.geometry().unwrap();
    sb
}

/// `sb` grown to `leg_blocks` per leg as the resize does it, at `events`.
fn grown(sb: &Superblock, leg_blocks: u64, events: u64) -> Superblock {
    let geo = sb.geometry().unwrap().0.resized(leg_blocks).unwrap();
    let (meta, kb) = MetaLayout::resized(sb.block_size, geo.data_blocks(), sb.bitmap_region_kb).unwrap();
    let g = Superblock {
        leg_data_blocks: leg_blocks,
        bitmap_region_kb: kb,
        bitmap_blocks: meta.bitmap_blocks,
        events,
        ..sb.clone()
    };
    g.geometry().unwrap();
    g
}

/// What an assembly decided, in terms of the copies rather than their positions.
#[derive(Debug, PartialEq)]
struct Outcome {
    newest: Superblock,
    slots: Vec<Option<Superblock>>,
    fresh: u32,
    active: u32,
    reshaped: u32,
    bitmap_differs: u32,
    same_bitmap: Vec<bool>,
    /// (copy, why), in the order of their encodings.
    rejected: Vec<(Vec<u8>, String)>,
}

fn outcome(found: &[Superblock], a: &Assembly) -> Outcome {
    let mut rejected: Vec<(Vec<u8>, String)> = a
        .rejected
        .iter()
        .map(|(i, r)| {
            let why = match r {
                Rejection::SlotTaken { slot, winner } => format!("slot {slot} to {:?}", found[*winner]),
                other => other.to_string(),
            };
            (found[*i].encode().unwrap(), why)
        })
        .collect();
    rejected.sort();
    Outcome {
        newest: found[a.newest].clone(),
        slots: a.slots.iter().map(|c| c.map(|i| found[i].clone())).collect(),
        fresh: a.fresh,
        active: a.active,
        reshaped: a.reshaped,
        bitmap_differs: a.bitmap_differs,
        same_bitmap: (0..a.slots.len() as u32).map(|s| a.same_bitmap(s)).collect(),
        rejected,
    }
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

/// The outcome of `found`, checked to be the same in every arrival order.
fn in_every_order(found: &[Superblock]) -> Outcome {
    let first = outcome(found, &choose_legs(found).unwrap());
    for order in permutations(found.len()) {
        let f: Vec<Superblock> = order.iter().map(|&i| found[i].clone()).collect();
        assert_eq!(outcome(&f, &choose_legs(&f).unwrap()), first, "order {order:?}");
    }
    first
}

use LegRole::{Active, Rebuilding, Removed};

#[test]
fn a_leg_that_missed_the_write_of_a_grow_to_more_legs_is_fresh_in_its_slot() {
    // RAID1 2 -> 3 legs at events 6: the new leg (uuid 9) rebuilds in slot 2. The write
    // reached slot 0 and the new leg, not slot 1, which still says 2 legs at events 5.
    let before = [(1, Active), (2, Active)];
    let after = [(1, Active), (2, Active), (9, Rebuilding)];
    let found = [
        raid1_legs(0, 6, &after),
        raid1_legs(1, 5, &before),
        raid1_legs(2, 6, &after),
    ];
    let o = in_every_order(&found);
    assert_eq!(o.newest.legs.len(), 3);
    assert_eq!(o.slots, found.iter().cloned().map(Some).collect::<Vec<_>>());
    assert_eq!(
        (o.fresh, o.active, o.reshaped, o.bitmap_differs),
        (0b011, 0b011, 0b010, 0)
    );
    assert_eq!(o.same_bitmap, vec![true, true, true]);
    assert!(o.rejected.is_empty(), "{:?}", o.rejected);
    // The crash left only slot 0 with the new superblock: still complete.
    let a = choose_legs(&[raid1_legs(1, 5, &before), raid1_legs(0, 6, &after)]).unwrap();
    assert_eq!(
        (a.newest, a.slots.clone(), a.fresh, a.reshaped),
        (1, vec![Some(1), Some(0), None], 0b011, 0b010)
    );
    assert!(a.complete());
    // A leg that agrees keeps today's rule: this_slot, no reshape.
    let a = choose_legs(&found[..1]).unwrap();
    assert_eq!((a.reshaped, a.bitmap_differs, a.fresh), (0, 0, 0b001));
    assert!(!a.same_bitmap(1) && !a.same_bitmap(40), "no copy there");
}

#[test]
fn a_moved_leg_that_missed_the_write_of_a_shrink_is_found_by_its_uuid() {
    // RAID1 3 -> 2 legs at events 8: slot 1 was empty, so leg 3 moved from slot 2 to slot
    // 1. The write reached slot 0 only.
    let before = [(1, Active), (2, Removed), (3, Active)];
    let after = [(1, Active), (3, Active)];
    let found = [raid1_legs(0, 8, &after), raid1_legs(2, 7, &before)];
    let o = in_every_order(&found);
    assert_eq!(o.newest, found[0]);
    assert_eq!(o.slots, vec![Some(found[0].clone()), Some(found[1].clone())]);
    assert_eq!((o.fresh, o.active, o.reshaped, o.bitmap_differs), (0b11, 0b11, 0b10, 0));
    assert!(o.rejected.is_empty(), "{:?}", o.rejected);
    // Slot 0 missed it too, and the moved leg got it: both found by uuid or slot.
    let found = [raid1_legs(0, 7, &before), raid1_legs(1, 8, &after)];
    let o = in_every_order(&found);
    assert_eq!((o.fresh, o.reshaped), (0b11, 0b01));
    // A leg the shrink dropped (its uuid is not in the newest's table) is rejected.
    let dropped = [(1, Active), (2, Active), (3, Active)];
    let found = [
        raid1_legs(0, 8, &[(1, Active), (2, Active)]),
        raid1_legs(2, 7, &dropped),
    ];
    let o = in_every_order(&found);
    assert_eq!(o.slots, vec![Some(found[0].clone()), None]);
    assert_eq!(
        o.rejected,
        vec![(
            found[1].encode().unwrap(),
            "its superblock disagrees with the newest one (events 8) on layout".into()
        )]
    );
}

#[test]
fn a_leg_that_missed_the_write_of_a_resize_is_fresh_with_another_bitmap() {
    // One bit per KiB: growing 4000 times doubles the region.
    let mut base = raid1_legs(0, 5, &[(1, Active), (2, Active)]);
    base.bitmap_region_kb = 1;
    base.bitmap_blocks = MetaLayout::new(512, base.leg_data_blocks, 1).unwrap().bitmap_blocks;
    let old = |slot| Superblock {
        this_slot: slot,
        ..base.clone()
    };
    let new = |slot| Superblock {
        this_slot: slot,
        ..grown(&base, 20_000_000, 6)
    };
    assert_eq!(new(0).bitmap_region_kb, 2);
    let found = [new(0), old(1)];
    let o = in_every_order(&found);
    assert_eq!(o.slots, vec![Some(new(0)), Some(old(1))]);
    assert_eq!((o.fresh, o.reshaped, o.bitmap_differs), (0b11, 0b10, 0b10));
    assert_eq!(o.same_bitmap, vec![true, false]);
    let a = choose_legs(&found).unwrap();
    assert_eq!(a.layout, new(0).geometry().unwrap().1);
    // A growth that keeps the region size still adds regions: another bitmap layout. One
    // that stays within the last region (64 MiB regions) keeps the layout.
    let small = grown(&base, 6000, 6);
    assert_eq!((small.bitmap_region_kb, small.geometry().unwrap().1.regions), (1, 3000));
    let o = in_every_order(&[small.clone(), old(1)]);
    assert_eq!(
        (o.fresh, o.reshaped, o.bitmap_differs),
        (0b11, 0b10, 0b10),
        "more regions"
    );
    let region = grown(&raid1_legs(0, 5, &[(1, Active), (2, Active)]), 6000, 6);
    let o = in_every_order(&[
        region,
        Superblock {
            this_slot: 1,
            ..raid1_legs(0, 5, &[(1, Active), (2, Active)])
        },
    ]);
    assert_eq!(
        (o.fresh, o.reshaped, o.bitmap_differs),
        (0b11, 0b10, 0),
        "one region still"
    );
    assert_eq!(o.same_bitmap, vec![true, true]);
}

#[test]
fn a_leg_two_reshapes_behind_is_kept_stale() {
    // Grown to 3 legs at events 6, then resized at events 7; slot 1 has neither.
    let before = [(1, Active), (2, Active)];
    let three = raid1_legs(0, 6, &[(1, Active), (2, Active), (3, Active)]);
    let newest = grown(&three, 9000, 7);
    let peer = Superblock {
        this_slot: 2,
        ..newest.clone()
    };
    let found = [newest.clone(), raid1_legs(1, 5, &before), peer.clone()];
    let o = in_every_order(&found);
    assert_eq!(o.slots, vec![Some(newest), Some(found[1].clone()), Some(peer)]);
    assert_eq!((o.fresh, o.active, o.reshaped), (0b101, 0b111, 0b010));
    let a = choose_legs(&found).unwrap();
    assert_eq!(a.stale().collect::<Vec<_>>(), vec![(1, 1)]);
    assert!(!a.complete() && a.covers_every_block());
    // One reshape behind it would be fresh.
    let found = [found[0].clone(), Superblock { this_slot: 1, ..three }];
    assert_eq!(in_every_order(&found).fresh, 0b011);
}

#[test]
fn copies_that_differ_beyond_a_reshape_are_still_rejected() {
    let before = [(1, Active), (2, Active)];
    let newest = raid1_legs(0, 6, &[(1, Active), (2, Active), (9, Active)]);
    let rejected_on = |old: Superblock, field: &str| {
        let found = [newest.clone(), old.clone()];
        let o = in_every_order(&found);
        assert_eq!(o.slots, vec![Some(newest.clone()), None, None], "{field}");
        let why = format!("its superblock disagrees with the newest one (events 6) on {field}");
        assert_eq!(o.rejected, vec![(old.encode().unwrap(), why)]);
    };
    let mut other = raid1_legs(1, 5, &before);
    other.mirror_uuid = [8; 16];
    rejected_on(other, "mirror_uuid");
    let mut renamed = raid1_legs(1, 5, &before);
    renamed.name = "other".into();
    rejected_on(renamed, "name");
    // 4 KiB blocks: another data offset too, but the block size is what is named.
    let n2 = Raid10Layout {
        near: 2,
        far: 1,
        offset: false,
    };
    let mut big = shaped(Level::Raid1, n2, 2, 0, 4096);
    (big.this_slot, big.events, big.legs) = (1, 5, before.iter().map(|&(u, r)| leg(u, r)).collect());
    big.geometry().unwrap();
    rejected_on(big, "block_size");
    // Legs never shrink; regions never halve.
    let larger = grown(&raid1_legs(1, 5, &before), 6000, 5);
    let smaller_newest = raid1_legs(0, 6, &before);
    let o = in_every_order(&[smaller_newest, larger]);
    assert_eq!(o.rejected.len(), 1);
    assert!(o.rejected[0].1.ends_with("on leg_data_blocks"), "{:?}", o.rejected);
    let mut coarse = raid1_legs(1, 5, &before);
    coarse.bitmap_region_kb *= 2;
    coarse.geometry().unwrap();
    rejected_on(coarse, "bitmap_region_kb");
    // Not older: two copies at the same events that differ are not a reshape.
    let mut same = raid1_legs(1, 6, &before);
    same.legs[1].uuid = [2; 16];
    let found = [newest.clone(), same.clone()];
    let o = in_every_order(&found);
    assert_eq!(o.rejected.len(), 1);
    assert!(o.rejected[0].1.ends_with("on layout"), "{:?}", o.rejected);
}

#[test]
fn raid10_reshapes_only_by_growing_legs_that_can_grow() {
    let raid10 = |layout: &str, legs: usize, slot: u32, events: u64| {
        let mut sb = shaped(Level::Raid10, Raid10Layout::parse(layout).unwrap(), legs, 64, 512);
        (sb.this_slot, sb.events) = (slot, events);
        sb.geometry().unwrap();
        sb
    };
    // o2 and n2 grow in place: a leg that missed the write is fresh.
    for layout in ["n2", "o2"] {
        let old = raid10(layout, 4, 1, 5);
        let new = grown(&raid10(layout, 4, 0, 5), 9000, 6);
        let o = in_every_order(&[new, old]);
        assert_eq!((o.fresh, o.reshaped), (0b0011, 0b0010), "{layout}");
    }
    // f2 cannot grow: a copy with another size is another mirror.
    let old = raid10("f2", 4, 1, 5);
    let mut new = raid10("f2", 4, 0, 6);
    new.leg_data_blocks = 9000;
    new.geometry().unwrap();
    let o = in_every_order(&[new, old]);
    assert_eq!((o.fresh, o.reshaped), (0b0001, 0));
    assert!(o.rejected[0].1.ends_with("on leg_data_blocks"), "{:?}", o.rejected);
    // A RAID10's leg count is its placement: never a reshape.
    let o = in_every_order(&[raid10("n2", 4, 0, 6), raid10("n2", 3, 1, 5)]);
    assert_eq!((o.fresh, o.reshaped), (0b0001, 0));
    assert!(o.rejected[0].1.ends_with("on legs"), "{:?}", o.rejected);
}

#[test]
fn a_reshaped_copy_competes_for_its_slot_like_any_other() {
    // After the shrink (events 8) leg 3 sits in slot 1. An agreeing copy that claims slot 1
    // with uuid 3 at events 6 (say, a clone of that leg taken earlier) loses the slot to
    // the reshaped copy's higher events, whatever the order.
    let before = [(1, Active), (2, Removed), (3, Active)];
    let after = [(1, Active), (3, Active)];
    let moved = raid1_legs(2, 7, &before);
    let ghost = raid1_legs(1, 6, &after);
    let found = [raid1_legs(0, 8, &after), moved.clone(), ghost.clone()];
    let o = in_every_order(&found);
    assert_eq!(o.slots[1], Some(moved.clone()));
    assert_eq!((o.fresh, o.reshaped), (0b11, 0b10));
    assert_eq!(
        o.rejected,
        vec![(ghost.encode().unwrap(), format!("slot 1 to {moved:?}"))]
    );
    // Its uuid twice in the newest's table (damage): no slot, rejected.
    let twice = [(1, Active), (3, Active), (3, Active), (4, Active)];
    let found = [raid1_legs(0, 8, &twice), moved];
    let o = in_every_order(&found);
    assert_eq!((o.slots.iter().flatten().count(), o.rejected.len()), (1, 1));
}

fn tuned(generation: u64, policy: ReadPolicy) -> TunablesRecord {
    TunablesRecord {
        generation,
        tunables: Tunables {
            read_policy: policy,
            rebuild_max_mb_per_s: 7,
            pool_size: 256,
            max_parents: 64,
        },
    }
}

/// A superblock's bytes with `record`'s bytes in the reserved area, both checksums as they
/// are given (the superblock's recomputed: the record alone is at fault).
fn with_record_bytes(sb: &Superblock, record: &[u8]) -> Vec<u8> {
    let mut b = sb.encode().unwrap();
    b[TUNABLES_OFFSET..TUNABLES_OFFSET + record.len()].copy_from_slice(record);
    let crc = crc32c(&b[..CRC_OFFSET]);
    put32(&mut b, CRC_OFFSET, crc);
    b
}

/// `r` encoded, one byte range replaced, the record's checksum recomputed.
fn patched_record(r: &TunablesRecord, at: usize, v: &[u8]) -> [u8; TUNABLES_BYTES] {
    let mut b = r.encode();
    b[at..at + v.len()].copy_from_slice(v);
    let crc = crc32c(&b[..TUNABLES_CRC]);
    put32(&mut b, TUNABLES_CRC, crc);
    b
}

#[test]
fn tunables_round_trip_beside_the_geometry() {
    let sb = sample();
    for policy in [
        ReadPolicy::LeastOutstanding,
        ReadPolicy::RoundRobin,
        ReadPolicy::Preferred(3),
    ] {
        let rec = tuned(9, policy);
        let bytes = sb.encode_with(&rec).unwrap();
        assert_eq!(bytes.len(), SUPERBLOCK_BYTES);
        assert_eq!(
            Superblock::decode(&bytes).unwrap(),
            sb,
            "the geometry ignores the record"
        );
        assert_eq!(TunablesRecord::read(&bytes, 4), Ok(Some(rec)));
        assert_ne!(bytes, sb.encode().unwrap(), "the record is on disk");
    }
}

#[test]
fn a_superblock_without_a_record_has_no_tunables() {
    // What version 1 wrote before records existed: zeros in the reserved bytes.
    let old = sample().encode().unwrap();
    assert!(old[TUNABLES_OFFSET..TUNABLES_OFFSET + TUNABLES_BYTES]
        .iter()
        .all(|&b| b == 0));
    assert_eq!(Superblock::decode(&old).unwrap(), sample());
    assert_eq!(TunablesRecord::read(&old, 4), Ok(None));
    assert_eq!(
        TunablesRecord::read(&old[..100], 4),
        Ok(None),
        "short input is no record"
    );
}

#[test]
fn a_damaged_record_is_refused_and_the_superblock_still_decodes() {
    let sb = sample();
    let rec = tuned(3, ReadPolicy::Preferred(1));
    let mut flipped = rec.encode();
    flipped[40] ^= 1;
    let bytes = with_record_bytes(&sb, &flipped);
    assert_eq!(Superblock::decode(&bytes).unwrap(), sb);
    assert!(matches!(
        TunablesRecord::read(&bytes, 4),
        Err(TunablesError::Checksum { .. })
    ));
    // Damage the superblock's own checksum does not cover does not exist: a flip there
    // without a rewrite is the whole copy's damage.
    let mut torn = sb.encode_with(&rec).unwrap();
    torn[TUNABLES_OFFSET + 40] ^= 1;
    assert!(matches!(
        Superblock::decode(&torn),
        Err(SuperblockError::Checksum { .. })
    ));
    let junk = with_record_bytes(&sb, b"garbage!");
    assert!(matches!(TunablesRecord::read(&junk, 4), Err(TunablesError::Magic(_))));
}

#[test]
fn a_record_of_an_unknown_version_is_ignored() {
    let rec = patched_record(&tuned(3, ReadPolicy::RoundRobin), 8, &2u32.to_le_bytes());
    let bytes = with_record_bytes(&sample(), &rec);
    let e = TunablesRecord::read(&bytes, 4).unwrap_err();
    assert_eq!(e, TunablesError::Version(2));
    assert!(e.is_unknown_version() && e.to_string().contains("ignored"), "{e}");
    assert_eq!(Superblock::decode(&bytes).unwrap(), sample());
}

#[test]
fn restored_values_are_held_to_the_rpc_bounds() {
    let read = |r: &TunablesRecord| TunablesRecord::read(&with_record_bytes(&sample(), &r.encode()), 4);
    let with = |f: &dyn Fn(&mut Tunables)| {
        let mut r = tuned(1, ReadPolicy::Preferred(3));
        f(&mut r.tunables);
        r
    };
    let refused = |r: TunablesRecord, field: &str| {
        let e = read(&r).expect_err(field);
        assert!(
            matches!(&e, TunablesError::BadField { field: f, .. } if *f == field),
            "{field}: {e}"
        );
        assert!(e.to_string().starts_with(&format!("tunables: {field} is ")), "{e}");
    };
    refused(with(&|t| t.pool_size = 0), "pool_size");
    refused(with(&|t| t.pool_size = MAX_POOL_SIZE + 1), "pool_size");
    refused(with(&|t| t.max_parents = 0), "max_parents");
    refused(with(&|t| t.max_parents = MAX_MAX_PARENTS + 1), "max_parents");
    refused(
        with(&|t| t.rebuild_max_mb_per_s = MAX_RATE_MB + 1),
        "rebuild_max_mb_per_s",
    );
    refused(with(&|t| t.read_policy = ReadPolicy::Preferred(4)), "preferred_leg");
    let rr = tuned(1, ReadPolicy::RoundRobin);
    let stray_leg = patched_record(&rr, 28, &1u32.to_le_bytes());
    let e = TunablesRecord::read(&with_record_bytes(&sample(), &stray_leg), 4).unwrap_err();
    assert!(e.to_string().starts_with("tunables: preferred_leg is 1"), "{e}");
    let unknown = patched_record(&rr, 24, &[3]);
    let e = TunablesRecord::read(&with_record_bytes(&sample(), &unknown), 4).unwrap_err();
    assert!(e.to_string().starts_with("tunables: read_policy is 3"), "{e}");
    let long = patched_record(&rr, 12, &256u32.to_le_bytes());
    let e = TunablesRecord::read(&with_record_bytes(&sample(), &long), 4).unwrap_err();
    assert!(e.to_string().starts_with("tunables: record_len is 256"), "{e}");
    // The bounds themselves are accepted.
    for r in [
        with(&|t| {
            t.pool_size = 1;
            t.max_parents = 1;
            t.rebuild_max_mb_per_s = 0;
        }),
        with(&|t| {
            t.pool_size = MAX_POOL_SIZE;
            t.max_parents = MAX_MAX_PARENTS;
            t.rebuild_max_mb_per_s = MAX_RATE_MB;
        }),
    ] {
        assert_eq!(read(&r), Ok(Some(r)));
    }
}

const DEFAULTS: Tunables = Tunables {
    read_policy: ReadPolicy::LeastOutstanding,
    rebuild_max_mb_per_s: 0,
    pool_size: 4096,
    max_parents: 1024,
};

/// The assembly of `found` and what it restores from `records`.
fn restore(found: &[Superblock], records: &[TunablesRead]) -> Restored {
    let a = choose_legs(found).unwrap();
    restore_tunables(found, records, &a, DEFAULTS)
}

#[test]
fn legs_without_records_assemble_with_the_defaults() {
    let found = [raid1(0, 5, [1, 2, 3]), raid1(1, 5, [1, 2, 3]), raid1(2, 5, [1, 2, 3])];
    let records: Vec<TunablesRead> = found
        .iter()
        .map(|sb| TunablesRecord::read(&sb.encode().unwrap(), 3))
        .collect();
    let r = restore(&found, &records);
    assert_eq!((r.tunables, r.generation, r.from), (DEFAULTS, 0, None));
    assert!(r.unusable.is_empty());
}

#[test]
fn the_newest_record_of_the_current_legs_is_restored_whatever_the_order() {
    // A change reached legs 0 and 2 before a crash, not leg 1; leg 2 is stale (it missed a
    // membership change), so its record does not count however new.
    let found = [raid1(0, 8, [1, 2, 3]), raid1(1, 8, [1, 2, 3]), raid1(2, 7, [1, 2, 3])];
    let new = tuned(5, ReadPolicy::Preferred(1));
    let old = tuned(4, ReadPolicy::RoundRobin);
    let stale = tuned(9, ReadPolicy::Preferred(2));
    for order in [[0, 1, 2], [1, 0, 2], [2, 1, 0], [1, 2, 0]] {
        let f: Vec<Superblock> = order.iter().map(|&i| found[i].clone()).collect();
        let recs: Vec<TunablesRead> = order.iter().map(|&i| Ok(Some([new, old, stale][i]))).collect();
        let r = restore(&f, &recs);
        assert_eq!((r.tunables, r.generation), (new.tunables, 5), "order {order:?}");
        assert_eq!(r.from, order.iter().position(|&i| i == 0));
    }
}

#[test]
fn a_bad_record_falls_back_to_another_current_one_or_to_the_defaults() {
    let found = [raid1(0, 8, [1, 2, 3]), raid1(1, 8, [1, 2, 3])];
    let bad = bad_tunable("pool_size", 0, "1 to 1048576");
    let good = tuned(2, ReadPolicy::Preferred(1));
    let r = restore(&found, &[Err(bad.clone()), Ok(Some(good))]);
    assert_eq!((r.tunables, r.from), (good.tunables, Some(1)));
    assert_eq!(r.unusable, vec![(0, bad.clone())]);
    let r = restore(&found, &[Err(bad.clone()), Err(TunablesError::Version(7))]);
    assert_eq!((r.tunables, r.from), (DEFAULTS, None));
    assert_eq!(r.unusable, vec![(0, bad), (1, TunablesError::Version(7))]);
}

#[test]
fn layout_fits_the_bitmap_in_the_reserved_megabyte() {
    let l = MetaLayout::new(512, 1 << 21, 1024).unwrap(); // 1 GiB of 512 B blocks, 1 MiB regions
    assert_eq!(l.data_offset_blocks, 2048);
    assert_eq!((l.bitmap_offset_blocks, l.region_blocks, l.regions), (8, 2048, 1024));
    assert_eq!(l.bitmap_blocks, 1, "128 bytes of bitmap");
    let l = MetaLayout::new(4096, 10, 65536).unwrap();
    assert_eq!(
        (l.data_offset_blocks, l.bitmap_offset_blocks, l.bitmap_blocks, l.regions),
        (256, 1, 1, 1)
    );
    assert_eq!(MetaLayout::new(4096, 1 << 10, 2), Err(LayoutError::Region(2)));
    assert!(matches!(
        MetaLayout::new(512, 1 << 40, 4),
        Err(LayoutError::TooManyRegions { .. })
    ));
    assert!(MetaLayout::new(512, 1 << 20, 3).is_err());
    assert!(MetaLayout::new(512, 1 << 20, MAX_REGION_KB).is_ok());
    assert!(MetaLayout::new(512, 1 << 20, MAX_REGION_KB << 1).is_err());
}

#[test]
fn growing_keeps_the_region_while_it_fits_and_doubles_it_when_not() {
    // 4 KiB blocks: 255 blocks of bitmap room, 8_355_840 regions.
    let max = (256 - 1) * 4096 * 8;
    let old = MetaLayout::new(4096, 1 << 20, 64).unwrap();
    let (l, kb) = MetaLayout::resized(4096, 1 << 22, 64).unwrap();
    assert_eq!((kb, l), (64, MetaLayout::new(4096, 1 << 22, 64).unwrap()));
    assert_eq!((l.regions, l.region_blocks), (1 << 18, 16));
    // Exactly full, then one region too many: the region doubles.
    assert_eq!(MetaLayout::resized(4096, max * 16, 64).unwrap().1, 64);
    let (l, kb) = MetaLayout::resized(4096, max * 16 + 1, 64).unwrap();
    assert_eq!((kb, l.region_blocks, l.regions), (128, 32, max / 2 + 1));
    // Far beyond: the smallest multiple that fits.
    let (l, kb) = MetaLayout::resized(4096, max * 16 * 5, 64).unwrap();
    assert_eq!((kb, l.regions), (512, max * 5 / 8));
    assert!(
        MetaLayout::new(4096, max * 16 * 5, 256).is_err(),
        "256 KiB does not fit"
    );
    for (bs, blocks) in [(4096, 1u64 << 40), (512, 1 << 50), (512, 1000)] {
        let (l, _) = MetaLayout::resized(bs, blocks, 4).unwrap();
        assert_eq!(
            (l.data_offset_blocks, l.bitmap_offset_blocks),
            (
                MetaLayout::data_offset_blocks(bs),
                old.bitmap_offset_blocks * 4096 / bs as u64
            ),
            "the reserved area does not move"
        );
    }
    assert_eq!(MetaLayout::resized(4096, 10, 3), Err(LayoutError::Region(3)));
    assert!(matches!(
        MetaLayout::resized(512, u64::MAX, 4),
        Err(LayoutError::TooManyRegions {
            region_kb: MAX_REGION_KB,
            ..
        })
    ));
}

#[test]
fn a_grown_superblock_decodes_with_the_resized_layout() {
    // o2 over 4 legs of 1 GiB (4 KiB blocks): 2 GiB of data, one bit per 64 KiB.
    let sb = Superblock {
        leg_data_blocks: 1 << 18,
        bitmap_region_kb: 64,
        bitmap_blocks: 1,
        ..sample()
    };
    let (geo, meta) = sb.geometry().unwrap();
    assert_eq!((geo.data_blocks(), meta.regions), (1 << 19, 1 << 15));
    // Every leg grows 256 times: 2^23 regions of 64 KiB no longer fit.
    let grown = geo.resized(1 << 26).unwrap();
    assert!(MetaLayout::new(4096, grown.data_blocks(), 64).is_err());
    let (layout, kb) = MetaLayout::resized(4096, grown.data_blocks(), 64).unwrap();
    assert_eq!((kb, layout.regions, layout.bitmap_blocks), (128, 1 << 22, 128));
    let new = Superblock {
        leg_data_blocks: grown.leg_blocks(),
        bitmap_region_kb: kb,
        bitmap_blocks: layout.bitmap_blocks,
        events: sb.events + 1,
        ..sb.clone()
    };
    assert_eq!(
        (new.data_offset_blocks, new.bitmap_offset_blocks),
        (layout.data_offset_blocks, layout.bitmap_offset_blocks)
    );
    let back = Superblock::decode(&new.encode().unwrap()).unwrap();
    assert_eq!(back, new);
    assert_eq!(back.geometry().unwrap(), (grown, layout));
    // The old region size with the new size is refused, as is the old bitmap length.
    let stale_region = Superblock {
        bitmap_region_kb: 64,
        ..new.clone()
    };
    assert!(matches!(
        Superblock::decode(&stale_region.encode().unwrap()),
        Err(SuperblockError::Layout(LayoutError::TooManyRegions { .. }))
    ));
    let stale_len = Superblock {
        bitmap_blocks: sb.bitmap_blocks,
        ..new
    };
    assert!(matches!(
        Superblock::decode(&stale_len.encode().unwrap()),
        Err(SuperblockError::Mismatch {
            field: "bitmap_blocks",
            ..
        })
    ));
}
