//! The tunables record: the mirror's options, kept inside the superblock's reserved bytes so
//! an assembled mirror comes back with the options it was given.

use std::borrow::Borrow;

use thiserror::Error;

use super::assembly::Assembly;
use super::{
    crc32c, get32, get64, put32, put64, Superblock, SuperblockError, CRC_OFFSET, LEG_ENTRY_BYTES, LEG_TABLE_OFFSET,
};
use crate::engine::ReadPolicy;
use crate::placement::MAX_LEGS;

/// Where the tunables record sits in the superblock's 4096 bytes: reserved bytes past the
/// largest leg table (160 + 32 × 32 = 1184), far from it so the geometry's format may grow.
pub const TUNABLES_OFFSET: usize = 3072;
/// Size of the record, checksum included.
pub const TUNABLES_BYTES: usize = 128;
pub const TUNABLES_MAGIC: [u8; 8] = *b"SPDKMTUN";
pub const TUNABLES_VERSION: u32 = 1;
pub(super) const TUNABLES_CRC: usize = TUNABLES_BYTES - 4;
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

pub(super) fn bad_tunable(field: &'static str, value: u64, allowed: impl Into<String>) -> TunablesError {
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
