//! Snapshot bytes in the JetStream object store: upload in fixed-size parts, download with
//! the digest verified.
//!
//! A version is stored as `parts` objects `<object>/<index>`, each at most [`PART_BYTES`]
//! long; one logical version has one SHA-256 over the whole file, recorded in its
//! [`super::heads::Head`]. Parts keep every single put bounded (the object store's trouble
//! with very large objects at R3 is in one long put) and let a failed upload be retried part by part
//! later without resending gigabytes; BENCHMARKS.md has the measurements behind the size.
//!
//! A download writes to a path the caller chose (a temporary name in the data directory),
//! checks the length of every part and the digest over all of them, and fsyncs; anything
//! else is refused with the object, offset and reason. Never renames into place and never
//! judges the snapshot itself: that is the engine's validation, in [`super::snapshots`].

use super::heads::Head;
use async_nats::jetstream::object_store::{ObjectMetadata, ObjectStore};
use sha2::{Digest, Sha256};
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Largest part of a version (see the module doc and BENCHMARKS.md).
pub const PART_BYTES: u64 = 64 << 20;
/// Parts uploaded at once.
const PARALLEL_PARTS: usize = 4;
/// An object a head names but a server does not have yet is waited for this long after the
/// head moved before the version is refused.
const NOT_FOUND_GRACE_MS: i64 = 30_000;

/// What an upload stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    pub object: String,
    pub parts: u32,
    pub part_bytes: u64,
    pub size: u64,
    pub digest: String,
}

/// `sha256:<hex>` of a file. Blocking.
pub fn digest_file(path: &Path) -> Result<(String, u64), String> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

/// The object name of `set`'s `version` with `digest`: distinct per content, so a retried
/// or competing upload never overwrites the bytes a head already points at.
pub fn object_name(set: &str, version: u64, digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("{set}/{version}-{}", &hex[..hex.len().min(16)])
}

fn part_name(object: &str, index: u32) -> String {
    format!("{object}/{index}")
}

/// Uploads `path` as `set`'s `version` in parts of `part_bytes`.
pub async fn upload(
    store: &ObjectStore,
    set: &str,
    version: u64,
    path: &Path,
    part_bytes: u64,
) -> Result<Uploaded, String> {
    let owned = path.to_path_buf();
    let (digest, size) = tokio::task::spawn_blocking(move || digest_file(&owned))
        .await
        .map_err(|e| format!("digest task: {e}"))??;
    let object = object_name(set, version, &digest);
    let parts = size.div_ceil(part_bytes).max(1);
    let parts = u32::try_from(parts).map_err(|_| "too many parts".to_owned())?;
    // Parts go up a few at a time: the object store acknowledges each chunk of a put before
    // the next is sent, so one put is bound by the round trip (a quorum's at R3), not bandwidth.
    let mut uploads = tokio::task::JoinSet::new();
    for index in 0..parts {
        if uploads.len() >= PARALLEL_PARTS {
            join_one(&mut uploads).await?;
        }
        let (store, path, name) = (store.clone(), path.to_path_buf(), part_name(&object, index));
        let description = format!("{set} version {version} part {index}");
        uploads.spawn(async move {
            let mut file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            file.seek(std::io::SeekFrom::Start(u64::from(index) * part_bytes))
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let mut part = file.take(part_bytes);
            store
                .put(
                    ObjectMetadata {
                        name: name.clone(),
                        description: Some(description),
                        ..Default::default()
                    },
                    &mut part,
                )
                .await
                .map(|_| ())
                .map_err(|e| format!("fleet: upload of {name}: {e}"))
        });
    }
    while !uploads.is_empty() {
        join_one(&mut uploads).await?;
    }
    Ok(Uploaded {
        object,
        parts,
        part_bytes,
        size,
        digest,
    })
}

async fn join_one(uploads: &mut tokio::task::JoinSet<Result<(), String>>) -> Result<(), String> {
    match uploads.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(format!("upload task: {e}")),
        None => Ok(()),
    }
}

/// Deletes every part of `object` (best effort: a missing part is already gone).
pub async fn delete(store: &ObjectStore, object: &str, parts: u32) {
    for index in 0..parts {
        let name = part_name(object, index);
        if let Err(error) = store.delete(&name).await {
            tracing::debug!(object = %name, %error, "fleet: snapshot part not deleted");
        }
    }
}

/// Why a download failed.
#[derive(Debug)]
pub enum FetchError {
    /// NATS could not be asked (retry soon).
    Unreachable(String),
    /// The stored bytes are not what the head promised (refused).
    Bad(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Unreachable(e) | FetchError::Bad(e) => f.write_str(e),
        }
    }
}

/// Downloads `head`'s version into `dest` (created anew), verifying each part's length and
/// the digest over all parts, then fsyncs it. On failure `dest` is removed.
pub async fn download(store: &ObjectStore, head: &Head, dest: &Path) -> Result<(), FetchError> {
    let result = download_into(store, head, dest).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(dest).await;
    }
    result
}

async fn download_into(store: &ObjectStore, head: &Head, dest: &Path) -> Result<(), FetchError> {
    let io = |e: std::io::Error| FetchError::Unreachable(format!("{}: {e}", dest.display()));
    let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    let mut buffer = vec![0u8; 1 << 20];
    for index in 0..head.parts {
        let name = part_name(&head.object, index);
        let expected = head.size.saturating_sub(offset).min(head.part_bytes.max(1));
        let mut object = store.get(&name).await.map_err(|e| {
            use async_nats::jetstream::object_store::GetErrorKind;
            // Replicas answer object reads directly (R3): one that has not caught up with a
            // head moved a moment ago says "not found"; only an object missing for longer is
            // refused (a refused version is not fetched again for a minute).
            let young = super::now_ms() - head.published_at_ms < NOT_FOUND_GRACE_MS;
            match e.kind() {
                GetErrorKind::NotFound if young => {
                    FetchError::Unreachable(format!("object {name}: {e} (retrying)"))
                }
                GetErrorKind::NotFound | GetErrorKind::BucketLink | GetErrorKind::InvalidName => {
                    FetchError::Bad(format!("object {name}: {e}"))
                }
                _ => FetchError::Unreachable(format!("object {name}: {e}")),
            }
        })?;
        let mut read_part = 0u64;
        loop {
            // The object store checks its own digest at the end of a part: a mismatch there
            // is an error here, so a damaged part never completes.
            let read = object.read(&mut buffer).await.map_err(|e| {
                FetchError::Bad(format!("object {name}: offset {}: {e}", offset + read_part))
            })?;
            if read == 0 {
                break;
            }
            read_part += read as u64;
            if read_part > expected {
                return Err(FetchError::Bad(format!(
                    "object {name}: longer than the {expected} bytes the head says"
                )));
            }
            hasher.update(&buffer[..read]);
            file.write_all(&buffer[..read]).await.map_err(io)?;
        }
        if read_part != expected {
            return Err(FetchError::Bad(format!(
                "object {name}: offset {}: truncated ({read_part} of {expected} bytes)",
                offset + read_part
            )));
        }
        offset += read_part;
    }
    if offset != head.size {
        return Err(FetchError::Bad(format!(
            "object {}: {offset} bytes in {} parts, the head says {}",
            head.object, head.parts, head.size
        )));
    }
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    if digest != head.digest {
        return Err(FetchError::Bad(format!(
            "object {}: digest mismatch (the head says {}, the bytes are {digest})",
            head.object, head.digest
        )));
    }
    file.sync_all().await.map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_per_content_and_digests_cover_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let (digest, size) = digest_file(&path).unwrap();
        assert_eq!(size, 3);
        assert_eq!(
            digest,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            object_name("acme/dnc", 4, &digest),
            "acme/dnc/4-ba7816bf8f01cfea"
        );
    }
}
