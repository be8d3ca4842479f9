//! What a mirror's background process is and how far it got (`bdev_mirror_get_bdevs` shows
//! it): data only; the processes themselves run in `process`.

use std::time::Instant;

use serde_json::{json, Value};

use super::error::Fail;

pub const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rebuild,
    Recovery,
    Resync,
    Check {
        repair: bool,
    },
    /// Copies a leg onto its replacement (the target), which takes the replaced leg's place.
    Replace,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Rebuild => "rebuild",
            Kind::Recovery => "recovery",
            Kind::Resync => "resync",
            Kind::Replace => "replace",
            Kind::Check { .. } => "check",
        }
    }
}

/// What a check found. Blocks of a copy that could not be read are not compared: they are
/// counted apart and rewritten from the source (md's check rewrites read errors too), which
/// `repaired_blocks` counts with the mismatches a repair rewrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    pub blocks_checked: u64,
    pub mismatch_blocks: u64,
    pub unreadable_blocks: u64,
    pub repaired_blocks: u64,
}

pub type ProcessDone = Box<dyn FnOnce(Result<Outcome, Fail>)>;

/// A running process, as `bdev_mirror_get_bdevs` shows it.
#[derive(Debug, Clone)]
pub struct ProcessStatus {
    pub kind: Kind,
    pub target: Option<u32>,
    pub target_name: Option<String>,
    pub blocks_done: u64,
    pub blocks_total: u64,
    pub bytes_copied: u64,
    pub started: Instant,
}

impl ProcessStatus {
    fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64().max(1e-6);
        (self.bytes_copied as f64 / secs / MIB * 100.0).floor() / 100.0
    }

    pub fn json(&self) -> Value {
        json!({
            "type": self.kind.name(),
            "target": self.target_name,
            "target_slot": self.target,
            "progress": {
                "blocks": self.blocks_done,
                "total_blocks": self.blocks_total,
                "percent": (self.blocks_done as f64 * 100.0 / self.blocks_total.max(1) as f64 * 100.0).floor() / 100.0,
            },
            "bytes_copied": self.bytes_copied,
            "rate_mb_per_s": self.rate(),
        })
    }

    pub(super) fn ended(&self, result: &Result<Outcome, Fail>) -> Value {
        json!({
            "type": self.kind.name(),
            "target": self.target_name,
            "result": match result { Ok(_) => "done".to_string(), Err(e) => e.to_string() },
            "blocks": self.blocks_done,
            "bytes_copied": self.bytes_copied,
            "seconds": (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            "rate_mb_per_s": self.rate(),
        })
    }
}
