//! Checking data against the placement: every 512-byte block of test data is a stamp saying
//! which mirror block it is ([`stamp`]); [`check_placement`] reads leg images block by block
//! against [`Geometry::map`]; [`geometry`] is what the module should build.

use std::fs;
use std::ops::Range;
use std::path::Path;

use spdk_mirror::placement::{Geometry, GeometrySpec, Level, Raid10Layout};

/// The block size of stamps, and of the geometries built here.
pub const STAMP_BLOCK_SIZE: u32 = 512;

/// The geometry the module should build for these parameters, on 512-byte blocks.
pub fn geometry(level: &str, layout: Option<&str>, legs: u32, chunk_kb: u64, leg_blocks: u64) -> Geometry {
    let level = Level::parse(level).expect("test uses a valid level");
    Geometry::new(&GeometrySpec {
        level,
        layout: layout.map(|l| Raid10Layout::parse(l).expect("test uses a valid layout")),
        legs,
        chunk_bytes: Some(chunk_kb * 1024),
        block_size: STAMP_BLOCK_SIZE,
        leg_blocks,
    })
    .expect("test uses a valid geometry")
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The content of mirror block `lba` in a run with `seed`: the lba, the seed, then pseudo-random
/// bytes derived from both. Never all zeros.
pub fn stamp(lba: u64, seed: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(STAMP_BLOCK_SIZE as usize);
    b.extend_from_slice(&lba.to_le_bytes());
    b.extend_from_slice(&seed.to_le_bytes());
    let mut x = lba.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ seed;
    while b.len() < STAMP_BLOCK_SIZE as usize {
        x = splitmix(x);
        b.extend_from_slice(&x.to_le_bytes());
    }
    b
}

/// The stamps of mirror blocks `range`, back to back.
pub fn stamps(range: Range<u64>, seed: u64) -> Vec<u8> {
    range.flat_map(|lba| stamp(lba, seed)).collect()
}

/// What a block holds, for error messages.
pub fn describe_block(block: &[u8], seed: u64) -> String {
    if block.iter().all(|&b| b == 0) {
        "zeros".to_string()
    } else if block.len() >= 16 && block[8..16] == seed.to_le_bytes() {
        let lba = u64::from_le_bytes(block[..8].try_into().unwrap());
        if stamp(lba, seed) == block {
            format!("the stamp of mirror block {lba}")
        } else {
            format!("a damaged stamp of mirror block {lba}")
        }
    } else {
        "foreign data".to_string()
    }
}

/// Checks leg images against the placement: for every mirror block in `written`, each copy that
/// `geo.map` gives holds that block's stamp at `copy.lba` on leg `copy.leg`; every other block of
/// every leg is still zero. Returns the problems found (at most 20 described, plus a count).
pub fn check_placement(geo: &Geometry, legs: &[Vec<u8>], written: &[Range<u64>], seed: u64) -> Vec<String> {
    let bs = geo.block_size() as usize;
    const NONE: u64 = u64::MAX;
    let mut problems = Vec::new();
    let mut expected: Vec<Vec<u64>> = legs.iter().map(|l| vec![NONE; l.len() / bs]).collect();
    for r in written {
        for lba in r.clone() {
            let copies = match geo.map(lba) {
                Ok(c) => c,
                Err(e) => {
                    problems.push(format!("placement cannot map mirror block {lba}: {e}"));
                    continue;
                }
            };
            for c in copies.as_slice() {
                let leg = c.leg as usize;
                match expected.get_mut(leg).and_then(|l| l.get_mut(c.lba as usize)) {
                    None => problems.push(format!(
                        "copy of mirror block {lba} at leg {leg} block {} is outside the leg",
                        c.lba
                    )),
                    Some(slot) if *slot != NONE => problems.push(format!(
                        "leg {leg} block {} would hold both mirror block {} and {lba}",
                        c.lba, *slot
                    )),
                    Some(slot) => *slot = lba,
                }
            }
        }
    }
    let mut bad = 0usize;
    for (leg, image) in legs.iter().enumerate() {
        for (blk, want) in expected[leg].iter().enumerate() {
            let got = &image[blk * bs..(blk + 1) * bs];
            let ok = if *want == NONE {
                got.iter().all(|&b| b == 0)
            } else {
                got == stamp(*want, seed).as_slice()
            };
            if !ok {
                bad += 1;
                if bad <= 20 {
                    let want_s = if *want == NONE {
                        "zeros (no mirror block maps here)".to_string()
                    } else {
                        format!("the stamp of mirror block {want}")
                    };
                    problems.push(format!(
                        "leg {leg} block {blk}: expected {want_s}, found {}",
                        describe_block(got, seed)
                    ));
                }
            }
        }
    }
    if bad > 20 {
        problems.push(format!("... {bad} wrong leg blocks in all"));
    }
    problems
}

/// The bytes of `p` (panics naming the file).
pub fn read_file(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}
