//! The engine's per-leg state, in a fixed table indexed by leg number.
//!
//! Every child reads or updates its leg's state (failed, outstanding blocks, counters) several
//! times on its way. Held in a vector, each of those loaded the vector's pointer and length
//! and branched on a bound check; under pool pressure, where each resumed child passes through
//! several functions, such checks were the module's largest single kind of instruction. The
//! table has a power-of-two length at compile time and an index is masked to it, so there is
//! no check to make: a leg number is always below `MAX_LEGS + 1` (the real legs, then the
//! replacement), which the geometry guarantees and `new` asserts.

use std::ops::{Index, IndexMut};

use super::stats::LegStats;
use crate::placement::MAX_LEGS;

/// Entries in the table: the real legs and the replacement, rounded up to a power of two.
const SLOTS: usize = (MAX_LEGS + 1).next_power_of_two();

#[derive(Debug, Clone, Default)]
pub(super) struct LegState {
    pub(super) failed: bool,
    /// False while the leg is being rebuilt: it takes writes but is never read.
    pub(super) readable: bool,
    pub(super) outstanding_blocks: u64,
    pub(super) stats: LegStats,
}

pub(super) struct LegTable {
    legs: Box<[LegState; SLOTS]>,
}

impl LegTable {
    /// `legs` real legs, readable, then the replacement's entry (not readable). Entries past
    /// those are never indexed (no copy maps to them).
    pub(super) fn new(legs: u32) -> LegTable {
        assert!(legs as usize <= MAX_LEGS, "{legs} legs: at most {MAX_LEGS}");
        let mut t = LegTable {
            legs: Box::new(std::array::from_fn(|_| LegState::default())),
        };
        for leg in 0..legs {
            t[leg].readable = true;
        }
        t
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut LegState> {
        self.legs.iter_mut()
    }
}

impl Index<u32> for LegTable {
    type Output = LegState;

    #[inline(always)]
    fn index(&self, leg: u32) -> &LegState {
        debug_assert!((leg as usize) < SLOTS, "leg {leg} out of range");
        &self.legs[leg as usize & (SLOTS - 1)]
    }
}

impl IndexMut<u32> for LegTable {
    #[inline(always)]
    fn index_mut(&mut self, leg: u32) -> &mut LegState {
        debug_assert!((leg as usize) < SLOTS, "leg {leg} out of range");
        &mut self.legs[leg as usize & (SLOTS - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_legs_are_readable_and_the_replacement_is_not() {
        let t = LegTable::new(3);
        assert!((0..3).all(|l| t[l].readable && !t[l].failed));
        assert!(!t[3].readable, "the replacement's entry is never read from");
    }

    #[test]
    fn the_most_legs_and_the_replacement_fit() {
        let mut t = LegTable::new(MAX_LEGS as u32);
        t[MAX_LEGS as u32].outstanding_blocks = 7;
        assert_eq!(t[MAX_LEGS as u32].outstanding_blocks, 7);
        assert!(t[MAX_LEGS as u32 - 1].readable);
    }

    #[test]
    #[should_panic(expected = "at most")]
    fn more_legs_than_the_table_holds_are_refused() {
        LegTable::new(MAX_LEGS as u32 + 1);
    }
}
