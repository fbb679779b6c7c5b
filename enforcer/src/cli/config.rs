//! `--config FILE`: the `run` options as YAML, keys named like the flags (`xdp-mode: skb`).

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use yaml_rust2::{Yaml, YamlLoader};

use crate::cli::LogFormat;
use crate::datapath::attach::ModeRequest;
use crate::policy;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileConfig {
    pub rules: Option<PathBuf>,
    pub iface: Option<Vec<String>>,
    pub xdp_mode: Option<ModeRequest>,
    pub resolver: Option<Vec<String>>,
    pub metrics: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub bpffs: Option<PathBuf>,
    pub never_block: Option<Vec<IpNet>>,
    pub ttl_floor: Option<u64>,
    pub ttl_ceiling: Option<u64>,
    pub grace: Option<u64>,
    pub max_addresses_per_name: Option<u64>,
    pub shared_suffix: Option<Vec<String>>,
    pub socket: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
        let mut config = FileConfig::default();
        let Some(doc) = docs.into_iter().next() else {
            return Ok(config);
        };
        let Yaml::Hash(map) = doc else {
            return Err("expected a mapping of option names to values".into());
        };
        for (key, value) in map {
            let Yaml::String(key) = key else {
                return Err("option names must be strings".into());
            };
            let bad = |what: &str| format!("{key}: expected {what}");
            match key.as_str() {
                "rules" => config.rules = Some(string(&value).ok_or_else(|| bad("a path"))?.into()),
                "iface" => {
                    config.iface = Some(strings(&value).ok_or_else(|| bad("interface names"))?)
                }
                "xdp-mode" => {
                    config.xdp_mode = Some(match string(&value).as_deref() {
                        Some("auto") => ModeRequest::Auto,
                        Some("native") => ModeRequest::Native,
                        Some("skb") => ModeRequest::Skb,
                        _ => return Err(bad("auto, native or skb")),
                    })
                }
                "resolver" => {
                    config.resolver = Some(strings(&value).ok_or_else(|| bad("addresses"))?)
                }
                "metrics" => {
                    config.metrics = Some(string(&value).ok_or_else(|| bad("ADDR:PORT or off"))?)
                }
                "state-dir" => {
                    config.state_dir = Some(string(&value).ok_or_else(|| bad("a path"))?.into())
                }
                "bpffs" => config.bpffs = Some(string(&value).ok_or_else(|| bad("a path"))?.into()),
                "never-block" => {
                    let items = strings(&value).ok_or_else(|| bad("CIDRs"))?;
                    let nets = items
                        .iter()
                        .map(|s| policy::parse_prefix(s).map_err(|e| format!("{key}: {e}")))
                        .collect::<Result<Vec<_>, _>>()?;
                    config.never_block = Some(nets);
                }
                "ttl-floor" => {
                    config.ttl_floor = Some(number(&value).ok_or_else(|| bad("seconds"))?)
                }
                "ttl-ceiling" => {
                    config.ttl_ceiling = Some(number(&value).ok_or_else(|| bad("seconds"))?)
                }
                "grace" => config.grace = Some(number(&value).ok_or_else(|| bad("seconds"))?),
                "max-addresses-per-name" => {
                    config.max_addresses_per_name =
                        Some(number(&value).ok_or_else(|| bad("a count"))?)
                }
                "shared-suffix" => {
                    config.shared_suffix = Some(strings(&value).ok_or_else(|| bad("names"))?)
                }
                "socket" => {
                    config.socket = Some(string(&value).ok_or_else(|| bad("a path"))?.into())
                }
                "log-format" => {
                    config.log_format = Some(match string(&value).as_deref() {
                        Some("text") => LogFormat::Text,
                        Some("json") => LogFormat::Json,
                        _ => return Err(bad("text or json")),
                    })
                }
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        Ok(config)
    }
}

fn string(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

fn strings(value: &Yaml) -> Option<Vec<String>> {
    match value {
        Yaml::Array(items) => items.iter().map(string).collect(),
        other => string(other).map(|s| vec![s]),
    }
}

fn number(value: &Yaml) -> Option<u64> {
    match value {
        Yaml::Integer(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_option_kind() {
        let c = FileConfig::parse(
            "rules: /etc/r\niface: [eth0, eth1]\nxdp-mode: skb\nmetrics: \"off\"\nnever-block: 203.0.113.0/24\nttl-floor: 30\n",
        )
        .unwrap();
        assert_eq!(c.rules, Some(PathBuf::from("/etc/r")));
        assert_eq!(c.iface, Some(vec!["eth0".to_string(), "eth1".to_string()]));
        assert_eq!(c.xdp_mode, Some(ModeRequest::Skb));
        assert_eq!(c.metrics.as_deref(), Some("off"));
        assert_eq!(c.never_block, Some(vec!["203.0.113.0/24".parse().unwrap()]));
        assert_eq!(c.ttl_floor, Some(30));
    }

    #[test]
    fn unknown_and_mistyped_options_are_errors() {
        assert_eq!(
            FileConfig::parse("ifaces: [eth0]").unwrap_err(),
            "unknown option \"ifaces\""
        );
        assert_eq!(
            FileConfig::parse("grace: soon").unwrap_err(),
            "grace: expected seconds"
        );
        // The rule files' prefix parser: a bare address is a host prefix, garbage says so.
        assert_eq!(
            FileConfig::parse("never-block: [192.0.2.53, \"2001:db8::/32\"]")
                .unwrap()
                .never_block,
            Some(vec![
                "192.0.2.53/32".parse().unwrap(),
                "2001:db8::/32".parse().unwrap()
            ])
        );
        assert_eq!(
            FileConfig::parse("never-block: [resolver]").unwrap_err(),
            "never-block: invalid prefix `resolver`: expected an address or a CIDR like \
             192.0.2.0/24 or 2001:db8::/32"
        );
        assert!(
            FileConfig::parse("xdp-mode: fast")
                .unwrap_err()
                .starts_with("xdp-mode")
        );
    }
}
