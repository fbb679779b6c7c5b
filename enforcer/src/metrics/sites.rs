//! The per-site series: matched packets and bytes by the client's site, and each site's stage
//! (the action in force for it) per platform. Every (site, platform, action) of the policy exists
//! from start-up at 0, so a dashboard lists a site before its first packet.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use enforcer_common::{ACTION_NAMES, ACTIONS, Counter, SiteCounterKey};

use super::header;
use crate::daemon::State;
use crate::policy::OTHER_SITE;

/// One series key: site name, platform name, action code.
type SeriesKey = (String, String, u8);

pub fn render_sites(out: &mut String, state: &State, counters: &BTreeMap<SiteCounterKey, Counter>) {
    let policy = state.policy();
    let sites = state.sites();
    let platform_name = |id: u16| {
        (0..policy.platforms.len())
            .find(|&i| policy.platform_id(i) == id)
            .and_then(|i| policy.platforms.get(i))
            .map(|p| p.name.clone())
    };
    // The stage of every (site, platform) now: the action in force for that site's clients.
    let mut stage: BTreeMap<(String, String), u8> = BTreeMap::new();
    for platform in &policy.platforms {
        for site in sites.names() {
            let named = (site != OTHER_SITE).then_some(site);
            stage.insert(
                (site.to_owned(), platform.name.clone()),
                platform.action_for(named).code(),
            );
        }
    }
    // Every action of every pair from the start, at 0: a site moved to another action by a
    // reload then has its series before the first packet, so totals over a period are exact.
    let mut values: BTreeMap<SeriesKey, Counter> = stage
        .keys()
        .flat_map(|(site, platform)| {
            (0..u8::try_from(ACTIONS).unwrap_or(u8::MAX))
                .map(|action| ((site.clone(), platform.clone(), action), Counter::default()))
        })
        .collect();
    for (key, counter) in counters {
        let (Some(site), Some(platform)) = (state.site_name(key.site), platform_name(key.platform))
        else {
            continue;
        };
        let total = values.entry((site, platform, key.action)).or_default();
        total.packets += counter.packets;
        total.bytes += counter.bytes;
    }
    for (name, help, bytes) in [
        (
            "enforcer_site_packets_total",
            "Packets that matched a platform, by the client's site and verdict.",
            false,
        ),
        (
            "enforcer_site_bytes_total",
            "Bytes of packets that matched a platform, by the client's site and verdict.",
            true,
        ),
    ] {
        header(out, name, "counter", help);
        for ((site, platform, action), c) in &values {
            let value = if bytes { c.bytes } else { c.packets };
            let action = ACTION_NAMES
                .get(usize::from(*action))
                .copied()
                .unwrap_or("drop");
            let _ = writeln!(
                out,
                "{name}{{site=\"{site}\",platform=\"{platform}\",action=\"{action}\"}} {value}"
            );
        }
    }
    header(
        out,
        "enforcer_site_stage",
        "gauge",
        "1 for the action in force for a site's clients and a platform; 0 for one it had before.",
    );
    let shown: BTreeSet<(String, String, u8)> = values.keys().cloned().collect();
    for (site, platform, action) in shown {
        let now = stage.get(&(site.clone(), platform.clone())) == Some(&action);
        let name = ACTION_NAMES
            .get(usize::from(action))
            .copied()
            .unwrap_or("drop");
        let _ = writeln!(
            out,
            "enforcer_site_stage{{site=\"{site}\",platform=\"{platform}\",action=\"{name}\"}} {}",
            u8::from(now)
        );
    }
}
