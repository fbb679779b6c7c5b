//! Keygen, build and verify through real repositories on disk (file:// URLs), as a gateway
//! follows them: the round trip, an unchanged policy, and what is refused (a tampered target,
//! an expired timestamp, an older timestamp served after a newer one, another key's repository).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::follow::{FetchResult, Fetched, Follower};
use super::publish::{self, Published};
use crate::cli::bundle::{BuildArgs, build_expiring};

const V1: &str = "platform: video\nmatch:\n  - prefixes: [198.18.10.0/24]\n";
const V2: &str = "platform: video\nmatch:\n  - prefixes: [198.18.10.0/24, 198.18.20.0/24]\n";

struct Setup {
    dir: PathBuf,
}

impl Setup {
    fn new(name: &str) -> Setup {
        let dir =
            std::env::temp_dir().join(format!("enforcer-bundle-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rules")).unwrap();
        std::fs::write(dir.join("rules/video.yaml"), V1).unwrap();
        runtime()
            .block_on(publish::keygen(&dir.join("keys")))
            .unwrap();
        Setup { dir }
    }
    fn rules(&self, text: &str) {
        std::fs::write(self.dir.join("rules/video.yaml"), text).unwrap();
    }
    fn args(&self) -> BuildArgs {
        BuildArgs {
            rules: self.dir.join("rules"),
            repo: self.dir.join("repo"),
            key: self.dir.join("keys/signing.key"),
            root: None,
            expires: None,
            config: None,
        }
    }
    fn build_expiring(&self, expires: SystemTime) -> Published {
        runtime()
            .block_on(build_expiring(&self.args(), SystemTime::now(), expires))
            .unwrap()
    }
    fn build(&self) -> Published {
        self.build_expiring(SystemTime::now() + Duration::from_secs(7 * 86_400))
    }
    /// A gateway pinning this setup's root, with its own datastore.
    fn gateway(&self, name: &str) -> Follower {
        let url = format!("file://{}", self.dir.join("repo").display());
        Follower::new(&url, &self.dir.join("keys/root.json"), &self.dir.join(name)).unwrap()
    }
    fn metadata(&self, name: &str) -> PathBuf {
        self.dir.join("repo/metadata").join(name)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn fetch(gateway: &Follower, current: Option<u64>) -> Result<Fetched, super::follow::FetchError> {
    runtime().block_on(gateway.fetch(current))
}

fn version_of(path: &Path) -> u64 {
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    json["signed"]["version"].as_u64().unwrap()
}

#[test]
fn keygen_build_and_verify_round_trip() {
    let s = Setup::new("round-trip");
    let mode = std::fs::metadata(s.dir.join("keys/signing.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    // keygen never replaces a key gateways may trust.
    let again = runtime().block_on(publish::keygen(&s.dir.join("keys")));
    assert!(
        again
            .unwrap_err()
            .to_string()
            .contains("refusing to replace")
    );

    let first = s.build();
    assert_eq!((first.version, first.new_version), (1, true));
    let gateway = s.gateway("gw");
    let Fetched::New(verified) = fetch(&gateway, None).unwrap() else {
        panic!("no new version")
    };
    assert_eq!(verified.version, 1);
    assert_eq!(verified.bundle.digest, first.digest);
    assert_eq!(verified.bundle.files["video.yaml"], V1);
    // The digest is the one `status` shows for that policy.
    let policy = crate::policy::load_policy(&[s.dir.join("rules")], &Default::default()).unwrap();
    assert_eq!(
        verified.bundle.digest,
        crate::daemon::policy_digest(&policy)
    );
    assert_eq!(fetch(&gateway, Some(1)).unwrap(), Fetched::Unchanged(1));

    s.rules(V2);
    let second = s.build();
    assert_eq!((second.version, second.new_version), (2, true));
    assert_ne!(second.digest, first.digest);
    let Fetched::New(verified) = fetch(&gateway, Some(1)).unwrap() else {
        panic!("no new version")
    };
    assert_eq!(
        (
            verified.version,
            verified.bundle.files["video.yaml"].as_str()
        ),
        (2, V2)
    );
}

#[test]
fn an_unchanged_policy_is_re_signed_without_a_new_version() {
    let s = Setup::new("unchanged");
    let first = s.build();
    let targets_file = s.metadata("1.targets.json");
    let targets_before = std::fs::read(&targets_file).unwrap();
    let timestamp_before = version_of(&s.metadata("timestamp.json"));
    let second = s.build();
    assert_eq!(
        (second.version, second.new_version, second.digest.as_str()),
        (1, false, first.digest.as_str())
    );
    assert!(!s.metadata("2.targets.json").exists());
    assert_eq!(std::fs::read(&targets_file).unwrap(), targets_before);
    assert_eq!(
        version_of(&s.metadata("timestamp.json")),
        timestamp_before + 1
    );
    let gateway = s.gateway("gw");
    assert!(matches!(fetch(&gateway, None).unwrap(), Fetched::New(v) if v.version == 1));
    assert_eq!(fetch(&gateway, Some(1)).unwrap(), Fetched::Unchanged(1));
}

#[test]
fn a_tampered_target_is_refused() {
    let s = Setup::new("tampered");
    s.build();
    let target = std::fs::read_dir(s.dir.join("repo/targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".policy.json"))
        .unwrap();
    let text = std::fs::read_to_string(&target).unwrap();
    let tampered = text.replace("198.18.10.0/24", "198.18.11.0/24");
    assert_ne!(text, tampered);
    std::fs::write(&target, tampered).unwrap();
    let error = fetch(&s.gateway("gw"), None).unwrap_err();
    assert_eq!(error.result, FetchResult::Invalid, "{}", error.message);
    assert!(error.message.contains("policy.json"), "{}", error.message);
}

#[test]
fn an_expired_timestamp_is_refused() {
    let s = Setup::new("expired");
    s.build_expiring(SystemTime::now() - Duration::from_secs(60));
    let error = fetch(&s.gateway("gw"), None).unwrap_err();
    assert_eq!(error.result, FetchResult::Expired, "{}", error.message);
    assert!(error.message.contains("xpired"), "{}", error.message);
    // Built again, it is taken.
    s.build();
    assert!(matches!(
        fetch(&s.gateway("gw"), None).unwrap(),
        Fetched::New(_)
    ));
}

#[test]
fn an_older_timestamp_served_after_a_newer_one_is_a_rollback() {
    let s = Setup::new("rollback");
    s.build();
    let first_timestamp = std::fs::read(s.metadata("timestamp.json")).unwrap();
    let gateway = s.gateway("gw");
    assert!(matches!(fetch(&gateway, None).unwrap(), Fetched::New(v) if v.version == 1));
    // Re-signed (same version 1, newer timestamp and snapshot), then the older timestamp is
    // served again: the datastore knows a newer one, whatever the targets version says.
    s.build();
    assert_eq!(fetch(&gateway, Some(1)).unwrap(), Fetched::Unchanged(1));
    std::fs::write(s.metadata("timestamp.json"), &first_timestamp).unwrap();
    let error = fetch(&gateway, Some(1)).unwrap_err();
    assert_eq!(error.result, FetchResult::Rollback, "{}", error.message);
    assert!(
        error.message.contains("previously fetched"),
        "{}",
        error.message
    );

    // A new version, then a mirror serves the first (validly signed, unexpired) again.
    s.rules(V2);
    s.build();
    assert!(matches!(fetch(&gateway, Some(1)).unwrap(), Fetched::New(v) if v.version == 2));
    std::fs::write(s.metadata("timestamp.json"), &first_timestamp).unwrap();
    let error = fetch(&gateway, Some(2)).unwrap_err();
    assert_eq!(error.result, FetchResult::Rollback, "{}", error.message);
    // A gateway that lost its datastore but keeps version 2 in force refuses version 1 too.
    let fresh = s.gateway("gw-fresh");
    let error = fetch(&fresh, Some(2)).unwrap_err();
    assert_eq!(error.result, FetchResult::Rollback, "{}", error.message);
}

#[test]
fn another_keys_repository_and_an_invalid_policy_are_refused() {
    let s = Setup::new("other-key");
    let other = Setup::new("other-key-2");
    other.build();
    // A gateway pinning s's root, pointed at other's repository.
    let url = format!("file://{}", other.dir.join("repo").display());
    let gateway = Follower::new(&url, &s.dir.join("keys/root.json"), &s.dir.join("gw")).unwrap();
    let error = fetch(&gateway, None).unwrap_err();
    assert_eq!(error.result, FetchResult::Invalid, "{}", error.message);

    // bundle build refuses what check refuses, and publishes nothing.
    s.rules("platform: video\nmatch:\n  - prefixes: [10.0.0.0/8]\n");
    let refused = runtime().block_on(build_expiring(
        &s.args(),
        SystemTime::now(),
        SystemTime::now() + Duration::from_secs(86_400),
    ));
    let message = refused.unwrap_err().to_string();
    assert!(
        message.contains("never-block") || message.contains("10.0.0.0/8"),
        "{message}"
    );
    assert!(!s.dir.join("repo/metadata/timestamp.json").exists());
}
