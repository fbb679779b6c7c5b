//! `rules add` and `rules remove`: the managed file of the policy directory is read, edited,
//! rendered and the whole resulting policy validated without holding the state, as a reload
//! does; the state is locked only to make sure the files did not change meanwhile, write the
//! managed file and switch.

use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::{Daemon, POISONED, ReloadError, watch};
use crate::control::protocol::PolicyChange;
use crate::history::Source;
use crate::policy::managed::{self, Addition, ManagedError, ManagedPlatform};
use crate::policy::{
    self, Action, DomainPattern, LoadOptions, MANAGED_FILE, Policy, PolicyError, RuleTexts,
};

/// An edit of the managed file, applied to its platforms as read.
type Edit<'a> = dyn Fn(&mut Vec<ManagedPlatform>) -> Result<(), ManagedError> + 'a;

/// A managed file edited and the whole policy it makes, validated but not yet written.
pub struct Edited {
    path: PathBuf,
    text: String,
    policy: Policy,
    /// Every policy file's text as it will be, for the history.
    texts: RuleTexts,
}

impl Edited {
    /// Writes the managed file (atomically: the loader and the watcher never see half of it)
    /// and hands back the policy to install with its files' texts.
    pub fn write(self) -> Result<(Policy, RuleTexts), ReloadError> {
        crate::fsutil::write_atomically(&self.path, self.text.as_bytes()).map_err(|source| {
            ReloadError::Write {
                path: self.path,
                source,
            }
        })?;
        Ok((self.policy, self.texts))
    }
}

impl Daemon {
    /// `rules add`: adds domains and prefixes to a platform of the managed file (created when
    /// new; `action` must match an existing platform's), then installs the whole policy.
    pub fn rules_add(
        &self,
        platform: &str,
        action: Option<Action>,
        items: Addition,
        user: &str,
    ) -> Result<PolicyChange, Vec<String>> {
        let why = format!(
            "rules add {platform}: {} domains (enforce {}), {} prefixes",
            items.domains.len(),
            items.enforce.unwrap_or_default(),
            items.prefixes.len()
        );
        self.edit_rules(&why, Source::RulesAdd, user, &|platforms| {
            managed::add(platforms, platform, action, items.clone())
        })
    }

    /// `rules remove`: removes domains and prefixes from a platform of the managed file (the
    /// whole platform when none are named), then installs the whole policy.
    pub fn rules_remove(
        &self,
        platform: &str,
        domains: &[DomainPattern],
        prefixes: &[IpNet],
        user: &str,
    ) -> Result<PolicyChange, Vec<String>> {
        let why = format!(
            "rules remove {platform}: {} domains, {} prefixes",
            domains.len(),
            prefixes.len()
        );
        self.edit_rules(&why, Source::RulesRemove, user, &|platforms| {
            managed::remove(platforms, platform, domains, prefixes)
        })
    }

    /// Edits and validates without the state; under it, installs that work only if the policy
    /// files are still those it read (else it is redone there, so nothing stale is installed
    /// and no change of the files is missed). No reload runs meanwhile.
    fn edit_rules(
        &self,
        why: &str,
        source: Source,
        user: &str,
        edit: &Edit<'_>,
    ) -> Result<PolicyChange, Vec<String>> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .map_err(|_| vec![POISONED.to_owned()])?;
        let (dir, options) = self.with(|s| Ok(s.reload_source()))?;
        let seen = watch::fingerprint(&dir);
        let edited = edit_managed(&dir, &options, edit);
        let result = self.with(|s| {
            let edited = if watch::fingerprint(&dir) == seen {
                edited
            } else {
                edit_managed(&dir, &options, edit)
            };
            s.install_edited(edited, why, source, user)
                .map_err(|e| e.lines())
        });
        self.record_pending();
        result
    }
}

/// Reads the managed file of the policy directory `dir`, applies `edit` and checks the whole
/// policy that results.
fn edit_managed(dir: &Path, options: &LoadOptions, edit: &Edit<'_>) -> Result<Edited, ReloadError> {
    if !dir.is_dir() {
        return Err(ReloadError::NotADirectory(dir.to_path_buf()));
    }
    let path = dir.join(MANAGED_FILE);
    let mut platforms = match std::fs::read_to_string(&path) {
        Ok(text) => managed::from_parsed(policy::read_managed(&path, &text)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(PolicyError::Io { path, source }.into()),
    };
    edit(&mut platforms)?;
    let text = managed::render(&platforms);
    let (policy, texts) = policy::load_policy_with_managed(dir, Some(&text), options)?;
    Ok(Edited {
        path,
        text,
        policy,
        texts,
    })
}

#[cfg(test)]
mod tests {
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::control::{Request, Response, handlers};

    /// A daemon enforcing platform `a`, and `b` in `b.yaml`, a file padded with `padding`
    /// comment lines so that validating it takes a while.
    fn daemon(name: &str, padding: usize) -> Option<(Daemon, PathBuf)> {
        let mut text = "# padding\n".repeat(padding);
        text.push_str("platform: b\nmatch:\n  - prefixes: [198.18.2.0/24]\n");
        Daemon::for_test(name, &[("b.yaml", &text)])
    }

    /// `rules add PLATFORM --prefix PREFIX` as the control socket runs it, on its own thread;
    /// the thread returns the response and how long it took.
    fn add_in_background(
        daemon: &Daemon,
        platform: &str,
        prefix: &str,
    ) -> JoinHandle<(Response, Duration)> {
        let daemon = daemon.clone();
        let request = Request::RulesAdd {
            platform: platform.into(),
            domains: Vec::new(),
            prefixes: vec![prefix.into()],
            action: None,
            enforce: None,
        };
        std::thread::spawn(move || {
            let started = Instant::now();
            let response = handlers::handle(&daemon, request, "test");
            (response, started.elapsed())
        })
    }

    /// While `rules add` validates a policy that takes long to check (a 20 MB file, mostly
    /// comments), `status` is still answered at once: the state is not held for the work.
    #[test]
    fn a_slow_rules_add_does_not_hold_the_state() {
        let Some((daemon, dir)) = daemon("slow-rules-add", 2_000_000) else {
            return;
        };
        let adding = add_in_background(&daemon, "c", "198.18.3.0/24");
        let mut longest = Duration::ZERO;
        let mut answered = 0;
        while !adding.is_finished() {
            let started = Instant::now();
            let status = handlers::handle(&daemon, Request::Status, "test");
            assert!(status.ok, "{:?}", status.errors);
            answered += 1;
            longest = longest.max(started.elapsed());
            std::thread::sleep(Duration::from_millis(5));
        }
        let (response, took) = adding.join().unwrap();
        assert!(response.ok, "{:?}", response.errors);
        assert_eq!(daemon.platform_names(), ["a", "b", "c"]);
        eprintln!("rules add took {took:?}; {answered} status answers, the slowest in {longest:?}");
        assert!(
            took > Duration::from_secs(1),
            "the add was too quick to tell: {took:?}"
        );
        assert!(
            longest < Duration::from_millis(500),
            "status waited {longest:?} during a {took:?} rules add"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A rule file that changes while `rules add` validates is not lost: the add is checked
    /// again with it, and the policy installed has both the file's change and the addition.
    #[test]
    fn a_rule_file_changed_during_rules_add_is_applied_with_it() {
        let Some((daemon, dir)) = daemon("changed-rules-add", 2_000_000) else {
            return;
        };
        let adding = add_in_background(&daemon, "c", "198.18.3.0/24");
        // The files are read at once; validating the large one takes seconds.
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(
            dir.join("rules/a.yaml"),
            "platform: a\nmatch:\n  - prefixes: [198.18.1.0/24, 198.18.9.0/24]\n",
        )
        .unwrap();
        let (response, took) = adding.join().unwrap();
        assert!(response.ok, "{:?}", response.errors);
        assert!(took > Duration::from_secs(1), "too quick to tell: {took:?}");
        assert_eq!(daemon.platform_names(), ["a", "b", "c"]);
        let a = daemon
            .with(|s| Ok(s.policy().platforms[0].entries[0].prefixes.len()))
            .unwrap();
        assert_eq!(a, 2, "the change to a.yaml was lost");
        // Nothing is left for the watcher: the files seen are the files installed.
        let seen = daemon.with(|s| Ok(s.files_seen().clone())).unwrap();
        assert_eq!(seen, watch::fingerprint(&dir.join("rules")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
