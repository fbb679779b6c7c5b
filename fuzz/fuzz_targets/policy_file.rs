//! Policy files: any text through the loader's validation, and what it accepts through the
//! compiler and the reference matcher, as `check` and the daemon do.
#![no_main]

use std::path::Path;

use enforcer::policy::{LoadOptions, parse_policy_str};
use enforcer::reference::Matcher;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = parse_policy_str(Path::new("fuzz.yaml"), text, &LoadOptions::default()) else {
        return;
    };
    let _ = enforcer::compile::compile(&policy);
    let matcher = Matcher::new(&policy);
    for ip in ["198.51.100.7", "2001:db8::1", "0.0.0.0", "::"] {
        if let Ok(ip) = ip.parse() {
            let _ = matcher.matches_for_ip(ip);
        }
    }
});
