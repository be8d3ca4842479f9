//! The simulator's write-intent hook: none, or the real bitmap with flushes that take time.

use crate::bitmap::WriteIntentBitmap;
use crate::engine::{Gate, NoBitmap, ParentId, WriteIntent};

/// Bitmap settings for a simulation.
#[derive(Debug, Clone, Copy)]
pub struct BitmapConfig {
    pub region_blocks: u64,
    /// How long writing the bitmap to every leg takes.
    pub flush_latency_ns: u64,
    /// Idle time before a region is cleared.
    pub idle_clear_ns: u64,
}

pub enum SimIntent {
    None(NoBitmap),
    Bitmap(Box<WriteIntentBitmap>),
}

impl SimIntent {
    pub fn bitmap(&self) -> Option<&WriteIntentBitmap> {
        match self {
            SimIntent::Bitmap(b) => Some(b),
            SimIntent::None(_) => None,
        }
    }

    pub fn bitmap_mut(&mut self) -> Option<&mut WriteIntentBitmap> {
        match self {
            SimIntent::Bitmap(b) => Some(b),
            SimIntent::None(_) => None,
        }
    }
}

impl WriteIntent for SimIntent {
    fn start_write(&mut self, parent: ParentId, lba: u64, blocks: u64) -> Gate {
        match self {
            SimIntent::None(n) => n.start_write(parent, lba, blocks),
            SimIntent::Bitmap(b) => b.start_write(parent, lba, blocks),
        }
    }
    fn end_write(&mut self, lba: u64, blocks: u64, all_copies: bool) {
        match self {
            SimIntent::None(n) => n.end_write(lba, blocks, all_copies),
            SimIntent::Bitmap(b) => b.end_write(lba, blocks, all_copies),
        }
    }
}
