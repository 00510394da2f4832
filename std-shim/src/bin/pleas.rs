//! The `pleas` command line.

use clap::Parser;

/// Merge two trained neural networks with PLeaS (permutations + least squares).
#[derive(Parser)]
#[command(name = "pleas", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
