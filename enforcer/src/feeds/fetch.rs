//! Fetching a feed: HTTPS only (rustls), proxies from the environment (`HTTPS_PROXY`,
//! `NO_PROXY`), an extra CA for private mirrors, and bounds on size and time so that a broken or
//! hostile server cannot fill the memory or hang the update.

use crate::error_chain::chain;
use std::path::Path;
use std::time::Duration;

use crate::policy::DataDate;

use super::FeedError;

/// What the server sent.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub body: Vec<u8>,
    /// The date of its `Last-Modified` header, when it sent a valid one.
    pub last_modified: Option<DataDate>,
}

/// An HTTPS client for feeds.
pub struct Fetcher {
    http: reqwest::Client,
    max_bytes: usize,
}

impl Fetcher {
    /// A client trusting the public roots plus every certificate of `ca_file` (PEM), giving up
    /// on a feed after `timeout` and refusing bodies over `max_bytes`.
    pub fn new(
        ca_file: Option<&Path>,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Fetcher, FeedError> {
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("enforcer/", env!("CARGO_PKG_VERSION"), " feeds"))
            // A redirect to a plain-http URL is refused by https_only; a long chain is a loop.
            .redirect(reqwest::redirect::Policy::limited(5));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|source| FeedError::CaFile {
                path: path.to_path_buf(),
                why: source.to_string(),
            })?;
            let certificates =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| FeedError::CaFile {
                    path: path.to_path_buf(),
                    why: chain(&e),
                })?;
            if certificates.is_empty() {
                return Err(FeedError::CaFile {
                    path: path.to_path_buf(),
                    why: "no PEM certificate in the file".to_owned(),
                });
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().map_err(|e| FeedError::Client(chain(&e)))?;
        Ok(Fetcher { http, max_bytes })
    }

    /// The body at `url` (status 200 only), read in chunks and refused as soon as it passes the
    /// limit, whatever `Content-Length` says.
    pub async fn get(&self, url: &str) -> Result<Fetched, FeedError> {
        let fetch = |why: String| FeedError::Fetch {
            url: url.to_owned(),
            why,
        };
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| fetch(chain(&e)))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(fetch(format!("the server answered HTTP {status}")));
        }
        let too_large = || FeedError::TooLarge {
            url: url.to_owned(),
            limit: self.max_bytes,
        };
        if response
            .content_length()
            .is_some_and(|n| n > u64::try_from(self.max_bytes).unwrap_or(u64::MAX))
        {
            return Err(too_large());
        }
        let last_modified = response
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fetch(chain(&e)))? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        tracing::debug!(url, bytes = body.len(), "feed fetched");
        Ok(Fetched {
            body,
            last_modified,
        })
    }
}

/// The date of an HTTP date (`Tue, 01 Dec 2026 10:00:00 GMT`, RFC 9110's IMF-fixdate).
pub fn parse_http_date(text: &str) -> Option<DataDate> {
    let mut words = text.split_whitespace();
    let _weekday = words.next()?;
    let day: u8 = words.next()?.parse().ok()?;
    let month = match words.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: u16 = words.next()?.parse().ok()?;
    DataDate::new(year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Tue, 01 Dec 2026 10:00:00 GMT"),
            DataDate::new(2026, 12, 1)
        );
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date("Tue, 31 Feb 2026 10:00:00 GMT"), None);
    }
}
