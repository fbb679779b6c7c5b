//! Control-socket requests: any line as a typed request, its rules items parsed as the handlers
//! parse them, and an accepted `rules add` written to a managed file and read back, as the
//! daemon does before installing it: the file must say exactly what was added.
#![no_main]

use std::path::Path;

use enforcer::control::Request;
use enforcer::policy::{self, managed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<Request>(data) else {
        return;
    };
    let (platform, domains, prefixes, action) = match request {
        Request::RulesAdd {
            platform,
            domains,
            prefixes,
            action,
        } => (platform, domains, prefixes, action),
        Request::RulesRemove {
            platform,
            domains,
            prefixes,
        } => (platform, domains, prefixes, None),
        Request::Explain { target } => {
            let _ = target.parse::<std::net::IpAddr>();
            let _ = policy::parse_domain(&target);
            return;
        }
        _ => return,
    };
    let domains: Result<Vec<_>, _> = domains.iter().map(|d| policy::parse_domain(d)).collect();
    let prefixes: Result<Vec<_>, _> = prefixes.iter().map(|p| policy::parse_prefix(p)).collect();
    let action = action.as_deref().map(policy::parse_action).transpose();
    let (Ok(domains), Ok(prefixes), Ok(action)) = (domains, prefixes, action) else {
        return;
    };
    let mut platforms = Vec::new();
    if managed::add(&mut platforms, &platform, action, domains, prefixes).is_err() {
        return;
    }
    let text = managed::render(&platforms);
    let path = Path::new("enforcer-managed.yaml");
    // The loader may refuse the file (a bad platform name, say); what it accepts must be what
    // was added.
    if let Ok(read) = policy::read_managed(path, &text) {
        assert_eq!(managed::from_parsed(read), platforms, "{text}");
    }
});
