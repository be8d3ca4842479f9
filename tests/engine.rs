//! The engine against a scripted backend: every step of md's fix, observed one event at a time.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use spdk_mirror::engine::{
    Backend, ChildInfo, ChildStatus, Engine, EngineConfig, Gate, HostStatus, IoOp, IoRequest, ParentId, ReadPolicy,
    Strategy, Submitted, WriteIntent,
};
use spdk_mirror::placement::{Geometry, GeometrySpec, Level, Raid10Layout};

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
    /// Status the next completions get, per leg.
    fail_leg: Option<u32>,
    /// Mirror blocks below this are "awaiting resync": reads are pinned to one copy.
    pinned_below: u64,
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
            fail_leg: None,
            pinned_below: 0,
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
    let legs = geo.legs() as usize;
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

/// Completes the oldest in-flight child with its scripted status.
fn complete_one(e: &mut Engine<Script, Intent>) -> ChildInfo {
    let (child, info) = e.backend_mut().in_flight.pop_front().expect("a child in flight");
    let status = if e.backend().fail_leg == Some(info.leg) {
        ChildStatus::Error
    } else {
        ChildStatus::Success
    };
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
    assert_eq!(e.backend().pools, vec![1, 1, 1]);
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
    assert_eq!(e.backend().pools, vec![4, 4, 4]);
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
    assert_eq!(e.backend().pools, vec![4, 4, 4]);
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
    assert_eq!(e.backend().pools, vec![4, 4]);
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
    assert_eq!(e.backend().pools, vec![4, 4]);
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

#[test]
fn raid10_writes_split_at_chunk_boundaries_to_every_copy() {
    let geo = Geometry::new(&GeometrySpec {
        level: Level::Raid10,
        layout: Some(Raid10Layout::parse("n2").unwrap()),
        legs: 3,
        chunk_bytes: Some(4096),
        block_size: 512,
        leg_blocks: 80,
    })
    .unwrap();
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
    assert_eq!(e.backend().pools, vec![1, 1], "every context is back");
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
