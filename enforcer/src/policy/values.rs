//! The policy's vocabulary: parsing of domains, prefixes, actions, protocols and ports, for
//! every place they are written (rule files, `rules add`, the control socket, `--never-block`
//! on the command line and in the config file). Each returns the message of the error; the
//! caller adds the place (`PATH:LINE:COLUMN` in a file, the flag on the command line).

use std::net::IpAddr;

use ipnet::IpNet;

use enforcer_common::MAX_PATTERN_LABELS;

use super::model::{Action, DataDate, DomainPattern, Enforce, FeedKind, PortRange, Protocol};

/// A platform name: lower-case letters, digits and `-`, starting with a letter or digit. The
/// managed file writes it unquoted, so nothing else may pass (`zoom #x` would be read back as
/// `zoom`).
pub fn parse_platform_name(text: &str) -> Result<&str, String> {
    let mut chars = text.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(text)
    } else {
        Err(format!(
            "invalid platform name `{text}`: use lower-case letters, digits and `-`, starting \
             with a letter or digit"
        ))
    }
}

/// `zoom.us` → `Exact`, `*.zoom.us` → `Wildcard("zoom.us")`; case-folded, trailing dot dropped.
pub fn parse_domain(text: &str) -> Result<DomainPattern, String> {
    let lower = text.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    let invalid = |reason: &str| format!("invalid domain `{text}`: {reason}");
    if name.parse::<IpAddr>().is_ok() {
        return Err(invalid("this is an IP address; list it under `prefixes`"));
    }
    if name == "*" {
        return Err(invalid(
            "a wildcard needs a domain after it, like `*.example.com`",
        ));
    }
    if let Some(rest) = name.strip_prefix("*.") {
        if !rest.contains('.') && !rest.contains('*') && !rest.is_empty() {
            return Err(invalid(
                "a wildcard must cover a domain of at least two labels, like `*.example.com`, \
                 not a whole top-level domain",
            ));
        }
        return check_name(rest)
            .map(|()| DomainPattern::Wildcard(rest.to_owned()))
            .map_err(|reason| invalid(&reason));
    }
    check_name(name)
        .map(|()| DomainPattern::Exact(name.to_owned()))
        .map_err(|reason| invalid(&reason))
}

/// A host name of at least two labels of [a-z0-9-] (already lower-cased).
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".to_owned());
    }
    if name.contains('*') {
        return Err("`*` is only allowed as the whole first label, as in `*.example.com`".into());
    }
    if name.len() > 253 {
        return Err("a domain name is at most 253 characters long".to_owned());
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err("empty label (two dots in a row, or a leading dot)".to_owned());
        }
        if label.len() > 63 {
            return Err(format!("label `{label}` is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(if c.is_ascii() {
                format!("character `{c}` is not allowed (only letters, digits and `-`)")
            } else {
                format!(
                    "character `{c}` is not allowed; write internationalised names in their `xn--` form"
                )
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label `{label}` starts or ends with `-`"));
        }
    }
    if labels.len() < 2 {
        return Err("a domain needs at least two labels, like `example.com`".to_owned());
    }
    // The datapath looks a query name up by its suffixes of at most this many labels.
    if labels.len() > MAX_PATTERN_LABELS {
        return Err(format!(
            "{} labels; a domain pattern has at most {MAX_PATTERN_LABELS}",
            labels.len()
        ));
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("the top-level label is numeric".to_owned());
    }
    Ok(())
}

/// A CIDR, or a bare address taken as a host route (/32 or /128). Host bits are an error, since
/// `10.0.0.1/8` most likely means a typo rather than all of 10.0.0.0/8.
pub fn parse_prefix(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(format!(
                "prefix `{text}` has host bits set; did you mean `{}`?",
                net.trunc()
            ));
        }
        return Ok(net);
    }
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    Err(format!(
        "invalid prefix `{text}`: expected an address or a CIDR like 192.0.2.0/24 or 2001:db8::/32"
    ))
}

/// A calendar date written `YYYY-MM-DD` (`data-date`).
pub fn parse_data_date(text: &str) -> Result<DataDate, String> {
    let invalid = || format!("invalid date `{text}`: expected YYYY-MM-DD, like 2026-11-24");
    let parts: Vec<&str> = text.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(invalid());
    };
    if y.len() != 4
        || m.len() != 2
        || d.len() != 2
        || !is_number(y)
        || !is_number(m)
        || !is_number(d)
    {
        return Err(invalid());
    }
    let (year, month, day) = (
        y.parse::<u16>().map_err(|_| invalid())?,
        m.parse::<u8>().map_err(|_| invalid())?,
        d.parse::<u8>().map_err(|_| invalid())?,
    );
    DataDate::new(year, month, day).ok_or_else(|| format!("invalid date `{text}`: no such day"))
}

/// A feed kind keyword.
pub fn parse_feed_kind(text: &str) -> Result<FeedKind, String> {
    FeedKind::ALL
        .into_iter()
        .find(|k| k.as_str() == text)
        .ok_or_else(|| {
            let all: Vec<&str> = FeedKind::ALL.iter().map(|k| k.as_str()).collect();
            format!(
                "unknown feed kind `{text}` (expected one of: {})",
                all.join(", ")
            )
        })
}

/// A port (`3478`) or an inclusive range (`8801-8810`).
pub fn parse_ports(text: &str) -> Result<PortRange, String> {
    match text.split_once('-') {
        None => parse_port(text).map(|p| PortRange { first: p, last: p }),
        Some((first, last)) => {
            let malformed =
                || format!("invalid port range `{text}`: expected FIRST-LAST, like 8801-8810");
            if !is_number(first) || !is_number(last) {
                return Err(malformed());
            }
            let (first, last) = (parse_port(first)?, parse_port(last)?);
            if first > last {
                return Err(format!(
                    "port range `{text}` is reversed: {first} is greater than {last}"
                ));
            }
            Ok(PortRange { first, last })
        }
    }
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn parse_port(text: &str) -> Result<u16, String> {
    if !is_number(text) {
        return Err(format!(
            "invalid port `{text}`: expected a number from 1 to 65535 or a range like 8801-8810"
        ));
    }
    // Long digit strings overflow u32 but are simply out of range.
    match text.parse::<u32>().ok().and_then(|p| u16::try_from(p).ok()) {
        Some(p) if p > 0 => Ok(p),
        _ => Err(format!("port `{text}` is out of range 1-65535")),
    }
}

/// `drop`, `monitor` or `allow`.
pub fn parse_action(text: &str) -> Result<Action, String> {
    // The keywords are the datapath's label names (enforcer_common::ACTION_NAMES).
    Action::ALL
        .into_iter()
        .find(|a| a.as_str() == text)
        .ok_or_else(|| format!("invalid action `{text}`: expected drop, monitor or allow"))
}

/// `name`, `address` or `both`.
pub fn parse_enforce(text: &str) -> Result<Enforce, String> {
    Enforce::ALL
        .into_iter()
        .find(|e| e.as_str() == text)
        .ok_or_else(|| format!("invalid enforce `{text}`: expected name, address or both"))
}

/// `tcp`, `udp` or `any`.
pub fn parse_protocol(text: &str) -> Result<Protocol, String> {
    match text {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "any" => Ok(Protocol::Any),
        _ => Err(format!(
            "invalid protocol `{text}`: expected tcp, udp or any"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(s: &str) -> DomainPattern {
        DomainPattern::Exact(s.into())
    }

    #[test]
    fn domains_are_normalised() {
        assert_eq!(parse_domain("Zoom.US."), Ok(exact("zoom.us")));
        assert_eq!(
            parse_domain("a-b.x9.example.com"),
            Ok(exact("a-b.x9.example.com"))
        );
        assert_eq!(
            parse_domain("*.Zoom.us"),
            Ok(DomainPattern::Wildcard("zoom.us".into()))
        );
        assert_eq!(
            parse_domain("xn--bcher-kva.example"),
            Ok(exact("xn--bcher-kva.example"))
        );
    }

    #[test]
    fn bad_domains_are_refused() {
        for (text, needle) in [
            ("*", "needs a domain after it"),
            ("*.com", "at least two labels"),
            ("*.", "needs a domain after it"),
            ("a.*.b", "only allowed as the whole first label"),
            ("*.*.b.com", "only allowed as the whole first label"),
            ("**.b.com", "only allowed as the whole first label"),
            ("192.0.2.1", "IP address"),
            ("2001:db8::1", "IP address"),
            ("1.2.3", "numeric"),
            ("localhost", "at least two labels"),
            ("", "empty"),
            ("a..b", "empty label"),
            (".a.b", "empty label"),
            ("-a.com", "starts or ends with `-`"),
            ("a-.com", "starts or ends with `-`"),
            ("a_b.com", "character `_`"),
            ("bücher.de", "xn--"),
        ] {
            let err = parse_domain(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(
                err.starts_with(&format!("invalid domain `{text}`")),
                "{err}"
            );
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(
            parse_domain(&long_label)
                .unwrap_err()
                .contains("longer than 63")
        );
        assert!(parse_domain(&format!("{}.com", "a".repeat(63))).is_ok());
        // The datapath walks at most MAX_PATTERN_LABELS labels of a query name.
        let labels = |n: usize| vec!["a"; n - 1].join(".") + ".com";
        assert!(parse_domain(&labels(MAX_PATTERN_LABELS)).is_ok());
        assert!(
            parse_domain(&format!("*.{}", labels(MAX_PATTERN_LABELS))).is_ok(),
            "the `*` label is not part of the looked-up suffix"
        );
        assert_eq!(
            parse_domain(&labels(MAX_PATTERN_LABELS + 1)).unwrap_err(),
            format!(
                "invalid domain `{}`: 17 labels; a domain pattern has at most 16",
                labels(MAX_PATTERN_LABELS + 1)
            )
        );
        let long_name = vec!["a".repeat(50); 5].join(".") + ".com";
        assert!(parse_domain(&long_name).unwrap_err().contains("253"));
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            parse_prefix("198.51.100.0/24"),
            Ok("198.51.100.0/24".parse().unwrap())
        );
        assert_eq!(
            parse_prefix("2001:db8:100::/48"),
            Ok("2001:db8:100::/48".parse().unwrap())
        );
        assert_eq!(
            parse_prefix("198.51.100.7"),
            Ok("198.51.100.7/32".parse().unwrap())
        );
        assert_eq!(
            parse_prefix("2001:db8::7"),
            Ok("2001:db8::7/128".parse().unwrap())
        );
        assert_eq!(
            parse_prefix("10.0.0.1/8").unwrap_err(),
            "prefix `10.0.0.1/8` has host bits set; did you mean `10.0.0.0/8`?"
        );
        assert!(
            parse_prefix("2001:db8::1/32")
                .unwrap_err()
                .contains("`2001:db8::/32`")
        );
        for bad in [
            "1.2.3.4/33",
            "1.2.3/24",
            "zoom.us",
            "",
            "::/129",
            "1.2.3.4/",
        ] {
            assert!(
                parse_prefix(bad).unwrap_err().starts_with("invalid prefix"),
                "{bad}"
            );
        }
    }

    #[test]
    fn ports() {
        assert_eq!(
            parse_ports("3478"),
            Ok(PortRange {
                first: 3478,
                last: 3478
            })
        );
        assert_eq!(
            parse_ports("8801-8810"),
            Ok(PortRange {
                first: 8801,
                last: 8810
            })
        );
        assert_eq!(
            parse_ports("1-65535"),
            Ok(PortRange {
                first: 1,
                last: 65535
            })
        );
        assert_eq!(
            parse_ports("0").unwrap_err(),
            "port `0` is out of range 1-65535"
        );
        assert_eq!(
            parse_ports("65536").unwrap_err(),
            "port `65536` is out of range 1-65535"
        );
        assert!(
            parse_ports("99999999999999")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(parse_ports("0-5").unwrap_err().contains("out of range"));
        assert_eq!(
            parse_ports("10-5").unwrap_err(),
            "port range `10-5` is reversed: 10 is greater than 5"
        );
        for bad in ["5-", "-5", "1-2-3", "a-b", " 5-6"] {
            assert!(
                parse_ports(bad)
                    .unwrap_err()
                    .starts_with("invalid port range"),
                "{bad}"
            );
        }
        for bad in ["https", "", "+80", "80.0"] {
            assert!(
                parse_ports(bad).unwrap_err().starts_with("invalid port `"),
                "{bad}"
            );
        }
    }

    #[test]
    fn actions_and_protocols() {
        for action in [Action::Drop, Action::Monitor, Action::Allow] {
            assert_eq!(parse_action(action.as_str()), Ok(action));
        }
        for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Any] {
            assert_eq!(parse_protocol(protocol.as_str()), Ok(protocol));
        }
        assert_eq!(
            parse_action("Drop").unwrap_err(),
            "invalid action `Drop`: expected drop, monitor or allow"
        );
        for enforce in Enforce::ALL {
            assert_eq!(parse_enforce(enforce.as_str()), Ok(enforce));
        }
        assert_eq!(
            parse_enforce("Name").unwrap_err(),
            "invalid enforce `Name`: expected name, address or both"
        );
        assert_eq!(
            parse_protocol("icmp").unwrap_err(),
            "invalid protocol `icmp`: expected tcp, udp or any"
        );
    }
}
