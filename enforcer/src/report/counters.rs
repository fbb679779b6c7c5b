//! Exact counter growth from raw samples, without the extrapolation of `increase()`: the report's
//! table must equal what the counters counted.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::prometheus::{Labels, Sample, Series};

/// What a row of the report is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub site: String,
    pub platform: String,
    pub action: String,
}

impl Key {
    /// The key of a series, when it carries all three labels (any other series is not ours).
    pub fn of(labels: &Labels) -> Option<Key> {
        Some(Key {
            site: labels.get("site")?.clone(),
            platform: labels.get("platform")?.clone(),
            action: labels.get("action")?.clone(),
        })
    }
}

/// Growth of a counter over `samples` (oldest first) following `previous`, the last sample
/// already counted: each step adds the rise, and a fall (the exporter restarted from 0) adds the
/// new value in full. Samples at or before `previous` are skipped (consecutive range queries may
/// share their boundary sample). Returns the growth and the new last sample.
pub fn growth(previous: Option<Sample>, samples: &[Sample]) -> (f64, Option<Sample>) {
    let mut last = previous;
    let mut total = 0.0;
    for &(time, value) in samples {
        if !value.is_finite() {
            continue;
        }
        match last {
            Some((t, _)) if time <= t => continue,
            Some((_, v)) if value >= v => total += value - v,
            Some(_) => total += value,
            // The first sample of the period is where counting starts.
            None => {}
        }
        last = Some((time, value));
    }
    (total, last)
}

/// The growth of every series of one counter, period chunk by chunk, summed over gateways (any
/// label besides site, platform and action) per key and chunk.
#[derive(Debug)]
pub struct Tally {
    chunks: usize,
    /// The last sample counted of each series (by its full label set).
    last: HashMap<Labels, Sample>,
    growth: BTreeMap<Key, Vec<f64>>,
    series: BTreeSet<Labels>,
}

impl Tally {
    pub fn new(chunks: usize) -> Tally {
        Tally {
            chunks,
            last: HashMap::new(),
            growth: BTreeMap::new(),
            series: BTreeSet::new(),
        }
    }

    /// Adds the samples of chunk `chunk` (chunks must come in time order).
    pub fn add(&mut self, chunk: usize, series: &[Series]) {
        for s in series {
            let Some(key) = Key::of(&s.labels) else {
                continue;
            };
            self.series.insert(s.labels.clone());
            let previous = self.last.get(&s.labels).copied();
            let (grown, last) = growth(previous, &s.samples);
            if let Some(last) = last {
                self.last.insert(s.labels.clone(), last);
            }
            let per_chunk = self
                .growth
                .entry(key)
                .or_insert_with(|| vec![0.0; self.chunks]);
            if let Some(slot) = per_chunk.get_mut(chunk) {
                *slot += grown;
            }
        }
    }

    /// How many distinct series were seen.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// Growth per key, chunk by chunk.
    pub fn per_chunk(&self) -> &BTreeMap<Key, Vec<f64>> {
        &self.growth
    }

    /// Growth per key over the whole period.
    pub fn totals(&self) -> BTreeMap<Key, f64> {
        self.growth
            .iter()
            .map(|(key, chunks)| (key.clone(), chunks.iter().sum()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)], samples: &[Sample]) -> Series {
        Series {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            samples: samples.to_vec(),
        }
    }

    #[test]
    fn growth_is_last_minus_first() {
        let (g, last) = growth(None, &[(1.0, 10.0), (2.0, 15.0), (3.0, 40.0)]);
        assert_eq!(g, 30.0);
        assert_eq!(last, Some((3.0, 40.0)));
    }

    #[test]
    fn a_reset_adds_the_new_value() {
        // 10 -> 25 (+15), restart, 4 (+4), 9 (+5).
        let (g, _) = growth(None, &[(1.0, 10.0), (2.0, 25.0), (3.0, 4.0), (4.0, 9.0)]);
        assert_eq!(g, 24.0);
        // A reset to 0 then growth.
        let (g, _) = growth(None, &[(1.0, 7.0), (2.0, 0.0), (3.0, 3.0)]);
        assert_eq!(g, 3.0);
    }

    #[test]
    fn chunks_continue_from_the_previous_sample_and_skip_shared_ones() {
        let (a, last) = growth(None, &[(1.0, 10.0), (2.0, 12.0)]);
        // The next chunk repeats the boundary sample (closed ranges), then resets.
        let (b, _) = growth(last, &[(2.0, 12.0), (3.0, 20.0), (4.0, 2.0)]);
        assert_eq!((a, b), (2.0, 10.0));
    }

    #[test]
    fn non_finite_samples_are_ignored() {
        let (g, _) = growth(None, &[(1.0, 1.0), (2.0, f64::NAN), (3.0, 5.0)]);
        assert_eq!(g, 4.0);
    }

    #[test]
    fn tally_sums_gateways_per_key_and_chunk() {
        let teams_a = [("site", "a"), ("platform", "teams"), ("action", "drop")];
        let mut gw1 = teams_a.to_vec();
        gw1.push(("instance", "gw1:9464"));
        let mut gw2 = teams_a.to_vec();
        gw2.push(("instance", "gw2:9464"));
        let mut tally = Tally::new(2);
        tally.add(
            0,
            &[
                series(&gw1, &[(1.0, 100.0), (2.0, 110.0)]),
                series(&gw2, &[(1.0, 5.0), (2.0, 6.0)]),
                // Not a site series: ignored.
                series(&[("site", "a")], &[(1.0, 0.0), (2.0, 1e9)]),
            ],
        );
        tally.add(
            1,
            &[series(&gw1, &[(3.0, 3.0)]), series(&gw2, &[(3.0, 16.0)])],
        );
        let key = Key::of(&series(&teams_a, &[]).labels).unwrap();
        assert_eq!(tally.per_chunk()[&key], vec![11.0, 13.0]);
        assert_eq!(tally.totals()[&key], 24.0);
        assert_eq!(tally.series_count(), 2);
    }
}
