//! Host-side stub: the real program is the `enforcer` binary built for bpfel-unknown-none by
//! enforcer's build.rs. This empty library only lets cargo track the crate as a build dependency.
#![no_std]
