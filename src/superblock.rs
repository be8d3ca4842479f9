//! The mirror's on-disk superblock: what every leg says about the mirror it belongs to, so the
//! mirror can be reassembled from its legs (in any order, newest `events` wins) and a stale or
//! corrupt leg recognised. Byte layout: `docs/superblock.md`. Pure: no I/O here.

use thiserror::Error;

use crate::placement::{Level, Raid10Layout, MAX_LEGS};

/// Size of the encoded superblock. It sits at block 0 of every leg, inside the reserved region
/// before `data_offset_blocks`.
pub const SUPERBLOCK_BYTES: usize = 4096;
pub const MAGIC: [u8; 8] = *b"SPDKMIR1";
pub const VERSION: u32 = 1;
const NAME_BYTES: usize = 64;
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
            other => return Err(SuperblockError::BadField("leg role", other as u64)),
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

    /// Decodes and checks a superblock: magic, version, checksum, then every field's range.
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
        let name_end = b[32..32 + NAME_BYTES]
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(NAME_BYTES);
        let name = std::str::from_utf8(&b[32..32 + name_end])
            .map_err(|_| SuperblockError::BadField("name", 0))?
            .to_string();
        let level = match b[96] {
            1 => Level::Raid1,
            10 => Level::Raid10,
            other => return Err(SuperblockError::BadField("level", other as u64)),
        };
        let layout = Raid10Layout {
            near: b[97] as u32,
            far: b[98] as u32,
            offset: b[99] & 1 != 0,
        };
        if layout.near == 0 || layout.far == 0 {
            return Err(SuperblockError::BadField("layout", (b[97] as u64) << 8 | b[98] as u64));
        }
        let nlegs = get32(b, 108) as usize;
        if nlegs == 0 || nlegs > MAX_LEGS {
            return Err(SuperblockError::BadField("leg count", nlegs as u64));
        }
        let this_slot = get32(b, 136);
        if this_slot as usize >= nlegs {
            return Err(SuperblockError::BadField("slot", this_slot as u64));
        }
        let block_size = get32(b, 104);
        if block_size < 512 || !block_size.is_power_of_two() {
            return Err(SuperblockError::BadField("block size", block_size as u64));
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
            block_size,
            data_offset_blocks: get64(b, 112),
            leg_data_blocks: get64(b, 120),
            events: get64(b, 128),
            this_slot,
            bitmap_region_kb: get32(b, 140),
            bitmap_offset_blocks: get64(b, 144),
            bitmap_blocks: get64(b, 152),
            legs,
        })
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

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LayoutError {
    #[error("bitmap_region_kb: must be a power of two of at least the block size, got {0} KiB")]
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
        if region_kb == 0 || !region_kb.is_power_of_two() || region_bytes < bs {
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

    /// Blocks of one metadata write: the superblock and the bitmap after it.
    pub fn meta_blocks(&self) -> u64 {
        self.bitmap_offset_blocks + self.bitmap_blocks
    }
}

/// Of the superblocks read from a mirror's legs, the one to assemble from (the newest
/// `events`), and the slots whose copy is older (stale: not trusted, to be recovered).
pub fn choose_newest(found: &[Superblock]) -> Option<(&Superblock, Vec<u32>)> {
    let newest = found.iter().max_by_key(|s| s.events)?;
    let stale = found
        .iter()
        .filter(|s| s.events < newest.events)
        .map(|s| s.this_slot)
        .collect();
    Some((newest, stale))
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
            bitmap_blocks: 8,
            legs: (0..4)
                .map(|i| LegEntry {
                    uuid: [i as u8; 16],
                    role: if i == 3 { LegRole::Failed } else { LegRole::Active },
                    failed_at_events: if i == 3 { 40 } else { 0 },
                })
                .collect(),
        }
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
    fn newest_events_win_and_older_legs_are_stale() {
        let mut a = sample();
        let mut b = sample();
        let mut c = sample();
        (a.this_slot, b.this_slot, c.this_slot) = (0, 1, 2);
        (a.events, b.events, c.events) = (42, 41, 42);
        let found = [b.clone(), a.clone(), c.clone()];
        let (newest, stale) = choose_newest(&found).unwrap();
        assert_eq!(newest.events, 42);
        assert_eq!(stale, vec![1]);
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
    }
}
