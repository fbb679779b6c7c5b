//! Learned hosts written straight into the live tries (`compile::add_hosts` then
//! `Datapath::write_hosts`, the daemon's fast path for addresses learned from DNS), then full
//! applies on top of them: the datapath must agree with the reference after every step, and the
//! hosts of a policy that was replaced must be gone.

use enforcer::compile::{EntryAddress, add_hosts};
use rand::seq::IndexedRandom;
use tests::r#gen::policy::{random_learned, random_port};
use tests::r#gen::random_address;

use super::*;

const ROUNDS: usize = 8;
const BATCHES: usize = 3;
const RANDOM_FRAMES: usize = 300;

/// Frames to and from each host (TCP, UDP and a protocol without ports), from a client outside
/// the pool, usually on a port at an edge of one of the policy's port ranges.
fn frames_at(rng: &mut StdRng, policy: &Policy, hosts: &[IpAddr]) -> Vec<Vec<u8>> {
    let named: Vec<u16> = policy
        .platforms
        .iter()
        .flat_map(|p| p.entries.iter().flat_map(|e| e.ports.iter()))
        .flat_map(|r| [r.first, r.last])
        .collect();
    let mut frames = Vec::new();
    for &host in hosts {
        let client = random_address(rng, host.is_ipv6(), false);
        let other = if host.is_ipv6() { 58 } else { 1 };
        for protocol in [6, 17, other] {
            let near = match named.choose(rng) {
                Some(&port) if rng.random_bool(0.7) => port,
                _ => random_port(rng),
            };
            let far = random_port(rng);
            frames.push(simple_frame(client, host, protocol, far, near));
            frames.push(simple_frame(host, client, protocol, near, far));
        }
    }
    frames
}

/// Checks random frames and frames at `hosts` against the reference for `policy` with
/// `addresses`; panics with a report naming `what` on any disagreement.
fn check(
    datapath: &mut Datapath,
    probe: &mut Probe,
    rng: &mut StdRng,
    what: &str,
    policy: &Policy,
    addresses: &[EntryAddress],
    hosts: &[IpAddr],
) {
    let mut frames: Vec<Vec<u8>> = (0..RANDOM_FRAMES).map(|_| random_frame(rng)).collect();
    frames.extend(frames_at(rng, policy, hosts));
    let comparison = check_frames(datapath, probe, &Model::with(policy, addresses), &frames);
    if !comparison.agrees() {
        let generated = GeneratedPolicy {
            policy: policy.clone(),
            addresses: addresses.to_vec(),
        };
        panic!("{}", comparison.report(what, &describe(&generated)));
    }
}

fn host_ips(addresses: &[EntryAddress]) -> Vec<IpAddr> {
    addresses.iter().map(|a| a.net.addr()).collect()
}

#[test]
fn learned_hosts_then_full_apply() {
    let Some((mut datapath, mut probe)) = load() else {
        return;
    };
    let seed = seed();
    println!("learned hosts seed: {seed} (rerun with ENFORCER_DIFF_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut learned, mut refused) = (0usize, 0usize);
    // Hosts learned under the policy before: a full apply of another policy must remove them.
    let mut previous: Vec<IpAddr> = Vec::new();
    for round in 0..ROUNDS {
        let (generated, mut compiled, _) = compilable_policy(&mut rng);
        datapath
            .apply(&compiled)
            .unwrap_or_else(|e| panic!("seed {seed}: applying: {e}"));
        let policy = &generated.policy;
        let mut addresses = generated.addresses.clone();
        let what = format!("seed {seed}, round {round}, applied over the last round's hosts");
        check(
            &mut datapath,
            &mut probe,
            &mut rng,
            &what,
            policy,
            &addresses,
            &previous,
        );
        for batch in 0..BATCHES {
            let count = rng.random_range(1..=8);
            let hosts = random_learned(&mut rng, policy, count);
            let mut grown = compiled.clone();
            match add_hosts(&mut grown, policy, &hosts) {
                Ok(changed) => {
                    datapath
                        .write_hosts(&grown, &changed)
                        .unwrap_or_else(|e| panic!("seed {seed}: writing hosts: {e}"));
                    compiled = grown;
                    addresses.extend(hosts.iter().copied());
                    learned += hosts.len();
                    let full = compile_sited(policy, addresses.iter().copied());
                    assert_eq!(
                        Ok(&compiled),
                        full.as_ref(),
                        "seed {seed}: adding {hosts:?} is not what compiling them gives"
                    );
                }
                // Too many rules for a host: refused as a whole compile would refuse it, and
                // nothing is written (the frames below show the datapath unchanged).
                Err(e @ CompileError::TooManyRules { .. }) => {
                    let full = compile_sited(policy, addresses.iter().chain(&hosts).copied());
                    assert!(
                        matches!(full, Err(CompileError::TooManyRules { .. })),
                        "seed {seed}: add_hosts refused {hosts:?} ({e}) but compiling them gives \
                         {full:?}"
                    );
                    refused += hosts.len();
                }
                Err(e) => panic!("seed {seed}: adding hosts {hosts:?}: {e}"),
            }
            let mut probed = host_ips(&hosts);
            probed.extend(previous.iter().copied());
            let what = format!("seed {seed}, round {round}, after learned batch {batch}");
            check(
                &mut datapath,
                &mut probe,
                &mut rng,
                &what,
                policy,
                &addresses,
                &probed,
            );
        }
        // A full apply of the same policy with everything learned, as on a reload.
        let full = compile_sited(policy, addresses.iter().copied())
            .unwrap_or_else(|e| panic!("seed {seed}: compiling with the learned hosts: {e}"));
        datapath
            .apply(&full)
            .unwrap_or_else(|e| panic!("seed {seed}: applying: {e}"));
        previous = host_ips(&addresses[generated.addresses.len()..]);
        let what = format!("seed {seed}, round {round}, full apply with the learned hosts");
        check(
            &mut datapath,
            &mut probe,
            &mut rng,
            &what,
            policy,
            &addresses,
            &previous,
        );
    }
    println!("{ROUNDS} rounds: {learned} hosts learned, {refused} refused for too many rules");
    assert!(
        learned > ROUNDS * BATCHES,
        "too few hosts learned: {learned}"
    );
}
