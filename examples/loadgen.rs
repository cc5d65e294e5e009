//! TEMPORARY (removed before merge): `suppressd loadgen` until the real CLI wires it.
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: suppressd::loadgen::LoadgenArgs,
}

fn main() -> std::process::ExitCode {
    suppressd::loadgen::loadgen_main(Cli::parse().args)
}
