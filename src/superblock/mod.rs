//! The mirror's on-disk superblock: what every leg says about the mirror it belongs to, so the
//! mirror can be reassembled from its legs (in any order, newest `events` wins) and a stale or
//! corrupt leg recognised. Byte layout: `docs/superblock.md`. Pure: no I/O here.
//!
//! Here: the superblock's format (encode, decode, validation). Beside it: `layout` (where the
//! superblock and the bitmap sit on a leg), `assembly` (which copies make the mirror, and how a
//! returning leg rejoins), `tunables` (the options record inside the superblock).

mod assembly;
mod layout;
mod tunables;

#[cfg(test)]
mod tests;

pub use assembly::{choose_legs, rejoin, slot_by_uuid, Assembly, Rejection, Rejoin};
pub use layout::{LayoutError, MetaLayout, MAX_REGION_KB, RESERVED_BYTES};
pub use tunables::{
    restore_tunables, Restored, Tunables, TunablesError, TunablesRead, TunablesRecord, MAX_MAX_PARENTS, MAX_POOL_SIZE,
    MAX_RATE_MB, TUNABLES_BYTES, TUNABLES_MAGIC, TUNABLES_OFFSET, TUNABLES_VERSION,
};

use thiserror::Error;

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
