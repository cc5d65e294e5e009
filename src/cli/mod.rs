//! The `suppressd` command line (daemon branch: serve only; merged with the full CLI).
use clap::Parser;

#[derive(Parser)]
#[command(name = "suppressd")]
enum Command {
    Serve {
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        #[arg(long)]
        repair_journal: bool,
    },
}

pub fn main() -> std::process::ExitCode {
    match Command::parse() {
        Command::Serve { config, repair_journal } => crate::server::serve_main(config.as_deref(), repair_journal),
    }
}
