//! `enforcer check`: validate policies without touching the datapath, exactly as `enforcer run`
//! would with the same `--config` and `--never-block` (the same never-block list: the built-in
//! ranges, `--never-block`, this host's addresses and the resolvers'), reading the files as the
//! daemon can (without capabilities) and compiling them against the datapath's capacity.

use std::path::PathBuf;
use std::process::ExitCode;

use ipnet::IpNet;

use crate::compile;
use crate::daemon::{self, DaemonError};
use crate::never_block::NeverBlock;
use crate::policy::{self, LoadOptions, Policy, PolicyError};
use crate::settings::{Settings, SettingsError};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example: enforcer check /etc/enforcer/rules --config /etc/enforcer/config.yaml"
)]
pub struct CheckArgs {
    /// Rule files, or directories of `*.yaml` rule files; together they form one policy.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Extra range no rule may overlap, added to the built-in list (repeatable). A bare
    /// address stands for itself alone.
    #[arg(long = "never-block", value_name = "CIDR", value_parser = policy::parse_prefix)]
    pub never_block: Vec<IpNet>,
    /// The daemon's config file: its `never-block`, `resolver` and `max-prefixes-v4`/`-v6` count
    /// as they do for `run`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Why `check` could not even start validating.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

/// The never-block list `run` would build with these arguments: the same settings (flags win
/// over the file) through the same builder.
pub fn never_block(args: &CheckArgs) -> Result<NeverBlock, CheckError> {
    let mut settings = Settings::from_config_file(args.config.as_deref())?;
    if !args.never_block.is_empty() {
        settings.never_block = args.never_block.clone();
    }
    let (list, _) = daemon::never_block(&settings)?;
    Ok(list)
}

/// The options `run` would validate the policy with: its never-block list and its extra shared
/// suffixes.
pub fn load_options(args: &CheckArgs) -> Result<LoadOptions, CheckError> {
    let settings = Settings::from_config_file(args.config.as_deref())?;
    Ok(LoadOptions {
        never_block: never_block(args)?,
        shared_suffixes: settings.shared_suffixes,
    })
}

/// Exit 0 with a one-line summary on stdout when valid; 1 with every error on stderr otherwise.
pub fn execute(args: &CheckArgs) -> ExitCode {
    match validate(args) {
        Ok(policy) => {
            println!("{}", summary(&policy));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for error in &errors {
                eprintln!("{error}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The policy at `args.paths`, validated as the daemon would with that config (what `bundle
/// build` also publishes only when valid); otherwise every error, one per line.
pub fn validate(args: &CheckArgs) -> Result<Policy, Vec<String>> {
    let lines = |text: String| text.lines().map(str::to_owned).collect::<Vec<_>>();
    let options = load_options(args).map_err(|e| lines(e.to_string()))?;
    let (capacity, sites) = Settings::from_config_file(args.config.as_deref())
        .map(|s| (s.capacity, s.sites))
        .map_err(|e| lines(e.to_string()))?;
    // Every `action-by-site` must name a site of the config, as the daemon requires.
    let read = daemon::read_policy(&args.paths, &options).and_then(|policy| {
        let unknown = sites.check_policy(&policy);
        if unknown.is_empty() {
            Ok(policy)
        } else {
            Err(PolicyError::Invalid(unknown))
        }
    });
    match read {
        Ok(policy) => match compile::compile_within(&policy, std::iter::empty(), capacity)
            .and_then(|_| compile::compile_sites(&policy, &sites))
        {
            Ok(_) => Ok(policy),
            // The datapath could not hold it: the daemon refuses it when compiling.
            Err(error) => {
                let paths: Vec<String> =
                    args.paths.iter().map(|p| p.display().to_string()).collect();
                Err(vec![format!(
                    "{}: the datapath cannot hold this policy: {error}",
                    paths.join(", ")
                )])
            }
        },
        Err(PolicyError::Invalid(diagnostics)) => {
            Err(diagnostics.iter().map(ToString::to_string).collect())
        }
        Err(err) => Err(lines(err.to_string())),
    }
}

fn summary(policy: &Policy) -> String {
    let entries = policy.platforms.iter().flat_map(|p| &p.entries);
    let prefixes: usize = entries.clone().map(|e| e.prefixes.len()).sum();
    let domains: usize = entries.clone().map(|e| e.domains.len()).sum();
    format!(
        "ok: {}, {}, {}, {}",
        count(policy.platforms.len(), "platform"),
        count(entries.count(), "entry"),
        count(prefixes, "prefix"),
        count(domains, "domain"),
    )
}

fn count(n: usize, noun: &str) -> String {
    let plural = match (n, noun) {
        (1, _) => noun.to_owned(),
        (_, "entry") => "entries".to_owned(),
        (_, "prefix") => "prefixes".to_owned(),
        _ => format!("{noun}s"),
    };
    format!("{n} {plural}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn summary_counts_everything() {
        let text = "platform: zoom\nmatch:\n  - domains: [zoom.us, \"*.zoom.us\"]\n  - prefixes: [198.51.100.0/24]\n";
        let policy =
            policy::parse_policy_str(Path::new("z.yaml"), text, &LoadOptions::default()).unwrap();
        assert_eq!(
            summary(&policy),
            "ok: 1 platform, 2 entries, 1 prefix, 2 domains"
        );
        assert_eq!(
            summary(&Policy::default()),
            "ok: 0 platforms, 0 entries, 0 prefixes, 0 domains"
        );
    }

    /// What the real command line gives `subcommand` for `--never-block value`.
    fn parse_never_block(subcommand: &str, value: &str) -> Result<Vec<IpNet>, String> {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let mut argv = vec!["enforcer", subcommand, "--never-block", value];
        argv.extend(if subcommand == "run" {
            ["--iface", "eth0"]
        } else {
            ["--", "rules"]
        });
        match Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            Command::Check(args) => Ok(args.never_block),
            Command::Run(args) => Ok(args.options.never_block),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn run_and_check_parse_never_block_alike() {
        let net = |s: &str| -> IpNet { s.parse().unwrap() };
        for subcommand in ["run", "check"] {
            for (value, expected) in [
                ("192.0.2.53", net("192.0.2.53/32")),
                ("2001:db8::53", net("2001:db8::53/128")),
                ("203.0.113.0/24", net("203.0.113.0/24")),
            ] {
                assert_eq!(
                    parse_never_block(subcommand, value),
                    Ok(vec![expected]),
                    "{subcommand} --never-block {value}"
                );
            }
            // Garbage and host bits: the same words for both, naming the flag.
            for (value, message) in [
                (
                    "resolver",
                    "invalid prefix `resolver`: expected an address or a CIDR like 192.0.2.0/24 or 2001:db8::/32",
                ),
                (
                    "10.0.0.1/8",
                    "prefix `10.0.0.1/8` has host bits set; did you mean `10.0.0.0/8`?",
                ),
            ] {
                let error = parse_never_block(subcommand, value).unwrap_err();
                assert!(
                    error.contains("--never-block") && error.contains(message),
                    "{subcommand} --never-block {value}: {error}"
                );
            }
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("enforcer-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A name under a `shared-suffix` of the config file goes by name only, for `check` as for
    /// `run`.
    #[test]
    fn check_takes_the_config_files_shared_suffixes() {
        let dir = temp_dir("check-shared");
        let config = dir.join("config.yaml");
        std::fs::write(&config, "shared-suffix: [edge.example]\n").unwrap();
        let args = |config: Option<PathBuf>| CheckArgs {
            paths: vec![dir.clone()],
            never_block: Vec::new(),
            config,
        };
        let with = load_options(&args(Some(config.clone()))).unwrap();
        assert_eq!(with.shared_suffixes, ["edge.example"]);
        assert!(
            load_options(&args(None))
                .unwrap()
                .shared_suffixes
                .is_empty()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn check_builds_the_never_block_list_as_run_does() {
        use crate::never_block::Origin;
        use crate::settings::{RunArgs, RunOptions};
        let dir = temp_dir("check-config");
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            "never-block: [203.0.113.0/24]\nresolver: [\"198.51.100.53:5353\"]\nlearn-from: [198.18.7.53]\n",
        )
        .unwrap();
        let check = |never_block: Vec<IpNet>| CheckArgs {
            paths: vec![dir.clone()],
            never_block,
            config: Some(config.clone()),
        };
        let run = |never_block: Vec<IpNet>| {
            let args = RunArgs {
                config: Some(config.clone()),
                options: RunOptions {
                    iface: vec![crate::settings::parse_iface("eth0").unwrap()],
                    never_block,
                    ..RunOptions::default()
                },
            };
            let settings = Settings::for_run(args, None).unwrap();
            daemon::never_block(&settings).unwrap().0
        };
        let from_file = never_block(&check(Vec::new())).unwrap();
        assert_eq!(from_file.ranges(), run(Vec::new()).ranges());
        let origin = |list: &NeverBlock, s: &str| list.find(s.parse().unwrap()).map(|r| r.origin);
        assert_eq!(origin(&from_file, "203.0.113.7"), Some(Origin::Configured));
        assert_eq!(origin(&from_file, "198.51.100.53"), Some(Origin::Resolver));
        // The servers answers are learned from are never blocked either.
        assert_eq!(origin(&from_file, "198.18.7.53"), Some(Origin::LearnFrom));
        for local in crate::sys::netif::local_addresses().unwrap() {
            assert!(from_file.contains(local.addr()), "{local}");
        }
        // The flag replaces the file's list, for both.
        let flag = vec!["192.0.2.128/25".parse().unwrap()];
        let from_flag = never_block(&check(flag.clone())).unwrap();
        assert_eq!(from_flag.ranges(), run(flag).ranges());
        assert_eq!(origin(&from_flag, "203.0.113.7"), None);
        assert_eq!(origin(&from_flag, "192.0.2.200"), Some(Origin::Configured));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exit_codes() {
        let dir = temp_dir("check");
        let good = dir.join("good.yaml");
        std::fs::write(
            &good,
            "platform: a\nmatch:\n  - prefixes: [198.51.100.0/24]\n",
        )
        .unwrap();
        let args = |path: &Path, never_block: &[&str]| CheckArgs {
            paths: vec![path.to_path_buf()],
            never_block: never_block.iter().map(|s| s.parse().unwrap()).collect(),
            config: None,
        };
        assert_eq!(execute(&args(&good, &[])), ExitCode::SUCCESS);
        assert_eq!(
            execute(&args(&good, &["198.51.100.53/32"])),
            ExitCode::FAILURE
        );
        assert_eq!(
            execute(&args(&dir.join("missing.yaml"), &[])),
            ExitCode::FAILURE
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
