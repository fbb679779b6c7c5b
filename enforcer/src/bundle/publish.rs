//! Writing bundle repositories: `enforcer bundle keygen` (an ed25519 key and the root metadata
//! gateways pin) and `enforcer bundle build` (a policy published as a new targets version).
//!
//! One key holds every role (root, targets, snapshot, timestamp): a national network team signs
//! from one place, and the root can later list more keys or split the roles (a new root version
//! signed by the old key) without any gateway being touched. The repository uses consistent
//! snapshots: every version's targets, snapshot and target file have names of their own, and
//! only `timestamp.json` is replaced in place, last, so a gateway reading during a build sees the
//! old version or the new one, never a mix.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use tough::editor::RepositoryEditor;
use tough::editor::signed::SignedRole;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::{Hashes, KeyHolder, RoleKeys, RoleType, Root, Target};
use tough::sign::Sign as _;
use tough::{
    ExpirationEnforcement, FilesystemTransport, IntoVec as _, RepositoryLoader, TargetName,
};

use super::{Bundle, BundleError, TARGET, unix};

/// How long the root pinned by the gateways stays valid: ten years (rotate it before, by
/// publishing a new root version).
pub const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// How long a targets version stays valid. An unchanged policy keeps its version while its
/// targets stay valid well past the new timestamp; nearer their end it is published again as a
/// new version (same files).
pub const TARGETS_LIFETIME: Duration = Duration::from_secs(365 * 86_400);
/// Margin kept between the targets' and the timestamp's expiry.
const TARGETS_MARGIN: Duration = Duration::from_secs(30 * 86_400);

pub const KEY_FILE: &str = "signing.key";
pub const ROOT_FILE: &str = "root.json";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn tuf(what: impl Into<String>) -> impl FnOnce(tough::error::Error) -> BundleError {
    let what = what.into();
    move |source| BundleError::Tuf {
        what,
        source: Box::new(source),
    }
}

fn jiff(time: SystemTime) -> Result<jiff::Timestamp, BundleError> {
    jiff::Timestamp::try_from(time)
        .map_err(|e| BundleError::Invalid(format!("a time out of range: {e}")))
}

/// `bundle keygen --out DIR`: DIR/signing.key (PKCS#8 ed25519, mode 0600) and DIR/root.json,
/// version 1, every role held by that key. Refuses to overwrite either.
pub async fn keygen(out: &Path) -> Result<(), BundleError> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let key_path = out.join(KEY_FILE);
    let root_path = out.join(ROOT_FILE);
    for path in [&key_path, &root_path] {
        if path.exists() {
            return Err(BundleError::Invalid(format!(
                "{} exists: refusing to replace a key or root gateways may trust",
                path.display()
            )));
        }
    }
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|e| BundleError::Invalid(format!("generating an ed25519 key: {e}")))?;
    write_private(&key_path, pkcs8.as_ref())?;
    let pair = tough::sign::parse_keypair(pkcs8.as_ref())
        .map_err(tuf(format!("reading {}", key_path.display())))?;
    let key = pair.tuf_key();
    let key_id = key
        .key_id()
        .map_err(|e| BundleError::Invalid(format!("the key id: {e}")))?;
    let one = || RoleKeys {
        keyids: vec![key_id.clone()],
        threshold: NonZeroU64::MIN,
        _extra: HashMap::new(),
    };
    let root = Root {
        spec_version: "1.0.0".to_owned(),
        consistent_snapshot: true,
        version: NonZeroU64::MIN,
        expires: jiff(SystemTime::now() + ROOT_LIFETIME)?,
        keys: HashMap::from([(key_id.clone(), key)]),
        roles: [
            RoleType::Root,
            RoleType::Targets,
            RoleType::Snapshot,
            RoleType::Timestamp,
        ]
        .into_iter()
        .map(|r| (r, one()))
        .collect(),
        _extra: HashMap::new(),
    };
    let keys = key_sources(&key_path);
    let signed = SignedRole::new(root.clone(), &KeyHolder::Root(root), &keys, &rng)
        .await
        .map_err(tuf("signing the root"))?;
    crate::fsutil::write_atomically(&root_path, signed.buffer()).map_err(io(&root_path))
}

/// Creates `path` with `bytes`, readable by its owner only, never replacing a file.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(path))
}

fn key_sources(key: &Path) -> Vec<Box<dyn KeySource>> {
    vec![Box::new(LocalKeySource {
        path: key.to_path_buf(),
    })]
}

/// What `bundle build` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The targets version in the repository now.
    pub version: u64,
    pub digest: String,
    /// False when the policy was unchanged and only the timestamp and snapshot were re-signed.
    pub new_version: bool,
}

/// Where a repository is and how it is signed.
#[derive(Clone, Debug)]
pub struct Repo {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub key: PathBuf,
}

impl Repo {
    fn metadata(&self) -> PathBuf {
        self.dir.join("metadata")
    }
    fn targets(&self) -> PathBuf {
        self.dir.join("targets")
    }
}

/// The repository's current state, read back (and verified) from its files.
struct Current {
    repo: tough::Repository,
    targets_version: u64,
    targets_expires: jiff::Timestamp,
    snapshot_version: u64,
    timestamp_version: u64,
    bundle: Option<Bundle>,
}

async fn current(repo: &Repo, root: &[u8]) -> Result<Option<Current>, BundleError> {
    if !repo.metadata().join("timestamp.json").exists() {
        return Ok(None);
    }
    let url = |path: PathBuf| {
        reqwest::Url::from_directory_path(&path)
            .map_err(|()| BundleError::Invalid(format!("{}: not an absolute path", path.display())))
    };
    let datastore = tempdir(&repo.dir)?;
    // Expired metadata is read too: re-signing is how it is renewed.
    let loaded = RepositoryLoader::new(&root, url(repo.metadata())?, url(repo.targets())?)
        .transport(FilesystemTransport)
        .expiration_enforcement(ExpirationEnforcement::Unsafe)
        .datastore(&datastore)
        .load()
        .await;
    let _ = std::fs::remove_dir_all(&datastore);
    let loaded = loaded.map_err(tuf(format!(
        "reading the repository {}",
        repo.dir.display()
    )))?;
    let name = TargetName::new(TARGET).map_err(tuf("the target name"))?;
    let bundle = match loaded.read_target(&name).await {
        Ok(Some(stream)) => {
            let bytes = stream
                .into_vec()
                .await
                .map_err(tuf(format!("reading {TARGET} of {}", repo.dir.display())))?;
            Some(Bundle::parse(&bytes)?)
        }
        Ok(None) => None,
        Err(error) => return Err(tuf(format!("reading {TARGET}"))(error)),
    };
    Ok(Some(Current {
        targets_version: loaded.targets().signed.version.get(),
        targets_expires: loaded.targets().signed.expires,
        snapshot_version: loaded.snapshot().signed.version.get(),
        timestamp_version: loaded.timestamp().signed.version.get(),
        bundle,
        repo: loaded,
    }))
}

/// A fresh private directory for tough's datastore while reading our own repository.
fn tempdir(repo: &Path) -> Result<PathBuf, BundleError> {
    let dir = repo.join(format!(".read-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    Ok(dir)
}

fn version(n: u64) -> Result<NonZeroU64, BundleError> {
    NonZeroU64::new(n).ok_or_else(|| BundleError::Invalid("version 0".to_owned()))
}

/// Publishes `bundle` into `repo` (created on first use): a new targets version when its files
/// differ from the current version's (or the current targets near their expiry), else only a
/// new snapshot and timestamp. The timestamp and snapshot expire at `expires`.
pub async fn publish(
    repo: &Repo,
    bundle: &Bundle,
    now: SystemTime,
    expires: SystemTime,
) -> Result<Published, BundleError> {
    let root = std::fs::read(&repo.root).map_err(io(&repo.root))?;
    let current = current(repo, &root).await?;
    let keys = key_sources(&repo.key);
    let expires_at = jiff(expires)?;
    let (mut editor, versions, kept) = match current {
        None => (
            RepositoryEditor::new(&repo.root)
                .await
                .map_err(tuf(format!("reading {}", repo.root.display())))?,
            (0, 0, 0),
            None,
        ),
        Some(c) => {
            // Keep the targets version only while they outlive the new timestamp by a margin.
            let keep_until = jiff(expires + TARGETS_MARGIN)?;
            let same = c
                .bundle
                .as_ref()
                .is_some_and(|b| b.files == bundle.files && b.digest == bundle.digest)
                && c.targets_expires > keep_until;
            let versions = (c.targets_version, c.snapshot_version, c.timestamp_version);
            let kept = same.then_some((c.bundle, c.targets_expires));
            (
                RepositoryEditor::from_repo(&repo.root, c.repo)
                    .await
                    .map_err(tuf("loading the repository for editing"))?,
                versions,
                kept,
            )
        }
    };
    let (targets, snapshot, timestamp) = versions;
    let new_version = kept.is_none();
    let published = match kept {
        // Unchanged: the same targets, re-signed byte for byte (ed25519 is deterministic).
        Some((Some(existing), targets_expires)) => {
            editor
                .targets_version(version(targets)?)
                .map_err(tuf("targets"))?
                .targets_expires(targets_expires)
                .map_err(tuf("targets"))?;
            Published {
                version: targets,
                digest: existing.digest,
                new_version: false,
            }
        }
        _ => {
            let bytes = serde_json::to_vec(bundle)
                .map_err(|e| BundleError::Invalid(format!("encoding the bundle: {e}")))?;
            let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
            let hex: String = sha256.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            // Consistent snapshots: the target is stored under its digest, never overwritten.
            let path = repo.targets().join(format!("{hex}.{TARGET}"));
            crate::fsutil::write_atomically(&path, &bytes).map_err(io(&path))?;
            let target = Target {
                length: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
                hashes: Hashes {
                    sha256: sha256.as_ref().to_vec().into(),
                    _extra: HashMap::new(),
                },
                custom: HashMap::new(),
                _extra: HashMap::new(),
            };
            let name = TargetName::new(TARGET).map_err(tuf("the target name"))?;
            editor
                .clear_targets()
                .map_err(tuf("targets"))?
                .add_target(name, target)
                .map_err(tuf("targets"))?
                .targets_version(version(targets + 1)?)
                .map_err(tuf("targets"))?
                .targets_expires(jiff(now + TARGETS_LIFETIME)?)
                .map_err(tuf("targets"))?;
            Published {
                version: targets + 1,
                digest: bundle.digest.clone(),
                new_version: true,
            }
        }
    };
    debug_assert_eq!(published.new_version, new_version);
    editor
        .snapshot_version(version(snapshot + 1)?)
        .snapshot_expires(expires_at)
        .timestamp_version(version(timestamp + 1)?)
        .timestamp_expires(expires_at);
    let signed = editor
        .sign(&keys)
        .await
        .map_err(tuf(format!("signing with {}", repo.key.display())))?;
    install(repo, &signed).await?;
    Ok(published)
}

/// Writes the signed metadata beside the repository, then moves it in: the versioned files
/// first, `timestamp.json` (what gateways read first) last, each by rename.
async fn install(
    repo: &Repo,
    signed: &tough::editor::signed::SignedRepository,
) -> Result<(), BundleError> {
    let staging = repo.dir.join(format!(".staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let written = signed.write(&staging).await.map_err(tuf(format!(
        "writing the metadata into {}",
        staging.display()
    )));
    let moved = written.and_then(|()| {
        let metadata = repo.metadata();
        std::fs::create_dir_all(&metadata).map_err(io(&metadata))?;
        let mut names: Vec<String> = std::fs::read_dir(&staging)
            .map_err(io(&staging))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        // Versioned names first, then timestamp.json.
        names.sort_by_key(|n| n == "timestamp.json");
        for name in names {
            let to = metadata.join(&name);
            std::fs::rename(staging.join(&name), &to).map_err(io(&to))?;
        }
        // The newest root under its plain name too, for operators and first-time pinning.
        let root = signed_root_file(&metadata)?;
        let plain = metadata.join(super::publish::ROOT_FILE);
        std::fs::copy(&root, &plain).map_err(io(&plain))?;
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&staging);
    moved
}

/// The highest `N.root.json` of the metadata directory.
fn signed_root_file(metadata: &Path) -> Result<PathBuf, BundleError> {
    std::fs::read_dir(metadata)
        .map_err(io(metadata))?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let n: u64 = name.strip_suffix(".root.json")?.parse().ok()?;
            Some((n, metadata.join(name)))
        })
        .max()
        .map(|(_, path)| path)
        .ok_or_else(|| BundleError::Invalid(format!("{}: no root metadata", metadata.display())))
}

/// The bundle for the rule files `files` of a policy with digest `digest`, built `now`.
pub fn bundle_of(files: crate::policy::RuleTexts, digest: String, now: SystemTime) -> Bundle {
    Bundle {
        format: super::FORMAT,
        digest,
        built: unix(now),
        files,
    }
}
