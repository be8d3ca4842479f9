//! How a parent I/O breaks into children: chunk-bounded segments, and for each segment one
//! child per copy (writes) or one child on a chosen copy (reads). Pure arithmetic.

use crate::placement::{Geometry, Level};

/// Most segments one parent may span. Write success is tracked per segment in a `u64`; the SPDK
/// glue asks the bdev layer to cut longer host I/O (`max_request_blocks`).
pub const MAX_SEGMENTS: u64 = 64;

/// Number of chunk-bounded segments in `[lba, lba + blocks)` (`blocks > 0`).
pub fn segment_count(geo: &Geometry, lba: u64, blocks: u64) -> u64 {
    match geo.level() {
        Level::Raid1 => 1,
        Level::Raid10 => {
            let shift = geo.chunk_blocks().trailing_zeros();
            ((lba + blocks - 1) >> shift) - (lba >> shift) + 1
        }
    }
}

/// Longest request (in blocks) that spans at most [`MAX_SEGMENTS`] segments wherever it starts,
/// `None` when any length does (RAID1: one segment). `MAX_SEGMENTS - 1` chunks and one block:
/// started in a chunk's last block, that is one block there and whole chunks after. The SPDK
/// glue gives it to the bdev layer as the read-write, unmap and write-zeroes limits, so longer
/// ones arrive cut to it.
pub fn max_request_blocks(geo: &Geometry) -> Option<u64> {
    match geo.level() {
        Level::Raid1 => None,
        Level::Raid10 => Some((MAX_SEGMENTS - 1) * geo.chunk_blocks() + 1),
    }
}

/// Segment `k` of `[lba, lba + blocks)`: its first block and length.
pub fn segment(geo: &Geometry, lba: u64, blocks: u64, k: u64) -> (u64, u64) {
    if k == 0 {
        return (lba, blocks.min(geo.run_len(lba)));
    }
    let chunk = geo.chunk_blocks();
    let start = (lba & !(chunk - 1)) + k * chunk;
    (start, chunk.min(lba + blocks - start))
}

/// All-ones mask over `n` segments.
pub fn full_mask(n: u32) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{GeometrySpec, Raid10Layout};

    #[test]
    fn max_request_blocks_fits_max_segments_at_every_offset() {
        for (layout, chunk_bytes, legs) in [("n2", 4096, 4), ("f2", 512, 3), ("o2", 65536, 5), ("n3", 1 << 20, 6)] {
            let layout = Raid10Layout::parse(layout).unwrap();
            let geo = Geometry::new(&GeometrySpec {
                level: Level::Raid10,
                layout: Some(layout),
                legs,
                chunk_bytes: Some(chunk_bytes),
                block_size: 512,
                leg_blocks: 1 << 22,
            })
            .unwrap();
            let max = max_request_blocks(&geo).unwrap();
            let chunk = geo.chunk_blocks();
            // Every offset within a chunk: the longest request fits, one block more does not
            // where the request starts in a chunk's last block.
            for lba in 0..chunk {
                assert!(segment_count(&geo, lba, max) <= MAX_SEGMENTS, "{layout:?} lba {lba}");
            }
            assert_eq!(segment_count(&geo, chunk - 1, max + 1), MAX_SEGMENTS + 1, "{layout:?}");
        }
        let raid1 = Geometry::new(&GeometrySpec {
            level: Level::Raid1,
            layout: None,
            legs: 2,
            chunk_bytes: None,
            block_size: 512,
            leg_blocks: 1 << 22,
        })
        .unwrap();
        assert_eq!(max_request_blocks(&raid1), None);
    }

    #[test]
    fn segments_cover_the_request_at_chunk_boundaries() {
        let geo = Geometry::new(&GeometrySpec {
            level: Level::Raid10,
            layout: Some(Raid10Layout::N2),
            legs: 4,
            chunk_bytes: Some(4096),
            block_size: 512,
            leg_blocks: 1024,
        })
        .unwrap();
        // chunk = 8 blocks; [5, 5+20) = 5..8, 8..16, 16..24, 24..25
        assert_eq!(segment_count(&geo, 5, 20), 4);
        let segs: Vec<_> = (0..4).map(|k| segment(&geo, 5, 20, k)).collect();
        assert_eq!(segs, vec![(5, 3), (8, 8), (16, 8), (24, 1)]);
        assert_eq!(segment_count(&geo, 8, 8), 1);
        assert_eq!(segment(&geo, 8, 8, 0), (8, 8));
    }
}
