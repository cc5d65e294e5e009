//! Thin binary: everything lives in the library so tests and benches reach the same code.

fn main() -> std::process::ExitCode {
    suppressd::cli::main()
}
