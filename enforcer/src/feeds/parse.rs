//! The feed formats, each turned into the prefixes it publishes (exactly as written: never
//! widened, merged or truncated; identical repeats kept once) and the date of the data when the
//! format carries one.

use ipnet::IpNet;
use serde::Deserialize;

use crate::policy::{self, DataDate, FeedKind, FeedSelect};

use super::FeedError;

/// What a feed publishes for one platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedData {
    pub prefixes: Vec<IpNet>,
    /// The feed's own date (ip-ranges.json's `createDate`), when the format has one.
    pub date: Option<DataDate>,
}

fn format(why: impl Into<String>) -> FeedError {
    FeedError::Format(why.into())
}

/// Parses `body` as a feed of `kind`, keeping what `select` names.
pub fn parse(kind: FeedKind, select: &FeedSelect, body: &[u8]) -> Result<FeedData, FeedError> {
    let data = match kind {
        FeedKind::ZoomTxt | FeedKind::CidrList => lines(kind, body)?,
        FeedKind::MicrosoftEndpoints => microsoft(select, body)?,
        FeedKind::AwsIpRanges => aws(select, body)?,
    };
    if data.prefixes.is_empty() {
        return Err(format("the feed selected no prefixes"));
    }
    Ok(data)
}

/// One prefix, as the policy reads them (host bits are refused, never cleared: clearing would
/// widen what the vendor wrote).
fn prefix(text: &str, at: &str) -> Result<IpNet, FeedError> {
    policy::parse_prefix(text.trim()).map_err(|why| format(format!("{at}: {why}")))
}

fn push_unique(prefixes: &mut Vec<IpNet>, net: IpNet) {
    if !prefixes.contains(&net) {
        prefixes.push(net);
    }
}

/// zoom-txt (Zoom's ZoomMeetings.txt and friends: one CIDR a line) and cidr-list (the same,
/// with `#` comments allowed). Blank lines are skipped; anything else that is not a prefix
/// refuses the whole feed.
fn lines(kind: FeedKind, body: &[u8]) -> Result<FeedData, FeedError> {
    let text = std::str::from_utf8(body).map_err(|_| format("the feed is not UTF-8 text"))?;
    let mut prefixes = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = match kind {
            FeedKind::CidrList => line.split('#').next().unwrap_or_default(),
            _ => line,
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        push_unique(&mut prefixes, prefix(line, &format!("line {}", index + 1))?);
    }
    Ok(FeedData {
        prefixes,
        date: None,
    })
}

/// One endpoint set of the Microsoft 365 endpoints web service.
#[derive(Deserialize)]
struct EndpointSet {
    id: u32,
    #[serde(rename = "serviceArea")]
    service_area: String,
    #[serde(default)]
    ips: Vec<String>,
}

/// microsoft-endpoints: the JSON list of endpoint sets; the sets whose `serviceArea` and `id`
/// match `select` (both, when both are given). The date comes from the version endpoint.
fn microsoft(select: &FeedSelect, body: &[u8]) -> Result<FeedData, FeedError> {
    let sets: Vec<EndpointSet> = serde_json::from_slice(body).map_err(|e| {
        format(format!(
            "not the JSON of the Microsoft 365 endpoints web service: {e}"
        ))
    })?;
    let mut prefixes = Vec::new();
    let mut matched = 0;
    for set in &sets {
        let area = select
            .service_area
            .as_ref()
            .is_none_or(|a| a.eq_ignore_ascii_case(&set.service_area));
        let id = select.ids.is_empty() || select.ids.contains(&set.id);
        if !(area && id) {
            continue;
        }
        matched += 1;
        for ip in &set.ips {
            push_unique(
                &mut prefixes,
                prefix(ip, &format!("endpoint set {}", set.id))?,
            );
        }
    }
    // An id the service no longer publishes would silently shrink the list.
    for id in &select.ids {
        if !sets.iter().any(|s| s.id == *id) {
            return Err(format(format!(
                "endpoint set {id} is not in the feed (renumbered or retired?)"
            )));
        }
    }
    if matched == 0 {
        return Err(format("no endpoint set matches the feed's `select`"));
    }
    Ok(FeedData {
        prefixes,
        date: None,
    })
}

#[derive(Deserialize)]
struct MicrosoftVersion {
    latest: String,
}

/// The version endpoint's answer (`{"instance": "Worldwide", "latest": "2026110100"}`, or a
/// list of those): the version and its date (the version is YYYYMMDDNN).
pub fn microsoft_version(body: &[u8]) -> Result<(String, DataDate), FeedError> {
    let bad = |why: String| format(format!("the version endpoint's answer: {why}"));
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let one = match value {
        serde_json::Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        other => other,
    };
    let version: MicrosoftVersion = serde_json::from_value(one).map_err(|e| bad(e.to_string()))?;
    let digits = &version.latest;
    let date = (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| {
            let year = digits.get(0..4)?.parse().ok()?;
            let month = digits.get(4..6)?.parse().ok()?;
            let day = digits.get(6..8)?.parse().ok()?;
            DataDate::new(year, month, day)
        })
        .flatten()
        .ok_or_else(|| bad(format!("`latest` is `{digits}`, expected YYYYMMDDNN")))?;
    Ok((version.latest, date))
}

#[derive(Deserialize)]
struct AwsRanges {
    #[serde(rename = "createDate")]
    create_date: String,
    prefixes: Vec<AwsV4>,
    ipv6_prefixes: Vec<AwsV6>,
}

#[derive(Deserialize)]
struct AwsV4 {
    ip_prefix: String,
    region: String,
    service: String,
}

#[derive(Deserialize)]
struct AwsV6 {
    ipv6_prefix: String,
    region: String,
    service: String,
}

/// aws-ip-ranges: ip-ranges.json; the prefixes of `select.service` (and `select.region`),
/// IPv4 then IPv6, dated by `createDate` (`2026-01-29-19-18-05`).
fn aws(select: &FeedSelect, body: &[u8]) -> Result<FeedData, FeedError> {
    let ranges: AwsRanges = serde_json::from_slice(body)
        .map_err(|e| format(format!("not AWS's ip-ranges.json: {e}")))?;
    let date = ranges
        .create_date
        .get(..10)
        .and_then(|d| policy::parse_data_date(d).ok())
        .ok_or_else(|| {
            format(format!(
                "`createDate` is `{}`, expected YYYY-MM-DD-hh-mm-ss",
                ranges.create_date
            ))
        })?;
    let wanted = |service: &str, region: &str| {
        select
            .service
            .as_ref()
            .is_none_or(|s| s.eq_ignore_ascii_case(service))
            && select
                .region
                .as_ref()
                .is_none_or(|r| r.eq_ignore_ascii_case(region))
    };
    let mut prefixes = Vec::new();
    for p in &ranges.prefixes {
        if wanted(&p.service, &p.region) {
            push_unique(&mut prefixes, prefix(&p.ip_prefix, "prefixes")?);
        }
    }
    for p in &ranges.ipv6_prefixes {
        if wanted(&p.service, &p.region) {
            push_unique(&mut prefixes, prefix(&p.ipv6_prefix, "ipv6_prefixes")?);
        }
    }
    Ok(FeedData {
        prefixes,
        date: Some(date),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn sample(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/feeds")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn zoom_txt_as_published() {
        let data = parse(
            FeedKind::ZoomTxt,
            &FeedSelect::default(),
            &sample("ZoomMeetings.txt"),
        )
        .unwrap();
        assert_eq!(data.prefixes.len(), 50);
        assert_eq!(data.prefixes[0], "3.7.35.0/25".parse::<IpNet>().unwrap());
        assert_eq!(data.date, None);
        // Host bits are refused, not cleared; a cut line is not a prefix.
        let err = parse(
            FeedKind::ZoomTxt,
            &FeedSelect::default(),
            b"3.7.35.0/25\n3.7.35.1/24\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(err.to_string().contains("host bits"), "{err}");
        let err = parse(
            FeedKind::ZoomTxt,
            &FeedSelect::default(),
            b"3.7.35.0/25\n3.23",
        )
        .unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse(FeedKind::ZoomTxt, &FeedSelect::default(), b"\n\n").unwrap_err();
        assert!(err.to_string().contains("no prefixes"), "{err}");
        // Comments are a cidr-list feature.
        assert!(parse(FeedKind::ZoomTxt, &FeedSelect::default(), b"# x\n").is_err());
    }

    #[test]
    fn cidr_list_comments_and_repeats() {
        let body =
            b"# our mirror\n198.51.100.0/24  # media\n\n2001:db8:100::/48\n198.51.100.0/24\n";
        let data = parse(FeedKind::CidrList, &FeedSelect::default(), body).unwrap();
        assert_eq!(
            data.prefixes,
            nets(&["198.51.100.0/24", "2001:db8:100::/48"])
        );
    }

    #[test]
    fn microsoft_by_area_and_ids() {
        let body = sample("microsoft-endpoints.json");
        let skype = FeedSelect {
            service_area: Some("Skype".into()),
            ..FeedSelect::default()
        };
        let all = parse(FeedKind::MicrosoftEndpoints, &skype, &body).unwrap();
        assert!(all.prefixes.contains(&"52.112.0.0/14".parse().unwrap()));
        assert!(
            !all.prefixes.contains(&"40.96.0.0/13".parse().unwrap()),
            "Exchange's ranges are not Skype's"
        );
        let id11 = FeedSelect {
            service_area: Some("Skype".into()),
            ids: vec![11],
            ..FeedSelect::default()
        };
        let data = parse(FeedKind::MicrosoftEndpoints, &id11, &body).unwrap();
        assert_eq!(
            data.prefixes,
            nets(&["52.112.0.0/14", "52.122.0.0/15", "2603:1063::/38"])
        );
        let gone = FeedSelect {
            ids: vec![11, 999],
            ..FeedSelect::default()
        };
        let err = parse(FeedKind::MicrosoftEndpoints, &gone, &body).unwrap_err();
        assert!(err.to_string().contains("endpoint set 999"), "{err}");
        let err = parse(FeedKind::MicrosoftEndpoints, &id11, b"<html>").unwrap_err();
        assert!(err.to_string().contains("not the JSON"), "{err}");
    }

    #[test]
    fn microsoft_version_dates() {
        let (version, date) =
            microsoft_version(br#"{"instance":"Worldwide","latest":"2026110100"}"#).unwrap();
        assert_eq!(version, "2026110100");
        assert_eq!(date.to_string(), "2026-11-01");
        let (_, date) =
            microsoft_version(br#"[{"instance":"Worldwide","latest":"2026103000"}]"#).unwrap();
        assert_eq!(date.to_string(), "2026-10-30");
        assert!(microsoft_version(br#"{"latest":"soon"}"#).is_err());
        assert!(microsoft_version(b"nope").is_err());
    }

    #[test]
    fn aws_by_service_and_region() {
        let body = sample("ip-ranges.json");
        let select = FeedSelect {
            service: Some("CHIME_MEETINGS".into()),
            ..FeedSelect::default()
        };
        let data = parse(FeedKind::AwsIpRanges, &select, &body).unwrap();
        assert_eq!(data.date.unwrap().to_string(), "2026-11-20");
        assert_eq!(
            data.prefixes,
            nets(&["99.77.128.0/18", "3.80.16.0/23", "2600:1f18:4000::/40"])
        );
        let regional = FeedSelect {
            service: Some("CHIME_MEETINGS".into()),
            region: Some("us-east-1".into()),
            ..FeedSelect::default()
        };
        let data = parse(FeedKind::AwsIpRanges, &regional, &body).unwrap();
        assert_eq!(
            data.prefixes,
            nets(&["3.80.16.0/23", "2600:1f18:4000::/40"])
        );
        let err = parse(FeedKind::AwsIpRanges, &select, br#"{"prefixes": []}"#).unwrap_err();
        assert!(err.to_string().contains("ip-ranges.json"), "{err}");
    }
}
