//! Compiles proto/ with protox (pure Rust, no system protoc) and keeps the encoded descriptor
//! set for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // The commit for the build-info metric; "unknown" outside a git checkout.
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-env-changed=SUPPRESSD_GIT_SHA");
    // Builds without .git (container images) pass the commit in the environment.
    let from_env = std::env::var("SUPPRESSD_GIT_SHA")
        .ok()
        .filter(|s| !s.is_empty());
    let sha = from_env
        .or_else(|| {
            std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()
                .filter(|out| out.status.success())
                .and_then(|out| String::from_utf8(out.stdout).ok())
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SUPPRESSD_GIT_SHA={sha}");
    let files = protox::compile(
        [
            "suppressd/v1/suppressd.proto",
            "suppressd/admin/v1/admin.proto",
        ],
        ["proto"],
    )?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("suppressd_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&files))?;
    tonic_prost_build::configure()
        // prost plus INVALID_ARGUMENT for malformed messages and a batch count bound.
        .codec_path("crate::server::codec::BoundedCodec")
        .build_client(true)
        .build_server(true)
        .compile_fds(files)?;
    Ok(())
}
