//! A deterministic discrete-event simulator for the engine: the backend (`SimBackend`) and a
//! seeded random workload that checks every byte (`workload::run`); with the superblocks
//! modelled (`metadata`), a crash is followed by the assembly a restart would do (`assembly`).

pub mod assembly;
pub mod backend;
pub mod host;
pub mod intent;
pub mod metadata;
pub mod rng;
pub mod workload;

pub use assembly::RestartReport;
pub use backend::{Faults, LegModel, SimBackend};
pub use intent::BitmapConfig;
pub use workload::{run, CrashPoint, SimConfig, SimConfigError, SimReport};
