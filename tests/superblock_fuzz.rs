//! Superblocks are untrusted input: a seeded fuzz of `Superblock::decode` and of the pure
//! assembly decision `choose_legs`. Valid superblocks of many shapes are mutated (bit flips,
//! chosen values at the fields' offsets from `docs/superblock.md`, truncation, fields of
//! another mirror), their checksum recomputed, and decoded: nothing may panic, and whatever
//! decodes must describe a mirror the create RPC could have made, with a placement that maps
//! no two blocks to one place. Sets of such superblocks go to `choose_legs`: nothing may panic,
//! and no assembly may have an invalid geometry or use a copy that disagrees with its newest
//! (other than an older copy of a leg that missed a reshape: then its data must sit where the
//! newest's geometry puts it).
//!
//! Deterministic (fixed seeds); `SUPERBLOCK_FUZZ_ROUNDS` scales the work.

use std::collections::HashSet;

use spdk_mirror::placement::{Geometry, GeometrySpec, Level, Raid10Layout};
use spdk_mirror::superblock::{
    choose_legs, crc32c, Assembly, LegEntry, LegRole, MetaLayout, Rejection, Superblock, SuperblockError,
    SUPERBLOCK_BYTES,
};

const CRC_OFFSET: usize = SUPERBLOCK_BYTES - 4;

/// SplitMix64: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// Rounds over every base superblock: 4 in release (about 2 s), 1 in a debug build, where the
/// bitwise CRC is slow; `SUPERBLOCK_FUZZ_ROUNDS` overrides.
fn rounds() -> u64 {
    let default = if cfg!(debug_assertions) { 1 } else { 4 };
    std::env::var("SUPERBLOCK_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The fields of `docs/superblock.md`: offset and size in bytes.
const FIELDS: &[(usize, usize)] = &[
    (8, 4),    // version
    (12, 4),   // header_len
    (32, 1),   // name, first byte
    (33, 1),   // name, second byte
    (95, 1),   // name, last byte
    (96, 1),   // level
    (97, 1),   // near
    (98, 1),   // far
    (99, 1),   // flags
    (100, 4),  // chunk_kb
    (104, 4),  // block_size
    (108, 4),  // legs
    (112, 8),  // data_offset_blocks
    (120, 8),  // leg_data_blocks
    (128, 8),  // events
    (136, 4),  // this_slot
    (140, 4),  // bitmap_region_kb
    (144, 8),  // bitmap_offset_blocks
    (152, 8),  // bitmap_blocks
    (160, 16), // leg 0 uuid
    (176, 1),  // leg 0 role
    (184, 8),  // leg 0 failed_at_events
    (208, 1),  // leg 1 role
    (216, 8),  // leg 1 failed_at_events
    (240, 1),  // leg 2 role
    (272, 1),  // leg 3 role
];

/// A valid superblock: `level` with `layout` (RAID10) on `legs` legs of about `leg_blocks`.
fn valid(level: Level, layout: Option<&str>, legs: u32, bs: u32, leg_blocks: u64, rng: &mut Rng) -> Superblock {
    let layout = layout.map(|l| Raid10Layout::parse(l).unwrap());
    let build = |chunk_kb: u32| {
        Geometry::new(&GeometrySpec {
            level,
            layout,
            legs,
            chunk_bytes: Some(chunk_kb as u64 * 1024),
            block_size: bs,
            leg_blocks,
        })
    };
    // RAID1 ignores the chunk (0, or what the RPC fills in); RAID10 takes one that leaves data.
    let chunks: &[u32] = if level == Level::Raid10 {
        &[512, 64, 4]
    } else {
        &[0, 64]
    };
    let start = rng.below(chunks.len() as u64) as usize;
    let chunk_kb = (0..chunks.len())
        .map(|i| chunks[(start + i) % chunks.len()])
        .find(|&c| build(c).is_ok())
        .expect("some chunk fits");
    let geo = build(chunk_kb).unwrap();
    // The smallest region that fits, or a larger one.
    let region_kb = (0..=30)
        .map(|s| 1u32 << s)
        .filter(|&kb| MetaLayout::new(bs, geo.data_blocks(), kb).is_ok())
        .nth(rng.below(4) as usize)
        .unwrap();
    let meta = MetaLayout::new(bs, geo.data_blocks(), region_kb).unwrap();
    let events = 10 + rng.below(1000);
    let sb = Superblock {
        mirror_uuid: rng.next().to_le_bytes().repeat(2).try_into().unwrap(),
        name: format!("mir{}", rng.below(1000)),
        level,
        layout: geo.layout(),
        chunk_kb,
        block_size: bs,
        data_offset_blocks: meta.data_offset_blocks,
        leg_data_blocks: leg_blocks,
        events,
        this_slot: rng.below(legs as u64) as u32,
        bitmap_region_kb: region_kb,
        bitmap_offset_blocks: meta.bitmap_offset_blocks,
        bitmap_blocks: meta.bitmap_blocks,
        legs: (0..legs)
            .map(|i| LegEntry {
                uuid: [i as u8 + 1; 16],
                role: LegRole::Active,
                failed_at_events: 0,
            })
            .collect(),
    };
    assert!(sb.geometry().is_ok(), "base superblock is valid: {sb:?}");
    sb
}

/// The base superblocks: RAID1 on 2-4 legs, RAID10 n2/f2/o2/n3 on 3-6 legs, 512 and 4096-byte
/// blocks, a few leg sizes.
fn bases(rng: &mut Rng) -> Vec<Superblock> {
    let mut out = Vec::new();
    for bs in [512, 4096] {
        for leg_blocks in [1000u64, 1 << 20, (1 << 34) + 12345] {
            for legs in 2..=4 {
                out.push(valid(Level::Raid1, None, legs, bs, leg_blocks, rng));
            }
            for layout in ["n2", "f2", "o2", "n3"] {
                for legs in 3..=6 {
                    out.push(valid(Level::Raid10, Some(layout), legs, bs, leg_blocks, rng));
                }
            }
        }
    }
    out
}

fn put(b: &mut [u8], at: usize, size: usize, v: u64) {
    b[at..at + size].copy_from_slice(&v.to_le_bytes()[..size]);
}

fn get(b: &[u8], at: usize, size: usize) -> u64 {
    let mut w = [0u8; 8];
    w[..size].copy_from_slice(&b[at..at + size]);
    u64::from_le_bytes(w)
}

/// A value worth trying in a field of `size` bytes that now holds `old`.
fn interesting(rng: &mut Rng, size: usize, old: u64) -> u64 {
    let max = if size >= 8 { u64::MAX } else { (1u64 << (size * 8)) - 1 };
    let v = match rng.below(9) {
        0 => 0,
        1 => 1,
        2 => max,
        3 => old.wrapping_add(1),
        4 => old.wrapping_sub(1),
        5 => 1u64 << rng.below(size as u64 * 8),
        6 => old.wrapping_mul(2),
        7 => old / 2,
        _ => rng.next(),
    };
    v & max
}

fn reseal(b: &mut [u8]) {
    let crc = crc32c(&b[..CRC_OFFSET]);
    put(b, CRC_OFFSET, 4, crc as u64);
}

/// One to four mutations of an encoded superblock, checksum recomputed (mostly).
fn mutate(rng: &mut Rng, bytes: &[u8], donors: &[Superblock]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(10) {
            0..=2 => {
                let bit = rng.below(CRC_OFFSET as u64 * 8);
                b[(bit / 8) as usize] ^= 1 << (bit % 8);
            }
            3 => {
                // Flips in the header, where the fields are.
                let bit = rng.below(200 * 8);
                b[(bit / 8) as usize] ^= 1 << (bit % 8);
            }
            4..=7 => {
                let (at, size) = rng.pick(FIELDS);
                let v = interesting(rng, size.min(8), get(&b, at, size.min(8)));
                put(&mut b, at, size.min(8), v);
            }
            _ => {
                // A field of another valid mirror: shapes that are each valid, mixed.
                let donor = donors[rng.below(donors.len() as u64) as usize].encode().unwrap();
                let (at, size) = rng.pick(FIELDS);
                b[at..at + size].copy_from_slice(&donor[at..at + size]);
            }
        }
    }
    if !rng.chance(3) {
        reseal(&mut b);
    }
    if rng.chance(3) {
        b.truncate(rng.below(SUPERBLOCK_BYTES as u64) as usize);
    }
    b
}

/// What a decoded superblock must satisfy: a geometry the RPC would build, mapped injectively
/// (spot-checked), a metadata layout that fits, sizes that do not overflow.
fn assert_sound(sb: &Superblock, rng: &mut Rng) {
    let (geo, meta) = sb
        .geometry()
        .unwrap_or_else(|e| panic!("decoded but invalid ({e}): {sb:?}"));
    assert!(!sb.name.is_empty() && sb.name.len() <= 64 && !sb.name.contains('\0'));
    assert!(sb.legs.len() >= 2 && sb.legs.len() <= 32 && (sb.this_slot as usize) < sb.legs.len());
    let spec = GeometrySpec {
        level: sb.level,
        layout: (sb.level == Level::Raid10).then_some(sb.layout),
        legs: sb.legs.len() as u32,
        chunk_bytes: Some(sb.chunk_kb as u64 * 1024),
        block_size: sb.block_size,
        leg_blocks: sb.leg_data_blocks,
    };
    assert_eq!(Geometry::new(&spec).as_ref(), Ok(&geo));
    // What the RPC would create: a layout it can spell, a chunk it allows.
    match sb.level {
        Level::Raid10 => {
            assert_eq!(Raid10Layout::parse(&sb.layout.to_string()), Ok(sb.layout));
            assert!(sb.chunk_kb.is_power_of_two() && sb.chunk_kb <= 1 << 20);
        }
        Level::Raid1 => assert_eq!((sb.layout.near, sb.layout.far), (sb.legs.len() as u32, 1)),
    }
    assert!(geo.copies() >= 2 && geo.copies() <= geo.legs());
    let end = sb.data_offset_blocks.checked_add(sb.leg_data_blocks);
    assert!(end.is_some(), "data_offset_blocks + leg_data_blocks overflows: {sb:?}");
    assert!(geo.used_leg_blocks() <= sb.leg_data_blocks);
    // The metadata: as the geometry derives it, inside the reserved area, covering the data.
    assert_eq!(
        (meta.data_offset_blocks, meta.bitmap_offset_blocks, meta.bitmap_blocks),
        (sb.data_offset_blocks, sb.bitmap_offset_blocks, sb.bitmap_blocks)
    );
    assert!(meta.bitmap_offset_blocks * sb.block_size as u64 >= SUPERBLOCK_BYTES as u64);
    assert!(meta.meta_blocks() <= meta.data_offset_blocks);
    assert!(meta.regions * meta.region_blocks >= geo.data_blocks());
    assert!((meta.regions - 1) * meta.region_blocks < geo.data_blocks().max(1));
    assert!(meta.regions <= meta.bitmap_blocks * sb.block_size as u64 * 8);
    spot_check_mapping(&geo, rng);
    // It encodes back to itself.
    assert_eq!(Superblock::decode(&sb.encode().unwrap()).as_ref(), Ok(sb));
}

/// Maps the first and last blocks and some random ones: copies on distinct legs, inside the
/// used part of each leg, and no place shared by two (block, copy) pairs.
fn spot_check_mapping(geo: &Geometry, rng: &mut Rng) {
    let n = geo.data_blocks();
    let step = geo.chunk_blocks().max(1);
    // Placement repeats by chunk: both ends of the first few chunk rows, and random blocks.
    let mut lbas: HashSet<u64> = (0..4 * geo.legs() as u64)
        .flat_map(|c| [c * step, c * step + step - 1])
        .filter(|&lba| lba < n)
        .collect();
    lbas.extend((0..64).map(|_| rng.below(n)));
    lbas.insert(n - 1);
    let mut places = HashSet::new();
    for &lba in &lbas {
        let set = geo.map(lba).unwrap();
        assert_eq!(set.len() as u32, geo.copies());
        let mut legs = 0u64;
        for c in set.as_slice() {
            assert!(
                c.leg < geo.legs() && c.lba < geo.used_leg_blocks(),
                "{geo:?} lba {lba}: {c:?}"
            );
            assert_eq!(legs & 1 << c.leg, 0, "{geo:?} lba {lba}: two copies on leg {}", c.leg);
            legs |= 1 << c.leg;
            assert!(
                places.insert((c.leg, c.lba)),
                "{geo:?}: leg {} lba {} used twice",
                c.leg,
                c.lba
            );
        }
    }
}

#[test]
fn mutated_superblocks_decode_to_sound_geometries_or_not_at_all() {
    let mut rng = Rng(0x5EED_0001);
    let bases = bases(&mut rng);
    let (mut accepted, mut refused) = (0u64, 0u64);
    let mut reasons = HashSet::new();
    for _ in 0..rounds() {
        for base in &bases {
            let bytes = base.encode().unwrap();
            for _ in 0..60 {
                let b = mutate(&mut rng, &bytes, &bases);
                match Superblock::decode(&b) {
                    Ok(sb) => {
                        assert_sound(&sb, &mut rng);
                        accepted += 1;
                    }
                    Err(e) => {
                        refused += 1;
                        reasons.insert(std::mem::discriminant(&e));
                        if b.len() < SUPERBLOCK_BYTES {
                            assert_eq!(e, SuperblockError::Short(b.len()));
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "decoded {accepted}, refused {refused} ({} kinds of refusal)",
        reasons.len()
    );
    // The mutations reach both sides and many distinct checks.
    assert!(
        accepted > 100 && refused > 1000,
        "accepted {accepted}, refused {refused}"
    );
    assert!(reasons.len() >= 8, "only {} kinds of refusal", reasons.len());
}

/// `base` as it was before a reshape, one metadata write earlier: one leg fewer (a grow added
/// the last slot), a RAID1 with one leg more (a shrink moved the last leg down into an empty
/// slot), or smaller legs (a resize). Some of these pasts are not reshapes the module makes, and
/// their copies must be rejected: a RAID10 with another leg count (its placement depends on
/// it), a RAID10 far layout with smaller legs (it cannot grow). `None` when the shape has no
/// such past.
fn before_reshape(rng: &mut Rng, base: &Superblock) -> Option<Superblock> {
    let mut pre = base.clone();
    let raid1 = base.level == Level::Raid1;
    match rng.below(3) {
        0 if base.legs.len() > 2 => {
            pre.legs.pop();
        }
        1 if raid1 && base.legs.len() < 32 => {
            let k = rng.below(base.legs.len() as u64) as usize;
            let moved = pre.legs[k];
            pre.legs[k] = LegEntry {
                uuid: [0x40 | k as u8; 16],
                role: LegRole::Removed,
                failed_at_events: 0,
            };
            pre.legs.push(moved);
        }
        _ => {
            pre.leg_data_blocks = if rng.chance(50) {
                base.leg_data_blocks / 2
            } else {
                base.leg_data_blocks - 1 - rng.below(64)
            };
            let geo = Geometry::new(&GeometrySpec {
                level: base.level,
                layout: (base.level == Level::Raid10).then_some(base.layout),
                legs: base.legs.len() as u32,
                chunk_bytes: Some(base.chunk_kb as u64 * 1024),
                block_size: base.block_size,
                leg_blocks: pre.leg_data_blocks,
            })
            .ok()?;
            // The region the resize started from: the same, or half (it doubled).
            let half = (base.bitmap_region_kb / 2).max(1);
            let kb = if rng.chance(50) { half } else { base.bitmap_region_kb };
            let meta = MetaLayout::new(base.block_size, geo.data_blocks(), kb).ok()?;
            (pre.bitmap_region_kb, pre.bitmap_blocks) = (kb, meta.bitmap_blocks);
        }
    }
    if raid1 {
        pre.layout.near = pre.legs.len() as u32;
    }
    pre.events = base.events - 1;
    pre.this_slot = 0;
    pre.geometry().ok()?;
    Some(pre)
}

/// A set of copies of one mirror, as its legs could carry them after failures, removals,
/// replacements and reshapes some of them missed, some mutated (through the disk, or in memory,
/// where nothing checks them).
fn family(rng: &mut Rng, base: &Superblock, bases: &[Superblock]) -> Vec<Superblock> {
    let pre = if rng.chance(40) {
        before_reshape(rng, base)
    } else {
        None
    };
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(base.legs.len() as u64 + 3) {
        let (mut sb, events) = match &pre {
            Some(p) if rng.chance(40) => (p.clone(), p.events - rng.below(2)),
            _ => (base.clone(), base.events - rng.below(4)),
        };
        sb.this_slot = rng.below(sb.legs.len() as u64) as u32;
        sb.events = events;
        for (i, l) in sb.legs.iter_mut().enumerate() {
            if rng.chance(15) {
                l.role = rng.pick(&[LegRole::Failed, LegRole::Removed, LegRole::Rebuilding]);
                l.failed_at_events = sb.events - rng.below(3);
            }
            if rng.chance(10) {
                // A replacement leg in that slot.
                l.uuid = [0x80 | i as u8; 16];
            }
        }
        match rng.below(6) {
            0 => {
                let b = mutate(rng, &sb.encode().unwrap(), bases);
                if let Ok(d) = Superblock::decode(&b) {
                    sb = Superblock {
                        mirror_uuid: base.mirror_uuid,
                        ..d
                    };
                }
            }
            1 => match rng.below(6) {
                0 => sb.leg_data_blocks += 1 + rng.below(1 << 12),
                1 => sb.bitmap_region_kb *= 2,
                2 => sb.bitmap_blocks += 1,
                3 => sb.name.clear(),
                4 => sb.layout.offset = !sb.layout.offset,
                _ => sb.chunk_kb *= 2,
            },
            _ => {}
        }
        out.push(sb);
    }
    out
}

/// The slot a valid copy claims (see `choose_legs`), and whether it claims it across a
/// reshape: its `this_slot` when it agrees with the newest; when it is older and differs only
/// by reshapes, the one slot where the newest records its leg uuid; else none.
fn claim(newest: &Superblock, sb: &Superblock) -> Option<(usize, bool)> {
    if newest.disagreement(sb).is_none() {
        return Some((sb.this_slot as usize, false));
    }
    if sb.events >= newest.events || newest.reshape_disagreement(sb).is_some() {
        return None;
    }
    let own = sb.legs[sb.this_slot as usize].uuid;
    let at: Vec<usize> = (0..newest.legs.len()).filter(|&s| newest.legs[s].uuid == own).collect();
    (at.len() == 1).then(|| (at[0], true))
}

/// A copy kept across a reshape describes the same mirror with its data where the newest puts
/// it: identity and offsets unchanged, legs only grown, and every block it holds mapped to the
/// same leg blocks (RAID1 legs hold every block at its own offset whatever their number).
fn assert_reshape_moves_no_data(newest: &Superblock, sb: &Superblock, rng: &mut Rng) {
    assert!(sb.events < newest.events);
    assert_eq!(
        (&sb.mirror_uuid, &sb.name, sb.level, sb.chunk_kb, sb.block_size),
        (
            &newest.mirror_uuid,
            &newest.name,
            newest.level,
            newest.chunk_kb,
            newest.block_size
        )
    );
    assert_eq!(
        (sb.data_offset_blocks, sb.bitmap_offset_blocks),
        (newest.data_offset_blocks, newest.bitmap_offset_blocks)
    );
    assert!(sb.leg_data_blocks <= newest.leg_data_blocks && sb.bitmap_region_kb <= newest.bitmap_region_kb);
    if sb.level == Level::Raid10 {
        assert_eq!((sb.layout, sb.legs.len()), (newest.layout, newest.legs.len()));
    }
    let (old, new) = (sb.geometry().unwrap().0, newest.geometry().unwrap().0);
    let n = old.data_blocks();
    let lbas = [0, n - 1].into_iter().chain((0..32).map(|_| rng.below(n)));
    for lba in lbas {
        let (o, w) = (old.map(lba).unwrap(), new.map(lba).expect("the newest holds it"));
        if sb.legs.len() == newest.legs.len() {
            assert_eq!(o.as_slice(), w.as_slice(), "lba {lba} moved: {sb:?} -> {newest:?}");
        } else {
            assert!(o.as_slice().iter().chain(w.as_slice()).all(|c| c.lba == lba));
        }
    }
}

/// What any assembly `choose_legs` returns must satisfy.
fn assert_assembly_sound(found: &[Superblock], a: &Assembly, rng: &mut Rng) {
    let newest = &found[a.newest];
    let (geo, meta) = newest.geometry().expect("the newest copy is valid");
    assert_eq!((&a.geometry, &a.layout), (&geo, &meta));
    spot_check_mapping(&geo, rng);
    assert_eq!(a.slots.len(), newest.legs.len());
    // No valid copy is newer than the one chosen.
    for sb in found.iter().filter(|s| s.geometry().is_ok()) {
        assert!(sb.events <= newest.events);
    }
    // Every copy is either kept for exactly one slot or rejected, once.
    let mut seen = vec![0; found.len()];
    for &i in a.slots.iter().flatten() {
        seen[i] += 1;
    }
    let claims: Vec<Option<(usize, bool)>> = found
        .iter()
        .map(|sb| sb.geometry().ok().and(claim(newest, sb)))
        .collect();
    for (i, why) in &a.rejected {
        seen[*i] += 1;
        match why {
            Rejection::Invalid(_) => assert!(found[*i].geometry().is_err()),
            Rejection::Disagrees { .. } => assert_eq!(claims[*i], None, "copy {i}: {why}"),
            Rejection::SlotTaken { slot, winner } => {
                assert_eq!(claims[*i].map(|c| c.0), Some(*slot as usize));
                assert_eq!(a.slots[*slot as usize], Some(*winner));
            }
        }
    }
    assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
    assert_eq!(a.bitmap_differs & !a.reshaped, 0, "only a reshape changes the bitmap");
    for (slot, kept) in a.slots.iter().enumerate() {
        let Some(i) = *kept else {
            assert_eq!((a.fresh | a.reshaped | a.bitmap_differs) & 1 << slot, 0);
            assert!(!a.same_bitmap(slot as u32));
            continue;
        };
        let sb = &found[i];
        let (_, meta) = sb.geometry().expect("a kept copy is valid");
        let (claimed, reshaped) = claims[i].expect("a kept copy claims its slot");
        assert_eq!(claimed, slot);
        assert_eq!(a.reshaped & 1 << slot != 0, reshaped);
        if reshaped {
            assert_reshape_moves_no_data(newest, sb, rng);
        } else {
            assert_eq!(newest.disagreement(sb), None, "kept copy {i} disagrees with the newest");
            assert_eq!(sb.this_slot as usize, slot);
        }
        assert_eq!(a.same_bitmap(slot as u32), meta == a.layout);
        assert_eq!(a.bitmap_differs & 1 << slot != 0, meta != a.layout);
        // No claim on the slot is newer than the kept one.
        for (o, c) in found.iter().zip(&claims) {
            if c.is_some_and(|c| c.0 == slot) {
                assert!(o.events <= sb.events);
            }
        }
        if a.fresh & 1 << slot != 0 {
            // At the newest events, or one write behind it (see `choose_legs`).
            assert!(sb.events.saturating_add(1) >= newest.events && sb.events <= newest.events);
            assert_eq!(sb.legs[sb.this_slot as usize].uuid, newest.legs[slot].uuid);
            assert_eq!(newest.legs[slot].role, LegRole::Active);
        }
    }
    assert_eq!(a.fresh & !a.active, 0);
    // Complete: every slot newest calls active is fresh (as the running mirror was, whether or
    // not those legs cover every block); degraded needs the fresh legs to cover every block.
    assert_eq!(a.complete(), a.fresh != 0 && a.active & !a.fresh == 0);
    assert_eq!(
        a.covers_every_block(),
        a.fresh != 0 && a.geometry.every_block_covered(a.fresh)
    );
}

#[test]
fn assembly_from_mutated_sets_is_sound_and_ignores_arrival_order() {
    let mut rng = Rng(0x5EED_0002);
    let bases = bases(&mut rng);
    let (mut assembled, mut rejected) = (0u64, 0u64);
    // Assemblies with a copy kept across a reshape; fresh ones; ones with another bitmap.
    let (mut reshaped, mut reshaped_fresh, mut other_bitmap, mut other_legs) = (0u64, 0u64, 0u64, 0u64);
    for _ in 0..rounds() {
        for base in &bases {
            for _ in 0..12 {
                let mut found = family(&mut rng, base, &bases);
                let Some(a) = choose_legs(&found) else {
                    assert!(found.iter().all(|s| s.geometry().is_err()));
                    continue;
                };
                assembled += 1;
                rejected += a.rejected.len() as u64;
                reshaped += u64::from(a.reshaped != 0);
                reshaped_fresh += u64::from(a.reshaped & a.fresh != 0);
                other_bitmap += u64::from(a.bitmap_differs != 0);
                let legs = found[a.newest].legs.len();
                other_legs += u64::from(a.slots.iter().flatten().any(|&i| found[i].legs.len() != legs));
                assert_assembly_sound(&found, &a, &mut rng);
                // The same copies in another order: the same copies chosen.
                let chosen = |f: &[Superblock], a: &Assembly| {
                    let slots: Vec<Option<Superblock>> = a.slots.iter().map(|c| c.map(|i| f[i].clone())).collect();
                    (f[a.newest].clone(), slots, a.fresh, a.reshaped, a.bitmap_differs)
                };
                let before = chosen(&found, &a);
                for i in (1..found.len()).rev() {
                    found.swap(i, rng.below(i as u64 + 1) as usize);
                }
                let b = choose_legs(&found).expect("the same copies assemble");
                assert_assembly_sound(&found, &b, &mut rng);
                assert_eq!(chosen(&found, &b), before);
            }
        }
    }
    eprintln!(
        "{assembled} sets assembled, {rejected} copies rejected; {reshaped} kept a copy across a reshape \
         ({reshaped_fresh} fresh, {other_bitmap} with another bitmap, {other_legs} with another leg count)"
    );
    assert!(assembled > 500, "only {assembled} sets assembled");
    assert!(rejected > 500, "only {rejected} copies rejected");
    assert!(
        reshaped > 100 && reshaped_fresh > 50 && other_bitmap > 20 && other_legs > 20,
        "reshapes barely reached: {reshaped}, {reshaped_fresh} fresh, {other_bitmap} with another bitmap, \
         {other_legs} with another leg count"
    );
}
