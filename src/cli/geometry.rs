//! Geometry flags shared by `map` and `simulate`.

use clap::Args;

use spdk_mirror::placement::{Geometry, GeometryError, GeometrySpec, Level, Raid10Layout};

#[derive(Args, Clone)]
pub struct GeometryArgs {
    /// raid1 or raid10.
    #[arg(long, default_value = "raid1")]
    pub level: String,
    /// RAID10 layout: n2, f2, o2, n3, … (default n2).
    #[arg(long)]
    pub layout: Option<String>,
    /// Number of legs.
    #[arg(long, default_value_t = 2)]
    pub legs: u32,
    /// RAID10 chunk in KiB, a power of two (default 64, as bdev_mirror_create; md's is 512).
    #[arg(long)]
    pub chunk_kb: Option<u64>,
    /// Block size in bytes.
    #[arg(long, default_value_t = 512)]
    pub block_size: u32,
    /// Usable blocks on each leg.
    #[arg(long)]
    pub leg_blocks: Option<u64>,
}

impl GeometryArgs {
    pub fn spec(&self, default_leg_blocks: Option<u64>) -> Result<GeometrySpec, String> {
        let level = Level::parse(&self.level).map_err(|e| e.to_string())?;
        let layout = match (&self.layout, level) {
            (None, _) => None,
            (Some(_), Level::Raid1) => return Err(GeometryError::LayoutOnRaid1.to_string()),
            (Some(l), Level::Raid10) => Some(Raid10Layout::parse(l).map_err(|e| e.to_string())?),
        };
        let leg_blocks = self
            .leg_blocks
            .or(default_leg_blocks)
            .ok_or_else(|| "leg_blocks: --leg-blocks is required".to_string())?;
        let chunk_bytes = match self.chunk_kb {
            Some(kb) => Some(
                kb.checked_mul(1024)
                    .ok_or_else(|| format!("chunk_kb: {kb} KiB is too large"))?,
            ),
            None => None,
        };
        Ok(GeometrySpec {
            level,
            layout,
            legs: self.legs,
            chunk_bytes: if level == Level::Raid10 { chunk_bytes } else { None },
            block_size: self.block_size,
            leg_blocks,
        })
    }

    pub fn geometry(&self) -> Result<Geometry, String> {
        Geometry::new(&self.spec(None)?).map_err(|e| e.to_string())
    }
}
