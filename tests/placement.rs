//! Placement: md(4)'s worked examples and properties over many geometries.

use std::collections::HashSet;

use spdk_mirror::placement::{Geometry, GeometryError, GeometrySpec, Level, Raid10Layout};

fn raid10(layout: &str, legs: u32, chunk_kb: u64, block_size: u32, leg_blocks: u64) -> Geometry {
    Geometry::new(&GeometrySpec {
        level: Level::Raid10,
        layout: Some(Raid10Layout::parse(layout).unwrap()),
        legs,
        chunk_bytes: Some(chunk_kb * 1024),
        block_size,
        leg_blocks,
    })
    .unwrap()
}

/// The grid md(4) draws: `rows[r][leg]` is the array chunk stored in chunk row `r` of `leg`.
fn chunk_grid(geo: &Geometry) -> Vec<Vec<Option<u64>>> {
    let chunk = geo.chunk_blocks();
    let rows = (geo.used_leg_blocks() / chunk) as usize;
    let mut grid = vec![vec![None; geo.legs() as usize]; rows];
    for c in 0..geo.data_blocks() / chunk {
        for copy in geo.map(c * chunk).unwrap().as_slice() {
            assert_eq!(copy.lba % chunk, 0);
            let cell = &mut grid[(copy.lba / chunk) as usize][copy.leg as usize];
            assert!(
                cell.is_none(),
                "two chunks on leg {} row {}",
                copy.leg,
                copy.lba / chunk
            );
            *cell = Some(c);
        }
    }
    grid
}

fn rows(grid: &[Vec<Option<u64>>], from: usize, n: usize) -> Vec<Vec<u64>> {
    grid[from..from + n]
        .iter()
        .map(|r| r.iter().map(|c| c.expect("cell used")).collect())
        .collect()
}

#[test]
fn md4_near_two_copies_on_three_devices() {
    // md(4): n2 over 3 devices, rows "0 0 1 / 1 2 2 / 3 3 4".
    let geo = raid10("n2", 3, 4, 512, 8 * 10);
    let grid = chunk_grid(&geo);
    assert_eq!(rows(&grid, 0, 3), vec![vec![0, 0, 1], vec![1, 2, 2], vec![3, 3, 4]]);
}

#[test]
fn md4_far_two_copies_on_four_devices() {
    // md(4): f2 over 4 devices; first half "0 1 2 3 / 4 5 6 7", second half "3 0 1 2 / 7 4 5 6".
    let geo = raid10("f2", 4, 4, 512, 8 * 4);
    let grid = chunk_grid(&geo);
    assert_eq!(grid.len(), 4);
    assert_eq!(rows(&grid, 0, 2), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
    assert_eq!(rows(&grid, 2, 2), vec![vec![3, 0, 1, 2], vec![7, 4, 5, 6]]);
}

#[test]
fn md4_offset_two_copies_on_three_devices() {
    // md(4): o2 over 3 devices, rows "0 1 2 / 2 0 1 / 3 4 5 / 5 3 4".
    let geo = raid10("o2", 3, 4, 512, 8 * 8);
    let grid = chunk_grid(&geo);
    assert_eq!(
        rows(&grid, 0, 4),
        vec![vec![0, 1, 2], vec![2, 0, 1], vec![3, 4, 5], vec![5, 3, 4]]
    );
}

#[test]
fn blocks_within_a_chunk_map_contiguously() {
    let geo = raid10("f2", 5, 64, 4096, 16 * 40);
    let base = geo.map(3 * 16).unwrap();
    for i in 0..16 {
        let set = geo.map(3 * 16 + i).unwrap();
        for (a, b) in base.as_slice().iter().zip(set.as_slice()) {
            assert_eq!((a.leg, a.lba + i), (b.leg, b.lba));
        }
    }
}

#[test]
fn data_size_matches_md() {
    // md: chunks = leg_chunks / far * disks / near, counted on the used (rounded) size.
    assert_eq!(raid10("n2", 4, 64, 512, 128 * 100).data_blocks(), 200 * 128);
    assert_eq!(raid10("n2", 3, 64, 512, 128 * 101).data_blocks(), 151 * 128);
    assert_eq!(raid10("f2", 4, 64, 512, 128 * 101).data_blocks(), 200 * 128);
    assert_eq!(raid10("o2", 3, 64, 512, 128 * 101).data_blocks(), 150 * 128);
    assert_eq!(raid10("n3", 4, 64, 512, 128 * 100).data_blocks(), 133 * 128);
    // The blocks of a partial trailing chunk are never used.
    assert_eq!(raid10("n2", 2, 64, 512, 128 * 10 + 127).data_blocks(), 10 * 128);
}

/// Every geometry we can think of, small enough to check block by block.
fn geometries() -> Vec<Geometry> {
    let mut out = Vec::new();
    for legs in 2..=7u32 {
        out.push(
            Geometry::new(&GeometrySpec {
                level: Level::Raid1,
                layout: None,
                legs,
                chunk_bytes: None,
                block_size: 512,
                leg_blocks: 333,
            })
            .unwrap(),
        );
        for layout in ["n2", "n3", "f2", "f3", "o2", "o3", "n4", "f4", "o4"] {
            let l = Raid10Layout::parse(layout).unwrap();
            if l.copies() > legs {
                continue;
            }
            for (chunk_kb, bs) in [(4, 512), (8, 4096), (1, 1024)] {
                for leg_chunks in [7u64, 12, 13] {
                    let chunk_blocks = chunk_kb * 1024 / bs as u64;
                    out.push(raid10(layout, legs, chunk_kb, bs, chunk_blocks * leg_chunks + 1));
                }
            }
        }
    }
    out
}

#[test]
fn every_block_has_distinct_copies_and_no_two_blocks_share_a_place() {
    for geo in geometries() {
        let mut used = HashSet::new();
        for lba in 0..geo.data_blocks() {
            let set = geo.map(lba).unwrap();
            assert_eq!(set.len() as u32, geo.copies(), "{geo:?} lba {lba}");
            let legs: HashSet<u32> = set.as_slice().iter().map(|c| c.leg).collect();
            assert_eq!(legs.len(), set.len(), "{geo:?} lba {lba}: copies share a leg");
            for c in set.as_slice() {
                assert!(c.leg < geo.legs());
                assert!(c.lba < geo.used_leg_blocks() && geo.used_leg_blocks() <= geo.leg_blocks());
                assert!(
                    used.insert((c.leg, c.lba)),
                    "{geo:?}: leg {} lba {} used twice",
                    c.leg,
                    c.lba
                );
            }
            assert_eq!(set, geo.map(lba).unwrap(), "map is deterministic");
        }
        // md's placement wastes at most what its rounding leaves: the data fills the legs.
        assert_eq!(used.len() as u64, geo.data_blocks() * geo.copies() as u64);
    }
}

#[test]
fn block_size_does_not_change_the_layout() {
    // md computes in 512-byte sectors; we compute in blocks. The same geometry in 4K blocks and
    // in 512-byte blocks must put every byte in the same place.
    for layout in ["n2", "f2", "o2", "n3", "f3"] {
        for legs in 3..=5 {
            let big = raid10(layout, legs, 64, 4096, 16 * 23);
            let small = raid10(layout, legs, 64, 512, 128 * 23);
            assert_eq!(big.data_blocks() * 8, small.data_blocks());
            for lba in 0..big.data_blocks() {
                let a = big.map(lba).unwrap();
                let b = small.map(lba * 8 + 3).unwrap();
                for (x, y) in a.as_slice().iter().zip(b.as_slice()) {
                    assert_eq!((x.leg, x.lba * 8 + 3), (y.leg, y.lba));
                }
            }
        }
    }
}

#[test]
fn bad_geometry_names_the_field() {
    let spec = |legs, layout: &str, chunk: u64, bs: u32, leg_blocks| GeometrySpec {
        level: Level::Raid10,
        layout: Some(Raid10Layout::parse(layout).unwrap()),
        legs,
        chunk_bytes: Some(chunk),
        block_size: bs,
        leg_blocks,
    };
    let err = |s| Geometry::new(&s).unwrap_err();
    assert!(matches!(
        err(spec(2, "n3", 4096, 512, 100)),
        GeometryError::CopiesExceedLegs { .. }
    ));
    assert!(err(spec(2, "n3", 4096, 512, 100)).to_string().starts_with("legs:"));
    assert!(err(spec(4, "n2", 3072, 512, 100)).to_string().starts_with("chunk_kb:"));
    assert!(err(spec(4, "n2", 2048, 4096, 100)).to_string().starts_with("chunk_kb:"));
    assert!(err(spec(4, "n2", 4096, 1000, 100))
        .to_string()
        .starts_with("block_size:"));
    assert!(err(spec(4, "n2", 4096, 512, 7)).to_string().starts_with("leg_blocks:"));
    assert!(Raid10Layout::parse("x2")
        .unwrap_err()
        .to_string()
        .starts_with("layout:"));
    let geo = raid10("n2", 4, 4, 512, 80);
    assert!(geo.map(geo.data_blocks()).unwrap_err().to_string().starts_with("lba:"));
}
