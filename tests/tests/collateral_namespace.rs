//! Collateral and plan against a running daemon: the lab's DNS server answers a name no policy
//! lists with an address inside a banned prefix; the daemon, having seen that answer cross the
//! gateway, reports it as collateral (command and metric), and `plan` shows what a candidate
//! policy would add, remove and hit, exiting 2 when it would block collateral names, 0 when
//! clean, 1 on error, without applying anything.

use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use serde_json::Value;
use tests::dns::{Dnsmasq, Zone, client_lookup};
use tests::lab::{INTERNET_V4, Lab, SERVER_V4, is_root, json_ok};

const MEDIA: &str = "platform: media\nmatch:\n  - prefixes: [198.19.10.0/24]\n  - domains: [\"*.media.example\"]\n    enforce: address\n";

#[test]
fn an_unlisted_name_in_a_banned_prefix_is_collateral_and_plan_gates_on_it() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut lab = Lab::new().unwrap();
    let _dns = Dnsmasq::on_lab_server(
        &lab,
        &Zone::new().local("example").hosts_file(format!(
            "{} www.unrelated.example\n{} x.media.example\n{} shop.other.example\n",
            INTERNET_V4[0], INTERNET_V4[1], INTERNET_V4[2]
        )),
    )
    .unwrap();
    lab.add_daemon_args(&["--learn-from", &SERVER_V4.to_string()]);
    let rules = lab.write_policy(&[("media.yaml", MEDIA)]).unwrap();
    lab.start_daemon(&rules).unwrap();
    for name in [
        "www.unrelated.example",
        "x.media.example",
        "shop.other.example",
    ] {
        assert!(
            client_lookup(&lab, SERVER_V4.into(), name, RecordType::A).is_some(),
            "{name} got no answer"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let collateral = loop {
        let answer = json_ok(
            &lab.control(&["collateral", "--json"]).unwrap(),
            "collateral",
        );
        if answer["platforms"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
        {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "no collateral reported: {answer}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let platforms = collateral["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 1, "{collateral}");
    assert_eq!(platforms[0]["platform"], "media");
    let prefixes = platforms[0]["prefixes"].as_array().unwrap();
    assert_eq!(prefixes.len(), 1, "{collateral}");
    assert_eq!(prefixes[0]["prefix"], "198.19.10.0/24");
    let names: Vec<&str> = prefixes[0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    // The platform's own name is no collateral.
    assert_eq!(names, ["www.unrelated.example"], "{collateral}");
    assert!(prefixes[0]["names"][0]["last_seen"].as_u64().unwrap() > 1_700_000_000);
    let m = lab.metrics().unwrap();
    assert_eq!(
        m.metric("enforcer_collateral_names", &[("platform", "media")])
            .unwrap(),
        1.0
    );
    let digest =
        json_ok(&lab.control(&["status", "--json"]).unwrap(), "status")["policy_digest"].clone();

    // A candidate that also bans the shop's range: collateral, exit 2.
    let wider = lab
        .write_policy(&[
            ("media.yaml", MEDIA),
            (
                "shop.yaml",
                "platform: shop\nmatch:\n  - prefixes: [198.19.20.0/24]\n",
            ),
        ])
        .unwrap();
    let out = plan(&lab, &wider);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    let shop = reply["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["platform"] == "shop")
        .unwrap_or_else(|| panic!("{reply}"));
    assert_eq!(shop["added"]["prefixes"][0], "198.19.20.0/24");
    assert_eq!(shop["action"][0], "none");
    assert_eq!(shop["action"][1], "drop");
    let hits: Vec<(String, String)> = reply["collateral"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["platform"].as_str().unwrap().to_owned(),
                c["names"][0].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        hits.contains(&("shop".into(), "shop.other.example".into())),
        "{reply}"
    );

    // A candidate that blocks media by name only: no collateral, exit 0.
    let narrow = lab
        .write_policy(&[(
            "media.yaml",
            "platform: media\nmatch:\n  - domains: [\"*.media.example\"]\n    enforce: address\n",
        )])
        .unwrap();
    let out = plan(&lab, &narrow);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        reply["platforms"][0]["removed"]["prefixes"][0], "198.19.10.0/24",
        "{reply}"
    );
    assert_eq!(reply["collateral"].as_array().unwrap().len(), 0);

    // A broken candidate: exit 1 with its error.
    let broken = lab
        .write_policy(&[("media.yaml", "platform: media\nmatch: []\n")])
        .unwrap();
    let out = plan(&lab, &broken);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("media.yaml:2:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nothing was applied.
    let after =
        json_ok(&lab.control(&["status", "--json"]).unwrap(), "status")["policy_digest"].clone();
    assert_eq!(after, digest);
    lab.stop_daemon().unwrap();
}

fn plan(lab: &Lab, dir: &std::path::Path) -> std::process::Output {
    lab.control(&["plan", dir.to_str().unwrap(), "--json"])
        .unwrap()
}
