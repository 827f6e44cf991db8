//! `darter`: download through the swarm (or directly), inspect storage, run the daemon.
fn main() -> std::process::ExitCode {
    darter_agent::cli::main()
}
