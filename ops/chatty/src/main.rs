//! The `chatty` binary: parses the command line and runs the subcommand.

use clap::Parser;

fn main() {
    let cli = chatty::cli::Cli::parse();
    std::process::exit(chatty::cli::run(cli));
}
