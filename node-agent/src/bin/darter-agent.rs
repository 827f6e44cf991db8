//! `darter-agent`: the same command line as `darter`, under the name the
//! DaemonSet runs (`darter-agent daemon --config FILE`).
fn main() -> std::process::ExitCode {
    darter_agent::cli::main()
}
