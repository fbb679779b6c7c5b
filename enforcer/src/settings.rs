//! The daemon's run settings: one declaration of the options (`RunOptions`, whose flag names are
//! also the `--config` file's keys), one place for their defaults (`Settings::DEFAULT_*` and
//! [`Settings::from_options`]), one merge (flags win over the file). `run` and `check` both go
//! through here, so they read a config file and its values the same way.
//! Reference: docs/reference.md, "`enforcer run` options".

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{CommandFactory as _, Parser as _};
use ipnet::IpNet;

use crate::compile::Capacity;
use crate::datapath::attach::ModeRequest;
use crate::learn::Role;
use crate::logging::LogFormat;
use enforcer_common::{MAX_PREFIXES_V4, MAX_PREFIXES_V6};

/// The largest `--max-prefixes-v4`/`-v6`: the table's search covers that many ranges.
const MAX_CAPACITY: i64 = enforcer_common::MAX_CAPACITY as i64;
use crate::policy::Sites;
use crate::policy::yaml::{self, Pos, Value};

/// Every `enforcer run` option but `--config` itself. A field left unset (None or empty) takes
/// the config file's value, then the default.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct RunOptions {
    /// Policy file or directory [default: /etc/enforcer/rules].
    #[arg(long, value_name = "PATH")]
    pub rules: Option<PathBuf>,
    /// Interface to enforce on, with its role: `IF:inside` (clients), `IF:outside` (servers) or
    /// `IF` (both) (repeatable; required here or in --config).
    #[arg(long = "iface", value_name = "IF[:ROLE]", value_parser = parse_iface)]
    pub iface: Vec<Interface>,
    /// XDP attach mode [default: auto].
    #[arg(long, value_enum, value_name = "MODE")]
    pub xdp_mode: Option<ModeRequest>,
    /// DNS resolver ADDR[:PORT] (repeatable) [default: the system's].
    #[arg(long = "resolver", value_name = "ADDR[:PORT]")]
    pub resolver: Vec<String>,
    /// Prometheus endpoint ADDR:PORT, or `off` [default: 127.0.0.1:9464].
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
    /// Directory for the resolved-address state [default: /var/lib/enforcer].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Directory for pinned maps and links, on a BPF filesystem [default: /sys/fs/bpf/enforcer].
    #[arg(long, value_name = "DIR")]
    pub bpffs: Option<PathBuf>,
    /// CIDR (or a bare address) that no rule or answer may block, added to the built-in list
    /// (repeatable).
    #[arg(long = "never-block", value_name = "CIDR", value_parser = crate::policy::parse_prefix)]
    pub never_block: Vec<IpNet>,
    /// Shortest time an address from DNS is kept, in seconds [default: 60].
    #[arg(long, value_name = "SECS")]
    pub ttl_floor: Option<u64>,
    /// Longest time an address from DNS is kept, in seconds [default: 86400].
    #[arg(long, value_name = "SECS")]
    pub ttl_ceiling: Option<u64>,
    /// How long an address stays blocked after DNS stops giving it, in seconds [default: 3600].
    #[arg(long, value_name = "SECS")]
    pub grace: Option<u64>,
    /// Most addresses one name may resolve to before its answer is refused [default: 64].
    #[arg(long, value_name = "N")]
    pub max_addresses_per_name: Option<u64>,
    /// TTL and SOA minimum of the NXDOMAIN answers the gateway gives for names blocked by name,
    /// in seconds [default: 300].
    #[arg(long, value_name = "SECS")]
    pub dns_block_ttl: Option<u32>,
    /// Most IPv4 prefixes a policy may hold; sizes the datapath's table, both generations
    /// [default: 1000000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_CAPACITY))]
    pub max_prefixes_v4: Option<u32>,
    /// Most IPv6 prefixes a policy may hold, as --max-prefixes-v4 [default: 1000000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_CAPACITY))]
    pub max_prefixes_v6: Option<u32>,
    /// Name whose subtree is a shared front end or CDN (repeatable).
    #[arg(long = "shared-suffix", value_name = "NAME")]
    pub shared_suffix: Vec<String>,
    /// DNS server CIDR whose answers are learned from (repeatable) [default: the resolvers'
    /// addresses].
    #[arg(long = "learn-from", value_name = "CIDR", value_parser = crate::policy::parse_prefix)]
    pub learn_from: Vec<IpNet>,
    /// Client CIDR whose answers are learned from whatever server gave them (repeatable).
    #[arg(long = "learn-for", value_name = "CIDR", value_parser = crate::policy::parse_prefix)]
    pub learn_for: Vec<IpNet>,
    /// YAML file naming the sites behind the gateway (`SITE: [CIDR, ...]`); re-read on reload.
    /// In --config, `sites:` may instead hold that mapping itself.
    #[arg(long, value_name = "FILE")]
    pub sites: Option<PathBuf>,
    /// (address, name) pairs remembered from DNS answers crossing the gateway, for
    /// `collateral` (oldest evicted first) [default: 1000000].
    #[arg(long, value_name = "N")]
    pub observed_names: Option<usize>,
    /// Sites written inline in the config file (`sites:` as a mapping).
    #[arg(skip)]
    pub inline_sites: Option<Sites>,
    /// How many applied policies STATE-DIR/history keeps for `enforcer rollback` [default: 20].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub history: Option<u32>,
    /// Follow the signed policy bundles of this TUF repository (http, https or file URL with
    /// `metadata/` and `targets/` under it) instead of --rules.
    #[arg(long, value_name = "URL")]
    pub bundle_url: Option<String>,
    /// The repository's root metadata this gateway pins (`enforcer bundle keygen` writes it).
    #[arg(long, value_name = "ROOT.json")]
    pub bundle_root: Option<PathBuf>,
    /// Seconds between looks at the bundle repository, with up to 10 % jitter [default: 60].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub bundle_interval: Option<u64>,
}

/// One `--iface` value: an interface name and its role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub role: Role,
}

/// `IF`, `IF:inside` or `IF:outside`.
pub fn parse_iface(text: &str) -> Result<Interface, String> {
    let (name, role) = match text.split_once(':') {
        None => (text, Role::Both),
        Some((name, "inside")) => (name, Role::Inside),
        Some((name, "outside")) => (name, Role::Outside),
        Some((_, other)) => {
            return Err(format!(
                "unknown role `{other}` in `{text}`: expected IF, IF:inside or IF:outside"
            ));
        }
    };
    if name.is_empty() {
        return Err(format!("`{text}`: no interface name"));
    }
    Ok(Interface {
        name: name.to_owned(),
        role,
    })
}

impl RunOptions {
    /// `self`, with every option it leaves unset taken from `file`.
    fn or(self, file: RunOptions) -> RunOptions {
        fn list<T>(flags: Vec<T>, file: Vec<T>) -> Vec<T> {
            if flags.is_empty() { file } else { flags }
        }
        RunOptions {
            rules: self.rules.or(file.rules),
            iface: list(self.iface, file.iface),
            xdp_mode: self.xdp_mode.or(file.xdp_mode),
            resolver: list(self.resolver, file.resolver),
            metrics: self.metrics.or(file.metrics),
            state_dir: self.state_dir.or(file.state_dir),
            bpffs: self.bpffs.or(file.bpffs),
            never_block: list(self.never_block, file.never_block),
            ttl_floor: self.ttl_floor.or(file.ttl_floor),
            ttl_ceiling: self.ttl_ceiling.or(file.ttl_ceiling),
            grace: self.grace.or(file.grace),
            max_addresses_per_name: self.max_addresses_per_name.or(file.max_addresses_per_name),
            dns_block_ttl: self.dns_block_ttl.or(file.dns_block_ttl),
            max_prefixes_v4: self.max_prefixes_v4.or(file.max_prefixes_v4),
            max_prefixes_v6: self.max_prefixes_v6.or(file.max_prefixes_v6),
            shared_suffix: list(self.shared_suffix, file.shared_suffix),
            learn_from: list(self.learn_from, file.learn_from),
            learn_for: list(self.learn_for, file.learn_for),
            sites: self.sites.or(file.sites),
            observed_names: self.observed_names.or(file.observed_names),
            inline_sites: self.inline_sites.or(file.inline_sites),
            history: self.history.or(file.history),
            bundle_url: self.bundle_url.or(file.bundle_url),
            bundle_root: self.bundle_root.or(file.bundle_root),
            bundle_interval: self.bundle_interval.or(file.bundle_interval),
        }
    }
}

/// `enforcer run`'s arguments.
#[derive(Debug, Default, clap::Args)]
#[command(
    after_help = "Example: enforcer run --config /etc/enforcer/config.yaml --iface eth0:inside --iface eth1:outside"
)]
pub struct RunArgs {
    /// YAML file with any of these options (keys are the flag names); flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub options: RunOptions,
}

/// A `--config` file: the run options plus the two global ones it may also set.
#[derive(Debug, Default, PartialEq, Eq, clap::Parser)]
#[command(
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
pub struct ConfigFile {
    #[command(flatten)]
    pub options: RunOptions,
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{path}: {source}")]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Every problem of a `--config` file, one `PATH:LINE:COLUMN: message` per line.
    #[error("{0}")]
    Config(String),
    #[error("no interface given: pass --iface (or `iface:` in --config)")]
    NoInterface,
    #[error("--metrics {0}: expected ADDR:PORT or `off`")]
    BadMetricsAddress(String),
    #[error("--ttl-floor {floor} is above --ttl-ceiling {ceiling}")]
    TtlBounds { floor: u64, ceiling: u64 },
    #[error("{0}")]
    Sites(#[from] crate::policy::PolicyError),
    #[error(
        "--rules and --bundle-url exclude each other: a gateway follows its own files or a bundle repository"
    )]
    RulesAndBundle,
    #[error(
        "--bundle-url needs --bundle-root (the root metadata to pin), and --bundle-root and --bundle-interval need --bundle-url"
    )]
    BundleIncomplete,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|problems| {
            let lines: Vec<String> = problems
                .iter()
                .map(|p| format!("{}:{p}", path.display()))
                .collect();
            SettingsError::Config(lines.join("\n"))
        })
    }

    /// Reads the YAML mapping as the flags it stands for and parses them exactly as the command
    /// line is parsed, so a value means the same in both places. Every problem is returned, as
    /// `LINE:COLUMN: message` at the offending key or value.
    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        let at = |pos: Pos, message: String| format!("{}:{}: {message}", pos.line, pos.column);
        let docs = yaml::parse(text).map_err(|e| vec![at(e.pos, e.message)])?;
        let Some(doc) = docs.into_iter().next() else {
            return Ok(Self::default());
        };
        let entries = match doc.root.value {
            Value::Map(entries) => entries,
            _ if doc.root.is_null() => return Ok(Self::default()),
            _ => {
                return Err(vec![at(
                    doc.root.pos,
                    "expected a mapping of option names to values".into(),
                )]);
            }
        };
        let known: Vec<String> = Self::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect();
        let mut argv: Vec<OsString> = Vec::new();
        let mut problems = Vec::new();
        let mut inline_sites = None;
        for (key, value) in entries {
            // `sites:` as a mapping holds the sites themselves (as a path, it is --sites).
            if key.as_str() == Some("sites") && matches!(value.value, Value::Map(_)) {
                match Sites::from_node(Path::new(""), &value) {
                    Ok(sites) => inline_sites = Some(sites),
                    Err(diagnostics) => problems.extend(diagnostics.iter().map(|d| {
                        at(
                            Pos {
                                line: d.location.line,
                                column: d.location.column,
                            },
                            format!("sites: {}", d.message),
                        )
                    })),
                }
                continue;
            }
            let Some(name) = key.as_str().filter(|k| known.iter().any(|n| n == k)) else {
                let shown = key.as_str().unwrap_or("(not a name)");
                problems.push(at(key.pos, format!("unknown option {shown:?}")));
                continue;
            };
            let items = match value.value {
                Value::Seq(items) => items,
                _ => vec![value],
            };
            for item in items {
                let Some(text) = item.as_str() else {
                    problems.push(at(
                        item.pos,
                        format!("{name}: expected a value or a list of values"),
                    ));
                    continue;
                };
                let flag: OsString = format!("--{name}={text}").into();
                // Each value alone first, so that an error points at it.
                if let Err(e) = Self::try_parse_from([flag.clone()]) {
                    problems.push(at(item.pos, clap_message(&e)));
                    continue;
                }
                argv.push(flag);
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut file = Self::try_parse_from(argv).map_err(|e| vec![clap_message(&e)])?;
        file.options.inline_sites = inline_sites;
        Ok(file)
    }
}

/// clap's error as a config-file error: `KEY: what is wrong`, in the words the same value
/// would get on the command line.
fn clap_message(error: &clap::Error) -> String {
    let text = error.to_string();
    let mut lines = text.lines();
    let first = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ");
    let hint = lines
        .map(str::trim)
        .find(|l| l.starts_with("[possible values"))
        .map(|l| format!(" {l}"))
        .unwrap_or_default();
    // "invalid value 'V' for '--KEY <NAME>': WHY"
    if let Some(rest) = first.strip_prefix("invalid value '")
        && let Some((value, rest)) = rest.split_once("' for '--")
        && let Some((arg, why)) = rest.split_once("'")
    {
        let key = arg.split_whitespace().next().unwrap_or(arg);
        let why = why.trim_start_matches(':').trim();
        return if why.is_empty() {
            format!("{key}: invalid value `{value}`{hint}")
        } else if why.contains(value) {
            format!("{key}: {why}")
        } else {
            format!("{key}: `{value}`: {why}")
        };
    }
    format!("{first}{hint}")
}

/// The options in force, after flags, the config file and the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub rules: PathBuf,
    /// Interface names, in the order given.
    pub interfaces: Vec<String>,
    /// The role of each of `interfaces`.
    pub roles: Vec<Role>,
    pub xdp_mode: ModeRequest,
    pub resolvers: Vec<String>,
    pub metrics: Option<SocketAddr>,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    pub never_block: Vec<IpNet>,
    pub ttl_floor: u64,
    pub ttl_ceiling: u64,
    pub grace: u64,
    pub max_addresses_per_name: u64,
    /// Seconds resolvers may cache the gateway's NXDOMAIN for a name blocked by name (the
    /// datapath's `DNS_CONFIG_BLOCK_TTL`).
    pub dns_block_ttl: u32,
    /// What the datapath is sized for (`--max-prefixes-v4`/`-v6`).
    pub capacity: Capacity,
    pub shared_suffixes: Vec<String>,
    /// Empty: the resolvers' addresses.
    pub learn_from: Vec<IpNet>,
    pub learn_for: Vec<IpNet>,
    pub socket: PathBuf,
    /// The sites behind the gateway (none: every client is site `other`).
    pub sites: Sites,
    /// `--sites`: re-read on reload.
    pub sites_file: Option<PathBuf>,
    /// `--observed-names`.
    pub observed_names: usize,
    /// How many applied policies the history keeps.
    pub history: usize,
    /// Bundle mode: the repository followed instead of `--rules` (which then points at the
    /// policy directory of STATE-DIR/bundle).
    pub bundle: Option<BundleSettings>,
}

/// `--bundle-url`, `--bundle-root`, `--bundle-interval`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleSettings {
    pub url: String,
    pub root: PathBuf,
    pub interval: std::time::Duration,
}

impl Settings {
    pub const DEFAULT_RULES: &str = "/etc/enforcer/rules";
    pub const DEFAULT_METRICS: &str = "127.0.0.1:9464";
    pub const DEFAULT_STATE_DIR: &str = "/var/lib/enforcer";
    pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/enforcer";
    pub const DEFAULT_SOCKET: &str = "/run/enforcer/enforcer.sock";
    pub const DEFAULT_TTL_FLOOR: u64 = 60;
    pub const DEFAULT_TTL_CEILING: u64 = 86_400;
    pub const DEFAULT_GRACE: u64 = 3_600;
    pub const DEFAULT_MAX_ADDRESSES_PER_NAME: u64 = 64;
    pub const DEFAULT_DNS_BLOCK_TTL: u32 = 300;
    pub const DEFAULT_HISTORY: u32 = 20;
    pub const DEFAULT_BUNDLE_INTERVAL: u64 = 60;

    /// `run`'s settings: flags, then `--config`, then defaults. `socket` is the global flag.
    pub fn for_run(args: RunArgs, socket: Option<PathBuf>) -> Result<Self, SettingsError> {
        let file = match &args.config {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::default(),
        };
        let settings = Self::from_options(args.options.or(file.options), socket.or(file.socket))?;
        if settings.interfaces.is_empty() {
            return Err(SettingsError::NoInterface);
        }
        Ok(settings)
    }

    /// Settings from merged options, with the defaults for whatever is still unset. Does not
    /// require an interface (`check` reads a config file without running anything).
    pub fn from_options(
        options: RunOptions,
        socket: Option<PathBuf>,
    ) -> Result<Self, SettingsError> {
        let metrics_text = options
            .metrics
            .unwrap_or_else(|| Self::DEFAULT_METRICS.to_owned());
        let metrics = if metrics_text == "off" {
            None
        } else {
            Some(
                metrics_text
                    .parse()
                    .map_err(|_| SettingsError::BadMetricsAddress(metrics_text.clone()))?,
            )
        };
        let state_dir: PathBuf = options
            .state_dir
            .clone()
            .unwrap_or_else(|| Self::DEFAULT_STATE_DIR.into());
        let bundle = match (&options.bundle_url, &options.bundle_root) {
            (Some(_), _) if options.rules.is_some() => return Err(SettingsError::RulesAndBundle),
            (Some(url), Some(root)) => Some(BundleSettings {
                url: url.clone(),
                root: root.clone(),
                interval: std::time::Duration::from_secs(
                    options
                        .bundle_interval
                        .unwrap_or(Self::DEFAULT_BUNDLE_INTERVAL),
                ),
            }),
            (None, None) if options.bundle_interval.is_none() => None,
            _ => return Err(SettingsError::BundleIncomplete),
        };
        let rules = match &bundle {
            Some(_) => crate::bundle::store::Store::new(&state_dir).policy_dir(),
            None => options.rules.unwrap_or_else(|| Self::DEFAULT_RULES.into()),
        };
        let settings = Self {
            rules,
            bundle,
            interfaces: options.iface.iter().map(|i| i.name.clone()).collect(),
            roles: options.iface.iter().map(|i| i.role).collect(),
            xdp_mode: options.xdp_mode.unwrap_or(ModeRequest::Auto),
            resolvers: options.resolver,
            metrics,
            state_dir,
            bpffs: options.bpffs.unwrap_or_else(|| Self::DEFAULT_BPFFS.into()),
            never_block: options.never_block,
            ttl_floor: options.ttl_floor.unwrap_or(Self::DEFAULT_TTL_FLOOR),
            ttl_ceiling: options.ttl_ceiling.unwrap_or(Self::DEFAULT_TTL_CEILING),
            grace: options.grace.unwrap_or(Self::DEFAULT_GRACE),
            max_addresses_per_name: options
                .max_addresses_per_name
                .unwrap_or(Self::DEFAULT_MAX_ADDRESSES_PER_NAME),
            dns_block_ttl: options.dns_block_ttl.unwrap_or(Self::DEFAULT_DNS_BLOCK_TTL),
            capacity: Capacity {
                v4: options.max_prefixes_v4.unwrap_or(MAX_PREFIXES_V4),
                v6: options.max_prefixes_v6.unwrap_or(MAX_PREFIXES_V6),
            },
            shared_suffixes: options.shared_suffix,
            learn_from: options.learn_from,
            learn_for: options.learn_for,
            socket: socket.unwrap_or_else(|| Self::DEFAULT_SOCKET.into()),
            sites: match &options.sites {
                Some(path) => Sites::load(path)?,
                None => options.inline_sites.unwrap_or_default(),
            },
            sites_file: options.sites,
            observed_names: options
                .observed_names
                .unwrap_or(crate::learn::DEFAULT_OBSERVED_NAMES),
            history: usize::try_from(options.history.unwrap_or(Self::DEFAULT_HISTORY))
                .unwrap_or(usize::MAX),
        };
        if settings.ttl_floor > settings.ttl_ceiling {
            return Err(SettingsError::TtlBounds {
                floor: settings.ttl_floor,
                ceiling: settings.ttl_ceiling,
            });
        }
        Ok(settings)
    }

    /// The settings a `--config` file alone gives (for `check --config`).
    pub fn from_config_file(path: Option<&Path>) -> Result<Self, SettingsError> {
        let file = match path {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::default(),
        };
        Self::from_options(file.options, file.socket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(argv: &[&str]) -> RunArgs {
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: RunArgs,
        }
        Wrap::try_parse_from(std::iter::once("run").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn config_file_keys_are_the_flag_names_and_parse_like_flags() {
        let c = ConfigFile::parse(
            "rules: /etc/r\niface: [eth0, eth1:outside]\nlearn-from: [192.0.2.0/24]\nxdp-mode: skb\nmetrics: \"off\"\nnever-block: [203.0.113.0/24, 192.0.2.53]\nttl-floor: 30\nsocket: /run/x.sock\nlog-format: json\nhistory: 5\n",
        )
        .unwrap();
        assert_eq!(c.options.rules, Some(PathBuf::from("/etc/r")));
        assert_eq!(
            c.options.iface,
            vec![
                Interface {
                    name: "eth0".into(),
                    role: Role::Both
                },
                Interface {
                    name: "eth1".into(),
                    role: Role::Outside
                }
            ]
        );
        assert_eq!(
            c.options.learn_from,
            vec!["192.0.2.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(c.options.xdp_mode, Some(ModeRequest::Skb));
        assert_eq!(c.options.metrics.as_deref(), Some("off"));
        assert_eq!(
            c.options.never_block,
            vec![
                "203.0.113.0/24".parse::<IpNet>().unwrap(),
                "192.0.2.53/32".parse().unwrap()
            ]
        );
        assert_eq!(c.options.ttl_floor, Some(30));
        assert_eq!(c.options.history, Some(5));
        assert_eq!(c.socket, Some(PathBuf::from("/run/x.sock")));
        assert_eq!(c.log_format, Some(LogFormat::Json));
    }

    #[test]
    fn unknown_and_mistyped_options_are_errors() {
        let one = |text: &str| ConfigFile::parse(text).unwrap_err().join("\n");
        assert_eq!(one("ifaces: [eth0]"), "1:1: unknown option \"ifaces\"");
        // The rule files' prefix parser, with its words: a bare address is a host prefix.
        assert_eq!(
            one("never-block: [resolver]"),
            "1:15: never-block: invalid prefix `resolver`: expected an address or a CIDR like \
             192.0.2.0/24 or 2001:db8::/32"
        );
        assert_eq!(
            one("xdp-mode: fast"),
            "1:11: xdp-mode: invalid value `fast` [possible values: auto, native, skb]"
        );
        assert_eq!(
            one("grace: soon"),
            "1:8: grace: `soon`: invalid digit found in string"
        );
        assert_eq!(
            one("iface: {a: b}"),
            "1:8: iface: expected a value or a list of values"
        );
        assert_eq!(
            one("- a\n- b\n"),
            "1:1: expected a mapping of option names to values"
        );
    }

    #[test]
    fn every_problem_is_reported_where_it_was_written() {
        let problems = ConfigFile::parse(
            "iface: [eth0]\nttl-floor: ten\nnever-block:\n  - 192.0.2.0/24\n  - nonsense\nbogus: 1\n",
        )
        .unwrap_err();
        assert_eq!(
            problems,
            vec![
                "2:12: ttl-floor: `ten`: invalid digit found in string".to_owned(),
                "5:5: never-block: invalid prefix `nonsense`: expected an address or a CIDR \
                 like 192.0.2.0/24 or 2001:db8::/32"
                    .to_owned(),
                "6:1: unknown option \"bogus\"".to_owned(),
            ]
        );
        let dir = std::env::temp_dir().join(format!("enforcer-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        std::fs::write(&path, "grace: soon\n").unwrap();
        let error = ConfigFile::load(&path).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "{}:1:8: grace: `soon`: invalid digit found in string",
                path.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn interface_roles_and_trusted_sets() {
        let s = Settings::from_options(
            run_args(&[
                "--iface",
                "lan0:inside",
                "--iface",
                "wan0:outside",
                "--iface",
                "dmz0",
                "--learn-for",
                "10.1.0.0/16",
            ])
            .options,
            None,
        )
        .unwrap();
        assert_eq!(s.interfaces, vec!["lan0", "wan0", "dmz0"]);
        assert_eq!(s.roles, vec![Role::Inside, Role::Outside, Role::Both]);
        assert_eq!(s.learn_for, vec!["10.1.0.0/16".parse::<IpNet>().unwrap()]);
        assert!(s.learn_from.is_empty());
        assert_eq!(
            parse_iface("lan0:client").unwrap_err(),
            "unknown role `client` in `lan0:client`: expected IF, IF:inside or IF:outside"
        );
        assert_eq!(
            ConfigFile::parse("iface: [lan0:in]\nlearn-from: [nowhere]\n").unwrap_err(),
            vec![
                "1:9: iface: unknown role `in` in `lan0:in`: expected IF, IF:inside or IF:outside"
                    .to_string(),
                "2:14: learn-from: invalid prefix `nowhere`: expected an address or a CIDR like \
                 192.0.2.0/24 or 2001:db8::/32"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let file = ConfigFile::parse("iface: [eth9]\ngrace: 10\nresolver: [192.0.2.1]\n").unwrap();
        let flags = run_args(&["--iface", "eth0", "--never-block", "192.0.2.53"]).options;
        let s = Settings::from_options(flags.or(file.options), None).unwrap();
        assert_eq!(s.interfaces, vec!["eth0".to_string()]);
        assert_eq!(s.grace, 10);
        assert_eq!(s.resolvers, vec!["192.0.2.1".to_string()]);
        assert_eq!(
            s.never_block,
            vec!["192.0.2.53/32".parse::<IpNet>().unwrap()]
        );
        assert_eq!(s.ttl_floor, Settings::DEFAULT_TTL_FLOOR);
        assert_eq!(s.dns_block_ttl, 300);
        assert_eq!(s.socket, PathBuf::from(Settings::DEFAULT_SOCKET));
    }

    #[test]
    fn max_prefixes_from_flag_or_file_within_bounds() {
        let defaults = Settings::from_options(RunOptions::default(), None).unwrap();
        assert_eq!(defaults.capacity, Capacity::default());
        assert_eq!(defaults.capacity.v4, 1_000_000);
        let file = ConfigFile::parse("max-prefixes-v4: 5000\nmax-prefixes-v6: 7000\n").unwrap();
        let from_file = Settings::from_options(file.options.clone(), None).unwrap();
        assert_eq!(from_file.capacity, Capacity { v4: 5000, v6: 7000 });
        let flags = run_args(&["--iface", "x", "--max-prefixes-v6", "2000000"]).options;
        let s = Settings::from_options(flags.or(file.options), None).unwrap();
        assert_eq!(
            s.capacity,
            Capacity {
                v4: 5000,
                v6: 2_000_000
            },
            "the flag wins"
        );
        for bad in ["0", "2000001", "many"] {
            let problems = ConfigFile::parse(&format!("max-prefixes-v4: {bad}\n")).unwrap_err();
            assert!(
                problems[0].starts_with("1:18: max-prefixes-v4: "),
                "{bad}: {problems:?}"
            );
        }
    }

    #[test]
    fn dns_block_ttl_from_flag_or_file_and_checked_like_the_other_ttls() {
        let file = ConfigFile::parse("dns-block-ttl: 60\n").unwrap();
        let from_file = Settings::from_options(file.options.clone(), None).unwrap();
        assert_eq!(from_file.dns_block_ttl, 60);
        let flags = run_args(&["--iface", "x", "--dns-block-ttl", "900"]).options;
        let s = Settings::from_options(flags.or(file.options), None).unwrap();
        assert_eq!(s.dns_block_ttl, 900, "the flag wins");
        assert_eq!(
            ConfigFile::parse("dns-block-ttl: soon\n").unwrap_err(),
            vec!["1:16: dns-block-ttl: `soon`: invalid digit found in string".to_owned()]
        );
        assert!(
            ConfigFile::parse("dns-block-ttl: 4294967296\n").unwrap_err()[0]
                .starts_with("1:16: dns-block-ttl: ")
        );
    }

    #[test]
    fn bundle_mode_replaces_rules_and_needs_a_root() {
        let s = Settings::for_run(
            run_args(&[
                "--iface",
                "x",
                "--state-dir",
                "/var/lib/e",
                "--bundle-url",
                "https://policy.example/repo",
                "--bundle-root",
                "/etc/enforcer/root.json",
            ]),
            None,
        )
        .unwrap();
        let bundle = s.bundle.unwrap();
        assert_eq!(bundle.url, "https://policy.example/repo");
        assert_eq!(bundle.interval, std::time::Duration::from_secs(60));
        assert_eq!(s.rules, PathBuf::from("/var/lib/e/bundle/policy"));
        let file = ConfigFile::parse(
            "bundle-url: file:///srv/repo\nbundle-root: /r.json\nbundle-interval: 5\n",
        )
        .unwrap();
        let from_file = Settings::from_options(file.options, None).unwrap();
        assert_eq!(
            from_file.bundle.map(|b| b.interval),
            Some(std::time::Duration::from_secs(5))
        );
        let both = Settings::for_run(
            run_args(&[
                "--iface",
                "x",
                "--rules",
                "/r",
                "--bundle-url",
                "http://a/",
                "--bundle-root",
                "/r.json",
            ]),
            None,
        );
        assert!(matches!(both, Err(SettingsError::RulesAndBundle)));
        for partial in [
            &["--iface", "x", "--bundle-url", "http://a/"][..],
            &["--iface", "x", "--bundle-root", "/r.json"][..],
            &["--iface", "x", "--bundle-interval", "5"][..],
        ] {
            let error = Settings::for_run(run_args(partial), None);
            assert!(
                matches!(error, Err(SettingsError::BundleIncomplete)),
                "{partial:?}"
            );
        }
        assert!(ConfigFile::parse("bundle-interval: 0\n").is_err());
    }

    #[test]
    fn run_needs_an_interface_and_sane_ttls() {
        let no_iface = Settings::for_run(run_args(&[]), None).unwrap_err();
        assert!(matches!(no_iface, SettingsError::NoInterface));
        let bounds = Settings::for_run(
            run_args(&["--iface", "x", "--ttl-floor", "10", "--ttl-ceiling", "5"]),
            None,
        )
        .unwrap_err();
        assert!(matches!(bounds, SettingsError::TtlBounds { .. }));
        let metrics =
            Settings::for_run(run_args(&["--iface", "x", "--metrics", "nope"]), None).unwrap_err();
        assert!(matches!(metrics, SettingsError::BadMetricsAddress(_)));
    }
}
