//! jitgate CLI
fn main() {}
