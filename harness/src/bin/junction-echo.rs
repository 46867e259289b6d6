//! Placeholder until the echo server lands (helper-3 owns this file).
fn main() {}
