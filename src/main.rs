//! Thin binary: everything lives in the library so tests and benches reach the same code.

// mimalloc: requests and mutations are freed on other threads than the ones that allocate
// them (tokio workers, the journal writer, the recorder), which glibc's arenas handle with
// locks and consolidation passes; see BENCHMARKS.md for the measured difference.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    if let Some(missing) = suppressd::cli::cpu_features_missing() {
        eprintln!(
            "suppressd: this build needs an x86-64-v3 CPU and this one lacks {missing}; \
             build for it with RUSTFLAGS=\"-C target-cpu=x86-64\" (.cargo/config.toml)"
        );
        return std::process::ExitCode::from(70);
    }
    suppressd::cli::main()
}
