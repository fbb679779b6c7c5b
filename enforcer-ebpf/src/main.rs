//! The XDP datapath: parse each frame, look its addresses up in the policy table, apply the
//! winning rule, and count the verdict.
//!
//! Semantics (the reference matcher in `enforcer::reference` decides exactly the same):
//! - Ethernet with up to two VLAN tags (802.1Q, 802.1ad); a third tag or a truncated header makes
//!   the frame "unparsed". Ether types other than IPv4/IPv6 are "not IP". Both pass.
//! - Ports are the first four bytes of a TCP or UDP header, read only inside the IP packet (its
//!   length field, not Ethernet padding, says where it ends). A packet without them matches
//!   only entries without a port list (entries for the whole prefix, or protocol-wide ones).
//! - Fragments (IPv4, and IPv6 through its Fragment header): the first fragment carries the ports
//!   and decides the flow; a later one has no transport header, so its ports are unknown. When a
//!   fragment could hide its ports (RFC 1858) — a first fragment too short to hold them, or a
//!   fragment at offset 1 (8 bytes) that can overwrite them — drop rules of its protocol match
//!   it whatever their ports, so such fragments are dropped toward a prefix with any drop rule
//!   (an allow rule without ports still wins). Later fragments of a dropped first fragment are
//!   dropped too when the prefix is banned on every port, and are useless to the receiver
//!   otherwise.
//! - IPv6: at most eight extension headers are walked. A chain that is longer or truncated leaves
//!   the upper-layer protocol unknown, so only entries for every protocol can match; such packets
//!   are never let through a prefix banned on every port.
//! - Destination match = egress, source match = ingress. A packet arriving on an inside interface
//!   is looked up by its destination only, one arriving outside by its source only. Allow beats
//!   drop beats monitor, then the longest prefix, then platform name order, then egress.
#![no_std]
#![no_main]

mod bench;
mod dns;
mod lookup;
mod names;
mod parse;
mod sites;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use enforcer_common::{
    ACTION_DROP, Counter, DIRECTION_EGRESS, DIRECTION_INGRESS, DNS_BLOCKED_COUNTERS, FAMILIES,
    FAMILY_IPV4, FAMILY_IPV6, MATCH_COUNTERS, PASS_DNS_HELD, PASS_NO_MATCH, PASS_NOT_IP,
    PASS_REASONS, PASS_UNPARSED, PROTOCOL_ANY, PROTOCOL_UNKNOWN, QueryStash, ROLE_INSIDE,
    ROLE_OUTSIDE, RULE_SLOTS, RULES_PER_SLOT, RuleSlot, SITE_NONE, SITE_OTHER, SiteValue,
    action_precedence, match_counter_index,
};

use crate::names::NameOutcome;
use crate::parse::{Addresses, Packet, Parsed, Ports};

/// `[0]`: the generation of the lookup table (and name table) in force (0 or 1), read once per
/// packet.
#[map]
static ACTIVE_GENERATION: Array<u32> = Array::with_max_entries(1, 0);

/// Rule lists referenced by the leaves; written only into slots that no leaf in force points at.
#[map]
static RULE_SLOTS_MAP: Array<RuleSlot> = Array::with_max_entries(RULE_SLOTS, 0);

/// Per-CPU packets and bytes per (platform, action, direction, family).
#[map]
static MATCH_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MATCH_COUNTERS, 0);

/// Per-CPU packets and bytes of frames that matched nothing, per pass reason.
#[map]
static PASS_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(PASS_REASONS, 0);

/// Per-CPU packets and bytes of DNS queries answered (or dropped) by name, per (platform,
/// family).
#[map]
static DNS_BLOCKED: PerCpuArray<Counter> = PerCpuArray::with_max_entries(DNS_BLOCKED_COUNTERS, 0);

/// `[0]`: the `enforcer_dns` program, which the main program hands DNS queries to.
#[map]
static DNS_QUERY_PROGRAM: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// What the main program parsed and decided about a DNS query it hands to `enforcer_dns` (per
/// CPU: a tail call runs at once on the same CPU). Pinned, so that during an upgrade the old
/// main program and the new DNS program (already in the pinned program array) share it.
#[map]
static QUERY_STASH: PerCpuArray<QueryStash> = PerCpuArray::with_max_entries(1, 0);

/// What the program decided about one frame.
#[derive(Clone, Copy)]
enum Verdict {
    Pass(u32),
    Match(Winner),
    /// A DNS response the daemon sends on itself.
    Held,
    /// A DNS query for a name blocked by name: answered (XDP_TX) or dropped.
    NameBlocked {
        platform: u16,
        family: u8,
        answered: bool,
    },
}

#[derive(Clone, Copy)]
struct Winner {
    platform: u16,
    action: u8,
    direction: u8,
    family: u8,
}

#[xdp]
pub fn enforcer(ctx: XdpContext) -> u32 {
    let verdict = match parse::parse(&ctx) {
        Parsed::NotIp => (Verdict::Pass(PASS_NOT_IP), SITE_OTHER),
        Parsed::Unparsed => (Verdict::Pass(PASS_UNPARSED), SITE_OTHER),
        Parsed::Ip(packet) => {
            // One generation for every lookup, so a packet never mixes two policies.
            let generation = ACTIVE_GENERATION.get(0).copied().unwrap_or(0) & 1;
            let arrival = dns::Arrival::of(&ctx);
            // The site rides beside the verdict, not in it: an enum payload that some variants
            // leave undefined is a register the verifier refuses to spill.
            let (verdict, site) = decide(&packet, generation, arrival.role);
            let dropped = matches!(&verdict, Verdict::Match(w) if w.action == ACTION_DROP);
            // A query from a client side: the name table may answer it (see `names`).
            if !dropped && names::is_candidate(&packet) && arrival.role != ROLE_OUTSIDE {
                stash(&packet, verdict, generation, site);
                // SAFETY: the tail call does not return when it succeeds; when the program is
                // not there, this one carries on as if there were no name table.
                unsafe { DNS_QUERY_PROGRAM.tail_call(&ctx, 0) };
            }
            // DNS that is not dropped may teach user space banned names' addresses; a believed
            // response is held until that is done (see `dns`).
            if !dropped && dns::handle(&ctx, &packet, arrival) {
                (Verdict::Held, site)
            } else {
                (verdict, site)
            }
        }
    };
    finish(&ctx, verdict.0, verdict.1)
}

/// DNS queries from the main program: the name table's verdict, else the main program's.
#[xdp]
pub fn enforcer_dns(ctx: XdpContext) -> u32 {
    let Some(stash) = QUERY_STASH.get(0).copied() else {
        return xdp_action::XDP_PASS;
    };
    let (packet, verdict, generation) = stash.unpack();
    // A match's site, as the main program found it (see `stash`).
    let stashed_site = stash.reason;
    let family = names::family(&packet);
    let outcome = match names::lookup(&ctx, &packet, generation) {
        // The client's site may have its own action for the platform.
        (NameOutcome::Matched { platform, action }, question) => {
            let (_, client, _) = dns::addresses(&packet);
            let site = if sites::enabled(generation) {
                sites::site_of(generation, family, client)
            } else {
                SiteValue {
                    site: SITE_NONE,
                    variant: 0,
                }
            };
            let action = sites::action_for(generation, site.variant, platform, action);
            (
                NameOutcome::Matched { platform, action },
                question,
                site.site,
            )
        }
        (other, question) => (other, question, SITE_OTHER),
    };
    let verdict = match outcome {
        (NameOutcome::Matched { platform, action }, question, _) if names::blocks(action) => {
            let answered = match question {
                Some(q) => names::answer_nxdomain(&ctx, &packet, &q),
                None => false,
            };
            (
                Verdict::NameBlocked {
                    platform,
                    family,
                    answered,
                },
                SITE_OTHER,
            )
        }
        (NameOutcome::Matched { platform, action }, _, site) if names::counts_as_match(action) => (
            Verdict::Match(Winner {
                platform,
                action,
                direction: DIRECTION_EGRESS,
                family,
            }),
            site,
        ),
        // The main program's verdict, with its site.
        _ => (verdict, stashed_site),
    };
    let (verdict, site) = verdict;
    if matches!(verdict, Verdict::NameBlocked { .. }) {
        return finish(&ctx, verdict, site);
    }
    let verdict = if dns::handle(&ctx, &packet, dns::Arrival::of(&ctx)) {
        Verdict::Held
    } else {
        verdict
    };
    finish(&ctx, verdict, site)
}

#[inline(always)]
fn stash(packet: &Packet, verdict: Verdict, generation: u32, site: u32) {
    let Some(slot) = QUERY_STASH.get_ptr_mut(0) else {
        return;
    };
    let (family, src, dst) = dns::addresses(packet);
    let (kind, reason, w) = match verdict {
        Verdict::Match(w) => (1, site, w),
        Verdict::Pass(reason) => (
            0,
            reason,
            Winner {
                platform: 0,
                action: 0,
                direction: 0,
                family,
            },
        ),
        _ => return,
    };
    // SAFETY: this CPU's stash, read by the tail-called program on this CPU right after.
    // Offsets are below parse's bound (0x4000), so they fit in u32.
    #[allow(clippy::cast_possible_truncation)]
    unsafe {
        *slot = QueryStash {
            src,
            dst,
            l3: packet.l3 as u32,
            l4: packet.ports.l4 as u32,
            generation,
            kind,
            reason,
            platform: w.platform,
            sport: packet.ports.src,
            dport: packet.ports.dst,
            family,
            protocol: packet.protocol,
            action: w.action,
            direction: w.direction,
            _pad: [0; 2],
        };
    }
}

/// The stash read back as the main program's parse and verdict.
trait Unpack {
    fn unpack(&self) -> (Packet, Verdict, u32);
}

impl Unpack for QueryStash {
    #[inline(always)]
    fn unpack(&self) -> (Packet, Verdict, u32) {
        let addresses = if self.family == FAMILY_IPV4 {
            Addresses::V4 {
                src: [self.src[0], self.src[1], self.src[2], self.src[3]],
                dst: [self.dst[0], self.dst[1], self.dst[2], self.dst[3]],
            }
        } else {
            Addresses::V6 {
                src: self.src,
                dst: self.dst,
            }
        };
        let packet = Packet {
            addresses,
            protocol: self.protocol,
            ports: Ports {
                known: true,
                hidden: 0,
                src: self.sport,
                dst: self.dport,
                l4: (self.l4 & 0x3FFF) as usize,
            },
            l3: (self.l3 & 0x3FFF) as usize,
        };
        let verdict = if self.kind == 1 {
            Verdict::Match(Winner {
                platform: self.platform,
                action: self.action,
                direction: self.direction,
                family: self.family,
            })
        } else {
            Verdict::Pass(self.reason & 3)
        };
        (packet, verdict, self.generation & 1)
    }
}

/// A program that passes everything: the baseline the benchmark divides by.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// A program that drops everything: the floor the flood benchmark (tests/src/bin/bench_flood.rs)
/// measures every way of dropping against.
#[xdp]
pub fn xdp_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// The single exit: count the verdict and return its XDP action.
#[inline(always)]
fn finish(ctx: &XdpContext, verdict: Verdict, site: u32) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let (counter, action) = match verdict {
        Verdict::Pass(reason) => (PASS_STATS.get_ptr_mut(reason), xdp_action::XDP_PASS),
        Verdict::Held => (PASS_STATS.get_ptr_mut(PASS_DNS_HELD), xdp_action::XDP_DROP),
        Verdict::NameBlocked {
            platform,
            family,
            answered,
        } => (
            DNS_BLOCKED.get_ptr_mut(platform as u32 * FAMILIES + family as u32),
            names::blocked_action(answered),
        ),
        Verdict::Match(w) => {
            if site != SITE_NONE {
                sites::count(site, w.platform, w.action, bytes);
            }
            let index = match_counter_index(w.platform, w.action, w.direction, w.family);
            let action = if w.action == ACTION_DROP {
                xdp_action::XDP_DROP
            } else {
                xdp_action::XDP_PASS
            };
            (MATCH_STATS.get_ptr_mut(index), action)
        }
    };
    if let Some(counter) = counter {
        // SAFETY: per-CPU map value, only this CPU writes it while the program runs.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
    action
}

/// The verdict of the policy in force for a packet arriving on an interface of `role`: one
/// arriving inside is looked up by its destination only (egress), one arriving outside by its
/// source only (ingress): a flow through the gateway is matched by the remote end's address
/// either way, with one lookup a packet. An interface of both roles looks up both.
#[inline(always)]
fn decide(packet: &Packet, generation: u32, role: u32) -> (Verdict, u32) {
    let (addresses, protocol, ports) = (&packet.addresses, packet.protocol, packet.ports);
    let (family, dst, src) = match addresses {
        Addresses::V4 { src, dst } => (
            FAMILY_IPV4,
            (0, u32::from_be_bytes(*dst) as u64),
            (0, u32::from_be_bytes(*src) as u64),
        ),
        Addresses::V6 { src, dst } => (FAMILY_IPV6, halves(dst), halves(src)),
    };
    let generation = generation as u64 & 1;
    // Ports a fragment hides could be any: drop rules match whatever their ports.
    let any_port_actions = (ports.hidden as u64 & 1) << ACTION_DROP;
    // An unknown port is 0x10000: inside no rule's range, so rules with ports cannot match.
    let query = |port: u16| -> u64 {
        let port = if ports.known { port as u64 } else { 0x1_0000 };
        generation << 48
            | (family as u64) << 40
            | (protocol as u64) << 32
            | any_port_actions << 24
            | port
    };
    let egress = if role != ROLE_OUTSIDE {
        best_rule(dst.0, dst.1, query(ports.dst))
    } else {
        0
    };
    let ingress = if role != ROLE_INSIDE {
        best_rule(src.0, src.1, query(ports.src))
    } else {
        0
    };
    // A fragment that hides its ports can match a site's drop where the policy's own action
    // matches nothing: it looks its site up even so (fragments are rare).
    let hidden = ports.hidden != 0;
    // Only a matched packet looks its client's site up: the inside address, the source of an
    // egress match and the destination of an ingress one. A site with overrides of a leaf's
    // platforms gets the leaf's verdict for its variant.
    let (_, src_bytes, dst_bytes) = dns::addresses(packet);
    let generation = generation as u32;
    let none = SiteValue {
        site: SITE_NONE,
        variant: 0,
    };
    let on = sites::enabled(generation);
    let mut egress_site = none;
    let mut egress = egress;
    if on && role != ROLE_OUTSIDE && (egress != 0 || hidden) {
        egress_site = sites::site_of(generation, family, src_bytes);
        if (egress & BY_SITE != 0 || hidden) && egress_site.variant != 0 {
            let variant = (egress_site.variant as u64 & 0xFF) << 52;
            egress = best_rule(dst.0, dst.1, query(ports.dst) | variant);
        }
    }
    let mut ingress_site = none;
    let mut ingress = ingress;
    if on && role != ROLE_INSIDE && (ingress != 0 || hidden) {
        ingress_site = sites::site_of(generation, family, dst_bytes);
        if (ingress & BY_SITE != 0 || hidden) && ingress_site.variant != 0 {
            let variant = (ingress_site.variant as u64 & 0xFF) << 52;
            ingress = best_rule(src.0, src.1, query(ports.src) | variant);
        }
    }
    // On a complete tie the destination (egress) match wins.
    let (egress, ingress) = (egress & !BY_SITE, ingress & !BY_SITE);
    let (score, direction, site) = if ingress > egress {
        (ingress, DIRECTION_INGRESS, ingress_site.site)
    } else {
        (egress, DIRECTION_EGRESS, egress_site.site)
    };
    if score == 0 {
        return (Verdict::Pass(PASS_NO_MATCH), SITE_OTHER);
    }
    (
        Verdict::Match(Winner {
            platform: ((score >> 8) & 0xFFFF) as u16,
            action: (score & 0xFF) as u8,
            direction,
            family,
        }),
        site,
    )
}

/// Set in `best_rule`'s score when the leaf's verdict differs for some site (see `sites`).
const BY_SITE: u64 = 1 << 24;

#[inline(always)]
#[allow(clippy::cast_possible_truncation)] // each cast takes exactly the half it names
fn halves(addr: &[u8; 16]) -> (u64, u64) {
    let v = u128::from_be_bytes(*addr);
    ((v >> 64) as u64, v as u64)
}

/// `enforcer_common::action_precedence` as a table of two bits per action code (codes 0-3),
/// computed at compile time so the hot loop looks precedence up instead of branching.
const PRECEDENCE_BY_ACTION: u64 = {
    let mut table = 0u64;
    let mut action = 0u8;
    while action < 4 {
        table |= (action_precedence(action) as u64 & 3) << (2 * action as u64);
        action += 1;
    }
    table
};
// Every code's precedence fits its two bits.
const _: () = {
    let mut action = 0u8;
    while action < 4 {
        assert!(
            (PRECEDENCE_BY_ACTION >> (2 * action as u64)) & 3 == action_precedence(action) as u64
        );
        action += 1;
    }
};

/// The best rule for one address, as a score that orders winners: action precedence, then
/// prefix length, then platform name order (`rank`); below those sit the platform id (bits
/// 8-23, what the packet is counted under) and the action (low byte); bit 24 (`BY_SITE`) says
/// the leaf has per-site verdicts. 0: no rule.
///
/// A global function, so the verifier checks it once rather than once per parse path (parsing
/// IPv6 extension headers alone yields hundreds of paths). Its arguments are plain scalars:
/// the address as two halves (IPv4 in the low 32 bits of `addr_lo`) and `query` = generation
/// << 48 | family << 40 | protocol << 32 | any-port actions << 24 | port (0x10000 when
/// unknown), plus the client's variant << 52 when it is known (0: the policy's own actions;
/// see `sites`), where bit `a` of the any-port actions lets rules of action `a` match whatever
/// their ports (drop, for a fragment that hides its ports). The loop learns no
/// constants (no branch on whether ports are known, no per-action branch, no running maximum),
/// which keeps its verification linear in the number of rules.
#[unsafe(no_mangle)]
#[inline(never)]
#[allow(clippy::cast_possible_truncation)] // unpacks the bit fields of `query` and `addr_lo`
pub extern "C" fn best_rule(addr_hi: u64, addr_lo: u64, query: u64) -> u64 {
    let generation = (query >> 48) & 1;
    let family = (query >> 40) as u8;
    let protocol = (query >> 32) as u8;
    let any_port_actions = (query >> 24) as u8;
    let port = (query & 0x1_FFFF) as u32;
    let variant = ((query >> 52) & 0xFF) as u32;
    let Some((id, mut r)) = lookup::leaf(generation, family, addr_hi, addr_lo) else {
        return 0;
    };
    let by_site = if r.by_site != 0 { BY_SITE } else { 0 };
    if by_site != 0
        && variant != 0
        && let Some(changed) = sites::leaf_for(generation as u32, variant, id)
    {
        r = changed;
    }
    // Most prefixes: the verdict is in the leaf (see `RuleRef::direct`).
    if r.direct != 0 {
        return r.direct | by_site;
    }
    let Some(slot) = RULE_SLOTS_MAP.get(r.slot) else {
        return 0;
    };
    // Rules are stored best first (see `RuleRef::order`): the first that matches wins.
    for k in 0..RULES_PER_SLOT {
        if k as u32 >= r.count {
            break;
        }
        let Some(&position) = r.order.get(k) else {
            break;
        };
        let i = (position as usize) & (RULES_PER_SLOT - 1);
        let (Some(rule), Some(&prefix_len)) = (slot.rules.get(i), r.prefix_lens.get(i)) else {
            break;
        };
        if rule.protocol != PROTOCOL_ANY {
            // By shift rather than by comparing actions, like precedence below.
            let any_port = (any_port_actions >> (rule.action & 7)) & 1;
            // An unwalkable IPv6 chain may hide any protocol: such rules match it too.
            let hidden_protocol = (protocol == PROTOCOL_UNKNOWN) as u8 & any_port;
            if rule.protocol != protocol && hidden_protocol == 0 {
                continue;
            }
            if rule.has_ports != 0
                && any_port == 0
                && !(rule.port_first as u32 <= port && port <= rule.port_last as u32)
            {
                continue;
            }
        }
        // Precedence by table lookup rather than by branches, which would multiply the
        // verifier's states.
        let precedence = (PRECEDENCE_BY_ACTION >> ((rule.action as u64 & 3) * 2)) & 3;
        return (precedence << 56)
            | ((prefix_len as u64) << 48)
            | (((0xFFFF - rule.rank) as u64) << 32)
            | ((rule.platform as u64) << 8)
            | rule.action as u64
            | by_site;
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
