//! `spdk-mirror bdevperf-report [LOG]`: parses a bdevperf run's output (a file, or standard
//! input) with the library's parser and prints what the benchmark reads of it as JSON. The
//! benchmark (`bench/`, Python) calls it so that the project has one parser of that format.

use std::io::Read;
use std::path::PathBuf;

use clap::Args;

use spdk_mirror::bdevperf::parse_bdevperf_output;

#[derive(Args)]
pub struct ReportArgs {
    /// bdevperf's captured stdout and stderr; standard input when left out.
    log: Option<PathBuf>,
}

pub fn run(args: ReportArgs) -> i32 {
    let bytes = match &args.log {
        Some(path) => match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => return super::bad_input(format!("log: cannot read {}: {e}", path.display())),
        },
        None => {
            let mut b = Vec::new();
            if let Err(e) = std::io::stdin().read_to_end(&mut b) {
                return super::bad_input(format!("log: cannot read standard input: {e}"));
            }
            b
        }
    };
    let report = parse_bdevperf_output(&String::from_utf8_lossy(&bytes)).report();
    println!("{report}");
    0
}
