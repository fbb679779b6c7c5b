//! Bundle mode (`run --bundle-url`): the gateway follows a signed repository instead of its own
//! files. Each poll verifies the repository (outside the state lock), validates a new version's
//! policy exactly as a reload would, and applies it through the same atomic switch; anything
//! refused is logged and counted, and the policy in force stays.

use std::time::{Duration, SystemTime};

use super::{Daemon, POISONED, ReloadError, policy_digest};
use crate::bundle::follow::{FetchResult, Fetched, Follower, Verified};
use crate::bundle::store::Store;
use crate::control::protocol::PolicyChange;
use crate::history::Source;
use crate::policy;

/// What the state knows of bundle mode: the repository, the version in force, the counters.
#[derive(Clone, Debug)]
pub struct BundleMode {
    pub url: String,
    pub store: Store,
    pub applied: Verified,
    /// Fetches by result (`FetchResult::index`).
    pub fetches: [u64; 6],
}

impl BundleMode {
    pub fn new(url: &str, store: Store, applied: Verified) -> Self {
        Self {
            url: url.to_owned(),
            store,
            applied,
            fetches: [0; 6],
        }
    }

    /// The error a local policy edit gets in bundle mode.
    pub fn refusal(&self, what: &str) -> Vec<String> {
        vec![format!(
            "{what} refused: this gateway follows the bundle repository {} (--bundle-url); \
             change the policy by publishing a new bundle (enforcer bundle build)",
            self.url
        )]
    }
}

impl Daemon {
    /// The bundle-mode refusal of `what`, when in bundle mode.
    pub fn bundle_refusal(&self, what: &str) -> Option<Vec<String>> {
        self.lock()
            .and_then(|s| s.bundle_mode().map(|m| m.refusal(what)))
    }

    /// Validates and applies a verified version (blocking). The policy is validated from the
    /// bundle's texts without holding the state; its digest must be the one the bundle claims.
    pub fn apply_bundle(&self, verified: &Verified) -> Result<PolicyChange, Vec<String>> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .map_err(|_| vec![POISONED.to_owned()])?;
        let (path, options) = self.with(|s| Ok(s.reload_source()))?;
        let policy = policy::load_policy_from_texts(&path, &verified.bundle.files, &options)
            .map_err(|e| ReloadError::from(e).lines())?;
        let digest = policy_digest(&policy);
        if digest != verified.bundle.digest {
            return Err(vec![format!(
                "the bundle claims digest {} but its files make policy {digest}",
                verified.bundle.digest
            )]);
        }
        let why = format!("bundle version {}", verified.version);
        let result = self.with(|s| {
            s.install_bundle(policy, verified, &why)
                .map_err(|e| e.lines())
        });
        self.record_pending();
        result
    }

    /// `reload` in bundle mode: the policy directory is made the last verified bundle again
    /// (undoing any hand edit) and applied.
    pub fn reapply_bundle(&self, user: &str) -> Result<PolicyChange, Vec<String>> {
        let store_and_bundle = self.with(|s| {
            Ok(s.bundle_mode()
                .map(|m| (m.store.clone(), m.applied.bundle.clone())))
        })?;
        if let Some((store, bundle)) = store_and_bundle {
            store
                .write_policy(&bundle)
                .map_err(|e| vec![e.to_string()])?;
        }
        self.reload(
            "reload requested (the last verified bundle)",
            Source::Reload,
            user,
        )
    }
}

/// `interval` with up to 10 % jitter either way, so a fleet started together spreads out.
fn jittered(interval: Duration) -> Duration {
    use std::hash::{BuildHasher as _, Hasher as _};
    // A randomly keyed hasher is random enough to spread polls, with no extra dependency.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(crate::bundle::unix(SystemTime::now()));
    let spread = f64::from(u32::try_from(hasher.finish() >> 32).unwrap_or(0)) / f64::from(u32::MAX);
    let tenth = interval / 10;
    (interval - tenth) + tenth.mul_f64(2.0 * spread)
}

/// Follows the repository until the task is dropped: a first look at once, then one every
/// interval (jittered).
pub async fn follow(daemon: Daemon, follower: Follower, interval: Duration) {
    loop {
        let Some(current) = daemon
            .blocking(|s| s.bundle_mode().map(|m| m.applied.version))
            .await
        else {
            return;
        };
        let result = match follower.fetch(current).await {
            Ok(Fetched::Unchanged(_)) => FetchResult::Unchanged,
            Ok(Fetched::New(verified)) => {
                let d = daemon.clone();
                let version = verified.version;
                let applied = tokio::task::spawn_blocking(move || d.apply_bundle(&verified)).await;
                match applied {
                    Ok(Ok(change)) => {
                        tracing::info!(version, digest = %change.policy_digest, "bundle applied");
                        FetchResult::Ok
                    }
                    Ok(Err(errors)) => {
                        tracing::error!(
                            version,
                            errors = %errors.join("; "),
                            "bundle refused (invalid policy); the policy in force stays"
                        );
                        FetchResult::Invalid
                    }
                    Err(_) => return,
                }
            }
            Err(error) => {
                let what = error.result.as_str();
                if error.result == FetchResult::Unreachable {
                    tracing::warn!(url = follower.url(), error = %error.message, "bundle repository unreachable; the policy in force stays");
                } else {
                    tracing::error!(url = follower.url(), result = what, error = %error.message, "bundle refused ({what}); the policy in force stays");
                }
                error.result
            }
        };
        if daemon
            .blocking(move |s| s.count_fetch(result))
            .await
            .is_none()
        {
            return;
        }
        tokio::time::sleep(jittered(interval)).await;
    }
}

/// The bundle a gateway starts with: the one kept in `store` (a cold start enforces it with the
/// server unreachable), else the repository's current one, fetched once now.
/// The flag says whether it was fetched now (then kept only once the daemon enforces it).
pub fn initial(
    store: &Store,
    follower: &Follower,
) -> Result<(Verified, bool), crate::bundle::BundleError> {
    use crate::bundle::BundleError;
    match store.load() {
        Ok(Some(verified)) => {
            tracing::info!(
                version = verified.version,
                digest = %verified.bundle.digest,
                "enforcing the last verified bundle; the repository is looked at next"
            );
            store.write_policy(&verified.bundle)?;
            return Ok((verified, false));
        }
        Ok(None) => {}
        Err(error) => {
            tracing::error!(%error, "the kept bundle is unusable; fetching the repository's");
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BundleError::Invalid(format!("starting the runtime: {e}")))?;
    let fetched = runtime.block_on(follower.fetch(None)).map_err(|e| {
        BundleError::Invalid(format!(
            "no verified bundle yet, and the repository {} gave none ({}): {}",
            follower.url(),
            e.result.as_str(),
            e.message
        ))
    })?;
    let Fetched::New(verified) = fetched else {
        return Err(BundleError::Invalid(
            "the repository gave no bundle".to_owned(),
        ));
    };
    store.write_policy(&verified.bundle)?;
    tracing::info!(
        version = verified.version,
        digest = %verified.bundle.digest,
        "first bundle fetched and verified"
    );
    Ok((verified, true))
}

/// Seconds since the bundle in force was built and signed.
pub fn age_seconds(mode: &BundleMode) -> u64 {
    mode.applied.bundle.age(SystemTime::now()).as_secs()
}
