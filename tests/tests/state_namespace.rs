//! Restarts never undo enforcement, through the real binary: an address learned from a DNS
//! answer an instant before the daemon is killed (long before the learned set is next written)
//! is still blocked by the daemon that starts after it, and so is one whose state file was
//! damaged meanwhile; a resolved address stays blocked while DNS is down even when
//! `addresses.json` was cut short. Needs root, dnsmasq and a built daemon.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use tests::dns::{Dnsmasq, Zone, client_lookup};
use tests::lab::{Connect, INTERNET_V4, Lab, SERVER_V4, Side};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The client asks the server for `name` (A) and returns the first address.
fn lookup(lab: &Lab, name: &str) -> Option<Ipv4Addr> {
    match client_lookup(lab, SERVER_V4.into(), name, RecordType::A) {
        Some(IpAddr::V4(a)) => Some(a),
        _ => None,
    }
}

#[test]
fn an_address_learned_just_before_sigkill_stays_blocked_after_the_restart() {
    let mut lab = Lab::new().unwrap();
    let [learned, _, _, _, _] = INTERNET_V4;
    let target = SocketAddr::new(IpAddr::V4(learned), 443);
    let _server = lab.start_server(&[], &[target]).unwrap();
    let zone = Zone::new()
        .local("example")
        .local_ttl(300)
        .hosts_file(format!("{learned} k1.media.example\n"));
    let _dns = Dnsmasq::on_lab_server(&lab, &zone).unwrap();
    let rules = lab
        .write_policy(&[(
            "media.yaml",
            "platform: media\nmatch:\n  - domains: [\"*.media.example\"]\n    enforce: address\n",
        )])
        .unwrap();
    // The lab's dnsmasq is not the daemon's resolver: learn from it all the same.
    lab.add_daemon_args(&["--learn-from", &SERVER_V4.to_string()]);
    lab.start_daemon(&rules).unwrap();
    assert_eq!(
        lab.tcp_connect(target, CONNECT_TIMEOUT).unwrap(),
        Connect::Connected
    );
    assert_eq!(lookup(&lab, "k1.media.example"), Some(learned));
    assert_eq!(
        lab.tcp_connect(target, CONNECT_TIMEOUT).unwrap(),
        Connect::TimedOut,
        "learned"
    );
    // Within a second of the answer: the learned set is written at most every 5 s.
    lab.kill_daemon().unwrap();
    lab.start_daemon(&rules).unwrap();
    assert_eq!(
        lab.tcp_connect(target, CONNECT_TIMEOUT).unwrap(),
        Connect::TimedOut,
        "after a restart that adopted the pinned maps; log:\n{}",
        lab.daemon_log()
    );

    // A damaged learned.json (here: garbage) does not unblock it either.
    lab.stop_daemon().unwrap();
    std::fs::write(lab.state_dir().join("learned.json"), b"\0\0garbage").unwrap();
    lab.start_daemon(&rules).unwrap();
    assert_eq!(
        lab.tcp_connect(target, CONNECT_TIMEOUT).unwrap(),
        Connect::TimedOut,
        "after a restart with a damaged learned.json; log:\n{}",
        lab.daemon_log()
    );
    lab.stop_daemon().unwrap();
}

#[test]
fn a_truncated_addresses_json_does_not_unblock_while_dns_is_down() {
    let mut lab = Lab::new().unwrap();
    let resolved = INTERNET_V4[1];
    let target = SocketAddr::new(IpAddr::V4(resolved), 443);
    let _server = lab.start_server(&[], &[target]).unwrap();
    let zone = Zone::new().local("banned.example").host(
        "media.banned.example",
        &[&resolved.to_string()],
        Some(300),
    );
    // On the gateway's loopback, where the daemon resolves.
    let dns = Dnsmasq::start_in(
        &lab.netns_path(Side::Gateway),
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        None,
        &zone,
    )
    .unwrap();
    let rules = lab
        .write_policy(&[(
            "dnsban.yaml",
            "platform: dnsban\nmatch:\n  - domains: [media.banned.example]\n    enforce: address\n",
        )])
        .unwrap();
    lab.add_daemon_args(&["--resolver", &dns.addr.to_string()]);
    lab.start_daemon(&rules).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lab.tcp_connect(target, CONNECT_TIMEOUT).unwrap() == Connect::Connected {
        assert!(Instant::now() < deadline, "never resolved and blocked");
    }
    lab.stop_daemon().unwrap();
    drop(dns);
    // Cut short after its first line, as a full disk would leave it.
    let path = lab.state_dir().join("addresses.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&resolved.to_string()), "{text}");
    std::fs::write(&path, &text[..text.find('\n').unwrap() + 20]).unwrap();
    lab.start_daemon(&rules).unwrap();
    assert_eq!(
        lab.tcp_connect(target, CONNECT_TIMEOUT).unwrap(),
        Connect::TimedOut,
        "after a restart with DNS down and addresses.json cut short; log:\n{}",
        lab.daemon_log()
    );
    lab.stop_daemon().unwrap();
}
