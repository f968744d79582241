//! Nothing here: the package exists for its bench, `benches/peers.rs`.
#![forbid(unsafe_code)]
