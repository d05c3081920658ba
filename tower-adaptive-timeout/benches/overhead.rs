//! Placeholder, replaced by the overhead bench.
fn main() {}
