//! Validation of rule files into the model, and merging of the files into one policy.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::sources::{self, MANAGED_FILE, Source};
use super::values;
use super::yaml::{self, Node, Pos, Value};
use super::{
    Action, DataDate, Diagnostic, Enforce, Entry, Feed, FeedKind, FeedSelect, LoadOptions,
    Location, Platform, Policy, PolicyError, Protocol, SiteAction,
};
use crate::never_block::NeverBlock;

const PLATFORM_KEYS: &[&str] = &[
    "platform",
    "description",
    "reference",
    "action",
    "action-by-site",
    "match",
    "data-date",
    "feed",
];
const FEED_KEYS: &[&str] = &["kind", "url", "select"];
/// The `serviceArea` values of the Microsoft 365 endpoints web service.
const MICROSOFT_SERVICE_AREAS: &[&str] = &["Common", "Exchange", "SharePoint", "Skype"];
const ENTRY_KEYS: &[&str] = &["domains", "prefixes", "protocol", "ports", "enforce"];

/// Reads and validates the policy at `paths` (files, or directories of `*.yaml` files).
pub fn load_policy(paths: &[PathBuf], options: &LoadOptions) -> Result<Policy, PolicyError> {
    let mut diagnostics = Vec::new();
    let sources = sources::read_sources(paths, &mut diagnostics)?;
    build(&sources, options, diagnostics)
}

/// The rule files' texts by file name, as a load read them (what the policy history stores).
pub type RuleTexts = BTreeMap<String, String>;

fn texts_of(sources: &[Source]) -> RuleTexts {
    sources
        .iter()
        .map(|s| {
            let name = s
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, s.text.clone())
        })
        .collect()
}

/// As [`load_policy`] for the one `--rules` path, also giving back the texts it validated, so
/// that what is recorded is exactly what was applied.
pub fn load_policy_and_texts(
    path: &Path,
    options: &LoadOptions,
) -> Result<(Policy, RuleTexts), PolicyError> {
    let mut diagnostics = Vec::new();
    let sources = sources::read_sources(&[path.to_path_buf()], &mut diagnostics)?;
    let texts = texts_of(&sources);
    Ok((build(&sources, options, diagnostics)?, texts))
}

/// Validates rule texts (a stored version) as if they were the files of `--rules` `path`: the
/// files of the directory `path`, or the single file `path` itself. Nothing is read or written.
pub fn load_policy_from_texts(
    path: &Path,
    texts: &RuleTexts,
    options: &LoadOptions,
) -> Result<Policy, PolicyError> {
    let single = !path.is_dir();
    let sources: Vec<Source> = texts
        .iter()
        .map(|(name, text)| Source {
            path: if single {
                path.to_path_buf()
            } else {
                path.join(name)
            },
            text: text.clone(),
            managed: !single && name == MANAGED_FILE,
        })
        .collect();
    build(&sources, options, Vec::new())
}

/// As [`load_policy`], with the text of some files replaced (`overrides`: path as read from
/// `paths`, new text): how `enforcer feeds update` validates the whole policy before writing.
pub fn load_policy_with_texts(
    paths: &[PathBuf],
    overrides: &[(PathBuf, String)],
    options: &LoadOptions,
) -> Result<Policy, PolicyError> {
    let mut diagnostics = Vec::new();
    let mut sources = sources::read_sources(paths, &mut diagnostics)?;
    for source in &mut sources {
        if let Some((_, text)) = overrides.iter().find(|(p, _)| *p == source.path) {
            source.text.clone_from(text);
        }
    }
    build(&sources, options, diagnostics)
}

/// The rule files of `paths` and their texts, as the loader reads them.
pub fn read_rule_files(paths: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, PolicyError> {
    let mut diagnostics = Vec::new();
    let sources = sources::read_sources(paths, &mut diagnostics)?;
    if !diagnostics.is_empty() {
        return Err(PolicyError::Invalid(diagnostics));
    }
    Ok(sources.into_iter().map(|s| (s.path, s.text)).collect())
}

/// As [`load_policy`], with the managed file of the policy directory `dir` replaced by
/// `managed_text` (or left out when `None`): how `enforcer rules` checks a change before writing.
/// Also gives back the texts of the files as they will be.
pub fn load_policy_with_managed(
    dir: &Path,
    managed_text: Option<&str>,
    options: &LoadOptions,
) -> Result<(Policy, RuleTexts), PolicyError> {
    let mut diagnostics = Vec::new();
    let managed_path = dir.join(MANAGED_FILE);
    let mut sources: Vec<Source> = sources::read_sources(&[dir.to_path_buf()], &mut Vec::new())?
        .into_iter()
        .filter(|s| !s.managed)
        .collect();
    if let Some(text) = managed_text {
        sources.push(Source {
            path: managed_path,
            text: text.to_owned(),
            managed: true,
        });
    }
    if sources.is_empty() {
        diagnostics.push(Diagnostic {
            location: Location {
                path: dir.to_path_buf(),
                line: 0,
                column: 0,
            },
            message: "directory contains no *.yaml rule files".to_owned(),
        });
    }
    let texts = texts_of(&sources);
    Ok((build(&sources, options, diagnostics)?, texts))
}

/// The platforms written in a managed file alone, with whether each wrote its `action`.
pub fn read_managed(path: &Path, text: &str) -> Result<Vec<(Platform, bool)>, PolicyError> {
    let mut checker = Checker {
        path,
        // What the file says, read back; the whole policy is validated when it is loaded.
        shared: &[],
        diagnostics: Vec::new(),
        prefixes: Vec::new(),
        written: Vec::new(),
    };
    let platforms = checker
        .documents(text, true)
        .into_iter()
        .map(|p| (p.platform, p.action_at.is_some()))
        .collect();
    if checker.diagnostics.is_empty() {
        Ok(platforms)
    } else {
        Err(PolicyError::Invalid(checker.diagnostics))
    }
}

/// Validates a single rule file given as text; `path` is only used in messages.
pub fn parse_policy_str(
    path: &Path,
    text: &str,
    options: &LoadOptions,
) -> Result<Policy, PolicyError> {
    let source = Source {
        path: path.to_path_buf(),
        text: text.to_owned(),
        managed: false,
    };
    build(std::slice::from_ref(&source), options, Vec::new())
}

fn build(
    sources: &[Source],
    options: &LoadOptions,
    mut diagnostics: Vec<Diagnostic>,
) -> Result<Policy, PolicyError> {
    let mut parsed = Vec::new();
    let mut written = Vec::new();
    let mut shared = crate::resolve::builtin_shared_suffixes();
    shared.extend(options.shared_suffixes.iter().cloned());
    for source in sources {
        let mut checker = Checker {
            path: &source.path,
            shared: &shared,
            diagnostics: Vec::new(),
            prefixes: Vec::new(),
            written: Vec::new(),
        };
        parsed.extend(checker.documents(&source.text, source.managed));
        diagnostics.append(&mut checker.diagnostics);
        written.append(&mut checker.written);
    }
    let policy = merge(parsed, &mut diagnostics);
    check_never_block(&policy, &written, &options.never_block, &mut diagnostics);
    if diagnostics.is_empty() {
        return Ok(policy);
    }
    // File order, then position; paths that are not files (directories) first.
    let rank: HashMap<&Path, usize> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| (s.path.as_path(), i + 1))
        .collect();
    diagnostics.sort_by_key(|d| {
        let file = rank.get(d.location.path.as_path()).copied().unwrap_or(0);
        (file, d.location.line, d.location.column)
    });
    Err(PolicyError::Invalid(diagnostics))
}

/// Reports every prefix of a `drop` platform that overlaps the never-block list. Run after the
/// files are merged, since a platform's action may be written in another file than its entry
/// (the managed file extends platforms without repeating their action); `monitor` and `allow`
/// platforms may overlap the list.
fn check_never_block(
    policy: &Policy,
    written: &[WrittenPlatform],
    never_block: &NeverBlock,
    diagnostics: &mut Vec<Diagnostic>,
) {
    for platform in written {
        let merged = platform
            .name
            .as_ref()
            .and_then(|name| policy.platforms.iter().find(|p| &p.name == name));
        // A platform that drops for any site counts as a drop platform here.
        let drops = merged.map_or(platform.action == Action::Drop, Platform::drops_anywhere);
        if !drops {
            continue;
        }
        for prefix in &platform.prefixes {
            let overlaps = never_block.overlaps(&prefix.net);
            if overlaps.is_empty() {
                continue;
            }
            let list = overlaps
                .iter()
                .map(|r| r.net.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let ranges = if overlaps.len() == 1 {
                "range"
            } else {
                "ranges"
            };
            diagnostics.push(Diagnostic {
                location: prefix.location.clone(),
                message: format!(
                    "prefix `{}` overlaps the never-block {ranges} {list}",
                    prefix.text
                ),
            });
        }
    }
}

/// The valid prefixes of one document, for the never-block check after merging; kept even when
/// the document is invalid, so that every error is reported in one run.
struct WrittenPlatform {
    /// Its name, when valid.
    name: Option<String>,
    /// Its own action: the one written when valid, else drop.
    action: Action,
    prefixes: Vec<WrittenPrefix>,
}

/// A valid prefix as written in a file, with where.
struct WrittenPrefix {
    net: IpNet,
    text: String,
    location: Location,
}

/// A platform of one file, before files are merged.
struct Parsed {
    platform: Platform,
    /// Where `action` was written, if it was.
    action_at: Option<Location>,
    managed: bool,
}

/// Merges the platforms of all files: names are unique, except that a platform of the managed
/// file extends the platform of the same name from a regular file.
fn merge(parsed: Vec<Parsed>, diagnostics: &mut Vec<Diagnostic>) -> Policy {
    let (managed, regular): (Vec<_>, Vec<_>) = parsed.into_iter().partition(|p| p.managed);
    let mut platforms: BTreeMap<String, Platform> = BTreeMap::new();
    for p in regular {
        insert_unique(&mut platforms, p.platform, diagnostics);
    }
    let extensible: HashSet<String> = platforms.keys().cloned().collect();
    for p in managed {
        match platforms.get_mut(&p.platform.name) {
            Some(base) if extensible.contains(&p.platform.name) => extend(base, p, diagnostics),
            _ => insert_unique(&mut platforms, p.platform, diagnostics),
        }
    }
    // BTreeMap order is name order, which the datapath ids rely on.
    Policy {
        platforms: platforms.into_values().collect(),
    }
}

fn insert_unique(
    platforms: &mut BTreeMap<String, Platform>,
    platform: Platform,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if let Some(first) = platforms.get(&platform.name) {
        diagnostics.push(Diagnostic {
            message: format!(
                "duplicate platform `{}` (first defined at {})",
                platform.name, first.location
            ),
            location: platform.location,
        });
    } else {
        platforms.insert(platform.name.clone(), platform);
    }
}

fn extend(base: &mut Platform, extension: Parsed, diagnostics: &mut Vec<Diagnostic>) {
    let Parsed {
        platform,
        action_at,
        ..
    } = extension;
    if let Some(location) = action_at
        && platform.action != base.action
    {
        diagnostics.push(Diagnostic {
            message: format!(
                "action `{}` differs from the action `{}` of platform `{}` defined at {}",
                platform.action, base.action, base.name, base.location
            ),
            location,
        });
    }
    if base.description.is_none() {
        base.description = platform.description;
    }
    if base.reference.is_none() {
        base.reference = platform.reference;
    }
    for mut entry in platform.entries {
        entry.index = base.entries.len();
        base.entries.push(entry);
    }
}

/// The keys of one mapping, after unknown and repeated keys have been reported.
struct Fields<'n>(Vec<(&'static str, &'n Node, &'n Node)>);

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<(&'n Node, &'n Node)> {
        self.0
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|&(_, k, v)| (k, v))
    }
}

const EMPTY_FILE: &str =
    "the file is empty; expected a platform (a mapping with `platform` and `match`)";

/// Validates the documents of one file, collecting its diagnostics.
struct Checker<'a> {
    path: &'a Path,
    /// Names whose addresses serve many sites: a domain at or below one goes by name only.
    shared: &'a [String],
    diagnostics: Vec<Diagnostic>,
    /// The valid prefixes of the document being read.
    prefixes: Vec<WrittenPrefix>,
    /// Every document's prefixes, once read.
    written: Vec<WrittenPlatform>,
}

impl Checker<'_> {
    fn location(&self, pos: Pos) -> Location {
        Location {
            path: self.path.to_path_buf(),
            line: pos.line,
            column: pos.column,
        }
    }

    fn error(&mut self, pos: Pos, message: impl Into<String>) {
        let location = self.location(pos);
        self.diagnostics.push(Diagnostic {
            location,
            message: message.into(),
        });
    }

    /// The platforms of a file: one document, or any number (none included) in the managed
    /// file, which `enforcer rules` writes with one document per platform.
    fn documents(&mut self, text: &str, managed: bool) -> Vec<Parsed> {
        let documents = match yaml::parse(text) {
            Ok(documents) => documents,
            Err(e) if e.over_limit => {
                self.error(e.pos, e.message);
                return Vec::new();
            }
            Err(e) => {
                self.error(e.pos, format!("YAML syntax error: {}", e.message));
                return Vec::new();
            }
        };
        if managed {
            return documents
                .iter()
                .filter(|d| !d.root.is_null())
                .filter_map(|d| self.document(d, true))
                .collect();
        }
        let Some(first) = documents.first() else {
            self.error(Pos { line: 1, column: 1 }, EMPTY_FILE);
            return Vec::new();
        };
        if let Some(second) = documents.get(1) {
            self.error(
                second.start,
                "a rule file holds one YAML document (one platform); remove this `---` or \
                 split the file",
            );
        }
        self.document(first, false).into_iter().collect()
    }

    /// The platform of a document, if it has a valid name (even when other parts are invalid, so
    /// that duplicates are still reported), and where its `action` was written.
    fn document(&mut self, document: &yaml::Document, managed: bool) -> Option<Parsed> {
        self.prefixes.clear();
        let root = &document.root;
        if root.is_null() {
            // An empty root is marked where the parser stopped; the document start is clearer.
            self.error(document.start, EMPTY_FILE);
            return None;
        }
        let Value::Map(pairs) = &root.value else {
            self.error(
                root.pos,
                format!(
                    "expected a platform (a mapping with `platform` and `match`), found {}",
                    root.kind()
                ),
            );
            return None;
        };
        let fields = self.fields(pairs, PLATFORM_KEYS, "a platform");

        let name = match fields.get("platform") {
            None => {
                self.error(root.pos, "missing required key `platform`");
                None
            }
            Some((key, value)) => self.platform_name(key, value),
        };
        let description = fields
            .get("description")
            .and_then(|(k, v)| self.optional_string(k, v, "description"));
        let reference = fields
            .get("reference")
            .and_then(|(k, v)| self.optional_string(k, v, "reference"));
        let action = fields.get("action").and_then(|(k, v)| {
            let text = self.string(k, v, "action", "drop, monitor or allow")?;
            match values::parse_action(text) {
                Ok(action) => Some((action, self.location(v.pos))),
                Err(message) => {
                    self.error(v.pos, message);
                    None
                }
            }
        });
        let entries = match fields.get("match") {
            None => {
                self.error(root.pos, "missing required key `match`");
                Vec::new()
            }
            Some((key, value)) => self.entries(key, value),
        };
        let action_by_site = fields
            .get("action-by-site")
            .map(|(key, value)| self.action_by_site(key, value))
            .unwrap_or_default();
        let data_date = fields
            .get("data-date")
            .and_then(|(k, v)| self.data_date(k, v));
        let feed = fields.get("feed").and_then(|(k, v)| self.feed(k, v));
        if let (Some(feed), false) = (&feed, entries.iter().any(Entry::feed_managed)) {
            let message = "a platform with `feed` needs a feed-managed entry: a `prefixes` \
                           entry without `protocol` or `ports`, which `enforcer feeds update` \
                           rewrites";
            self.diagnostics.push(Diagnostic {
                location: feed.location.clone(),
                message: message.to_owned(),
            });
        }

        let (action, action_at) = action.map_or((Action::Drop, None), |(a, l)| (a, Some(l)));
        self.written.push(WrittenPlatform {
            name: name.as_ref().map(|(name, _)| name.clone()),
            action,
            prefixes: std::mem::take(&mut self.prefixes),
        });
        let (name, name_pos) = name?;
        let platform = Platform {
            data_date,
            feed,
            name,
            id: 0,
            description,
            reference,
            action,
            action_by_site,
            entries,
            location: self.location(name_pos),
        };
        Some(Parsed {
            platform,
            action_at,
            managed,
        })
    }

    /// Reports keys that are not names, unknown or repeated; keeps the first of each.
    fn fields<'n>(
        &mut self,
        pairs: &'n [(Node, Node)],
        allowed: &[&'static str],
        what: &str,
    ) -> Fields<'n> {
        let mut fields = Fields(Vec::new());
        for (key, value) in pairs {
            let Some(name) = key.as_str() else {
                self.error(
                    key.pos,
                    format!("expected a key name, found {}", key.kind()),
                );
                continue;
            };
            let Some(&known) = allowed.iter().find(|&&a| a == name) else {
                self.error(
                    key.pos,
                    format!(
                        "unknown key `{name}` in {what} (expected one of: {})",
                        allowed.join(", ")
                    ),
                );
                continue;
            };
            if let Some((first, _)) = fields.get(known) {
                let at = first.pos;
                self.error(
                    key.pos,
                    format!(
                        "duplicate key `{name}` (first at line {}, column {})",
                        at.line, at.column
                    ),
                );
                continue;
            }
            fields.0.push((known, key, value));
        }
        fields
    }

    /// A scalar's text; null is reported at the key, other types at the value.
    fn string<'n>(
        &mut self,
        key: &Node,
        value: &'n Node,
        name: &str,
        expected: &str,
    ) -> Option<&'n str> {
        if value.is_null() {
            self.error(
                key.pos,
                format!("`{name}` has no value; expected {expected}"),
            );
            return None;
        }
        match &value.value {
            Value::Scalar { text, .. } => Some(text),
            _ => {
                self.error(
                    value.pos,
                    format!("`{name}` must be {expected}, found {}", value.kind()),
                );
                None
            }
        }
    }

    /// Free text that may be left empty.
    fn optional_string(&mut self, key: &Node, value: &Node, name: &str) -> Option<String> {
        if value.is_null() {
            return None;
        }
        self.string(key, value, name, "a string").map(str::to_owned)
    }

    fn list<'n>(
        &mut self,
        key: &Node,
        value: &'n Node,
        name: &str,
        expected: &str,
    ) -> Option<&'n [Node]> {
        if value.is_null() {
            self.error(
                key.pos,
                format!("`{name}` has no value; expected {expected}"),
            );
            return None;
        }
        match &value.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.error(
                    value.pos,
                    format!("`{name}` must be {expected}, found {}", value.kind()),
                );
                None
            }
        }
    }

    fn platform_name(&mut self, key: &Node, value: &Node) -> Option<(String, Pos)> {
        let name = self.string(key, value, "platform", "a platform name")?;
        match values::parse_platform_name(name) {
            Ok(name) => Some((name.to_owned(), value.pos)),
            Err(message) => {
                self.error(value.pos, message);
                None
            }
        }
    }

    /// `action-by-site: {SITE: ACTION, ...}`: site names are checked here, their existence
    /// against the configured sites by `Policy::check_sites`.
    fn action_by_site(&mut self, key: &Node, value: &Node) -> Vec<SiteAction> {
        let Value::Map(pairs) = &value.value else {
            let at = if value.is_null() { key.pos } else { value.pos };
            self.error(
                at,
                format!(
                    "`action-by-site` must map site names to drop, monitor or allow, found {}",
                    value.kind()
                ),
            );
            return Vec::new();
        };
        let mut actions: Vec<SiteAction> = Vec::new();
        for (site, action) in pairs {
            let Some(name) = site.as_str() else {
                self.error(
                    site.pos,
                    format!("expected a site name, found {}", site.kind()),
                );
                continue;
            };
            if let Err(message) = values::parse_platform_name(name) {
                self.error(site.pos, message.replace("platform name", "site name"));
                continue;
            }
            if let Some(first) = actions.iter().find(|a| a.site == name) {
                let message = format!("duplicate site `{name}` (first at {})", first.location);
                self.error(site.pos, message);
                continue;
            }
            let Some(text) = self.string(site, action, "action", "drop, monitor or allow") else {
                continue;
            };
            match values::parse_action(text) {
                Ok(parsed) => actions.push(SiteAction {
                    site: name.to_owned(),
                    action: parsed,
                    location: self.location(site.pos),
                }),
                Err(message) => self.error(action.pos, message),
            }
        }
        actions.sort_by(|a, b| a.site.cmp(&b.site));
        actions
    }

    fn entries(&mut self, key: &Node, value: &Node) -> Vec<Entry> {
        let Some(items) = self.list(key, value, "match", "a list of entries") else {
            return Vec::new();
        };
        if items.is_empty() {
            self.error(
                value.pos,
                "`match` is empty; a platform needs at least one entry",
            );
        }
        items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| self.entry(index, item))
            .collect()
    }

    fn entry(&mut self, index: usize, node: &Node) -> Option<Entry> {
        let Value::Map(pairs) = &node.value else {
            self.error(
                node.pos,
                format!(
                    "a match entry must be a mapping with `domains` and/or `prefixes`, found {}",
                    node.kind()
                ),
            );
            return None;
        };
        let fields = self.fields(pairs, ENTRY_KEYS, "a match entry");
        // Items written (valid or not) or a malformed list: either way, the "names nothing"
        // error would only repeat a problem already reported.
        let mut named = false;

        let mut domains = Vec::new();
        let mut domain_at = Vec::new();
        if let Some((k, v)) = fields.get("domains") {
            let items = self.list(k, v, "domains", "a list of domain names");
            named |= items.is_none_or(|items| !items.is_empty());
            for item in items.unwrap_or_default() {
                if let Some(text) = self.item(item, "a domain must be a string") {
                    match values::parse_domain(text) {
                        Ok(domain) => {
                            domain_at.push(item.pos);
                            domains.push(domain);
                        }
                        Err(message) => self.error(item.pos, message),
                    }
                }
            }
        }

        let mut prefixes = Vec::new();
        if let Some((k, v)) = fields.get("prefixes") {
            let items = self.list(k, v, "prefixes", "a list of CIDR prefixes");
            named |= items.is_none_or(|items| !items.is_empty());
            for item in items.unwrap_or_default() {
                if let Some(text) = self.item(item, "a prefix must be a string") {
                    match values::parse_prefix(text) {
                        Ok(net) => {
                            prefixes.push(net);
                            self.prefixes.push(WrittenPrefix {
                                net,
                                text: text.to_owned(),
                                location: self.location(item.pos),
                            });
                        }
                        Err(message) => self.error(item.pos, message),
                    }
                }
            }
        }

        // None when the value is invalid (already reported).
        let protocol = match fields.get("protocol") {
            None => Some(Protocol::Any),
            Some((k, v)) => self
                .string(k, v, "protocol", "tcp, udp or any")
                .and_then(|text| match values::parse_protocol(text) {
                    Ok(protocol) => Some(protocol),
                    Err(message) => {
                        self.error(v.pos, message);
                        None
                    }
                }),
        };

        let mut ports = Vec::new();
        if let Some((k, v)) = fields.get("ports") {
            if protocol == Some(Protocol::Any) {
                self.error(
                    k.pos,
                    "`ports` needs `protocol: tcp` or `protocol: udp`; ports are only checked \
                     for one of them",
                );
            }
            let items = self.list(k, v, "ports", "a list of ports and port ranges");
            if items.is_some_and(<[Node]>::is_empty) {
                self.error(v.pos, "`ports` is empty; leave it out to match every port");
            }
            for item in items.unwrap_or_default() {
                let expected = "a port must be a number or a range like 8801-8810";
                if let Some(text) = self.item(item, expected) {
                    match values::parse_ports(text) {
                        Ok(range) => ports.push(range),
                        Err(message) => self.error(item.pos, message),
                    }
                }
            }
        }

        let enforce = self.enforce(&fields, !domains.is_empty(), !ports.is_empty());
        if enforce.by_address() {
            for (domain, pos) in domains.iter().zip(&domain_at) {
                self.shared_by_address(domain, *pos, enforce);
            }
        }

        if !named {
            self.error(
                node.pos,
                "entry has neither `domains` nor `prefixes`; name at least one (nothing is \
                 blocked by port alone)",
            );
        }
        Some(Entry {
            index,
            domains,
            prefixes,
            protocol: protocol.unwrap_or(Protocol::Any),
            ports,
            enforce,
            location: self.location(node.pos),
        })
    }

    /// The entry's `enforce` (default `both`). It only means something for domains, and a name
    /// is blocked whatever the port, so `name` or `both` beside `ports` is refused too.
    fn enforce(&mut self, fields: &Fields<'_>, has_domains: bool, has_ports: bool) -> Enforce {
        let Some((k, v)) = fields.get("enforce") else {
            if has_ports
                && has_domains
                && let Some((k, _)) = fields.get("ports")
            {
                self.error(
                    k.pos,
                    "`ports` on an entry with `domains` needs `enforce: address`; a name is \
                     blocked by name (the default, `both`) on every port",
                );
            }
            return Enforce::Both;
        };
        let Some(enforce) = self
            .string(k, v, "enforce", "name, address or both")
            .and_then(|text| match values::parse_enforce(text) {
                Ok(enforce) => Some(enforce),
                Err(message) => {
                    self.error(v.pos, message);
                    None
                }
            })
        else {
            return Enforce::Both;
        };
        // Written domains, valid or not; a malformed `domains` is reported on its own.
        let names_domains = fields
            .get("domains")
            .is_some_and(|(_, v)| !matches!(&v.value, Value::Seq(items) if items.is_empty()));
        if !names_domains {
            self.error(
                k.pos,
                "`enforce` says how `domains` are blocked; this entry has no `domains`",
            );
        } else if has_ports && enforce.by_name() {
            self.error(
                v.pos,
                format!(
                    "`enforce: {enforce}` blocks the names on every port; with `ports` use \
                     `enforce: address`"
                ),
            );
        }
        enforce
    }

    /// A name at or below a shared suffix resolves to addresses that serve many other sites:
    /// it may only be blocked by name.
    fn shared_by_address(&mut self, domain: &super::DomainPattern, pos: Pos, enforce: Enforce) {
        let name = match domain {
            super::DomainPattern::Exact(n) | super::DomainPattern::Wildcard(n) => n,
        };
        if let Some(suffix) = crate::resolve::shared_suffix_of(name, self.shared) {
            let message = format!(
                "`{domain}` is under the shared suffix `{suffix}` (CDN or shared front end), whose \
                 addresses serve other sites: `enforce: {enforce}` would block them; use \
                 `enforce: name`"
            );
            self.error(pos, message);
        }
    }

    /// The text of a list item that must be a scalar.
    /// `data-date: YYYY-MM-DD`.
    fn data_date(&mut self, key: &Node, value: &Node) -> Option<DataDate> {
        let text = self.string(key, value, "data-date", "a date like 2026-11-24")?;
        values::parse_data_date(text)
            .map_err(|message| self.error(value.pos, message))
            .ok()
    }

    /// `feed: {kind, url, select}`: an https URL, and a `select` whose keys fit the kind.
    fn feed(&mut self, key: &Node, value: &Node) -> Option<Feed> {
        let Value::Map(pairs) = &value.value else {
            let at = if value.is_null() { key.pos } else { value.pos };
            self.error(
                at,
                format!(
                    "`feed` must be a mapping with `kind`, `url` and `select`, found {}",
                    value.kind()
                ),
            );
            return None;
        };
        let fields = self.fields(pairs, FEED_KEYS, "a feed");
        let kind = match fields.get("kind") {
            None => {
                self.error(value.pos, "missing required key `kind` in `feed`");
                None
            }
            Some((k, v)) => self.string(k, v, "kind", "a feed kind").and_then(|text| {
                values::parse_feed_kind(text)
                    .map_err(|message| self.error(v.pos, message))
                    .ok()
            }),
        };
        let url = match fields.get("url") {
            None => {
                self.error(value.pos, "missing required key `url` in `feed`");
                None
            }
            Some((k, v)) => self
                .string(k, v, "url", "an https:// URL")
                .and_then(|text| {
                    // Vendor data decides what is blocked: it is only taken over an authenticated
                    // channel.
                    let valid = text.strip_prefix("https://").is_some_and(|rest| {
                        !rest.is_empty() && !rest.contains(char::is_whitespace)
                    });
                    if valid {
                        Some(text.to_owned())
                    } else {
                        self.error(v.pos, format!("feed url `{text}` must be an https:// URL"));
                        None
                    }
                }),
        };
        let kind = kind?;
        let select = self.feed_select(kind, fields.get("select"), value.pos)?;
        Some(Feed {
            kind,
            url: url?,
            select,
            location: self.location(key.pos),
        })
    }

    /// `select` of a feed: microsoft-endpoints `{service-area, ids}` (at least one),
    /// aws-ip-ranges `{service, region}` (service required: the whole file is every AWS
    /// service), nothing for the line formats.
    fn feed_select(
        &mut self,
        kind: FeedKind,
        select: Option<(&Node, &Node)>,
        feed_pos: Pos,
    ) -> Option<FeedSelect> {
        let allowed: &[&'static str] = match kind {
            FeedKind::MicrosoftEndpoints => &["service-area", "ids"],
            FeedKind::AwsIpRanges => &["service", "region"],
            FeedKind::ZoomTxt | FeedKind::CidrList => &[],
        };
        let Some((key, value)) = select else {
            if allowed.is_empty() {
                return Some(FeedSelect::default());
            }
            self.error(
                feed_pos,
                format!(
                    "a `{kind}` feed needs `select` with {}",
                    if kind == FeedKind::AwsIpRanges {
                        "`service` (and optionally `region`)"
                    } else {
                        "`service-area` and/or `ids`"
                    }
                ),
            );
            return None;
        };
        if allowed.is_empty() {
            self.error(
                key.pos,
                format!("a `{kind}` feed takes no `select`: the whole list is used"),
            );
            return None;
        }
        let Value::Map(pairs) = &value.value else {
            let at = if value.is_null() { key.pos } else { value.pos };
            self.error(
                at,
                format!("`select` must be a mapping, found {}", value.kind()),
            );
            return None;
        };
        let what = format!("the `select` of a `{kind}` feed");
        let fields = self.fields(pairs, allowed, &what);
        let mut select = FeedSelect::default();
        let mut valid = true;
        if let Some((k, v)) = fields.get("service-area") {
            match self.string(k, v, "service-area", "a service area") {
                Some(text) if MICROSOFT_SERVICE_AREAS.contains(&text) => {
                    select.service_area = Some(text.to_owned());
                }
                Some(text) => {
                    self.error(
                        v.pos,
                        format!(
                            "unknown service area `{text}` (expected one of: {})",
                            MICROSOFT_SERVICE_AREAS.join(", ")
                        ),
                    );
                    valid = false;
                }
                None => valid = false,
            }
        }
        if let Some((k, v)) = fields.get("ids") {
            let items = self.list(k, v, "ids", "a list of endpoint-set ids");
            valid &= items.is_some();
            for item in items.unwrap_or_default() {
                let Some(text) = self.item(item, "an endpoint-set id must be a number") else {
                    valid = false;
                    continue;
                };
                match text.parse::<u32>() {
                    Ok(id) if id > 0 => select.ids.push(id),
                    _ => {
                        self.error(
                            item.pos,
                            format!("invalid endpoint-set id `{text}`: expected a positive number"),
                        );
                        valid = false;
                    }
                }
            }
        }
        for (name, slot) in [
            ("service", &mut select.service),
            ("region", &mut select.region),
        ] {
            if let Some((k, v)) = fields.get(name) {
                match self.string(k, v, name, "a name as ip-ranges.json writes it") {
                    Some(text) => *slot = Some(text.to_owned()),
                    None => valid = false,
                }
            }
        }
        let missing = match kind {
            FeedKind::MicrosoftEndpoints => {
                select.service_area.is_none() && select.ids.is_empty() && valid
            }
            FeedKind::AwsIpRanges => select.service.is_none() && valid,
            FeedKind::ZoomTxt | FeedKind::CidrList => false,
        };
        if missing {
            let needs = if kind == FeedKind::AwsIpRanges {
                "`service`"
            } else {
                "`service-area` and/or `ids`"
            };
            self.error(
                key.pos,
                format!("`select` of a `{kind}` feed needs {needs}"),
            );
            valid = false;
        }
        valid.then_some(select)
    }

    fn item<'n>(&mut self, item: &'n Node, expected: &str) -> Option<&'n str> {
        match &item.value {
            Value::Scalar { text, .. } if !item.is_null() => Some(text),
            _ => {
                self.error(item.pos, format!("{expected}, found {}", item.kind()));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::never_block::Origin;
    use crate::policy::{DomainPattern, PortRange};

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        parse_policy_str(Path::new("p.yaml"), text, &LoadOptions::default())
    }

    /// The diagnostics of an invalid document, as printed.
    fn errors(text: &str) -> Vec<String> {
        match parse(text) {
            Err(PolicyError::Invalid(d)) => d.iter().map(ToString::to_string).collect(),
            other => panic!("expected diagnostics, got {other:?}"),
        }
    }

    /// Asserts a single diagnostic at `line:column` whose message contains `needle`.
    #[track_caller]
    fn error_at(text: &str, line: usize, column: usize, needle: &str) {
        let errors = errors(text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        let prefix = format!("p.yaml:{line}:{column}: ");
        assert!(
            errors[0].starts_with(&prefix) && errors[0].contains(needle),
            "expected {prefix}…{needle}…, got {}",
            errors[0]
        );
    }

    fn loc(path: &str, line: usize, column: usize) -> Location {
        Location {
            path: path.into(),
            line,
            column,
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn valid_policy_parses_to_the_model() {
        let text = r#"platform: zoom
description: Zoom meetings
reference: https://example.com/zoom
action: monitor
match:
  - domains: [Zoom.US., "*.zoom.us"]
  - prefixes: [170.114.0.0/16, "2407:30c0::/32", 198.51.100.9]
  - prefixes:
      - 198.51.100.0/24
    protocol: udp
    ports: [8801-8810, 3478, "5000"]
"#;
        let policy = parse(text).unwrap();
        let expected = Platform {
            data_date: None,
            feed: None,
            action_by_site: Vec::new(),
            name: "zoom".into(),
            id: 0,
            description: Some("Zoom meetings".into()),
            reference: Some("https://example.com/zoom".into()),
            action: Action::Monitor,
            entries: vec![
                Entry {
                    index: 0,
                    domains: vec![
                        DomainPattern::Exact("zoom.us".into()),
                        DomainPattern::Wildcard("zoom.us".into()),
                    ],
                    prefixes: vec![],
                    protocol: Protocol::Any,
                    ports: vec![],
                    enforce: Enforce::Both,
                    location: loc("p.yaml", 6, 5),
                },
                Entry {
                    index: 1,
                    domains: vec![],
                    prefixes: vec![
                        net("170.114.0.0/16"),
                        net("2407:30c0::/32"),
                        net("198.51.100.9/32"),
                    ],
                    protocol: Protocol::Any,
                    ports: vec![],
                    enforce: Enforce::Both,
                    location: loc("p.yaml", 7, 5),
                },
                Entry {
                    index: 2,
                    domains: vec![],
                    prefixes: vec![net("198.51.100.0/24")],
                    protocol: Protocol::Udp,
                    ports: vec![
                        PortRange {
                            first: 8801,
                            last: 8810,
                        },
                        PortRange {
                            first: 3478,
                            last: 3478,
                        },
                        PortRange {
                            first: 5000,
                            last: 5000,
                        },
                    ],
                    enforce: Enforce::Both,
                    location: loc("p.yaml", 8, 5),
                },
            ],
            location: loc("p.yaml", 1, 11),
        };
        assert_eq!(policy.platforms, vec![expected]);
    }

    #[test]
    fn defaults_and_empty_lists_next_to_items() {
        let text =
            "platform: a\ndescription:\nmatch:\n- domains: []\n  prefixes: [198.18.0.0/15]\n";
        let policy = parse(text).unwrap();
        let p = &policy.platforms[0];
        assert_eq!(p.action, Action::Drop);
        assert_eq!(p.description, None);
        assert_eq!(p.entries[0].protocol, Protocol::Any);
        assert_eq!(p.entries[0].prefixes, vec![net("198.18.0.0/15")]);
    }

    #[test]
    fn enforce_is_read_with_both_by_default() {
        let policy = parse(
            "platform: a\nmatch:\n  - domains: [a.com]\n  - domains: [b.com]\n    enforce: name\n  \
             - domains: [c.com]\n    enforce: address\n    protocol: udp\n    ports: [53]\n  \
             - domains: ['*.d.com']\n    enforce: both\n",
        )
        .unwrap();
        let enforce: Vec<Enforce> = policy.platforms[0]
            .entries
            .iter()
            .map(|e| e.enforce)
            .collect();
        assert_eq!(
            enforce,
            [
                Enforce::Both,
                Enforce::Name,
                Enforce::Address,
                Enforce::Both
            ]
        );
    }

    #[test]
    fn bad_enforce_is_an_error_naming_the_place() {
        error_at(
            "platform: a\nmatch:\n  - domains: [a.com]\n    enforce: dns\n",
            4,
            14,
            "invalid enforce `dns`: expected name, address or both",
        );
        error_at(
            "platform: a\nmatch:\n  - domains: [a.com]\n    enforce:\n",
            4,
            5,
            "`enforce` has no value",
        );
        error_at(
            "platform: a\nmatch:\n  - prefixes: [198.18.0.0/16]\n    enforce: name\n",
            4,
            5,
            "`enforce` says how `domains` are blocked; this entry has no `domains`",
        );
        error_at(
            "platform: a\nmatch:\n  - prefixes: [198.18.0.0/16]\n    domains: []\n    enforce: address\n",
            5,
            5,
            "this entry has no `domains`",
        );
        error_at(
            "platform: a\nmatch:\n  - domains: [a.com]\n    protocol: tcp\n    ports: [443]\n    enforce: name\n",
            6,
            14,
            "`enforce: name` blocks the names on every port; with `ports` use `enforce: address`",
        );
        error_at(
            "platform: a\nmatch:\n  - domains: [a.com]\n    protocol: tcp\n    ports: [443]\n",
            5,
            5,
            "`ports` on an entry with `domains` needs `enforce: address`",
        );
    }

    #[test]
    fn a_shared_name_goes_by_name_only() {
        error_at(
            "platform: a\nmatch:\n  - domains: [x.com, d1.CloudFront.net]\n",
            3,
            22,
            "`d1.cloudfront.net` is under the shared suffix `cloudfront.net` (CDN or shared front \
             end), whose addresses serve other sites: `enforce: both` would block them; use \
             `enforce: name`",
        );
        error_at(
            "platform: a\nmatch:\n  - domains: [\"*.github.io\"]\n    enforce: address\n",
            3,
            15,
            "`enforce: address` would block them",
        );
        assert!(
            parse("platform: a\nmatch:\n  - domains: [d1.cloudfront.net, \"*.github.io\"]\n    enforce: name\n")
                .is_ok()
        );
        // `--shared-suffix` adds to the list.
        let text = "platform: a\nmatch:\n  - domains: [app.edge.example]\n";
        assert!(parse(text).is_ok());
        let options = LoadOptions {
            shared_suffixes: vec!["edge.example".to_owned()],
            ..LoadOptions::default()
        };
        let err = parse_policy_str(Path::new("p.yaml"), text, &options).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "p.yaml:3:15: `app.edge.example` is under the shared suffix `edge.example`"
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys() {
        error_at(
            "platform: a\nmatch:\n  - domains: [a.com]\nacton: drop\n",
            4,
            1,
            "unknown key `acton` in a platform (expected one of: platform, description, \
             reference, action, action-by-site, match, data-date, feed)",
        );
        error_at(
            "platform: a\nmatch:\n  - domains: [a.com]\n    \"port\": [1]\n",
            4,
            5,
            "unknown key `port` in a match entry (expected one of: domains, prefixes, protocol, ports, enforce)",
        );
        error_at(
            "platform: a\nmatch:\n  - domains: [a.com]\n    ? [x]\n    : 1\n",
            4,
            7,
            "expected a key name, found a list",
        );
        error_at(
            "platform: a\nmatch: [{domains: [a.com]}]\nplatform: b\n",
            3,
            1,
            "duplicate key `platform` (first at line 1, column 1)",
        );
    }

    #[test]
    fn missing_keys() {
        error_at(
            "match:\n  - domains: [a.com]\n",
            1,
            1,
            "missing required key `platform`",
        );
        error_at(
            "# zoom\n\ndescription: x\nplatform: a\n",
            3,
            1,
            "missing required key `match`",
        );
        error_at("{platform: a}", 1, 1, "missing required key `match`");
    }

    #[test]
    fn action_by_site_is_read_and_checked_where_written() {
        let policy = parse(
            "platform: teams\naction: monitor\naction-by-site: {b: drop, a: allow}\nmatch: [{domains: [a.com]}]\n",
        )
        .unwrap();
        let teams = &policy.platforms[0];
        let sites: Vec<(&str, Action)> = teams
            .action_by_site
            .iter()
            .map(|a| (a.site.as_str(), a.action))
            .collect();
        assert_eq!(sites, [("a", Action::Allow), ("b", Action::Drop)]);
        assert_eq!(teams.action_for(Some("b")), Action::Drop);
        assert_eq!(teams.action_for(Some("c")), Action::Monitor);
        assert_eq!(teams.action_for(None), Action::Monitor);
        error_at(
            "platform: a\naction-by-site: {x: block}\nmatch: [{domains: [a.com]}]\n",
            2,
            21,
            "invalid action `block`",
        );
        error_at(
            "platform: a\naction-by-site: {Bad: drop}\nmatch: [{domains: [a.com]}]\n",
            2,
            18,
            "invalid site name `Bad`",
        );
        error_at(
            "platform: a\naction-by-site: [drop]\nmatch: [{domains: [a.com]}]\n",
            2,
            17,
            "`action-by-site` must map site names",
        );
    }

    #[test]
    fn platform_names() {
        error_at(
            "platform: \"Zoom\"\nmatch: [{domains: [a.com]}]\n",
            1,
            11,
            "invalid platform name `Zoom`: use lower-case letters, digits and `-`",
        );
        error_at(
            "platform: -a\nmatch: [{domains: [a.com]}]\n",
            1,
            11,
            "invalid platform name `-a`",
        );
        error_at(
            "platform: a_b\nmatch: [{domains: [a.com]}]\n",
            1,
            11,
            "invalid platform name",
        );
        error_at(
            "platform: {x: y}\nmatch: [{domains: [a.com]}]\n",
            1,
            11,
            "`platform` must be a platform name, found a mapping",
        );
        error_at(
            "platform:\nmatch: [{domains: [a.com]}]\n",
            1,
            1,
            "`platform` has no value",
        );
        // Digits first and quoted numbers are fine.
        assert!(parse("platform: 9gag\nmatch: [{domains: [a.com]}]\n").is_ok());
        assert!(parse("platform: \"123\"\nmatch: [{domains: [a.com]}]\n").is_ok());
    }

    #[test]
    fn match_shape() {
        error_at(
            "platform: a\nmatch: []\n",
            2,
            8,
            "`match` is empty; a platform needs at least one entry",
        );
        error_at(
            "platform: a\nmatch:\n",
            2,
            1,
            "`match` has no value; expected a list of entries",
        );
        error_at(
            "platform: a\nmatch: zoom.us\n",
            2,
            8,
            "`match` must be a list of entries, found a scalar",
        );
        error_at(
            "platform: a\nmatch:\n  domains: [a.com]\n",
            3,
            3,
            "`match` must be a list of entries, found a mapping",
        );
        error_at(
            "platform: a\nmatch:\n  - zoom.us\n",
            3,
            5,
            "a match entry must be a mapping with `domains` and/or `prefixes`, found a scalar",
        );
        error_at(
            "platform: a\nmatch:\n  -\n  - domains: [a.com]\n",
            3,
            3,
            "a match entry must be a mapping with `domains` and/or `prefixes`, found nothing",
        );
    }

    #[test]
    fn entries_must_name_something() {
        let neither = "entry has neither `domains` nor `prefixes`";
        error_at(
            "platform: a\nmatch:\n  - protocol: tcp\n    ports: [443]\n",
            3,
            5,
            neither,
        );
        error_at(
            "platform: a\nmatch:\n  - domains: []\n    prefixes: []\n",
            3,
            5,
            neither,
        );
        error_at("platform: a\nmatch: [{}]\n", 2, 9, neither);
        // An invalid item or a malformed list is reported once, without the "neither" error.
        error_at(
            "platform: a\nmatch:\n  - domains: [\"*\"]\n",
            3,
            15,
            "invalid domain `*`",
        );
        error_at(
            "platform: a\nmatch:\n  - prefixes: 198.51.100.0/24\n",
            3,
            15,
            "`prefixes` must be a list of CIDR prefixes, found a scalar",
        );
        error_at(
            "platform: a\nmatch:\n  - domains:\n",
            3,
            5,
            "`domains` has no value; expected a list of domain names",
        );
    }

    #[test]
    fn bad_prefixes() {
        error_at(
            "platform: a\nmatch:\n  - prefixes: [198.51.100.0/24, \"198.51.100.0/33\"]\n",
            3,
            33,
            "invalid prefix `198.51.100.0/33`",
        );
        error_at(
            "platform: a\nmatch:\n  - prefixes:\n      - 198.51.100.1/24\n",
            4,
            9,
            "prefix `198.51.100.1/24` has host bits set; did you mean `198.51.100.0/24`?",
        );
        error_at(
            "platform: a\nmatch:\n  - prefixes: [{a: b}]\n",
            3,
            16,
            "a prefix must be a string, found a mapping",
        );
    }

    #[test]
    fn bad_domains() {
        for (domain, needle) in [
            ("\"*.com\"", "at least two labels"),
            ("a.*.b", "only allowed as the whole first label"),
            ("192.0.2.1", "IP address"),
            ("'bad_name.com'", "character `_`"),
        ] {
            let text = format!("platform: a\nmatch:\n  - domains: [ok.com, {domain}]\n");
            error_at(&text, 3, 23, needle);
        }
    }

    #[test]
    fn action_and_protocol_values() {
        error_at(
            "platform: a\naction: block\nmatch: [{domains: [a.com]}]\n",
            2,
            9,
            "invalid action `block`: expected drop, monitor or allow",
        );
        error_at(
            "platform: a\naction: [drop]\nmatch: [{domains: [a.com]}]\n",
            2,
            9,
            "`action` must be drop, monitor or allow, found a list",
        );
        error_at(
            "platform: a\nmatch:\n  - domains: [a.com]\n    protocol: 'icmp'\n",
            4,
            15,
            "invalid protocol `icmp`: expected tcp, udp or any",
        );
    }

    #[test]
    fn bad_ports() {
        let entry = |ports: &str| {
            format!(
                "platform: a\nmatch:\n  - domains: [a.com]\n    protocol: tcp\n    ports: {ports}\n    \
                 enforce: address\n"
            )
        };
        error_at(
            &entry("[443, 0]"),
            5,
            18,
            "port `0` is out of range 1-65535",
        );
        error_at(
            &entry("[70000]"),
            5,
            13,
            "port `70000` is out of range 1-65535",
        );
        error_at(&entry("[https]"), 5, 13, "invalid port `https`");
        error_at(&entry("[\"10-5\"]"), 5, 13, "port range `10-5` is reversed");
        error_at(&entry("['5-']"), 5, 13, "invalid port range `5-`");
        error_at(
            &entry("443"),
            5,
            12,
            "`ports` must be a list of ports and port ranges, found a scalar",
        );
        error_at(
            &entry("[[1, 2]]"),
            5,
            13,
            "a port must be a number or a range like 8801-8810, found a list",
        );
        error_at(&entry("[]"), 5, 12, "`ports` is empty");
    }

    #[test]
    fn ports_need_tcp_or_udp() {
        let message = "`ports` needs `protocol: tcp` or `protocol: udp`";
        error_at(
            "platform: a\nmatch:\n  - domains: [a.com]\n    ports: [443]\n    enforce: address\n",
            4,
            5,
            message,
        );
        error_at(
            "platform: a\nmatch:\n  - domains: [a.com]\n    protocol: any\n    ports: [443]\n    enforce: address\n",
            5,
            5,
            message,
        );
        // An invalid protocol is reported alone.
        error_at(
            "platform: a\nmatch:\n  - domains: [a.com]\n    protocol: sctp\n    ports: [443]\n    enforce: address\n",
            4,
            15,
            "invalid protocol",
        );
    }

    #[test]
    fn never_block_overlap_both_directions() {
        // A wider rule containing never-block ranges.
        error_at(
            "platform: a\nmatch:\n  - prefixes: [8.0.0.0/5]\n",
            3,
            16,
            "prefix `8.0.0.0/5` overlaps the never-block range 10.0.0.0/8",
        );
        // A narrower rule inside one.
        error_at(
            "platform: a\nmatch:\n  - prefixes: [\"fe80::1\"]\n",
            3,
            16,
            "prefix `fe80::1` overlaps the never-block range fe80::/10",
        );
        error_at(
            "platform: a\nmatch:\n  - prefixes: [0.0.0.0/0]\n",
            3,
            16,
            "overlaps the never-block ranges 0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, \
             169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16, 224.0.0.0/4, 255.255.255.255/32",
        );
        // Ranges from the options count too, in both directions.
        let options = LoadOptions {
            never_block: NeverBlock::from_ranges([
                (net("198.51.100.53/32"), Origin::Resolver),
                (net("203.0.113.0/24"), Origin::Configured),
            ]),
            ..LoadOptions::default()
        };
        let text = "platform: a\nmatch:\n  - prefixes: [198.51.100.0/24, 203.0.113.128/25, 198.18.0.0/15]\n";
        let err = parse_policy_str(Path::new("p.yaml"), text, &options).unwrap_err();
        assert_eq!(
            err.to_string(),
            "p.yaml:3:16: prefix `198.51.100.0/24` overlaps the never-block range 198.51.100.53/32\n\
             p.yaml:3:33: prefix `203.0.113.128/25` overlaps the never-block range 203.0.113.0/24"
        );
    }

    #[test]
    fn monitor_and_allow_may_overlap_the_never_block_list() {
        for action in ["monitor", "allow"] {
            let text = format!(
                "platform: a\naction: {action}\nmatch:\n  - prefixes: [10.0.0.0/8, 192.168.1.0/24]\n"
            );
            let policy = parse(&text).unwrap_or_else(|e| panic!("{action}: {e}"));
            assert_eq!(policy.platforms[0].entries[0].prefixes.len(), 2);
        }
        // The default action is drop.
        error_at(
            "platform: a\nmatch:\n  - prefixes: [192.168.1.0/24]\n",
            3,
            16,
            "overlaps the never-block range 192.168.0.0/16",
        );
    }

    #[test]
    fn managed_extension_is_checked_with_the_platforms_action() {
        let dir = temp_dir();
        let managed = dir.join(sources::MANAGED_FILE);
        // The managed file leaves the action out: the platform's own decides.
        let extension = "platform: p\nmatch:\n  - prefixes: [10.1.0.0/16]\n";
        fs::write(&managed, extension).unwrap();
        fs::write(
            dir.join("p.yaml"),
            "platform: p\naction: monitor\nmatch:\n  - domains: [p.example]\n",
        )
        .unwrap();
        assert!(load(&dir).is_ok());
        fs::write(
            dir.join("p.yaml"),
            "platform: p\nmatch:\n  - domains: [p.example]\n",
        )
        .unwrap();
        assert_eq!(
            invalid(load(&dir)),
            vec![format!(
                "{}:3:16: prefix `10.1.0.0/16` overlaps the never-block range 10.0.0.0/8",
                managed.display()
            )]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_shape_and_syntax() {
        error_at("", 1, 1, "the file is empty");
        error_at("# nothing\n", 1, 1, "the file is empty");
        error_at("---\n", 1, 1, "the file is empty");
        error_at(
            "- a\n- b\n",
            1,
            1,
            "expected a platform (a mapping with `platform` and `match`), found a list",
        );
        error_at("zoom\n", 1, 1, "found a scalar");
        error_at(
            "platform: a\nmatch:\n  - domains: [a.com\n",
            4,
            1,
            "YAML syntax error: while parsing a flow sequence, expected ',' or ']'",
        );
        error_at(
            "platform: a: b\n",
            1,
            12,
            "YAML syntax error: mapping values are not allowed",
        );
        error_at(
            "platform: a\nmatch: [{domains: [a.com]}]\n---\nplatform: b\n",
            3,
            1,
            "a rule file holds one YAML document",
        );
    }

    #[test]
    fn all_errors_are_reported_in_order() {
        let text = r#"platform: Bad
colour: red
action: stop
match:
  - domains: ["*", ok.com]
    prefixes: [10.1.0.0/16, 198.51.100.1/24]
  - ports: [80]
  - prefixes: [198.18.0.0/15]
    protocol: tcp
    ports: [0, 1-2-3]
"#;
        assert_eq!(
            errors(text),
            vec![
                "p.yaml:1:11: invalid platform name `Bad`: use lower-case letters, digits and `-`, starting with a letter or digit",
                "p.yaml:2:1: unknown key `colour` in a platform (expected one of: platform, description, reference, action, action-by-site, match, data-date, feed)",
                "p.yaml:3:9: invalid action `stop`: expected drop, monitor or allow",
                "p.yaml:5:15: invalid domain `*`: a wildcard needs a domain after it, like `*.example.com`",
                "p.yaml:6:16: prefix `10.1.0.0/16` overlaps the never-block range 10.0.0.0/8",
                "p.yaml:6:29: prefix `198.51.100.1/24` has host bits set; did you mean `198.51.100.0/24`?",
                "p.yaml:7:5: `ports` needs `protocol: tcp` or `protocol: udp`; ports are only checked for one of them",
                "p.yaml:7:5: entry has neither `domains` nor `prefixes`; name at least one (nothing is blocked by port alone)",
                "p.yaml:10:13: port `0` is out of range 1-65535",
                "p.yaml:10:16: invalid port range `1-2-3`: expected FIRST-LAST, like 8801-8810",
            ]
        );
    }

    fn load(path: &Path) -> Result<Policy, PolicyError> {
        load_policy(&[path.to_path_buf()], &LoadOptions::default())
    }

    /// A fresh directory under the system's temporary directory.
    fn temp_dir() -> PathBuf {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("enforcer-policy-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn invalid(result: Result<Policy, PolicyError>) -> Vec<String> {
        match result {
            Err(PolicyError::Invalid(d)) => d.iter().map(ToString::to_string).collect(),
            other => panic!("expected diagnostics, got {other:?}"),
        }
    }

    #[test]
    fn directory_is_read_in_name_order_and_sorted_by_platform() {
        let dir = temp_dir();
        fs::write(
            dir.join("b.yaml"),
            "platform: alpha\nmatch: [{prefixes: [198.18.1.0/24]}]\n",
        )
        .unwrap();
        fs::write(
            dir.join("a.yaml"),
            "platform: zeta\nmatch: [{prefixes: [198.18.0.0/24]}]\n",
        )
        .unwrap();
        // Not rule files: wrong extension, hidden, a directory.
        fs::write(dir.join("notes.txt"), "not yaml").unwrap();
        fs::write(dir.join("c.yml"), "platform: [").unwrap();
        fs::write(dir.join(".swap.yaml"), "platform: [").unwrap();
        fs::create_dir(dir.join("sub.yaml")).unwrap();
        let policy = load(&dir).unwrap();
        let names: Vec<_> = policy.platforms.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["alpha", "zeta"]);
        assert_eq!(policy.platforms[0].location.path, dir.join("b.yaml"));

        // Duplicates point at the file read second (a.yaml before b.yaml) and name the first.
        fs::write(
            dir.join("c.yaml"),
            "platform: zeta\nmatch: [{domains: [z.com]}]\n",
        )
        .unwrap();
        fs::write(dir.join("d.yaml"), "").unwrap();
        let a = dir.join("a.yaml").display().to_string();
        let c = dir.join("c.yaml").display().to_string();
        let d = dir.join("d.yaml").display().to_string();
        assert_eq!(
            invalid(load(&dir)),
            vec![
                format!("{c}:1:11: duplicate platform `zeta` (first defined at {a}:1:11)"),
                format!(
                    "{d}:1:1: the file is empty; expected a platform (a mapping with `platform` and `match`)"
                ),
            ]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn several_paths_form_one_policy_and_all_files_are_checked() {
        let (one, two) = (temp_dir(), temp_dir());
        let empty = temp_dir();
        fs::write(
            one.join("x.yaml"),
            "platform: x\nmatch: [{domains: [\"-x.com\"]}]\n",
        )
        .unwrap();
        let file = two.join("y.yaml");
        fs::write(&file, "platform: y\nmatch: []\n").unwrap();
        let x = one.join("x.yaml").display().to_string();
        let y = file.display().to_string();
        assert_eq!(
            invalid(load_policy(
                &[one.clone(), file.clone(), empty.clone()],
                &LoadOptions::default()
            )),
            vec![
                format!(
                    "{}: directory contains no *.yaml rule files",
                    empty.display()
                ),
                format!("{x}:2:20: invalid domain `-x.com`: label `-x` starts or ends with `-`"),
                format!("{y}:2:8: `match` is empty; a platform needs at least one entry"),
            ]
        );
        fs::write(
            one.join("x.yaml"),
            "platform: x\nmatch: [{domains: [x.com]}]\n",
        )
        .unwrap();
        fs::write(&file, "platform: y\nmatch: [{domains: [y.com]}]\n").unwrap();
        let policy = load_policy(&[file.clone(), one.clone()], &LoadOptions::default()).unwrap();
        assert_eq!(policy.platforms.len(), 2);
        assert_eq!(policy.platforms[0].name, "x");
        for dir in [one, two, empty] {
            fs::remove_dir_all(dir).unwrap();
        }
    }

    /// Hostile files are refused with the file, line and column of the limit crossed; a file
    /// over the size limit is not even read whole (and, not being a source, is listed first).
    /// The huge file is zeros up to a byte that is not UTF-8, 100 bytes past the limit: read
    /// whole, it would be an I/O error instead of the size diagnostic.
    #[test]
    fn files_over_the_parser_limits_are_refused_naming_the_place() {
        let dir = temp_dir();
        let deep = dir.join("deep.yaml");
        fs::write(
            &deep,
            format!("platform: a\nmatch:\n  {}x\n", "- ".repeat(6_000)),
        )
        .unwrap();
        let huge = dir.join("huge.yaml");
        let mut file = fs::File::create(&huge).unwrap();
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start((64 << 20) + 100)).unwrap();
        std::io::Write::write_all(&mut file, &[0xff]).unwrap();
        drop(file);
        assert_eq!(
            invalid(load(&dir)),
            [
                format!(
                    "{}: the file is larger than 64 MiB, the limit for a rule file",
                    huge.display()
                ),
                format!(
                    "{}:3:129: collections are nested more than 64 deep",
                    deep.display()
                ),
            ]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unreadable_paths_are_io_errors() {
        let dir = temp_dir();
        let missing = dir.join("missing.yaml");
        match load(&missing) {
            Err(e @ PolicyError::Io { .. }) => {
                assert!(
                    e.to_string()
                        .starts_with(&format!("{}: ", missing.display())),
                    "{e}"
                );
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn managed_file_extends_platforms() {
        let dir = temp_dir();
        fs::write(
            dir.join("zoom.yaml"),
            "platform: zoom\naction: monitor\nmatch:\n  - domains: [zoom.us]\n",
        )
        .unwrap();
        fs::write(
            dir.join(sources::MANAGED_FILE),
            "platform: zoom\naction: monitor\nmatch:\n  - prefixes: [198.18.0.0/24]\n",
        )
        .unwrap();
        let policy = load(&dir).unwrap();
        assert_eq!(policy.platforms.len(), 1);
        let zoom = &policy.platforms[0];
        assert_eq!(zoom.action, Action::Monitor);
        assert_eq!(zoom.location.path, dir.join("zoom.yaml"));
        assert_eq!(zoom.entries.len(), 2);
        assert_eq!(zoom.entries[1].index, 1);
        assert_eq!(zoom.entries[1].prefixes, vec![net("198.18.0.0/24")]);
        assert_eq!(
            zoom.entries[1].location.path,
            dir.join(sources::MANAGED_FILE)
        );

        // Without an action the managed extension takes the platform's; a new platform there
        // is an ordinary platform.
        fs::write(
            dir.join(sources::MANAGED_FILE),
            "platform: zoom\nmatch: [{domains: [zoom.com]}]\n",
        )
        .unwrap();
        assert_eq!(load(&dir).unwrap().platforms[0].entries.len(), 2);
        fs::write(
            dir.join(sources::MANAGED_FILE),
            "platform: extra\naction: allow\nmatch: [{domains: [extra.com]}]\n",
        )
        .unwrap();
        let policy = load(&dir).unwrap();
        assert_eq!(policy.platforms.len(), 2);
        assert_eq!(policy.platforms[0].name, "extra");
        assert_eq!(policy.platforms[0].action, Action::Allow);

        // A different action is an error at the managed file's `action` value.
        fs::write(
            dir.join(sources::MANAGED_FILE),
            "platform: zoom\naction: drop\nmatch: [{domains: [zoom.com]}]\n",
        )
        .unwrap();
        let managed = dir.join(sources::MANAGED_FILE).display().to_string();
        let zoom = dir.join("zoom.yaml").display().to_string();
        assert_eq!(
            invalid(load(&dir)),
            vec![format!(
                "{managed}:2:9: action `drop` differs from the action `monitor` of platform `zoom` defined at {zoom}:1:11"
            )]
        );

        // Outside a directory the file is an ordinary rule file: a repeat is a duplicate.
        fs::write(
            dir.join(sources::MANAGED_FILE),
            "platform: zoom\nmatch: [{domains: [zoom.com]}]\n",
        )
        .unwrap();
        let paths = [dir.join("zoom.yaml"), dir.join(sources::MANAGED_FILE)];
        assert_eq!(
            invalid(load_policy(&paths, &LoadOptions::default())),
            vec![format!(
                "{managed}:1:11: duplicate platform `zoom` (first defined at {zoom}:1:11)"
            )]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// `data-date` and `feed`: read into the model, every mistake at its line and column.
    #[test]
    fn feeds_and_data_dates() {
        let text = "\
platform: teams
data-date: 2026-11-01
feed:
  kind: microsoft-endpoints
  url: https://endpoints.office.com/endpoints/worldwide?clientrequestid=x
  select: {service-area: Skype, ids: [11, 12]}
match:
  - prefixes: [52.112.0.0/14]
";
        let teams = &parse(text).unwrap().platforms[0];
        assert_eq!(teams.data_date.unwrap().to_string(), "2026-11-01");
        let feed = teams.feed.as_ref().unwrap();
        assert_eq!(feed.kind, crate::policy::FeedKind::MicrosoftEndpoints);
        assert_eq!(feed.select.service_area.as_deref(), Some("Skype"));
        assert_eq!(feed.select.ids, vec![11, 12]);
        assert_eq!((feed.location.line, feed.location.column), (3, 1));

        let aws = "platform: chime\nfeed: {kind: aws-ip-ranges, url: \"https://ip-ranges.amazonaws.com/ip-ranges.json\", select: {service: CHIME_MEETINGS, region: GLOBAL}}\nmatch: [{prefixes: [99.77.128.0/18]}]\n";
        let select = parse(aws).unwrap().platforms[0]
            .feed
            .clone()
            .unwrap()
            .select;
        assert_eq!(select.service.as_deref(), Some("CHIME_MEETINGS"));
        assert_eq!(select.region.as_deref(), Some("GLOBAL"));

        let bad = "\
platform: x
data-date: 2026-02-30
feed:
  kind: zoom-csv
  url: http://assets.zoom.us/x.txt
match:
  - prefixes: [198.51.100.0/24]
";
        assert_eq!(
            errors(bad),
            vec![
                "p.yaml:2:12: invalid date `2026-02-30`: no such day",
                "p.yaml:4:9: unknown feed kind `zoom-csv` (expected one of: zoom-txt, microsoft-endpoints, aws-ip-ranges, cidr-list)",
                "p.yaml:5:8: feed url `http://assets.zoom.us/x.txt` must be an https:// URL",
            ]
        );
        let select = "\
platform: x
data-date: 1/12/2026
feed: {kind: zoom-txt, url: https://a/b, select: {service: X}}
match:
  - prefixes: [198.51.100.0/24]
    protocol: udp
";
        assert_eq!(
            errors(select),
            vec![
                "p.yaml:2:12: invalid date `1/12/2026`: expected YYYY-MM-DD, like 2026-11-24",
                "p.yaml:3:42: a `zoom-txt` feed takes no `select`: the whole list is used",
            ]
        );
        let managed = "\
platform: x
feed: {kind: cidr-list, url: https://a/b}
match:
  - prefixes: [198.51.100.0/24]
    protocol: udp
";
        assert_eq!(
            errors(managed),
            vec![
                "p.yaml:2:1: a platform with `feed` needs a feed-managed entry: a `prefixes` entry without `protocol` or `ports`, which `enforcer feeds update` rewrites"
            ]
        );
        let ms = "\
platform: x
feed:
  kind: microsoft-endpoints
  url: https://a/b
  select: {service-area: Teams, ids: [0], region: X}
match: [{prefixes: [198.51.100.0/24]}]
";
        assert_eq!(
            errors(ms),
            vec![
                "p.yaml:5:26: unknown service area `Teams` (expected one of: Common, Exchange, SharePoint, Skype)",
                "p.yaml:5:39: invalid endpoint-set id `0`: expected a positive number",
                "p.yaml:5:43: unknown key `region` in the `select` of a `microsoft-endpoints` feed (expected one of: service-area, ids)",
            ]
        );
        let missing = "platform: x\nfeed: {kind: aws-ip-ranges, url: https://a/b, select: {region: GLOBAL}}\nmatch: [{prefixes: [198.51.100.0/24]}]\n";
        assert_eq!(
            errors(missing),
            vec!["p.yaml:2:47: `select` of a `aws-ip-ranges` feed needs `service`"]
        );
    }
}
