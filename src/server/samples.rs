//! Demo data: builds the shipped sample lists into an empty data directory.
//!
//! Only runs when `server.generate_samples` is true (the embedded example config): a fresh
//! clone then answers checks at once. Production configs leave it off, so a missing set fails
//! closed instead of being replaced by demo data.

use crate::config::{Config, DEMO_KEY_FILE};
use crate::engine::date::Day;
use crate::engine::fuse::FilterWidth;
use crate::engine::number::NumberParser;
use crate::engine::set::{SetBuilder, SetSpec};

/// (set id, list text) of the shipped samples.
const SAMPLES: &[(&str, &str)] = &[
    ("us-dnc", include_str!("../../deploy/samples/us-dnc.txt")),
    ("pl-dnc", include_str!("../../deploy/samples/pl-dnc.txt")),
    (
        "acme/dnc",
        include_str!("../../deploy/samples/acme-dnc.txt"),
    ),
    (
        "acme/consent",
        include_str!("../../deploy/samples/acme-consent.txt"),
    ),
    (
        "kontakt/dnc",
        include_str!("../../deploy/samples/kontakt-dnc.txt"),
    ),
    (
        "kontakt/consent",
        include_str!("../../deploy/samples/kontakt-consent.txt"),
    ),
];

/// Writes a snapshot for every configured set that has a sample and no file yet.
/// Returns the files written.
pub fn generate_missing(config: &Config) -> Result<Vec<std::path::PathBuf>, String> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        format!(
            "cannot create data directory {}: {e}",
            config.data_dir.display()
        )
    })?;
    let existing: Vec<String> = std::fs::read_dir(&config.data_dir)
        .map_err(|e| {
            format!(
                "cannot read data directory {}: {e}",
                config.data_dir.display()
            )
        })?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .collect();
    let mut written = Vec::new();
    let parser = NumberParser::new(None);
    for definition in &config.sets {
        let Some((_, text)) = SAMPLES.iter().find(|(id, _)| *id == definition.id) else {
            continue;
        };
        if existing.iter().any(|name| definition.pattern.matches(name)) {
            continue;
        }
        let file_stem = definition.id.replace('/', "-");
        let file_name = format!("{file_stem}.1.snap");
        if !definition.pattern.matches(&file_name) {
            tracing::warn!(set = %definition.id, pattern = %definition.pattern_text, "sample file name does not match the set's pattern; not generated");
            continue;
        }
        let spec = SetSpec {
            name: file_stem,
            kind: definition.kind,
            filter: FilterWidth::Fuse8,
            source: "suppressd sample list (demo data)".into(),
            source_date: Some(Day::today()),
            version: 1,
            build_time: crate::server::state::now_ms() / 1000,
        };
        let mut builder =
            SetBuilder::new(spec, definition.key.clone()).map_err(|e| e.to_string())?;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let number = parser
                .parse_fast(line)
                .map_err(|e| format!("sample list for '{}': {e}", definition.id))?;
            builder.push(number, None).map_err(|e| e.to_string())?;
        }
        let built = builder.build(1).map_err(|e| e.to_string())?;
        let path = config.data_dir.join(&file_name);
        built.image.write_atomic(&path).map_err(|e| e.to_string())?;
        tracing::info!(set = %definition.id, file = %path.display(), keys = built.stats.keys, "sample list generated");
        written.push(path);
    }
    Ok(written)
}

/// Creates the demo's fingerprint key (mode 0600) at [`DEMO_KEY_FILE`] under `base` (where the
/// embedded example config names it) if it does not exist yet, so the example validates on a
/// fresh clone. Production keys come from `keygen`.
pub fn ensure_demo_key(base: &std::path::Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = base.join(DEMO_KEY_FILE);
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let key = crate::engine::keys::SecretKey::generate("acme-erased-demo")?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(key.to_file_text().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
