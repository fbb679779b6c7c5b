//! `enforcer generate-assets DIR` (hidden): the man pages and shell completions, generated from
//! this very CLI definition so that they never drift from it. `cargo xtask package` runs it on
//! the binary it packages.
//!
//! Layout: `DIR/man/enforcer.1`, `DIR/man/enforcer-SUBCOMMAND[-SUB].1` (one per visible
//! subcommand), `DIR/completions/{enforcer.bash, _enforcer, enforcer.fish}`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory as _;
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, clap::Args)]
pub struct AssetsArgs {
    /// Directory to write `man/` and `completions/` into (created when missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum AssetsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> AssetsError + '_ {
    move |source| AssetsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn execute(args: &AssetsArgs) -> Result<ExitCode, AssetsError> {
    let man = args.dir.join("man");
    std::fs::create_dir_all(&man).map_err(io_error(&man))?;
    // One page per visible subcommand (hidden ones, this one included, are skipped).
    clap_mangen::generate_to(Cli::command(), &man).map_err(io_error(&man))?;

    let completions = args.dir.join("completions");
    std::fs::create_dir_all(&completions).map_err(io_error(&completions))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut command = Cli::command();
        clap_complete::generate_to(shell, &mut command, "enforcer", &completions)
            .map_err(io_error(&completions))?;
    }
    println!("wrote {} and {}", man.display(), completions.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every visible command, as its words after `enforcer` (the root is empty), with its
    /// rendered `--help`.
    fn helps(command: &mut clap::Command, words: Vec<String>, out: &mut Vec<(String, String)>) {
        out.push((words.join(" "), command.render_long_help().to_string()));
        for sub in command.get_subcommands_mut() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            let mut path = words.clone();
            path.push(sub.get_name().to_owned());
            helps(sub, path, out);
        }
    }

    #[test]
    fn every_command_help_ends_with_an_example_of_itself() {
        let mut command = Cli::command();
        command.build();
        let mut all = Vec::new();
        helps(&mut command, Vec::new(), &mut all);
        // Every subcommand of the interface, rules' and feeds' included.
        let names: Vec<&str> = all.iter().map(|(words, _)| words.as_str()).collect();
        for expected in [
            "",
            "run",
            "status",
            "rules add",
            "rules remove",
            "feeds update",
        ] {
            assert!(
                names.contains(&expected),
                "{expected:?} missing from {names:?}"
            );
        }
        assert!(names.len() >= 19, "{names:?}");
        for (words, help) in &all {
            let example = format!("Example: enforcer {words}");
            assert!(
                help.lines()
                    .any(|line| line.trim_start().starts_with(example.trim_end())),
                "`enforcer {words} --help` gives no example starting with `{example}`:\n{help}"
            );
        }
    }

    #[test]
    fn assets_hold_a_page_per_subcommand_and_three_completions() {
        let dir = std::env::temp_dir().join(format!("enforcer-assets-{}", std::process::id()));
        let args = AssetsArgs { dir: dir.clone() };
        execute(&args).unwrap();
        let page = std::fs::read_to_string(dir.join("man/enforcer-rules-add.1")).unwrap();
        assert!(page.contains("enforcer rules add"), "{page}");
        assert!(dir.join("man/enforcer.1").is_file());
        assert!(!dir.join("man/enforcer-generate-assets.1").exists());
        for name in ["enforcer.bash", "_enforcer", "enforcer.fish"] {
            let text = std::fs::read_to_string(dir.join("completions").join(name)).unwrap();
            assert!(text.contains("explain"), "{name}: {text}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
