//! Control-socket requests: any line as a typed request, its rules items parsed as the handlers
//! parse them, and an accepted `rules add` or `rules remove` written to a managed file and read
//! back, as the daemon does before installing it: the file must say exactly what the edit made.
#![no_main]

use std::path::Path;

use enforcer::control::Request;
use enforcer::policy::{self, managed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<Request>(data) else {
        return;
    };
    let (platform, domains, prefixes, action, enforce, adding) = match request {
        Request::RulesAdd {
            platform,
            domains,
            prefixes,
            action,
            enforce,
        } => (platform, domains, prefixes, action, enforce, true),
        Request::RulesRemove {
            platform,
            domains,
            prefixes,
        } => (platform, domains, prefixes, None, None, false),
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
    let enforce = enforce.as_deref().map(policy::parse_enforce).transpose();
    let (Ok(domains), Ok(prefixes), Ok(action), Ok(enforce)) = (domains, prefixes, action, enforce)
    else {
        return;
    };
    let mut platforms = Vec::new();
    if adding {
        let items = managed::Addition {
            domains,
            prefixes,
            enforce,
        };
        if managed::add(&mut platforms, &platform, action, items).is_err() {
            return;
        }
    } else {
        // A managed file that holds the items under `zoom`, then the removal as asked.
        let items = managed::Addition {
            domains: domains.clone(),
            prefixes: prefixes.clone(),
            enforce: None,
        };
        let seeded = managed::add(&mut platforms, "zoom", None, items);
        if seeded.is_err()
            || managed::remove(&mut platforms, &platform, &domains, &prefixes).is_err()
        {
            return;
        }
    }
    let text = managed::render(&platforms);
    let path = Path::new("enforcer-managed.yaml");
    // What was written must read back as exactly what the edit made.
    match policy::read_managed(path, &text) {
        Ok(read) => assert_eq!(managed::from_parsed(read), platforms, "{text}"),
        Err(error) => panic!("the managed file written cannot be read: {error}\n{text}"),
    }
});
