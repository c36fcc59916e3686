//! `nic-config`: host setup for weir.
#![forbid(unsafe_code)]

fn main() {}
