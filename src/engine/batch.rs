//! The Batch strategy: md's behaviour before its deadlock fix, kept as a demonstration and a
//! test oracle (the simulator shows it stalling where Immediate does not). Every child of a
//! parent is allocated, context and shared I/O, and held before any is submitted, so parents
//! holding part of a pool can wait on each other forever. Never on the common path.

use super::backend::{Backend, ParentId};
use super::intent::WriteIntent;
use super::{ChildKind, Engine, Wait};

impl<B: Backend, W: WriteIntent> Engine<B, W> {
    /// md's pre-fix behaviour: every child of the parent is allocated (context and shared I/O)
    /// and held before any is submitted.
    pub(super) fn issue_main_batch(&mut self, id: ParentId) -> Option<Wait> {
        let idx = id as usize;
        if !self.slots[idx].batch_submitting {
            if let Some((mut child, info, kind)) = self.slots[idx].parked.take() {
                if !self.backend.reserve_io(&mut child) {
                    self.slots[idx].parked = Some((child, info, kind));
                    return Some(Wait::Io(Some(info.leg)));
                }
                self.slots[idx].held.push((child, info));
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
                self.slots[idx].held.push((child, info));
                self.slots[idx].next += 1;
            }
            self.slots[idx].batch_submitting = true;
        }
        while !self.slots[idx].held.is_empty() {
            let (child, info) = self.slots[idx].held.remove(0);
            if let Err((child, info)) = self.submit_child(child, info, false) {
                self.slots[idx].held.insert(0, (child, info));
                return Some(Wait::Io(Some(info.leg)));
            }
        }
        None
    }
}
