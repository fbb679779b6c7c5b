//! `enforcer check`: validate policies without touching the datapath.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use ipnet::IpNet;

use crate::policy::{self, LoadOptions, Policy, PolicyError};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Rule files, or directories of `*.yaml` rule files; together they form one policy.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Extra range no rule may overlap, added to the built-in list (repeatable). A bare
    /// address stands for itself alone.
    #[arg(long = "never-block", value_name = "CIDR", value_parser = parse_cidr)]
    pub never_block: Vec<IpNet>,
}

/// Exit 0 with a one-line summary on stdout when valid; 1 with every error on stderr otherwise.
pub fn execute(args: &CheckArgs) -> ExitCode {
    let options = LoadOptions {
        never_block: args.never_block.clone(),
    };
    match policy::load_policy(&args.paths, &options) {
        Ok(policy) => {
            println!("{}", summary(&policy));
            ExitCode::SUCCESS
        }
        Err(PolicyError::Invalid(diagnostics)) => {
            for diagnostic in &diagnostics {
                eprintln!("{diagnostic}");
            }
            ExitCode::FAILURE
        }
        Err(err @ PolicyError::Io { .. }) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// A CIDR, or a bare address as a host route (operators pass resolver addresses as they are).
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is not an address or CIDR"))
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

    #[test]
    fn never_block_arguments() {
        assert_eq!(
            parse_cidr("192.0.2.53"),
            Ok("192.0.2.53/32".parse().unwrap())
        );
        assert_eq!(
            parse_cidr("2001:db8::53"),
            Ok("2001:db8::53/128".parse().unwrap())
        );
        assert_eq!(
            parse_cidr("203.0.113.0/24"),
            Ok("203.0.113.0/24".parse().unwrap())
        );
        assert!(parse_cidr("resolver").is_err());
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            check: CheckArgs,
        }
        let cli = Cli::try_parse_from(["x", "r", "--never-block", "192.0.2.53"]).unwrap();
        assert_eq!(
            cli.check.never_block,
            vec!["192.0.2.53/32".parse().unwrap()]
        );
        assert!(Cli::try_parse_from(["x", "--never-block", "192.0.2.53"]).is_err());
    }

    #[test]
    fn exit_codes() {
        let dir = std::env::temp_dir().join(format!("enforcer-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.yaml");
        std::fs::write(
            &good,
            "platform: a\nmatch:\n  - prefixes: [198.51.100.0/24]\n",
        )
        .unwrap();
        let args = |path: &Path, never_block: &[&str]| CheckArgs {
            paths: vec![path.to_path_buf()],
            never_block: never_block.iter().map(|s| s.parse().unwrap()).collect(),
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
