//! Programs for the lookup benchmark (enforcer/benches/datapath), never attached and never
//! loaded by the daemon. Each parses the frame like the enforcer, then takes the next address of
//! `BENCH_ADDRS` (a per-CPU counter advances every run), so that the many runs of one
//! BPF_PROG_TEST_RUN call look up many distinct addresses, as traffic does; one repeated address
//! would keep its path through any table in cache. They differ only in the lookup that follows:
//! none (`bench_parse`), the enforcer's `best_rule`, or one plain kernel LPM trie lookup (the
//! baseline). Each counts the addresses it found, which the benchmark checks.

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use enforcer_common::{
    BENCH_ADDRESSES, BENCH_LPM_V4_ENTRIES, BENCH_LPM_V6_ENTRIES, FAMILY_IPV4, FAMILY_IPV6,
};

use crate::parse::{self, Addresses, Packet, Parsed};

/// The addresses to look up, as `best_rule` takes them: (high half, low half), IPv4 in the low
/// 32 bits of the low half. One entry in the object; the benchmark's loader makes it
/// `BENCH_ADDRESSES`.
#[map]
static BENCH_ADDRS: Array<[u64; 2]> = Array::with_max_entries(1, 0);

/// Per CPU: `[0]` the runs so far (the next address), `[1]` the addresses found.
#[map]
static BENCH_STATE: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// The baseline: the benchmark's prefixes in plain kernel LPM tries, one per family.
#[map]
static BENCH_LPM_V4: LpmTrie<[u8; 4], u64> = LpmTrie::with_max_entries(BENCH_LPM_V4_ENTRIES, 0);
#[map]
static BENCH_LPM_V6: LpmTrie<[u8; 16], u64> = LpmTrie::with_max_entries(BENCH_LPM_V6_ENTRIES, 0);

/// Parsing and the address only: what the other two subtract.
#[xdp]
pub fn bench_parse(ctx: XdpContext) -> u32 {
    run(&ctx, |_, _, _| false)
}

/// Then the enforcer's lookup, with the generation in force and the packet's protocol and
/// destination port, as `decide` asks it.
#[xdp]
pub fn bench_enforcer(ctx: XdpContext) -> u32 {
    run(&ctx, |packet, family, (hi, lo)| {
        let generation = crate::ACTIVE_GENERATION.get(0).copied().unwrap_or(0) as u64 & 1;
        let port = if packet.ports.known {
            packet.ports.dst as u64
        } else {
            0x1_0000
        };
        let query =
            generation << 48 | (family as u64) << 40 | (packet.protocol as u64) << 32 | port;
        crate::best_rule(hi, lo, query) != 0
    })
}

/// Then one lookup in the plain LPM trie of the packet's family.
#[xdp]
pub fn bench_lpm(ctx: XdpContext) -> u32 {
    run(&ctx, |_, family, (hi, lo)| {
        if family == FAMILY_IPV4 {
            #[allow(clippy::cast_possible_truncation)] // IPv4 is the low 32 bits
            let key = Key::new(32, (lo as u32).to_be_bytes());
            BENCH_LPM_V4.get(key).is_some()
        } else {
            let key = Key::new(128, ((hi as u128) << 64 | lo as u128).to_be_bytes());
            BENCH_LPM_V6.get(key).is_some()
        }
    })
}

/// Parses the frame, takes this run's address (of the frame's family) and counts whether
/// `lookup` found it. XDP_DROP when found, else XDP_PASS.
#[inline(always)]
fn run(ctx: &XdpContext, lookup: impl Fn(&Packet, u8, (u64, u64)) -> bool) -> u32 {
    let Parsed::Ip(packet) = parse::parse(ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    let family = match packet.addresses {
        Addresses::V4 { .. } => FAMILY_IPV4,
        Addresses::V6 { .. } => FAMILY_IPV6,
    };
    let Some(state) = BENCH_STATE.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: this CPU's value; a test run does not migrate, and only it writes the value.
    let runs = unsafe { (*state)[0] };
    #[allow(clippy::cast_possible_truncation)] // masked to the table's size
    let index = (runs as u32) & (BENCH_ADDRESSES - 1);
    let Some(&[hi, lo]) = BENCH_ADDRS.get(index) else {
        return xdp_action::XDP_ABORTED;
    };
    let found = lookup(&packet, family, (hi, lo));
    // SAFETY: as above.
    unsafe {
        (*state)[0] = runs + 1;
        (*state)[1] += found as u64;
    }
    if found {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}
