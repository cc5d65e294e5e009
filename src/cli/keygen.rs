//! `suppressd keygen`: writes a new random fingerprint key file, or (`--fleet`) a fleet key
//! that seals the mutations a fleet publishes (`crate::fleet::seal`).
//!
//! Owns creating the file safely: readable by its owner only (0600) from the moment it exists,
//! never replacing an existing file (a lost key makes every set built with it unreadable), and
//! removed again if writing fails. It never prints the secret.

use super::{CliError, CliResult};
use crate::engine::keys::SecretKey;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Key id recorded in every set built with the key: 1-64 letters, digits, '.', '_' or '-'
    #[arg(long, value_name = "ID")]
    pub id: String,
    /// Key file to create (refuses to overwrite)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// A fleet key (256 bits, `[fleet] key_files`) instead of a fingerprint key
    #[arg(long)]
    pub fleet: bool,
}

pub fn run(args: KeygenArgs) -> CliResult<()> {
    if args.fleet {
        let (key, text) =
            crate::fleet::seal::FleetKey::generate(&args.id).map_err(CliError::usage)?;
        write_new(&args.out, text.as_bytes())?;
        eprintln!(
            "wrote fleet key '{}' to {} (mode 0600): copy it to every host of the fleet and list \
             it first in [fleet] key_files there",
            key.id(),
            args.out.display()
        );
        return Ok(());
    }
    let key = SecretKey::generate(&args.id).map_err(CliError::usage)?;
    write_new(&args.out, key.to_file_text().as_bytes())?;
    eprintln!(
        "wrote key '{}' to {} (mode 0600): keep it secret and backed up; sets built with it \
         cannot be read without it",
        key.id(),
        args.out.display()
    );
    Ok(())
}

/// Creates `path` (owner-only on unix), writes and syncs `bytes`; never replaces a file.
fn write_new(path: &Path, bytes: &[u8]) -> CliResult<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::AlreadyExists {
            CliError::runtime(format!(
                "{} already exists; refusing to overwrite a key file",
                path.display()
            ))
        } else {
            CliError::runtime(format!("{}: {error}", path.display()))
        }
    })?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(error) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(CliError::runtime(format!("{}: {error}", path.display())));
    }
    Ok(())
}
