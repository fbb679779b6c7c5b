//! `enforcer bundle keygen | build`: signed policy bundles for a fleet (docs/reference.md,
//! "Fleet: signed policy bundles").

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::bundle::BundleError;
use crate::bundle::publish::{self, Published, Repo};
use crate::cli::check::{self, CheckArgs};

#[derive(Debug, clap::Subcommand)]
#[command(
    after_help = "Example: enforcer bundle build --rules /etc/enforcer/rules --repo /srv/tuf --key /root/keys/signing.key"
)]
pub enum BundleCommand {
    /// Write DIR/signing.key (ed25519, mode 0600) and DIR/root.json, the root metadata
    /// gateways pin with --bundle-root. Refuses to replace either.
    #[command(after_help = "Example: enforcer bundle keygen --out /root/keys")]
    Keygen(KeygenArgs),
    /// Validate a policy exactly as `check` does, then publish it into a TUF repository as a
    /// new version (an unchanged policy only gets its timestamp and snapshot signed again).
    ///
    /// The repository (metadata/ and targets/ under --repo, any web server serves it) is
    /// created on first use from --key and the root.json beside it (or --root). Prints the
    /// version and the policy digest.
    #[command(
        after_help = "Example: enforcer bundle build --rules /etc/enforcer/rules --repo /srv/tuf --key /root/keys/signing.key --expires 7"
    )]
    Build(BuildArgs),
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Directory for signing.key and root.json (created if needed).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The policy: a directory of *.yaml rule files (or one file).
    #[arg(long, value_name = "DIR")]
    pub rules: PathBuf,
    /// The repository directory (metadata/ and targets/ are written under it).
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// The signing key (`bundle keygen`'s signing.key).
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// The root metadata [default: root.json beside --key].
    #[arg(long, value_name = "FILE")]
    pub root: Option<PathBuf>,
    /// Days until the timestamp and snapshot expire: gateways refuse the repository after
    /// that unless it is built again [default: 7]. Targets last a year.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub expires: Option<u64>,
    /// Validate with this daemon config file, as `check --config` does.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleCliError {
    #[error("{}: policy refused, nothing was published:\n{}", .path.display(), .errors.join("\n"))]
    Policy { path: PathBuf, errors: Vec<String> },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
}

pub fn execute(command: BundleCommand) -> Result<(), BundleCliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BundleCliError::Runtime)?;
    match command {
        BundleCommand::Keygen(args) => {
            runtime.block_on(publish::keygen(&args.out))?;
            println!(
                "{}\n{}",
                args.out.join(publish::KEY_FILE).display(),
                args.out.join(publish::ROOT_FILE).display()
            );
            Ok(())
        }
        BundleCommand::Build(args) => {
            let published = runtime.block_on(build(&args, SystemTime::now()))?;
            let what = if published.new_version {
                "published"
            } else {
                "unchanged, re-signed"
            };
            println!(
                "version {} digest {} ({what})",
                published.version, published.digest
            );
            Ok(())
        }
    }
}

/// Validates `args.rules` as `check` would and publishes it.
pub async fn build(args: &BuildArgs, now: SystemTime) -> Result<Published, BundleCliError> {
    let days = args.expires.unwrap_or(7);
    let expires = now + Duration::from_secs(days.saturating_mul(86_400));
    build_expiring(args, now, expires).await
}

/// As [`build`] with the timestamp's expiry given (the tests sign expired ones).
pub async fn build_expiring(
    args: &BuildArgs,
    now: SystemTime,
    expires: SystemTime,
) -> Result<Published, BundleCliError> {
    let refused = |errors: Vec<String>| BundleCliError::Policy {
        path: args.rules.clone(),
        errors,
    };
    let check_args = CheckArgs {
        paths: vec![args.rules.clone()],
        never_block: Vec::new(),
        config: args.config.clone(),
    };
    let policy = check::validate(&check_args).map_err(refused)?;
    let options = check::load_options(&check_args).map_err(|e| refused(vec![e.to_string()]))?;
    let (again, texts) = crate::daemon::read_policy_and_texts(&args.rules, &options)
        .map_err(|e| refused(vec![e.to_string()]))?;
    let digest = crate::daemon::policy_digest(&policy);
    if crate::daemon::policy_digest(&again) != digest {
        return Err(refused(vec![
            "the files changed while they were read; nothing was published (try again)".into(),
        ]));
    }
    let root = args
        .root
        .clone()
        .unwrap_or_else(|| beside(&args.key, publish::ROOT_FILE));
    let repo = Repo {
        dir: absolute(&args.repo)?,
        root,
        key: args.key.clone(),
    };
    let bundle = publish::bundle_of(texts, digest, now);
    bundle.check()?;
    Ok(publish::publish(&repo, &bundle, now, expires).await?)
}

fn beside(key: &Path, name: &str) -> PathBuf {
    key.parent().unwrap_or(Path::new(".")).join(name)
}

/// The repository directory as an absolute path (tough reads it through file:// URLs).
fn absolute(dir: &Path) -> Result<PathBuf, BundleError> {
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::canonicalize(dir))
        .map_err(|source| BundleError::Io {
            path: dir.to_path_buf(),
            source,
        })
}
