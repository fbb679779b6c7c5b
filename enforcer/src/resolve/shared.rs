//! Shared suffixes: names whose addresses serve many unrelated sites at once (CDNs, shared front
//! ends, cloud load balancers). Blocking what such a name resolves to would block everyone behind
//! the same edge, so an answer for a name at or below one of them — or reached through a CNAME
//! into one — is refused.

/// The built-in list. `--shared-suffix` adds to it; nothing removes from it.
pub const BUILTIN_SHARED_SUFFIXES: &[&str] = &[
    // Amazon CloudFront: every customer's distribution (dXXXX.cloudfront.net) is served from the
    // same pool of edge addresses.
    "cloudfront.net",
    // Akamai edge host names: akamaiedge.net / akamai.net / akamaihd.net / akamaized.net are the
    // edge servers themselves, edgekey.net and edgesuite.net the per-customer CNAME targets
    // that lead to them; all are shared by thousands of customers.
    "akamaiedge.net",
    "akamai.net",
    "akamaihd.net",
    "akamaized.net",
    "edgekey.net",
    "edgesuite.net",
    // Akamai Global Traffic Management: DNS load balancing used by many large companies, whose
    // answers point at whatever shared edge is nearest.
    "akadns.net",
    // Azure CDN and Azure Front Door: shared anycast front ends for any Azure customer.
    "azureedge.net",
    "azurefd.net",
    // Azure Traffic Manager: DNS-level balancing to any Azure customer's endpoints.
    "trafficmanager.net",
    // Microsoft's edge network (AFD and Office/Teams/Bing front doors share it).
    "msedge.net",
    // Microsoft's sign-in front end, shared by every Microsoft 365 and Azure AD application:
    // blocking it breaks logins everywhere.
    "microsoftonline.com",
    // Fastly: global.ssl.fastly.net, *.fastlylb.net and friends are shared by every Fastly site.
    "fastly.net",
    "fastlylb.net",
    // Cloudflare's CNAME-setup target: its addresses are Cloudflare's anycast, shared by
    // millions of sites.
    "cdn.cloudflare.net",
    // Edgio (formerly Verizon EdgeCast and Limelight) CDNs.
    "edgecastcdn.net",
    "llnwd.net",
    // Google-hosted custom domains (ghs.googlehosted.com: Blogger, Sites, App Engine) and user
    // content: all on Google's shared front ends.
    "googlehosted.com",
    "googleusercontent.com",
    "appspot.com",
    // Google Front End names (www3.l.google.com, youtube-ui.l.google.com, ...): the same
    // addresses serve Search, Gmail, Maps and everything else Google runs.
    "l.google.com",
    // Google's host names for its shared front-end machines.
    "1e100.net",
    // GitHub Pages: every Pages site shares the same few addresses.
    "github.io",
];

/// The built-in list as owned strings, for merging with `--shared-suffix`.
pub fn builtin_shared_suffixes() -> Vec<String> {
    BUILTIN_SHARED_SUFFIXES
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// Lower-case, without a trailing dot: how names are compared everywhere here.
pub(crate) fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The suffix `name` is equal to or below (at a label boundary), if any. Both sides are expected
/// normalised (see [`normalize`]); `suffixes` may be in any order.
pub fn shared_suffix_of<'a>(name: &str, suffixes: &'a [String]) -> Option<&'a str> {
    suffixes
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .find(|suffix| {
            name == *suffix
                || name
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.ends_with('.'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names_are_normalised_and_unique() {
        let list = builtin_shared_suffixes();
        for s in &list {
            assert_eq!(&normalize(s), s);
        }
        let mut sorted = list.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), list.len());
    }

    #[test]
    fn matches_at_label_boundaries_only() {
        let list = builtin_shared_suffixes();
        assert_eq!(
            shared_suffix_of("d111abc.cloudfront.net", &list),
            Some("cloudfront.net")
        );
        assert_eq!(
            shared_suffix_of("cloudfront.net", &list),
            Some("cloudfront.net")
        );
        assert_eq!(
            shared_suffix_of("youtube-ui.l.google.com", &list),
            Some("l.google.com")
        );
        assert_eq!(shared_suffix_of("notcloudfront.net", &list), None);
        assert_eq!(shared_suffix_of("google.com", &list), None);
        assert_eq!(shared_suffix_of("zoom.us", &list), None);
        assert_eq!(shared_suffix_of("x.cloudflare.net", &list), None);
        assert_eq!(
            shared_suffix_of("example.com.cdn.cloudflare.net", &list),
            Some("cdn.cloudflare.net")
        );
    }

    #[test]
    fn normalises() {
        assert_eq!(normalize(" WWW.Example.COM. "), "www.example.com");
    }
}
