//! The Batch strategy: md's behaviour before its deadlock fix, kept as a demonstration and a
//! test oracle (the simulator shows it stalling where Immediate does not). Every child of a
//! parent is allocated, context and shared I/O, and held before any is submitted, so parents
//! holding part of a pool can wait on each other forever. Never on the common path.
//!
//! Its per-parent state lives here, beside the slots (`Engine::batch`), and exists only when the
//! engine runs this strategy: the Immediate engine's slots carry nothing of it.

use super::backend::{Backend, ChildInfo, ParentId};
use super::intent::WriteIntent;
use super::plan::MAX_SEGMENTS;
use super::{ChildKind, Engine, Strategy, Wait};
use crate::placement::Geometry;

/// One parent slot's batch state.
pub(super) struct BatchSlot<B: Backend> {
    /// Children allocated (shared I/O reserved) but not yet submitted.
    held: Vec<(B::Child, ChildInfo)>,
    /// Every child is allocated: the held ones are being submitted.
    submitting: bool,
}

impl<B: Backend> BatchSlot<B> {
    /// The batch state for `slots` parent slots, if `strategy` is Batch. Each can hold a whole
    /// plan (with one more child per segment, or per flush, for a replacement), reserved here
    /// so that issuing never allocates.
    pub(super) fn for_strategy(strategy: Strategy, geo: &Geometry, slots: u32) -> Option<Vec<Self>> {
        match strategy {
            Strategy::Immediate => None,
            Strategy::Batch => {
                let capacity = (MAX_SEGMENTS as usize) * (geo.copies().max(geo.legs()) as usize + 1);
                let slot = || BatchSlot {
                    held: Vec::with_capacity(capacity),
                    submitting: false,
                };
                Some((0..slots).map(|_| slot()).collect())
            }
        }
    }
}

impl<B: Backend, W: WriteIntent> Engine<B, W> {
    /// Parent `id` was just admitted: it starts by allocating.
    pub(super) fn batch_start(&mut self, id: ParentId) {
        if let Some(batch) = &mut self.batch {
            batch[id as usize].submitting = false;
        }
    }

    /// Whether parent `id` runs the Batch strategy and has not yet allocated all its children.
    #[inline]
    pub(super) fn batch_allocating(&self, id: ParentId) -> bool {
        self.batch.as_ref().is_some_and(|batch| !batch[id as usize].submitting)
    }

    /// Gives the contexts of parent `id`'s held children back to their pools (`abandon`).
    pub(super) fn batch_free_held(&mut self, id: ParentId) {
        if let Some(batch) = &mut self.batch {
            for (child, info) in batch[id as usize].held.drain(..) {
                self.backend.free_child(info.leg, child);
            }
        }
    }

    fn batch_slot(&mut self, id: ParentId) -> &mut BatchSlot<B> {
        let batch = self.batch.as_mut().expect("the Batch strategy has its state");
        &mut batch[id as usize]
    }

    /// md's pre-fix behaviour: every child of the parent is allocated (context and shared I/O)
    /// and held before any is submitted.
    pub(super) fn issue_main_batch(&mut self, id: ParentId) -> Option<Wait> {
        let idx = id as usize;
        if !self.batch_slot(id).submitting {
            if let Some((mut child, info, kind)) = self.slots[idx].parked.take() {
                if !self.backend.reserve_io(&mut child) {
                    self.slots[idx].parked = Some((child, info, kind));
                    return Some(Wait::Io(Some(info.leg)));
                }
                self.batch_slot(id).held.push((child, info));
            }
            while let Some(info) = self.next_planned(id) {
                let Some(mut child) = self.alloc(info.leg) else {
                    return Some(Wait::Pool(info.leg));
                };
                if !self.backend.reserve_io(&mut child) {
                    // Keep the context, as md kept its bios, and wait for the rest.
                    self.slots[idx].parked = Some((child, info, ChildKind::Main));
                    self.slots[idx].next += 1;
                    return Some(Wait::Io(Some(info.leg)));
                }
                self.batch_slot(id).held.push((child, info));
                self.slots[idx].next += 1;
            }
            self.batch_slot(id).submitting = true;
        }
        while !self.batch_slot(id).held.is_empty() {
            let (child, info) = self.batch_slot(id).held.remove(0);
            if let Err((child, info)) = self.submit_child(child, info, false) {
                self.batch_slot(id).held.insert(0, (child, info));
                return Some(Wait::Io(Some(info.leg)));
            }
        }
        None
    }
}
