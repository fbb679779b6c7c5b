//! A policy change switches in one step: while `apply` turns 2,000 banned prefixes into allowed
//! ones, a second program sharing the pinned maps runs frames to all of them through
//! BPF_PROG_TEST_RUN; once any frame sees the new policy, no later frame may see the old one
//! (an in-place update would show a mix for the milliseconds the writes take). Needs root.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use enforcer::compile::{self, Capacity};
use enforcer::datapath::Datapath;
use enforcer::policy::{Action, Entry, Location, Platform, Policy, Protocol};
use ipnet::IpNet;
use tests::r#gen::frame::simple_frame;
use tests::tools;

const PREFIXES: u32 = 2_000;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn policy(action: Action) -> Policy {
    let location = Location {
        path: "switch.yaml".into(),
        line: 1,
        column: 1,
    };
    let prefixes = (0..PREFIXES)
        .map(|i| {
            let addr = Ipv4Addr::from(0xC613_0000u32 + (i << 8)); // 198.19.0.0 + i * 256
            IpNet::new(IpAddr::V4(addr), 24).unwrap()
        })
        .collect();
    Policy {
        platforms: vec![Platform {
            data_date: None,
            feed: None,
            action_by_site: Vec::new(),
            name: "media".into(),
            id: 0,
            description: None,
            reference: None,
            action,
            entries: vec![Entry {
                index: 0,
                domains: vec![],
                prefixes,
                protocol: Protocol::Any,
                ports: vec![],
                enforce: enforcer::policy::Enforce::Both,
                location: location.clone(),
            }],
            location,
        }],
    }
}

/// A BPF filesystem in a temporary directory, unmounted when dropped.
struct Bpffs(std::path::PathBuf);

impl Drop for Bpffs {
    fn drop(&mut self) {
        // No panic in a drop: a missing umount would have failed the mount first.
        if let Ok(umount) = tools::path(tools::UMOUNT) {
            let _ = Command::new(umount).arg(&self.0).status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn readers_never_see_a_mix_of_two_policies() {
    let dir = std::env::temp_dir().join(format!("switch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new(tools::require(tools::MOUNT))
        .args(["-t", "bpf", "bpf"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success(), "mounting a BPF filesystem needs root");
    let bpffs = Bpffs(dir);
    let pins = bpffs.0.join("enforcer");

    let mut writer = Datapath::load_pinned(&pins, Capacity::default()).unwrap();
    writer
        .apply(&compile::compile(&policy(Action::Drop)).unwrap())
        .unwrap();
    let new = compile::compile(&policy(Action::Allow)).unwrap();

    let frames: Vec<Vec<u8>> = (0..PREFIXES)
        .rev()
        .map(|i| {
            let dst = Ipv4Addr::from(0xC613_0000u32 + (i << 8) + 5);
            simple_frame(
                IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2)),
                IpAddr::V4(dst),
                17,
                40_000,
                443,
            )
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        let mut datapath = Datapath::load_pinned(&pins, Capacity::default()).unwrap();
        std::thread::spawn(move || {
            let (mut old, mut new, mut mixed) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::SeqCst) {
                for frame in &frames {
                    match datapath.test_run(frame).unwrap() {
                        XDP_DROP if new > 0 => mixed += 1,
                        XDP_DROP => old += 1,
                        XDP_PASS => new += 1,
                        other => panic!("unexpected verdict {other}"),
                    }
                }
            }
            (old, new, mixed)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let stats = writer.apply(&new).unwrap();
    assert_eq!(stats.updated, PREFIXES as usize, "{stats:?}");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let (old, new, mixed) = reader.join().unwrap();
    assert!(
        old > 0 && new > 0,
        "the reader did not run across the switch: {old} old, {new} new"
    );
    assert_eq!(
        mixed, 0,
        "{mixed} frames saw the old policy after another had seen the new one"
    );
}
