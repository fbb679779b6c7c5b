//! The Prometheus HTTP API (`/api/v1/query`), just what the report reads: raw samples of range
//! selectors and instant vectors.

use crate::error_chain::chain;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::ReportError;

/// A series' labels, by name.
pub type Labels = BTreeMap<String, String>;

/// One sample: Unix time in seconds (Prometheus's, millisecond precision) and value.
pub type Sample = (f64, f64);

/// One series of a range selector: its labels and raw samples, oldest first.
#[derive(Clone, Debug)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct MatrixSeries {
    metric: Labels,
    values: Vec<(f64, String)>,
}

#[derive(Deserialize)]
struct VectorSample {
    metric: Labels,
    value: (f64, String),
}

/// Prometheus's `time` parameter for a Unix time in milliseconds.
fn time_param(millis: u64) -> String {
    format!("{}.{:03}", millis / 1000, millis % 1000)
}

impl Client {
    /// A client of the server at `url` (http:// or https://, with any path prefix it serves
    /// under). Proxies come from the environment (HTTPS_PROXY, NO_PROXY).
    pub fn new(url: &str) -> Result<Client, ReportError> {
        let bad = |why: &str| ReportError::Url {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| bad(&chain(&e)))?;
        Ok(Client {
            http,
            base: url.trim_end_matches('/').to_owned(),
        })
    }

    /// The raw samples of every series of `metric[range]` at `at_millis` (Unix ms).
    pub async fn range_samples(
        &self,
        metric: &str,
        range: &str,
        at_millis: u64,
    ) -> Result<Vec<Series>, ReportError> {
        let expr = format!("{metric}[{range}]");
        let data = self.query(&expr, at_millis).await?;
        let series: Vec<MatrixSeries> = self.result(&expr, data, "matrix")?;
        Ok(series
            .into_iter()
            .map(|s| Series {
                labels: s.metric,
                samples: s
                    .values
                    .into_iter()
                    .filter_map(|(t, v)| Some((t, v.parse().ok()?)))
                    .collect(),
            })
            .collect())
    }

    /// The instant vector `expr` at `at_millis`.
    pub async fn vector(
        &self,
        expr: &str,
        at_millis: u64,
    ) -> Result<Vec<(Labels, f64)>, ReportError> {
        let data = self.query(expr, at_millis).await?;
        let samples: Vec<VectorSample> = self.result(expr, data, "vector")?;
        Ok(samples
            .into_iter()
            .filter_map(|s| Some((s.metric, s.value.1.parse().ok()?)))
            .collect())
    }

    fn result<T: serde::de::DeserializeOwned>(
        &self,
        expr: &str,
        data: Data,
        kind: &str,
    ) -> Result<Vec<T>, ReportError> {
        let bad = |detail: String| ReportError::BadAnswer {
            url: self.base.clone(),
            expr: expr.to_owned(),
            detail,
        };
        if data.result_type != kind {
            return Err(bad(format!(
                "a result of type {:?} where {kind} was expected",
                data.result_type
            )));
        }
        serde_json::from_value(data.result).map_err(|e| bad(e.to_string()))
    }

    async fn query(&self, expr: &str, at_millis: u64) -> Result<Data, ReportError> {
        let url = format!("{}/api/v1/query", self.base);
        let response = self
            .http
            .get(&url)
            .query(&[("query", expr), ("time", &time_param(at_millis))])
            .send()
            .await
            .map_err(|e| ReportError::Unreachable {
                url: self.base.clone(),
                detail: chain(&e),
            })?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| ReportError::Unreachable {
                url: self.base.clone(),
                detail: chain(&e),
            })?;
        let answer: Result<Answer, _> = serde_json::from_str(&body);
        if !status.is_success() {
            // Prometheus explains a refused query in its JSON; anything else, show the start.
            let detail = match answer {
                Ok(Answer {
                    error: Some(error), ..
                }) => error,
                _ => body.chars().take(200).collect(),
            };
            return Err(ReportError::Status {
                url,
                status: status.as_u16(),
                detail,
            });
        }
        let answer = answer.map_err(|e| ReportError::BadAnswer {
            url: self.base.clone(),
            expr: expr.to_owned(),
            detail: format!("not the JSON of the Prometheus API: {e}"),
        })?;
        let Answer {
            status: state,
            data,
            error,
        } = answer;
        match data {
            Some(data) if state == "success" => Ok(data),
            _ => Err(ReportError::BadAnswer {
                url: self.base.clone(),
                expr: expr.to_owned(),
                detail: format!(
                    "status {state:?}: {}",
                    error.unwrap_or_else(|| "no data".to_owned())
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_parameter_keeps_milliseconds() {
        assert_eq!(time_param(1_700_000_000_123), "1700000000.123");
        assert_eq!(time_param(5), "0.005");
    }

    #[test]
    fn only_http_urls() {
        assert!(Client::new("http://127.0.0.1:9090").is_ok());
        assert!(Client::new("https://prometheus.example/prom/").is_ok());
        for url in ["ftp://x", "127.0.0.1:9090", ""] {
            assert!(Client::new(url).is_err(), "{url}");
        }
    }
}
