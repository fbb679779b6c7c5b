//! The enforcer: policy, compiler, datapath loader and daemon.

pub mod cli;
pub mod compile;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod fsutil;
pub mod learn;
pub mod logging;
pub mod metrics;
pub mod netif;
pub mod never_block;
pub mod platform_ids;
pub mod policy;
pub mod privileges;
pub mod reference;
pub mod resolve;
