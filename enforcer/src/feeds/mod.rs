//! Vendor feeds (`feed:` in a rule file, `enforcer feeds update`): fetch each platform's feed,
//! check it, plan the change of its feed-managed entry and, when asked, rewrite the files.
//!
//! Nothing is written unless every feed passed every check and the whole policy, with the new
//! texts, still validates; the files are then replaced one by one atomically.

pub mod check;
pub mod fetch;
pub mod parse;
pub mod rewrite;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use serde::Serialize;

use crate::policy::{self, DataDate, Feed, FeedKind, LoadOptions, MANAGED_FILE, PolicyError};

use fetch::Fetcher;

/// Default bound on a feed's size: the largest real one (AWS's ip-ranges.json) is about 2 MB.
pub const DEFAULT_MAX_BYTES: usize = 10 << 20;
/// Default bound on the time to fetch one feed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("{url}: {why}")]
    Fetch { url: String, why: String },
    #[error("{url}: the feed is larger than {limit} bytes; refused")]
    TooLarge { url: String, limit: usize },
    #[error("format: {0}")]
    Format(String),
    #[error("stale: the feed's data is of {feed}, older than the file's data-date {file}; refused")]
    Stale { feed: DataDate, file: DataDate },
    #[error(
        "prefix {prefix} is wider than /{min}: no vendor publishes a range this wide (a broken \
         or tampered feed?); refused"
    )]
    TooWide { prefix: IpNet, min: u8 },
    #[error("prefix {prefix} overlaps the never-block list ({ranges}); refused")]
    NeverBlock { prefix: IpNet, ranges: String },
    #[error(
        "{removed} of the platform's {total} feed-managed prefixes would be removed, more than \
         {}%; refused (check the feed, then use --force if the vendor really dropped them)",
        check::MAX_REMOVED_PERCENT
    )]
    TooManyRemoved { removed: usize, total: usize },
    #[error(
        "no feed-managed entry: the platform needs a `prefixes` entry without `protocol` or \
         `ports`"
    )]
    NoManagedEntry,
    #[error("rewriting the file: {0}")]
    Rewrite(String),
    #[error("{path}: CA file: {why}")]
    CaFile { path: PathBuf, why: String },
    #[error("the HTTPS client: {0}")]
    Client(String),
    #[error("{0}")]
    Policy(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How `feeds update` runs.
#[derive(Clone, Debug)]
pub struct Options {
    pub apply: bool,
    /// Allow removing more than [`check::MAX_REMOVED_PERCENT`] of a platform's prefixes.
    pub force: bool,
    pub ca_file: Option<PathBuf>,
    /// The never-block list and shared suffixes, as `check` builds them.
    pub load: LoadOptions,
    pub timeout: Duration,
    pub max_bytes: usize,
}

/// One feed's plan (`feeds update --json`: `{"feeds": [...]}`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FeedPlan {
    pub file: String,
    pub platform: Option<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The file's `data-date` after the update.
    pub data_date: Option<String>,
    pub error: Option<String>,
    /// Whether the file changes (prefixes or data-date).
    #[serde(skip)]
    pub changes: bool,
}

/// What an update found and did.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub feeds: Vec<FeedPlan>,
    /// An error about the whole run (the policy invalid before or after), not one feed.
    pub error: Option<String>,
    /// The files rewritten (with `apply`).
    pub written: Vec<PathBuf>,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        self.error.is_some() || self.feeds.iter().any(|f| f.error.is_some())
    }

    pub fn changes(&self) -> bool {
        self.feeds.iter().any(|f| f.changes)
    }
}

/// A feed that passed, with the file's new text.
struct Planned {
    path: PathBuf,
    text: String,
}

fn policy_error(error: PolicyError) -> String {
    error.to_string()
}

/// Fetches, checks and plans every feed of the policy at `paths`; with `options.apply`, writes
/// the changed files when everything passed.
pub async fn update(paths: &[PathBuf], options: &Options) -> Outcome {
    let mut outcome = Outcome::default();
    // A policy that is already invalid is fixed by hand first: feeds would only add confusion.
    if let Err(error) = policy::load_policy(paths, &options.load) {
        outcome.error = Some(policy_error(error));
        return outcome;
    }
    let files = match policy::read_rule_files(paths) {
        Ok(files) => files,
        Err(error) => {
            outcome.error = Some(policy_error(error));
            return outcome;
        }
    };
    let fetcher = match Fetcher::new(
        options.ca_file.as_deref(),
        options.timeout,
        options.max_bytes,
    ) {
        Ok(fetcher) => fetcher,
        Err(error) => {
            outcome.error = Some(error.to_string());
            return outcome;
        }
    };
    let today = DataDate::from_unix(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    let mut planned = Vec::new();
    for (path, text) in &files {
        // The managed file holds `rules add` additions, never feeds.
        if path.file_name().is_some_and(|n| n == MANAGED_FILE) {
            continue;
        }
        let Ok(parsed) = policy::parse_policy_str(path, text, &LoadOptions::default()) else {
            continue;
        };
        for platform in &parsed.platforms {
            let Some(feed) = &platform.feed else {
                continue;
            };
            let current: Vec<IpNet> = platform
                .entries
                .iter()
                .find(|e| e.feed_managed())
                .map(|e| e.prefixes.clone())
                .unwrap_or_default();
            let mut plan = FeedPlan {
                file: path.display().to_string(),
                platform: Some(platform.name.clone()),
                added: Vec::new(),
                removed: Vec::new(),
                data_date: platform.data_date.map(|d| d.to_string()),
                error: None,
                changes: false,
            };
            let context = check::Context {
                current: &current,
                file_date: platform.data_date,
                never_block: &options.load.never_block,
                force: options.force,
            };
            match one(&fetcher, feed, (path, text), &context, today).await {
                Ok((prefixes, date, new_text)) => {
                    plan.added = prefixes
                        .iter()
                        .filter(|p| !current.contains(p))
                        .map(ToString::to_string)
                        .collect();
                    plan.removed = current
                        .iter()
                        .filter(|p| !prefixes.contains(p))
                        .map(ToString::to_string)
                        .collect();
                    if let Some(date) = date {
                        plan.data_date = Some(date.to_string());
                    }
                    plan.changes = new_text != *text;
                    if plan.changes {
                        planned.push(Planned {
                            path: path.clone(),
                            text: new_text,
                        });
                    }
                }
                Err(error) => {
                    tracing::warn!(file = %path.display(), platform = platform.name, %error, "feed refused");
                    plan.error = Some(format!(
                        "{}: platform {}, feed {} {}: {error}",
                        path.display(),
                        platform.name,
                        feed.kind,
                        feed.url
                    ));
                }
            }
            outcome.feeds.push(plan);
        }
    }
    if !options.apply || outcome.failed() || planned.is_empty() {
        return outcome;
    }
    match apply(paths, &planned, &options.load) {
        Ok(written) => outcome.written = written,
        Err(error) => outcome.error = Some(error.to_string()),
    }
    outcome
}

/// One feed: fetched, parsed, dated, checked; its prefixes, the date to write and the file's
/// new text.
async fn one(
    fetcher: &Fetcher,
    feed: &Feed,
    (path, text): (&Path, &str),
    context: &check::Context<'_>,
    today: DataDate,
) -> Result<(Vec<IpNet>, Option<DataDate>, String), FeedError> {
    let fetched = fetcher.get(&feed.url).await?;
    let data = parse::parse(feed.kind, &feed.select, &fetched.body)?;
    let own = match feed.kind {
        FeedKind::MicrosoftEndpoints => microsoft_version(fetcher, &feed.url).await?,
        _ => data.date,
    };
    // The feed's own date, else when the server says it last changed.
    let date = own.or(fetched.last_modified);
    check::check(&data.prefixes, date, context)?;
    let same = data.prefixes.len() == context.current.len()
        && data.prefixes.iter().all(|p| context.current.contains(p));
    // A feed without any date is dated by the day its change was read.
    let date = date.or((!same).then_some(today));
    let new_text = rewrite::rewrite(text, (!same).then_some(&data.prefixes[..]), date)?;
    // The edit is by position: read it back to be sure it says what was meant.
    let reread = policy::parse_policy_str(path, &new_text, &LoadOptions::default())
        .map_err(|e| FeedError::Rewrite(e.to_string()))?;
    let entry = reread
        .platforms
        .iter()
        .flat_map(|p| p.entries.iter())
        .find(|e| e.feed_managed());
    let expected = if same {
        context.current
    } else {
        &data.prefixes[..]
    };
    if entry.map(|e| &e.prefixes[..]) != Some(expected)
        || reread.platforms.first().and_then(|p| p.data_date) != date.or(context.file_date)
    {
        return Err(FeedError::Rewrite(
            "the rewritten file does not read back as planned".to_owned(),
        ));
    }
    Ok((data.prefixes, date, new_text))
}

/// The date of the Microsoft 365 data: the web service's `/version` endpoint (the feed URL with
/// `/endpoints/` replaced by `/version/`) gives the version, YYYYMMDDNN. A mirror without that
/// endpoint falls back to Last-Modified (logged); a malformed answer refuses the feed.
async fn microsoft_version(fetcher: &Fetcher, url: &str) -> Result<Option<DataDate>, FeedError> {
    let Some(version_url) = version_url(url) else {
        return Ok(None);
    };
    match fetcher.get(&version_url).await {
        Ok(fetched) => {
            let (version, date) = parse::microsoft_version(&fetched.body)?;
            tracing::info!(
                url = version_url,
                version,
                "Microsoft 365 endpoints version"
            );
            Ok(Some(date))
        }
        Err(error) => {
            tracing::warn!(%error, "no version from the Microsoft 365 web service; using Last-Modified");
            Ok(None)
        }
    }
}

/// `https://endpoints.office.com/endpoints/worldwide?x=1` →
/// `https://endpoints.office.com/version/worldwide?x=1`.
pub fn version_url(url: &str) -> Option<String> {
    let scheme_end = url.find("://")? + 3;
    let path_start = scheme_end + url[scheme_end..].find('/')?;
    let (base, path) = url.split_at(path_start);
    let at = path.find("/endpoints/")?;
    Some(format!(
        "{base}{}/version/{}",
        &path[..at],
        &path[at + "/endpoints/".len()..]
    ))
}

/// Validates the whole policy with the new texts, writes them (each atomically, keeping its
/// mode), then reads the policy back from disk as the daemon will.
fn apply(
    paths: &[PathBuf],
    planned: &[Planned],
    options: &LoadOptions,
) -> Result<Vec<PathBuf>, FeedError> {
    let overrides: Vec<(PathBuf, String)> = planned
        .iter()
        .map(|p| (p.path.clone(), p.text.clone()))
        .collect();
    policy::load_policy_with_texts(paths, &overrides, options).map_err(|e| {
        FeedError::Policy(format!(
            "the updated policy is invalid, nothing written:\n{e}"
        ))
    })?;
    let mut written = Vec::new();
    for p in planned {
        write(&p.path, &p.text)?;
        tracing::info!(file = %p.path.display(), "rule file updated from its feed");
        written.push(p.path.clone());
    }
    policy::load_policy(paths, options)
        .map_err(|e| FeedError::Policy(format!("the policy as written does not validate:\n{e}")))?;
    Ok(written)
}

fn write(path: &Path, text: &str) -> Result<(), FeedError> {
    let error = |source| FeedError::Write {
        path: path.to_path_buf(),
        source,
    };
    let permissions = std::fs::metadata(path).map_err(error)?.permissions();
    crate::fsutil::write_atomically(path, text.as_bytes()).map_err(error)?;
    // The temporary file got the umask's mode; the daemon must still read it as before.
    std::fs::set_permissions(path, permissions).map_err(error)
}

/// The plan as text: per feed, what would be (or was) added and removed.
pub fn render(outcome: &Outcome, applied: bool) -> String {
    let mut out = String::new();
    for feed in &outcome.feeds {
        let platform = feed.platform.as_deref().unwrap_or("-");
        if let Some(error) = &feed.error {
            out.push_str(&format!("{platform}: refused: {error}\n"));
            continue;
        }
        let date = feed.data_date.as_deref().unwrap_or("none");
        if !feed.changes {
            out.push_str(&format!(
                "{platform} ({}): up to date (data-date {date})\n",
                feed.file
            ));
            continue;
        }
        let verb = if applied { "updated" } else { "would change" };
        out.push_str(&format!(
            "{platform} ({}): {verb}: {} added, {} removed, data-date {date}\n",
            feed.file,
            feed.added.len(),
            feed.removed.len()
        ));
        for p in &feed.added {
            out.push_str(&format!("  + {p}\n"));
        }
        for p in &feed.removed {
            out.push_str(&format!("  - {p}\n"));
        }
    }
    if let Some(error) = &outcome.error {
        out.push_str(&format!("error: {error}\n"));
    }
    out
}

/// `--json`: `{"feeds": [...]}`.
pub fn to_json(outcome: &Outcome) -> serde_json::Value {
    let mut feeds = outcome.feeds.clone();
    // A whole-run error has no feed of its own; it is reported as one with no platform.
    if let Some(error) = &outcome.error {
        feeds.push(FeedPlan {
            file: String::new(),
            platform: None,
            added: Vec::new(),
            removed: Vec::new(),
            data_date: None,
            error: Some(error.clone()),
            changes: false,
        });
    }
    serde_json::json!({ "feeds": feeds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_urls() {
        assert_eq!(
            version_url("https://endpoints.office.com/endpoints/worldwide?clientrequestid=x")
                .as_deref(),
            Some("https://endpoints.office.com/version/worldwide?clientrequestid=x")
        );
        assert_eq!(
            version_url("https://mirror.example/m365/endpoints/worldwide").as_deref(),
            Some("https://mirror.example/m365/version/worldwide")
        );
        assert_eq!(version_url("https://mirror.example/teams.json"), None);
    }
}
