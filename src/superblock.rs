//! The mirror's on-disk superblock: what every leg says about the mirror it belongs to, so the
//! mirror can be reassembled from its legs (in any order, newest `events` wins) and a stale or
//! corrupt leg recognised. Byte layout: `docs/superblock.md`. Pure: no I/O here.

use std::borrow::Borrow;

use thiserror::Error;

use crate::engine::ReadPolicy;
use crate::placement::{Geometry, GeometryError, GeometrySpec, Level, Raid10Layout, MAX_CHUNK_KB, MAX_LEGS};

/// Size of the encoded superblock. It sits at block 0 of every leg, inside the reserved region
/// before `data_offset_blocks`.
pub const SUPERBLOCK_BYTES: usize = 4096;
pub const MAGIC: [u8; 8] = *b"SPDKMIR1";
pub const VERSION: u32 = 1;
const NAME_BYTES: usize = 64;
/// `events` counts membership changes (a few per failure, replacement or start): no real
/// mirror comes near 2^62. Assembly refuses a newest superblock beyond it (crafted or
/// corrupted): bumping it could wrap to 0 and make the newest copies look the oldest, and a
/// stale leg would then win.
pub const MAX_EVENTS: u64 = 1 << 62;
const LEG_TABLE_OFFSET: usize = 160;
const LEG_ENTRY_BYTES: usize = 32;
const CRC_OFFSET: usize = SUPERBLOCK_BYTES - 4;

/// A leg's role as the superblock records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegRole {
    /// Holds good data.
    Active = 1,
    /// Failed: must not be read; recovered from the bitmap or rebuilt when it returns.
    Failed = 2,
    /// Slot without a leg.
    Removed = 3,
    /// Being rebuilt: written, not yet readable.
    Rebuilding = 4,
}

impl LegRole {
    fn from_byte(b: u8) -> Result<Self, SuperblockError> {
        Ok(match b {
            1 => LegRole::Active,
            2 => LegRole::Failed,
            3 => LegRole::Removed,
            4 => LegRole::Rebuilding,
            other => return Err(SuperblockError::BadField("role", other as u64)),
        })
    }
}

/// One slot of the leg table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegEntry {
    pub uuid: [u8; 16],
    pub role: LegRole,
    /// `events` when the leg stopped being written (0 while active): tells a re-added leg how
    /// much it missed.
    pub failed_at_events: u64,
}

/// Everything a superblock holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub mirror_uuid: [u8; 16],
    pub name: String,
    pub level: Level,
    /// RAID10 layout (RAID1 stores `n<legs>`).
    pub layout: Raid10Layout,
    pub chunk_kb: u32,
    pub block_size: u32,
    pub data_offset_blocks: u64,
    /// Usable data blocks on each leg (after `data_offset_blocks`).
    pub leg_data_blocks: u64,
    /// Bumped on every membership change; the newest superblock wins at assembly.
    pub events: u64,
    /// The slot of the leg this copy was written to.
    pub this_slot: u32,
    pub bitmap_region_kb: u32,
    pub bitmap_offset_blocks: u64,
    pub bitmap_blocks: u64,
    pub legs: Vec<LegEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SuperblockError {
    #[error("superblock: buffer of {0} bytes, need {SUPERBLOCK_BYTES}")]
    Short(usize),
    #[error("superblock: no mirror superblock here (bad magic)")]
    Magic,
    #[error("superblock: version {0} is not supported (this build reads {VERSION})")]
    Version(u32),
    #[error("superblock: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("superblock: bad {0} ({1})")]
    BadField(&'static str, u64),
    #[error("superblock: name longer than {NAME_BYTES} bytes")]
    NameTooLong,
    #[error("superblock: name is empty")]
    NameEmpty,
    #[error("superblock: name is not UTF-8 (or holds a NUL)")]
    NameNotUtf8,
    /// The geometry the fields describe is not one the create RPC would build (the message
    /// starts with the field at fault).
    #[error("superblock: {0}")]
    Geometry(#[from] GeometryError),
    #[error("superblock: {0}")]
    Layout(#[from] LayoutError),
    #[error("superblock: {field} is {stored}, the geometry needs {expected}")]
    Mismatch {
        field: &'static str,
        stored: u64,
        expected: u64,
    },
    #[error("superblock: data_offset_blocks + leg_data_blocks ({0} + {1}) overflows")]
    Overflow(u64, u64),
}

impl Superblock {
    /// Encodes into exactly `SUPERBLOCK_BYTES`, checksum last.
    pub fn encode(&self) -> Result<Vec<u8>, SuperblockError> {
        if self.name.len() > NAME_BYTES {
            return Err(SuperblockError::NameTooLong);
        }
        if self.legs.len() > MAX_LEGS {
            return Err(SuperblockError::BadField("leg count", self.legs.len() as u64));
        }
        let mut b = vec![0u8; SUPERBLOCK_BYTES];
        b[0..8].copy_from_slice(&MAGIC);
        put32(&mut b, 8, VERSION);
        put32(&mut b, 12, SUPERBLOCK_BYTES as u32);
        b[16..32].copy_from_slice(&self.mirror_uuid);
        b[32..32 + self.name.len()].copy_from_slice(self.name.as_bytes());
        b[96] = match self.level {
            Level::Raid1 => 1,
            Level::Raid10 => 10,
        };
        b[97] = self.layout.near as u8;
        b[98] = self.layout.far as u8;
        b[99] = u8::from(self.layout.offset);
        put32(&mut b, 100, self.chunk_kb);
        put32(&mut b, 104, self.block_size);
        put32(&mut b, 108, self.legs.len() as u32);
        put64(&mut b, 112, self.data_offset_blocks);
        put64(&mut b, 120, self.leg_data_blocks);
        put64(&mut b, 128, self.events);
        put32(&mut b, 136, self.this_slot);
        put32(&mut b, 140, self.bitmap_region_kb);
        put64(&mut b, 144, self.bitmap_offset_blocks);
        put64(&mut b, 152, self.bitmap_blocks);
        for (i, leg) in self.legs.iter().enumerate() {
            let o = LEG_TABLE_OFFSET + i * LEG_ENTRY_BYTES;
            b[o..o + 16].copy_from_slice(&leg.uuid);
            b[o + 16] = leg.role as u8;
            put64(&mut b, o + 24, leg.failed_at_events);
        }
        let crc = crc32c(&b[..CRC_OFFSET]);
        put32(&mut b, CRC_OFFSET, crc);
        Ok(b)
    }

    /// Decodes and checks a superblock: magic, version, checksum, then every field (see
    /// [`Superblock::geometry`]). A superblock is untrusted input: whatever this accepts
    /// describes a mirror the create RPC could have made.
    pub fn decode(b: &[u8]) -> Result<Superblock, SuperblockError> {
        if b.len() < SUPERBLOCK_BYTES {
            return Err(SuperblockError::Short(b.len()));
        }
        if b[0..8] != MAGIC {
            return Err(SuperblockError::Magic);
        }
        let version = get32(b, 8);
        if version != VERSION {
            return Err(SuperblockError::Version(version));
        }
        let (stored, computed) = (get32(b, CRC_OFFSET), crc32c(&b[..CRC_OFFSET]));
        if stored != computed {
            return Err(SuperblockError::Checksum { stored, computed });
        }
        let header_len = get32(b, 12);
        if header_len as usize != SUPERBLOCK_BYTES {
            return Err(SuperblockError::BadField("header_len", header_len as u64));
        }
        let sb = Self::fields(b)?;
        sb.geometry()?;
        Ok(sb)
    }

    /// The fields of a checksummed superblock, each in its own range.
    fn fields(b: &[u8]) -> Result<Superblock, SuperblockError> {
        let name_end = b[32..32 + NAME_BYTES]
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(NAME_BYTES);
        let name = std::str::from_utf8(&b[32..32 + name_end])
            .map_err(|_| SuperblockError::NameNotUtf8)?
            .to_string();
        let level = match b[96] {
            1 => Level::Raid1,
            10 => Level::Raid10,
            other => return Err(SuperblockError::BadField("level", other as u64)),
        };
        if b[99] & !1 != 0 {
            return Err(SuperblockError::BadField("flags", b[99] as u64));
        }
        let layout = Raid10Layout {
            near: b[97] as u32,
            far: b[98] as u32,
            offset: b[99] & 1 != 0,
        };
        let nlegs = get32(b, 108) as usize;
        if nlegs == 0 || nlegs > MAX_LEGS {
            return Err(SuperblockError::BadField("legs", nlegs as u64));
        }
        let mut legs = Vec::with_capacity(nlegs);
        for i in 0..nlegs {
            let o = LEG_TABLE_OFFSET + i * LEG_ENTRY_BYTES;
            let mut uuid = [0u8; 16];
            uuid.copy_from_slice(&b[o..o + 16]);
            legs.push(LegEntry {
                uuid,
                role: LegRole::from_byte(b[o + 16])?,
                failed_at_events: get64(b, o + 24),
            });
        }
        let mut mirror_uuid = [0u8; 16];
        mirror_uuid.copy_from_slice(&b[16..32]);
        Ok(Superblock {
            mirror_uuid,
            name,
            level,
            layout,
            chunk_kb: get32(b, 100),
            block_size: get32(b, 104),
            data_offset_blocks: get64(b, 112),
            leg_data_blocks: get64(b, 120),
            events: get64(b, 128),
            this_slot: get32(b, 136),
            bitmap_region_kb: get32(b, 140),
            bitmap_offset_blocks: get64(b, 144),
            bitmap_blocks: get64(b, 152),
            legs,
        })
    }

    /// The geometry and metadata layout this superblock describes, once every field is checked
    /// against the rules the create RPC applies (the same `Geometry::new` and `MetaLayout::new`)
    /// and the stored layout against the one they derive. `decode` calls it; a superblock built
    /// in memory can call it too.
    pub fn geometry(&self) -> Result<(Geometry, MetaLayout), SuperblockError> {
        self.check_identity()?;
        self.check_legs()?;
        self.check_raid1()?;
        let geo = Geometry::new(&GeometrySpec {
            level: self.level,
            layout: (self.level == Level::Raid10).then_some(self.layout),
            legs: self.legs.len() as u32,
            chunk_bytes: Some(self.chunk_kb as u64 * 1024),
            block_size: self.block_size,
            leg_blocks: self.leg_data_blocks,
        })?;
        let meta = MetaLayout::new(self.block_size, geo.data_blocks(), self.bitmap_region_kb)?;
        for (field, stored, expected) in [
            ("data_offset_blocks", self.data_offset_blocks, meta.data_offset_blocks),
            (
                "bitmap_offset_blocks",
                self.bitmap_offset_blocks,
                meta.bitmap_offset_blocks,
            ),
            ("bitmap_blocks", self.bitmap_blocks, meta.bitmap_blocks),
        ] {
            if stored != expected {
                return Err(SuperblockError::Mismatch {
                    field,
                    stored,
                    expected,
                });
            }
        }
        if self.data_offset_blocks.checked_add(self.leg_data_blocks).is_none() {
            return Err(SuperblockError::Overflow(self.data_offset_blocks, self.leg_data_blocks));
        }
        Ok((geo, meta))
    }

    /// The name as the RPC allows it with a superblock: 1 to 64 bytes, no NUL (the on-disk
    /// name ends at the first one). The RPC also refuses control characters; a mirror named
    /// with one before it did still assembles.
    fn check_identity(&self) -> Result<(), SuperblockError> {
        if self.name.is_empty() {
            return Err(SuperblockError::NameEmpty);
        }
        if self.name.len() > NAME_BYTES {
            return Err(SuperblockError::NameTooLong);
        }
        if self.name.contains('\0') {
            return Err(SuperblockError::NameNotUtf8);
        }
        Ok(())
    }

    /// Leg count, this copy's slot, and a leg table whose failures are not from the future.
    fn check_legs(&self) -> Result<(), SuperblockError> {
        if self.legs.is_empty() || self.legs.len() > MAX_LEGS {
            return Err(SuperblockError::BadField("legs", self.legs.len() as u64));
        }
        if self.this_slot as usize >= self.legs.len() {
            return Err(SuperblockError::BadField("this_slot", self.this_slot as u64));
        }
        if let Some(l) = self.legs.iter().find(|l| l.failed_at_events > self.events) {
            return Err(SuperblockError::BadField("failed_at_events", l.failed_at_events));
        }
        Ok(())
    }

    /// RAID1 stores its layout as `n<legs>`; its chunk is unused (0, or the chunk the RPC
    /// filled in, which any valid RAID10 chunk may be).
    fn check_raid1(&self) -> Result<(), SuperblockError> {
        if self.level != Level::Raid1 {
            return Ok(());
        }
        let n = Raid10Layout {
            near: self.legs.len() as u32,
            far: 1,
            offset: false,
        };
        if self.layout != n {
            let l = self.layout;
            return Err(SuperblockError::BadField(
                "layout",
                (l.near as u64) << 16 | (l.far as u64) << 8 | l.offset as u64,
            ));
        }
        let c = self.chunk_kb as u64;
        if c != 0 && (!c.is_power_of_two() || c > MAX_CHUNK_KB) {
            return Err(SuperblockError::BadField("chunk_kb", c));
        }
        Ok(())
    }

    /// The first field on which `other`, a copy read from another leg of the same mirror,
    /// describes a different mirror than `self`. Only `events`, `this_slot` and the leg
    /// table (roles, leg uuids of replaced legs) may differ between a mirror's legs (and, on a
    /// leg that missed a reshape, what [`Superblock::reshape_disagreement`] allows).
    pub fn disagreement(&self, other: &Superblock) -> Option<&'static str> {
        let (a, b) = (self, other);
        [
            ("mirror_uuid", a.mirror_uuid != b.mirror_uuid),
            ("name", a.name != b.name),
            ("level", a.level != b.level),
            ("layout", a.layout != b.layout),
            ("chunk_kb", a.chunk_kb != b.chunk_kb),
            ("block_size", a.block_size != b.block_size),
            ("legs", a.legs.len() != b.legs.len()),
            ("data_offset_blocks", a.data_offset_blocks != b.data_offset_blocks),
            ("leg_data_blocks", a.leg_data_blocks != b.leg_data_blocks),
            ("bitmap_region_kb", a.bitmap_region_kb != b.bitmap_region_kb),
            ("bitmap_offset_blocks", a.bitmap_offset_blocks != b.bitmap_offset_blocks),
            ("bitmap_blocks", a.bitmap_blocks != b.bitmap_blocks),
        ]
        .into_iter()
        .find_map(|(field, differs)| differs.then_some(field))
    }

    /// The first field on which `older`, a copy of the same mirror written before `self`,
    /// differs from `self` other than the way a reshape changes it. A reshape never moves data
    /// and may change only: the leg count, and with it the `n<legs>` layout, of a RAID1 (a
    /// RAID10's placement depends on its leg count); `leg_data_blocks`, growing as
    /// [`Geometry::resized`] allows (never for RAID10 far layouts, never smaller); and the
    /// bitmap that follows the size (`bitmap_region_kb`, which only doubles, and
    /// `bitmap_blocks`, which `geometry` holds to the rest). `None`: `older` describes this
    /// mirror before some reshapes, or agrees with it (see [`Superblock::disagreement`]). Both
    /// copies are expected valid ([`Superblock::geometry`]); an invalid `older` cannot have
    /// grown.
    pub fn reshape_disagreement(&self, older: &Superblock) -> Option<&'static str> {
        let (a, b) = (self, older);
        let raid1 = a.level == Level::Raid1 && b.level == Level::Raid1;
        // `resized` refuses far layouts and smaller legs.
        let grown = || {
            b.geometry()
                .is_ok_and(|(geo, _)| geo.resized(a.leg_data_blocks).is_ok())
        };
        [
            ("mirror_uuid", a.mirror_uuid != b.mirror_uuid),
            ("name", a.name != b.name),
            ("level", a.level != b.level),
            ("layout", a.layout != b.layout && !raid1),
            ("chunk_kb", a.chunk_kb != b.chunk_kb),
            ("block_size", a.block_size != b.block_size),
            ("legs", a.legs.len() != b.legs.len() && !raid1),
            ("data_offset_blocks", a.data_offset_blocks != b.data_offset_blocks),
            ("leg_data_blocks", a.leg_data_blocks != b.leg_data_blocks && !grown()),
            ("bitmap_region_kb", a.bitmap_region_kb < b.bitmap_region_kb),
            ("bitmap_offset_blocks", a.bitmap_offset_blocks != b.bitmap_offset_blocks),
        ]
        .into_iter()
        .find_map(|(field, differs)| differs.then_some(field))
    }

    /// The uuid this copy's leg carries: its own entry in its own leg table.
    pub fn own_uuid(&self) -> Option<[u8; 16]> {
        self.legs.get(self.this_slot as usize).map(|l| l.uuid)
    }
}

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

/// Why a copy found on a bdev is not used to assemble its mirror.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    #[error("{0}")]
    Invalid(SuperblockError),
    #[error("its superblock disagrees with the newest one (events {events}) on {field}")]
    Disagrees { field: &'static str, events: u64 },
    #[error("slot {slot} goes to another copy, newer or with the leg uuid the newest superblock records")]
    SlotTaken { slot: u32, winner: usize },
}

/// What to assemble a mirror from, decided from its legs' superblocks alone (never from the
/// order they were found in). Indexes point into the slice given to [`choose_legs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembly {
    /// The superblock that is the truth: the highest `events`.
    pub newest: usize,
    pub geometry: Geometry,
    pub layout: MetaLayout,
    /// Per slot: the copy kept for it. A kept copy that is not fresh is stale: it may rejoin
    /// after assembly (recovered or rebuilt), never read before.
    pub slots: Vec<Option<usize>>,
    /// Slots whose kept copy is fresh: the newest `events`, the leg uuid the newest superblock
    /// records for the slot, and a slot it calls `Active`.
    pub fresh: u32,
    /// Slots the newest superblock calls `Active`.
    pub active: u32,
    /// Slots whose kept copy predates a reshape (leg count or size) it missed: written before
    /// the newest, it differs from it only as [`Superblock::reshape_disagreement`] allows, and
    /// holds its slot because the newest records its leg uuid there (its own `this_slot` and
    /// leg table are those from before the reshape).
    pub reshaped: u32,
    /// Slots whose kept copy's bitmap is laid out differently from the newest's (its
    /// `MetaLayout` differs: a resize it missed). Such a bitmap must not be read at the newest's
    /// layout; a fresh copy's dirty regions are all in the newest's bitmap anyway, as it missed
    /// only the last metadata write. A subset of `reshaped`. See [`Assembly::same_bitmap`].
    pub bitmap_differs: u32,
    /// Copies not used, and why.
    pub rejected: Vec<(usize, Rejection)>,
}

impl Assembly {
    /// Every slot the newest superblock calls active has its fresh leg.
    pub fn complete(&self) -> bool {
        self.fresh != 0 && self.active & !self.fresh == 0
    }

    /// The fresh legs hold a copy of every block: enough to run degraded.
    pub fn covers_every_block(&self) -> bool {
        self.fresh != 0 && self.geometry.every_block_covered(self.fresh)
    }

    /// A copy is kept for `slot` and its bitmap has the newest's layout (same region size,
    /// region count and length), so it can be read, and OR-ed, at the newest's layout.
    pub fn same_bitmap(&self, slot: u32) -> bool {
        let differs = 1u32.checked_shl(slot).is_some_and(|b| self.bitmap_differs & b != 0);
        self.slots.get(slot as usize).is_some_and(Option::is_some) && !differs
    }

    /// Kept copies that are not fresh, with their slots.
    pub fn stale(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(s, c)| c.map(|i| (s as u32, i)))
            .filter(|&(s, _)| self.fresh & (1 << s) == 0)
    }
}

/// Decides, from the superblocks found on one mirror's legs (same `mirror_uuid`), which one is
/// the truth and which copy serves each slot. Copies that do not validate are rejected. A copy
/// that agrees with the newest on everything but `events`, `this_slot` and the leg table claims
/// its `this_slot`. An older copy that differs from the newest only by reshapes
/// ([`Superblock::reshape_disagreement`]: RAID1 leg count, size, bitmap) claims the one slot
/// where the newest records its own leg uuid (a shrink may have moved its leg to another
/// slot); from then on it is judged like an agreeing copy. Every other copy is rejected. When
/// several copies claim a slot (a removed leg's old superblock and its replacement), the higher
/// `events` wins, then the one whose leg uuid the newest superblock records for that slot.
/// `None` when no copy validates.
pub fn choose_legs<S: Borrow<Superblock>>(found: &[S]) -> Option<Assembly> {
    let sbs: Vec<&Superblock> = found.iter().map(Borrow::borrow).collect();
    let mut rejected = Vec::new();
    let mut valid = Vec::with_capacity(sbs.len());
    let mut metas: Vec<Option<MetaLayout>> = vec![None; sbs.len()];
    for (i, sb) in sbs.iter().enumerate() {
        match sb.geometry() {
            Ok((_, meta)) => {
                valid.push(i);
                metas[i] = Some(meta);
            }
            Err(e) => rejected.push((i, Rejection::Invalid(e))),
        }
    }
    // Ties are broken by content, so the order the legs appeared in never matters.
    let bytes: Vec<Vec<u8>> = sbs.iter().map(|s| s.encode().unwrap_or_default()).collect();
    let newest = pick_newest(&sbs, &valid, &bytes)?;
    let nsb = sbs[newest];
    let (geometry, layout) = nsb.geometry().ok()?;
    // The slot each copy claims, and whether it claims it by its uuid across a reshape. An
    // agreeing copy has the newest's leg count, and `geometry` checked its slot against it.
    let mut claim: Vec<Option<(usize, bool)>> = vec![None; sbs.len()];
    for &i in &valid {
        let Some(field) = nsb.disagreement(sbs[i]) else {
            claim[i] = Some((sbs[i].this_slot as usize, false));
            continue;
        };
        let older = sbs[i].events < nsb.events;
        let beyond = if older { nsb.reshape_disagreement(sbs[i]) } else { None };
        match slot_by_uuid(nsb, sbs[i]).filter(|_| older && beyond.is_none()) {
            Some(s) => claim[i] = Some((s, true)),
            None => rejected.push((
                i,
                Rejection::Disagrees {
                    field: beyond.unwrap_or(field),
                    events: nsb.events,
                },
            )),
        }
    }
    let claiming: Vec<usize> = valid.iter().copied().filter(|&i| claim[i].is_some()).collect();
    let slot = |i: usize| claim[i].map_or(usize::MAX, |c| c.0);
    let uuid_matches =
        |i: usize| sbs[i].own_uuid().is_some() && sbs[i].own_uuid() == nsb.legs.get(slot(i)).map(|l| l.uuid);
    let better = |a: usize, b: usize| {
        let key = |i: usize| (sbs[i].events, uuid_matches(i), i == newest, &bytes[i]);
        key(a) > key(b)
    };
    let mut slots: Vec<Option<usize>> = vec![None; nsb.legs.len()];
    for &i in &claiming {
        if slots[slot(i)].is_none_or(|j| better(i, j)) {
            slots[slot(i)] = Some(i);
        }
    }
    for &i in &claiming {
        if let Some(winner) = slots[slot(i)].filter(|&w| w != i) {
            rejected.push((
                i,
                Rejection::SlotTaken {
                    slot: slot(i) as u32,
                    winner,
                },
            ));
        }
    }
    let active = mask(nsb.legs.iter().map(|l| l.role == LegRole::Active));
    // A leg the newest superblock calls active is trusted at the newest `events`, or one behind
    // it: metadata writes go one at a time to every working leg, so an active leg can miss only
    // the last one, when the mirror stopped while it was on its way. Such a leg holds every
    // acknowledged write: had it missed one it would have failed, and no write is acknowledged
    // before a leg failure is in the superblocks (md likewise accepts a member whose event
    // count is behind by what its bitmap covers). Without this, a crash in the middle of the
    // write that records a failure could leave too few legs at the newest `events` to run.
    // The same holds across a reshape: reshapes never move data, and the space a resize adds is
    // dirty in the newest's bitmap, so a leg that missed only the reshape's write is fresh.
    let fresh = mask(slots.iter().enumerate().map(|(s, c)| {
        c.is_some_and(|i| sbs[i].events.saturating_add(1) >= nsb.events && uuid_matches(i)) && active & (1 << s) != 0
    }));
    let reshaped = mask(slots.iter().map(|c| c.is_some_and(|i| claim[i].is_some_and(|c| c.1))));
    let bitmap_differs = mask(slots.iter().map(|c| c.is_some_and(|i| metas[i] != Some(layout))));
    rejected.sort_by_key(|r| r.0);
    Some(Assembly {
        newest,
        geometry,
        layout,
        slots,
        fresh,
        active,
        reshaped,
        bitmap_differs,
        rejected,
    })
}

/// How a leg comes back to a running mirror (`Superblock`s: the running mirror's and the
/// leg's own, for the slot the leg's copy records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejoin {
    /// From the bitmap (md's re-add): the running mirror dropped it while it was in sync, and
    /// it has not been written since; every write it missed is in the bitmap.
    Recovery,
    /// In full: nothing on it can be trusted to be current.
    Rebuild,
    /// It was written (its `events` moved on) after the running mirror dropped it: another
    /// assembly ran on it without this one's legs while this one ran without it (split brain),
    /// so each holds acknowledged writes the other lacks. Copying either way loses some; not
    /// for the module to decide (mdadm refuses a member that thinks the newest has failed).
    Diverged,
}

/// [`Rejoin`] for a leg whose own superblock is `theirs`, back to a mirror running with
/// `running` that dropped it (failed, or removed on request). The bitmap covers what the leg missed only if the leg was current when the
/// running mirror marked it failed: its `events` at most `failed_at_events` (what it was
/// written at last) and at least one below (the metadata write it may have missed, as
/// [`choose_legs`] allows a fresh leg). Further behind, it missed writes from before its
/// failure that no bitmap holds; further ahead, it ran apart. A leg that recorded its own
/// removal as it was taken out is judged by when it was dropped (its own entry's
/// `failed_at_events`), not by the events of that last write.
pub fn rejoin(running: &Superblock, theirs: &Superblock) -> Rejoin {
    if running.disagreement(theirs).is_some() {
        // Its data is laid out for another geometry: nothing on it can be kept.
        return Rejoin::Rebuild;
    }
    let slot = theirs.this_slot as usize;
    let (Some(mine), Some(own)) = (running.legs.get(slot), theirs.legs.get(slot)) else {
        return Rejoin::Rebuild;
    };
    let dropped = matches!(mine.role, LegRole::Failed | LegRole::Removed);
    if !dropped || mine.uuid != own.uuid {
        return Rejoin::Rebuild;
    }
    // When it was last written as a member: its own `events`, or, for a leg that recorded
    // its own removal as it was taken out (the SPDK glue's farewell), when it was dropped.
    let last = match own.role {
        LegRole::Active => theirs.events,
        LegRole::Removed => own.failed_at_events,
        LegRole::Failed | LegRole::Rebuilding => return Rejoin::Rebuild,
    };
    if last > mine.failed_at_events {
        Rejoin::Diverged
    } else if last.saturating_add(1) >= mine.failed_at_events {
        Rejoin::Recovery
    } else {
        Rejoin::Rebuild
    }
}

/// The one slot where `newest` records the leg uuid `older` carries (`None` when it records it
/// nowhere, or, in a damaged table, more than once).
pub fn slot_by_uuid(newest: &Superblock, older: &Superblock) -> Option<usize> {
    let own = older.own_uuid()?;
    let mut at = newest
        .legs
        .iter()
        .enumerate()
        .filter(|(_, l)| l.uuid == own)
        .map(|(s, _)| s);
    match (at.next(), at.next()) {
        (Some(s), None) => Some(s),
        _ => None,
    }
}

/// The copy with the highest `events`. Among equals (which normally carry the same fields
/// and leg table), the one most of them agree with, then the one whose leg table most of them
/// share, then the greatest encoding: any fixed order does, it only has to ignore arrival order.
fn pick_newest(sbs: &[&Superblock], valid: &[usize], bytes: &[Vec<u8>]) -> Option<usize> {
    let top = valid.iter().map(|&i| sbs[i].events).max()?;
    let tops: Vec<usize> = valid.iter().copied().filter(|&i| sbs[i].events == top).collect();
    let count = |same: &dyn Fn(&Superblock) -> bool| tops.iter().filter(|&&j| same(sbs[j])).count();
    tops.iter().copied().max_by_key(|&i| {
        let agree = count(&|o| sbs[i].disagreement(o).is_none());
        let table = count(&|o| sbs[i].legs == o.legs);
        (agree, table, &bytes[i])
    })
}

/// A leg mask from one flag per slot (at most `MAX_LEGS`, which fits a `u32`).
fn mask(flags: impl Iterator<Item = bool>) -> u32 {
    flags
        .enumerate()
        .filter(|&(i, f)| f && i < MAX_LEGS)
        .fold(0, |m, (i, _)| m | 1 << i)
}

// ------------------------------------------------------------------------------------------------
// Tunables record
// ------------------------------------------------------------------------------------------------

/// Where the tunables record sits in the superblock's 4096 bytes: reserved bytes past the
/// largest leg table (160 + 32 × 32 = 1184), far from it so the geometry's format may grow.
pub const TUNABLES_OFFSET: usize = 3072;
/// Size of the record, checksum included.
pub const TUNABLES_BYTES: usize = 128;
pub const TUNABLES_MAGIC: [u8; 8] = *b"SPDKMTUN";
pub const TUNABLES_VERSION: u32 = 1;
const TUNABLES_CRC: usize = TUNABLES_BYTES - 4;
/// The bounds the RPCs put on the tunables; a restored record is held to the same ones.
pub const MAX_POOL_SIZE: u32 = 1 << 20;
pub const MAX_MAX_PARENTS: u32 = 1 << 16;
pub const MAX_RATE_MB: u64 = 1 << 30;

// The record must stay clear of the largest leg table and of the superblock's checksum.
const _: () = assert!(LEG_TABLE_OFFSET + MAX_LEGS * LEG_ENTRY_BYTES <= TUNABLES_OFFSET);
const _: () = assert!(TUNABLES_OFFSET + TUNABLES_BYTES <= CRC_OFFSET);

/// A mirror's runtime settings, as the create and set RPCs accept them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunables {
    pub read_policy: ReadPolicy,
    /// Cap of background processes, MiB/s (0: none).
    pub rebuild_max_mb_per_s: u64,
    /// Child contexts per leg.
    pub pool_size: u32,
    /// Parents admitted per core.
    pub max_parents: u32,
}

/// The tunables as written on a leg. `generation` grows with every change, so that after a
/// crash in the middle of writing one, assembly takes the newer settings from whichever leg got
/// them (a change does not bump `events`: a leg that missed only a tunables write is not stale).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunablesRecord {
    pub generation: u64,
    pub tunables: Tunables,
}

/// What a leg's superblock says about its tunables: `Ok(None)` when it has no record (written
/// before records existed, or by a build that did not write one).
pub type TunablesRead = Result<Option<TunablesRecord>, TunablesError>;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TunablesError {
    #[error("tunables: bad magic {0:#018x} (the record's bytes are not zero and not a record)")]
    Magic(u64),
    #[error("tunables: version {0} is not supported (this build reads {TUNABLES_VERSION}); ignored")]
    Version(u32),
    #[error("tunables: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("tunables: {field} is {value}, must be {allowed}")]
    BadField {
        field: &'static str,
        value: u64,
        allowed: String,
    },
}

impl TunablesError {
    /// A record this build cannot read because a newer one wrote it: not damage, just ignored.
    pub fn is_unknown_version(&self) -> bool {
        matches!(self, TunablesError::Version(_))
    }
}

fn bad_tunable(field: &'static str, value: u64, allowed: impl Into<String>) -> TunablesError {
    TunablesError::BadField {
        field,
        value,
        allowed: allowed.into(),
    }
}

/// Read policies on disk: 0 least_outstanding, 1 round_robin, 2 preferred (with its leg).
fn policy_code(p: ReadPolicy) -> (u8, u32) {
    match p {
        ReadPolicy::LeastOutstanding => (0, 0),
        ReadPolicy::RoundRobin => (1, 0),
        ReadPolicy::Preferred(leg) => (2, leg),
    }
}

impl TunablesRecord {
    /// The record's bytes, checksum last.
    pub fn encode(&self) -> [u8; TUNABLES_BYTES] {
        let t = &self.tunables;
        let mut b = [0u8; TUNABLES_BYTES];
        b[0..8].copy_from_slice(&TUNABLES_MAGIC);
        put32(&mut b, 8, TUNABLES_VERSION);
        put32(&mut b, 12, TUNABLES_BYTES as u32);
        put64(&mut b, 16, self.generation);
        let (code, leg) = policy_code(t.read_policy);
        b[24] = code;
        put32(&mut b, 28, leg);
        put64(&mut b, 32, t.rebuild_max_mb_per_s);
        put32(&mut b, 40, t.pool_size);
        put32(&mut b, 44, t.max_parents);
        let crc = crc32c(&b[..TUNABLES_CRC]);
        put32(&mut b, TUNABLES_CRC, crc);
        b
    }

    /// Decodes the record in a superblock's bytes (`block`, at least `SUPERBLOCK_BYTES`) of a
    /// mirror with `legs` legs. All-zero bytes are no record (`Ok(None)`): superblocks written
    /// before records existed. Every value is held to the bounds the RPCs apply. Untrusted
    /// input: never panics.
    pub fn read(block: &[u8], legs: usize) -> TunablesRead {
        let Some(b) = block.get(TUNABLES_OFFSET..TUNABLES_OFFSET + TUNABLES_BYTES) else {
            return Ok(None);
        };
        if b.iter().all(|&x| x == 0) {
            return Ok(None);
        }
        if b[0..8] != TUNABLES_MAGIC {
            return Err(TunablesError::Magic(u64::from_be_bytes(
                b[0..8].try_into().expect("8 bytes"),
            )));
        }
        // The version first: a newer record may be laid out (and checksummed) differently.
        let version = get32(b, 8);
        if version != TUNABLES_VERSION {
            return Err(TunablesError::Version(version));
        }
        let (stored, computed) = (get32(b, TUNABLES_CRC), crc32c(&b[..TUNABLES_CRC]));
        if stored != computed {
            return Err(TunablesError::Checksum { stored, computed });
        }
        let len = get32(b, 12);
        if len as usize != TUNABLES_BYTES {
            return Err(bad_tunable("record_len", len as u64, TUNABLES_BYTES.to_string()));
        }
        Ok(Some(TunablesRecord {
            generation: get64(b, 16),
            tunables: Self::values(b, legs)?,
        }))
    }

    /// The settings of a checksummed record, each checked as the RPC checks it.
    fn values(b: &[u8], legs: usize) -> Result<Tunables, TunablesError> {
        let leg = get32(b, 28);
        let read_policy = match b[24] {
            0 | 1 if leg != 0 => {
                return Err(bad_tunable(
                    "preferred_leg",
                    leg as u64,
                    "0 unless read_policy is preferred",
                ))
            }
            0 => ReadPolicy::LeastOutstanding,
            1 => ReadPolicy::RoundRobin,
            2 if leg as usize >= legs => {
                return Err(bad_tunable(
                    "preferred_leg",
                    leg as u64,
                    format!("below the leg count {legs}"),
                ))
            }
            2 => ReadPolicy::Preferred(leg),
            other => {
                return Err(bad_tunable(
                    "read_policy",
                    other as u64,
                    "0 (least_outstanding), 1 (round_robin) or 2 (preferred)",
                ))
            }
        };
        let rate = get64(b, 32);
        if rate > MAX_RATE_MB {
            return Err(bad_tunable("rebuild_max_mb_per_s", rate, format!("0 to {MAX_RATE_MB}")));
        }
        let pool_size = get32(b, 40);
        if !(1..=MAX_POOL_SIZE).contains(&pool_size) {
            return Err(bad_tunable(
                "pool_size",
                pool_size as u64,
                format!("1 to {MAX_POOL_SIZE}"),
            ));
        }
        let max_parents = get32(b, 44);
        if !(1..=MAX_MAX_PARENTS).contains(&max_parents) {
            return Err(bad_tunable(
                "max_parents",
                max_parents as u64,
                format!("1 to {MAX_MAX_PARENTS}"),
            ));
        }
        Ok(Tunables {
            read_policy,
            rebuild_max_mb_per_s: rate,
            pool_size,
            max_parents,
        })
    }
}

impl Superblock {
    /// [`Superblock::encode`] with the tunables record in its reserved bytes, and the
    /// superblock's checksum (which covers them) computed again.
    pub fn encode_with(&self, t: &TunablesRecord) -> Result<Vec<u8>, SuperblockError> {
        let mut b = self.encode()?;
        b[TUNABLES_OFFSET..TUNABLES_OFFSET + TUNABLES_BYTES].copy_from_slice(&t.encode());
        let crc = crc32c(&b[..CRC_OFFSET]);
        put32(&mut b, CRC_OFFSET, crc);
        Ok(b)
    }
}

/// The tunables an assembled mirror starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub tunables: Tunables,
    /// The generation of the record taken (0 with the defaults): later changes count on.
    pub generation: u64,
    /// The copy the record came from; `None`: no current copy had a usable one, so the defaults.
    pub from: Option<usize>,
    /// Current copies whose record could not be used, and why (each error names the field).
    pub unusable: Vec<(usize, TunablesError)>,
}

/// Picks the tunables of an assembly: `records[i]` is what copy `found[i]` holds. Only current
/// copies count (the newest, and the kept copies at its `events`): a stale leg missed changes.
/// Among their usable records the highest generation wins (then the newest copy's, then a fixed
/// order of the bytes: never the order the legs appeared in); with none, `defaults`.
pub fn restore_tunables<S: Borrow<Superblock>>(
    found: &[S],
    records: &[TunablesRead],
    a: &Assembly,
    defaults: Tunables,
) -> Restored {
    let newest_events = found.get(a.newest).map(|s| s.borrow().events);
    let mut current: Vec<usize> = a
        .slots
        .iter()
        .flatten()
        .copied()
        .filter(|&i| found.get(i).map(|s| s.borrow().events) == newest_events)
        .collect();
    if !current.contains(&a.newest) {
        current.push(a.newest);
    }
    current.sort_unstable();
    let mut unusable = Vec::new();
    let mut best: Option<(usize, TunablesRecord)> = None;
    for &i in &current {
        match records.get(i) {
            Some(Ok(Some(r))) => {
                let key = |i: usize, r: &TunablesRecord| (r.generation, i == a.newest, r.encode());
                if best.as_ref().is_none_or(|(j, b)| key(i, r) > key(*j, b)) {
                    best = Some((i, *r));
                }
            }
            Some(Err(e)) => unusable.push((i, e.clone())),
            Some(Ok(None)) | None => {}
        }
    }
    match best {
        Some((i, r)) => Restored {
            tunables: r.tunables,
            generation: r.generation,
            from: Some(i),
            unusable,
        },
        None => Restored {
            tunables: defaults,
            generation: 0,
            from: None,
            unusable,
        },
    }
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}
fn get32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn get64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// CRC-32C (Castagnoli), as iSCSI and ext4 use, bitwise: superblocks are written rarely.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
