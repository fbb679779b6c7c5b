//! The shipped policy in `rules/`: it loads, it contains every platform we ship, no two
//! platforms claim overlapping address space, every file says where its data comes from, and
//! the real `enforcer check rules/` accepts it. No root needed.
//!
//! `cargo test -p tests --test rules` (the last test needs `cargo build -p enforcer` first, or
//! `ENFORCER_BIN`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use enforcer::policy::{
    self, Action, DomainPattern, Enforce, LoadOptions, MANAGED_FILE, Platform, Policy, Protocol,
};
use ipnet::IpNet;
use tests::lab::enforcer_binary;

/// Every platform we ship, each in `rules/<name>.yaml`. Adding or removing a file means
/// updating this list (and rules/README.md).
const SHIPPED: &[&str] = &[
    "chime",
    "dns-escape",
    "encrypted-dns",
    "gotomeeting",
    "meet",
    "teams",
    "visio",
    "webex",
    "webrtc-stun",
    "whereby",
    "zoom",
];

/// Pairs of prefixes of two *different* platforms that may overlap, each with the reason.
/// Format: (platform, prefix, other platform, other prefix, why).
///
/// The vendors' dedicated ranges are disjoint. An entry belongs here only with a real reason
/// (an `allow` platform carving an exception out of a `drop` platform), never to silence a copy
/// mistake.
const ALLOWED_OVERLAPS: &[(&str, &str, &str, &str, &str)] = &[(
    "meet",
    "74.125.250.0/24",
    "webrtc-stun",
    "74.125.250.129/32",
    "Google's public STUN server inside Meet's media range: allowed, no media flows through it",
)];

/// Shared ranges no shipped prefix may touch (spot checks, not an exhaustive list), each
/// from vendor data read when the policy was written (see rules/README.md).
const SHARED_RANGES: &[(&str, &str)] = &[
    // AWS ip-ranges.json, service CLOUDFRONT. Zoom's ZoomMeetings-IPv6.txt lists
    // 2600:9000:2600::/48 inside it; it is deliberately left out of zoom.yaml.
    ("2600:9000:1000::/36", "AWS CloudFront"),
    ("2600:9000:2000::/36", "AWS CloudFront"),
    ("2600:9000:3000::/36", "AWS CloudFront"),
    ("2600:9000:4000::/36", "AWS CloudFront"),
    // Microsoft 365 endpoints (worldwide): sign-in, Exchange, SharePoint, "Common".
    ("20.190.128.0/18", "Microsoft 365 sign-in (Common)"),
    ("40.126.0.0/18", "Microsoft 365 sign-in (Common)"),
    ("52.108.0.0/14", "Microsoft 365 Common"),
    ("52.96.0.0/14", "Exchange Online"),
    ("40.96.0.0/13", "Exchange Online"),
    ("13.107.128.0/22", "Exchange Online"),
    ("13.107.136.0/22", "SharePoint Online"),
    ("52.104.0.0/14", "SharePoint Online"),
];

/// Names that are shared front ends or CDNs: no domain enforced by address may be one of them
/// or below one (a platform's own name below them would still resolve to shared addresses);
/// such a name may only be blocked by name.
const SHARED_SUFFIXES: &[&str] = &[
    "cloudfront.net",
    "akamaiedge.net",
    "akamai.net",
    "akamaitechnologies.com",
    "edgekey.net",
    "edgesuite.net",
    "azureedge.net",
    "azurefd.net",
    "msedge.net",
    "trafficmanager.net",
    "fastly.net",
    "cloudflare.net",
    "amazonaws.com",
    "google.com",
    "googleapis.com",
    "gstatic.com",
    "googleusercontent.com",
    "googlevideo.com",
];

/// Company-wide wildcards that reach far beyond a video service.
const TOO_BROAD: &[&str] = &[
    "*.cisco.com",
    "*.microsoft.com",
    "*.office.com",
    "*.office.net",
    "*.amazon.com",
];

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .join("rules")
}

/// The `*.yaml` rule files we ship (the daemon's managed file, if an operator created one in
/// a checkout, is not part of the shipped policy).
fn rule_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(rules_dir())
        .expect("rules/ is readable")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != MANAGED_FILE))
        .collect();
    files.sort();
    files
}

fn load(paths: &[PathBuf]) -> Policy {
    // The built-in list: the shipped rules must load on any gateway.
    let options = LoadOptions::default();
    match policy::load_policy(paths, &options) {
        Ok(policy) => policy,
        Err(err) => panic!("the shipped policy {paths:?} does not load:\n{err}"),
    }
}

fn prefixes(platform: &Platform) -> impl Iterator<Item = &IpNet> {
    platform.entries.iter().flat_map(|e| e.prefixes.iter())
}

#[test]
fn whole_directory_loads_and_ships_every_platform() {
    let policy = load(&[rules_dir()]);
    let names: BTreeSet<&str> = policy.platforms.iter().map(|p| p.name.as_str()).collect();
    let expected: BTreeSet<&str> = SHIPPED.iter().copied().collect();
    assert_eq!(names, expected, "platforms in rules/ differ from SHIPPED");

    for name in SHIPPED {
        let file = rules_dir().join(format!("{name}.yaml"));
        assert!(file.is_file(), "{} is missing", file.display());
        let alone = load(std::slice::from_ref(&file));
        let defined: Vec<&str> = alone.platforms.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            defined,
            [*name],
            "{} must define exactly platform `{name}`",
            file.display()
        );
    }
    assert_eq!(
        rule_files().len(),
        SHIPPED.len(),
        "rules/ holds a rule file that is not in SHIPPED: {:?}",
        rule_files()
    );

    for platform in &policy.platforms {
        assert!(
            !platform.entries.is_empty(),
            "`{}` has no entries",
            platform.name
        );
        assert!(
            platform
                .description
                .as_deref()
                .is_some_and(|d| !d.trim().is_empty()),
            "`{}` has no description",
            platform.name
        );
    }
}

#[test]
fn no_prefix_overlaps_another_platform() {
    let policy = load(&[rules_dir()]);
    let allowed = |a: &str, pa: &IpNet, b: &str, pb: &IpNet| {
        ALLOWED_OVERLAPS.iter().any(|&(x, px, y, py, _why)| {
            let (px, py): (IpNet, IpNet) = (px.parse().unwrap(), py.parse().unwrap());
            (x == a && px == *pa && y == b && py == *pb)
                || (x == b && px == *pb && y == a && py == *pa)
        })
    };
    let mut clashes = Vec::new();
    for (i, a) in policy.platforms.iter().enumerate() {
        for b in &policy.platforms[i + 1..] {
            for pa in prefixes(a) {
                for pb in prefixes(b) {
                    if (pa.contains(pb) || pb.contains(pa)) && !allowed(&a.name, pa, &b.name, pb) {
                        clashes.push(format!("{} {pa} <-> {} {pb}", a.name, b.name));
                    }
                }
            }
        }
    }
    assert!(
        clashes.is_empty(),
        "prefixes of different platforms overlap (add to ALLOWED_OVERLAPS only with a real \
         reason):\n{}",
        clashes.join("\n")
    );
}

#[test]
fn every_file_names_its_https_source_and_date() {
    let files = rule_files();
    assert!(
        !files.is_empty(),
        "no rule files in {}",
        rules_dir().display()
    );
    for file in &files {
        let policy = load(std::slice::from_ref(file));
        for platform in &policy.platforms {
            let reference = platform.reference.as_deref().unwrap_or_default();
            assert!(
                reference.starts_with("https://") && reference.len() > "https://".len(),
                "{}: platform `{}` needs `reference: https://...`, found {reference:?}",
                file.display(),
                platform.name
            );
        }

        // The header comment says where the data came from and when.
        let text = std::fs::read_to_string(file).expect("rule file is readable");
        let header: Vec<&str> = text.lines().take_while(|l| l.starts_with('#')).collect();
        assert!(
            !header.is_empty(),
            "{}: must start with a comment naming the source URL and the data's date",
            file.display()
        );
        let header = header.join("\n");
        assert!(
            header.contains("https://"),
            "{}: the header comment names no https:// source",
            file.display()
        );
        assert!(
            contains_iso_date(&header),
            "{}: the header comment gives no YYYY-MM-DD date for the data",
            file.display()
        );
    }
}

#[test]
fn no_shared_range_or_shared_name_is_blocked() {
    let policy = load(&[rules_dir()]);
    let mut problems = Vec::new();
    for platform in &policy.platforms {
        for prefix in prefixes(platform) {
            for (shared, what) in SHARED_RANGES {
                let shared: IpNet = shared.parse().unwrap();
                if prefix.contains(&shared) || shared.contains(prefix) {
                    problems.push(format!(
                        "{}: {prefix} overlaps {what} {shared}",
                        platform.name
                    ));
                }
            }
        }
        for entry in &platform.entries {
            for domain in &entry.domains {
                if entry.enforce == Enforce::Name {
                    // Never resolved or learned: no address of a shared front end is blocked.
                    continue;
                }
                let name = match domain {
                    DomainPattern::Exact(n) | DomainPattern::Wildcard(n) => n.as_str(),
                };
                for suffix in SHARED_SUFFIXES {
                    if name == *suffix || name.ends_with(&format!(".{suffix}")) {
                        problems.push(format!(
                            "{}: {domain} is a shared front end/CDN name ({suffix})",
                            platform.name
                        ));
                    }
                }
                if TOO_BROAD.contains(&domain.to_string().as_str()) {
                    problems.push(format!(
                        "{}: {domain} covers far more than a video service",
                        platform.name
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The web names that address blocking cannot take without collateral, and the switches that
/// turn encrypted DNS and relays off, are blocked by name only; the public encrypted-DNS
/// services are counted on their encrypted ports and never blocked.
#[test]
fn names_on_shared_front_ends_and_escape_switches_go_by_name_only() {
    let policy = load(&[rules_dir()]);
    let platform = |name: &str| {
        policy
            .platforms
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no platform {name}"))
    };
    let enforce_of = |platform: &Platform, name: &str| {
        let pattern = policy::parse_domain(name).unwrap();
        let found: Vec<Enforce> = platform
            .entries
            .iter()
            .filter(|e| e.domains.contains(&pattern))
            .map(|e| e.enforce)
            .collect();
        assert_eq!(found.len(), 1, "{}: {name} listed {found:?}", platform.name);
        found[0]
    };
    for (p, name) in [
        ("meet", "meet.google.com"),
        ("teams", "teams.microsoft.com"),
        ("teams", "teams.live.com"),
        ("dns-escape", "use-application-dns.net"),
        ("dns-escape", "mask.icloud.com"),
        ("dns-escape", "mask-h2.icloud.com"),
    ] {
        assert_eq!(enforce_of(platform(p), name), Enforce::Name, "{p}: {name}");
        assert_eq!(platform(p).action, Action::Drop, "{p}");
    }
    // Names that are the platform's own, on its own addresses: both ways.
    for (p, name) in [("meet", "meet.turns.goog"), ("zoom", "*.zoom.us")] {
        assert_eq!(enforce_of(platform(p), name), Enforce::Both, "{p}: {name}");
    }

    let dns = platform("encrypted-dns");
    assert_eq!(dns.action, Action::Monitor);
    let mut counted = BTreeSet::new();
    for entry in &dns.entries {
        assert!(entry.domains.is_empty());
        let ports: Vec<(u16, u16)> = entry.ports.iter().map(|r| (r.first, r.last)).collect();
        assert_eq!(ports, [(443, 443), (853, 853)], "entry {}", entry.index);
        for prefix in &entry.prefixes {
            counted.insert((entry.protocol, prefix.to_string()));
        }
    }
    for address in [
        "1.1.1.1/32",
        "1.0.0.1/32",
        "2606:4700:4700::1111/128",
        "2606:4700:4700::1001/128",
        "8.8.8.8/32",
        "8.8.4.4/32",
        "2001:4860:4860::8888/128",
        "2001:4860:4860::8844/128",
        "9.9.9.9/32",
        "149.112.112.112/32",
        "2620:fe::fe/128",
        "2620:fe::9/128",
    ] {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            assert!(
                counted.contains(&(protocol, address.to_owned())),
                "{address} over {protocol:?}"
            );
        }
    }
    assert_eq!(counted.len(), 24, "only the published host addresses");
}

#[test]
fn enforcer_check_accepts_the_shipped_rules() {
    let binary = enforcer_binary().expect("the enforcer binary");
    let output = Command::new(&binary)
        .arg("check")
        .arg(rules_dir())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));
    assert!(
        output.status.success(),
        "`enforcer check rules/` exited with {}:\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "`enforcer check` must exit 0 on a valid policy"
    );
}

/// Whether `text` contains a date written as `YYYY-MM-DD` (4-2-2 digits).
fn contains_iso_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.windows(10).any(|w| {
        w.iter().enumerate().all(|(i, &b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        })
    })
}

/// `check --config` holds every `action-by-site` to the config's sites, and reports a bad site
/// list where it was written, as the daemon would refuse them.
#[test]
fn enforcer_check_holds_sites_to_the_config() {
    let binary = enforcer_binary().expect("the enforcer binary");
    let dir = std::env::temp_dir().join(format!("enforcer-check-sites-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(
        dir.join("rules/teams.yaml"),
        "platform: teams\naction: monitor\naction-by-site: {finance: drop, health: drop}\nmatch:\n  - prefixes: [52.112.0.0/14]\n",
    )
    .unwrap();
    let check = |config: &str| {
        std::fs::write(dir.join("config.yaml"), config).unwrap();
        Command::new(&binary)
            .arg("check")
            .arg(dir.join("rules"))
            .arg("--config")
            .arg(dir.join("config.yaml"))
            .output()
            .unwrap()
    };
    let good =
        check("sites:\n  finance: [10.1.0.0/16]\n  health: [10.2.0.0/16, \"fd00:2::/48\"]\n");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let missing = check("sites:\n  finance: [10.1.0.0/16]\n");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("teams.yaml:3:33: unknown site `health` (configured sites: finance)"),
        "{stderr}"
    );
    let overlapping = check("sites:\n  finance: [10.1.0.0/16]\n  health: [10.1.2.0/24]\n");
    let stderr = String::from_utf8_lossy(&overlapping.stderr);
    assert_eq!(overlapping.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("config.yaml:3:12: sites: 10.1.2.0/24 of site `health` overlaps 10.1.0.0/16 of site `finance`"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The corrections of issue 18: Webex's 163.129.0.0/17 (its list of 2026-03-16, not the older
/// /16), Chime only monitored (its ranges now carry other products), Google's public STUN
/// server and Visio allowed.
#[test]
fn corrected_vendor_data_is_shipped() {
    let policy = load(&rule_files());
    let platform = |name: &str| {
        policy
            .platforms
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} is not shipped"))
    };
    let webex: Vec<String> = prefixes(platform("webex"))
        .map(ToString::to_string)
        .collect();
    assert!(webex.contains(&"163.129.0.0/17".to_owned()), "{webex:?}");
    assert!(!webex.contains(&"163.129.0.0/16".to_owned()), "{webex:?}");
    assert_eq!(platform("chime").action, Action::Monitor);
    assert_eq!(platform("webrtc-stun").action, Action::Allow);
    let stun: Vec<String> = prefixes(platform("webrtc-stun"))
        .map(ToString::to_string)
        .collect();
    assert_eq!(stun, ["74.125.250.129/32"]);
    let visio = platform("visio");
    assert_eq!(visio.action, Action::Allow);
    // No shipped drop rule covers a Visio name.
    for name in [
        "visio.numerique.gouv.fr",
        "x.visio.numerique.gouv.fr",
        "visio.suite.anct.gouv.fr",
    ] {
        let verdict = enforcer::compile::name_verdict(&policy, name);
        assert_eq!(verdict.map(|v| v.action), Some(Action::Allow), "{name}");
    }
}

/// Zoom (IPv4), Teams (ID 11) and Chime (AWS CHIME_MEETINGS) follow their vendors' feeds: each names its feed and the date
/// of its data, and its feed-managed entry (the first `prefixes` entry without protocol or
/// ports) is the list the feed gives, not the hand-kept IPv6 or ID 12 entries.
#[test]
fn zoom_and_teams_follow_their_feeds() {
    use enforcer::policy::model::FeedKind;
    let policy = load(&rule_files());
    for (name, kind, first) in [
        ("zoom", FeedKind::ZoomTxt, "3.7.35.0/25"),
        ("teams", FeedKind::MicrosoftEndpoints, "52.112.0.0/14"),
        ("chime", FeedKind::AwsIpRanges, "99.77.128.0/18"),
    ] {
        let platform = policy.platforms.iter().find(|p| p.name == name).unwrap();
        let feed = platform
            .feed
            .as_ref()
            .unwrap_or_else(|| panic!("{name} has no feed"));
        assert_eq!(feed.kind, kind, "{name}");
        assert!(feed.url.starts_with("https://"), "{name}");
        assert!(platform.data_date.is_some(), "{name} has no data-date");
        let managed = platform
            .entries
            .iter()
            .find(|e| !e.prefixes.is_empty() && e.ports.is_empty() && e.protocol == Protocol::Any)
            .unwrap();
        assert_eq!(managed.prefixes[0].to_string(), first, "{name}");
    }
    // Zoom's feed-managed entry is IPv4 only: its IPv6 feed holds a CloudFront prefix.
    let zoom = policy.platforms.iter().find(|p| p.name == "zoom").unwrap();
    let managed = zoom
        .entries
        .iter()
        .find(|e| !e.prefixes.is_empty())
        .unwrap();
    assert!(managed.prefixes.iter().all(|p| matches!(p, IpNet::V4(_))));
}
