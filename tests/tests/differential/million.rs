//! The lookup table at scale: a million random IPv4 prefixes and 250,000 IPv6 ones (nested and
//! overlapping, of every length, under four platforms of every action, some entries with ports),
//! then hosts learned into the generation in force, then the whole policy applied again. After
//! each step the datapath agrees with the reference on frames aimed inside random prefixes (at
//! their first, last and a random address), at the learned hosts and anywhere.

use enforcer::compile::{EntryAddress, add_hosts};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use enforcer::policy::model::Platform;
use enforcer::reference::{ParsedFrame, parse_frame};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::seq::IndexedRandom;
use tests::r#gen::random_address;

use super::*;

/// With the 300 covering prefixes and the hosts learned later, just under the default capacity
/// of 1,000,000.
const V4_PREFIXES: usize = 997_000;
const V6_PREFIXES: usize = 250_000;
const AIMED_FRAMES: usize = 240;
const RANDOM_FRAMES: usize = 60;
const LEARNED: usize = 2_000;

/// Prefixes laid out as in a routing table: IPv4, one in each of a million distinct /20s (a /20
/// to /24, or a host), under a few hundred covering /10 to /16 prefixes; IPv6, under 2000::/3 at
/// the lengths vendors publish (/32 to /64), a few thousand hosts, under a hundred covering /20
/// to /28. Each distinct nesting of lengths and rules is a leaf of the table, which holds 16,383
/// of them: dense random nesting of every length (a million random /17-/24 need 430,000) is
/// refused by the compiler, so it is not what this draws.
fn random_prefixes(rng: &mut StdRng) -> Vec<IpNet> {
    let mut out = Vec::with_capacity(V4_PREFIXES + V6_PREFIXES);
    for slot in rand::seq::index::sample(rng, 1 << 20, V4_PREFIXES) {
        let len = *[20u8, 21, 22, 23, 24, 24, 24, 24, 32, 32]
            .choose(rng)
            .unwrap();
        let addr = ((slot as u32) << 12) | (rng.random::<u32>() & 0xFFF);
        out.push(IpNet::V4(
            Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc(),
        ));
    }
    for _ in 0..300 {
        let len = *[10u8, 12, 14, 16].choose(rng).unwrap();
        let addr = rng.random::<u32>();
        out.push(IpNet::V4(
            Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap().trunc(),
        ));
    }
    for i in 0..V6_PREFIXES {
        let len = if i % 100 == 0 {
            128
        } else {
            *[32u8, 36, 40, 44, 48, 48, 56, 64, 64].choose(rng).unwrap()
        };
        out.push(v6_prefix(rng, len));
    }
    for _ in 0..100 {
        let len = *[20u8, 24, 28].choose(rng).unwrap();
        out.push(v6_prefix(rng, len));
    }
    out
}

/// A random IPv6 prefix of `len` under 2000::/3, like the global unicast space.
fn v6_prefix(rng: &mut StdRng, len: u8) -> IpNet {
    let addr = (0x2000u128 << 112) | (rng.random::<u128>() >> 3);
    IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len).unwrap().trunc())
}

/// Four platforms (drop, monitor, allow, drop), each with an entry for every
/// protocol and port and one for TCP 443 or UDP 3478-3481; the prefixes dealt among them.
fn million_policy(rng: &mut StdRng) -> (GeneratedPolicy, Vec<IpNet>) {
    // Few rules, so that their combinations over nested prefixes fit the rule table's 2,048
    // lists (six platforms made 2,621).
    let actions = [Action::Drop, Action::Monitor, Action::Allow, Action::Drop];
    let mut platforms: Vec<Platform> = actions
        .iter()
        .enumerate()
        .map(|(i, &action)| {
            let ported = if i % 2 == 0 {
                entry(&[], Protocol::Tcp, &[(443, 443)])
            } else {
                entry(&[], Protocol::Udp, &[(3478, 3481)])
            };
            platform(
                &format!("p{i}"),
                action,
                vec![entry(&[], Protocol::Any, &[]), ported],
            )
        })
        .collect();
    let all = random_prefixes(rng);
    for &net in &all {
        // Allow platforms get few, short-lived holes rather than a tenth of the space.
        let p = loop {
            let p = rng.random_range(0..platforms.len());
            if actions[p] != Action::Allow || rng.random_ratio(1, 20) {
                break p;
            }
        };
        let e = usize::from(rng.random_ratio(1, 5));
        platforms[p].entries[e].prefixes.push(net);
    }
    let generated = GeneratedPolicy {
        policy: Policy { platforms },
        addresses: Vec::new(),
    };
    (generated, all)
}

/// Frames both ways between a random client and an address inside a random prefix, TCP or UDP,
/// on the ports the entries name or a random one; and frames between random addresses.
fn aimed_frames(rng: &mut StdRng, prefixes: &[IpNet]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for _ in 0..AIMED_FRAMES / 2 {
        let net = *prefixes.choose(rng).unwrap();
        let inside = match net {
            IpNet::V4(n) => {
                let (first, last) = (u32::from(n.network()), u32::from(n.broadcast()));
                let pick = [first, last, rng.random_range(first..=last)];
                IpAddr::V4(Ipv4Addr::from(*pick.choose(rng).unwrap()))
            }
            IpNet::V6(n) => {
                let (first, last) = (u128::from(n.network()), u128::from(n.broadcast()));
                let pick = [first, last, rng.random_range(first..=last)];
                IpAddr::V6(Ipv6Addr::from(*pick.choose(rng).unwrap()))
            }
        };
        frames.extend(frames_with(rng, inside));
    }
    for _ in 0..RANDOM_FRAMES {
        frames.push(random_frame(rng));
    }
    frames
}

fn frames_with(rng: &mut StdRng, host: IpAddr) -> [Vec<u8>; 2] {
    let client = random_address(rng, host.is_ipv6(), false);
    let protocol = *[6u8, 17].choose(rng).unwrap();
    let port = *[443u16, 3478, 3481, rng.random_range(1..=65535)]
        .choose(rng)
        .unwrap();
    [
        simple_frame(client, host, protocol, 40000, port),
        simple_frame(host, client, protocol, port, 40000),
    ]
}

/// Where each prefix of a policy sits (platform, entry), and the policy without prefixes.
struct Prefixes {
    at: HashMap<IpNet, Vec<(usize, usize)>>,
    skeleton: GeneratedPolicy,
}

impl Prefixes {
    fn new(generated: &GeneratedPolicy) -> Self {
        let mut at: HashMap<IpNet, Vec<(usize, usize)>> = HashMap::new();
        let mut skeleton = GeneratedPolicy {
            policy: Policy {
                platforms: Vec::new(),
            },
            addresses: generated.addresses.clone(),
        };
        for (p, platform) in generated.policy.platforms.iter().enumerate() {
            let mut bare = platform.clone();
            for (e, entry) in platform.entries.iter().enumerate() {
                for &net in &entry.prefixes {
                    at.entry(net).or_default().push((p, e));
                }
                bare.entries[e].prefixes.clear();
            }
            skeleton.policy.platforms.push(bare);
        }
        Self { at, skeleton }
    }

    /// The policy cut down to the prefixes that contain `addresses` (every platform and entry
    /// kept, so ids and order are the same): the reference decides a frame between those
    /// addresses exactly as over the whole policy, since no other prefix can match, and a scan
    /// of a million prefixes per frame would take the test many minutes.
    fn around(&self, addresses: &[IpAddr]) -> GeneratedPolicy {
        let mut near = self.skeleton.clone();
        let mut seen = HashSet::new();
        for &address in addresses {
            let bits = if address.is_ipv4() { 32 } else { 128 };
            for len in 0..=bits {
                let net = IpNet::new(address, len).unwrap().trunc();
                let Some(places) = self.at.get(&net) else {
                    continue;
                };
                if !seen.insert(net) {
                    continue;
                }
                for &(p, e) in places {
                    near.policy.platforms[p].entries[e].prefixes.push(net);
                }
            }
        }
        near
    }
}

fn assert_agrees(
    datapath: &mut Datapath,
    probe: &mut Probe,
    what: &str,
    generated: &GeneratedPolicy,
    frames: &[Vec<u8>],
) {
    let prefixes = Prefixes::new(generated);
    for frame in frames {
        // A frame that is not IP (random frames may be) matches no prefix.
        let addresses = frame_addresses(frame).unwrap_or_default();
        let near = prefixes.around(&addresses);
        let comparison = check_frames(
            datapath,
            probe,
            &Model::new(&near),
            std::slice::from_ref(frame),
        );
        assert!(
            comparison.agrees(),
            "{}",
            comparison.report(what, &describe(&near))
        );
    }
}

/// Source and destination of a frame, as the reference parses it.
fn frame_addresses(frame: &[u8]) -> Option<Vec<IpAddr>> {
    match parse_frame(frame) {
        ParsedFrame::Ip(packet) => Some(vec![packet.src, packet.dst]),
        _ => None,
    }
}

#[test]
fn million_prefixes_and_learned_hosts() {
    let Some((mut datapath, mut probe)) = load() else {
        return;
    };
    let seed = seed();
    println!("million prefixes seed: {seed} (rerun with ENFORCER_DIFF_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut generated, prefixes) = million_policy(&mut rng);
    let started = Instant::now();
    let mut compiled = compile_generated(&generated).expect("the million-prefix policy compiles");
    let compiled_in = started.elapsed();
    let started = Instant::now();
    datapath.apply(&compiled).expect("a million prefixes apply");
    println!(
        "{} IPv4 and {} IPv6 prefixes after compiling ({compiled_in:.2?}); applied in {:.2?}",
        compiled.v4.len(),
        compiled.v6.len(),
        started.elapsed()
    );
    let frames = aimed_frames(&mut rng, &prefixes);
    assert_agrees(
        &mut datapath,
        &mut probe,
        "a million prefixes",
        &generated,
        &frames,
    );

    // Hosts learned into the generation in force, as the daemon does between two builds: inside
    // random prefixes (under other platforms' rules) and anywhere.
    let mut learned = Vec::new();
    for i in 0..LEARNED {
        let near = *prefixes.choose(&mut rng).unwrap();
        let host = if i % 2 == 0 {
            match near {
                IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(
                    u32::from(n.network()) | (rng.random::<u32>() & !u32::from(n.netmask())),
                )),
                IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(
                    u128::from(n.network()) | (rng.random::<u128>() & !u128::from(n.netmask())),
                )),
            }
        } else {
            random_address(&mut rng, near.addr().is_ipv6(), false)
        };
        learned.push(EntryAddress {
            platform: rng.random_range(0..generated.policy.platforms.len()),
            entry: rng.random_range(0..2),
            net: IpNet::from(host),
        });
    }
    let changed = add_hosts(&mut compiled, &generated.policy, &learned).expect("hosts fit");
    let written = datapath.write_hosts(&compiled, &changed).unwrap();
    assert!(
        written > LEARNED / 2,
        "{written} of {LEARNED} hosts written"
    );
    generated.addresses = learned.clone();
    let mut at_hosts = Vec::new();
    for address in learned.choose_multiple(&mut rng, 100) {
        at_hosts.extend(frames_with(&mut rng, address.net.addr()));
    }
    let mut frames = aimed_frames(&mut rng, &prefixes);
    frames.extend(at_hosts.iter().cloned());
    assert_agrees(
        &mut datapath,
        &mut probe,
        "after learning hosts",
        &generated,
        &frames,
    );

    // The next full build folds the learned hosts into the ranges of the other generation.
    let rebuilt = compile_sited(&generated.policy, learned.iter().copied()).unwrap();
    assert_eq!(rebuilt, compiled, "learning = compiling the hosts in");
    datapath.apply(&rebuilt).unwrap();
    assert_agrees(
        &mut datapath,
        &mut probe,
        "after the next full build",
        &generated,
        &frames,
    );
}
