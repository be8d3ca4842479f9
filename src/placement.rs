//! Where each block of a mirror lives on its legs.
//!
//! RAID1: every leg holds every block at the same offset. RAID10: Linux md's placement, computed
//! exactly as `drivers/md/raid10.c` does (`setup_geo`, `calc_sectors`, `raid10_size`,
//! `__raid10_find_phys`) with md's original far layout (`far_set_size == raid_disks`), so an array
//! laid out here can be read by md with the same geometry and vice versa.
//!
//! md works in 512-byte sectors; we work in blocks. Because the chunk is a power-of-two number of
//! blocks, every step of md's math (shift to chunks, divide, shift back) gives the same layout in
//! either unit.
//!
//! This module knows nothing of SPDK.

use std::fmt;

use thiserror::Error;

/// Most legs a mirror may have (leg sets are kept as `u32` bit masks).
pub const MAX_LEGS: usize = 32;

/// What every caller says of a leg number out of range (a range like `0..2` read as inclusive).
pub fn no_such_leg(leg: u32, legs: impl fmt::Display) -> String {
    format!("leg {leg} does not exist (there are {legs} legs, numbered from 0)")
}

/// The RAID10 chunk used when none is given: the create RPC's, so that `map` and `simulate`
/// without `--chunk-kb` describe a mirror created with defaults (md's own default is 512 KiB;
/// 64 KiB is SPDK's raid0 strip, which a mirror is compared with).
pub const DEFAULT_CHUNK_KB: u64 = 64;

/// Largest RAID10 chunk (1 GiB), as the create RPC allows: a superblock may not claim more.
pub const MAX_CHUNK_KB: u64 = 1 << 20;

/// A geometry that cannot be built, or a block outside it. Each message names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GeometryError {
    #[error("level: unknown level '{0}' (expected raid1 or raid10)")]
    UnknownLevel(String),
    #[error("layout: unknown raid10 layout '{0}' (expected n<copies>, f<copies> or o<copies>, e.g. n2)")]
    UnknownLayout(String),
    #[error("layout: raid10 needs at least 2 copies, layout '{0}' has {1}")]
    TooFewCopies(String, u32),
    #[error("layout: '{0}' mixes near and far copies, which mdadm never creates (some such layouts put two chunks in one place)")]
    MixedLayout(String),
    #[error("layout: '{0}' sets the offset flag without far copies")]
    OffsetWithoutFar(String),
    #[error("layout: applies to raid10 only, not raid1")]
    LayoutOnRaid1,
    #[error("legs: raid1 needs at least 2 legs, got {0}")]
    Raid1TooFewLegs(u32),
    #[error("legs: layout {layout} keeps {copies} copies but there are only {legs} legs")]
    CopiesExceedLegs { layout: String, copies: u32, legs: u32 },
    #[error("legs: at most {MAX_LEGS} legs are supported, got {0}")]
    TooManyLegs(u32),
    #[error("block_size: must be a power of two of at least 512 bytes, got {0}")]
    BadBlockSize(u32),
    #[error("chunk_kb: chunk must be a power of two, got {0} KiB")]
    ChunkNotPowerOfTwo(u64),
    #[error("chunk_kb: chunk of {chunk_bytes} bytes is smaller than a block ({block_size} bytes)")]
    ChunkSmallerThanBlock { chunk_bytes: u64, block_size: u32 },
    #[error("chunk_kb: at most {MAX_CHUNK_KB} KiB, got {0} KiB")]
    ChunkTooLarge(u64),
    #[error("leg_blocks: legs of {0} blocks leave no room for data in this geometry")]
    NoDataBlocks(u64),
    #[error("leg_blocks: legs of {0} blocks are too large to address in this geometry")]
    TooManyBlocks(u64),
    #[error("layout: a raid10 far layout ({0}) cannot be resized: its far copies sit at an offset proportional to the leg size, so existing data would move (md refuses too)")]
    FarLayoutResize(String),
    #[error("leg_blocks: legs of {new} blocks are smaller than the current {current}; shrinking would drop data")]
    ShrinkLegs { current: u64, new: u64 },
    #[error("lba: block {lba} is out of range (the mirror has {data_blocks} data blocks)")]
    LbaOutOfRange { lba: u64, data_blocks: u64 },
}

/// Mirror level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    Raid1,
    Raid10,
}

impl Level {
    pub fn parse(s: &str) -> Result<Self, GeometryError> {
        match s {
            "raid1" | "1" => Ok(Level::Raid1),
            "raid10" | "10" => Ok(Level::Raid10),
            other => Err(GeometryError::UnknownLevel(other.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Raid1 => "raid1",
            Level::Raid10 => "raid10",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A RAID10 layout as md encodes it: `near` copies in adjacent devices, `far` copies further away
/// (in a distant region of each device, or with `offset`, in the next chunk row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Raid10Layout {
    pub near: u32,
    pub far: u32,
    pub offset: bool,
}

impl Raid10Layout {
    pub const N2: Raid10Layout = Raid10Layout {
        near: 2,
        far: 1,
        offset: false,
    };

    /// Parses mdadm's names: `n<k>` (near), `f<k>` (far), `o<k>` (offset), `k >= 2`. md's kernel
    /// also accepts mixed near/far numbers that mdadm never creates; some of those (near with
    /// offset on an odd number of devices) place two chunks on one spot, so they are refused.
    pub fn parse(s: &str) -> Result<Self, GeometryError> {
        let bad = || GeometryError::UnknownLayout(s.to_string());
        let (kind, digits) = s.split_at(s.chars().next().map_or(0, char::len_utf8));
        if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let copies: u32 = digits.parse().map_err(|_| bad())?;
        let layout = match kind {
            "n" => Raid10Layout {
                near: copies,
                far: 1,
                offset: false,
            },
            "f" => Raid10Layout {
                near: 1,
                far: copies,
                offset: false,
            },
            "o" => Raid10Layout {
                near: 1,
                far: copies,
                offset: true,
            },
            _ => return Err(bad()),
        };
        if copies < 2 {
            return Err(GeometryError::TooFewCopies(s.to_string(), copies));
        }
        Ok(layout)
    }

    /// Whether this layout is one mdadm (and the create RPC) would build over `legs` legs: the
    /// one rule every way of making a geometry goes through ([`Geometry::new`] calls it), so a
    /// layout read from a superblock is held to what `parse` allows. Exactly one of `near` and
    /// `far` may exceed 1 (md's kernel also takes mixes, but `n2o2` on 5 legs, for one, maps
    /// two blocks to one place), at least 2 copies, no more copies than legs, and the offset
    /// flag only with far copies (without them it would be a second spelling of `n<k>`).
    pub fn validate(&self, legs: u32) -> Result<(), GeometryError> {
        let copies = self.near.saturating_mul(self.far);
        if copies < 2 {
            return Err(GeometryError::TooFewCopies(self.to_string(), copies));
        }
        if self.near > 1 && self.far > 1 {
            return Err(GeometryError::MixedLayout(self.to_string()));
        }
        if self.offset && self.far < 2 {
            return Err(GeometryError::OffsetWithoutFar(self.to_string()));
        }
        if copies > legs {
            return Err(GeometryError::CopiesExceedLegs {
                layout: self.to_string(),
                copies,
                legs,
            });
        }
        Ok(())
    }

    pub fn copies(&self) -> u32 {
        self.near * self.far
    }
}

impl fmt::Display for Raid10Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let far = if self.offset { 'o' } else { 'f' };
        match (self.near, self.far) {
            (n, 1) => write!(f, "n{n}"),
            (1, k) => write!(f, "{far}{k}"),
            (n, k) => write!(f, "n{n}{far}{k}"),
        }
    }
}

/// What a user asks for; [`Geometry::new`] checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeometrySpec {
    pub level: Level,
    /// RAID10 only; `None` means md's default `n2`.
    pub layout: Option<Raid10Layout>,
    pub legs: u32,
    /// RAID10 only; `None` means `DEFAULT_CHUNK_KB`.
    pub chunk_bytes: Option<u64>,
    pub block_size: u32,
    /// Usable blocks on each leg (after any superblock reservation); the smallest leg counts.
    pub leg_blocks: u64,
}

/// One copy of a block: which leg, and where on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Copy {
    pub leg: u32,
    pub lba: u64,
}

/// The copies of one block, in md's slot order (each near copy followed by its far copies).
/// Fixed capacity so that mapping never allocates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CopySet {
    len: u8,
    items: [Copy; MAX_LEGS],
}

impl CopySet {
    fn new() -> Self {
        CopySet {
            len: 0,
            items: [Copy::default(); MAX_LEGS],
        }
    }

    fn push(&mut self, leg: u32, lba: u64) {
        self.items[self.len as usize] = Copy { leg, lba };
        self.len += 1;
    }

    pub fn as_slice(&self) -> &[Copy] {
        &self.items[..self.len as usize]
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The copy kept on `leg`, if any.
    pub fn on_leg(&self, leg: u32) -> Option<Copy> {
        self.as_slice().iter().copied().find(|c| c.leg == leg)
    }
}

impl fmt::Debug for CopySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// `Geometry::legs_shift` for a leg count that is not a power of two.
const NOT_POW2: u32 = u32::MAX;

fn legs_shift(legs: u32) -> u32 {
    if legs.is_power_of_two() {
        legs.trailing_zeros()
    } else {
        NOT_POW2
    }
}

/// A checked mirror geometry with everything md derives from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    level: Level,
    layout: Raid10Layout,
    legs: u32,
    block_size: u32,
    /// log2 of the chunk in blocks (RAID10); 0 for RAID1, where it is unused.
    chunk_shift: u32,
    /// log2 of the leg count when it is a power of two, else `NOT_POW2`: a RAID10 row is
    /// then a shift and a mask, not a 64-bit division (tens of cycles on every I/O).
    legs_shift: u32,
    leg_blocks: u64,
    /// Blocks of each leg that hold data (md's `conf->dev_sectors`).
    used_leg_blocks: u64,
    /// Distance between a block's far copies on a leg (md's `geo.stride`).
    stride: u64,
    data_blocks: u64,
}

impl Geometry {
    pub fn new(spec: &GeometrySpec) -> Result<Self, GeometryError> {
        if spec.block_size < 512 || !spec.block_size.is_power_of_two() {
            return Err(GeometryError::BadBlockSize(spec.block_size));
        }
        if spec.legs as usize > MAX_LEGS {
            return Err(GeometryError::TooManyLegs(spec.legs));
        }
        match spec.level {
            Level::Raid1 => {
                if spec.layout.is_some() {
                    return Err(GeometryError::LayoutOnRaid1);
                }
                if spec.legs < 2 {
                    return Err(GeometryError::Raid1TooFewLegs(spec.legs));
                }
                if spec.leg_blocks == 0 {
                    return Err(GeometryError::NoDataBlocks(0));
                }
                Ok(Geometry {
                    level: Level::Raid1,
                    layout: Raid10Layout {
                        near: spec.legs,
                        far: 1,
                        offset: false,
                    },
                    legs: spec.legs,
                    block_size: spec.block_size,
                    chunk_shift: 0,
                    legs_shift: legs_shift(spec.legs),
                    leg_blocks: spec.leg_blocks,
                    used_leg_blocks: spec.leg_blocks,
                    stride: 0,
                    data_blocks: spec.leg_blocks,
                })
            }
            Level::Raid10 => Self::raid10(spec),
        }
    }

    fn raid10(spec: &GeometrySpec) -> Result<Self, GeometryError> {
        let layout = spec.layout.unwrap_or(Raid10Layout::N2);
        layout.validate(spec.legs)?;
        let chunk_bytes = spec.chunk_bytes.unwrap_or(DEFAULT_CHUNK_KB * 1024);
        if chunk_bytes == 0 || !chunk_bytes.is_power_of_two() {
            return Err(GeometryError::ChunkNotPowerOfTwo(chunk_bytes / 1024));
        }
        if chunk_bytes > MAX_CHUNK_KB * 1024 {
            return Err(GeometryError::ChunkTooLarge(chunk_bytes / 1024));
        }
        if chunk_bytes < spec.block_size as u64 {
            return Err(GeometryError::ChunkSmallerThanBlock {
                chunk_bytes,
                block_size: spec.block_size,
            });
        }
        let chunk_shift = (chunk_bytes / spec.block_size as u64).trailing_zeros();
        Self::raid10_shape(spec, layout, chunk_shift)
    }

    /// md's arithmetic for a RAID10 layout, without judging the layout (the exhaustive test
    /// maps refused layouts through it to show that they collide). `near`, `far` and `legs`
    /// must be non-zero.
    fn raid10_shape(spec: &GeometrySpec, layout: Raid10Layout, chunk_shift: u32) -> Result<Self, GeometryError> {
        let copies = layout.copies();
        let (near, far, disks) = (layout.near as u64, layout.far as u64, spec.legs as u64);

        // md's calc_sectors(): chunks in the array, then chunks each device really uses
        // (rounded up), then the far stride. Checked: a superblock may claim any leg size.
        let too_big = || GeometryError::TooManyBlocks(spec.leg_blocks);
        let array_chunks = ((spec.leg_blocks >> chunk_shift) / far)
            .checked_mul(disks)
            .ok_or_else(too_big)?
            / near;
        let used_chunks = array_chunks
            .checked_mul(copies as u64)
            .ok_or_else(too_big)?
            .div_ceil(disks);
        // At most the leg's own chunks (copies = near * far), so this shift cannot overflow.
        let used_leg_blocks = used_chunks << chunk_shift;
        let stride = if layout.offset {
            1u64 << chunk_shift
        } else {
            (used_chunks / far) << chunk_shift
        };
        // md's raid10_size(), applied to the used size as md does.
        let data_blocks = ((used_leg_blocks >> chunk_shift) / far)
            .checked_mul(disks)
            .map(|c| c / near)
            .and_then(|c| c.checked_mul(1u64 << chunk_shift))
            .ok_or_else(too_big)?;
        if data_blocks == 0 {
            return Err(GeometryError::NoDataBlocks(spec.leg_blocks));
        }
        Ok(Geometry {
            level: Level::Raid10,
            layout,
            legs: spec.legs,
            block_size: spec.block_size,
            chunk_shift,
            legs_shift: legs_shift(spec.legs),
            leg_blocks: spec.leg_blocks,
            used_leg_blocks,
            stride,
            data_blocks,
        })
    }

    /// The same geometry over legs of `leg_blocks` blocks each: what the mirror becomes when
    /// every leg has grown (md's `--grow --size=max`, `raid10_resize`). Every block of the
    /// current mirror keeps exactly its copies (same legs, same leg blocks); the blocks added
    /// at the end land in leg space no current block uses. The new size is held to every rule
    /// [`Geometry::new`] applies, rounded the same way (`used_leg_blocks`, `data_blocks`).
    ///
    /// Refused: RAID10 far layouts (`f<k>`), whose far copies sit a fraction of the leg size
    /// away, so every far copy would move (md's `raid10_resize` refuses them too; offset
    /// layouts, whose far copies are one chunk row away, grow like near ones); and legs smaller
    /// than now, which would drop data. Legs of the current size give the same geometry.
    pub fn resized(&self, leg_blocks: u64) -> Result<Geometry, GeometryError> {
        if self.level == Level::Raid10 && self.layout.far > 1 && !self.layout.offset {
            return Err(GeometryError::FarLayoutResize(self.layout.to_string()));
        }
        if leg_blocks < self.leg_blocks {
            return Err(GeometryError::ShrinkLegs {
                current: self.leg_blocks,
                new: leg_blocks,
            });
        }
        let raid10 = self.level == Level::Raid10;
        Geometry::new(&GeometrySpec {
            level: self.level,
            layout: raid10.then_some(self.layout),
            legs: self.legs,
            chunk_bytes: raid10.then(|| (self.block_size as u64) << self.chunk_shift),
            block_size: self.block_size,
            leg_blocks,
        })
    }

    pub fn level(&self) -> Level {
        self.level
    }

    /// The RAID10 layout (for RAID1: `n<legs>`, which is what RAID1 is).
    pub fn layout(&self) -> Raid10Layout {
        self.layout
    }

    pub fn legs(&self) -> u32 {
        self.legs
    }

    /// Whether every block keeps a copy on the legs in `mask`. RAID10 placement repeats every
    /// `legs` chunks, so checking twice that many chunks is enough.
    pub fn every_block_covered(&self, mask: u32) -> bool {
        let step = self.chunk_blocks().max(1);
        let chunks = (self.data_blocks() / step).min(self.legs() as u64 * 2).max(1);
        (0..chunks).all(|c| {
            self.map_unchecked(c * step)
                .as_slice()
                .iter()
                .any(|cp| mask & (1 << cp.leg) != 0)
        })
    }

    pub fn copies(&self) -> u32 {
        self.layout.copies()
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Chunk size in blocks (RAID10); RAID1 has no chunks and reports 0.
    pub fn chunk_blocks(&self) -> u64 {
        match self.level {
            Level::Raid1 => 0,
            Level::Raid10 => 1 << self.chunk_shift,
        }
    }

    pub fn leg_blocks(&self) -> u64 {
        self.leg_blocks
    }

    /// Blocks at the start of each leg that hold data.
    pub fn used_leg_blocks(&self) -> u64 {
        self.used_leg_blocks
    }

    /// Size of the mirror in blocks.
    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }

    /// How many blocks from `lba` on lie in the same chunk (all of them map contiguously).
    pub fn run_len(&self, lba: u64) -> u64 {
        match self.level {
            Level::Raid1 => self.data_blocks - lba.min(self.data_blocks),
            Level::Raid10 => (1u64 << self.chunk_shift) - (lba & ((1u64 << self.chunk_shift) - 1)),
        }
    }

    /// Whether `[lba, lba + blocks)` lies inside the mirror and inside one run (so each copy is
    /// one contiguous child): one test on every I/O's fast path, where a RAID1 needs only the
    /// range.
    #[inline(always)]
    pub fn in_one_run(&self, lba: u64, blocks: u64) -> bool {
        let Some(end) = lba.checked_add(blocks) else {
            return false;
        };
        end <= self.data_blocks
            && match self.level {
                Level::Raid1 => true,
                Level::Raid10 => blocks <= self.run_len(lba),
            }
    }

    /// Where block `lba` lives; each copy's run continues for [`Geometry::run_len`] blocks.
    pub fn map(&self, lba: u64) -> Result<CopySet, GeometryError> {
        if lba >= self.data_blocks {
            return Err(GeometryError::LbaOutOfRange {
                lba,
                data_blocks: self.data_blocks,
            });
        }
        Ok(self.map_unchecked(lba))
    }

    /// [`Geometry::map`] for an `lba` the caller has already range-checked.
    pub fn map_unchecked(&self, lba: u64) -> CopySet {
        let mut set = CopySet::new();
        for slot in 0..self.copies() {
            let c = self.copy(lba, slot);
            set.push(c.leg, c.lba);
        }
        set
    }

    /// Copy number `slot` (`< copies()`, md's slot order) of an in-range block, without
    /// building the whole set: the I/O path's form of `map`.
    #[inline]
    pub fn copy(&self, lba: u64, slot: u32) -> Copy {
        self.copy_in(&self.row(lba), slot)
    }

    /// Where block `lba`'s first near copy sits: the part of the placement its copies share,
    /// so the I/O path divides by the leg count once per block, not once per copy.
    #[inline]
    pub fn row(&self, lba: u64) -> Row {
        match self.level {
            Level::Raid1 => Row { dev: 0, sector: lba },
            Level::Raid10 => self.raid10_row(lba),
        }
    }

    /// Copy number `slot` (`< copies()`) of the block whose row is `row`.
    #[inline]
    pub fn copy_in(&self, row: &Row, slot: u32) -> Copy {
        match self.level {
            Level::Raid1 => Copy {
                leg: slot,
                lba: row.sector,
            },
            Level::Raid10 => self.raid10_copy(row, slot),
        }
    }

    /// md's `__raid10_find_phys()` with `far_set_size == raid_disks` (the original far layout),
    /// up to where the copies part: see `raid10_copy`.
    ///
    /// Chunks are numbered across the array; chunk `c`'s first near copy is chunk slot
    /// `c * near` of a row-major grid `raid_disks` wide (the offset layouts' rows are `far`
    /// times as tall, their far copies being the next chunk rows).
    #[inline]
    fn raid10_row(&self, lba: u64) -> Row {
        let legs = self.legs as u64;
        let near_slot = (lba >> self.chunk_shift) * self.layout.near as u64;
        let (mut stripe, dev) = if self.legs_shift != NOT_POW2 {
            (near_slot >> self.legs_shift, near_slot & (legs - 1))
        } else {
            (near_slot / legs, near_slot % legs)
        };
        if self.layout.offset {
            stripe *= self.layout.far as u64;
        }
        Row {
            dev,
            sector: (lba & ((1u64 << self.chunk_shift) - 1)) + (stripe << self.chunk_shift),
        }
    }

    /// One copy of the block at `row`: its near copies are the grid's following slots
    /// (wrapping to the next chunk row), each near copy's far copies sit `near` devices to the
    /// right (mod `raid_disks`), `stride` blocks further down: half a device away for `f2`,
    /// the next chunk row for the offset layouts. No division: the layouts in use have
    /// `near == 1` or `far == 1`, and every sum stays below twice the leg count.
    #[inline]
    fn raid10_copy(&self, row: &Row, slot: u32) -> Copy {
        let legs = self.legs as u64;
        let (near, far) = (self.layout.near, self.layout.far);
        let (n, f) = match (near, far) {
            (_, 1) => (slot, 0),
            (1, _) => (0, slot),
            _ => (slot / far, slot % far),
        };
        let (n, f, near) = (n as u64, f as u64, near as u64);
        let mut sector = row.sector;
        // The n-th near copy: n devices to the right, wrapping (at most once, as near <= legs)
        // onto the next chunk row.
        let mut dev = row.dev + n;
        if dev >= legs {
            dev -= legs;
            sector += 1u64 << self.chunk_shift;
        }
        // Its f-th far copy: md steps `near` devices right and one stride down f times.
        let mut leg = dev + f * near;
        while leg >= legs {
            leg -= legs;
        }
        Copy {
            leg: leg as u32,
            lba: sector + f * self.stride,
        }
    }
}

/// The placement a block's copies share (`Geometry::row`).
#[derive(Debug, Clone, Copy)]
pub struct Row {
    dev: u64,
    sector: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(level: Level, layout: Option<&str>, legs: u32, chunk_kb: u64, bs: u32, leg_blocks: u64) -> Geometry {
        Geometry::new(&GeometrySpec {
            level,
            layout: layout.map(|l| Raid10Layout::parse(l).unwrap()),
            legs,
            chunk_bytes: Some(chunk_kb * 1024),
            block_size: bs,
            leg_blocks,
        })
        .unwrap()
    }

    #[test]
    fn layout_names_round_trip() {
        for name in ["n2", "n3", "f2", "f3", "o2", "o3", "n12"] {
            assert_eq!(Raid10Layout::parse(name).unwrap().to_string(), name);
        }
        for bad in ["", "x2", "n", "n0", "n1", "f1", "n2f2", "n2o2", "n2 ", "2", "é2", "n+2"] {
            assert!(Raid10Layout::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn raid1_maps_every_leg_at_the_same_offset() {
        let g = geo(Level::Raid1, None, 3, 0, 512, 1000);
        assert_eq!(g.data_blocks(), 1000);
        let set = g.map(999).unwrap();
        assert_eq!(
            set.as_slice(),
            &[
                Copy { leg: 0, lba: 999 },
                Copy { leg: 1, lba: 999 },
                Copy { leg: 2, lba: 999 }
            ]
        );
        assert!(g.map(1000).is_err());
    }

    #[test]
    fn in_one_run_is_the_range_and_the_run() {
        for g in [
            geo(Level::Raid1, None, 2, 0, 512, 1000),
            geo(Level::Raid10, Some("n2"), 4, 4, 512, 80),
            geo(Level::Raid10, Some("f2"), 3, 4, 512, 88),
            geo(Level::Raid10, Some("o2"), 4, 8, 4096, 64),
        ] {
            let n = g.data_blocks();
            for lba in [0, 1, 7, 8, 15, n / 2, n - 8, n - 1, n, n + 1, u64::MAX - 1, u64::MAX] {
                for blocks in [0, 1, 2, 7, 8, 9, 16, n, u64::MAX] {
                    let want =
                        lba.checked_add(blocks).is_some_and(|end| end <= n) && (lba >= n || blocks <= g.run_len(lba));
                    assert_eq!(g.in_one_run(lba, blocks), want, "{g:?}: ({lba}, {blocks})");
                }
            }
        }
    }

    #[test]
    fn md_size_rounding() {
        // n2 over 3 legs of 10 chunks: 15 chunks of data; f2 over 3 legs of 11 chunks: 15 (11/2*3).
        assert_eq!(geo(Level::Raid10, Some("n2"), 3, 4, 512, 80).data_blocks(), 15 * 8);
        assert_eq!(geo(Level::Raid10, Some("f2"), 3, 4, 512, 88).data_blocks(), 15 * 8);
        // A partial trailing chunk on a leg is never used.
        assert_eq!(geo(Level::Raid10, Some("n2"), 4, 4, 512, 87).data_blocks(), 20 * 8);
    }

    /// Maps every (block, copy) of a small geometry: true when each copy lies on a leg, inside
    /// the leg's used blocks, no two pairs share a (leg, leg block), and the copies of a block
    /// are on different legs (else one leg's loss loses the block).
    fn injective(geo: &Geometry) -> bool {
        let mut used = std::collections::HashSet::new();
        (0..geo.data_blocks()).all(|lba| {
            let mut legs = 0u64;
            (0..geo.copies()).all(|slot| {
                let c = geo.copy(lba, slot);
                let distinct = c.leg < 64 && legs & (1 << c.leg) == 0;
                legs |= 1 << (c.leg % 64);
                distinct && c.leg < geo.legs() && c.lba < geo.used_leg_blocks() && used.insert((c.leg, c.lba))
            })
        })
    }

    /// Whether `parse` can spell the layout (`n<k>`, `f<k>`, `o<k>`): what the RPC creates.
    fn spelled_by_parse(l: Raid10Layout) -> bool {
        Raid10Layout::parse(&l.to_string()).is_ok_and(|p| p == l)
    }

    #[test]
    fn geometry_is_accepted_exactly_when_injective_and_spelled_by_parse() {
        let mut refused_though_injective = Vec::new();
        for near in 1..=4 {
            for far in 1..=4 {
                for offset in [false, true] {
                    let layout = Raid10Layout { near, far, offset };
                    for legs in 1..=8 {
                        for (chunk_bytes, leg_chunks) in [(512u64, 48u64), (1024, 13)] {
                            let spec = GeometrySpec {
                                level: Level::Raid10,
                                layout: Some(layout),
                                legs,
                                chunk_bytes: Some(chunk_bytes),
                                block_size: 512,
                                leg_blocks: leg_chunks * chunk_bytes / 512 + 1,
                            };
                            let shift = (chunk_bytes / 512).trailing_zeros();
                            let sound = layout.copies() >= 2
                                && Geometry::raid10_shape(&spec, layout, shift).is_ok_and(|g| injective(&g));
                            let accepted = Geometry::new(&spec).is_ok();
                            let parsed = spelled_by_parse(layout);
                            assert_eq!(
                                accepted,
                                sound && parsed,
                                "{layout:?} on {legs} legs, chunk {chunk_bytes}"
                            );
                            assert_eq!(accepted, layout.validate(legs).is_ok(), "{layout:?} on {legs} legs");
                            if sound && !parsed {
                                refused_though_injective.push((layout.to_string(), legs));
                            }
                        }
                    }
                }
            }
        }
        // The defect's example collides; the mixes refused although they map soundly are the
        // ones mdadm never creates (n2f2 and its kin), refused so that a superblock cannot
        // describe a mirror the RPC would not create.
        let n2o2 = Raid10Layout {
            near: 2,
            far: 2,
            offset: true,
        };
        let spec = |legs| GeometrySpec {
            level: Level::Raid10,
            layout: Some(n2o2),
            legs,
            chunk_bytes: Some(512),
            block_size: 512,
            leg_blocks: 100,
        };
        assert!(!injective(&Geometry::raid10_shape(&spec(5), n2o2, 0).unwrap()));
        assert!(refused_though_injective.contains(&("n2f2".to_string(), 4)));
        for (legs, ok) in (0..=8).map(|l| (l, l >= 2)) {
            let g = Geometry::new(&GeometrySpec {
                level: Level::Raid1,
                layout: None,
                legs,
                chunk_bytes: None,
                block_size: 4096,
                leg_blocks: 37,
            });
            assert_eq!(g.is_ok(), ok, "raid1 on {legs} legs");
            assert!(g.is_err() || injective(&g.unwrap()));
        }
    }

    /// Every geometry `resized` may grow: RAID1 and RAID10 near and offset layouts, 2 to 8 legs.
    fn growable() -> Vec<(Level, Option<Raid10Layout>, u32)> {
        let mut out = Vec::new();
        for legs in 2..=8u32 {
            out.push((Level::Raid1, None, legs));
            for copies in 2..=legs {
                for kind in ["n", "o"] {
                    out.push((
                        Level::Raid10,
                        Raid10Layout::parse(&format!("{kind}{copies}")).ok(),
                        legs,
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn growing_keeps_every_old_block_where_it_was() {
        let mut checked = 0u64;
        for (level, layout, legs) in growable() {
            for (bs, chunk_bytes) in [(512u32, 512u64), (512, 1024), (512, 4096), (4096, 8192)] {
                let chunk = chunk_bytes / bs as u64;
                for old_chunks in [1u64, 3, 8, 13] {
                    for extra in [0, chunk - 1] {
                        let spec = GeometrySpec {
                            level,
                            layout,
                            legs,
                            chunk_bytes: Some(chunk_bytes),
                            block_size: bs,
                            leg_blocks: old_chunks * chunk + extra,
                        };
                        let Ok(old) = Geometry::new(&spec) else {
                            continue; // too small for this layout to hold data
                        };
                        let mut prev = old.clone();
                        for grow in [0, 1, chunk, 5 * chunk + 1, 17 * chunk] {
                            let leg_blocks = spec.leg_blocks + grow;
                            let new = old.resized(leg_blocks).unwrap();
                            let what = format!(
                                "{level} {layout:?} x{legs} chunk {chunk_bytes} bs {bs}: {} -> {leg_blocks}",
                                spec.leg_blocks
                            );
                            assert_eq!(
                                new,
                                Geometry::new(&GeometrySpec {
                                    leg_blocks,
                                    ..spec.clone()
                                })
                                .unwrap(),
                                "{what}"
                            );
                            assert_eq!(prev.resized(leg_blocks).as_ref(), Ok(&new), "{what}: growing in steps");
                            assert!(new.data_blocks() >= prev.data_blocks(), "{what}: data_blocks shrank");
                            assert!(new.used_leg_blocks() >= prev.used_leg_blocks(), "{what}");
                            assert!(new.used_leg_blocks() <= leg_blocks, "{what}");
                            assert_eq!(
                                (
                                    new.level(),
                                    new.layout(),
                                    new.legs(),
                                    new.block_size(),
                                    new.chunk_blocks()
                                ),
                                (
                                    old.level(),
                                    old.layout(),
                                    old.legs(),
                                    old.block_size(),
                                    old.chunk_blocks()
                                )
                            );
                            let mut old_places = std::collections::HashSet::new();
                            for lba in 0..old.data_blocks() {
                                let (was, is) = (old.map(lba).unwrap(), new.map(lba).unwrap());
                                assert_eq!(was, is, "{what}: block {lba} moved");
                                old_places.extend(was.as_slice().iter().copied());
                                checked += 1;
                            }
                            for lba in old.data_blocks()..new.data_blocks() {
                                for c in new.map(lba).unwrap().as_slice() {
                                    assert!(!old_places.contains(c), "{what}: new block {lba} lands on old {c:?}");
                                    assert!(c.lba < new.used_leg_blocks(), "{what}");
                                }
                            }
                            prev = new;
                        }
                    }
                }
            }
        }
        assert!(checked > 100_000, "only {checked} blocks checked");
    }

    #[test]
    fn growing_refuses_far_layouts_shrinking_and_what_new_refuses() {
        // f2 on 4 legs of 8 one-block chunks: block 0's far copy sits half a leg down, so it
        // would move if the legs grew.
        let f2 = geo(Level::Raid10, Some("f2"), 4, 1, 512, 16);
        assert_eq!(f2.map(0).unwrap().as_slice()[1], Copy { leg: 1, lba: 8 });
        assert_eq!(
            geo(Level::Raid10, Some("f2"), 4, 1, 512, 32).map(0).unwrap().as_slice()[1].lba,
            16
        );
        for far in ["f2", "f3"] {
            let g = geo(Level::Raid10, Some(far), 4, 1, 512, 60);
            let e = g.resized(120).unwrap_err();
            assert_eq!(e, GeometryError::FarLayoutResize(far.into()));
            assert!(e.to_string().starts_with("layout: "), "{e}");
            assert_eq!(g.resized(60).unwrap_err(), e, "refused even at the same size");
        }
        for g in [
            geo(Level::Raid1, None, 2, 0, 512, 1000),
            geo(Level::Raid10, Some("n2"), 3, 4, 512, 1000),
            geo(Level::Raid10, Some("o2"), 3, 4, 512, 1000),
        ] {
            let e = g.resized(999).unwrap_err();
            assert_eq!(
                e,
                GeometryError::ShrinkLegs {
                    current: 1000,
                    new: 999
                }
            );
            assert!(e.to_string().starts_with("leg_blocks: "), "{e}");
            assert_eq!(g.resized(1000).as_ref(), Ok(&g), "same size, same geometry");
        }
        let big = geo(Level::Raid10, Some("n2"), 32, 1, 512, 1 << 20);
        assert_eq!(big.resized(u64::MAX), Err(GeometryError::TooManyBlocks(u64::MAX)));
        assert_eq!(
            geo(Level::Raid1, None, 2, 0, 512, 10)
                .resized(u64::MAX)
                .unwrap()
                .data_blocks(),
            u64::MAX
        );
    }

    #[test]
    fn huge_legs_are_refused_not_wrapped() {
        for layout in ["n2", "f2", "o3"] {
            let r = Geometry::new(&GeometrySpec {
                level: Level::Raid10,
                layout: Some(Raid10Layout::parse(layout).unwrap()),
                legs: 32,
                chunk_bytes: Some(512),
                block_size: 512,
                leg_blocks: u64::MAX,
            });
            assert_eq!(r, Err(GeometryError::TooManyBlocks(u64::MAX)), "{layout}");
        }
        let chunk = |kb: u64| GeometrySpec {
            level: Level::Raid10,
            layout: None,
            legs: 2,
            chunk_bytes: Some(kb * 1024),
            block_size: 512,
            leg_blocks: 1 << 40,
        };
        assert!(Geometry::new(&chunk(MAX_CHUNK_KB)).is_ok());
        assert_eq!(
            Geometry::new(&chunk(MAX_CHUNK_KB * 2)),
            Err(GeometryError::ChunkTooLarge(MAX_CHUNK_KB * 2))
        );
    }

    #[test]
    fn a_power_of_two_leg_count_maps_as_the_division_does() {
        for layout in ["n2", "n3", "n4", "f2", "f4", "o2", "o4"] {
            for legs in [2u32, 4, 8, 16] {
                let Ok(g) = Geometry::new(&GeometrySpec {
                    level: Level::Raid10,
                    layout: Some(Raid10Layout::parse(layout).unwrap()),
                    legs,
                    chunk_bytes: Some(8192),
                    block_size: 512,
                    leg_blocks: 4096,
                }) else {
                    continue;
                };
                assert_ne!(g.legs_shift, NOT_POW2);
                let divided = Geometry {
                    legs_shift: NOT_POW2,
                    ..g.clone()
                };
                for lba in (0..g.data_blocks()).step_by(7) {
                    assert_eq!(g.map(lba), divided.map(lba), "{layout} over {legs} legs, block {lba}");
                }
            }
        }
    }
}
