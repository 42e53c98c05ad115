//! The sidecar's flag and environment parsing as a library, so the fuzz
//! targets (`fuzz/`) can drive it; the binary (`main.rs`) uses it from here.
#![forbid(unsafe_code)]

pub mod config;
