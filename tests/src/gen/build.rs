//! Hand-written policies and expectations for the datapath tests, in a few words each.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt as _;

use enforcer::policy::{Action, Entry, Location, Platform, PortRange, Protocol};
use enforcer::reference::Decision;

/// Whether this process is root (BPF_PROG_TEST_RUN needs it); /proc/self belongs to the
/// effective user.
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Where a built policy claims to come from (explanations print it).
pub fn location() -> Location {
    Location {
        path: "built.yaml".into(),
        line: 1,
        column: 1,
    }
}

/// An entry of `prefixes` for `protocol` and `ports` (`(first, last)` ranges).
pub fn entry(prefixes: &[&str], protocol: Protocol, ports: &[(u16, u16)]) -> Entry {
    Entry {
        index: 0,
        domains: Vec::new(),
        prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
        protocol,
        ports: ports
            .iter()
            .map(|&(first, last)| PortRange { first, last })
            .collect(),
        enforce: enforcer::policy::Enforce::Both,
        location: location(),
    }
}

/// A platform of `entries`, numbered in order.
pub fn platform(name: &str, action: Action, mut entries: Vec<Entry>) -> Platform {
    for (i, entry) in entries.iter_mut().enumerate() {
        entry.index = i;
    }
    Platform {
        data_date: None,
        feed: None,
        action_by_site: Vec::new(),
        name: name.to_string(),
        id: 0,
        description: None,
        reference: None,
        action,
        entries,
        location: location(),
    }
}

pub fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The reference's decision for a packet that matched.
pub fn matched(platform: u16, action: u8, direction: u8, family: u8) -> Decision {
    Decision::Match {
        platform,
        action,
        direction,
        family,
        site: enforcer_common::SITE_NONE,
    }
}
