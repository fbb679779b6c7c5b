//! The checks a feed's data passes before anything is written: its age, no range wider than a
//! vendor ever publishes, nothing the gateway must never block, and no mass removal.

use ipnet::IpNet;

use crate::never_block::NeverBlock;
use crate::policy::DataDate;

use super::FeedError;

/// The widest IPv4 prefix a feed may hold: a /8 or /11 is an ISP or a cloud, not a vendor's
/// service range.
pub const MIN_V4_LEN: u8 = 12;
/// The widest IPv6 prefix a feed may hold.
pub const MIN_V6_LEN: u8 = 28;
/// The share of a platform's feed-managed prefixes one update may remove without `--force`:
/// a feed that suddenly lists far fewer ranges is more likely broken than right.
pub const MAX_REMOVED_PERCENT: usize = 25;

/// What a check needs to know about the file and the run.
pub struct Context<'a> {
    /// The feed-managed prefixes now in the file.
    pub current: &'a [IpNet],
    /// The file's `data-date`.
    pub file_date: Option<DataDate>,
    pub never_block: &'a NeverBlock,
    pub force: bool,
}

/// Every check, in the order an operator would want them explained: age, width, never-block,
/// removals.
pub fn check(
    prefixes: &[IpNet],
    date: Option<DataDate>,
    context: &Context<'_>,
) -> Result<(), FeedError> {
    if let (Some(feed), Some(file)) = (date, context.file_date)
        && feed < file
    {
        return Err(FeedError::Stale { feed, file });
    }
    for net in prefixes {
        let min = match net {
            IpNet::V4(_) => MIN_V4_LEN,
            IpNet::V6(_) => MIN_V6_LEN,
        };
        if net.prefix_len() < min {
            return Err(FeedError::TooWide { prefix: *net, min });
        }
    }
    for net in prefixes {
        let overlaps = context.never_block.overlaps(net);
        if !overlaps.is_empty() {
            let ranges = overlaps
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(FeedError::NeverBlock {
                prefix: *net,
                ranges,
            });
        }
    }
    let removed = context
        .current
        .iter()
        .filter(|net| !prefixes.contains(net))
        .count();
    let total = context.current.len();
    if !context.force && removed * 100 > total * MAX_REMOVED_PERCENT {
        return Err(FeedError::TooManyRemoved { removed, total });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn context<'a>(current: &'a [IpNet], nb: &'a NeverBlock, force: bool) -> Context<'a> {
        Context {
            current,
            file_date: DataDate::new(2026, 11, 1),
            never_block: nb,
            force,
        }
    }

    #[test]
    fn each_check() {
        let nb = NeverBlock::builtin();
        let current = nets(&[
            "198.51.100.0/24",
            "203.0.113.0/24",
            "192.0.2.0/24",
            "198.18.0.0/24",
        ]);
        let ok = context(&current, &nb, false);
        let date = DataDate::new(2026, 11, 2);
        // One of four removed (25 %) and one added: fine.
        let next = nets(&[
            "198.51.100.0/24",
            "203.0.113.0/24",
            "192.0.2.0/24",
            "198.18.1.0/24",
        ]);
        check(&next, date, &ok).unwrap();
        // The same date as the file is not stale; an older one is.
        check(&next, DataDate::new(2026, 11, 1), &ok).unwrap();
        let err = check(&next, DataDate::new(2026, 10, 31), &ok).unwrap_err();
        assert!(matches!(err, FeedError::Stale { .. }), "{err}");
        assert!(err.to_string().contains("2026-10-31"), "{err}");
        // A /8, and a /27 IPv6.
        let mut wide = next.clone();
        wide.push("17.0.0.0/8".parse().unwrap());
        let err = check(&wide, date, &ok).unwrap_err();
        assert!(err.to_string().contains("17.0.0.0/8"), "{err}");
        let err = check(&nets(&["2001:db8::/27"]), date, &context(&[], &nb, false)).unwrap_err();
        assert!(matches!(err, FeedError::TooWide { min: 28, .. }), "{err}");
        check(
            &nets(&["2001:db8::/28", "17.0.0.0/12"]),
            date,
            &context(&[], &nb, false),
        )
        .unwrap();
        // Never-block (a /16 inside 10.0.0.0/8).
        let err = check(&nets(&["10.1.0.0/16"]), date, &ok).unwrap_err();
        assert!(matches!(err, FeedError::NeverBlock { .. }), "{err}");
        assert!(err.to_string().contains("10.0.0.0/8"), "{err}");
        // Half gone: refused, unless forced.
        let half = nets(&["198.51.100.0/24", "203.0.113.0/24"]);
        let err = check(&half, date, &ok).unwrap_err();
        assert!(
            matches!(
                err,
                FeedError::TooManyRemoved {
                    removed: 2,
                    total: 4
                }
            ),
            "{err}"
        );
        check(&half, date, &context(&current, &nb, true)).unwrap();
    }
}
