//! Following a bundle repository: fetch (bounded sizes, timeouts) and verify against the pinned
//! root with tough, whose datastore (STATE-DIR/bundle/tuf) remembers the newest timestamp and
//! snapshot trusted, so an older one served later is a rollback.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use tough::{
    Bytes, ExpirationEnforcement, FilesystemTransport, IntoVec as _, Limits, RepositoryLoader,
    TargetName, Transport, TransportError, TransportErrorKind, TransportStream,
};

use super::{Bundle, MAX_BUNDLE_BYTES, TARGET};

/// How long one file may take, and connecting.
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest timestamp, snapshot, root and targets metadata read.
const MAX_METADATA_BYTES: u64 = 1024 * 1024;

/// Why a fetch did not give a new version: the `result` label of
/// `enforcer_bundle_fetches_total`, with `ok` and `unchanged` for the good outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FetchResult {
    Ok,
    Unchanged,
    Unreachable,
    Invalid,
    Expired,
    Rollback,
}

impl FetchResult {
    pub const ALL: [FetchResult; 6] = [
        Self::Ok,
        Self::Unchanged,
        Self::Unreachable,
        Self::Invalid,
        Self::Expired,
        Self::Rollback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unchanged => "unchanged",
            Self::Unreachable => "unreachable",
            Self::Invalid => "invalid",
            Self::Expired => "expired",
            Self::Rollback => "rollback",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A refused or failed fetch: what kind, and the whole reason.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FetchError {
    pub result: FetchResult,
    pub message: String,
}

/// A verified version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub version: u64,
    pub bundle: Bundle,
}

/// What a fetch found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// The version already applied (its target was not fetched again).
    Unchanged(u64),
    New(Verified),
}

/// A repository followed by a gateway.
#[derive(Clone, Debug)]
pub struct Follower {
    metadata: Url,
    targets: Url,
    root: Vec<u8>,
    datastore: PathBuf,
    transport: HttpTransport,
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("--bundle-url {url}: {why}")]
    Url { url: String, why: String },
    #[error("--bundle-root {path}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--bundle-root {path}: not a TUF root signed by its own keys: {why}")]
    BadRoot { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Datastore {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl Follower {
    /// Follows `url` (http, https or file; `metadata/` and `targets/` under it), trusting the
    /// root metadata in `root` and keeping tough's datastore in `datastore`.
    pub fn new(url: &str, root: &Path, datastore: &Path) -> Result<Follower, FollowError> {
        let bad = |why: &str| FollowError::Url {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let mut base = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https" | "file") {
            return Err(bad("expected an http, https or file URL"));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let metadata = base.join("metadata/").map_err(|e| bad(&e.to_string()))?;
        let targets = base.join("targets/").map_err(|e| bad(&e.to_string()))?;
        let root_bytes = std::fs::read(root).map_err(|source| FollowError::Root {
            path: root.to_path_buf(),
            source,
        })?;
        check_root(&root_bytes).map_err(|why| FollowError::BadRoot {
            path: root.to_path_buf(),
            why,
        })?;
        std::fs::create_dir_all(datastore).map_err(|source| FollowError::Datastore {
            path: datastore.to_path_buf(),
            source,
        })?;
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Follower {
            metadata,
            targets,
            root: root_bytes,
            datastore: datastore.to_path_buf(),
            transport: HttpTransport { client },
        })
    }

    /// The repository's URL, for logs.
    pub fn url(&self) -> &str {
        self.metadata.as_str()
    }

    /// Loads and verifies the repository; fetches the target only when its version is not
    /// `current`. An older targets version than `current` is a rollback even when the datastore
    /// was lost.
    pub async fn fetch(&self, current: Option<u64>) -> Result<Fetched, FetchError> {
        let limits = Limits {
            max_root_size: MAX_METADATA_BYTES,
            max_targets_size: MAX_METADATA_BYTES,
            max_timestamp_size: MAX_METADATA_BYTES,
            max_snapshot_size: MAX_METADATA_BYTES,
            max_root_updates: 1024,
        };
        let repo = RepositoryLoader::new(&self.root, self.metadata.clone(), self.targets.clone())
            .transport(self.transport.clone())
            .limits(limits)
            .datastore(&self.datastore)
            .expiration_enforcement(ExpirationEnforcement::Safe)
            .load()
            .await
            .map_err(|e| refused("loading the repository metadata", &e))?;
        let version = repo.targets().signed.version.get();
        match current {
            Some(c) if version == c => return Ok(Fetched::Unchanged(version)),
            Some(c) if version < c => {
                return Err(FetchError {
                    result: FetchResult::Rollback,
                    message: format!(
                        "targets version {version} is older than version {c} in force (rollback)"
                    ),
                });
            }
            _ => {}
        }
        let invalid = |message: String| FetchError {
            result: FetchResult::Invalid,
            message,
        };
        let name = TargetName::new(TARGET)
            .map_err(|e| invalid(format!("the target name {TARGET}: {e}")))?;
        let listed = repo
            .targets()
            .signed
            .targets
            .get(&name)
            .ok_or_else(|| invalid(format!("targets version {version} lists no {TARGET}")))?;
        if listed.length > MAX_BUNDLE_BYTES {
            return Err(invalid(format!(
                "targets version {version}: {TARGET} is {} bytes (at most {MAX_BUNDLE_BYTES})",
                listed.length
            )));
        }
        let stream = repo
            .read_target(&name)
            .await
            .map_err(|e| refused(&format!("fetching {TARGET}"), &e))?
            .ok_or_else(|| invalid(format!("targets version {version} lists no {TARGET}")))?;
        let bytes = stream
            .into_vec()
            .await
            .map_err(|e| refused(&format!("verifying {TARGET} of version {version}"), &e))?;
        let bundle = Bundle::parse(&bytes)
            .map_err(|e| invalid(format!("targets version {version}: {e}")))?;
        Ok(Fetched::New(Verified { version, bundle }))
    }
}

/// The pinned root must at least be a root signed by a threshold of its own keys.
fn check_root(bytes: &[u8]) -> Result<(), String> {
    let root: tough::schema::Signed<tough::schema::Root> =
        serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    root.signed.verify_role(&root).map_err(|e| e.to_string())
}

/// What tough's refusal means for the counters, with its whole chain of reasons.
fn refused(what: &str, error: &tough::error::Error) -> FetchError {
    FetchError {
        result: classify(error),
        message: format!("{what}: {}", crate::error_chain::chain(error)),
    }
}

fn classify(error: &tough::error::Error) -> FetchResult {
    use tough::error::Error as E;
    match error {
        E::ExpiredMetadata { .. } => FetchResult::Expired,
        E::OlderMetadata { .. }
        | E::OlderSnapshotInTimestamp { .. }
        | E::SnapshotRoleRollback { .. } => FetchResult::Rollback,
        // A transport error may carry tough's own refusal of the bytes (a wrong digest, too
        // large): that is the file's fault, not the network's.
        E::Transport { source, .. } => transport_cause(source),
        _ => FetchResult::Invalid,
    }
}

fn transport_cause(error: &TransportError) -> FetchResult {
    let mut next = std::error::Error::source(error);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<tough::error::Error>() {
            return classify(t);
        }
        if e.is::<BodyTooLarge>() {
            return FetchResult::Invalid;
        }
        next = e.source();
    }
    FetchResult::Unreachable
}

/// tough's transport over our reqwest (rustls), plus files for `file://` repositories. Each
/// body is read whole, up to a bound, within the client's timeout.
#[derive(Clone, Debug)]
struct HttpTransport {
    client: reqwest::Client,
}

#[derive(Debug, thiserror::Error)]
#[error("more than {MAX_BUNDLE_BYTES} bytes")]
struct BodyTooLarge;

#[tough::async_trait]
impl Transport for HttpTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        if url.scheme() == "file" {
            return FilesystemTransport.fetch(url).await;
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TransportError::new(
                TransportErrorKind::UnsupportedUrlScheme,
                url,
            ));
        }
        let other = |url: &Url, e: Box<dyn std::error::Error + Send + Sync>| {
            TransportError::new_with_cause(TransportErrorKind::Other, url, e)
        };
        let mut response = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| other(&url, e.into()))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
            return Err(TransportError::new(TransportErrorKind::FileNotFound, url));
        }
        if !status.is_success() {
            return Err(other(&url, format!("HTTP {status}").into()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| other(&url, e.into()))? {
            if u64::try_from(body.len() + chunk.len()).unwrap_or(u64::MAX) > MAX_BUNDLE_BYTES {
                return Err(other(&url, Box::new(BodyTooLarge)));
            }
            body.extend_from_slice(&chunk);
        }
        let item: Result<Bytes, TransportError> = Ok(Bytes::from(body));
        Ok(Box::pin(futures_util::stream::iter([item])))
    }
}
