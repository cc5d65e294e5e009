//! Thin binary: everything lives in the library so tests and benches reach the same code.

// mimalloc: requests and mutations are freed on other threads than the ones that allocate
// them (tokio workers, the journal writer, the recorder), which glibc's arenas handle with
// locks and consolidation passes; see BENCHMARKS.md for the measured difference.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    suppressd::cli::main()
}
