//! The one way to pick the CPUs an SPDK app runs on: lease them.
//!
//! Every SPDK app pins its reactors to the cores of its `-m` mask and busy-polls there, so two
//! apps on one core halve each other. [`lease_core`] hands out the least used CPU this process may
//! run on (CI runners do not always offer CPU 0), [`lease_cores`] several distinct ones; the
//! lease is given back when the [`CoreLease`] is dropped. [`super::Target::start`],
//! [`super::bdevperf`], [`super::bdevperf_server`] and [`super::spdk_dd`] lease a core for
//! themselves when their `cores_mask` is left empty (the default); a test that wants several
//! apps on one core leases it and passes [`CoreLease::mask`].
//!
//! Leases are counted per test binary (cargo runs test binaries one after the other). Leasing
//! never blocks: with more concurrent apps than CPUs, leases share. [`serial`] is the other
//! tool: one test at a time within a binary, for tests that must not overlap at all.

use std::collections::BTreeMap;
use std::fs;
use std::sync::{Mutex, MutexGuard};

/// How many live leases each CPU has.
static CORE_USE: Mutex<BTreeMap<usize, u32>> = Mutex::new(BTreeMap::new());

/// CPUs an SPDK app of this test runs on; given back on drop.
#[derive(Debug)]
pub struct CoreLease {
    cpus: Vec<usize>,
    mask: String,
}

impl CoreLease {
    /// The `-m` mask of the leased CPUs (`0x4` for CPU 2).
    pub fn mask(&self) -> &str {
        &self.mask
    }

    /// The leased CPUs, ascending.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }
}

impl Drop for CoreLease {
    fn drop(&mut self) {
        let mut used = CORE_USE.lock().unwrap_or_else(|p| p.into_inner());
        for cpu in &self.cpus {
            if let Some(n) = used.get_mut(cpu) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

/// The CPUs this process may run on (`Cpus_allowed_list` of /proc/self/status), at most 64
/// (a mask is a u64 here); CPU 0 when the list cannot be read.
pub fn allowed_cpus() -> Vec<usize> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("0")
        .trim()
        .to_string();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let mut ends = part.trim().splitn(2, '-').map(|s| s.trim().parse::<usize>());
        match (ends.next(), ends.next()) {
            (Some(Ok(a)), None) => cpus.push(a),
            (Some(Ok(a)), Some(Ok(b))) => cpus.extend(a..=b),
            _ => {}
        }
    }
    cpus.retain(|&c| c < 64);
    if cpus.is_empty() {
        cpus.push(0);
    }
    cpus
}

/// Leases the least used allowed CPU (ties: the lowest).
pub fn lease_core() -> CoreLease {
    lease_cores(1)
}

/// Leases `n` distinct CPUs, the least used ones (ties: the lowest). Panics when this process
/// may use fewer than `n` CPUs: a test that needs `n` reactors cannot run here.
pub fn lease_cores(n: usize) -> CoreLease {
    let allowed = allowed_cpus();
    assert!(
        n >= 1 && n <= allowed.len(),
        "a lease of {n} CPUs, but this process may run on {allowed:?} only"
    );
    let mut used = CORE_USE.lock().unwrap_or_else(|p| p.into_inner());
    let mut by_use = allowed;
    by_use.sort_by_key(|c| (used.get(c).copied().unwrap_or(0), *c));
    let mut cpus: Vec<usize> = by_use.into_iter().take(n).collect();
    cpus.sort_unstable();
    let mut mask = 0u64;
    for &cpu in &cpus {
        *used.entry(cpu).or_insert(0) += 1;
        mask |= 1 << cpu;
    }
    CoreLease {
        cpus,
        mask: format!("{mask:#x}"),
    }
}

/// One SPDK test at a time within a test binary, where they share files or must not overlap.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}
