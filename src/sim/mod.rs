//! A deterministic discrete-event simulator for the engine: the backend (`SimBackend`) and a
//! seeded random workload that checks every byte (`workload::run`).

pub mod backend;
pub mod intent;
pub mod rng;
pub mod workload;

pub use backend::{Faults, LegModel, SimBackend};
pub use intent::BitmapConfig;
pub use workload::{run, SimConfig, SimConfigError, SimReport};
