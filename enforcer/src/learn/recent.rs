//! The last names learned from DNS answers, for `enforcer top`: bounded, newest first.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::SystemTime;

/// One (name, platform, address) learned, and when its answer came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recent {
    pub name: String,
    pub platform: String,
    pub address: IpAddr,
    pub time: SystemTime,
}

/// At most `limit` entries; the same (name, platform, address) learned again moves to the front
/// rather than filling the list with one chatty name.
#[derive(Clone, Debug)]
pub struct RecentLearned {
    entries: VecDeque<Recent>,
    limit: usize,
}

impl RecentLearned {
    pub fn new(limit: usize) -> Self {
        Self {
            entries: VecDeque::with_capacity(limit),
            limit,
        }
    }

    pub fn record(&mut self, recent: Recent) {
        self.entries.retain(|e| {
            (e.name.as_str(), e.platform.as_str(), e.address)
                != (
                    recent.name.as_str(),
                    recent.platform.as_str(),
                    recent.address,
                )
        });
        self.entries.push_front(recent);
        self.entries.truncate(self.limit);
    }

    /// Newest first.
    pub fn iter(&self) -> impl Iterator<Item = &Recent> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(name: &str, last: u8, secs: u64) -> Recent {
        Recent {
            name: name.into(),
            platform: "media".into(),
            address: IpAddr::from([198, 19, 10, last]),
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    #[test]
    fn newest_first_bounded_and_a_repeat_moves_up() {
        let mut recent = RecentLearned::new(3);
        for (i, name) in (0u8..).zip(["a.example", "b.example", "c.example", "d.example"]) {
            recent.record(at(name, i, u64::from(i)));
        }
        let names = |r: &RecentLearned| r.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&recent), ["d.example", "c.example", "b.example"]);
        recent.record(at("b.example", 1, 9));
        assert_eq!(names(&recent), ["b.example", "d.example", "c.example"]);
        assert_eq!(
            recent.iter().next().unwrap().time,
            SystemTime::UNIX_EPOCH + Duration::from_secs(9)
        );
    }
}
