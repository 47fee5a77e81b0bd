//! The `crm-auth` binary.
fn main() {}
