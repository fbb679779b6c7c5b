//! `enforcer resolve`: resolve every exact domain of the policy once, through the same guards as
//! the daemon, and print each platform's addresses with where they come from.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use serde::Serialize;

use crate::never_block::NeverBlock;
use crate::policy::{self, DomainPattern, LoadOptions, Policy, PolicyError};
use crate::resolve::{
    self, AddressBook, BookSettings, LookupResult, NameResolution, Resolver, ResolverConfig,
    parse_resolver, policy_uses,
};

#[derive(Debug, clap::Args)]
#[command(after_help = "Example: enforcer resolve --rules /etc/enforcer/rules/zoom.yaml --json")]
pub struct ResolveArgs {
    /// Rule file, or directory of `*.yaml` rule files.
    #[arg(long, value_name = "PATH", default_value = "/etc/enforcer/rules")]
    pub rules: PathBuf,
    /// DNS server ADDR[:PORT] (repeatable) [default: the system's].
    #[arg(long = "resolver", value_name = "ADDR[:PORT]", value_parser = parse_resolver)]
    pub resolvers: Vec<SocketAddr>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Extra range no answer may contain, added to the built-in list (repeatable).
    #[arg(long = "never-block", value_name = "CIDR", value_parser = policy::parse_prefix)]
    pub never_block: Vec<IpNet>,
    /// Most addresses one name may resolve to before its answer is refused.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_addresses_per_name: usize,
    /// Extra shared (CDN, shared front-end) suffix whose answers are refused (repeatable).
    #[arg(long = "shared-suffix", value_name = "NAME")]
    pub shared_suffixes: Vec<String>,
    /// Seconds to wait for one server's answer before asking again.
    #[arg(long, value_name = "SECS", default_value_t = 3)]
    pub timeout: u64,
}

#[derive(Serialize)]
struct Output {
    platforms: Vec<PlatformOutput>,
}

#[derive(Serialize)]
struct PlatformOutput {
    platform: String,
    action: &'static str,
    addresses: Vec<AddressOutput>,
    /// Text output only: wildcard domains, learned at run time.
    #[serde(skip)]
    wildcards: Vec<String>,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct AddressOutput {
    prefix: String,
    source: &'static str,
    name: Option<String>,
    cname_chain: Vec<String>,
    ttl_remaining: Option<u64>,
}

/// Exit 0 once it ran (even if some names failed or were refused: those go to stderr), 1 when
/// the policy is invalid or no resolver can be set up.
pub fn execute(args: &ResolveArgs) -> ExitCode {
    // The daemon's list: built-in, `--never-block`, this host's and the resolvers' addresses.
    let built = resolve::servers(&args.resolvers)
        .map_err(|e| e.to_string())
        .and_then(|servers| {
            NeverBlock::build(&args.never_block, &servers)
                .map(|list| (list, servers))
                .map_err(|e| e.to_string())
        });
    let (never_block, servers) = match built {
        Ok(built) => built,
        Err(err) => {
            eprintln!("enforcer resolve: {err}");
            return ExitCode::FAILURE;
        }
    };
    let options = LoadOptions {
        never_block: never_block.clone(),
        shared_suffixes: args.shared_suffixes.clone(),
    };
    let policy = match policy::load_policy(std::slice::from_ref(&args.rules), &options) {
        Ok(policy) => policy,
        Err(PolicyError::Invalid(diagnostics)) => {
            for diagnostic in &diagnostics {
                eprintln!("{diagnostic}");
            }
            return ExitCode::FAILURE;
        }
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };

    let config = ResolverConfig {
        servers,
        max_addresses_per_name: args.max_addresses_per_name,
        never_block,
        shared_suffixes: args.shared_suffixes.clone(),
        timeout: Duration::from_secs(args.timeout.max(1)),
        ..ResolverConfig::default()
    };

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("enforcer resolve: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let resolver = match Resolver::new(&config) {
        Ok(resolver) => resolver.with_problem_logging(false),
        Err(err) => {
            eprintln!("enforcer resolve: {err}");
            return ExitCode::FAILURE;
        }
    };

    // The book with no clamping, so TTLs are shown as DNS gave them.
    let mut book = AddressBook::new(BookSettings {
        ttl_floor: Duration::ZERO,
        ttl_ceiling: Duration::from_secs(u64::from(u32::MAX)),
        grace: Duration::ZERO,
    });
    book.set_uses(policy_uses(&policy), SystemTime::now());
    let names: Vec<String> = book.names().map(str::to_owned).collect();
    let started = Instant::now();
    let resolutions = runtime.block_on(resolver.resolve_many(&names));
    let elapsed = started.elapsed();
    let now = SystemTime::now();
    for resolution in &resolutions {
        report_problem(&book, resolution);
        book.apply(resolution, now);
    }
    let ok = resolutions
        .iter()
        .filter(|r| matches!(r.outcome, LookupResult::Ok(_)))
        .count();
    eprintln!(
        "resolved {} names in {} ms via {}: {} ok, {} refused or failed",
        resolutions.len(),
        elapsed.as_millis(),
        resolver
            .servers()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        ok,
        resolutions.len() - ok
    );

    let output = build_output(&policy, &book, now);
    if args.json {
        match serde_json::to_string_pretty(&output) {
            Ok(text) => println!("{text}"),
            Err(err) => {
                eprintln!("enforcer resolve: {err}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", render_text(&output));
    }
    ExitCode::SUCCESS
}

fn report_problem(book: &AddressBook, resolution: &NameResolution) {
    let platforms = book.platforms_of(&resolution.name).join(", ");
    match &resolution.outcome {
        LookupResult::Ok(_) => {}
        LookupResult::Rejected(r) => eprintln!(
            "refused ({}) {} [{platforms}]: {}",
            r.reason, resolution.name, r.detail
        ),
        LookupResult::Failed(f) => eprintln!(
            "failed ({}) {} [{platforms}]: {}",
            f.kind, resolution.name, f.detail
        ),
    }
}

fn build_output(policy: &Policy, book: &AddressBook, now: SystemTime) -> Output {
    let platforms = policy
        .platforms
        .iter()
        .map(|platform| {
            let mut addresses: Vec<AddressOutput> = Vec::new();
            let mut wildcards = Vec::new();
            for entry in &platform.entries {
                addresses.extend(entry.prefixes.iter().map(|p| AddressOutput {
                    prefix: p.to_string(),
                    source: "published",
                    name: None,
                    cname_chain: Vec::new(),
                    ttl_remaining: None,
                }));
                // Only what is learned from answers at run time (not names the gateway answers).
                let learned = crate::learn::learns(platform, entry).then_some(&entry.domains);
                wildcards.extend(learned.into_iter().flatten().filter_map(|d| match d {
                    DomainPattern::Wildcard(_) => Some(d.to_string()),
                    DomainPattern::Exact(_) => None,
                }));
            }
            // One row per (name, address) even when several entries use the name.
            let mut seen = BTreeSet::new();
            let mut dns: Vec<AddressOutput> = book
                .entries()
                .filter(|e| e.platform == platform.name)
                .filter(|e| seen.insert((e.name, e.address)))
                .map(|e| AddressOutput {
                    prefix: IpNet::from(e.address).to_string(),
                    source: "dns",
                    name: Some(e.name.to_owned()),
                    cname_chain: e.cname_chain.to_vec(),
                    ttl_remaining: Some(e.ttl_remaining(now).as_secs()),
                })
                .collect();
            dns.sort();
            addresses.extend(dns);
            PlatformOutput {
                platform: platform.name.clone(),
                action: platform.action.as_str(),
                addresses,
                wildcards,
            }
        })
        .collect();
    Output { platforms }
}

fn render_text(output: &Output) -> String {
    let mut out = String::new();
    for p in &output.platforms {
        out.push_str(&format!("{} ({})\n", p.platform, p.action));
        if p.addresses.is_empty() && p.wildcards.is_empty() {
            out.push_str("  (no addresses)\n");
        }
        for a in &p.addresses {
            match (&a.name, a.ttl_remaining) {
                (Some(name), Some(ttl)) => {
                    let mut via = name.clone();
                    for member in &a.cname_chain {
                        via.push_str(" → ");
                        via.push_str(member);
                    }
                    out.push_str(&format!(
                        "  {:<44} {:<9} {via}  ttl {ttl}s\n",
                        a.prefix, a.source
                    ));
                }
                _ => out.push_str(&format!("  {:<44} {}\n", a.prefix, a.source)),
            }
        }
        for w in &p.wildcards {
            out.push_str(&format!(
                "  {w:<44} {:<9} from DNS answers at run time\n",
                "learned"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy_str;

    #[test]
    fn text_and_json_shapes() {
        let output = Output {
            platforms: vec![PlatformOutput {
                platform: "zoom".into(),
                action: "drop",
                addresses: vec![
                    AddressOutput {
                        prefix: "170.114.0.0/16".into(),
                        source: "published",
                        name: None,
                        cname_chain: vec![],
                        ttl_remaining: None,
                    },
                    AddressOutput {
                        prefix: "198.19.1.5/32".into(),
                        source: "dns",
                        name: Some("zoom.us".into()),
                        cname_chain: vec!["edge.zoom.us".into()],
                        ttl_remaining: Some(300),
                    },
                ],
                wildcards: vec!["*.zoom.us".into()],
            }],
        };
        let text = render_text(&output);
        assert!(text.starts_with("zoom (drop)\n"));
        assert!(text.contains("zoom.us → edge.zoom.us  ttl 300s"));
        assert!(text.contains("*.zoom.us"));
        let json: serde_json::Value = serde_json::to_value(&output).unwrap();
        let a = &json["platforms"][0]["addresses"];
        assert_eq!(a[0]["name"], serde_json::Value::Null);
        assert_eq!(a[0]["ttl_remaining"], serde_json::Value::Null);
        assert_eq!(a[0]["cname_chain"], serde_json::json!([]));
        assert_eq!(a[1]["cname_chain"], serde_json::json!(["edge.zoom.us"]));
        assert!(json["platforms"][0].get("wildcards").is_none());
    }

    #[test]
    fn published_prefixes_without_dns() {
        let policy = parse_policy_str(
            std::path::Path::new("zoom.yaml"),
            "platform: zoom\nmatch:\n  - prefixes: [170.114.0.0/16]\n  - domains: [\"*.zoom.us\"]\n    \
             enforce: address\n  - domains: [\"*.zoom.com\"]\n  - domains: [\"*.zoom.de\"]\n    \
             enforce: name\n",
            &LoadOptions::default(),
        )
        .unwrap();
        let book = AddressBook::new(BookSettings {
            ttl_floor: Duration::ZERO,
            ttl_ceiling: Duration::from_secs(60),
            grace: Duration::ZERO,
        });
        let out = build_output(&policy, &book, SystemTime::now());
        assert_eq!(out.platforms[0].addresses[0].prefix, "170.114.0.0/16");
        assert_eq!(
            out.platforms[0].wildcards,
            vec!["*.zoom.us"],
            "a drop platform's both and name wildcards are answered by the gateway, not learned"
        );
    }
}
