//! The resolver, the address book and `enforcer resolve` against a real DNS server (dnsmasq on
//! loopback, one instance per test), plus stand-ins for what dnsmasq cannot do on demand
//! (SERVFAIL, a server that never answers).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use enforcer::never_block::{NeverBlock, Origin};
use enforcer::resolve::{
    AddressBook, BookSettings, Change, FailureKind, LookupResult, Mapping, NameResolution,
    RejectReason, ResolveMetrics, Resolver, ResolverConfig, ResultLabel, STATE_FILE, Use,
    apply_round,
};
use ipnet::IpNet;
use tests::dns::{Dnsmasq, RcodeServer, SilentServer, TempDir, Zone};
use tests::lab::enforcer_binary;

const S: Duration = Duration::from_secs(1);

fn config(servers: Vec<SocketAddr>) -> ResolverConfig {
    ResolverConfig {
        servers,
        timeout: Duration::from_millis(700),
        attempts: 1,
        ..ResolverConfig::default()
    }
}

fn settings(floor: u64, ceiling: u64, grace: u64) -> BookSettings {
    BookSettings {
        ttl_floor: Duration::from_secs(floor),
        ttl_ceiling: Duration::from_secs(ceiling),
        grace: Duration::from_secs(grace),
    }
}

fn book_with(settings: BookSettings, uses: &[(&str, usize, &str)]) -> AddressBook {
    let mut book = AddressBook::new(settings);
    book.set_uses(
        uses.iter().map(|(p, e, n)| {
            (
                Use {
                    platform: (*p).to_owned(),
                    entry: *e,
                },
                (*n).to_owned(),
            )
        }),
        SystemTime::now(),
    );
    book
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn mapping(platform: &str, entry: usize, address: &str) -> Mapping {
    Mapping {
        platform: platform.to_owned(),
        entry,
        address: ip(address),
    }
}

/// One daemon-style refresh round: resolve what is due, count, apply, expire.
async fn round(
    resolver: &Resolver,
    book: &mut AddressBook,
    metrics: &ResolveMetrics,
) -> (Vec<NameResolution>, Change) {
    let names = book.due_names(SystemTime::now());
    let results = resolver.resolve_many(&names).await;
    let change = apply_round(book, metrics, &results, SystemTime::now());
    (results, change)
}

fn count(metrics: &ResolveMetrics, platform: &str, label: ResultLabel) -> u64 {
    metrics
        .resolutions()
        .into_iter()
        .find(|(p, l, _)| p == platform && *l == label)
        .map_or(0, |(_, _, n)| n)
}

fn expect_ok(r: &NameResolution) -> &enforcer::resolve::Answer {
    match &r.outcome {
        LookupResult::Ok(a) => a,
        other => panic!("{}: expected an answer, got {other:?}", r.name),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_and_aaaa_with_ttl_clamped() {
    let dns = Dnsmasq::start(
        &Zone::new()
            .local("test")
            .host("both.test", &["198.18.10.1", "2001:db8:10::1"], Some(30))
            .host("short.test", &["198.18.10.2"], Some(1))
            .host("long.test", &["198.18.10.3"], Some(100_000))
            .host("v6only.test", &["2001:db8:10::4"], Some(30)),
    )
    .unwrap();
    let resolver = Resolver::new(&config(vec![dns.addr])).unwrap();

    let r = resolver.resolve("Both.Test.").await;
    assert_eq!(r.name, "both.test");
    let a = expect_ok(&r);
    assert_eq!(a.addresses, vec![ip("198.18.10.1"), ip("2001:db8:10::1")]);
    assert_eq!(a.ttl, Some(30));
    assert!(a.cname_chain.is_empty());
    assert!(a.ipv4 && a.ipv6);

    // NOERROR without A records is an answer with only the IPv6 address.
    let a = expect_ok(&resolver.resolve("v6only.test").await).clone();
    assert_eq!(a.addresses, vec![ip("2001:db8:10::4")]);

    let mut book = book_with(
        settings(5, 60, 10),
        &[
            ("video", 0, "both.test"),
            ("video", 0, "short.test"),
            ("video", 1, "long.test"),
        ],
    );
    let metrics = ResolveMetrics::new();
    let (results, change) = round(&resolver, &mut book, &metrics).await;
    assert_eq!(results.len(), 3);
    assert_eq!(change.added.len(), 4);
    let now = SystemTime::now();
    let ttl = |name: &str| {
        book.entries()
            .find(|e| e.name == name)
            .unwrap()
            .ttl_remaining(now)
    };
    let near = |d: Duration, secs: u64| {
        d <= Duration::from_secs(secs) && d + 2 * S >= Duration::from_secs(secs)
    };
    assert!(near(ttl("both.test"), 30), "{:?}", ttl("both.test"));
    assert!(near(ttl("short.test"), 5), "floor: {:?}", ttl("short.test"));
    assert!(
        near(ttl("long.test"), 60),
        "ceiling: {:?}",
        ttl("long.test")
    );
    // Refreshed at 80–90 % of the clamped TTL.
    let refresh = book
        .refresh_at("both.test")
        .unwrap()
        .duration_since(now)
        .unwrap_or_default();
    assert!(refresh >= 22 * S && refresh <= 27 * S, "{refresh:?}");
    assert_eq!(count(&metrics, "video", ResultLabel::Ok), 3);
    let counts = book.counts();
    assert_eq!((counts["video"].ipv4, counts["video"].ipv6), (3, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_adds_new_keeps_old_for_grace_then_removes() {
    let zone = |address: &str| {
        Zone::new()
            .local("test")
            .local_ttl(1)
            .hosts_file(format!("{address} moving.test\n"))
    };
    let dns = Dnsmasq::start(&zone("198.18.20.1")).unwrap();
    let resolver = Resolver::new(&config(vec![dns.addr])).unwrap();
    let metrics = ResolveMetrics::new();
    let mut book = book_with(settings(1, 1, 2), &[("video", 0, "moving.test")]);

    let (_, change) = round(&resolver, &mut book, &metrics).await;
    assert_eq!(change.added, vec![mapping("video", 0, "198.18.20.1")]);
    let due = book.next_due().unwrap();
    let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(wait <= S, "refresh due within the clamped TTL: {wait:?}");

    dns.rewrite_hosts("198.18.20.2 moving.test\n").unwrap();
    tokio::time::sleep(wait).await;
    let (results, change) = round(&resolver, &mut book, &metrics).await;
    assert_eq!(results.len(), 1, "the name was due");
    let dropped_at = SystemTime::now();
    assert_eq!(change.added, vec![mapping("video", 0, "198.18.20.2")]);
    assert!(change.removed.is_empty(), "grace keeps the old address");
    assert_eq!(
        book.mappings(),
        BTreeSet::from([
            mapping("video", 0, "198.18.20.1"),
            mapping("video", 0, "198.18.20.2")
        ])
    );
    let old = book
        .entries()
        .find(|e| e.address == ip("198.18.20.1"))
        .unwrap();
    assert!(old.remove_at.is_some());

    // Keep refreshing like the daemon until the old address goes.
    let deadline = Instant::now() + 10 * S;
    let removed_at = loop {
        assert!(Instant::now() < deadline, "old address never removed");
        let next = book.next_due().unwrap();
        tokio::time::sleep(next.duration_since(SystemTime::now()).unwrap_or_default()).await;
        let (_, change) = round(&resolver, &mut book, &metrics).await;
        assert!(change.added.is_empty());
        if !change.removed.is_empty() {
            assert_eq!(change.removed, vec![mapping("video", 0, "198.18.20.1")]);
            break SystemTime::now();
        }
    };
    let held = removed_at.duration_since(dropped_at).unwrap();
    assert!(
        held >= Duration::from_millis(1_900) && held <= 8 * S,
        "grace held {held:?}"
    );
    assert_eq!(
        book.mappings(),
        BTreeSet::from([mapping("video", 0, "198.18.20.2")])
    );
    eprintln!(
        "refresh: {} rounds ok, old address held {:?} after it left DNS",
        count(&metrics, "video", ResultLabel::Ok),
        held
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_chain_recorded() {
    let dns = Dnsmasq::start(
        &Zone::new()
            .local("test")
            .host("target.test", &["198.18.30.1", "2001:db8:30::1"], Some(600))
            .cname("mid.test", "target.test", Some(120))
            .cname("alias.test", "mid.test", Some(300)),
    )
    .unwrap();
    let resolver = Resolver::new(&config(vec![dns.addr])).unwrap();
    let r = resolver.resolve("alias.test").await;
    let a = expect_ok(&r);
    assert_eq!(a.cname_chain, vec!["mid.test", "target.test"]);
    assert_eq!(a.addresses, vec![ip("198.18.30.1"), ip("2001:db8:30::1")]);
    assert_eq!(a.ttl, Some(120), "the smallest TTL along the chain");

    let mut book = book_with(settings(60, 3600, 60), &[("video", 0, "alias.test")]);
    book.apply(&r, SystemTime::now());
    let entries: Vec<_> = book.entries().collect();
    assert_eq!(entries.len(), 2);
    for e in entries {
        assert_eq!(e.name, "alias.test");
        assert_eq!(e.cname_chain, ["mid.test", "target.test"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_into_shared_suffix_refused() {
    let dns = Dnsmasq::start(
        &Zone::new()
            .local("test")
            .local("cloudfront.net")
            .local("cdn.example")
            .host("d1a2b3c4.cloudfront.net", &["198.18.31.1"], None)
            .cname("video.test", "d1a2b3c4.cloudfront.net", None)
            .host("e.cdn.example", &["198.18.31.2"], None)
            .cname("v2.test", "e.cdn.example", None)
            .host("own.test", &["198.18.31.3"], None),
    )
    .unwrap();
    let mut cfg = config(vec![dns.addr]);
    cfg.shared_suffixes = vec!["CDN.Example.".to_owned()];
    let resolver = Resolver::new(&cfg).unwrap();
    let metrics = ResolveMetrics::new();
    let mut book = book_with(
        settings(60, 3600, 60),
        &[
            ("video", 0, "video.test"),
            ("video", 0, "v2.test"),
            ("video", 1, "own.test"),
        ],
    );
    let (results, change) = round(&resolver, &mut book, &metrics).await;
    for r in &results {
        match (r.name.as_str(), &r.outcome) {
            ("video.test", LookupResult::Rejected(rej)) => {
                assert_eq!(rej.reason, RejectReason::Shared);
                assert_eq!(rej.offending, "d1a2b3c4.cloudfront.net");
                assert!(
                    rej.detail.contains("video.test → d1a2b3c4.cloudfront.net"),
                    "{}",
                    rej.detail
                );
                assert!(rej.detail.contains("cloudfront.net"));
            }
            ("v2.test", LookupResult::Rejected(rej)) => {
                assert_eq!(rej.reason, RejectReason::Shared);
                assert_eq!(rej.offending, "e.cdn.example");
            }
            ("own.test", LookupResult::Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(change.added, vec![mapping("video", 1, "198.18.31.3")]);
    assert_eq!(metrics.rejected(RejectReason::Shared), 2);
    assert_eq!(count(&metrics, "video", ResultLabel::Ok), 3);
}

/// Every poisoned answer is refused, counted under its reason, and leaves the set as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_answers_refused_and_counted() {
    let names = [
        "lo.test",
        "lo6.test",
        "ten.test",
        "home.test",
        "cidr.test",
        "mixed.test",
        "many.test",
    ];
    let mut clean = Zone::new().local("test");
    for (i, name) in names.iter().enumerate() {
        clean = clean.host(name, &[&format!("198.18.40.{}", i + 1)], None);
    }
    let many: String = (0..2_000)
        .map(|i| format!("198.19.{}.{} many.test\n", i / 250, i % 250 + 1))
        .collect();
    let poisoned = Zone::new()
        .local("test")
        .host("lo.test", &["127.0.0.1"], None)
        .host("lo6.test", &["::1"], None)
        .host("ten.test", &["10.1.2.3"], None)
        .host("home.test", &["192.168.1.1"], None)
        .host("cidr.test", &["198.18.41.7"], None)
        .hosts_file("198.18.42.1 mixed.test\n127.0.0.1 mixed.test\n".to_owned())
        .hosts_file(many);

    let mut dns = Dnsmasq::start(&clean).unwrap();
    let mut cfg = config(vec![dns.addr]);
    cfg.never_block =
        NeverBlock::builtin().with([("198.18.41.0/24".parse().unwrap(), Origin::Configured)]);
    cfg.max_addresses_per_name = 64;
    let resolver = Resolver::new(&cfg).unwrap();
    let metrics = ResolveMetrics::new();
    let uses: Vec<(&str, usize, &str)> = names.iter().map(|n| ("video", 0, *n)).collect();
    let mut book = book_with(settings(60, 3600, 0), &uses);

    let (_, change) = round(&resolver, &mut book, &metrics).await;
    assert_eq!(change.added.len(), names.len());
    let before = book.mappings();

    dns.restart(&poisoned).unwrap();
    book.refresh_all(SystemTime::now());
    let (results, change) = round(&resolver, &mut book, &metrics).await;
    assert!(
        change.is_empty(),
        "a refused answer changes nothing: {change:?}"
    );
    assert_eq!(book.mappings(), before);
    for r in &results {
        let LookupResult::Rejected(rej) = &r.outcome else {
            panic!("{} was not refused: {:?}", r.name, r.outcome);
        };
        let (reason, offending) = match r.name.as_str() {
            "lo.test" => (RejectReason::NeverBlock, "127.0.0.1"),
            "lo6.test" => (RejectReason::NeverBlock, "::1"),
            "ten.test" => (RejectReason::NeverBlock, "10.1.2.3"),
            "home.test" => (RejectReason::NeverBlock, "192.168.1.1"),
            "cidr.test" => (RejectReason::NeverBlock, "198.18.41.7"),
            "mixed.test" => (RejectReason::NeverBlock, "127.0.0.1"),
            "many.test" => (RejectReason::TooMany, "2000"),
            other => panic!("unexpected {other}"),
        };
        assert_eq!(
            (rej.reason, rej.offending.as_str()),
            (reason, offending),
            "{}",
            r.name
        );
        assert!(rej.detail.contains(&r.name), "{}", rej.detail);
    }
    assert_eq!(metrics.rejected(RejectReason::NeverBlock), 6);
    assert_eq!(metrics.rejected(RejectReason::TooMany), 1);
    assert_eq!(metrics.rejected(RejectReason::Shared), 0);
    // Still refused on the next refresh, still counted, still nothing changes.
    book.refresh_all(SystemTime::now());
    let (_, change) = round(&resolver, &mut book, &metrics).await;
    assert!(change.is_empty());
    assert_eq!(metrics.rejected(RejectReason::NeverBlock), 12);
    assert!(book.expire(SystemTime::now() + 100_000 * S).is_empty());
    assert_eq!(book.mappings(), before);
}

/// The resolver's own address is never blocked, even with an otherwise empty never-block list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resolvers_own_address_is_refused() {
    let dns = Dnsmasq::start(
        &Zone::new()
            .local("test")
            .host("self.test", &["127.0.0.1"], None)
            .host("other.test", &["127.0.0.2"], None),
    )
    .unwrap();
    let mut cfg = config(vec![dns.addr]);
    cfg.never_block = NeverBlock::from_ranges([]);
    let resolver = Resolver::new(&cfg).unwrap();
    let range = resolver
        .guard()
        .never_block()
        .find("127.0.0.1".parse().unwrap());
    assert_eq!(range.map(|r| r.origin), Some(Origin::Resolver));
    assert_eq!(
        range.map(|r| r.net),
        Some("127.0.0.1/32".parse::<IpNet>().unwrap())
    );
    match resolver.resolve("self.test").await.outcome {
        LookupResult::Rejected(rej) => {
            assert_eq!(rej.reason, RejectReason::NeverBlock);
            assert!(rej.detail.contains("127.0.0.1/32"), "{}", rej.detail);
        }
        other => panic!("{other:?}"),
    }
    // Only the resolver's own address: its neighbour passes with this (deliberately empty) list.
    expect_ok(&resolver.resolve("other.test").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_counted_per_platform_and_book_kept() {
    let mut dns = Dnsmasq::start(&Zone::new().local("test").host(
        "shared.test",
        &["198.18.50.1", "2001:db8:50::1"],
        None,
    ))
    .unwrap();
    let resolver = Resolver::new(&config(vec![dns.addr])).unwrap();
    let metrics = ResolveMetrics::new();
    metrics.register_platforms(["alpha", "beta", "idle"]);
    let mut book = book_with(
        settings(60, 3600, 0),
        &[("alpha", 0, "shared.test"), ("beta", 2, "shared.test")],
    );
    let (_, change) = round(&resolver, &mut book, &metrics).await;
    assert_eq!(change.added.len(), 4);
    let before = book.mappings();
    assert_eq!(count(&metrics, "alpha", ResultLabel::Ok), 1);
    assert_eq!(count(&metrics, "beta", ResultLabel::Ok), 1);

    // NXDOMAIN: the name is gone from DNS.
    dns.restart(
        &Zone::new()
            .local("test")
            .host("else.test", &["198.18.50.9"], None),
    )
    .unwrap();
    book.refresh_all(SystemTime::now());
    let (results, change) = round(&resolver, &mut book, &metrics).await;
    match &results[0].outcome {
        LookupResult::Failed(f) => assert_eq!(f.kind, FailureKind::NxDomain, "{}", f.detail),
        other => panic!("{other:?}"),
    }
    assert!(change.is_empty());
    assert_eq!(count(&metrics, "alpha", ResultLabel::NxDomain), 1);
    assert_eq!(count(&metrics, "beta", ResultLabel::NxDomain), 1);

    // REFUSED (dnsmasq has no upstream for names outside its zones): an error.
    match resolver.resolve("outside.example").await.outcome {
        LookupResult::Failed(f) => {
            assert_eq!(f.kind, FailureKind::Error);
            assert!(f.detail.contains("REFUSED"), "{}", f.detail);
        }
        other => panic!("{other:?}"),
    }

    // SERVFAIL.
    let servfail = RcodeServer::start(2).unwrap();
    let failing = Resolver::new(&config(vec![servfail.addr])).unwrap();
    book.refresh_all(SystemTime::now());
    let (results, change) = round(&failing, &mut book, &metrics).await;
    match &results[0].outcome {
        LookupResult::Failed(f) => {
            assert_eq!(f.kind, FailureKind::Error);
            assert!(f.detail.contains("SERVFAIL"), "{}", f.detail);
        }
        other => panic!("{other:?}"),
    }
    assert!(change.is_empty());
    assert!(servfail.queries.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    assert_eq!(count(&metrics, "alpha", ResultLabel::Error), 1);
    assert_eq!(count(&metrics, "beta", ResultLabel::Error), 1);

    // Timeout: a server that never answers.
    let silent = SilentServer::start().unwrap();
    let mut cfg = config(vec![silent.addr]);
    cfg.timeout = Duration::from_millis(300);
    let dead = Resolver::new(&cfg).unwrap();
    book.refresh_all(SystemTime::now());
    let started = Instant::now();
    let (results, change) = round(&dead, &mut book, &metrics).await;
    let waited = started.elapsed();
    match &results[0].outcome {
        LookupResult::Failed(f) => assert_eq!(f.kind, FailureKind::Timeout, "{}", f.detail),
        other => panic!("{other:?}"),
    }
    assert!(waited < 10 * S, "timeout took {waited:?}");
    assert!(change.is_empty());
    assert_eq!(count(&metrics, "alpha", ResultLabel::Timeout), 1);
    assert_eq!(count(&metrics, "beta", ResultLabel::Timeout), 1);
    assert_eq!(count(&metrics, "idle", ResultLabel::Ok), 0);

    // Fail-static: the last good addresses are still there, long after every TTL.
    assert_eq!(book.mappings(), before);
    assert!(book.expire(SystemTime::now() + 100_000 * S).is_empty());
    // Retries are scheduled, not immediate.
    assert!(book.refresh_at("shared.test").unwrap() > SystemTime::now());
    let h = metrics.duration();
    assert_eq!(h.count, 4);
    eprintln!(
        "failures: timeout after {waited:?}; histogram sum {:.3}s over {} resolutions",
        h.sum_seconds, h.count
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_round_trip() {
    let dns = Dnsmasq::start(
        &Zone::new()
            .local("test")
            .local_ttl(300)
            .host("a.test", &["198.18.60.1", "2001:db8:60::1"], Some(120))
            .host("t.test", &["198.18.60.2"], None)
            .cname("c.test", "t.test", None)
            .hosts_file("198.18.60.3 m.test\n".into()),
    )
    .unwrap();
    let resolver = Resolver::new(&config(vec![dns.addr])).unwrap();
    let metrics = ResolveMetrics::new();
    let mut book = book_with(
        settings(60, 3600, 600),
        &[
            ("video", 0, "a.test"),
            ("video", 1, "c.test"),
            ("meet", 0, "m.test"),
        ],
    );
    round(&resolver, &mut book, &metrics).await;
    // One address in its grace period, so every field is exercised.
    dns.rewrite_hosts("198.18.60.4 m.test\n").unwrap();
    book.refresh_all(SystemTime::now());
    round(&resolver, &mut book, &metrics).await;
    assert!(book.entries().any(|e| e.remove_at.is_some()));

    let dir = TempDir::new("state").unwrap();
    let state_dir = dir.path().join("var-lib-enforcer");
    book.save(&state_dir).unwrap();
    let files: Vec<String> = std::fs::read_dir(&state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, vec![STATE_FILE.to_owned()], "no temporary file left");

    let loaded = AddressBook::load(&state_dir, book.settings()).unwrap();
    assert_eq!(loaded, book);
    assert_eq!(loaded.next_due(), book.next_due());
    assert_eq!(
        loaded.entries().collect::<Vec<_>>(),
        book.entries().collect::<Vec<_>>()
    );
    let chain = loaded
        .entries()
        .find(|e| e.name == "c.test")
        .unwrap()
        .cname_chain
        .to_vec();
    assert_eq!(chain, vec!["t.test"]);

    // Readers never see a partial file while writers keep replacing it.
    let writers: Vec<_> = (0..3)
        .map(|_| {
            let book = book.clone();
            let dir = state_dir.clone();
            std::thread::spawn(move || {
                for _ in 0..30 {
                    book.save(&dir).unwrap();
                }
            })
        })
        .collect();
    let mut reads = 0;
    while writers.iter().any(|w| !w.is_finished()) {
        AddressBook::load(&state_dir, book.settings()).unwrap();
        reads += 1;
    }
    for w in writers {
        w.join().unwrap();
    }
    assert!(reads > 0);
    let left: Vec<_> = std::fs::read_dir(&state_dir).unwrap().collect();
    assert_eq!(left.len(), 1);

    // Corrupt: an error naming the file.
    std::fs::write(
        state_dir.join(STATE_FILE),
        b"{\"version\": 1, \"names\": [tru",
    )
    .unwrap();
    let err = AddressBook::load(&state_dir, book.settings()).unwrap_err();
    assert!(
        err.to_string()
            .contains(&state_dir.join(STATE_FILE).display().to_string()),
        "{err}"
    );
    // Missing: empty.
    assert!(
        AddressBook::load(&dir.path().join("nothing"), book.settings())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn enforcer_resolve_json_shape() {
    let dns = Dnsmasq::start(
        &Zone::new()
            .local("test")
            .host("both.test", &["198.18.70.1", "2001:db8:70::1"], Some(300))
            .host("target.test", &["198.18.70.2"], Some(300))
            .cname("alias.test", "target.test", Some(300))
            .host("poison.test", &["127.0.0.1"], None),
    )
    .unwrap();
    let rules = TempDir::new("rules").unwrap();
    std::fs::write(
        rules.path().join("video.yaml"),
        "platform: video\naction: drop\nmatch:\n  - domains: [both.test, alias.test, \"*.wild.test\", gone.test]\n    enforce: address\n  - prefixes: [198.19.0.0/16, \"2001:db8:ff::/48\"]\n",
    )
    .unwrap();
    std::fs::write(
        rules.path().join("meet.yaml"),
        "platform: meet\naction: monitor\nmatch:\n  - domains: [poison.test]\n",
    )
    .unwrap();

    let output = Command::new(enforcer_binary().unwrap())
        .arg("resolve")
        .arg("--rules")
        .arg(rules.path())
        .arg("--resolver")
        .arg(dns.addr.to_string())
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}: {stderr}",
        output.status
    );
    assert!(
        stderr.contains("refused (never_block) poison.test"),
        "{stderr}"
    );
    assert!(stderr.contains("failed (nxdomain) gone.test"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    let top: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(top, ["platforms"]);
    let platforms = json["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 2);
    assert_eq!(platforms[0]["platform"], "meet");
    assert_eq!(platforms[0]["action"], "monitor");
    assert_eq!(platforms[0]["addresses"], serde_json::json!([]));
    let video = &platforms[1];
    assert_eq!(video["platform"], "video");
    assert_eq!(video["action"], "drop");
    let mut keys: Vec<&String> = video.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["action", "addresses", "platform"]);
    let addresses = video["addresses"].as_array().unwrap();
    for a in addresses {
        let mut keys: Vec<&String> = a.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["cname_chain", "name", "prefix", "source", "ttl_remaining"]
        );
    }
    let find = |prefix: &str| {
        addresses
            .iter()
            .find(|a| a["prefix"] == prefix)
            .unwrap_or_else(|| panic!("{prefix} missing in {addresses:?}"))
    };
    let published = find("198.19.0.0/16");
    assert_eq!(published["source"], "published");
    assert!(published["name"].is_null());
    assert!(published["ttl_remaining"].is_null());
    assert_eq!(published["cname_chain"], serde_json::json!([]));
    assert_eq!(find("2001:db8:ff::/48")["source"], "published");

    let v4 = find("198.18.70.1/32");
    assert_eq!(v4["source"], "dns");
    assert_eq!(v4["name"], "both.test");
    assert_eq!(v4["cname_chain"], serde_json::json!([]));
    let ttl = v4["ttl_remaining"].as_u64().unwrap();
    assert!((290..=300).contains(&ttl), "{ttl}");
    assert_eq!(find("2001:db8:70::1/128")["name"], "both.test");
    let via = find("198.18.70.2/32");
    assert_eq!(via["name"], "alias.test");
    assert_eq!(via["cname_chain"], serde_json::json!(["target.test"]));
    assert_eq!(addresses.len(), 5);

    // Text output lists the wildcard as learned at run time.
    let text = Command::new(enforcer_binary().unwrap())
        .args(["resolve", "--rules"])
        .arg(rules.path())
        .args(["--resolver", &dns.addr.to_string()])
        .output()
        .unwrap();
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("*.wild.test"), "{text}");
    assert!(text.contains("alias.test → target.test"), "{text}");

    // A broken policy: exit 1 with the error.
    std::fs::write(rules.path().join("bad.yaml"), "platform: bad\nmatch: []\n").unwrap();
    let bad = Command::new(enforcer_binary().unwrap())
        .args(["resolve", "--rules"])
        .arg(rules.path())
        .args(["--resolver", &dns.addr.to_string(), "--json"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad.yaml"));
}

/// 1,000 names at once against dnsmasq; prints the time (the bound is only a sanity check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_names_concurrently() {
    let hosts: String = (0..1_000)
        .map(|i| {
            format!(
                "198.18.{}.{} n{i:04}.bulk.test\n",
                100 + i / 250,
                i % 250 + 1
            )
        })
        .collect();
    let dns = Dnsmasq::start(&Zone::new().local("test").hosts_file(hosts)).unwrap();
    let resolver = Resolver::new(&config(vec![dns.addr])).unwrap();
    let names: Vec<String> = (0..1_000).map(|i| format!("n{i:04}.bulk.test")).collect();
    let started = Instant::now();
    let results = resolver.resolve_many(&names).await;
    let elapsed = started.elapsed();
    assert_eq!(results.len(), 1_000);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.name, names[i], "results come in input order");
        let a = expect_ok(r);
        assert_eq!(a.addresses.len(), 1, "{}", r.name);
    }
    let slowest = results.iter().map(|r| r.elapsed).max().unwrap_or_default();
    eprintln!(
        "resolved 1000 names (2000 queries) in {elapsed:?}: {:.0} names/s, slowest name {slowest:?}",
        1_000.0 / elapsed.as_secs_f64()
    );
    assert!(elapsed < 120 * S, "{elapsed:?}");
}
