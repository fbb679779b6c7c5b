//! The control protocol: one JSON request per line, one JSON response per line. The request and
//! every reply are typed here and shared by the daemon (which builds them) and the CLI (which
//! reads them), so the two cannot drift apart. The JSON shapes are the stable ones of
//! docs/reference.md ("JSON outputs").

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Status,
    Reload {
        /// Who asked, for the logs and the policy history: `feeds` (`enforcer feeds update
        /// --apply`); absent for `enforcer reload`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    Explain {
        target: String,
        /// As seen by the clients of this site (`other`: outside every site).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        site: Option<String>,
        /// As seen by this client address (its site).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
    RulesList,
    RulesAdd {
        platform: String,
        domains: Vec<String>,
        prefixes: Vec<String>,
        action: Option<String>,
        /// `name`, `address` or `both` for the domains (default both).
        #[serde(default)]
        enforce: Option<String>,
    },
    RulesRemove {
        platform: String,
        domains: Vec<String>,
        prefixes: Vec<String>,
    },
    /// What the policy at `path` (a file or directory, read by the daemon) would change.
    Plan {
        path: String,
    },
    Collateral,
    History,
    Rollback {
        /// A digest or a unique prefix of one; none: the version before the current.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    /// What `enforcer top` shows: counters by direction, DNS blocks, recent learning, map fill.
    Top,
}

/// The reply type of each request.
pub trait Reply: Serialize + DeserializeOwned {}

/// The wire envelope: `result` holds the request's reply when `ok`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default)]
    pub result: serde_json::Value,
    #[serde(default)]
    pub errors: Vec<String>,
}

impl Response {
    pub fn success<R: Reply>(reply: &R) -> Self {
        match serde_json::to_value(reply) {
            Ok(result) => Self {
                ok: true,
                result,
                errors: Vec::new(),
            },
            Err(e) => Self::failure(vec![format!("encoding the answer: {e}")]),
        }
    }

    pub fn failure(errors: Vec<String>) -> Self {
        Self {
            ok: false,
            result: serde_json::Value::Null,
            errors,
        }
    }

    pub fn from_result<R: Reply>(result: Result<R, Vec<String>>) -> Self {
        match result {
            Ok(reply) => Self::success(&reply),
            Err(errors) => Self::failure(errors),
        }
    }
}

/// `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    pub interfaces: Vec<InterfaceStatus>,
    pub policy_digest: String,
    pub platforms: Vec<PlatformStatus>,
    pub resolver: ResolverStatus,
    /// Per site and platform: the action in force for the site's clients and what they sent
    /// (site `other`: clients outside every site). Empty without a policy.
    #[serde(default)]
    pub sites: Vec<SiteStatus>,
    /// Bundle mode: the version in force and seconds since it was signed (null otherwise).
    #[serde(default)]
    pub bundle: Option<BundleStatus>,
}
impl Reply for StatusReply {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleStatus {
    pub version: u64,
    pub age_seconds: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteStatus {
    pub site: String,
    pub platform: String,
    /// The stage: the platform's action for this site's clients.
    pub action: String,
    /// Matched packets and bytes of the site's clients, whatever action counted them.
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub mode: String,
    /// `inside`, `outside` or `both`.
    pub role: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformStatus {
    pub platform: String,
    pub action: String,
    pub prefixes_v4: usize,
    pub prefixes_v6: usize,
    /// Domain patterns the gateway matches by name (`enforce: name` or `both`).
    #[serde(default)]
    pub names: usize,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolverStatus {
    pub ok: bool,
    /// Unix seconds of the last answer from the resolvers.
    pub last_success: Option<u64>,
}

/// `explain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub target: String,
    /// drop, monitor, allow or none: what the first (best) match decides.
    pub verdict: String,
    pub matches: Vec<ExplainMatch>,
    /// For a name: what a DNS query for it gets at the gateway (drop, monitor, allow or none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_verdict: Option<String>,
    /// For an address in the never-block list: the range holding it and why it is there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub never_block: Option<NeverBlockNote>,
    /// The site whose clients the verdict is for (with `--site` or `--client`): each match's
    /// action is the platform's action for that site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}
impl Reply for Explanation {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeverBlockNote {
    pub range: String,
    /// `built-in`, `never-block`, `interface`, `resolver` or `dns-server`.
    pub origin: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainMatch {
    pub platform: String,
    pub action: String,
    /// Position of the entry in the platform's `match` list, from 0.
    pub entry: usize,
    pub prefix: String,
    /// published, dns, learned or domain (a name with no address known yet).
    pub source: String,
    pub name: Option<String>,
    pub cname_chain: Vec<String>,
    /// For a learned address: the server whose answer taught it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<String>,
    pub protocol: String,
    pub ports: Vec<String>,
    /// How the entry's domains are enforced (name, address or both); null for an entry
    /// without domains.
    #[serde(default)]
    pub enforce: Option<String>,
    /// Where the entry was written (`PATH:LINE:COLUMN`).
    pub location: String,
}

/// `rules list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesList {
    pub platforms: Vec<ListedPlatform>,
}
impl Reply for RulesList {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedPlatform {
    pub platform: String,
    pub action: String,
    pub location: String,
    pub entries: Vec<ListedEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedEntry {
    pub entry: usize,
    pub domains: Vec<String>,
    pub prefixes: Vec<String>,
    pub protocol: String,
    pub ports: Vec<String>,
    /// How the domains are enforced; null for an entry without domains.
    #[serde(default)]
    pub enforce: Option<String>,
    pub location: String,
}

/// `reload`, `rules add` and `rules remove`: what the policy change did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyChange {
    pub platforms: usize,
    pub prefixes_v4: usize,
    pub prefixes_v6: usize,
    pub inserted: usize,
    pub updated: usize,
    pub removed: usize,
    pub policy_digest: String,
}
impl Reply for PolicyChange {}

/// `history`: the stored versions, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryReply {
    pub versions: Vec<HistoryVersion>,
}
impl Reply for HistoryReply {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryVersion {
    pub digest: String,
    /// Unix seconds.
    pub time: u64,
    /// start, reload, watcher, rules-add, rules-remove, feeds, rollback or bundle.
    pub source: String,
    /// Who asked on the control socket (user name, else uid); `daemon` for start and watcher.
    pub user: String,
    /// The entry of the policy in force (the newest with its digest).
    pub current: bool,
}

/// `rollback`: the version applied, from which, and the policy files it changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackReply {
    /// The digest in force before.
    pub from: String,
    #[serde(flatten)]
    pub change: PolicyChange,
    /// Policy files written (new or changed) and removed, by name (the change's own
    /// `removed` counts prefixes).
    pub files_written: Vec<String>,
    pub files_removed: Vec<String>,
}
impl Reply for RollbackReply {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_survives_the_wire() {
        let change = PolicyChange {
            platforms: 2,
            prefixes_v4: 3,
            prefixes_v6: 1,
            inserted: 4,
            updated: 0,
            removed: 1,
            policy_digest: "00ff".into(),
        };
        let line = serde_json::to_string(&Response::success(&change)).unwrap();
        let back: Response = serde_json::from_str(&line).unwrap();
        assert!(back.ok);
        assert_eq!(
            serde_json::from_value::<PolicyChange>(back.result).unwrap(),
            change
        );
        let request = Request::Explain {
            site: None,
            client: None,
            target: "192.0.2.1".into(),
        };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(text, r#"{"command":"explain","target":"192.0.2.1"}"#);
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), request);
    }
}

/// `collateral`: per platform, its blocked prefixes whose addresses also served names that
/// none of its patterns match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollateralReply {
    pub platforms: Vec<CollateralPlatform>,
}
impl Reply for CollateralReply {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollateralPlatform {
    pub platform: String,
    pub prefixes: Vec<CollateralPrefix>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollateralPrefix {
    pub prefix: String,
    pub names: Vec<CollateralName>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollateralName {
    pub name: String,
    /// Unix seconds.
    pub last_seen: u64,
}

/// `plan`: per platform what the candidate adds and removes, and the collateral it would cause.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanReply {
    pub platforms: Vec<PlannedPlatform>,
    pub collateral: Vec<PlannedCollateral>,
}
impl Reply for PlanReply {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedPlatform {
    pub platform: String,
    pub added: PlannedItems,
    pub removed: PlannedItems,
    /// `[OLD, NEW]` when the action changes (`none` for a platform added or removed).
    pub action: Option<[String; 2]>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedItems {
    pub prefixes: Vec<String>,
    pub names: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedCollateral {
    pub platform: String,
    pub prefix: String,
    pub names: Vec<String>,
}

/// `top`: one sample of what the console view shows. Rates are the difference of two samples,
/// computed by the client. Bounded: one row per platform, site and map, and at most
/// [`TOP_LEARNED`] learned names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopReply {
    /// Unix milliseconds when the counters were read (the daemon's clock).
    pub time_ms: u64,
    pub interfaces: Vec<InterfaceStatus>,
    pub policy_digest: String,
    pub resolver: ResolverStatus,
    pub platforms: Vec<TopPlatform>,
    /// As in `status`: per site and platform, the stage and the site's matched traffic.
    pub sites: Vec<SiteStatus>,
    /// Packets that matched no platform, by reason (no_match, not_ip, unparsed).
    pub passed: Vec<TopPassed>,
    /// The latest learned (name, platform, address), newest first.
    pub learned: Vec<TopLearned>,
    /// Entries and capacity of each datapath map (as `enforcer_map_entries` / `_capacity`).
    pub maps: Vec<TopMap>,
}
impl Reply for TopReply {}

/// Most learned names a `top` reply carries.
pub const TOP_LEARNED: usize = 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopPlatform {
    pub platform: String,
    pub action: String,
    /// Matched packets by verdict and direction (summed over families), every pair present.
    pub counters: Vec<TopCounter>,
    /// Queries answered by the gateway (blocked by name).
    pub dns_blocked: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopCounter {
    /// drop, monitor or allow.
    pub action: String,
    /// egress or ingress.
    pub direction: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopPassed {
    pub reason: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopLearned {
    pub name: String,
    pub platform: String,
    pub address: String,
    /// Unix seconds of the answer that taught it.
    pub time: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopMap {
    pub map: String,
    pub entries: u64,
    pub capacity: u64,
}
