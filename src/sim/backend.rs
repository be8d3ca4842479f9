//! The simulator's backend: legs with latency and queue depth, bounded per-leg child pools, a
//! shared I/O pool that parents and children both draw from (SPDK's `spdk_bdev_io` pool), and
//! fault injection. Every block's content is kept so reads can be checked.
//!
//! Besides the mirror's legs it has the engine's replacement leg (`Engine::replacement_leg`,
//! the last one): a device like the others, which only gets I/O while a replacement is set.
//!
//! Time is discrete and seeded: the same configuration and seed give the same run.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::rng::Rng;
use crate::engine::{Backend, ChildInfo, ChildStatus, HostStatus, IoOp, Submitted};

/// A child context from a leg pool (an index into the simulator's context table).
#[derive(Debug)]
pub struct SimChild(u32);

/// Fault and behaviour injection.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Percent of children that complete synchronously inside `submit`.
    pub inline_pct: u32,
    /// Percent of submissions answered "no memory" even when the shared pool has room.
    pub nomem_pct: u32,
    /// Children on this leg fail with this percent chance.
    pub error_leg: Option<(u32, u32)>,
    /// Reads (only) on this leg fail with this percent chance: a medium error.
    pub read_error_leg: Option<(u32, u32)>,
    /// This leg holds its completions back from `start` for `len` ns.
    pub stall: Option<(u32, u64, u64)>,
}

/// Device model of one leg.
#[derive(Debug, Clone, Copy)]
pub struct LegModel {
    pub latency_ns: u64,
    pub jitter_ns: u64,
    pub queue_depth: u32,
}

struct Leg {
    model: LegModel,
    active: u32,
    queue: VecDeque<(SimChild, ChildInfo)>,
    /// The device is gone: every I/O fails.
    dead: bool,
    data: Vec<u64>,
    free_ctx: Vec<u32>,
}

/// A host I/O's buffer and identity; the engine's `Host` handle is its index.
pub struct HostIo {
    pub write_id: u64,
    pub lba: u64,
    pub buf: Vec<u64>,
}

/// Value stored in a block by write `write_id` at mirror block `lba`: unique per write and block.
pub fn block_value(write_id: u64, lba: u64) -> u64 {
    (write_id << 32) | (lba & 0xFFFF_FFFF)
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A child finishes service on its leg (index into `in_service`).
    Done(u32),
    /// The glue's poller (only scheduled under injected no-memory).
    Poll,
    /// A write-intent bitmap flush lands on the legs.
    BitmapFlushed,
    /// One leg's part of a metadata write (superblock and bitmap) lands.
    MetaLanded(u32),
}

/// A child being served by a leg.
struct Service {
    child: Option<SimChild>,
    info: ChildInfo,
    status: ChildStatus,
}

/// Something the simulator must tell the engine about.
pub enum Notice {
    ChildDone(SimChild, ChildInfo, ChildStatus),
    Poll,
    BitmapFlushed,
}

/// What happens next: something for the engine, or, in runs that model the superblocks, one
/// leg's part of a metadata write landing (that is for the metadata writer, not the engine).
pub enum SimEvent {
    Engine(Notice),
    MetaLanded(u32),
}

pub struct SimBackend {
    now: u64,
    seq: u64,
    rng: Rng,
    faults: Faults,
    legs: Vec<Leg>,
    /// Context table: which leg owns each context.
    ctx_leg: Vec<u32>,
    ctx_reserved: Vec<bool>,
    /// The host I/O each context serves while submitted.
    ctx_host: Vec<u32>,
    io_free: u32,
    io_capacity: u32,
    io_wanted: bool,
    io_signal: bool,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    in_service: Vec<Option<Service>>,
    free_service: Vec<u32>,
    pub hosts: Vec<HostIo>,
    /// Host I/Os completed since the runner last looked.
    pub completed: Vec<(u32, HostStatus)>,
    /// Each (write id, segment, leg) submitted, to prove no child goes twice.
    pub submitted_log: Option<Vec<(u64, u32, u32)>>,
    poll_scheduled: bool,
    /// Legs the engine failed since the runner last looked (a u64: the replacement leg of a
    /// 32-leg mirror is bit 32).
    failed_legs: u64,
}

impl SimBackend {
    /// `legs` is the mirror's; one more, the replacement leg, is made with the same model and
    /// pool. Every argument is a separate dimension of the simulated machine.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        legs: u32,
        leg_blocks: u64,
        model: LegModel,
        leg_pool: u32,
        io_pool: u32,
        host_slots: u32,
        max_io_blocks: u64,
        faults: Faults,
        seed: u64,
    ) -> Self {
        let mut ctx_leg = Vec::new();
        let legs: Vec<Leg> = (0..=legs)
            .map(|l| {
                let free_ctx = (0..leg_pool).map(|i| l * leg_pool + i).collect();
                ctx_leg.extend(std::iter::repeat_n(l, leg_pool as usize));
                Leg {
                    model,
                    active: 0,
                    queue: VecDeque::with_capacity(leg_pool as usize),
                    dead: false,
                    data: vec![0; leg_blocks as usize],
                    free_ctx,
                }
            })
            .collect();
        let ctx_count = ctx_leg.len();
        SimBackend {
            now: 0,
            seq: 0,
            rng: Rng::new(seed),
            faults,
            legs,
            ctx_reserved: vec![false; ctx_count],
            ctx_host: vec![0; ctx_count],
            ctx_leg,
            io_free: io_pool,
            io_capacity: io_pool,
            io_wanted: false,
            io_signal: false,
            events: BinaryHeap::with_capacity(ctx_count + 4),
            in_service: (0..ctx_count).map(|_| None).collect(),
            free_service: (0..ctx_count as u32).rev().collect(),
            hosts: (0..host_slots)
                .map(|_| HostIo {
                    write_id: 0,
                    lba: 0,
                    buf: vec![0; max_io_blocks as usize],
                })
                .collect(),
            completed: Vec::with_capacity(host_slots as usize),
            submitted_log: None,
            poll_scheduled: false,
            failed_legs: 0,
        }
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    /// The leg's device dies: from now on every I/O to it fails.
    pub fn kill_leg(&mut self, leg: u32) {
        self.legs[leg as usize].dead = true;
    }

    /// Whether the leg's device is gone (every I/O to it fails).
    pub fn leg_dead(&self, leg: u32) -> bool {
        self.legs[leg as usize].dead
    }

    /// Legs the engine failed since the last call, as a mask.
    pub fn take_failed_legs(&mut self) -> u64 {
        std::mem::take(&mut self.failed_legs)
    }

    pub fn leg_data(&self, leg: u32) -> &[u64] {
        &self.legs[leg as usize].data
    }

    /// Shared I/O items not in use.
    pub fn io_free(&self) -> u32 {
        self.io_free
    }

    pub fn io_capacity(&self) -> u32 {
        self.io_capacity
    }

    /// Child contexts free in a leg's pool.
    pub fn pool_free(&self, leg: u32) -> usize {
        self.legs[leg as usize].free_ctx.len()
    }

    /// Leaves `contexts` (at most the pool's size) in a leg's pool, before any I/O: one leg
    /// with a tighter pool than the others.
    pub fn shrink_pool(&mut self, leg: u32, contexts: u32) {
        self.legs[leg as usize].free_ctx.truncate(contexts as usize);
    }

    /// Whether the engine asked to hear of shared I/O coming back, and some did.
    pub fn take_io_signal(&mut self) -> bool {
        std::mem::take(&mut self.io_signal)
    }

    fn free_io(&mut self) {
        self.io_free += 1;
        debug_assert!(self.io_free <= self.io_capacity);
        if self.io_wanted {
            self.io_wanted = false;
            self.io_signal = true;
        }
    }

    /// Advances time to the next event and returns what the engine must hear; `None` when
    /// nothing is left to happen. For runs that write no metadata (`start_meta_write`).
    pub fn next_notice(&mut self) -> Option<Notice> {
        match self.next_event()? {
            SimEvent::Engine(n) => Some(n),
            SimEvent::MetaLanded(_) => unreachable!("next_notice in a run that writes metadata: use next_event"),
        }
    }

    /// Advances time to the next event and returns it; `None` when nothing is left to happen.
    pub fn next_event(&mut self) -> Option<SimEvent> {
        let Reverse((t, _, ev)) = self.events.pop()?;
        self.now = self.now.max(t);
        let notice = match ev {
            Event::Poll => {
                self.poll_scheduled = false;
                Notice::Poll
            }
            Event::BitmapFlushed => Notice::BitmapFlushed,
            Event::MetaLanded(leg) => return Some(SimEvent::MetaLanded(leg)),
            Event::Done(slot) => {
                let svc = self.in_service[slot as usize].take().expect("service slot in use");
                self.free_service.push(slot);
                let info = svc.info;
                let leg = info.leg as usize;
                self.legs[leg].active -= 1;
                if let Some((child, info)) = self.legs[leg].queue.pop_front() {
                    self.start_service(child, info);
                }
                let child = svc.child.expect("child in service");
                let status = self.perform(self.ctx_host[child.0 as usize], &info, svc.status);
                self.ctx_reserved[child.0 as usize] = false;
                self.free_io();
                Notice::ChildDone(child, info, status)
            }
        };
        Some(SimEvent::Engine(notice))
    }

    /// One leg's part of a metadata write was issued; it lands after `latency_ns`. It does not
    /// queue behind the leg's data I/O: the metadata writer models its own latency.
    pub fn start_meta_write(&mut self, leg: u32, latency_ns: u64) {
        self.schedule(self.now + latency_ns, Event::MetaLanded(leg));
    }

    /// A bitmap flush was issued; it lands after `latency_ns`.
    pub fn start_bitmap_flush(&mut self, latency_ns: u64) {
        self.schedule(self.now + latency_ns, Event::BitmapFlushed);
    }

    fn schedule(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, ev)));
    }

    fn start_service(&mut self, child: SimChild, info: ChildInfo) {
        let leg = &mut self.legs[info.leg as usize];
        leg.active += 1;
        let model = leg.model;
        let jitter = if model.jitter_ns > 0 {
            self.rng.below(model.jitter_ns)
        } else {
            0
        };
        let mut at = self.now + model.latency_ns + jitter;
        if let Some((l, start, len)) = self.faults.stall {
            if l == info.leg && at >= start && at < start + len {
                at = start + len;
            }
        }
        let status = self.draw_status(&info);
        let slot = self.free_service.pop().expect("one service slot per context");
        self.in_service[slot as usize] = Some(Service {
            child: Some(child),
            info,
            status,
        });
        self.schedule(at, Event::Done(slot));
    }

    fn draw_status(&mut self, info: &ChildInfo) -> ChildStatus {
        let hit =
            |f: Option<(u32, u32)>, rng: &mut Rng| matches!(f, Some((l, pct)) if l == info.leg && rng.percent(pct));
        if hit(self.faults.error_leg, &mut self.rng)
            || (info.op == IoOp::Read && hit(self.faults.read_error_leg, &mut self.rng))
        {
            ChildStatus::Error
        } else {
            ChildStatus::Success
        }
    }

    /// Applies a child to the leg's data (at completion, as a device would) and returns its
    /// final status.
    fn perform(&mut self, host: u32, info: &ChildInfo, drawn: ChildStatus) -> ChildStatus {
        let leg = &mut self.legs[info.leg as usize];
        if leg.dead || drawn == ChildStatus::Error {
            return ChildStatus::Error;
        }
        let host = &mut self.hosts[host as usize];
        let off = info.buf_offset as usize;
        let n = info.blocks as usize;
        let on_leg = info.leg_lba as usize;
        match info.op {
            IoOp::Read => host.buf[off..off + n].copy_from_slice(&leg.data[on_leg..on_leg + n]),
            // Writes carry the host buffer: a host write's data, or a read-repair's good copy.
            IoOp::Write => leg.data[on_leg..on_leg + n].copy_from_slice(&host.buf[off..off + n]),
            IoOp::Unmap | IoOp::WriteZeroes => leg.data[on_leg..on_leg + n].fill(0),
            IoOp::Flush => {}
        }
        ChildStatus::Success
    }

    /// The host I/O a child serves (a direct read's or write's, which the engine does not keep).
    pub fn child_host(&self, child: &SimChild) -> u32 {
        self.ctx_host[child.0 as usize]
    }
}

impl Backend for SimBackend {
    type Host = u32;
    type Child = SimChild;

    fn alloc_child(&mut self, leg: u32) -> Option<SimChild> {
        self.legs[leg as usize].free_ctx.pop().map(SimChild)
    }

    fn free_child(&mut self, leg: u32, child: SimChild) {
        debug_assert_eq!(self.ctx_leg[child.0 as usize], leg);
        if std::mem::take(&mut self.ctx_reserved[child.0 as usize]) {
            self.free_io();
        }
        self.legs[leg as usize].free_ctx.push(child.0);
    }

    fn reserve_io(&mut self, child: &mut SimChild) -> bool {
        if self.io_free == 0 {
            return false;
        }
        self.io_free -= 1;
        self.ctx_reserved[child.0 as usize] = true;
        true
    }

    fn admit_parent(&mut self, _host: &u32) -> bool {
        if self.io_free == 0 {
            return false;
        }
        self.io_free -= 1;
        true
    }

    fn release_parent(&mut self) {
        self.free_io();
    }

    fn submit(&mut self, host: &u32, child: SimChild, info: ChildInfo) -> Submitted<SimChild> {
        self.ctx_host[child.0 as usize] = *host;
        let reserved = self.ctx_reserved[child.0 as usize];
        if !reserved {
            if self.io_free == 0 || self.rng.percent(self.faults.nomem_pct) {
                if self.faults.nomem_pct > 0 && !self.poll_scheduled {
                    // Injected no-memory has nothing in flight to wake it: the glue's poller does.
                    self.poll_scheduled = true;
                    self.schedule(self.now + 10_000, Event::Poll);
                }
                return Submitted::NoMem(child, info);
            }
            self.io_free -= 1;
            self.ctx_reserved[child.0 as usize] = true;
        }
        if let Some(log) = self.submitted_log.as_mut() {
            log.push((self.hosts[*host as usize].write_id, info.segment, info.leg));
        }
        if self.rng.percent(self.faults.inline_pct) {
            let drawn = self.draw_status(&info);
            let status = self.perform(*host, &info, drawn);
            self.ctx_reserved[child.0 as usize] = false;
            self.free_io();
            return Submitted::Completed(child, info, status);
        }
        let leg = &mut self.legs[info.leg as usize];
        if leg.active < leg.model.queue_depth {
            self.start_service(child, info);
        } else {
            leg.queue.push_back((child, info));
        }
        Submitted::InFlight
    }

    fn wait_for_io(&mut self, _leg: Option<u32>) {
        if self.io_free > 0 {
            self.io_signal = true;
        } else {
            self.io_wanted = true;
        }
    }

    fn complete(&mut self, host: u32, status: HostStatus) {
        self.completed.push((host, status));
    }

    fn leg_failed(&mut self, leg: u32) {
        self.failed_legs |= 1 << leg;
    }
}
