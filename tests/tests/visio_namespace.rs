//! Visio, the state's own video service, is never caught: with the shipped rules and a lab
//! platform that bans the very range Visio's addresses fall in, every Visio name and every
//! address it resolves to explains as `allow`, and its traffic passes while the rest of that
//! range is dropped.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use tests::dns::{Dnsmasq, Zone, client_lookup};
use tests::lab::{INTERNET_V4, INTERNET_V6, Lab, SERVER_V4, Side, is_root, json_ok};

const VISIO_NAMES: &[&str] = &[
    "visio.numerique.gouv.fr",
    "media.visio.numerique.gouv.fr",
    "visio.suite.anct.gouv.fr",
];

#[test]
fn every_visio_name_and_address_explains_as_allow() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut lab = Lab::new().unwrap();
    // Visio's names answer with addresses inside a range the lab bans (as if a vendor's
    // published range covered them).
    let (v4, v6) = (INTERNET_V4[0].to_string(), INTERNET_V6[0].to_string());
    let other_v4 = INTERNET_V4[1].to_string();
    let zone = Zone::new()
        .local("numerique.gouv.fr")
        .local("anct.gouv.fr")
        .host(VISIO_NAMES[0], &[&v4, &v6], Some(300))
        .host(VISIO_NAMES[1], &[&v4], Some(300))
        .host(VISIO_NAMES[2], &[&v4], Some(300));
    // The daemon's resolver (exact names) and the clients' DNS server beyond the gateway,
    // whose answers teach the names under the wildcards.
    let resolver = Dnsmasq::start_in(
        &lab.netns_path(Side::Gateway),
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        None,
        &zone,
    )
    .unwrap();
    let _client_dns = Dnsmasq::on_lab_server(&lab, &zone).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&shipped)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.push((
        "lab-banned.yaml".into(),
        "platform: lab-banned\nmatch:\n  - prefixes: [198.19.10.0/24, \"2001:db8:10::/48\"]\n"
            .into(),
    ));
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let rules = lab.write_policy(&files).unwrap();
    lab.add_daemon_args(&[
        "--resolver",
        &resolver.addr.to_string(),
        "--learn-from",
        &SERVER_V4.to_string(),
    ]);
    let visio = SocketAddr::new(IpAddr::V4(INTERNET_V4[0]), 443);
    let banned = SocketAddr::new(IpAddr::V4(INTERNET_V4[1]), 443);
    let server = lab.start_server(&[visio, banned], &[]).unwrap();
    lab.start_daemon(&rules).unwrap();

    // Every name, once resolved: allowed by name and by each of its addresses.
    let deadline = Instant::now() + Duration::from_secs(15);
    for name in VISIO_NAMES {
        // A client asks, as a browser opening Visio would: the answer crosses the gateway.
        let answer = client_lookup(&lab, SERVER_V4.into(), name, RecordType::A);
        assert_eq!(answer, Some(IpAddr::V4(INTERNET_V4[0])), "{name}");
        let answer = loop {
            let answer = json_ok(&lab.control(&["explain", name, "--json"]).unwrap(), name);
            let resolved = answer["matches"].as_array().is_some_and(|m| {
                m.iter()
                    .any(|m| m["source"] == "dns" || m["source"] == "learned")
            });
            if resolved {
                break answer;
            }
            assert!(Instant::now() < deadline, "{name} never resolved: {answer}");
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(answer["name_verdict"], "allow", "{name}: {answer}");
        assert_eq!(answer["verdict"], "allow", "{name}: {answer}");
        for m in answer["matches"].as_array().unwrap() {
            assert_eq!(m["platform"], "visio", "{name}: {answer}");
            if m["source"] == "dns" || m["source"] == "learned" {
                let address = m["prefix"].as_str().unwrap().split('/').next().unwrap();
                let by_address = json_ok(
                    &lab.control(&["explain", address, "--json"]).unwrap(),
                    address,
                );
                assert_eq!(by_address["verdict"], "allow", "{address}: {by_address}");
                assert_eq!(
                    by_address["matches"][0]["platform"], "visio",
                    "{by_address}"
                );
            }
        }
    }
    // The rest of the banned range stays banned.
    let other = json_ok(
        &lab.control(&["explain", &other_v4, "--json"]).unwrap(),
        "other",
    );
    assert_eq!(other["verdict"], "drop", "{other}");

    // And so does the traffic: Visio's address passes, its neighbour is dropped.
    lab.send_udp(visio, 10).unwrap();
    lab.send_udp(banned, 10).unwrap();
    assert!(
        server.wait_udp(&[(visio, 10)], Duration::from_secs(5)),
        "Visio's traffic was dropped"
    );
    assert!(server.settle());
    assert_eq!(server.udp_count(banned), 0);
    lab.stop_daemon().unwrap();
}
