//! The lookup benchmark's programs and maps (enforcer-ebpf/src/bench.rs): loaded only by
//! [`Datapath::load_for_lookup_bench`] (enforcer/benches/datapath and the test below), never by
//! the daemon, whose copy of the address table holds one entry.

use std::net::IpAddr;

use aya::EbpfLoader;
use aya::maps::{Array, LpmTrie, MapData, PerCpuArray, PerCpuValues, lpm_trie::Key};
use enforcer_common::BENCH_ADDRESSES;
use ipnet::IpNet;

use super::{Datapath, DatapathError, MAP_ACTIVE, PROGRAM_OBJECT};

/// Parses and takes the next address only.
pub const BENCH_PARSE_PROGRAM: &str = "bench_parse";
/// The same, then the enforcer's lookup (`best_rule`) of the address.
pub const BENCH_ENFORCER_PROGRAM: &str = "bench_enforcer";
/// The same, then one lookup in a plain kernel LPM trie.
pub const BENCH_LPM_PROGRAM: &str = "bench_lpm";

const MAP_ADDRS: &str = "BENCH_ADDRS";
const MAP_STATE: &str = "BENCH_STATE";
const MAP_LPM: [&str; 2] = ["BENCH_LPM_V4", "BENCH_LPM_V6"];

/// The maps of the benchmark's programs.
pub struct LookupBench {
    addresses: Array<MapData, [u64; 2]>,
    state: PerCpuArray<MapData, [u64; 2]>,
    lpm_v4: LpmTrie<MapData, [u8; 4], u64>,
    lpm_v6: LpmTrie<MapData, [u8; 16], u64>,
}

/// What the benchmark's programs did since [`LookupBench::reset`], summed over the CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LookupCount {
    pub runs: u64,
    pub found: u64,
}

impl Datapath {
    /// As [`Datapath::load_unpinned`], with the benchmark's address table at its full size and
    /// its three programs loaded.
    pub fn load_for_lookup_bench() -> Result<(Self, LookupBench), DatapathError> {
        let capacity = crate::compile::Capacity::default();
        let ebpf = EbpfLoader::new()
            .map_max_entries(MAP_ADDRS, BENCH_ADDRESSES)
            .load(PROGRAM_OBJECT)?;
        let mut datapath = Self::from_ebpf(ebpf, capacity)?;
        for name in [
            BENCH_PARSE_PROGRAM,
            BENCH_ENFORCER_PROGRAM,
            BENCH_LPM_PROGRAM,
        ] {
            datapath
                .xdp_mut(name)?
                .load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        let ebpf = &mut datapath.ebpf;
        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(DatapathError::MissingMap(name));
        let map_err = |name: &'static str| move |source| DatapathError::Map { name, source };
        let bench = LookupBench {
            addresses: Array::try_from(take(MAP_ADDRS)?).map_err(map_err(MAP_ADDRS))?,
            state: PerCpuArray::try_from(take(MAP_STATE)?).map_err(map_err(MAP_STATE))?,
            lpm_v4: LpmTrie::try_from(take(MAP_LPM[0])?).map_err(map_err(MAP_LPM[0]))?,
            lpm_v6: LpmTrie::try_from(take(MAP_LPM[1])?).map_err(map_err(MAP_LPM[1]))?,
        };
        Ok((datapath, bench))
    }
}

impl Datapath {
    /// For the benchmark: puts in force the generation the last [`Datapath::apply`] wrote
    /// (`previous` false) or the one before it (`previous` true), without writing either, so
    /// that two policies applied one after the other can be compared packet by packet. Leave the
    /// last one in force before the next `apply`, which writes the other.
    pub fn select_generation_for_bench(&mut self, previous: bool) -> Result<(), DatapathError> {
        let g = if previous {
            1 - self.generation
        } else {
            self.generation
        };
        self.active
            .set(0, u32::from(g != 0), 0)
            .map_err(|source| DatapathError::Map {
                name: MAP_ACTIVE,
                source,
            })
    }
}

impl LookupBench {
    /// Makes the programs look up `addresses` in turn, one a run (repeated to fill the table).
    pub fn set_addresses(&mut self, addresses: &[IpAddr]) -> Result<(), DatapathError> {
        for (index, address) in (0..BENCH_ADDRESSES).zip(addresses.iter().cycle()) {
            let value = match address {
                IpAddr::V4(a) => [0, u64::from(u32::from(*a))],
                IpAddr::V6(a) => {
                    let v = u128::from(*a);
                    // The two halves, as `best_rule` takes them.
                    #[allow(clippy::cast_possible_truncation)]
                    [(v >> 64) as u64, v as u64]
                }
            };
            self.addresses
                .set(index, value, 0)
                .map_err(|source| DatapathError::Map {
                    name: MAP_ADDRS,
                    source,
                })?;
        }
        Ok(())
    }

    /// Adds `prefixes` to the plain LPM tries.
    pub fn insert_lpm(&mut self, prefixes: &[IpNet]) -> Result<(), DatapathError> {
        for prefix in prefixes {
            let len = u32::from(prefix.prefix_len());
            match prefix {
                IpNet::V4(n) => self
                    .lpm_v4
                    .insert(&Key::new(len, n.network().octets()), 1, 0)
                    .map_err(|source| DatapathError::Map {
                        name: MAP_LPM[0],
                        source,
                    })?,
                IpNet::V6(n) => self
                    .lpm_v6
                    .insert(&Key::new(len, n.network().octets()), 1, 0)
                    .map_err(|source| DatapathError::Map {
                        name: MAP_LPM[1],
                        source,
                    })?,
            }
        }
        Ok(())
    }

    /// Empties the plain LPM tries.
    pub fn clear_lpm(&mut self) -> Result<(), DatapathError> {
        let map_err = |name: &'static str| move |source| DatapathError::Map { name, source };
        let keys: Vec<Key<[u8; 4]>> = self
            .lpm_v4
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(MAP_LPM[0]))?;
        for key in keys {
            self.lpm_v4.remove(&key).map_err(map_err(MAP_LPM[0]))?;
        }
        let keys: Vec<Key<[u8; 16]>> = self
            .lpm_v6
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(MAP_LPM[1]))?;
        for key in keys {
            self.lpm_v6.remove(&key).map_err(map_err(MAP_LPM[1]))?;
        }
        Ok(())
    }

    /// Zeroes the counts (and starts again at the first address).
    pub fn reset(&mut self) -> Result<(), DatapathError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DatapathError::Io(e))?;
        let zeros = PerCpuValues::try_from(vec![[0u64; 2]; cpus]).map_err(DatapathError::Io)?;
        self.state
            .set(0, zeros, 0)
            .map_err(|source| DatapathError::Map {
                name: MAP_STATE,
                source,
            })
    }

    /// The runs and the addresses found since the last [`LookupBench::reset`].
    pub fn count(&self) -> Result<LookupCount, DatapathError> {
        let values = self.state.get(&0, 0).map_err(|source| DatapathError::Map {
            name: MAP_STATE,
            source,
        })?;
        Ok(values
            .iter()
            .fold(LookupCount::default(), |acc, v| LookupCount {
                runs: acc.runs + v[0],
                found: acc.found + v[1],
            }))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::compile;
    use crate::policy::policy_of;

    /// A UDP frame to `dst` (the programs take the address from their table, the family from
    /// the frame).
    fn frame(dst: IpAddr) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        match dst {
            IpAddr::V4(d) => {
                f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0]);
                f.extend_from_slice(&[198, 18, 0, 2]);
                f.extend_from_slice(&d.octets());
            }
            IpAddr::V6(d) => {
                f.extend_from_slice(&[0x86, 0xDD, 0x60, 0, 0, 0, 0, 8, 17, 64]);
                f.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 2).octets());
                f.extend_from_slice(&d.octets());
            }
        }
        f.extend_from_slice(&[0x9c, 0x40, 0x01, 0xbb, 0, 8, 0, 0]);
        f
    }

    /// Each program looks up one address a run, in turn, and finds exactly the ones under the
    /// policy's prefixes (the enforcer) or the trie's (the baseline); parsing alone finds none.
    #[test]
    fn bench_programs_look_up_one_address_a_run() {
        let (mut datapath, mut bench) = match Datapath::load_for_lookup_bench() {
            Ok(loaded) => loaded,
            Err(error) if crate::sys::is_root() => panic!("loading the bench programs: {error}"),
            Err(_) => {
                eprintln!("skipped: loading the XDP program needs root and BPF");
                return;
            }
        };
        let policy = policy_of(&[
            "platform: banned\nmatch:\n  - prefixes: [203.0.113.0/24, \"2001:db8:1::/48\"]\n",
        ]);
        datapath.apply(&compile::compile(&policy).unwrap()).unwrap();
        let prefixes: Vec<IpNet> = ["203.0.113.0/24", "2001:db8:1::/48"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        bench.insert_lpm(&prefixes).unwrap();
        let v4 = |d: u8| IpAddr::V4(Ipv4Addr::new(203, 0, 113, d));
        let v4_miss = IpAddr::V4(Ipv4Addr::new(203, 0, 114, 1));
        let v6 = |d: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, d));
        let v6_miss = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1));
        // Three hits then a miss, repeated: 3/4 of the runs find their address.
        for addresses in [
            [v4(1), v4(2), v4(3), v4_miss],
            [v6(1), v6(2), v6(3), v6_miss],
        ] {
            bench.set_addresses(&addresses).unwrap();
            let frame = frame(addresses[0]);
            for (program, found) in [
                (BENCH_PARSE_PROGRAM, 0),
                (BENCH_ENFORCER_PROGRAM, 300),
                (BENCH_LPM_PROGRAM, 300),
            ] {
                bench.reset().unwrap();
                datapath.test_run_repeat(program, &frame, 400).unwrap();
                assert_eq!(
                    bench.count().unwrap(),
                    LookupCount { runs: 400, found },
                    "{program}, {:?}",
                    addresses[0]
                );
                // The 401st run takes the first address again: a hit (XDP_DROP) where any is.
                let (action, _) = datapath.test_run_repeat(program, &frame, 1).unwrap();
                assert_eq!(action, if found > 0 { 1 } else { 2 }, "{program}");
            }
        }
        bench.clear_lpm().unwrap();
        bench.reset().unwrap();
        datapath
            .test_run_repeat(BENCH_LPM_PROGRAM, &frame(v4(1)), 100)
            .unwrap();
        assert_eq!(bench.count().unwrap().found, 0, "the cleared trie");
    }
}
