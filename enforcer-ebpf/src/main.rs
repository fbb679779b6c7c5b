//! The XDP datapath: parse each frame, look its addresses up in the policy tries, apply the
//! winning rule, and count the verdict.
//!
//! Semantics (the reference matcher in `enforcer::reference` decides exactly the same):
//! - Ethernet with up to two VLAN tags (802.1Q, 802.1ad); a third tag or a truncated header makes
//!   the frame "unparsed". Ether types other than IPv4/IPv6 are "not IP". Both pass.
//! - IPv4: a non-first fragment has no transport header, so its ports are unknown: it matches
//!   only entries without a port list (entries for the whole prefix, or protocol-wide ones). The
//!   first fragment carries the ports and decides the flow; later fragments of a dropped first
//!   fragment are dropped too when the prefix is banned on every port, and are useless to the
//!   receiver otherwise.
//! - IPv6: at most eight extension headers are walked. A chain that is longer or truncated leaves
//!   the upper-layer protocol unknown, so only entries for every protocol can match; such packets
//!   are never let through a prefix banned on every port.
//! - Destination match = egress, source match = ingress. Allow beats drop beats monitor, then the
//!   longest prefix, then the lower platform id (platform name order), then egress.
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use enforcer_common::{
    ACTION_ALLOW, ACTION_DROP, Counter, DIRECTION_EGRESS, DIRECTION_INGRESS, FAMILY_IPV4,
    FAMILY_IPV6, MATCH_COUNTERS, MAX_PREFIXES_V4, MAX_PREFIXES_V6, PASS_NO_MATCH, PASS_NOT_IP,
    PASS_REASONS, PASS_UNPARSED, PROTOCOL_ANY, RULE_SLOTS, RULES_PER_SLOT, RuleRef, RuleSlot,
    match_counter_index,
};

use crate::parse::{Addresses, Parsed, Ports};

/// IPv4 prefixes of the policy; the value names the rule slot that applies to addresses under
/// the prefix (its own rules plus those of every enclosing prefix).
#[map]
static PREFIXES_V4: LpmTrie<[u8; 4], RuleRef> = LpmTrie::with_max_entries(MAX_PREFIXES_V4, 0);

/// IPv6 prefixes of the policy, as `PREFIXES_V4`.
#[map]
static PREFIXES_V6: LpmTrie<[u8; 16], RuleRef> = LpmTrie::with_max_entries(MAX_PREFIXES_V6, 0);

/// Rule lists referenced by the tries; written only into slots that no prefix points at.
#[map]
static RULE_SLOTS_MAP: Array<RuleSlot> = Array::with_max_entries(RULE_SLOTS, 0);

/// Per-CPU packets and bytes per (platform, action, direction, family).
#[map]
static MATCH_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MATCH_COUNTERS, 0);

/// Per-CPU packets and bytes of frames that matched nothing, per pass reason.
#[map]
static PASS_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(PASS_REASONS, 0);

/// What the program decided about one frame.
enum Outcome {
    Pass(u32),
    Match(Winner),
}

#[derive(Clone, Copy)]
struct Winner {
    score: u64,
    platform: u16,
    action: u8,
    direction: u8,
    family: u8,
}

#[xdp]
pub fn enforcer(ctx: XdpContext) -> u32 {
    let outcome = match parse::parse(&ctx) {
        Parsed::NotIp => Outcome::Pass(PASS_NOT_IP),
        Parsed::Unparsed => Outcome::Pass(PASS_UNPARSED),
        Parsed::Ip(packet) => decide(&packet.addresses, packet.protocol, packet.ports),
    };
    finish(&ctx, outcome)
}

/// A program that passes everything: the baseline the benchmark divides by.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The single exit: count the verdict and return it.
#[inline(always)]
fn finish(ctx: &XdpContext, outcome: Outcome) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let (counter, verdict) = match outcome {
        Outcome::Pass(reason) => (PASS_STATS.get_ptr_mut(reason), xdp_action::XDP_PASS),
        Outcome::Match(w) => {
            let index = match_counter_index(w.platform, w.action, w.direction, w.family);
            let verdict = if w.action == ACTION_DROP {
                xdp_action::XDP_DROP
            } else {
                xdp_action::XDP_PASS
            };
            (MATCH_STATS.get_ptr_mut(index), verdict)
        }
    };
    if let Some(counter) = counter {
        // SAFETY: per-CPU map value, only this CPU writes it while the program runs.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
    verdict
}

#[inline(always)]
fn decide(addresses: &Addresses, protocol: u8, ports: Ports) -> Outcome {
    let (family, dst_rules, src_rules) = match addresses {
        Addresses::V4 { src, dst } => (
            FAMILY_IPV4,
            PREFIXES_V4.get(Key::new(32, *dst)),
            PREFIXES_V4.get(Key::new(32, *src)),
        ),
        Addresses::V6 { src, dst } => (
            FAMILY_IPV6,
            PREFIXES_V6.get(Key::new(128, *dst)),
            PREFIXES_V6.get(Key::new(128, *src)),
        ),
    };
    let mut best = Winner {
        score: 0,
        platform: 0,
        action: 0,
        direction: 0,
        family,
    };
    if let Some(r) = dst_rules {
        best_rule(r, DIRECTION_EGRESS, protocol, ports.known, ports.dst, &mut best);
    }
    if let Some(r) = src_rules {
        best_rule(r, DIRECTION_INGRESS, protocol, ports.known, ports.src, &mut best);
    }
    if best.score == 0 {
        Outcome::Pass(PASS_NO_MATCH)
    } else {
        Outcome::Match(best)
    }
}

/// Scans one rule slot and keeps the highest-scoring matching rule in `best`.
#[inline(always)]
fn best_rule(
    r: &RuleRef,
    direction: u8,
    protocol: u8,
    ports_known: bool,
    port: u16,
    best: &mut Winner,
) {
    let Some(slot) = RULE_SLOTS_MAP.get(r.slot) else {
        return;
    };
    for i in 0..RULES_PER_SLOT {
        if i as u32 >= r.count {
            break;
        }
        let (Some(rule), Some(&prefix_len)) = (slot.rules.get(i), r.prefix_lens.get(i)) else {
            break;
        };
        if rule.protocol != PROTOCOL_ANY {
            if rule.protocol != protocol {
                continue;
            }
            if rule.has_ports != 0 && !(ports_known && rule.port_first <= port && port <= rule.port_last) {
                continue;
            }
        }
        let precedence: u64 = match rule.action {
            ACTION_ALLOW => 3,
            ACTION_DROP => 2,
            _ => 1,
        };
        let score = (precedence << 40)
            | ((prefix_len as u64) << 32)
            | (((0xFFFF - rule.platform) as u64) << 8)
            | if direction == DIRECTION_EGRESS { 1 } else { 0 };
        if score > best.score {
            *best = Winner {
                score,
                platform: rule.platform,
                action: rule.action,
                direction,
                family: best.family,
            };
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
