//! Edge: the binary. Everything happens in `cli`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    tracks_collector::main()
}
