//! `suppressd fleet`: snapshot versions for a whole fleet, through its NATS object store.
//!
//! `fleet publish --config C --set NAME FILE` validates FILE with the engine as set NAME of
//! config C, uploads it and moves the set's head (compare-and-set): every daemon of the fleet
//! then fetches, verifies and serves it. `fleet heads` prints each set's head and the
//! compaction lease holder. `fleet status` prints the whole fleet as NATS holds it: the
//! stream's sequences and last purge, the lease holder, every live host (heartbeat, applied
//! sequence, lag, versions served, clean-through and pending erasures) and the heads. Reads the fleet keys and NATS credentials the config names; never
//! prints a number.

use super::{CliError, CliResult, thousands};
use crate::config::Config;
use crate::fleet::{Fleet, FleetSecrets};
use crate::policy::Policy;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// Publish a snapshot file as the next version of a set to every daemon of the fleet
    Publish(PublishArgs),
    /// Show each set's head (the version the fleet serves) and the compaction lease holder
    Heads(HeadsArgs),
    /// Show the fleet: stream, last purge, lease holder, live hosts, heads, pending erasures
    Status(HeadsArgs),
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The daemon's config file (its [fleet] section and set definitions)
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Set id as in the config: "us-dnc", or "acme/dnc" for a tenant's set
    #[arg(long, value_name = "NAME")]
    pub set: String,
    /// Snapshot file (`suppressd build`); its header version must be above the head's
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Largest part stored in the object store, in MiB
    #[arg(long, default_value_t = crate::fleet::objects::PART_BYTES >> 20, value_name = "MIB")]
    pub part_mib: u64,
}

#[derive(Debug, clap::Args)]
pub struct HeadsArgs {
    /// The daemon's config file
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

pub fn run(args: FleetArgs) -> CliResult<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime(format!("cannot start the runtime: {e}")))?;
    match args.command {
        FleetCommand::Publish(args) => runtime.block_on(publish(args)),
        FleetCommand::Heads(args) => runtime.block_on(heads(args)),
        FleetCommand::Status(args) => runtime.block_on(status(args)),
    }
}

async fn connect(config_path: &std::path::Path) -> CliResult<(Config, Arc<Fleet>)> {
    let config = Config::load(config_path).map_err(|e| CliError::usage(e.to_string()))?;
    let settings = config.fleet().cloned().ok_or_else(|| {
        CliError::usage(format!(
            "{}: no [fleet] section: a single host loads files from its data directory",
            config_path.display()
        ))
    })?;
    let secrets = FleetSecrets::load(&settings).map_err(CliError::usage)?;
    let fleet = Fleet::connect(settings, secrets, 0, None)
        .await
        .map_err(CliError::runtime)?;
    Ok((config, fleet))
}

async fn publish(args: PublishArgs) -> CliResult<()> {
    if args.part_mib == 0 || args.part_mib > 4096 {
        return Err(CliError::usage("--part-mib must be 1..=4096"));
    }
    let (config, fleet) = connect(&args.config).await?;
    let policy = Policy::compile(&config);
    let definition = policy
        .sets
        .iter()
        .find(|d| d.id == args.set)
        .ok_or_else(|| {
            let known: Vec<&str> = policy.sets.iter().map(|d| d.id.as_str()).collect();
            CliError::usage(format!(
                "no set '{}' in {} (sets: {})",
                args.set,
                args.config.display(),
                known.join(", ")
            ))
        })?;
    let started = Instant::now();
    let buckets = fleet.snapshot_buckets().await.map_err(CliError::runtime)?;
    let publisher = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    let head = crate::fleet::snapshots::publish(
        &buckets,
        crate::fleet::snapshots::Publication {
            definition,
            file: &args.file,
            through_seq: None,
            base_version: None,
            publisher: &publisher,
            part_bytes: args.part_mib << 20,
        },
    )
    .await
    .map_err(|e| CliError::runtime(e.to_string()))?;
    outln!(
        "published {} version {}: {} bytes in {} part(s), {}, through stream sequence {}, in {:.2} s",
        head.set,
        head.version,
        thousands(head.size),
        head.parts,
        head.digest,
        head.through_seq,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn heads(args: HeadsArgs) -> CliResult<()> {
    let (config, fleet) = connect(&args.config).await?;
    let buckets = fleet.snapshot_buckets().await.map_err(CliError::runtime)?;
    let policy = Policy::compile(&config);
    for definition in &policy.sets {
        match crate::fleet::heads::read_head(&buckets.heads, &definition.id).await {
            Ok(Some((head, revision))) => outln!(
                "{}: version {} ({} bytes, {} part(s), {}), through stream sequence {}, by {} (revision {revision})",
                head.set,
                head.version,
                thousands(head.size),
                head.parts,
                head.key_scheme,
                head.through_seq,
                head.published_by
            ),
            Ok(None) => outln!(
                "{}: no head (each host serves its own files)",
                definition.id
            ),
            Err(error) => outln!("{}: {error}", definition.id),
        }
    }
    match fleet.lease_holder().await.map_err(CliError::runtime)? {
        Some(holder) => outln!("compaction lease: {}", holder.host),
        None => outln!("compaction lease: free"),
    }
    Ok(())
}

fn ago(now_ms: i64, at_ms: i64) -> String {
    format!("{:.1} s ago", (now_ms - at_ms).max(0) as f64 / 1000.0)
}

async fn status(args: HeadsArgs) -> CliResult<()> {
    let (_, fleet) = connect(&args.config).await?;
    let view = fleet.view().await.map_err(CliError::runtime)?;
    let now = crate::server::state::now_ms();
    let settings = &fleet.settings;
    outln!(
        "fleet {}: stream {} holds sequences {}..{} ({} messages)",
        settings.name,
        settings.stream,
        view.first_seq,
        view.last_seq,
        (view.last_seq + 1).saturating_sub(view.first_seq)
    );
    match &view.purge {
        Some(purge) => outln!(
            "last purge: through sequence {} by {}, {}",
            purge.through_seq,
            purge.by,
            ago(now, purge.at_ms)
        ),
        None => outln!("last purge: never"),
    }
    match fleet.lease_holder().await.map_err(CliError::runtime)? {
        Some(holder) => outln!(
            "compaction lease: {} (since {})",
            holder.host,
            ago(now, holder.since_ms)
        ),
        None => outln!("compaction lease: free"),
    }
    let mut hosts = view.hosts.clone();
    hosts.sort_by(|a, b| a.host_id.cmp(&b.host_id));
    outln!("hosts ({} live):", hosts.len());
    for host in &hosts {
        let versions: Vec<String> = host
            .versions
            .iter()
            .map(|(set, version)| format!("{set}@{version}"))
            .collect();
        outln!(
            "  {}  heartbeat {}  applied {}  lag {} msgs / {:.1} s  clean through {}  erasures pending {}  serves {}",
            host.host_id,
            ago(now, host.heartbeat_unix_ms),
            host.applied,
            host.lag_messages,
            host.lag_seconds,
            host.clean_through,
            host.erasures_pending,
            versions.join(" ")
        );
    }
    outln!("heads:");
    for head in view.heads.values() {
        let behind: Vec<&str> = hosts
            .iter()
            .filter(|h| h.versions.get(&head.set).is_none_or(|&v| v < head.version))
            .map(|h| h.host_id.as_str())
            .collect();
        outln!(
            "  {}: version {}, through stream sequence {}, by {}, {}{}",
            head.set,
            head.version,
            head.through_seq,
            head.published_by,
            ago(now, head.published_at_ms),
            if behind.is_empty() {
                String::new()
            } else {
                format!(" (not yet served by {})", behind.join(", "))
            }
        );
    }
    let older: std::collections::BTreeSet<String> = view
        .parts
        .iter()
        .filter(|p| {
            view.heads
                .get(&p.set)
                .is_some_and(|h| p.version < h.version)
        })
        .map(|p| format!("{}@{}", p.set, p.version))
        .collect();
    outln!(
        "older object versions kept: {}",
        if older.is_empty() {
            "none".to_owned()
        } else {
            older.into_iter().collect::<Vec<_>>().join(" ")
        }
    );
    let pending = hosts.iter().map(|h| h.erasures_pending).max().unwrap_or(0);
    outln!("erasures pending fleet-wide: {pending}");
    Ok(())
}
