//! Exact quantiles of a column over several passes (`exact = true` on `impute`'s median and
//! `clip`'s quantiles), equal to `numpy.quantile(values, q)` (linear) and `numpy.median` at
//! every worker count.
//!
//! The first pass is the usual [`QuantileSketch`]. If it held every value it is already exact.
//! Otherwise each needed order statistic (ranks `⌊h⌋` and `⌊h⌋ + 1` of `h = q · (n − 1)`) is
//! found by a **selection over passes**, each pass one more read of the step's input:
//!
//! - The search holds a key interval `[lo, hi]` (values as order-preserving keys) that should
//!   contain the rank's value. A pass counts the values below `lo` on every worker and either
//!   **collects** the values inside (when at most [`ExactQuantiles::collect_limit`] are
//!   expected) or counts them in a **histogram** of [`BUCKETS`] equal key ranges.
//! - After the merge, a collection answers at once: the rank's value is the
//!   `(rank − below)`-th collected value. A histogram narrows the interval to the bucket
//!   holding the rank, 4096 times smaller; an interval of a single key answers too (its
//!   values are all equal). If the rank fell outside the interval (the sketch's bounds are
//!   probabilistic), the search goes on over the side it fell in.
//! - The first interval comes from the sketch: its quantiles at `q ± 3 · RANK_ERROR`, about
//!   0.6% of the values, so one extra pass is the usual cost; 64-bit keys bound it at seven.
//!
//! The partials are plain counts and value lists, merged by addition and concatenation, so
//! the result does not depend on how the rows were split among workers.

use serde::{Deserialize, Serialize};

use crate::quantile_sketch::{QuantileSketch, from_key, interpolate, to_key};

/// Buckets of a histogram pass.
pub const BUCKETS: usize = 4096;

/// Values a collecting pass may gather per search, over all workers (8 MiB of keys).
pub const COLLECT_LIMIT: u64 = 1 << 20;

/// How a search looks at the values inside its interval during one pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Look {
    /// Every key inside, to sort after the merge.
    Collect(Vec<u64>),
    /// A count per bucket of the interval.
    Histogram(Vec<u64>),
}

/// The search for the value of one rank (0-based, in the sorted present values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RankSearch {
    rank: u64,
    lo: u64,
    hi: u64,
    /// Values with a key below `lo`, this pass.
    below: u64,
    look: Look,
    /// The key of the rank's value, once known.
    found: Option<u64>,
}

impl RankSearch {
    fn new(rank: u64, lo: u64, hi: u64, expected_inside: u64, collect_limit: u64) -> RankSearch {
        let look = if expected_inside <= collect_limit || hi == lo {
            Look::Collect(Vec::new())
        } else {
            Look::Histogram(vec![0; BUCKETS])
        };
        RankSearch { rank, lo, hi, below: 0, look, found: None }
    }

    fn bucket(lo: u64, hi: u64, key: u64) -> usize {
        let width = (hi - lo) as u128 + 1;
        ((key - lo) as u128 * BUCKETS as u128 / width) as usize
    }

    /// The first key of bucket `b` (for `b == BUCKETS`, one past `hi`).
    fn bucket_start(&self, b: usize) -> u128 {
        let width = (self.hi - self.lo) as u128 + 1;
        self.lo as u128 + (b as u128 * width).div_ceil(BUCKETS as u128)
    }

    fn fold(&mut self, keys: &[u64]) {
        if self.found.is_some() {
            return;
        }
        for &key in keys {
            if key < self.lo {
                self.below += 1;
            } else if key <= self.hi {
                match &mut self.look {
                    Look::Collect(values) => values.push(key),
                    Look::Histogram(counts) => counts[RankSearch::bucket(self.lo, self.hi, key)] += 1,
                }
            }
        }
    }

    fn merge(&mut self, other: RankSearch) {
        self.below += other.below;
        match (&mut self.look, other.look) {
            (Look::Collect(into), Look::Collect(values)) => into.extend(values),
            (Look::Histogram(into), Look::Histogram(counts)) => {
                into.iter_mut().zip(counts).for_each(|(a, b)| *a += b);
            }
            // Partials of one pass share their search state; a mismatch cannot happen.
            _ => {}
        }
    }

    /// After a merged pass: finds the value, or narrows the interval and clears the
    /// counters for the next pass.
    fn advance(&mut self, collect_limit: u64) {
        if self.found.is_some() {
            return;
        }
        let inside = match &self.look {
            Look::Collect(values) => values.len() as u64,
            Look::Histogram(counts) => counts.iter().sum(),
        };
        let (lo, hi, expected) = if self.rank < self.below {
            // Left of the interval (the sketch's bound missed): search there.
            (0, self.lo.saturating_sub(1), self.below)
        } else if self.rank >= self.below + inside {
            (self.hi.saturating_add(1), u64::MAX, u64::MAX)
        } else {
            match &mut self.look {
                Look::Collect(values) => {
                    values.sort_unstable();
                    self.found = Some(values[(self.rank - self.below) as usize]);
                    self.look = Look::Collect(Vec::new());
                    return;
                }
                Look::Histogram(counts) => {
                    let mut before = self.below;
                    let mut chosen = (0, 0);
                    for (b, &count) in counts.iter().enumerate() {
                        if self.rank < before + count {
                            chosen = (b, count);
                            break;
                        }
                        before += count;
                    }
                    let (b, count) = chosen;
                    let start = self.bucket_start(b) as u64;
                    let end = (self.bucket_start(b + 1) - 1) as u64;
                    if start == end {
                        self.found = Some(start);
                        return;
                    }
                    (start, end, count)
                }
            }
        };
        *self = RankSearch::new(self.rank, lo, hi, expected, collect_limit);
    }
}

/// The exact quantiles of one column: the searches for the ranks they need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExactQuantiles {
    /// Present values in the column.
    count: u64,
    quantiles: Vec<f64>,
    searches: Vec<RankSearch>,
    collect_limit: u64,
}

impl ExactQuantiles {
    /// The searches for `quantiles` of the values `sketch` (merged over all workers) saw;
    /// `None` when it saw none. When the sketch holds every value the ranks are found at
    /// once ([`ExactQuantiles::done`]).
    pub fn plan(sketch: &QuantileSketch, quantiles: &[f64], collect_limit: u64) -> Option<ExactQuantiles> {
        let count = sketch.count();
        if count == 0 {
            return None;
        }
        let held = sketch.sorted_keys_if_exact();
        let margin = 3.0 * QuantileSketch::RANK_ERROR;
        let mut ranks: Vec<u64> = quantiles
            .iter()
            .flat_map(|&q| {
                let h = ((count - 1) as f64 * q).floor() as u64;
                [h, (h + 1).min(count - 1)]
            })
            .collect();
        ranks.sort_unstable();
        ranks.dedup();
        let searches = ranks
            .into_iter()
            .map(|rank| {
                // (One value: rank 0 is every quantile; no 0 / 0.)
                let q = if count > 1 { rank as f64 / (count - 1) as f64 } else { 0.0 };
                // The sketch may have dropped the extremes: past either end, the whole key range.
                let lo = if q - margin <= 0.0 { 0 } else { sketch.quantile(q - margin).map_or(0, to_key) };
                let hi =
                    if q + margin >= 1.0 { u64::MAX } else { sketch.quantile(q + margin).map_or(u64::MAX, to_key) };
                let expected = ((2.0 * margin + 2.0 / QuantileSketch::K as f64) * count as f64) as u64;
                let mut search = RankSearch::new(rank, lo.min(hi), hi.max(lo), expected, collect_limit);
                search.found = held.as_ref().map(|keys| keys[rank as usize]);
                search
            })
            .collect();
        Some(ExactQuantiles { count, quantiles: quantiles.to_vec(), searches, collect_limit })
    }

    /// Folds one batch's present values (no NaN) into this pass's counters.
    pub fn fold(&mut self, values: &[f64]) {
        let keys: Vec<u64> = values.iter().map(|&v| to_key(v)).collect();
        for search in &mut self.searches {
            search.fold(&keys);
        }
    }

    /// Adds another worker's counters of the same pass.
    pub fn merge(&mut self, other: ExactQuantiles) {
        for (search, theirs) in self.searches.iter_mut().zip(other.searches) {
            search.merge(theirs);
        }
    }

    /// After a merged pass: finds what it can; true when every rank is known.
    pub fn advance(&mut self) -> bool {
        for search in &mut self.searches {
            search.advance(self.collect_limit);
        }
        self.done()
    }

    /// Whether every rank is known.
    pub fn done(&self) -> bool {
        self.searches.iter().all(|s| s.found.is_some())
    }

    /// Present values in the column.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q`-quantile (one of those planned), as `numpy.quantile`; `None` before
    /// [`ExactQuantiles::done`].
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let value_of = |rank: u64| self.searches.iter().find(|s| s.rank == rank).and_then(|s| s.found).map(from_key);
        let position = (self.count - 1) as f64 * q;
        let lo = position.floor();
        let t = position - lo;
        let a = value_of(lo as u64)?;
        if lo as u64 + 1 >= self.count {
            return Some(a);
        }
        Some(interpolate(a, value_of(lo as u64 + 1)?, t, q == 0.5))
    }
}

/// The partial of a fitted step that needs quantiles of each of its columns (impute's
/// median, clip's bounds): sketches in the first pass, then, with `exact = true` and a sketch
/// that could not hold every value, the exact searches of the later passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ColumnQuantiles {
    Sketches(Vec<QuantileSketch>),
    /// Per column; `None` for a column with no value.
    Exact(Vec<Option<ExactQuantiles>>),
}

/// What a fit learned of one column's quantile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FoundQuantile {
    /// `None` when the column has no value.
    pub value: Option<f64>,
    /// Present values in the column.
    pub count: u64,
    /// Whether `value` is exact (a sketch that held every value, or a finished search).
    pub exact: bool,
}

impl ColumnQuantiles {
    /// The first pass's partial: one empty sketch per column.
    pub fn new(columns: usize) -> ColumnQuantiles {
        ColumnQuantiles::Sketches(vec![QuantileSketch::new(); columns])
    }

    /// Folds the present values of the column at `position`.
    pub fn fold(&mut self, position: usize, values: &[f64]) {
        match self {
            ColumnQuantiles::Sketches(sketches) => sketches[position].extend_from_slice(values),
            ColumnQuantiles::Exact(searches) => {
                if let Some(search) = &mut searches[position] {
                    search.fold(values);
                }
            }
        }
    }

    /// Merges another worker's partial of the same pass.
    pub fn merge(&mut self, other: ColumnQuantiles) -> Result<(), crate::OpError> {
        match (self, other) {
            (ColumnQuantiles::Sketches(into), ColumnQuantiles::Sketches(other)) => {
                into.iter_mut().zip(other).for_each(|(a, b)| a.merge(b));
            }
            (ColumnQuantiles::Exact(into), ColumnQuantiles::Exact(other)) => {
                for (a, b) in into.iter_mut().zip(other) {
                    if let (Some(a), Some(b)) = (a, b) {
                        a.merge(b);
                    }
                }
            }
            _ => return Err(crate::OpError::Internal("partials of two different quantile passes".into())),
        }
        Ok(())
    }

    /// [`crate::fit::Fit::next_pass`] for exact `quantiles`: after the sketch pass, plan the
    /// searches (a column whose sketch held every value needs none); after a search pass,
    /// advance them; another pass while any goes on.
    pub fn next_pass(&mut self, quantiles: &[f64]) -> Option<ColumnQuantiles> {
        match self {
            ColumnQuantiles::Sketches(sketches) => {
                let planned: Vec<Option<ExactQuantiles>> =
                    sketches.iter().map(|sketch| ExactQuantiles::plan(sketch, quantiles, COLLECT_LIMIT)).collect();
                // Every sketch held all its values: they answer exactly. Otherwise the columns
                // whose sketch did carry their answers along.
                (!planned.iter().flatten().all(ExactQuantiles::done)).then_some(ColumnQuantiles::Exact(planned))
            }
            ColumnQuantiles::Exact(searches) => {
                let mut more = false;
                for search in searches.iter_mut().flatten() {
                    more |= !search.advance();
                }
                more.then(|| ColumnQuantiles::Exact(searches.clone()))
            }
        }
    }

    /// The `q`-quantile of the column at `position`, from the sketch or the search.
    pub fn found(&self, position: usize, q: f64) -> FoundQuantile {
        match self {
            ColumnQuantiles::Sketches(sketches) => {
                let sketch = &sketches[position];
                FoundQuantile { value: sketch.quantile(q), count: sketch.count(), exact: sketch.is_exact() }
            }
            ColumnQuantiles::Exact(searches) => match &searches[position] {
                Some(search) => FoundQuantile { value: search.quantile(q), count: search.count(), exact: true },
                None => FoundQuantile { value: None, count: 0, exact: true },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// numpy.quantile's linear method on sorted values, through the sketch's own formula.
    fn reference(sorted: &[f64], q: f64) -> f64 {
        let position = (sorted.len() - 1) as f64 * q;
        let lo = position.floor() as usize;
        if lo + 1 >= sorted.len() {
            return sorted[lo];
        }
        interpolate(sorted[lo], sorted[lo + 1], position - lo as f64, q == 0.5)
    }

    /// Runs the passes with the values split among `workers`, as the engine does.
    fn exact(values: &[f64], quantiles: &[f64], workers: usize, limit: u64) -> (Vec<f64>, usize) {
        let chunks: Vec<&[f64]> = values.chunks(values.len().div_ceil(workers)).collect();
        let mut sketch = QuantileSketch::new();
        for chunk in &chunks {
            let mut part = QuantileSketch::new();
            part.extend_from_slice(chunk);
            sketch.merge(part);
        }
        let mut state = ExactQuantiles::plan(&sketch, quantiles, limit).expect("more values than the sketch holds");
        let mut passes = 1;
        while !state.done() {
            let empty = state.clone();
            let mut merged: Option<ExactQuantiles> = None;
            for chunk in &chunks {
                let mut partial = empty.clone();
                partial.fold(chunk);
                match merged.as_mut() {
                    None => merged = Some(partial),
                    Some(merged) => merged.merge(partial),
                }
            }
            state = merged.unwrap();
            state.advance();
            passes += 1;
            assert!(passes < 12, "the search does not end");
        }
        (quantiles.iter().map(|&q| state.quantile(q).unwrap()).collect(), passes)
    }

    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x % 100_000) as f64 - 50_000.0) / 7.0
            })
            .collect()
    }

    #[test]
    fn equals_numpy_at_every_split_and_limit() {
        let quantiles = [0.0, 0.01, 0.5, 0.73, 0.99, 1.0];
        let mut data = values(60_001, 7);
        data[3] = f64::INFINITY;
        data[9] = f64::NEG_INFINITY;
        let mut sorted = data.clone();
        sorted.sort_by(f64::total_cmp);
        let want: Vec<f64> = quantiles.iter().map(|&q| reference(&sorted, q)).collect();
        for workers in [1, 3, 4] {
            let (got, passes) = exact(&data, &quantiles, workers, COLLECT_LIMIT);
            assert_eq!(got, want, "{workers} workers");
            assert_eq!(passes, 2, "one pass after the sketch's");
            // With a tiny collect limit the searches go through histograms first.
            let (got, passes) = exact(&data, &quantiles, workers, 16);
            assert_eq!(got, want, "{workers} workers, histograms");
            assert!(passes > 2);
        }
    }

    #[test]
    fn heavy_duplicates_end_on_a_single_key() {
        let mut data: Vec<f64> = (0..50_000).map(|i| if i % 10 == 0 { i as f64 } else { 42.0 }).collect();
        data.push(-1.0);
        let mut sorted = data.clone();
        sorted.sort_by(f64::total_cmp);
        let (got, _) = exact(&data, &[0.5, 0.95], 2, 16);
        assert_eq!(got, vec![reference(&sorted, 0.5), reference(&sorted, 0.95)]);
    }

    /// One value: every quantile is it (planning once divided 0 by 0 here and panicked; found
    /// by the job fuzz target, fitting a `robust_scale` over a column with one value).
    #[test]
    fn a_single_value_is_every_quantile() {
        let (got, passes) = exact(&[3.5], &[0.0, 0.25, 0.5, 1.0], 1, COLLECT_LIMIT);
        assert_eq!((got, passes), (vec![3.5; 4], 1));
    }
}
