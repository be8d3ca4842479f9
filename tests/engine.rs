//! The engine against a scripted backend: every step of md's fix, observed one event at a time;
//! and the replacement leg (md's --replace) under random load on the simulator.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use spdk_mirror::engine::{
    Backend, ChildInfo, ChildStatus, DirectWrite, Engine, EngineConfig, Gate, HostStatus, IoOp, IoRequest, ParentId,
    ReadPolicy, Strategy, Submitted, WriteIntent, WriteState, DIRECT, DIRECT_WRITE,
};
use spdk_mirror::placement::{Geometry, GeometrySpec, Level, Raid10Layout};
use spdk_mirror::sim::backend::{block_value, Notice};
use spdk_mirror::sim::host::Host;
use spdk_mirror::sim::rng::Rng;
use spdk_mirror::sim::{Faults, LegModel, SimBackend};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Submit { host: u32, leg: u32, lba: u64, blocks: u64 },
    Complete { host: u32, status: HostStatus },
    StartWrite { lba: u64 },
    EndWrite { lba: u64, all_copies: bool },
    WaitIo,
}

type Log = Rc<RefCell<Vec<Ev>>>;

/// A backend that does exactly what the test tells it.
struct Script {
    log: Log,
    pools: Vec<u32>,
    inline: bool,
    /// Answer "no memory" to this many upcoming submissions.
    nomem: u32,
    /// Answer "no memory" once, after this many more submissions went through.
    refuse_nth: Option<u32>,
    in_flight: VecDeque<(u32, ChildInfo)>,
    /// The hosts of direct writes' children in flight, in order (the caller's to know).
    direct_hosts: VecDeque<u32>,
    /// Status the next completions get, per leg.
    fail_leg: Option<u32>,
    /// Mirror blocks below this are "awaiting resync": reads are pinned to one copy.
    pinned_below: u64,
    /// Legs the engine reported failed (`Backend::leg_failed`).
    failed: u64,
}

impl Script {
    fn new(log: &Log, legs: usize, pool: u32) -> Self {
        Script {
            log: log.clone(),
            pools: vec![pool; legs],
            inline: false,
            nomem: 0,
            refuse_nth: None,
            in_flight: VecDeque::new(),
            direct_hosts: VecDeque::new(),
            fail_leg: None,
            pinned_below: 0,
            failed: 0,
        }
    }
}

impl Backend for Script {
    type Host = u32;
    type Child = u32; // the leg it came from

    fn alloc_child(&mut self, leg: u32) -> Option<u32> {
        let p = &mut self.pools[leg as usize];
        if *p == 0 {
            return None;
        }
        *p -= 1;
        Some(leg)
    }
    fn free_child(&mut self, leg: u32, child: u32) {
        assert_eq!(leg, child, "context returned to the wrong pool");
        self.pools[leg as usize] += 1;
    }
    fn submit(&mut self, host: &u32, child: u32, info: ChildInfo) -> Submitted<u32> {
        if self.nomem > 0 {
            self.nomem -= 1;
            return Submitted::NoMem(child, info);
        }
        match self.refuse_nth {
            Some(0) => {
                self.refuse_nth = None;
                return Submitted::NoMem(child, info);
            }
            Some(n) => self.refuse_nth = Some(n - 1),
            None => {}
        }
        self.log.borrow_mut().push(Ev::Submit {
            host: *host,
            leg: info.leg,
            lba: info.leg_lba,
            blocks: info.blocks,
        });
        let status = if self.fail_leg == Some(info.leg) {
            ChildStatus::Error
        } else {
            ChildStatus::Success
        };
        if self.inline {
            return Submitted::Completed(child, info, status);
        }
        if info.parent == DIRECT_WRITE {
            self.direct_hosts.push_back(*host);
        }
        self.in_flight.push_back((child, info));
        Submitted::InFlight
    }
    fn wait_for_io(&mut self, _leg: Option<u32>) {
        self.log.borrow_mut().push(Ev::WaitIo);
    }
    fn complete(&mut self, host: u32, status: HostStatus) {
        self.log.borrow_mut().push(Ev::Complete { host, status });
    }
    fn read_pinned(&self, lba: u64, _blocks: u64) -> bool {
        lba < self.pinned_below
    }
    fn leg_failed(&mut self, leg: u32) {
        self.failed |= 1 << leg;
    }
}

struct Intent {
    log: Log,
    pending: bool,
}

impl WriteIntent for Intent {
    fn start_write(&mut self, _: ParentId, lba: u64, _: u64) -> Gate {
        self.log.borrow_mut().push(Ev::StartWrite { lba });
        if self.pending {
            Gate::Pending
        } else {
            Gate::Ready
        }
    }
    fn end_write(&mut self, lba: u64, _: u64, all_copies: bool) {
        self.log.borrow_mut().push(Ev::EndWrite { lba, all_copies });
    }
}

fn raid1(legs: u32) -> Geometry {
    Geometry::new(&GeometrySpec {
        level: Level::Raid1,
        layout: None,
        legs,
        chunk_bytes: None,
        block_size: 512,
        leg_blocks: 1000,
    })
    .unwrap()
}

fn engine(geo: Geometry, pool: u32, max_parents: u32) -> (Engine<Script, Intent>, Log) {
    let log: Log = Rc::default();
    let legs = geo.legs() as usize + 1; // and the replacement leg
    let e = Engine::with_intent(
        geo,
        EngineConfig {
            max_parents,
            strategy: Strategy::Immediate,
            read_policy: ReadPolicy::default(),
        },
        Script::new(&log, legs, pool),
        Intent {
            log: log.clone(),
            pending: false,
        },
    );
    (e, log)
}

fn write(lba: u64, blocks: u64) -> IoRequest {
    IoRequest {
        op: IoOp::Write,
        lba,
        blocks,
    }
}

fn read(lba: u64, blocks: u64) -> IoRequest {
    IoRequest {
        op: IoOp::Read,
        lba,
        blocks,
    }
}

/// The status the script gives a child: an error on the leg it fails, else success.
fn scripted_status(e: &Engine<Script, Intent>, info: &ChildInfo) -> ChildStatus {
    if e.backend().fail_leg == Some(info.leg) {
        ChildStatus::Error
    } else {
        ChildStatus::Success
    }
}

/// Completes the oldest in-flight child with its scripted status.
fn complete_one(e: &mut Engine<Script, Intent>) -> ChildInfo {
    let (child, info) = e.backend_mut().in_flight.pop_front().expect("a child in flight");
    let status = scripted_status(e, &info);
    e.child_done(child, info, status);
    info
}

fn completions(log: &Log) -> Vec<(u32, HostStatus)> {
    log.borrow()
        .iter()
        .filter_map(|e| match e {
            Ev::Complete { host, status } => Some((*host, *status)),
            _ => None,
        })
        .collect()
}

fn submits(log: &Log) -> Vec<(u32, u32)> {
    log.borrow()
        .iter()
        .filter_map(|e| match e {
            Ev::Submit { host, leg, .. } => Some((*host, *leg)),
            _ => None,
        })
        .collect()
}

#[test]
fn children_completing_inside_submit_cannot_finish_the_parent_early() {
    let (mut e, log) = engine(raid1(3), 4, 4);
    e.backend_mut().inline = true;
    e.submit(7, write(10, 4));
    // Every child was issued before the parent completed, and it completed once.
    let log = log.borrow();
    let last_submit = log.iter().rposition(|e| matches!(e, Ev::Submit { .. })).unwrap();
    let complete = log.iter().position(|e| matches!(e, Ev::Complete { .. })).unwrap();
    assert_eq!(log.iter().filter(|e| matches!(e, Ev::Submit { .. })).count(), 3);
    assert!(
        complete > last_submit,
        "parent completed before its last child was issued: {log:?}"
    );
    assert_eq!(log.iter().filter(|e| matches!(e, Ev::Complete { .. })).count(), 1);
    assert!(e.is_idle());
}

#[test]
fn write_intent_starts_before_the_first_child_and_ends_after_the_last() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.submit(1, write(5, 2));
    complete_one(&mut e);
    assert!(
        !log.borrow().iter().any(|e| matches!(e, Ev::EndWrite { .. })),
        "ended before the last child"
    );
    complete_one(&mut e);
    let log = log.borrow();
    assert_eq!(log[0], Ev::StartWrite { lba: 5 });
    assert!(matches!(log[1], Ev::Submit { .. }));
    let end = log.iter().position(|e| matches!(e, Ev::EndWrite { .. })).unwrap();
    assert_eq!(
        log[end],
        Ev::EndWrite {
            lba: 5,
            all_copies: true
        }
    );
    assert!(matches!(
        log[end + 1],
        Ev::Complete {
            status: HostStatus::Success,
            ..
        }
    ));
}

#[test]
fn pending_intent_holds_the_write_until_ready() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.intent_mut().pending = true;
    e.submit(1, write(0, 1));
    assert!(submits(&log).is_empty());
    e.write_intent_ready(0);
    assert_eq!(submits(&log), vec![(1, 0), (1, 1)]);
}

#[test]
fn empty_leg_pool_parks_at_the_exact_child_and_resumes_there() {
    let (mut e, log) = engine(raid1(3), 1, 4);
    e.submit(1, write(0, 1)); // takes the only context of each leg
    e.submit(2, write(8, 1)); // parks at its first child
    assert_eq!(submits(&log), vec![(1, 0), (1, 1), (1, 2)]);
    assert_eq!(e.stats().pool_waits, 1);
    complete_one(&mut e); // leg 0 back: parent 2 issues leg 0, then parks on leg 1
    assert_eq!(submits(&log)[3..], [(2, 0)]);
    complete_one(&mut e); // leg 1 back
    complete_one(&mut e); // leg 2 back: parent 1 done
    assert_eq!(submits(&log)[3..], [(2, 0), (2, 1), (2, 2)]);
    while !e.backend().in_flight.is_empty() {
        complete_one(&mut e);
    }
    assert_eq!(
        completions(&log),
        vec![(1, HostStatus::Success), (2, HostStatus::Success)]
    );
    assert_eq!(e.backend().pools, vec![1, 1, 1, 1]);
}

#[test]
fn no_memory_parks_at_the_exact_child_and_resubmits_it_once() {
    let (mut e, log) = engine(raid1(3), 4, 4);
    e.submit(1, write(0, 1));
    e.backend_mut().nomem = 1;
    e.submit(2, write(1, 1));
    // Parent 2's first child was refused: nothing of it went out, it waits for I/O.
    assert_eq!(submits(&log), vec![(1, 0), (1, 1), (1, 2)]);
    assert!(log.borrow().contains(&Ev::WaitIo));
    assert_eq!(e.leg_stats(0).nomem, 1);
    e.io_available();
    assert_eq!(submits(&log)[3..], [(2, 0), (2, 1), (2, 2)]);
    while !e.backend().in_flight.is_empty() {
        complete_one(&mut e);
    }
    assert_eq!(completions(&log).len(), 2);
    assert_eq!(e.backend().pools, vec![4, 4, 4, 4]);
}

#[test]
fn no_memory_midway_resumes_at_the_refused_child() {
    let (mut e, log) = engine(raid1(3), 4, 4);
    e.backend_mut().refuse_nth = Some(1); // the second child is refused
    e.submit(1, write(0, 1));
    assert_eq!(submits(&log), vec![(1, 0)]);
    // The child already out completes: the parent is parked, not done.
    complete_one(&mut e);
    assert!(completions(&log).is_empty(), "parent completed while parked");
    e.io_available();
    assert_eq!(submits(&log), vec![(1, 0), (1, 1), (1, 2)]);
    complete_one(&mut e);
    complete_one(&mut e);
    assert_eq!(completions(&log), vec![(1, HostStatus::Success)]);
    assert_eq!(e.backend().pools, vec![4, 4, 4, 4]);
}

#[test]
fn a_failed_leg_is_skipped_for_writes_and_never_read() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.fail_leg(0);
    e.submit(1, write(0, 4));
    e.submit(2, read(0, 4));
    assert_eq!(submits(&log), vec![(1, 1), (2, 1)]);
    complete_one(&mut e);
    complete_one(&mut e);
    assert_eq!(
        completions(&log),
        vec![(1, HostStatus::Success), (2, HostStatus::Success)]
    );
    // The write missed a copy, so the bitmap must keep its region dirty.
    assert!(log.borrow().contains(&Ev::EndWrite {
        lba: 0,
        all_copies: false
    }));
}

#[test]
fn reads_go_to_the_leg_with_the_least_outstanding_blocks() {
    let (mut e, log) = engine(raid1(3), 8, 8);
    e.submit(1, read(0, 8)); // leg 0 (all idle: first)
    e.submit(2, read(0, 4)); // leg 1
    e.submit(3, read(0, 2)); // leg 2
    e.submit(4, read(0, 1)); // leg 2 has 2 outstanding, least
    assert_eq!(submits(&log), vec![(1, 0), (2, 1), (3, 2), (4, 2)]);
    assert_eq!(e.leg_outstanding_blocks(2), 3);
}

#[test]
fn reads_awaiting_resync_all_go_to_the_first_readable_copy() {
    let (mut e, log) = engine(raid1(3), 8, 8);
    e.backend_mut().pinned_below = 100;
    e.submit(1, read(0, 8));
    e.submit(2, read(0, 4)); // leg 0 is busiest, but pinned reads stay there
    e.submit(3, read(100, 4)); // not pinned: the least busy leg
    e.fail_leg(0);
    e.submit(4, read(0, 1)); // leg 0 failed: the next copy in placement order
    assert_eq!(submits(&log), vec![(1, 0), (2, 0), (3, 1), (4, 1)]);
}

#[test]
fn a_failed_read_is_retried_on_another_copy_and_the_bad_copy_rewritten() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.backend_mut().fail_leg = Some(0);
    e.submit(1, read(0, 1));
    complete_one(&mut e); // leg 0 fails the read
    e.backend_mut().fail_leg = None;
    complete_one(&mut e); // retried on leg 1: good data, so leg 0 is rewritten with it
    assert_eq!(submits(&log), vec![(1, 0), (1, 1), (1, 0)]);
    assert!(
        completions(&log).is_empty(),
        "the host buffer is still being written from"
    );
    let repair = complete_one(&mut e);
    assert_eq!((repair.op, repair.leg), (IoOp::Write, 0));
    assert_eq!(completions(&log), vec![(1, HostStatus::Success)]);
    assert_eq!(e.leg_stats(0).read_errors, 1);
    assert_eq!(e.leg_stats(0).read_repairs, 1);
    assert_eq!(e.stats().read_retries, 1);
    assert!(!e.leg_failed(0));
    assert_eq!(e.backend().pools, vec![4, 4, 4]);
}

#[test]
fn a_read_failing_inside_its_submit_is_retried_and_repaired_before_it_completes() {
    // The failure arrives while the parent is still being issued (the straight path): its
    // retry and the rewrite must still happen, in order, before the host hears back.
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.backend_mut().inline = true;
    e.backend_mut().fail_leg = Some(0);
    e.submit(1, read(0, 1));
    assert_eq!(submits(&log), vec![(1, 0), (1, 1), (1, 0)]);
    // The rewrite of leg 0 failed inline too: that copy is failed, the read still succeeds.
    assert!(e.leg_failed(0));
    assert_eq!(completions(&log), vec![(1, HostStatus::Success)]);
    assert_eq!(e.stats().read_retries, 1);
    assert!(e.is_idle());
    assert_eq!(e.backend().pools, vec![4, 4, 4]);
}

#[test]
fn a_copy_that_fails_its_rewrite_is_failed() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.backend_mut().fail_leg = Some(0);
    e.submit(1, read(0, 1));
    complete_one(&mut e);
    e.backend_mut().fail_leg = None;
    complete_one(&mut e);
    e.backend_mut().fail_leg = Some(0);
    complete_one(&mut e); // the rewrite fails too
    assert!(e.leg_failed(0));
    assert_eq!(completions(&log), vec![(1, HostStatus::Success)]);
}

#[test]
fn a_read_fails_only_when_every_copy_failed() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.backend_mut().fail_leg = Some(0);
    e.submit(1, read(0, 1));
    complete_one(&mut e);
    e.backend_mut().fail_leg = Some(1);
    complete_one(&mut e);
    assert_eq!(completions(&log), vec![(1, HostStatus::Failed)]);
    assert_eq!(e.backend().pools, vec![4, 4, 4]);
}

#[test]
fn a_write_error_fails_the_leg_and_the_write_still_succeeds_on_the_other_copy() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.backend_mut().fail_leg = Some(1);
    e.submit(1, write(0, 1));
    complete_one(&mut e);
    complete_one(&mut e);
    assert!(e.leg_failed(1));
    assert_eq!(completions(&log), vec![(1, HostStatus::Success)]);
    e.submit(2, read(0, 1));
    assert_eq!(submits(&log).last(), Some(&(2, 0)));
}

#[test]
fn a_write_that_reaches_no_copy_fails() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.fail_leg(0);
    e.backend_mut().fail_leg = Some(1);
    e.submit(1, write(0, 1));
    complete_one(&mut e);
    assert_eq!(completions(&log), vec![(1, HostStatus::Failed)]);
}

#[test]
fn out_of_range_io_is_failed_at_once() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.submit(1, read(999, 2));
    e.submit(2, write(u64::MAX, 2));
    assert!(submits(&log).is_empty());
    assert_eq!(
        completions(&log),
        vec![(1, HostStatus::Failed), (2, HostStatus::Failed)]
    );
}

#[test]
fn admission_is_bounded_and_first_come_first_served() {
    let (mut e, log) = engine(raid1(2), 64, 2);
    for h in 0..5 {
        e.submit(h, write(h as u64, 1));
    }
    assert_eq!(e.active_parents(), 2);
    assert_eq!(e.queued_parents(), 3);
    while !e.backend().in_flight.is_empty() {
        complete_one(&mut e);
    }
    let order: Vec<u32> = completions(&log).iter().map(|c| c.0).collect();
    assert_eq!(order, vec![0, 1, 2, 3, 4]);
}

/// RAID10 n2 over 3 legs of 80 blocks, 8-block (4 KiB) chunks.
fn n2_on_3_legs() -> Geometry {
    Geometry::new(&GeometrySpec {
        level: Level::Raid10,
        layout: Some(Raid10Layout::parse("n2").unwrap()),
        legs: 3,
        chunk_bytes: Some(4096),
        block_size: 512,
        leg_blocks: 80,
    })
    .unwrap()
}

#[test]
fn raid10_writes_split_at_chunk_boundaries_to_every_copy() {
    let geo = n2_on_3_legs();
    let (mut e, log) = engine(geo, 8, 4);
    e.submit(1, write(6, 4)); // chunk 0 blocks 6..8 and chunk 1 blocks 8..10
    let got: Vec<Ev> = log
        .borrow()
        .iter()
        .filter(|e| matches!(e, Ev::Submit { .. }))
        .cloned()
        .collect();
    assert_eq!(
        got,
        vec![
            Ev::Submit {
                host: 1,
                leg: 0,
                lba: 6,
                blocks: 2
            },
            Ev::Submit {
                host: 1,
                leg: 1,
                lba: 6,
                blocks: 2
            },
            Ev::Submit {
                host: 1,
                leg: 2,
                lba: 0,
                blocks: 2
            },
            Ev::Submit {
                host: 1,
                leg: 0,
                lba: 8,
                blocks: 2
            },
        ]
    );
}

#[test]
fn abandon_hands_back_every_host_and_the_engine_takes_io_again() {
    // Parent 1 in flight, parent 2 parked on leg 1's empty pool holding leg 0's context,
    // parent 3 waiting for admission: all three are handed back, parked contexts freed.
    let (mut e, log) = engine(raid1(2), 1, 2);
    e.submit(1, write(0, 1));
    e.submit(2, write(4, 1));
    e.submit(3, write(8, 1));
    assert_eq!(e.active_parents(), 2);
    assert_eq!(e.queued_parents(), 1);
    let mut hosts = e.abandon();
    hosts.sort();
    assert_eq!(hosts, vec![1, 2, 3]);
    assert!(e.is_idle());
    assert!(!e.has_parked());
    // Writes that had started their intent end it as not on every copy (regions stay dirty).
    let ends: Vec<_> = log
        .borrow()
        .iter()
        .filter(|ev| matches!(ev, Ev::EndWrite { all_copies: false, .. }))
        .cloned()
        .collect();
    assert_eq!(ends.len(), 2, "{ends:?}");
    // Children still in flight are the caller's to return (it no longer delivers them).
    let in_flight: Vec<_> = e.backend_mut().in_flight.drain(..).collect();
    for (child, info) in in_flight {
        e.backend_mut().free_child(info.leg, child);
    }
    assert_eq!(e.backend().pools, vec![1, 1, 1], "every context is back");
    // And the engine serves I/O again.
    e.submit(4, write(0, 1));
    complete_one(&mut e);
    complete_one(&mut e);
    assert_eq!(completions(&log), vec![(4, HostStatus::Success)]);
}

#[test]
fn a_slot_abandoned_while_its_intent_is_pending_is_reused_only_after_the_answer() {
    let (mut e, log) = engine(raid1(2), 4, 1);
    e.intent_mut().pending = true;
    e.submit(1, write(0, 1));
    assert_eq!(e.abandon(), vec![1]);
    // The only slot waits for its old intent answer: a new write queues, holding nothing.
    e.submit(2, write(8, 1));
    assert_eq!(e.queued_parents(), 1);
    // The stale answer for slot 0 frees the slot; it does not release the new write early.
    e.write_intent_ready(0);
    assert!(submits(&log).is_empty(), "a stale intent answer released a write");
    e.write_intent_ready(0);
    assert_eq!(submits(&log), vec![(2, 0), (2, 1)]);
}

// ----- the replacement leg (md's --replace) -----

/// (host, leg, leg lba) of every child submitted.
fn submits_at(log: &Log) -> Vec<(u32, u32, u64)> {
    log.borrow()
        .iter()
        .filter_map(|e| match e {
            Ev::Submit { host, leg, lba, .. } => Some((*host, *leg, *lba)),
            _ => None,
        })
        .collect()
}

fn drain_children(e: &mut Engine<Script, Intent>) {
    while !e.backend().in_flight.is_empty() {
        complete_one(e);
    }
}

fn op(op: IoOp, lba: u64, blocks: u64) -> IoRequest {
    IoRequest { op, lba, blocks }
}

#[test]
fn a_replacement_gets_every_write_to_its_leg_at_the_same_leg_lba_and_no_read() {
    let (mut e, log) = engine(raid1(2), 8, 8);
    assert_eq!((e.replacement_leg(), e.replacement()), (2, None));
    e.set_replacement(Some(1));
    assert_eq!(e.replacement(), Some(1));
    e.submit(1, write(5, 3));
    e.submit(2, op(IoOp::Unmap, 20, 2));
    e.submit(3, op(IoOp::WriteZeroes, 30, 1));
    for h in 4..10 {
        e.submit(h, read(5, 3));
    }
    let got = submits_at(&log);
    assert_eq!(
        got[..9],
        [
            (1, 0, 5),
            (1, 1, 5),
            (1, 2, 5),
            (2, 0, 20),
            (2, 1, 20),
            (2, 2, 20),
            (3, 0, 30),
            (3, 1, 30),
            (3, 2, 30)
        ]
    );
    assert!(
        got[9..].iter().all(|&(_, leg, _)| leg < 2),
        "a read went to the replacement: {got:?}"
    );
    assert_eq!(e.replacement_parents(), 3, "reads never take the replacement");
    drain_children(&mut e);
    assert!(completions(&log).iter().all(|c| c.1 == HostStatus::Success));
    // The replacement is no copy the bitmap waits for: every write was on every copy.
    assert!(!log.borrow().contains(&Ev::EndWrite {
        lba: 5,
        all_copies: false
    }));
    assert_eq!(e.leg_stats(2).writes, 3);
    assert_eq!(e.leg_stats(2).reads, 0);
    assert_eq!(e.backend().pools, vec![8, 8, 8]);
}

#[test]
fn raid10_replacement_children_follow_the_replaced_legs_copies() {
    // n2 on 3 legs, chunk 8: blocks 6..8 are on legs 0 and 1 at 6, blocks 8..10 on leg 2 at 0
    // and leg 0 at 8.
    let geo = n2_on_3_legs();
    for (slot, want) in [
        // Leg 1 holds no copy of the second segment: no replacement child for it.
        (1, vec![(1, 0, 6), (1, 1, 6), (1, 3, 6), (1, 2, 0), (1, 0, 8)]),
        (
            0,
            vec![(1, 0, 6), (1, 1, 6), (1, 3, 6), (1, 2, 0), (1, 0, 8), (1, 3, 8)],
        ),
        (2, vec![(1, 0, 6), (1, 1, 6), (1, 2, 0), (1, 0, 8), (1, 3, 0)]),
    ] {
        let (mut e, log) = engine(geo.clone(), 8, 4);
        e.set_replacement(Some(slot));
        e.submit(1, write(6, 4));
        assert_eq!(submits_at(&log), want, "replacing leg {slot}");
        drain_children(&mut e);
        assert_eq!(completions(&log), vec![(1, HostStatus::Success)]);
    }
}

#[test]
fn a_failing_replacement_is_dropped_and_the_write_still_succeeds() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.set_replacement(Some(0));
    e.backend_mut().fail_leg = Some(2);
    e.submit(1, write(0, 1));
    drain_children(&mut e);
    assert_eq!(completions(&log), vec![(1, HostStatus::Success)]);
    assert!(log.borrow().contains(&Ev::EndWrite {
        lba: 0,
        all_copies: true
    }));
    assert!(e.leg_failed(2));
    assert_eq!(e.backend().failed, 1 << 2, "the backend hears of it");
    assert_eq!(e.leg_stats(2).write_errors, 1);
    assert_eq!(e.working_legs(), 0b11, "the replacement is no working leg");
    // Later writes skip it, without counting a missed copy.
    e.submit(2, write(1, 1));
    assert_eq!(submits(&log)[3..], [(2, 0), (2, 1)]);
    drain_children(&mut e);
    assert_eq!(completions(&log)[1], (2, HostStatus::Success));
    assert!(log.borrow().contains(&Ev::EndWrite {
        lba: 1,
        all_copies: true
    }));
    // The same replacement set again stays failed; a new one starts working.
    e.set_replacement(Some(0));
    assert!(e.leg_failed(2));
    e.set_replacement(None);
    e.set_replacement(Some(0));
    assert!(!e.leg_failed(2));
}

#[test]
fn a_write_on_no_real_copy_fails_even_when_the_replacement_took_it() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.set_replacement(Some(1));
    e.fail_leg(0);
    e.backend_mut().fail_leg = Some(1);
    e.submit(1, write(0, 1));
    assert_eq!(submits(&log), vec![(1, 1), (1, 2)]);
    drain_children(&mut e);
    assert_eq!(completions(&log), vec![(1, HostStatus::Failed)]);
    assert!(!e.leg_failed(2));
    assert_eq!(e.leg_stats(2).writes, 1);
}

#[test]
fn the_replacement_of_a_failed_leg_still_gets_its_writes() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.fail_leg(1);
    e.set_replacement(Some(1));
    e.submit(1, write(7, 2));
    assert_eq!(submits_at(&log), vec![(1, 0, 7), (1, 2, 7)]);
    drain_children(&mut e);
    assert_eq!(completions(&log), vec![(1, HostStatus::Success)]);
    // Leg 1 missed it: the region stays dirty.
    assert!(log.borrow().contains(&Ev::EndWrite {
        lba: 7,
        all_copies: false
    }));
}

#[test]
fn a_flush_flushes_the_replacement_which_never_decides_its_status() {
    let (mut e, log) = engine(raid1(3), 4, 4);
    e.set_replacement(Some(2));
    e.submit(1, op(IoOp::Flush, 0, 0));
    assert_eq!(submits(&log), vec![(1, 0), (1, 1), (1, 2), (1, 3)]);
    drain_children(&mut e);
    // Every real leg failed: the flush fails though the replacement flushed.
    for leg in 0..3 {
        e.fail_leg(leg);
    }
    e.submit(2, op(IoOp::Flush, 0, 0));
    assert_eq!(submits(&log)[4..], [(2, 3)]);
    drain_children(&mut e);
    // A failed replacement is not flushed.
    e.fail_leg(3);
    e.submit(3, op(IoOp::Flush, 0, 0));
    assert_eq!(submits(&log).len(), 5);
    assert_eq!(
        completions(&log),
        vec![
            (1, HostStatus::Success),
            (2, HostStatus::Failed),
            (3, HostStatus::Failed)
        ]
    );
}

#[test]
fn parents_keep_the_replacement_they_started_with() {
    let (mut e, log) = engine(raid1(2), 1, 4);
    e.set_replacement(Some(0));
    e.submit(1, write(0, 1)); // takes every leg's only context
    e.submit(2, write(4, 1)); // parks at its first child, with the replacement
    e.set_replacement(None);
    e.submit(3, write(8, 1)); // parks too, without
    assert_eq!(e.replacement_parents(), 2);
    drain_children(&mut e);
    let of = |h: u32| {
        submits(&log)
            .iter()
            .filter(|s| s.0 == h)
            .map(|s| s.1)
            .collect::<Vec<_>>()
    };
    assert_eq!(of(1), [0, 1, 2]);
    assert_eq!(of(2), [0, 1, 2]);
    assert_eq!(of(3), [0, 1]);
    assert_eq!(completions(&log).len(), 3);
    assert!(completions(&log).iter().all(|c| c.1 == HostStatus::Success));
    assert_eq!(e.replacement_parents(), 0);
    assert_eq!(e.backend().pools, vec![1, 1, 1]);
}

#[test]
fn an_empty_replacement_pool_parks_at_the_replacement_child_and_resumes_there() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.backend_mut().pools[2] = 1;
    e.set_replacement(Some(1));
    e.submit(1, write(0, 1));
    e.submit(2, write(4, 1)); // its copies go out, then it parks on the replacement's pool
    assert_eq!(submits(&log), vec![(1, 0), (1, 1), (1, 2), (2, 0), (2, 1)]);
    assert_eq!(e.stats().pool_waits, 1);
    assert_eq!(e.leg_stats(2).pool_empty, 1);
    complete_one(&mut e);
    complete_one(&mut e);
    assert_eq!(
        submits(&log).len(),
        5,
        "resumed before the replacement's context came back"
    );
    complete_one(&mut e); // parent 1's replacement child: its context goes to parent 2
    assert_eq!(submits(&log)[5..], [(2, 2)]);
    assert_eq!(completions(&log), vec![(1, HostStatus::Success)]);
    drain_children(&mut e);
    assert_eq!(
        completions(&log),
        vec![(1, HostStatus::Success), (2, HostStatus::Success)]
    );
    assert_eq!(e.backend().pools, vec![4, 4, 1]);
}

#[test]
fn no_memory_at_the_replacement_child_resumes_there_and_submits_it_once() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.set_replacement(Some(0));
    e.backend_mut().refuse_nth = Some(2); // the third child: the replacement's
    e.submit(1, write(0, 1));
    assert_eq!(submits(&log), vec![(1, 0), (1, 1)]);
    assert!(log.borrow().contains(&Ev::WaitIo));
    complete_one(&mut e);
    complete_one(&mut e);
    assert!(completions(&log).is_empty(), "parent completed while parked");
    e.io_available();
    assert_eq!(submits(&log), vec![(1, 0), (1, 1), (1, 2)]);
    assert_eq!(e.leg_stats(2).nomem, 1);
    complete_one(&mut e);
    assert_eq!(completions(&log), vec![(1, HostStatus::Success)]);
    assert_eq!(e.backend().pools, vec![4, 4, 4]);
}

#[test]
fn a_replacement_failing_while_a_parent_waits_for_its_pool_is_skipped() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.backend_mut().pools[2] = 1;
    e.set_replacement(Some(1));
    e.submit(1, write(0, 1));
    e.submit(2, write(4, 1)); // parked on the replacement's pool
    e.fail_leg(2);
    assert_eq!(completions(&log), vec![], "parent 1 still has children out");
    drain_children(&mut e);
    assert_eq!(submits(&log), vec![(1, 0), (1, 1), (1, 2), (2, 0), (2, 1)]);
    assert_eq!(
        completions(&log),
        vec![(1, HostStatus::Success), (2, HostStatus::Success)]
    );
    assert!(!log
        .borrow()
        .iter()
        .any(|ev| matches!(ev, Ev::EndWrite { all_copies: false, .. })));
}

#[test]
fn a_replacement_failing_while_its_child_waits_for_io_is_skipped() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.set_replacement(Some(0));
    e.backend_mut().refuse_nth = Some(2); // the replacement's child parks, holding its context
    e.submit(1, write(0, 1));
    e.fail_leg(2);
    e.io_available();
    drain_children(&mut e);
    assert_eq!(submits(&log), vec![(1, 0), (1, 1)]);
    assert_eq!(completions(&log), vec![(1, HostStatus::Success)]);
    assert!(log.borrow().contains(&Ev::EndWrite {
        lba: 0,
        all_copies: true
    }));
    assert_eq!(e.backend().pools, vec![4, 4, 4]);
}

#[test]
fn abandon_returns_parked_replacement_contexts() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.set_replacement(Some(0));
    e.backend_mut().refuse_nth = Some(2); // parent 1 parks holding the replacement's context
    e.submit(1, write(0, 1));
    assert_eq!(e.abandon(), vec![1]);
    let in_flight: Vec<_> = e.backend_mut().in_flight.drain(..).collect();
    for (child, info) in in_flight {
        e.backend_mut().free_child(info.leg, child);
    }
    assert_eq!(e.backend().pools, vec![4, 4, 4], "every context is back");
    assert_eq!(e.replacement_parents(), 0);
    e.submit(2, write(0, 1));
    drain_children(&mut e);
    assert_eq!(submits(&log)[2..], [(2, 0), (2, 1), (2, 2)]);
    assert_eq!(completions(&log), vec![(2, HostStatus::Success)]);
}

// ----- the replacement under random load, on the simulator -----

const QD: u32 = 16;
const MAX_IO: u64 = 24;

fn raid10(layout: &str, legs: u32) -> Geometry {
    Geometry::new(&GeometrySpec {
        level: Level::Raid10,
        layout: Some(Raid10Layout::parse(layout).unwrap()),
        legs,
        chunk_bytes: Some(4096),
        block_size: 512,
        leg_blocks: 600,
    })
    .unwrap()
}

/// One simulated machine: leg pools of `leg_pool` contexts (the replacement's `rep_pool`).
fn sim(
    geo: &Geometry,
    strategy: Strategy,
    leg_pool: u32,
    rep_pool: u32,
    faults: Faults,
    seed: u64,
) -> Engine<SimBackend> {
    // Immediate: a shared I/O pool barely above the parents', so submissions hit no-memory.
    // Batch stalls when pools run dry (md's bug), so it gets plenty.
    let (io_pool, leg_pool, rep_pool) = match strategy {
        Strategy::Immediate => (QD + 3, leg_pool, rep_pool),
        Strategy::Batch => (4096, 1024, 1024),
    };
    let mut backend = SimBackend::new(
        geo.legs(),
        geo.used_leg_blocks(),
        LegModel {
            latency_ns: 10_000,
            jitter_ns: 30_000,
            queue_depth: 4,
        },
        leg_pool,
        io_pool,
        QD,
        MAX_IO,
        faults,
        seed,
    );
    backend.shrink_pool(geo.legs(), rep_pool);
    let cfg = EngineConfig {
        max_parents: QD,
        strategy,
        read_policy: ReadPolicy::RoundRobin,
    };
    Engine::new(geo.clone(), cfg, backend)
}

/// What the host saw of a run.
#[derive(Debug, Default)]
struct Seen {
    failed_writes: u64,
    failed_reads: u64,
    bad_reads: u64,
}

/// Drives `ios` random host I/Os (never two overlapping writes, nor a read over a write in
/// flight, so every block's value is defined) and keeps `expected` up to date. Panics on a stall.
/// `toggle`: flips the replacement between `Some(k)` and `None` every that many submissions.
fn drive(e: &mut Engine<SimBackend>, seed: u64, ios: u64, expected: &mut [u64], toggle: Option<(u64, u32)>) -> Seen {
    let data = e.geometry().data_blocks();
    let mut rng = Rng::new(seed);
    let mut host = Host::new(QD, data);
    let mut seen = Seen::default();
    let mut issued = 0;
    while host.completed < ios {
        while issued < ios {
            let Some(&slot) = host.free.last() else { break };
            let blocks = 1 + rng.below(MAX_IO);
            let lba = rng.below(data - blocks + 1);
            let op = match rng.below(100) {
                0..=29 => IoOp::Read,
                30..=34 => IoOp::Unmap,
                35..=39 => IoOp::WriteZeroes,
                40..=41 => IoOp::Flush,
                _ => IoOp::Write,
            };
            let req = match op {
                IoOp::Flush => IoRequest { op, lba: 0, blocks: 0 },
                _ => IoRequest { op, lba, blocks },
            };
            if host.conflicts(&req) {
                if host.free.len() < QD as usize {
                    break; // wait for a completion rather than spin
                }
                continue;
            }
            host.free.pop();
            host.mark(&req, true);
            host.reqs[slot as usize] = req;
            issued += 1;
            if let Some((_, k)) = toggle.filter(|t| issued % t.0 == 0) {
                e.set_replacement(if e.replacement().is_some() { None } else { Some(k) });
            }
            let h = &mut e.backend_mut().hosts[slot as usize];
            h.lba = req.lba;
            h.write_id = issued;
            for (i, v) in h.buf[..req.blocks as usize].iter_mut().enumerate() {
                *v = block_value(issued, req.lba + i as u64);
            }
            e.submit(slot, req);
            settle(e, &mut host, expected, &mut seen);
        }
        if host.completed == ios {
            break;
        }
        match e.backend_mut().next_notice() {
            Some(Notice::ChildDone(c, info, st)) => e.child_done(c, info, st),
            Some(Notice::Poll) => e.poll(),
            Some(Notice::BitmapFlushed) => unreachable!("no bitmap in this run"),
            None => panic!("stalled: {}", e.describe_parked()),
        }
        settle(e, &mut host, expected, &mut seen);
    }
    assert!(e.is_idle());
    seen
}

/// Takes the host I/Os the engine completed.
fn settle(e: &mut Engine<SimBackend>, host: &mut Host, expected: &mut [u64], seen: &mut Seen) {
    loop {
        if e.backend_mut().take_io_signal() {
            e.io_available();
            continue;
        }
        let Some((slot, status)) = e.backend_mut().completed.pop() else {
            return;
        };
        let req = host.reqs[slot as usize];
        host.mark(&req, false);
        host.completed += 1;
        host.free.push(slot);
        let range = req.lba as usize..(req.lba + req.blocks) as usize;
        let io = &e.backend().hosts[slot as usize];
        match (req.op, status) {
            (IoOp::Flush, _) => {}
            (IoOp::Read, HostStatus::Success) => {
                seen.bad_reads += io.buf[..req.blocks as usize]
                    .iter()
                    .zip(&expected[range])
                    .filter(|(got, want)| got != want)
                    .count() as u64;
            }
            (IoOp::Read, HostStatus::Failed) => seen.failed_reads += 1,
            (_, HostStatus::Failed) => seen.failed_writes += 1,
            (IoOp::Write, HostStatus::Success) => {
                for (i, v) in expected[range].iter_mut().enumerate() {
                    *v = block_value(io.write_id, req.lba + i as u64);
                }
            }
            (_, HostStatus::Success) => expected[range].fill(0),
        }
    }
}

/// Every block is on each of its working copies as the host last wrote it, and, where leg `k`
/// holds a copy, the replacement holds it too, at the same leg LBA.
fn check_copies(e: &Engine<SimBackend>, expected: &[u64], k: u32) {
    let geo = e.geometry();
    let (b, rep) = (e.backend(), e.replacement_leg());
    for (lba, &want) in expected.iter().enumerate() {
        for c in geo.map_unchecked(lba as u64).as_slice() {
            if !e.leg_failed(c.leg) {
                assert_eq!(b.leg_data(c.leg)[c.lba as usize], want, "block {lba} on leg {}", c.leg);
            }
            if c.leg == k {
                assert_eq!(
                    b.leg_data(rep)[c.lba as usize],
                    want,
                    "block {lba}: replacement of leg {k}"
                );
            }
        }
    }
    // Nothing else was written to the replacement either: it is leg k, block for block.
    assert!(b.leg_data(rep) == b.leg_data(k), "the replacement differs from leg {k}");
}

fn cases() -> Vec<(&'static str, Geometry)> {
    vec![
        ("raid1 x2", raid1(2)),
        ("raid1 x3", raid1(3)),
        ("raid10 n2 x4", raid10("n2", 4)),
        ("raid10 f2 x4", raid10("f2", 4)),
        ("raid10 o2 x4", raid10("o2", 4)),
    ]
}

#[test]
fn a_replacement_becomes_its_leg_block_for_block_under_random_io() {
    for (name, geo) in cases() {
        for k in 0..geo.legs() {
            // Tiny pools (one context on the replacement), and roomy ones.
            for (seed, leg_pool, rep_pool) in [(1, 2, 1), (2, 2, 2), (3, 64, 64)] {
                let faults = Faults {
                    inline_pct: 20,
                    nomem_pct: 10,
                    // Read errors on another leg: retries and repairs, which never touch it.
                    read_error_leg: Some(((k + 1) % geo.legs(), 5)),
                    ..Faults::default()
                };
                let mut e = sim(
                    &geo,
                    Strategy::Immediate,
                    leg_pool,
                    rep_pool,
                    faults,
                    seed * 100 + k as u64,
                );
                e.set_replacement(Some(k));
                let mut expected = vec![0; geo.data_blocks() as usize];
                let seen = drive(&mut e, seed, 1500, &mut expected, None);
                let what = format!("{name}, leg {k}, seed {seed}");
                assert_eq!(
                    (seen.failed_writes, seen.failed_reads, seen.bad_reads),
                    (0, 0, 0),
                    "{what}"
                );
                check_copies(&e, &expected, k);
                let rep = e.replacement_leg();
                assert_eq!(e.leg_stats(rep).reads, 0, "{what}: the replacement was read");
                assert!(e.leg_stats(rep).writes > 0, "{what}");
                assert!(!e.leg_failed(rep), "{what}");
                assert!(e.stats().read_repairs > 0, "{what}: the repair path ran");
                let b = e.backend();
                assert!(e.stats().io_waits > 0, "{what}: the no-memory path ran");
                if rep_pool == 1 {
                    assert!(
                        e.leg_stats(rep).pool_empty > 0,
                        "{what}: the replacement's pool ran dry"
                    );
                }
                assert_eq!(
                    b.pool_free(rep),
                    rep_pool as usize,
                    "{what}: a replacement context leaked"
                );
                assert_eq!(b.io_free(), b.io_capacity(), "{what}");
            }
        }
    }
}

#[test]
fn the_batch_strategy_mirrors_onto_the_replacement_too() {
    for (name, geo) in cases() {
        let k = geo.legs() - 1;
        let mut e = sim(&geo, Strategy::Batch, 0, 0, Faults::default(), 9);
        e.set_replacement(Some(k));
        let mut expected = vec![0; geo.data_blocks() as usize];
        let seen = drive(&mut e, 9, 1000, &mut expected, None);
        assert_eq!((seen.failed_writes, seen.bad_reads), (0, 0), "{name}");
        check_copies(&e, &expected, k);
    }
}

#[test]
fn a_failing_replacement_fails_no_host_io_and_is_dropped() {
    for (name, geo) in cases() {
        let rep = geo.legs();
        let faults = Faults {
            inline_pct: 20,
            nomem_pct: 10,
            error_leg: Some((rep, 2)),
            ..Faults::default()
        };
        let mut e = sim(&geo, Strategy::Immediate, 2, 1, faults, 5);
        e.set_replacement(Some(0));
        let mut expected = vec![0; geo.data_blocks() as usize];
        let seen = drive(&mut e, 5, 2000, &mut expected, None);
        assert_eq!(
            (seen.failed_writes, seen.failed_reads, seen.bad_reads),
            (0, 0, 0),
            "{name}"
        );
        assert!(e.leg_failed(rep), "{name}: the replacement was not failed");
        assert_eq!(
            e.backend_mut().take_failed_legs(),
            1 << rep,
            "{name}: only the replacement failed"
        );
        assert!(e.leg_stats(rep).write_errors >= 1, "{name}");
        assert_eq!(e.working_legs(), (1 << rep) - 1, "{name}");
        // Once failed it gets nothing more: write more and count its children.
        let writes = e.leg_stats(rep).writes;
        let seen = drive(&mut e, 6, 500, &mut expected, None);
        assert_eq!((seen.failed_writes, seen.bad_reads), (0, 0), "{name}");
        assert_eq!(
            e.leg_stats(rep).writes,
            writes,
            "{name}: a failed replacement got writes"
        );
        assert_eq!(e.backend().pool_free(rep), 1, "{name}");
    }
}

#[test]
fn without_a_replacement_its_leg_gets_nothing_and_toggling_never_stalls() {
    for (name, geo) in cases() {
        let rep = geo.legs();
        let faults = Faults {
            inline_pct: 20,
            nomem_pct: 10,
            ..Faults::default()
        };
        let mut e = sim(&geo, Strategy::Immediate, 2, 1, faults, 11);
        let mut expected = vec![0; geo.data_blocks() as usize];
        drive(&mut e, 11, 500, &mut expected, None);
        assert_eq!(e.leg_stats(rep).writes, 0, "{name}: no replacement set");
        // Parents start with and without one, while others are in flight.
        let seen = drive(&mut e, 12, 2000, &mut expected, Some((7, 1)));
        assert_eq!((seen.failed_writes, seen.bad_reads), (0, 0), "{name}");
        assert!(e.leg_stats(rep).writes > 0, "{name}");
        e.set_replacement(None);
        let writes = e.leg_stats(rep).writes;
        drive(&mut e, 13, 500, &mut expected, None);
        assert_eq!(
            e.leg_stats(rep).writes,
            writes,
            "{name}: set_replacement(None) did not stop it"
        );
        assert_eq!(e.leg_stats(rep).reads, 0, "{name}");
        check_copies_real(&e, &expected);
        assert_eq!(e.backend().pool_free(rep), 1, "{name}");
    }
}

/// Every block is on each of its working copies as the host last wrote it.
fn check_copies_real(e: &Engine<SimBackend>, expected: &[u64]) {
    let geo = e.geometry();
    for (lba, &want) in expected.iter().enumerate() {
        for c in geo.map_unchecked(lba as u64).as_slice() {
            assert_eq!(
                e.backend().leg_data(c.leg)[c.lba as usize],
                want,
                "block {lba} on leg {}",
                c.leg
            );
        }
    }
}

// ----- direct reads: one-chunk reads with nothing in their way, no slot, no run -----

/// Completes the oldest in-flight child, a direct read's, with its scripted status, as the
/// caller does (it knows the host: `host` and `req`).
fn complete_direct(e: &mut Engine<Script, Intent>, host: u32, req: IoRequest) -> Option<u32> {
    let (child, info) = e.backend_mut().in_flight.pop_front().expect("a child in flight");
    assert_eq!(info.parent, DIRECT);
    let status = scripted_status(e, &info);
    e.direct_read_done(host, req, child, info, status)
}

#[test]
fn a_direct_read_takes_no_slot_and_its_host_comes_back_to_the_caller() {
    // One slot, held by a write in flight: a direct read still goes (it needs no slot).
    let (mut e, log) = engine(raid1(2), 4, 1);
    e.submit(1, write(0, 1));
    assert_eq!(e.active_parents(), 1);
    assert_eq!(e.try_direct_read(2, &read(8, 2)), Ok(false));
    assert_eq!(e.direct_reads(), 1);
    assert_eq!(e.active_parents(), 1);
    // The least busy copy: leg 0 has the write's block, so does leg 1; the first wins.
    assert_eq!(submits(&log), vec![(1, 0), (1, 1), (2, 0)]);
    assert_eq!(e.leg_outstanding_blocks(0), 3);
    complete_one(&mut e);
    complete_one(&mut e);
    assert!(!e.is_idle(), "a direct read is still out");
    assert_eq!(complete_direct(&mut e, 2, read(8, 2)), Some(2));
    // The engine completes only the write: the read's host was the caller's to complete.
    assert_eq!(completions(&log), vec![(1, HostStatus::Success)]);
    assert!(e.is_idle());
    assert_eq!(e.leg_stats(0).reads, 1);
    assert_eq!(e.leg_outstanding_blocks(0), 0);
    assert_eq!(e.stats().parents_submitted, 2);
    assert_eq!(e.stats().parents_completed, 2);
    assert_eq!(e.backend().pools, vec![4, 4, 4]);
}

#[test]
fn a_read_goes_direct_only_when_nothing_waits_and_otherwise_takes_nothing() {
    let (mut e, log) = engine(raid1(2), 1, 4);
    // One context per leg: the first write takes both, the second parks on leg 0's pool.
    e.submit(1, write(0, 1));
    e.submit(2, write(1, 1));
    assert_eq!(e.backend().pools, vec![0, 0, 1]);
    // Both pools are empty (and a parent waits on leg 0's): not direct, nothing taken.
    assert_eq!(e.try_direct_read(3, &read(5, 1)), Err(3));
    assert_eq!(e.direct_reads(), 0);
    assert_eq!(e.backend().pools, vec![0, 0, 1]);
    drain_children(&mut e);
    assert!(e.is_idle());
    // A child refused for shared I/O parks its parent: no read goes direct past it.
    e.backend_mut().nomem = 1;
    e.submit(4, write(0, 1));
    assert_eq!(e.try_direct_read(5, &read(5, 1)), Err(5));
    assert_eq!(
        e.backend().pools,
        vec![0, 1, 1],
        "the parked child holds leg 0's context"
    );
    e.io_available();
    drain_children(&mut e);
    assert!(e.is_idle());
    // Anything but a one-chunk read inside the mirror is not direct either.
    let (mut e10, _) = engine(n2_on_3_legs(), 4, 4);
    let chunk = e10.geometry().chunk_blocks();
    assert_eq!(e10.try_direct_read(6, &read(chunk - 1, 2)), Err(6));
    assert_eq!(e.try_direct_read(7, &write(0, 1)), Err(7));
    let end = e.geometry().data_blocks();
    assert_eq!(e.try_direct_read(8, &read(end - 1, 2)), Err(8));
    assert_eq!(e.try_direct_read(9, &read(0, 0)), Err(9));
    // With nothing in the way it goes.
    assert_eq!(e.try_direct_read(10, &read(0, 1)), Ok(false));
    assert!(submits(&log).ends_with(&[(10, 0)]));
}

#[test]
fn no_more_reads_go_direct_at_once_than_max_parents_and_the_rest_take_the_general_way() {
    // Two parents admitted: two reads go direct, the third is declined (taking nothing) and
    // goes through `submit`, where it takes a slot; everything completes.
    let (mut e, log) = engine(raid1(2), 8, 2);
    assert_eq!(e.try_direct_read(1, &read(0, 1)), Ok(false));
    assert_eq!(e.try_direct_read(2, &read(1, 1)), Ok(false));
    assert_eq!(e.try_direct_read(3, &read(2, 1)), Err(3));
    assert_eq!(e.direct_reads(), 2);
    e.submit(3, read(2, 1));
    assert_eq!(e.active_parents(), 1);
    assert_eq!(complete_direct(&mut e, 1, read(0, 1)), Some(1));
    assert_eq!(complete_direct(&mut e, 2, read(1, 1)), Some(2));
    drain_children(&mut e);
    assert!(e.is_idle());
    assert_eq!(completions(&log), vec![(3, HostStatus::Success)]);
    // With the direct ones back, reads go direct again.
    assert_eq!(e.try_direct_read(4, &read(3, 1)), Ok(false));
}

#[test]
fn a_lowered_admission_bounds_new_parents_and_a_raised_one_lets_the_waiting_in() {
    // Slots for 8, admission set to 2 (as a second channel on the mirror does): the third and
    // fourth writes wait without taking anything, and no read goes direct past the bound.
    let (mut e, log) = engine(raid1(2), 16, 8);
    e.set_admission(2);
    assert_eq!(e.admission(), 2);
    for h in 1..=4 {
        e.submit(h, write(h as u64 * 8, 1));
    }
    assert_eq!(e.active_parents(), 2);
    assert_eq!(e.queued_parents(), 2);
    assert_eq!(e.try_direct_read(9, &read(100, 1)), Err(9));
    // Raised again (the second channel went): the two waiting are let in at the next drain.
    e.set_admission(8);
    e.run_wakeups();
    assert_eq!(e.active_parents(), 4);
    assert_eq!(e.queued_parents(), 0);
    drain_children(&mut e);
    assert!(e.is_idle());
    assert_eq!(completions(&log).len(), 4);
    // Lowered below what is admitted: nothing admitted is touched, new parents wait.
    for h in 11..=14 {
        e.submit(h, write(h as u64 * 8, 1));
    }
    e.set_admission(1);
    e.submit(15, write(200, 1));
    assert_eq!(e.active_parents(), 4);
    assert_eq!(e.queued_parents(), 1);
    drain_children(&mut e);
    assert!(e.is_idle());
    assert_eq!(completions(&log).len(), 9);
    // Never below one, never above the slots there are.
    e.set_admission(0);
    assert_eq!(e.admission(), 1);
    e.set_admission(100);
    assert_eq!(e.admission(), 8);
}

#[test]
fn a_direct_read_refused_for_shared_io_parks_without_its_context_and_resumes() {
    let (mut e, log) = engine(raid1(2), 1, 4);
    e.backend_mut().nomem = 1;
    assert_eq!(e.try_direct_read(1, &read(0, 1)), Ok(true));
    // Parked for shared I/O in a slot, its context given back, not submitted again.
    assert_eq!(e.direct_reads(), 0);
    assert_eq!(e.active_parents(), 1);
    assert_eq!(e.backend().pools, vec![1, 1, 1]);
    assert_eq!(log.borrow().as_slice(), &[Ev::WaitIo]);
    // Nothing goes direct past it.
    assert_eq!(e.try_direct_read(2, &read(5, 1)), Err(2));
    e.io_available();
    complete_one(&mut e);
    assert_eq!(submits(&log), vec![(1, 0)]);
    assert_eq!(completions(&log), vec![(1, HostStatus::Success)]);
    assert_eq!(e.stats().parents_submitted, 1);
    assert!(e.is_idle());
}

#[test]
fn a_failed_direct_read_is_retried_on_another_copy_and_the_bad_copy_rewritten() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.backend_mut().fail_leg = Some(0);
    assert_eq!(e.try_direct_read(1, &read(3, 1)), Ok(false));
    // Leg 0 fails it: the engine takes the read over.
    assert_eq!(complete_direct(&mut e, 1, read(3, 1)), None);
    assert_eq!(e.direct_reads(), 0);
    assert_eq!(e.active_parents(), 1);
    e.backend_mut().fail_leg = None;
    complete_one(&mut e); // read from leg 1: good data, so leg 0 is rewritten with it
    assert_eq!(submits(&log), vec![(1, 0), (1, 1), (1, 0)]);
    assert!(
        completions(&log).is_empty(),
        "the host buffer is still being written from"
    );
    let repair = complete_one(&mut e);
    assert_eq!((repair.op, repair.leg, repair.leg_lba), (IoOp::Write, 0, 3));
    assert_eq!(completions(&log), vec![(1, HostStatus::Success)]);
    assert_eq!(e.leg_stats(0).read_errors, 1);
    assert_eq!(e.leg_stats(0).read_repairs, 1);
    assert_eq!(e.stats().read_retries, 1);
    assert!(e.is_idle());
    assert_eq!(e.backend().pools, vec![4, 4, 4]);
}

#[test]
fn a_failed_direct_read_with_no_other_copy_fails_and_one_queued_keeps_what_it_tried() {
    // Every copy but the one that failed is gone: the read fails.
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.backend_mut().fail_leg = Some(0);
    assert_eq!(e.try_direct_read(1, &read(0, 1)), Ok(false));
    e.fail_leg(1);
    assert_eq!(complete_direct(&mut e, 1, read(0, 1)), None);
    assert_eq!(completions(&log), vec![(1, HostStatus::Failed)]);
    assert!(e.is_idle());
    // With every slot taken, the failed read waits in line and still avoids the copy that
    // failed it once admitted.
    let (mut e, log) = engine(raid1(2), 4, 1);
    e.backend_mut().fail_leg = Some(0);
    assert_eq!(e.try_direct_read(2, &read(0, 1)), Ok(false));
    e.submit(3, write(9, 1));
    assert_eq!(complete_direct(&mut e, 2, read(0, 1)), None);
    assert_eq!(e.queued_parents(), 1);
    e.backend_mut().fail_leg = None;
    drain_children(&mut e);
    assert_eq!(
        submits(&log),
        vec![(2, 0), (3, 0), (3, 1), (2, 1), (2, 0)],
        "retried on leg 1, then leg 0 rewritten"
    );
    assert_eq!(
        completions(&log),
        vec![(3, HostStatus::Success), (2, HostStatus::Success)]
    );
    assert_eq!(e.leg_stats(0).read_repairs, 1);
    assert!(e.is_idle());
}

#[test]
fn a_plain_completion_is_taken_quick_and_its_last_child_hands_the_host_back() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    e.submit(1, write(0, 1));
    let (c0, i0) = e.backend_mut().in_flight.pop_front().unwrap();
    let (c1, i1) = e.backend_mut().in_flight.pop_front().unwrap();
    assert!(
        !e.child_quick(&i0, ChildStatus::Error),
        "a failed child needs the machine"
    );
    assert!(e.child_quick(&i0, ChildStatus::Success));
    assert_eq!(e.child_ok(c0, i0), None);
    assert!(!log.borrow().contains(&Ev::EndWrite {
        lba: 0,
        all_copies: true
    }));
    assert!(e.child_quick(&i1, ChildStatus::Success));
    assert_eq!(e.child_ok(c1, i1), Some((1, HostStatus::Success)));
    // The intent ended after the last copy; the host is the caller's to complete.
    assert_eq!(
        log.borrow().last(),
        Some(&Ev::EndWrite {
            lba: 0,
            all_copies: true
        })
    );
    assert!(completions(&log).is_empty());
    assert!(e.is_idle());
    assert_eq!(e.backend().pools, vec![4, 4, 4]);
    assert_eq!((e.leg_stats(0).writes, e.leg_stats(1).writes), (1, 1));

    // A context someone waits for is not quick: giving it back must wake them.
    let (mut e, _) = engine(raid1(2), 1, 4);
    e.submit(1, write(0, 1));
    e.submit(2, write(1, 1)); // parks on leg 0's pool
    let (c0, i0) = e.backend_mut().in_flight.pop_front().unwrap();
    let (_, i1) = e.backend().in_flight.front().copied().unwrap();
    assert_eq!((i0.leg, i1.leg), (0, 1));
    assert!(!e.child_quick(&i0, ChildStatus::Success));
    assert!(e.child_quick(&i1, ChildStatus::Success));
    e.child_done(c0, i0, ChildStatus::Success);
    drain_children(&mut e);
    assert!(e.is_idle());
}

// ----- direct writes: their state with the caller, a slot only when something intervenes -----

/// Each test host's direct-write state (SPDK keeps it in the `spdk_bdev_io`).
fn states() -> Vec<WriteState> {
    vec![WriteState::default(); 16]
}

/// Completes the oldest in-flight child, a direct write's or any other, as the SPDK glue does:
/// a direct write's host done is completed here (logged like the engine's completions).
fn complete_w(e: &mut Engine<Script, Intent>, ws: &mut [WriteState], log: &Log) -> ChildInfo {
    let (child, info) = e.backend_mut().in_flight.pop_front().expect("a child in flight");
    let status = scripted_status(e, &info);
    if info.parent != DIRECT_WRITE {
        // The glue's quick way when the engine allows it, else the general one.
        if !e.child_quick(&info, status) {
            e.child_done(child, info, status);
        } else if let Some((host, status)) = e.child_ok(child, info) {
            log.borrow_mut().push(Ev::Complete { host, status });
        }
        return info;
    }
    let host = e.backend_mut().direct_hosts.pop_front().expect("its host");
    let st = &mut ws[host as usize];
    let done = if e.direct_write_quick(&info, status, st) {
        e.direct_write_ok(child, info, st)
    } else {
        e.direct_write_back(child, info, status, st)
    };
    if let Some(status) = done {
        log.borrow_mut().push(Ev::Complete { host, status });
    }
    info
}

fn drain_w(e: &mut Engine<Script, Intent>, ws: &mut [WriteState], log: &Log) {
    while !e.backend().in_flight.is_empty() {
        complete_w(e, ws, log);
    }
}

fn end_writes(log: &Log) -> Vec<(u64, bool)> {
    log.borrow()
        .iter()
        .filter_map(|e| match e {
            Ev::EndWrite { lba, all_copies } => Some((*lba, *all_copies)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_direct_write_keeps_its_state_with_the_caller_and_ends_its_intent_after_the_last_copy() {
    let (mut e, log) = engine(raid1(2), 4, 2);
    let mut ws = states();
    assert!(matches!(
        e.try_direct_write(1, &write(5, 2), &mut ws[1]),
        Ok(DirectWrite::InFlight)
    ));
    // The intent first, then every copy at once; admitted by a counter, no slot taken.
    assert_eq!(log.borrow()[0], Ev::StartWrite { lba: 5 });
    assert_eq!(submits(&log), vec![(1, 0), (1, 1)]);
    assert_eq!((e.active_parents(), e.direct_writes()), (1, 1));
    assert_eq!(e.stats().parents_admitted, 0, "no slot was filled");
    complete_w(&mut e, &mut ws, &log);
    assert!(end_writes(&log).is_empty(), "ended before the last copy");
    assert!(completions(&log).is_empty());
    complete_w(&mut e, &mut ws, &log);
    assert_eq!(end_writes(&log), vec![(5, true)]);
    assert_eq!(completions(&log), vec![(1, HostStatus::Success)]);
    assert!(e.is_idle());
    assert_eq!(e.direct_writes(), 0);
    assert_eq!(e.backend().pools, vec![4, 4, 4]);
    assert_eq!((e.leg_stats(0).writes, e.leg_stats(1).writes), (1, 1));
    assert_eq!(e.leg_outstanding_blocks(0), 0);
    let s = e.stats();
    assert_eq!((s.direct_writes, s.direct_handovers, s.parents_completed), (1, 0, 1));
    assert_eq!((s.children_submitted, s.children_completed), (2, 2));
}

#[test]
fn direct_writes_count_in_the_admission_bound() {
    let (mut e, log) = engine(raid1(2), 8, 2);
    let mut ws = states();
    assert!(e.try_direct_write(1, &write(0, 1), &mut ws[1]).is_ok());
    assert!(e.try_direct_write(2, &write(1, 1), &mut ws[2]).is_ok());
    // Both slots are held: the third takes nothing and waits for admission.
    assert_eq!(e.try_direct_write(3, &write(2, 1), &mut ws[3]).unwrap_err(), 3);
    e.submit(3, write(2, 1));
    assert_eq!(e.queued_parents(), 1);
    assert_eq!(submits(&log).len(), 4);
    // Nothing goes direct past a parent waiting for admission.
    assert_eq!(e.try_direct_write(4, &write(3, 1), &mut ws[4]).unwrap_err(), 4);
    drain_w(&mut e, &mut ws, &log);
    assert_eq!(
        completions(&log),
        vec![
            (1, HostStatus::Success),
            (2, HostStatus::Success),
            (3, HostStatus::Success)
        ]
    );
    assert!(e.is_idle());
    assert_eq!(e.backend().pools, vec![8, 8, 8]);
}

#[test]
fn a_parent_ending_on_the_quick_path_admits_the_one_waiting_for_admission() {
    // One parent at a time: the second write waits for admission until the first ends, on
    // the quick path (a direct write's, then a slotted one's), which must let it in.
    for direct in [true, false] {
        let (mut e, log) = engine(raid1(2), 8, 1);
        let mut ws = states();
        if direct {
            assert!(matches!(
                e.try_direct_write(1, &write(0, 1), &mut ws[1]),
                Ok(DirectWrite::InFlight)
            ));
        } else {
            e.submit(1, write(0, 1));
        }
        e.submit(2, write(1, 1));
        assert_eq!(e.queued_parents(), 1, "direct {direct}");
        drain_w(&mut e, &mut ws, &log);
        assert_eq!(
            completions(&log),
            vec![(1, HostStatus::Success), (2, HostStatus::Success)],
            "direct {direct}"
        );
        assert!(e.is_idle(), "direct {direct}");
    }
}

#[test]
fn slotted_parents_leave_free_the_slots_direct_writes_may_be_handed_to() {
    let (mut e, log) = engine(raid1(2), 8, 2);
    let mut ws = states();
    assert!(matches!(
        e.try_direct_write(1, &write(0, 1), &mut ws[1]),
        Ok(DirectWrite::InFlight)
    ));
    // One slot is the direct write's should it hand over: one parent more gets a slot, the
    // next waits for admission (the bound is 2, the direct write counts).
    e.submit(2, write(1, 1));
    e.submit(3, write(2, 1));
    assert_eq!((e.active_parents(), e.queued_parents(), e.direct_writes()), (2, 1, 1));
    assert_eq!(submits(&log).len(), 4, "the third parent sent nothing");
    // A direct write admitted with a slot left free can still hand over into it.
    drain_w(&mut e, &mut ws, &log);
    assert!(e.is_idle());
    e.backend_mut().pools[1] = 0;
    e.submit(4, write(3, 1));
    assert_eq!((e.active_parents(), e.direct_writes()), (1, 0));
    assert!(matches!(
        e.try_direct_write(5, &write(4, 1), &mut ws[5]),
        Ok(DirectWrite::Handed)
    ));
    assert_eq!((e.active_parents(), e.direct_writes()), (2, 0));
    e.backend_mut().pools[1] = 8;
    e.poll();
    drain_w(&mut e, &mut ws, &log);
    let mut done = completions(&log);
    done.sort_by_key(|&(h, _)| h);
    assert_eq!(done, (1..=5).map(|h| (h, HostStatus::Success)).collect::<Vec<_>>());
    assert!(e.is_idle());
}

#[test]
fn a_direct_write_waiting_for_the_bitmap_is_handed_to_its_slot_before_any_child() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    let mut ws = states();
    e.intent_mut().pending = true;
    assert!(matches!(
        e.try_direct_write(1, &write(7, 1), &mut ws[1]),
        Ok(DirectWrite::Handed)
    ));
    assert!(submits(&log).is_empty(), "a child before the bitmap");
    assert_eq!(e.direct_writes(), 0);
    assert_eq!(e.active_parents(), 1);
    // The slot kept free for it (the last free one, slot 0 here) is the parent the bitmap
    // answers.
    e.intent_mut().pending = false;
    e.write_intent_ready(0);
    assert_eq!(submits(&log), vec![(1, 0), (1, 1)]);
    drain_w(&mut e, &mut ws, &log);
    assert_eq!(completions(&log), vec![(1, HostStatus::Success)]);
    assert_eq!(end_writes(&log), vec![(7, true)]);
    assert_eq!(e.stats().direct_handovers, 1);
    assert!(e.is_idle());
}

#[test]
fn a_direct_write_short_of_a_context_hands_over_where_it_stopped_and_its_first_copy_follows() {
    let (mut e, log) = engine(raid1(3), 4, 4);
    let mut ws = states();
    e.backend_mut().pools[1] = 0;
    assert!(matches!(
        e.try_direct_write(1, &write(3, 1), &mut ws[1]),
        Ok(DirectWrite::Handed)
    ));
    // Copy 0 went; copy 1 waits for leg 1's pool; copy 2 not yet (one at a time, in order).
    assert_eq!(submits(&log), vec![(1, 0)]);
    assert_eq!(e.leg_stats(1).pool_empty, 1);
    // The copy already out comes back to the slot, not to the caller.
    let info = complete_w(&mut e, &mut ws, &log);
    assert_eq!(info.parent, DIRECT_WRITE);
    assert!(completions(&log).is_empty());
    // Nothing goes direct past a parent waiting for a pool it needs.
    assert!(matches!(
        e.try_direct_write(2, &write(9, 1), &mut ws[2]),
        Ok(DirectWrite::Handed)
    ));
    assert_eq!(submits(&log), vec![(1, 0), (2, 0)]);
    e.backend_mut().pools[1] = 2;
    e.poll();
    drain_w(&mut e, &mut ws, &log);
    assert_eq!(submits(&log), vec![(1, 0), (2, 0), (1, 1), (1, 2), (2, 1), (2, 2)]);
    assert_eq!(
        completions(&log),
        vec![(1, HostStatus::Success), (2, HostStatus::Success)]
    );
    assert_eq!(end_writes(&log), vec![(3, true), (9, true)]);
    assert_eq!(e.stats().direct_handovers, 2);
    assert!(e.is_idle());
    assert_eq!(e.backend().pools, vec![4, 2, 4, 4]);
}

#[test]
fn a_direct_write_refused_for_shared_io_parks_at_that_copy_and_resumes_there() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    let mut ws = states();
    e.backend_mut().refuse_nth = Some(1);
    assert!(matches!(
        e.try_direct_write(1, &write(4, 1), &mut ws[1]),
        Ok(DirectWrite::Handed)
    ));
    assert_eq!(submits(&log), vec![(1, 0)]);
    assert!(log.borrow().contains(&Ev::WaitIo));
    // Parked holding the refused copy's context (resubmitted first on resume).
    assert_eq!(e.backend().pools, vec![3, 3, 4]);
    assert_eq!(e.leg_stats(1).nomem, 1);
    e.io_available();
    assert_eq!(submits(&log), vec![(1, 0), (1, 1)]);
    drain_w(&mut e, &mut ws, &log);
    assert_eq!(completions(&log), vec![(1, HostStatus::Success)]);
    assert_eq!(end_writes(&log), vec![(4, true)]);
    assert!(e.is_idle());
    assert_eq!(e.backend().pools, vec![4, 4, 4]);
    // Refused at its first copy: nothing out, it parks all the same.
    e.backend_mut().nomem = 1;
    assert!(matches!(
        e.try_direct_write(2, &write(4, 1), &mut ws[2]),
        Ok(DirectWrite::Handed)
    ));
    // Nothing goes direct past it while it waits for shared I/O.
    assert_eq!(e.try_direct_write(3, &write(8, 1), &mut ws[3]).unwrap_err(), 3);
    e.io_available();
    drain_w(&mut e, &mut ws, &log);
    assert_eq!(completions(&log)[1..], [(2, HostStatus::Success)]);
    assert!(e.is_idle());
}

#[test]
fn a_direct_write_missing_a_copy_leaves_its_region_dirty_and_fails_only_with_no_copy() {
    // A copy fails: the leg is failed, the write succeeds on the other, the region stays dirty.
    let (mut e, log) = engine(raid1(2), 4, 4);
    let mut ws = states();
    e.backend_mut().fail_leg = Some(1);
    assert!(e.try_direct_write(1, &write(2, 1), &mut ws[1]).is_ok());
    drain_w(&mut e, &mut ws, &log);
    assert_eq!(completions(&log), vec![(1, HostStatus::Success)]);
    assert_eq!(end_writes(&log), vec![(2, false)]);
    assert!(e.leg_failed(1));
    assert_eq!(e.backend().failed, 1 << 1);
    assert_eq!(e.leg_stats(1).write_errors, 1);
    // Degraded: only leg 0 gets the next write, which still leaves the region dirty.
    assert!(e.try_direct_write(2, &write(3, 1), &mut ws[2]).is_ok());
    assert_eq!(submits(&log).last(), Some(&(2, 0)));
    assert_eq!(submits(&log).len(), 3);
    e.backend_mut().fail_leg = Some(0);
    drain_w(&mut e, &mut ws, &log);
    // Its only copy failed: the host write fails.
    assert_eq!(completions(&log)[1], (2, HostStatus::Failed));
    assert_eq!(end_writes(&log)[1], (3, false));
    assert_eq!(e.stats().parents_failed, 1);
    assert!(e.is_idle());
    assert_eq!(e.backend().pools, vec![4, 4, 4]);
}

#[test]
fn a_direct_write_whose_copies_complete_inside_their_submit_is_done_at_once() {
    let (mut e, log) = engine(raid1(3), 4, 4);
    let mut ws = states();
    e.backend_mut().inline = true;
    match e.try_direct_write(1, &write(6, 3), &mut ws[1]) {
        Ok(DirectWrite::Done(1, HostStatus::Success)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(submits(&log), vec![(1, 0), (1, 1), (1, 2)]);
    assert_eq!(end_writes(&log), vec![(6, true)]);
    assert_eq!(e.stats().inline_completions, 3);
    assert!(e.is_idle());
    assert_eq!(e.backend().pools, vec![4, 4, 4, 4]);
}

#[test]
fn only_a_write_inside_one_chunk_goes_direct_and_raid10_sends_it_to_its_copies() {
    let (mut e, log) = engine(n2_on_3_legs(), 4, 4);
    let mut ws = states();
    let chunk = e.geometry().chunk_blocks();
    assert_eq!(e.try_direct_write(1, &write(chunk - 1, 2), &mut ws[1]).unwrap_err(), 1);
    assert_eq!(e.try_direct_write(2, &read(0, 1), &mut ws[2]).unwrap_err(), 2);
    assert_eq!(e.try_direct_write(3, &write(0, 0), &mut ws[3]).unwrap_err(), 3);
    let end = e.geometry().data_blocks();
    assert_eq!(e.try_direct_write(4, &write(end - 1, 2), &mut ws[4]).unwrap_err(), 4);
    assert!(log.borrow().is_empty(), "a declined write took something");
    assert_eq!(e.active_parents(), 0);
    // The second chunk of n2 on 3 legs: legs 2 and 0.
    assert!(e.try_direct_write(5, &write(chunk, 1), &mut ws[5]).is_ok());
    let copies: Vec<_> = e
        .geometry()
        .map_unchecked(chunk)
        .as_slice()
        .iter()
        .map(|c| c.leg)
        .collect();
    assert_eq!(submits(&log).iter().map(|s| s.1).collect::<Vec<_>>(), copies);
    // With a replacement being copied, writes go the general way (one more child).
    e.set_replacement(Some(0));
    assert_eq!(e.try_direct_write(6, &write(0, 1), &mut ws[6]).unwrap_err(), 6);
    drain_w(&mut e, &mut ws, &log);
    assert!(e.is_idle());
}

#[test]
fn direct_writes_out_when_the_engine_is_abandoned_are_the_callers_and_leave_their_region_dirty() {
    let (mut e, log) = engine(raid1(2), 4, 4);
    let mut ws = states();
    assert!(e.try_direct_write(1, &write(0, 1), &mut ws[1]).is_ok());
    e.submit(2, write(1, 1));
    // A handed-over one belongs to its slot: abandoned with it.
    e.backend_mut().refuse_nth = Some(1);
    assert!(matches!(
        e.try_direct_write(3, &write(2, 1), &mut ws[3]),
        Ok(DirectWrite::Handed)
    ));
    let hosts = e.abandon();
    assert_eq!(hosts, vec![2, 3], "only the slots' hosts");
    assert_eq!(
        e.direct_writes(),
        1,
        "its slot stays reserved until its children are back"
    );
    let mut last = Vec::new();
    while let Some((child, info)) = e.backend_mut().in_flight.pop_front() {
        if info.parent == DIRECT_WRITE {
            let host = e.backend_mut().direct_hosts.pop_front().unwrap();
            if e.direct_write_dropped(child, info, &mut ws[host as usize]) {
                last.push(host);
            }
        } else {
            e.backend_mut().free_child(info.leg, child);
        }
    }
    assert_eq!(last, vec![1], "its last child hands the direct write's host back, once");
    assert!(end_writes(&log).contains(&(0, false)));
    assert!(e.is_idle());
    assert_eq!(e.backend().pools, vec![4, 4, 4]);
    // A write that never started has nothing to undo; one finished, nothing either.
    let mut st = WriteState::default();
    assert_eq!(e.try_direct_write(4, &read(0, 1), &mut st).unwrap_err(), 4);
    assert!(e.direct_write_unwound(&mut st), "not started: the caller fails it");
    assert!(e.try_direct_write(5, &write(0, 1), &mut ws[5]).is_ok());
    assert!(!e.direct_write_unwound(&mut ws[5]), "issued: its children finish it");
    // A panic after its last child was taken back (the write finished, its host not yet
    // completed): the caller fails the host, and nothing of the write is ended twice.
    let (c0, i0) = e.backend_mut().in_flight.pop_front().unwrap();
    e.backend_mut().direct_hosts.pop_front();
    assert_eq!(e.direct_write_ok(c0, i0, &mut ws[5]), None);
    assert!(!e.direct_write_lost(&mut ws[5]), "a child is still out");
    let (c1, i1) = e.backend_mut().in_flight.pop_front().unwrap();
    e.backend_mut().direct_hosts.pop_front();
    assert_eq!(e.direct_write_ok(c1, i1, &mut ws[5]), Some(HostStatus::Success));
    let ends = end_writes(&log).len();
    assert!(
        e.direct_write_lost(&mut ws[5]),
        "its last reference: the caller fails the host"
    );
    assert_eq!(end_writes(&log).len(), ends, "its intent was ended once");
    assert!(e.is_idle());
    assert_eq!(e.backend().pools, vec![4, 4, 4]);
}
