//! The simulated host: which blocks it has I/O in flight on (it never issues overlapping writes,
//! nor a read over a write in flight, so each block's expected value is well defined), what each
//! block must hold after its last acknowledged write, and what it holds back while the mirror
//! may not acknowledge yet.

use super::backend::{block_value, HostIo};
use crate::engine::{HostStatus, IoOp, IoRequest, WriteState};

/// Marks a block whose content is unknown (a failed write may or may not have landed).
pub const UNKNOWN: u64 = u64::MAX;

pub struct Host {
    pub busy_w: Vec<u16>,
    pub busy_r: Vec<u16>,
    /// The value each block holds after its last acknowledged write (`UNKNOWN` after a
    /// failed one).
    pub expected: Vec<u64>,
    pub reqs: Vec<IoRequest>,
    /// Each host I/O's direct-write state (the SPDK glue keeps it in the `spdk_bdev_io`).
    pub writes: Vec<WriteState>,
    pub free: Vec<u32>,
    pub completed: u64,
    pub failed: u64,
    pub mismatches: u64,
    pub last_completion: u64,
    /// Completions the mirror has not acknowledged yet: a leg failure is not in the
    /// superblocks (the SPDK channel's `held`).
    pub held: Vec<(u32, HostStatus)>,
    /// When the mirror first failed a leg.
    pub failure: Option<Failure>,
}

/// The moment the mirror first failed a leg, as the host saw it.
#[derive(Debug, Clone, Copy)]
pub struct Failure {
    /// Acknowledgements until then.
    pub acks: u64,
    pub at_ns: u64,
    /// Host writes issued and not acknowledged then.
    pub writes_in_flight: u64,
}

impl Host {
    pub fn new(qd: u32, data_blocks: u64) -> Self {
        Host {
            busy_w: vec![0; data_blocks as usize],
            busy_r: vec![0; data_blocks as usize],
            expected: vec![0; data_blocks as usize],
            reqs: vec![
                IoRequest {
                    op: IoOp::Read,
                    lba: 0,
                    blocks: 0
                };
                qd as usize
            ],
            writes: vec![WriteState::default(); qd as usize],
            free: (0..qd).rev().collect(),
            completed: 0,
            failed: 0,
            mismatches: 0,
            last_completion: 0,
            held: Vec::with_capacity(qd as usize),
            failure: None,
        }
    }

    pub fn conflicts(&self, req: &IoRequest) -> bool {
        let r = req.lba as usize..(req.lba + req.blocks) as usize;
        match req.op {
            IoOp::Read => self.busy_w[r].iter().any(|&c| c > 0),
            _ => self.busy_w[r.clone()].iter().any(|&c| c > 0) || self.busy_r[r].iter().any(|&c| c > 0),
        }
    }

    pub fn mark(&mut self, req: &IoRequest, add: bool) {
        let r = req.lba as usize..(req.lba + req.blocks) as usize;
        let counts = if req.op == IoOp::Read {
            &mut self.busy_r[r]
        } else {
            &mut self.busy_w[r]
        };
        for c in counts {
            if add {
                *c += 1
            } else {
                *c -= 1
            }
        }
    }

    /// The host takes the acknowledgement of the I/O in `slot`: a read is checked against the
    /// last acknowledged writes, a write becomes what its blocks must hold.
    pub fn ack(&mut self, slot: u32, status: HostStatus, io: &HostIo, now: u64) {
        assert!(!self.free.contains(&slot), "host I/O in slot {slot} completed twice");
        let req = self.reqs[slot as usize];
        self.mark(&req, false);
        self.completed += 1;
        self.last_completion = now;
        let range = req.lba as usize..(req.lba + req.blocks) as usize;
        match (req.op, status) {
            (_, HostStatus::Failed) => {
                self.failed += 1;
                if req.op == IoOp::Write {
                    self.expected[range].fill(UNKNOWN);
                }
            }
            (IoOp::Read, HostStatus::Success) => {
                self.mismatches += io.buf[..req.blocks as usize]
                    .iter()
                    .zip(&self.expected[range])
                    .filter(|(got, want)| **want != UNKNOWN && got != want)
                    .count() as u64;
            }
            (_, HostStatus::Success) => {
                for (i, e) in self.expected[range].iter_mut().enumerate() {
                    *e = block_value(io.write_id, req.lba + i as u64);
                }
            }
        }
        self.free.push(slot);
    }

    /// Notes the mirror's first leg failure (later ones change nothing here).
    pub fn note_failure(&mut self, now: u64) {
        if self.failure.is_none() {
            let writes_in_flight = (0..self.reqs.len() as u32)
                .filter(|s| !self.free.contains(s) && self.reqs[*s as usize].op == IoOp::Write)
                .count() as u64;
            self.failure = Some(Failure {
                acks: self.completed,
                at_ns: now,
                writes_in_flight,
            });
        }
    }

    /// Per block, what the last acknowledged write promised (`None`: a write there failed).
    pub fn acked(&self) -> Vec<Option<u64>> {
        self.expected.iter().map(|&v| (v != UNKNOWN).then_some(v)).collect()
    }

    /// Per block, the value of a write issued and not acknowledged (held ones included): it
    /// may or may not be on the legs.
    pub fn unacked(&self, ios: &[HostIo]) -> Vec<Option<u64>> {
        let mut out = vec![None; self.expected.len()];
        let busy = (0..self.reqs.len() as u32).filter(|s| !self.free.contains(s));
        for slot in busy {
            let req = self.reqs[slot as usize];
            if req.op == IoOp::Write {
                for lba in req.lba..req.lba + req.blocks {
                    out[lba as usize] = Some(block_value(ios[slot as usize].write_id, lba));
                }
            }
        }
        out
    }
}
