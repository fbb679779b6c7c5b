//! The external programs the tests, the labs, the demo and the benches run, and the Debian
//! package of each. `cargo xtask setup` installs every one of these packages (a unit test below
//! checks its list); a test that finds one missing fails and names the package, it never skips.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// A program and the Debian package that ships it.
#[derive(Clone, Copy, Debug)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

pub const IP: Tool = Tool {
    program: "ip",
    package: "iproute2",
};
pub const PING: Tool = Tool {
    program: "ping",
    package: "iputils-ping",
};
pub const DNSMASQ: Tool = Tool {
    program: "dnsmasq",
    package: "dnsmasq-base",
};
pub const ETHTOOL: Tool = Tool {
    program: "ethtool",
    package: "ethtool",
};
pub const NFT: Tool = Tool {
    program: "nft",
    package: "nftables",
};
pub const MOUNT: Tool = Tool {
    program: "mount",
    package: "mount",
};
pub const UMOUNT: Tool = Tool {
    program: "umount",
    package: "mount",
};
pub const SETPRIV: Tool = Tool {
    program: "setpriv",
    package: "util-linux",
};
pub const PRLIMIT: Tool = Tool {
    program: "prlimit",
    package: "util-linux",
};
pub const PROMTOOL: Tool = Tool {
    program: "promtool",
    package: "prometheus",
};
pub const PROMETHEUS: Tool = Tool {
    program: "prometheus",
    package: "prometheus",
};
pub const SYSTEMD_ANALYZE: Tool = Tool {
    program: "systemd-analyze",
    package: "systemd",
};

pub const CAT: Tool = Tool {
    program: "cat",
    package: "coreutils",
};
pub const TRAFGEN: Tool = Tool {
    program: "trafgen",
    package: "netsniff-ng",
};
pub const IPSET: Tool = Tool {
    program: "ipset",
    package: "ipset",
};
pub const IPTABLES_LEGACY: Tool = Tool {
    program: "iptables-legacy",
    package: "iptables",
};
pub const IPTABLES_NFT: Tool = Tool {
    program: "iptables-nft",
    package: "iptables",
};
pub const LINTIAN: Tool = Tool {
    program: "lintian",
    package: "lintian",
};
pub const MAN: Tool = Tool {
    program: "man",
    package: "man-db",
};
pub const CHROMIUM: Tool = Tool {
    program: "chromium",
    package: "chromium",
};
pub const TMUX: Tool = Tool {
    program: "tmux",
    package: "tmux",
};

/// Every tool above.
pub const ALL: &[Tool] = &[
    IP,
    PING,
    DNSMASQ,
    ETHTOOL,
    NFT,
    MOUNT,
    UMOUNT,
    SETPRIV,
    PRLIMIT,
    PROMTOOL,
    PROMETHEUS,
    SYSTEMD_ANALYZE,
    CAT,
    TRAFGEN,
    IPSET,
    IPTABLES_LEGACY,
    IPTABLES_NFT,
    CHROMIUM,
    TMUX,
    LINTIAN,
    MAN,
];

/// Where `tool` is: the first match on PATH, then /usr/sbin and /sbin (root's programs, often
/// off a user's PATH); an error naming the package when it is nowhere.
pub fn path(tool: Tool) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs =
        std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]);
    for dir in dirs {
        let candidate = dir.join(tool.program);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    bail!(
        "`{}` is not installed: install the Debian package {} (`cargo xtask setup` does)",
        tool.program,
        tool.package
    )
}

/// Like [`path`], for tests: panics with the message that names the package.
pub fn require(tool: Tool) -> PathBuf {
    match path(tool) {
        Ok(path) => path,
        Err(error) => panic!("{error}"),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The package names of `const PACKAGES` in xtask/src/setup.rs (comments skipped).
    fn setup_packages() -> Vec<String> {
        let setup = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../xtask/src/setup.rs"),
        )
        .unwrap();
        let list = setup
            .split_once("const PACKAGES: &[&str] = &[")
            .and_then(|(_, rest)| rest.split_once("];"))
            .map(|(list, _)| list)
            .expect("xtask/src/setup.rs has a PACKAGES list");
        list.lines()
            .map(str::trim)
            .filter_map(|line| line.strip_prefix('"')?.strip_suffix("\","))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn setup_installs_the_package_of_every_tool() {
        let packages = setup_packages();
        assert!(packages.contains(&"iproute2".to_owned()), "{packages:?}");
        for tool in ALL {
            assert!(
                packages.iter().any(|p| p == tool.package),
                "xtask/src/setup.rs does not install {} (for `{}`)",
                tool.package,
                tool.program
            );
        }
    }

    #[test]
    fn a_missing_program_names_its_package() {
        let missing = Tool {
            program: "enforcer-no-such-program",
            package: "no-such-package",
        };
        let error = path(missing).unwrap_err().to_string();
        assert!(error.contains("no-such-package"), "{error}");
    }
}
