//! The `capgate` binary: parse the command line, run, report errors in one line.

/// jemalloc rather than glibc's malloc: under a steady call rate glibc's
/// per-thread arenas kept growing although the live heap stayed about
/// 5 MiB (heaptrack); jemalloc returns unused pages on its own
/// (docs/benchmarks.md, Reliability).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    capgate_gateway::cli::main()
}
