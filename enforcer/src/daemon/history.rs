//! `history` and `rollback`: the stored versions of the policy, and writing one back into the
//! policy files and applying it through the same switch as a reload.

use std::path::Path;

use super::{Daemon, POISONED, ReloadError, policy_digest};
use crate::control::protocol::{HistoryReply, HistoryVersion, RollbackReply};
use crate::history::{self, Files};
use crate::policy;

/// The policy files a rollback wrote (new or changed) and removed, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub written: Vec<String>,
    pub removed: Vec<String>,
}

impl Daemon {
    /// The stored versions, oldest first, the one in force marked. The files are read without
    /// holding the state.
    pub fn history(&self) -> Result<HistoryReply, Vec<String>> {
        let (store, current) =
            self.with(|s| Ok((s.history().clone(), policy_digest(s.policy()))))?;
        let versions = store.versions();
        let newest_current = versions.iter().rposition(|v| v.digest == current);
        Ok(HistoryReply {
            versions: versions
                .into_iter()
                .enumerate()
                .map(|(i, v)| HistoryVersion {
                    digest: v.digest,
                    time: v.time,
                    source: v.source.as_str().to_owned(),
                    user: v.user,
                    current: Some(i) == newest_current,
                })
                .collect(),
        })
    }

    /// Writes the version `to` names (default: the one before the current) back into the policy
    /// files and applies it. It is validated first, as the files it would write, with the
    /// running options; anything wrong and nothing is written. No reload or `rules` change runs
    /// meanwhile, and the watcher finds the files already applied.
    pub fn rollback(&self, to: Option<&str>, user: &str) -> Result<RollbackReply, Vec<String>> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .map_err(|_| vec![POISONED.to_owned()])?;
        let (store, current, (rules, options)) = self.with(|s| {
            Ok((
                s.history().clone(),
                policy_digest(s.policy()),
                s.reload_source(),
            ))
        })?;
        let versions = store.versions();
        let target = match to {
            Some(prefix) => history::find(&versions, prefix),
            None => history::previous(&versions, &current),
        }
        .map_err(|e| vec![e.to_string()])?
        .clone();
        check_names(&rules, &target.files).map_err(|e| vec![e])?;
        let policy = policy::load_policy_from_texts(&rules, &target.files, &options)
            .map_err(|e| ReloadError::from(e).lines())?;
        let digest = policy_digest(&policy);
        if digest != target.digest {
            return Err(vec![format!(
                "version {} now reads as {digest}: not rolled back",
                target.digest
            )]);
        }
        let installed = self.with(|s| {
            s.install_version(policy, &target, user)
                .map_err(|e| e.lines())
        });
        self.record_pending();
        let (change, written) = installed?;
        Ok(RollbackReply {
            from: current,
            change,
            files_written: written.written,
            files_removed: written.removed,
        })
    }
}

/// A stored version's file names must be plain rule file names (a damaged or edited history
/// entry cannot write outside the policy directory); a single-file `--rules` takes one file.
fn check_names(rules: &Path, files: &Files) -> Result<(), String> {
    if !rules.is_dir() {
        return match files.len() {
            1 => Ok(()),
            n => Err(format!(
                "--rules {} is a single file and this version has {n} files: not rolled back",
                rules.display()
            )),
        };
    }
    for name in files.keys() {
        let plain = Path::new(name)
            .file_name()
            .is_some_and(|n| n == name.as_str());
        if !plain || name.starts_with('.') || !name.ends_with(".yaml") {
            return Err(format!(
                "the stored version names `{name}`, not a rule file name: not rolled back"
            ));
        }
    }
    Ok(())
}

/// What making the files `before` into `after` writes and removes, by name.
pub fn written(before: &Files, after: &Files) -> Written {
    Written {
        written: after
            .iter()
            .filter(|(name, text)| before.get(*name) != Some(*text))
            .map(|(name, _)| name.clone())
            .collect(),
        removed: before
            .keys()
            .filter(|name| !after.contains_key(*name))
            .cloned()
            .collect(),
    }
}

/// The rule files of `--rules` as they are: a directory's non-hidden `*.yaml` files, or the
/// single file.
pub fn read_files(rules: &Path) -> std::io::Result<Files> {
    if !rules.is_dir() {
        let name = rules
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(Files::from([(name, std::fs::read_to_string(rules)?)]));
    }
    let mut files = Files::new();
    for name in rule_names(rules)? {
        let text = std::fs::read_to_string(rules.join(&name))?;
        files.insert(name, text);
    }
    Ok(files)
}

/// Makes the rule files of `--rules` exactly `files`: each changed or new one written
/// atomically (the loader and the watcher skip the hidden temporaries), then those not in
/// `files` removed. A single-file `--rules` is rewritten in place.
pub fn write_files(rules: &Path, files: &Files) -> std::io::Result<Written> {
    let mut out = Written::default();
    if !rules.is_dir() {
        if let Some(text) = files.values().next()
            && std::fs::read_to_string(rules).ok().as_deref() != Some(text.as_str())
        {
            crate::fsutil::write_atomically(rules, text.as_bytes())?;
            out.written.push(
                rules
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
        return Ok(out);
    }
    for (name, text) in files {
        let path = rules.join(name);
        // Unchanged files keep their times: fewer changes for the watcher to look at.
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        crate::fsutil::write_atomically(&path, text.as_bytes())?;
        out.written.push(name.clone());
    }
    for name in rule_names(rules)? {
        if !files.contains_key(&name) {
            std::fs::remove_file(rules.join(&name))?;
            out.removed.push(name);
        }
    }
    Ok(out)
}

/// The names of a policy directory's rule files, as the loader picks them.
fn rule_names(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') || !name.ends_with(".yaml") {
            continue;
        }
        if std::fs::metadata(entry.path())?.is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{Request, Response, handlers};

    fn ask(daemon: &Daemon, request: Request) -> Response {
        handlers::handle(daemon, request, "alice")
    }

    fn history(daemon: &Daemon) -> Vec<(String, String, String, bool)> {
        let reply: HistoryReply =
            serde_json::from_value(ask(daemon, Request::History).result).unwrap();
        reply
            .versions
            .into_iter()
            .map(|v| (v.digest, v.source, v.user, v.current))
            .collect()
    }

    fn add(daemon: &Daemon, prefix: &str) -> Response {
        ask(
            daemon,
            Request::RulesAdd {
                platform: "c".into(),
                domains: Vec::new(),
                prefixes: vec![prefix.into()],
                action: None,
                enforce: None,
            },
        )
    }

    /// Start, two `rules add`, then a rollback to the start: the files, the policy in force and
    /// the history are the first version's again, and the watcher has nothing to re-apply.
    #[test]
    fn a_rollback_writes_and_applies_the_version() {
        let Some((daemon, dir)) = Daemon::for_test("rollback", &[]) else {
            return;
        };
        let rules = dir.join("rules");
        let first_files = read_files(&rules).unwrap();
        let digest = || daemon.with(|s| Ok(policy_digest(s.policy()))).unwrap();
        let first = digest();
        assert!(add(&daemon, "198.18.3.0/24").ok);
        assert!(add(&daemon, "198.18.4.0/24").ok);
        let third = digest();
        let sources: Vec<String> = history(&daemon).into_iter().map(|v| v.1).collect();
        assert_eq!(sources, ["start", "rules-add", "rules-add"]);
        // Unknown and ambiguous prefixes change nothing.
        let unknown = ask(
            &daemon,
            Request::Rollback {
                to: Some("zz".into()),
            },
        );
        assert!(
            !unknown.ok && unknown.errors[0].contains("no version"),
            "{unknown:?}"
        );
        assert_eq!(digest(), third);
        assert_eq!(history(&daemon).len(), 3);

        let back = ask(
            &daemon,
            Request::Rollback {
                to: Some(first[..6].into()),
            },
        );
        assert!(back.ok, "{:?}", back.errors);
        let reply: RollbackReply = serde_json::from_value(back.result).unwrap();
        assert_eq!(
            (reply.from.as_str(), reply.change.policy_digest.as_str()),
            (third.as_str(), first.as_str())
        );
        assert_eq!(reply.files_removed, ["enforcer-managed.yaml"]);
        assert_eq!(digest(), first);
        assert_eq!(read_files(&rules).unwrap(), first_files);
        let after = history(&daemon);
        assert_eq!(after.len(), 4);
        assert_eq!(
            after[3],
            (first.clone(), "rollback".into(), "alice".into(), true)
        );
        assert_eq!(after[0].1, "start");
        assert_eq!(after[0].2, "daemon");
        // The watcher finds the files it would read already applied.
        assert_eq!(daemon.reload_changed(), Ok(None));
        // Without --to: back to the version before the current, the third.
        assert!(ask(&daemon, Request::Rollback { to: None }).ok);
        assert_eq!(digest(), third);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_directory_becomes_exactly_the_version() {
        let dir = std::env::temp_dir().join(format!("rollback-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), "a new\n").unwrap();
        std::fs::write(dir.join("b.yaml"), "b same\n").unwrap();
        std::fs::write(dir.join("enforcer-managed.yaml"), "m\n").unwrap();
        std::fs::write(dir.join("README"), "not a rule file\n").unwrap();
        let version = Files::from([
            ("a.yaml".to_owned(), "a old\n".to_owned()),
            ("b.yaml".to_owned(), "b same\n".to_owned()),
            ("c.yaml".to_owned(), "c\n".to_owned()),
        ]);
        let written = write_files(&dir, &version).unwrap();
        assert_eq!(written.written, ["a.yaml", "c.yaml"]);
        assert_eq!(written.removed, ["enforcer-managed.yaml"]);
        assert_eq!(read_files(&dir).unwrap(), version);
        assert!(dir.join("README").exists());
        // Nothing hidden is left behind.
        let hidden = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .count();
        assert_eq!(hidden, 0);
        assert!(check_names(&dir, &version).is_ok());
        let hostile = Files::from([("../x.yaml".to_owned(), String::new())]);
        assert!(check_names(&dir, &hostile).is_err());
        // A single-file --rules is rewritten in place; a version of several files is refused.
        let single = dir.join("policy.yaml");
        std::fs::write(&single, "new\n").unwrap();
        let one = Files::from([("policy.yaml".to_owned(), "old\n".to_owned())]);
        assert!(check_names(&single, &one).is_ok());
        assert!(check_names(&single, &version).is_err());
        assert_eq!(write_files(&single, &one).unwrap().written, ["policy.yaml"]);
        assert_eq!(read_files(&single).unwrap(), one);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
