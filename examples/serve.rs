//! TEMPORARY (removed before merge): `suppressd serve --config PATH` until the real CLI lands.
fn main() -> std::process::ExitCode {
    let path = std::env::args_os().nth(1).expect("usage: serve CONFIG");
    suppressd::server::serve_main(Some(std::path::Path::new(&path)), false)
}
