//! `spdk-mirror`: the mirror's placement map and its simulator, from the command line.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
