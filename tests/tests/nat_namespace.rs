//! Learning behind NAT, through the real daemon: the gateway masquerades its clients on the
//! outside interface, so a server's answer comes back addressed to the gateway. It is still
//! believed (it answers a query a client sent, to the client's port), held, learned, and put back
//! into the gateway's receive path, where conntrack de-NATs it to the client as usual.
//! Needs root, nft, dnsmasq and a built daemon.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use tests::dns::{Dnsmasq, Zone, client_lookup};
use tests::lab::{Connect, INTERNET_V4, Lab, SERVER_V4};

#[test]
fn an_answer_to_a_masqueraded_client_is_held_learned_and_de_natted() {
    let mut lab = Lab::new().unwrap();
    lab.set_interfaces(&["g0:inside", "g1:outside"]);
    lab.add_daemon_args(&["--learn-from", &SERVER_V4.to_string()]);
    let banned = INTERNET_V4[2];
    let _server = lab
        .start_server(&[], &[SocketAddr::new(IpAddr::V4(banned), 443)])
        .unwrap();
    let zone = Zone::new()
        .local("example")
        .hosts_file(format!("{banned} x1.media.example\n"));
    let _dns = Dnsmasq::on_lab_server(&lab, &zone).unwrap();
    let rules = lab
        .write_policy(&[(
            "media.yaml",
            "platform: media\nmatch:\n  - domains: [\"*.media.example\"]\n    enforce: address\n",
        )])
        .unwrap();
    // The gateway hides its clients behind its outside address.
    lab.nft(
        "table ip nat { chain post { type nat hook postrouting priority 100; \
         oifname \"g1\" masquerade; }; }\n",
    )
    .unwrap();
    lab.start_daemon(&rules).unwrap();
    let held = |lab: &Lab| {
        lab.metrics()
            .unwrap()
            .metric("enforcer_dns_held_packets_total", &[])
            .unwrap()
    };
    let before = held(&lab);

    let answer = client_lookup(&lab, SERVER_V4.into(), "x1.media.example", RecordType::A);
    assert_eq!(
        answer,
        Some(IpAddr::V4(banned)),
        "the answer did not come back through the NAT"
    );
    assert!(
        held(&lab) > before,
        "the answer to the gateway was not held"
    );
    let learned = lab
        .metrics()
        .unwrap()
        .metric(
            "enforcer_prefixes",
            &[
                ("platform", "media"),
                ("family", "ipv4"),
                ("source", "learned"),
            ],
        )
        .unwrap();
    assert_eq!(learned, 1.0, "the answer behind NAT was not learned");
    let connect = lab
        .tcp_connect(
            SocketAddr::new(IpAddr::V4(banned), 443),
            Duration::from_secs(1),
        )
        .unwrap();
    assert_eq!(connect, Connect::TimedOut);
    lab.stop_daemon().unwrap();
}
