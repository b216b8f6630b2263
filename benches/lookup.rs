//! Micro-benchmarks (placeholder until the lookup bench lands).
fn main() {}
