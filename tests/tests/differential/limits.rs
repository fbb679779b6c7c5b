//! The datapath's limits: rules per prefix (`RULES_PER_SLOT`), prefixes per family
//! (`MAX_PREFIXES_V4`/`V6`, `MAX_LONG_PREFIXES_V6`) and rule lists (`RULE_SLOTS`). A policy over a limit is refused with
//! an error naming it, only when it really is over, and the policy in force stays enforced (shown
//! by frames); a policy at a limit is enforced exactly as the reference says.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use enforcer::compile::{EntryAddress, add_hosts};
use enforcer_common::{
    MAX_LONG_PREFIXES_V6, MAX_PREFIXES_V4, MAX_PREFIXES_V6, RULE_SLOTS, RULES_PER_SLOT,
};
use ipnet::IpNet;
use tests::r#gen::policy::{CROWDED_PORTS, crowded_policy};
use tests::r#gen::random_address;

use super::*;

const CROWDED_ROUNDS: usize = 16;

/// The distinct match conditions (platform, action, protocol, port range) of every entry prefix,
/// published or resolved, that contains `net`: what the datapath must hold in `net`'s rule slot.
fn conditions_over(policy: &Policy, addresses: &[EntryAddress], net: IpNet) -> usize {
    let mut conditions = BTreeSet::new();
    for (p, platform) in policy.platforms.iter().enumerate() {
        for (e, entry) in platform.entries.iter().enumerate() {
            let resolved = addresses
                .iter()
                .filter(|a| (a.platform, a.entry) == (p, e))
                .map(|a| a.net.trunc());
            if !entry
                .prefixes
                .iter()
                .copied()
                .chain(resolved)
                .any(|n| n.contains(&net))
            {
                continue;
            }
            let ranges: Vec<Option<(u16, u16)>> =
                if entry.protocol == Protocol::Any || entry.ports.is_empty() {
                    vec![None]
                } else {
                    entry
                        .ports
                        .iter()
                        .map(|r| Some((r.first, r.last)))
                        .collect()
                };
            for range in ranges {
                conditions.insert((p, platform.action.code(), entry.protocol.code(), range));
            }
        }
    }
    conditions.len()
}

/// Every prefix of the policy, published or resolved.
fn all_prefixes(generated: &GeneratedPolicy) -> BTreeSet<IpNet> {
    let published = generated
        .policy
        .platforms
        .iter()
        .flat_map(|p| p.entries.iter().flat_map(|e| e.prefixes.iter().copied()));
    published
        .chain(generated.addresses.iter().map(|a| a.net.trunc()))
        .collect()
}

/// An address inside `net`: its first, its last or a random one.
fn host_in(rng: &mut StdRng, net: IpNet) -> IpAddr {
    let pick = rng.random_range(0..3);
    match net {
        IpNet::V4(n) => {
            let (first, last) = (u32::from(n.network()), u32::from(n.broadcast()));
            let ip = [first, last, rng.random_range(first..=last)][pick];
            IpAddr::V4(Ipv4Addr::from(ip))
        }
        IpNet::V6(n) => {
            let (first, last) = (u128::from(n.network()), u128::from(n.broadcast()));
            let ip = [first, last, rng.random_range(first..=last)][pick];
            IpAddr::V6(Ipv6Addr::from(ip))
        }
    }
}

/// TCP and UDP frames to and from addresses inside `net` on every port in `ports`.
fn frames_into(rng: &mut StdRng, net: IpNet, ports: impl Iterator<Item = u16>) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for port in ports {
        for protocol in [6, 17] {
            let inside = host_in(rng, net);
            let client = random_address(rng, inside.is_ipv6(), false);
            frames.push(simple_frame(client, inside, protocol, 40000, port));
            frames.push(simple_frame(inside, client, protocol, port, 40000));
        }
    }
    frames
}

fn assert_agrees(
    datapath: &mut Datapath,
    probe: &mut Probe,
    what: &str,
    generated: &GeneratedPolicy,
    frames: &[Vec<u8>],
) {
    let comparison = check_frames(datapath, probe, &Model::new(generated), frames);
    assert!(
        comparison.agrees(),
        "{}",
        comparison.report(what, &describe(generated))
    );
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn single_ports(ports: impl Iterator<Item = u16>) -> Vec<(u16, u16)> {
    ports.map(|p| (p, p)).collect()
}

/// A rule slot filled to the last rule works to its last rule; one rule more is refused with an
/// error naming the prefix, for rules of the prefix itself, inherited rules and a learned host.
#[test]
fn full_rule_slot() {
    let Some((mut datapath, mut probe)) = load() else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(13);
    let last = RULES_PER_SLOT as u16;
    // 31 drop rules on the /24 plus the enclosing /16's monitor rule: a full slot, in which the
    // monitor rule is tried last (lowest precedence, shorter prefix).
    let full_ports = 1001..=1000 + last - 1;
    let full = Policy {
        platforms: vec![
            platform(
                "a",
                Action::Drop,
                vec![entry(
                    &["198.18.1.0/24"],
                    Protocol::Udp,
                    &single_ports(full_ports.clone()),
                )],
            ),
            platform("b", Action::Allow, {
                let mut learned = entry(&[], Protocol::Udp, &[(53, 53)]);
                learned.domains = vec![enforcer::policy::model::DomainPattern::Exact(
                    "b.example".to_string(),
                )];
                vec![learned]
            }),
            platform(
                "z",
                Action::Monitor,
                vec![entry(&["198.18.0.0/16"], Protocol::Any, &[])],
            ),
        ],
    };
    let full = GeneratedPolicy {
        policy: full,
        addresses: Vec::new(),
    };
    let mut compiled = compile_sited_all(&full.policy).expect("a full slot compiles");
    datapath.apply(&compiled).expect("a full slot applies");
    let frames = frames_into(&mut rng, net("198.18.1.0/24"), 999..=1000 + last + 1);
    // Whatever the client's site: the decision with it set aside.
    let monitored = matched(3, ACTION_MONITOR, DIRECTION_EGRESS, FAMILY_IPV4);
    let without_site = |d: Decision| match d {
        Decision::Match {
            platform,
            action,
            direction,
            family,
            ..
        } => matched(platform, action, direction, family),
        other => other,
    };
    assert!(
        frames
            .iter()
            .any(|f| without_site(Model::new(&full).expect(f).0) == monitored),
        "some frame must need the slot's last rule"
    );
    assert_agrees(
        &mut datapath,
        &mut probe,
        "a full rule slot",
        &full,
        &frames,
    );

    // One more port: 33 rules for the /24.
    let mut over = full.policy.clone();
    over.platforms[0].entries[0].ports.push(PortRange {
        first: 1000 + last,
        last: 1000 + last,
    });
    let refused = compile_sited_all(&over).expect_err("33 rules on one prefix");
    assert_eq!(
        refused,
        CompileError::TooManyRules {
            prefix: net("198.18.1.0/24"),
            count: RULES_PER_SLOT + 1,
            limit: RULES_PER_SLOT,
        }
    );
    assert!(
        refused.to_string().starts_with("198.18.1.0/24: 33 rules"),
        "{refused}"
    );

    // Inherited: a full /16 and one rule of another platform on a /24 inside it.
    let enclosing = Policy {
        platforms: vec![
            platform(
                "a",
                Action::Drop,
                vec![entry(&["198.18.1.0/24"], Protocol::Tcp, &[])],
            ),
            platform(
                "z",
                Action::Monitor,
                vec![entry(
                    &["198.18.0.0/16"],
                    Protocol::Udp,
                    &single_ports(3001..=3000 + last),
                )],
            ),
        ],
    };
    assert!(matches!(
        compile_sited_all(&enclosing),
        Err(CompileError::TooManyRules { prefix, count: 33, .. }) if prefix == net("198.18.1.0/24")
    ));

    // A host learned inside the full /24 for "b" would be its 33rd rule: refused, nothing
    // written, the datapath unchanged.
    let host = EntryAddress {
        platform: 1,
        entry: 0,
        net: net("198.18.1.77/32"),
    };
    let before = compiled.clone();
    let refused = add_hosts(&mut compiled, &full.policy, &[host]).expect_err("a 33rd rule");
    assert!(
        matches!(&refused, CompileError::TooManyRules { prefix, count: 33, .. } if *prefix == host.net),
        "{refused}"
    );
    assert_eq!(
        compiled, before,
        "a refused host leaves the compiled policy as it was"
    );
    let frames = frames_into(&mut rng, host.net, [53, 1001, 2000].into_iter());
    assert_agrees(
        &mut datapath,
        &mut probe,
        "after a refused learned host",
        &full,
        &frames,
    );
}

/// Random policies that pile about `RULES_PER_SLOT` rules onto one prefix: each either compiles
/// and is enforced as the reference says, or is refused for a prefix that really holds more
/// rules than a slot, leaving the policy before it enforced.
#[test]
fn crowded_prefixes_fit_or_are_refused() {
    let Some((mut datapath, mut probe)) = load() else {
        return;
    };
    let seed = seed();
    println!("crowded prefixes seed: {seed} (rerun with ENFORCER_DIFF_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut fitted, mut full, mut refused) = (0, 0, 0);
    let mut in_force = GeneratedPolicy::default();
    let edges = *CROWDED_PORTS.start() - 1..=*CROWDED_PORTS.end() + 1;
    for round in 0..CROWDED_ROUNDS {
        // Below, at and above a full slot; the random rest of the policy may add more.
        let wanted = [8, 16, 24, 30, 31, 32, 33, 40][round % 8];
        let (generated, inner) = crowded_policy(&mut rng, wanted);
        let worst = all_prefixes(&generated)
            .into_iter()
            .map(|n| {
                (
                    conditions_over(&generated.policy, &generated.addresses, n),
                    n,
                )
            })
            .max()
            .unwrap_or_default();
        let what = format!("seed {seed}, crowded policy #{round}");
        match compile_generated(&generated) {
            Ok(compiled) => {
                assert!(
                    worst.0 <= RULES_PER_SLOT,
                    "{what}: compiled although {} holds {} rules\n{}",
                    worst.1,
                    worst.0,
                    describe(&generated)
                );
                datapath.apply(&compiled).expect("applying");
                in_force = generated;
                fitted += 1;
                full += usize::from(worst.0 == RULES_PER_SLOT);
            }
            Err(CompileError::TooManyRules {
                prefix,
                count,
                limit,
            }) => {
                let really = conditions_over(&generated.policy, &generated.addresses, prefix);
                assert!(
                    limit == RULES_PER_SLOT && count == really && count > limit,
                    "{what}: refused for {prefix} with {count} rules (limit {limit}), which holds \
                     {really}\n{}",
                    describe(&generated)
                );
                refused += 1;
            }
            Err(e) => panic!("{what}: {e}\n{}", describe(&generated)),
        }
        let mut frames = frames_into(&mut rng, inner, edges.clone());
        frames.extend((0..300).map(|_| random_frame(&mut rng)));
        assert_agrees(&mut datapath, &mut probe, &what, &in_force, &frames);
    }
    println!("crowded prefixes: {fitted} fitted ({full} with a full slot), {refused} refused");
    assert!(
        fitted >= 3 && refused >= 4,
        "{fitted} fitted, {refused} refused: tune the generator"
    );
}

/// A policy of one drop platform whose single entry lists `count` host prefixes starting at
/// `first` (IPv4 or IPv6 hosts in a row).
fn hosts_policy(name: &str, first: IpAddr, count: usize) -> GeneratedPolicy {
    spaced_policy(name, first, count, Spacing::HOSTS)
}

/// How `spaced_policy` lays its prefixes out: their length, and the step from one to the next
/// in addresses (a step of twice the prefix's size leaves a gap after each, so that no two
/// prefixes merge into one range of the table: its worst case).
#[derive(Clone, Copy)]
struct Spacing {
    len: Option<u8>,
    step_log2: u32,
}

impl Spacing {
    const HOSTS: Spacing = Spacing {
        len: None,
        step_log2: 0,
    };
}

/// `count` drop prefixes from `first`, laid out by `spacing`.
fn spaced_policy(name: &str, first: IpAddr, count: usize, spacing: Spacing) -> GeneratedPolicy {
    let prefixes: Vec<IpNet> = (0..count)
        .map(|i| {
            let at = nth(first, i, spacing);
            let len = spacing.len.unwrap_or(if at.is_ipv4() { 32 } else { 128 });
            IpNet::new(at, len).unwrap()
        })
        .collect();
    let mut drop = entry(&[], Protocol::Any, &[]);
    drop.prefixes = prefixes;
    GeneratedPolicy {
        policy: Policy {
            platforms: vec![platform(name, Action::Drop, vec![drop])],
        },
        addresses: Vec::new(),
    }
}

/// The first address of the `i`th prefix of a `spaced_policy`.
fn nth(first: IpAddr, i: usize, spacing: Spacing) -> IpAddr {
    let step = |i: usize| (i as u128) << spacing.step_log2;
    match first {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(step(i) as u32))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(step(i)))),
    }
}

/// Frames to the first, last and a few other hosts of a `hosts_policy`, and just past it.
fn frames_along(first: IpAddr, count: usize) -> Vec<Vec<u8>> {
    frames_spaced(first, count, Spacing::HOSTS)
}

/// Frames to the first and last address of the first, last and middle prefixes of a
/// `spaced_policy`, to the gaps after them, and just past the last.
fn frames_spaced(first: IpAddr, count: usize, spacing: Spacing) -> Vec<Vec<u8>> {
    let client = if first.is_ipv6() {
        ip("fd00::1")
    } else {
        ip("172.16.0.1")
    };
    let mut frames = Vec::new();
    for i in [0, 1, count / 2, count - 1, count, count + 1] {
        let at = nth(first, i, spacing);
        let mut targets = vec![at];
        if spacing.step_log2 > 0 {
            // The prefix's last address and the gap's first and last.
            let offset = |n: u128| match at {
                IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(n as u32))),
                IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a).wrapping_add(n))),
            };
            let half = 1u128 << (spacing.step_log2 - 1);
            targets.extend([offset(half - 1), offset(half), offset(2 * half - 1)]);
        }
        for target in targets {
            frames.push(simple_frame(client, target, 17, 40000, 443));
        }
    }
    frames
}

/// The table filled to the compiler's limits works: a million IPv4 prefixes and a million IPv6
/// ones laid out so that none merge (each a range of its own), and the most IPv6 prefixes longer
/// than /64 (hosts), each enforced as the reference says. One prefix more is refused by the
/// compiler; forced on the datapath, a policy it cannot hold fails with the policy in force
/// still enforced, and the datapath then takes other policies again.
#[test]
fn full_table() {
    let Some((mut datapath, mut probe)) = load() else {
        return;
    };
    let v4 = Spacing {
        len: Some(32),
        step_log2: 1,
    };
    let v6 = Spacing {
        len: Some(64),
        step_log2: 65,
    };
    for (family, first, limit, spacing) in [
        ("IPv4", ip("10.0.0.0"), MAX_PREFIXES_V4, v4),
        ("IPv6", ip("2001:db8::"), MAX_PREFIXES_V6, v6),
        (
            "IPv6 (longer than /64)",
            ip("2001:db8:77::"),
            MAX_LONG_PREFIXES_V6,
            Spacing::HOSTS,
        ),
    ] {
        let limit = limit as usize;
        let over = spaced_policy("full", first, limit + 1, spacing);
        // `.err()`: a policy that compiled would fill the message with its prefixes.
        assert_eq!(
            compile_generated(&over).err(),
            Some(CompileError::TooManyPrefixes {
                family,
                count: limit + 1,
                limit: limit as u32,
            }),
            "{family}: one prefix past capacity"
        );
        let small = spaced_policy("small", first, 3, spacing);
        datapath.apply(&compile_generated(&small).unwrap()).unwrap();
        let full = spaced_policy("full", first, limit, spacing);
        let compiled = compile_generated(&full).expect("a full table compiles");
        datapath.apply(&compiled).expect("a full table applies");
        let frames = frames_spaced(first, limit, spacing);
        let what = format!("{family}: table full");
        assert_agrees(&mut datapath, &mut probe, &what, &full, &frames);
    }

    // Past what the datapath holds, as a compiler without its checks would hand it over: more
    // IPv6 prefixes longer than /64 than their table takes.
    let first = ip("2001:db8:77::");
    let full = hosts_policy("full", first, MAX_LONG_PREFIXES_V6 as usize);
    let compiled = compile_generated(&full).unwrap();
    datapath.apply(&compiled).unwrap();
    let mut forced = compiled.clone();
    let past = ip_plus(first, MAX_LONG_PREFIXES_V6);
    forced.v6.extend(
        compile_generated(&hosts_policy("full", past, 1))
            .unwrap()
            .v6,
    );
    let error = datapath
        .apply(&forced)
        .expect_err("an over-full table must fail");
    assert!(
        error.to_string().contains("longer than /64"),
        "the error names the table: {error}"
    );
    let frames = frames_along(first, MAX_LONG_PREFIXES_V6 as usize);
    assert_agrees(
        &mut datapath,
        &mut probe,
        "after a refused over-full policy",
        &full,
        &frames,
    );

    // Another policy applies after the failure.
    let other = hosts_policy("other", ip_plus(first, 1 << 20), 5);
    datapath
        .apply(&compile_generated(&other).unwrap())
        .unwrap_or_else(|e| panic!("a small policy after a failed apply: {e}"));
    let mut frames = frames_along(ip_plus(first, 1 << 20), 5);
    frames.extend(frames_along(first, MAX_LONG_PREFIXES_V6 as usize));
    assert_agrees(
        &mut datapath,
        &mut probe,
        "a small policy after a failed apply",
        &other,
        &frames,
    );
}

fn ip_plus(ip: IpAddr, n: u32) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) + n)),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) + u128::from(n))),
    }
}

/// Policies that each fit the trie but together do not (three in a row, the first and third
/// disjoint) switch one after the other: the generation being built must not keep the stale
/// prefixes of the policy before last while the new ones go in.
#[test]
fn large_policies_in_turn() {
    let Some((mut datapath, mut probe)) = load() else {
        return;
    };
    let size = MAX_PREFIXES_V4 as usize * 3 / 5;
    let starts = [ip("10.0.0.0"), ip("10.64.0.0"), ip("10.128.0.0")];
    for (i, first) in starts.into_iter().enumerate() {
        let policy = hosts_policy(&format!("p{i}"), first, size);
        let compiled = compile_generated(&policy).unwrap();
        if let Err(e) = datapath.apply(&compiled) {
            panic!(
                "policy {i} of {size} IPv4 prefixes fits the trie alone but does not apply after \
                 {i} others: {e}"
            );
        }
        let what = format!("large policy {i}");
        assert_agrees(
            &mut datapath,
            &mut probe,
            &what,
            &policy,
            &frames_along(first, size),
        );
    }
}

/// The rule table holds two policies' lists: half of it per policy. One list more is refused;
/// a policy with exactly that many applies and is enforced.
#[test]
fn full_rule_table() {
    let Some((mut datapath, mut probe)) = load() else {
        return;
    };
    let half = (RULE_SLOTS / 2) as usize;
    let mut over = half_table(Action::Drop);
    over.policy.platforms[0]
        .entries
        .push(entry(&["10.10.0.1/32"], Protocol::Tcp, &[]));
    assert_eq!(
        compile_generated(&over).err(),
        Some(CompileError::TooManyRuleLists {
            count: half + 1,
            limit: half as u32,
        }),
        "one rule list more than half the table"
    );
    // Two full halves in turn: the second is written beside the first.
    let mut rng = StdRng::seed_from_u64(4096);
    for (round, action) in [Action::Drop, Action::Monitor].into_iter().enumerate() {
        let policy = half_table(action);
        let compiled = compile_generated(&policy).expect("half the table compiles");
        datapath
            .apply(&compiled)
            .unwrap_or_else(|e| panic!("round {round}: half the rule table: {e}"));
        let what = format!("round {round}: a full half of the rule table");
        let frames = half_table_frames(&mut rng);
        assert_agrees(&mut datapath, &mut probe, &what, &policy, &frames);
    }
}

/// Half the rule table: entry i names UDP port 1000 + i on its own /32 under 10.9.0.0/16, so
/// every prefix has a list of its own.
fn half_table(action: Action) -> GeneratedPolicy {
    let half = (RULE_SLOTS / 2) as usize;
    let entries: Vec<Entry> = (0..half)
        .map(|i| {
            let host = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 9, 0, 0)) + i as u32);
            let mut e = entry(&[], Protocol::Udp, &[(1000 + i as u16, 1000 + i as u16)]);
            e.prefixes = vec![IpNet::from(IpAddr::V4(host))];
            e
        })
        .collect();
    GeneratedPolicy {
        policy: Policy {
            platforms: vec![platform("lists", action, entries)],
        },
        addresses: Vec::new(),
    }
}

/// Frames to random hosts of a `half_table` policy, on their port or the next.
fn half_table_frames(rng: &mut StdRng) -> Vec<Vec<u8>> {
    let half = RULE_SLOTS / 2;
    (0..40)
        .map(|_| {
            let i = rng.random_range(0..half);
            let host = IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 9, 0, 0)) + i));
            let port = 1000 + i as u16 + rng.random_range(0..2);
            simple_frame(ip("172.16.0.1"), host, 17, 40000, port)
        })
        .collect()
}

/// More rule lists than the table has free slots, forced on the datapath, fail with the policy
/// in force still enforced; the next policy that fits applies.
#[test]
fn overfull_rule_table_keeps_the_policy() {
    let Some((mut datapath, mut probe)) = load() else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(4097);
    let in_force = half_table(Action::Drop);
    datapath
        .apply(&compile_generated(&in_force).unwrap())
        .unwrap();
    // Half a table of new lists plus one: one slot more than is free beside the policy in force.
    let mut forced = compile_generated(&half_table(Action::Allow)).unwrap();
    let one_more = Policy {
        platforms: vec![platform(
            "one",
            Action::Allow,
            vec![entry(&["10.10.0.1/32"], Protocol::Tcp, &[])],
        )],
    };
    forced.v4.extend(compile_sited_all(&one_more).unwrap().v4);
    assert!(
        datapath.apply(&forced).is_err(),
        "no free slot for the last list"
    );
    let frames = half_table_frames(&mut rng);
    assert_agrees(
        &mut datapath,
        &mut probe,
        "after a refused over-full rule table",
        &in_force,
        &frames,
    );
    let next = half_table(Action::Monitor);
    datapath
        .apply(&compile_generated(&next).unwrap())
        .unwrap_or_else(|e| panic!("half a table after a failed apply: {e}"));
    assert_agrees(
        &mut datapath,
        &mut probe,
        "half a table after a failed apply",
        &next,
        &frames,
    );
}

/// Learned hosts each bring the rule list of their entry plus their enclosing prefix, so they
/// can add many lists. The fast path must accept no more than a full compile would, or the table
/// fills past half and a policy the compiler accepts no longer applies.
#[test]
fn learned_hosts_leave_room_for_the_next_policy() {
    let Some((mut datapath, mut probe)) = load() else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(4098);
    const NETS: usize = 40;
    const LEARNING: usize = 64;
    // "learn": domain entries, UDP port 1000 + i each; "nets": a /24 each, UDP port 3000 + j.
    let learning: Vec<Entry> = (0..LEARNING)
        .map(|i| {
            let mut e = entry(&[], Protocol::Udp, &[(1000 + i as u16, 1000 + i as u16)]);
            e.domains = vec![enforcer::policy::model::DomainPattern::Exact(format!(
                "e{i}.example"
            ))];
            e
        })
        .collect();
    let nets: Vec<Entry> = (0..NETS)
        .map(|j| {
            entry(
                &[&format!("10.20.{j}.0/24")],
                Protocol::Udp,
                &[(3000 + j as u16, 3000 + j as u16)],
            )
        })
        .collect();
    let policy = Policy {
        platforms: vec![
            platform("learn", Action::Drop, learning),
            platform("nets", Action::Monitor, nets),
        ],
    };
    let mut compiled = compile_sited_all(&policy).unwrap();
    datapath.apply(&compiled).unwrap();
    // Host (i, j) in net j for entry i: a rule list no other host has.
    let mut addresses: Vec<EntryAddress> = Vec::new();
    let mut problems = Vec::new();
    for j in 0..NETS {
        let batch: Vec<EntryAddress> = (0..LEARNING)
            .map(|i| EntryAddress {
                platform: 0,
                entry: i,
                net: net(&format!("10.20.{j}.{}/32", i + 1)),
            })
            .collect();
        let full = compile_sited(&policy, addresses.iter().chain(&batch).copied());
        let mut grown = compiled.clone();
        match add_hosts(&mut grown, &policy, &batch) {
            Ok(changed) => {
                if let Err(e) = &full
                    && problems.is_empty()
                {
                    problems.push(format!(
                        "add_hosts accepted {} learned hosts that a full compile refuses: {e}",
                        addresses.len() + batch.len()
                    ));
                }
                if let Err(e) = datapath.write_hosts(&grown, &changed) {
                    problems.push(format!("write_hosts: {e}"));
                    break;
                }
                compiled = grown;
                addresses.extend(batch);
            }
            Err(e) => assert!(full.is_err(), "add_hosts refused ({e}) what compiles"),
        }
    }
    let learned = GeneratedPolicy {
        policy: policy.clone(),
        addresses: addresses.clone(),
    };
    let frames: Vec<Vec<u8>> = addresses
        .iter()
        .step_by(37)
        .map(|a| {
            let port = 1000 + a.entry as u16;
            simple_frame(ip("172.16.0.1"), a.net.addr(), 17, 40000, port)
        })
        .collect();
    let comparison = check_frames(&mut datapath, &mut probe, &Model::new(&learned), &frames);
    if !comparison.agrees() {
        problems.push(comparison.report("the learned hosts", "(learned hosts)"));
    }
    let next = half_table(Action::Drop);
    match datapath.apply(&compile_generated(&next).unwrap()) {
        Ok(_) => {
            let comparison = check_frames(
                &mut datapath,
                &mut probe,
                &Model::new(&next),
                &half_table_frames(&mut rng),
            );
            if !comparison.agrees() {
                problems.push(comparison.report("the next policy", &describe(&next)));
            }
        }
        Err(e) => problems.push(format!(
            "with {} learned hosts in force, a policy of {} rule lists (which compiles) does not \
             apply: {e}",
            addresses.len(),
            RULE_SLOTS / 2
        )),
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
