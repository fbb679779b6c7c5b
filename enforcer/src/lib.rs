//! The enforcer: policy, compiler, datapath loader and daemon.

// FFI and every other unsafe block live in `sys`.
#![deny(unsafe_code)]

pub mod bundle;
pub mod cli;
pub mod compile;
pub mod connections;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod error_chain;
pub mod feeds;
pub mod fsutil;
pub mod history;
pub mod learn;
pub mod logging;
pub mod metrics;
pub mod never_block;
pub mod platform_ids;
pub mod policy;
pub mod reference;
pub mod report;
pub mod resolve;
pub mod settings;
pub mod state_file;
#[allow(unsafe_code)]
pub mod sys;
