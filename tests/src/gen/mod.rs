//! Generators for the differential test: random policies over a small pool of nested prefixes,
//! and random frames that probe every corner of the datapath's parser.

pub mod build;
pub mod frame;
pub mod policy;

pub use frame::{ethertype_frame, hex, hex_compact, random_frame, simple_frame};
pub use policy::{
    GeneratedPolicy, LAB_SITES, describe, lab_sites, random_address, random_policy,
    shrink_candidates,
};
