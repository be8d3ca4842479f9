//! Command-line front end. Exit codes: 0 success, 1 a run that lost or failed I/O, 2 bad input,
//! 3 a simulation that stalled.

mod bdevperf_report;
mod geometry;
mod map;
mod simulate;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "spdk-mirror",
    version,
    about = "Mirror placement and a deadlock-free I/O engine, simulated"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print where a block of the mirror lives on its legs (Linux md's placement).
    Map(map::MapArgs),
    /// Run random I/O through the engine on the deterministic simulator and check every byte.
    Simulate(simulate::SimArgs),
    /// Parse a bdevperf run's output and print it as JSON (what the benchmark reads).
    BdevperfReport(bdevperf_report::ReportArgs),
}

pub const EXIT_BAD_INPUT: i32 = 2;

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One line naming the problem, like every other bad input.
            let text = e.render().to_string();
            let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("bad arguments");
            return bad_input(line.trim_start_matches("error: "));
        }
        Err(e) => {
            let _ = e.print();
            return 0;
        }
    };
    match cli.cmd {
        Cmd::Map(args) => map::run(args),
        Cmd::Simulate(args) => simulate::run(args),
        Cmd::BdevperfReport(args) => bdevperf_report::run(args),
    }
}

/// Prints one line naming the problem and returns the bad-input exit code.
pub fn bad_input(msg: impl std::fmt::Display) -> i32 {
    eprintln!("spdk-mirror: {msg}");
    EXIT_BAD_INPUT
}
