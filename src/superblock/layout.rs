//! Where the metadata sits on every leg: the reserved area before the data, the superblock at
//! its start and the bitmap right after it, for one geometry.

use thiserror::Error;

use super::SUPERBLOCK_BYTES;

/// Room reserved at the start of every leg for the superblock and the bitmap (md and SPDK's
/// raid both reserve 1 MiB): data starts after it, so the data stays 1 MiB aligned.
pub const RESERVED_BYTES: u64 = 1 << 20;

/// Where the metadata lives on every leg, for one geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaLayout {
    pub data_offset_blocks: u64,
    /// The bitmap starts right after the 4096-byte superblock.
    pub bitmap_offset_blocks: u64,
    pub bitmap_blocks: u64,
    pub region_blocks: u64,
    pub regions: u64,
}

/// Largest bitmap region (1 TiB of mirror data per bit), as the create RPC allows.
pub const MAX_REGION_KB: u32 = 1 << 30;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LayoutError {
    #[error(
        "bitmap_region_kb: must be a power of two of at least the block size and at most {MAX_REGION_KB}, got {0} KiB"
    )]
    Region(u32),
    #[error("bitmap_region_kb: {regions} regions of {region_kb} KiB do not fit the {max} the reserved area holds; use larger regions")]
    TooManyRegions { regions: u64, region_kb: u32, max: u64 },
}

impl MetaLayout {
    /// Blocks reserved before the data on every leg.
    pub fn data_offset_blocks(block_size: u32) -> u64 {
        RESERVED_BYTES.div_ceil(block_size as u64)
    }

    /// The layout for a mirror of `data_blocks` (mirror blocks, which the bitmap covers).
    /// The bitmap is stored as little-endian 64-bit words, so its size rounds up to 8 bytes.
    pub fn new(block_size: u32, data_blocks: u64, region_kb: u32) -> Result<MetaLayout, LayoutError> {
        let bs = block_size as u64;
        let region_bytes = region_kb as u64 * 1024;
        if region_kb == 0 || !region_kb.is_power_of_two() || region_bytes < bs || region_kb > MAX_REGION_KB {
            return Err(LayoutError::Region(region_kb));
        }
        let data_offset_blocks = Self::data_offset_blocks(block_size);
        let bitmap_offset_blocks = (SUPERBLOCK_BYTES as u64).div_ceil(bs);
        let region_blocks = region_bytes / bs;
        let regions = data_blocks.div_ceil(region_blocks).max(1);
        let bitmap_bytes = regions.div_ceil(64) * 8;
        let bitmap_blocks = bitmap_bytes.div_ceil(bs);
        let room = data_offset_blocks - bitmap_offset_blocks;
        if bitmap_blocks > room {
            return Err(LayoutError::TooManyRegions {
                regions,
                region_kb,
                max: room * bs * 8,
            });
        }
        Ok(MetaLayout {
            data_offset_blocks,
            bitmap_offset_blocks,
            bitmap_blocks,
            region_blocks,
            regions,
        })
    }

    /// The layout for the mirror grown to `data_blocks`: `region_kb` when its regions fit the
    /// reserved area, else the smallest power-of-two multiple of it whose regions do (md
    /// doubles its bitmap chunk the same way), with the region size used. The reserved area is
    /// fixed, so `data_offset_blocks` and `bitmap_offset_blocks` are those of any layout for
    /// this block size. Errors as [`MetaLayout::new`]: `region_kb` itself invalid, or no region
    /// up to [`MAX_REGION_KB`] fits.
    pub fn resized(block_size: u32, data_blocks: u64, region_kb: u32) -> Result<(MetaLayout, u32), LayoutError> {
        let mut kb = region_kb;
        loop {
            match MetaLayout::new(block_size, data_blocks, kb) {
                Err(LayoutError::TooManyRegions { .. }) if kb < MAX_REGION_KB => kb *= 2,
                r => return r.map(|l| (l, kb)),
            }
        }
    }

    /// Blocks of one metadata write: the superblock and the bitmap after it.
    pub fn meta_blocks(&self) -> u64 {
        self.bitmap_offset_blocks + self.bitmap_blocks
    }
}
