//! The `capgate` binary: parse the command line, run, report errors in one line.

fn main() -> std::process::ExitCode {
    capgate_gateway::cli::main()
}
