//! Believing only answers to questions that crossed the gateway.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use super::QUERY_WINDOW;

/// Most outstanding queries remembered; the oldest are forgotten first.
const MAX_QUERIES: usize = 65_536;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    client: SocketAddr,
    server: SocketAddr,
    id: u16,
    question: String,
}

/// Queries seen in the last [`QUERY_WINDOW`], each answerable once.
#[derive(Debug, Default)]
pub struct QueryTracker {
    /// When each query arrived, and on which interface.
    open: HashMap<Key, (Instant, u32)>,
    order: VecDeque<(Instant, Key)>,
}

impl QueryTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers a query from `client` to `server` that arrived on `ifindex`.
    pub fn query(
        &mut self,
        client: SocketAddr,
        server: SocketAddr,
        id: u16,
        question: &str,
        now: Instant,
        ifindex: u32,
    ) {
        self.forget_old(now);
        let key = Key {
            client,
            server,
            id,
            question: question.to_ascii_lowercase(),
        };
        if self.open.insert(key.clone(), (now, ifindex)).is_none() {
            self.order.push_back((now, key));
        }
        while self.open.len() > MAX_QUERIES {
            match self.order.pop_front() {
                Some((_, oldest)) => {
                    self.open.remove(&oldest);
                }
                None => break,
            }
        }
    }

    /// Whether a response from `server` to `client` answers an open query (then the interface
    /// the query arrived on); it closes it.
    pub fn answer(
        &mut self,
        client: SocketAddr,
        server: SocketAddr,
        id: u16,
        question: &str,
        now: Instant,
    ) -> Option<u32> {
        self.forget_old(now);
        let key = Key {
            client,
            server,
            id,
            question: question.to_ascii_lowercase(),
        };
        self.open.remove(&key).map(|(_, ifindex)| ifindex)
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) <= QUERY_WINDOW {
                break;
            }
            if let Some((at, key)) = self.order.pop_front()
                && self.open.get(&key).map(|(t, _)| t) == Some(&at)
            {
                self.open.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_matching_answer_within_the_window_once() {
        let mut t = QueryTracker::new();
        let (client, server) = (addr("198.18.1.2:40000"), addr("198.18.2.2:53"));
        let t0 = Instant::now();
        t.query(client, server, 7, "a.zoom.us", t0, 3);
        // Wrong id, port, server or question: not an answer.
        assert!(t.answer(client, server, 8, "a.zoom.us", t0).is_none());
        assert!(
            t.answer(addr("198.18.1.2:40001"), server, 7, "a.zoom.us", t0)
                .is_none()
        );
        assert!(
            t.answer(client, addr("198.18.2.3:53"), 7, "a.zoom.us", t0)
                .is_none()
        );
        assert!(t.answer(client, server, 7, "b.zoom.us", t0).is_none());
        // Case does not matter (0x20 encoding); one answer only.
        assert_eq!(t.answer(client, server, 7, "A.Zoom.US", t0), Some(3));
        assert!(t.answer(client, server, 7, "a.zoom.us", t0).is_none());
        // Too late.
        t.query(client, server, 9, "a.zoom.us", t0, 3);
        assert!(
            t.answer(
                client,
                server,
                9,
                "a.zoom.us",
                t0 + QUERY_WINDOW + Duration::from_secs(1)
            )
            .is_none()
        );
        assert!(t.is_empty());
    }

    #[test]
    fn bounded() {
        let mut t = QueryTracker::new();
        let now = Instant::now();
        for i in 0..(MAX_QUERIES + 10) {
            let port = 1024 + u16::try_from(i % 60_000).unwrap();
            t.query(
                SocketAddr::from(([198, 18, 1, u8::try_from(i / 60_000).unwrap() + 2], port)),
                addr("198.18.2.2:53"),
                1,
                "x.example",
                now,
                1,
            );
        }
        assert_eq!(t.len(), MAX_QUERIES);
    }
}
