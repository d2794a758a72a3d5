//! brisk-stream beside what a user would do instead, in one run: the encoders beside
//! serializing into one buffer; exports of 100k and 1M rows from PostgreSQL and SQLite beside
//! loading everything (peak memory of each in a process of its own); the keyset stream beside
//! one query streamed whole; and page time by depth, keyset beside `OFFSET`. Prints markdown
//! that `cargo xtask bench stream` writes to docs/benchmarks.md.
#![allow(
    clippy::print_stdout,
    missing_docs,
    reason = "a benchmark binary reports on stdout"
)]

mod encode;
mod export;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--export-child") {
        export::child(&args[at + 1..]);
        return;
    }
    let only = std::env::var("BRISK_BENCH_ONLY").ok();
    if only.as_deref().is_none_or(|o| o == "encode") {
        encode::run();
    }
    if only.as_deref().is_none_or(|o| o == "export") {
        export::run();
    }
}
