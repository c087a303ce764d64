//! A mergeable quantile sketch over `f64` values, for fitted steps that need quantiles of a
//! column (the median of `impute`, the bounds of quantile clipping) without holding the column.
//!
//! Each worker folds its values into one [`QuantileSketch`]; the sketches are serialized, sent
//! to one worker, [merged](QuantileSketch::merge) there, and [queried](QuantileSketch::quantile).
//!
//! Guarantees:
//! - **Exact on small inputs.** While the total count (merges included) is at most
//!   [`QuantileSketch::K`], every value is kept and [`QuantileSketch::quantile`] returns exactly
//!   what `numpy.quantile(values, q)` (default `'linear'` method) returns, and
//!   `numpy.median(values)` for `q = 0.5`.
//! - **Bounded rank error beyond that.** Past `K` values the sketch compacts (it keeps a sample
//!   whose items stand for several values) and the returned value's rank is within
//!   [`QuantileSketch::RANK_ERROR`]` · n` of the requested rank `q · (n − 1)`. The bound is
//!   probabilistic: for `K = 8192` the error at 99% confidence is about 0.0004 (DataSketches'
//!   KLL formula `2.296 / K^0.9723`), so the documented 0.001 (the relative error Spark's
//!   `Imputer` uses) holds with a wide margin.
//! - **Bounded memory.** The sketch retains at most about `3 · K` values (≈ 24,600, so
//!   ≈ 200 KB) plus a few per level, whatever the number of values: O(K + log(n / K)).
//! - **Deterministic.** Compaction draws its coin flips from a small PRNG stored in the sketch
//!   (seeded by [`QuantileSketch::with_seed`], a fixed seed for [`QuantileSketch::new`]), so the
//!   same values inserted and merged in the same order give the same sketch and the same
//!   answers on every run and every machine.
//!
//! Why KLL (Karnin, Lang, Liberty, "Optimal Quantile Approximation in Streams", 2016): it has
//! the optimal space for a given rank error, its merge keeps the same guarantee however the
//! data was split (Greenwald–Khanna is not fully mergeable, t-digest gives no rank-error bound),
//! and it is a few dozen lines: levels of "compactors", where level `h` holds items of weight
//! `2^h`. When the sketch is over capacity, the lowest full level is sorted and every other item
//! (starting at a random offset) moves up a level with twice the weight; the others are dropped.
//! Capacities shrink by 2/3 per level below the top one, so most of the memory goes to the
//! heavy items near the top, where errors would cost the most.

use serde::{Deserialize, Serialize};

/// Smallest capacity of a level (DataSketches' `m`): levels far below the top do not shrink
/// further, which keeps compactions from happening on a handful of items.
const MIN_LEVEL_CAPACITY: usize = 8;

/// Seed of [`QuantileSketch::new`].
const DEFAULT_SEED: u64 = 0x5EED_0FBE_EFCA_FE00;

/// A KLL quantile sketch over `f64` values; see the [module docs](self).
///
/// Values are kept as order-preserving `u64` keys (see `to_key`): sorting them is an integer
/// sort, and every value, ±infinity included, serializes exactly in any serde format (JSON has
/// no infinities).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantileSketch {
    /// `levels[h]` holds items of weight `2^h`, unsorted. There is always at least level 0.
    levels: Vec<Vec<u64>>,
    /// Number of values inserted, merged ones included; the weights of the items sum to it.
    count: u64,
    /// Level 0 may grow to this length before a compression is due: the total capacity of the
    /// levels minus what the levels above 0 hold. Kept up to date so that an insert is O(1).
    level0_limit: usize,
    /// State of the splitmix64 generator that picks compaction offsets.
    rng: u64,
}

impl QuantileSketch {
    /// Capacity of the top level, and the number of values kept exactly.
    pub const K: usize = 8192;

    /// The rank error bound the docs promise for approximate sketches: the returned value's rank
    /// is within `RANK_ERROR · n` of `q · (n − 1)`.
    pub const RANK_ERROR: f64 = 0.001;

    /// An empty sketch with the fixed default seed.
    pub fn new() -> Self {
        Self::with_seed(DEFAULT_SEED)
    }

    /// An empty sketch whose compaction coin flips come from `seed`. Workers may use their
    /// index as seed so that their sketches do not flip the same coins.
    pub fn with_seed(seed: u64) -> Self {
        QuantileSketch { levels: vec![Vec::new()], count: 0, level0_limit: Self::K, rng: seed }
    }

    /// Adds one value. NaN must not be passed (callers drop missing values first): it would be
    /// ordered above +infinity. ±infinity are ordinary values.
    pub fn insert(&mut self, value: f64) {
        self.extend_from_slice(&[value]);
    }

    /// Adds a batch of values: the same sketch as inserting them one by one, faster. NaN must
    /// not be passed (see [`insert`](Self::insert)).
    pub fn extend_from_slice(&mut self, values: &[f64]) {
        debug_assert!(!values.iter().any(|v| v.is_nan()), "NaN passed to a quantile sketch");
        let mut rest = values;
        while !rest.is_empty() {
            // Take values up to one past the limit: that one triggers the compression, exactly
            // when inserting them one by one would.
            let room = self.level0_limit.saturating_sub(self.levels[0].len());
            let (now, later) = rest.split_at(rest.len().min(room + 1));
            self.levels[0].extend(now.iter().map(|&value| to_key(value)));
            self.count += now.len() as u64;
            if self.levels[0].len() > self.level0_limit {
                self.compress();
            }
            rest = later;
        }
    }

    /// Adds every value of `other` to `self`. Two exact sketches whose counts sum to at most
    /// [`K`](Self::K) give an exact sketch. `self` keeps its own PRNG state.
    pub fn merge(&mut self, other: QuantileSketch) {
        if other.levels.len() > self.levels.len() {
            self.levels.resize_with(other.levels.len(), Vec::new);
        }
        for (level, items) in self.levels.iter_mut().zip(other.levels) {
            level.extend(items);
        }
        self.count += other.count;
        if self.retained() > total_capacity(self.levels.len()) {
            self.compress();
        } else {
            self.update_level0_limit();
        }
    }

    /// Number of values inserted, merged ones included.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Every value's key, sorted, while the sketch holds them all ([`Self::is_exact`]).
    pub(crate) fn sorted_keys_if_exact(&self) -> Option<Vec<u64>> {
        self.is_exact().then(|| {
            let mut keys = self.levels[0].clone();
            keys.sort_unstable();
            keys
        })
    }

    /// True while the sketch still holds every value it was given (no compaction happened).
    pub fn is_exact(&self) -> bool {
        self.levels.len() == 1
    }

    /// The `q`-quantile of the values, `None` when the sketch is empty.
    ///
    /// Exact sketch: `numpy.quantile(values, q)` with its default `'linear'` method: for sorted
    /// `x` of length `n`, `h = (n − 1) · q`, `lo = ⌊h⌋`, `t = h − lo`, the result is `x[lo]`
    /// interpolated towards `x[lo + 1]` by `t` (with numpy's formula, computed from the upper
    /// end when `t ≥ 0.5`). For `q = 0.5` and an even `n` it is the mean of the two middle
    /// values, like `numpy.median`. Where numpy would compute `∞ − ∞`, the result is the
    /// mathematical limit instead: `x[lo]` when `t = 0` or `x[lo] == x[lo + 1]`, the infinite end
    /// when exactly one end is infinite, and NaN only between −∞ and +∞ (as numpy).
    ///
    /// Approximate sketch: the same formula over the sample where each retained item is
    /// repeated as many times as its weight (the values it stands for), i.e. the item whose
    /// estimated rank range covers `q · (n − 1)`, interpolated with the next item only when the
    /// position falls between two items.
    ///
    /// # Panics
    /// When `q` is not in `[0, 1]` (NaN included): callers validate it when binding a step.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        assert!((0.0..=1.0).contains(&q), "quantile {q} is not in [0, 1]");
        if self.count == 0 {
            return None;
        }
        let items = self.sorted_items();
        let position = (self.count - 1) as f64 * q;
        let lo = position.floor();
        let t = position - lo;
        let lo = lo as u64;
        let a = value_at(&items, lo);
        if lo + 1 >= self.count {
            return Some(a);
        }
        let b = value_at(&items, lo + 1);
        Some(interpolate(a, b, t, q == 0.5))
    }

    /// Number of items held, over all levels.
    fn retained(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }

    /// Compacts levels, lowest full one first, until the items fit in the total capacity.
    fn compress(&mut self) {
        while self.retained() > total_capacity(self.levels.len()) {
            // Some level is over its capacity, as the total is: compact the lowest full one.
            let height = self.levels.len();
            let h = (0..height)
                .find(|&h| self.levels[h].len() >= level_capacity(height - 1 - h))
                .expect("a sketch over its total capacity has a full level");
            self.compact_level(h);
        }
        self.update_level0_limit();
    }

    /// Sorts level `h` and moves every other item (from a random offset) to level `h + 1`; the
    /// others are dropped. With an odd length, the largest item stays at level `h`, so the
    /// weights still sum to the count.
    fn compact_level(&mut self, h: usize) {
        if h + 1 == self.levels.len() {
            self.levels.push(Vec::new());
        }
        let offset = self.next_bit();
        let (lower, upper) = self.levels.split_at_mut(h + 1);
        let level = &mut lower[h];
        level.sort_unstable();
        let leftover = if level.len() % 2 == 1 { level.pop() } else { None };
        upper[0].extend(level.iter().skip(offset).step_by(2));
        level.clear();
        level.extend(leftover);
    }

    fn update_level0_limit(&mut self) {
        let above: usize = self.levels[1..].iter().map(Vec::len).sum();
        self.level0_limit = total_capacity(self.levels.len()) - above;
    }

    /// One coin flip (0 or 1) from splitmix64.
    fn next_bit(&mut self) -> usize {
        (crate::splitmix::next(&mut self.rng) >> 63) as usize
    }

    /// Every retained item as `(key, weight)`, sorted by key.
    fn sorted_items(&self) -> Vec<(u64, u64)> {
        let mut items = Vec::with_capacity(self.retained());
        for (h, level) in self.levels.iter().enumerate() {
            let weight = 1u64 << h;
            items.extend(level.iter().map(|&key| (key, weight)));
        }
        items.sort_unstable_by_key(|&(key, _)| key);
        items
    }
}

impl Default for QuantileSketch {
    fn default() -> Self {
        Self::new()
    }
}

/// Capacity of a level `depth` levels below the top: `K · (2/3)^depth` rounded up step by step,
/// at least [`MIN_LEVEL_CAPACITY`]. Integer arithmetic, so every machine agrees.
fn level_capacity(depth: usize) -> usize {
    let mut capacity = QuantileSketch::K;
    for _ in 0..depth {
        capacity = (2 * capacity).div_ceil(3);
        if capacity <= MIN_LEVEL_CAPACITY {
            return MIN_LEVEL_CAPACITY;
        }
    }
    capacity
}

/// Sum of the capacities of a sketch with `height` levels.
fn total_capacity(height: usize) -> usize {
    (0..height).map(level_capacity).sum()
}

/// The value at 0-based `position` of the sorted sample where each item is repeated `weight`
/// times. `position` must be below the total weight.
fn value_at(items: &[(u64, u64)], position: u64) -> f64 {
    let mut end = 0;
    for &(key, weight) in items {
        end += weight;
        if position < end {
            return from_key(key);
        }
    }
    unreachable!("position {position} is past the sketch's total weight {end}")
}

/// Interpolates from `a` towards `b` (`a ≤ b`) by `t` in `[0, 1)` like numpy's `'linear'`
/// quantile, or averages them like `numpy.median` when `median` (then `t` is 0.5), with the
/// infinite cases resolved as described on [`QuantileSketch::quantile`].
pub(crate) fn interpolate(a: f64, b: f64, t: f64, median: bool) -> f64 {
    if t == 0.0 || a == b {
        return a;
    }
    if a.is_infinite() || b.is_infinite() {
        return if a.is_infinite() && b.is_infinite() {
            f64::NAN
        } else if a.is_infinite() {
            a
        } else {
            b
        };
    }
    if median {
        let mean = (a + b) / 2.0;
        // a + b overflows only for two huge values of the same sign; numpy would say ±inf.
        return if mean.is_finite() { mean } else { a / 2.0 + b / 2.0 };
    }
    let diff = b - a;
    if t >= 0.5 { b - diff * (1.0 - t) } else { a + diff * t }
}

/// Maps a non-NaN `f64` to a `u64` with the same order (−∞ lowest, −0.0 just below +0.0).
pub(crate) fn to_key(value: f64) -> u64 {
    let bits = value.to_bits();
    if bits >> 63 == 1 { !bits } else { bits | (1 << 63) }
}

/// Inverse of [`to_key`].
pub(crate) fn from_key(key: u64) -> f64 {
    if key >> 63 == 1 { f64::from_bits(key & !(1 << 63)) } else { f64::from_bits(!key) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64, for test data.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// numpy.quantile(x, q) (method 'linear'), and numpy.median(x) for q = 0.5, on sorted `x`,
    /// with the infinite cases as documented on `QuantileSketch::quantile`.
    fn numpy_linear(x: &[f64], q: f64) -> f64 {
        let n = x.len();
        let h = (n - 1) as f64 * q;
        let lo = h.floor() as usize;
        let t = h - lo as f64;
        if lo == n - 1 || t == 0.0 {
            return x[lo];
        }
        let (a, b) = (x[lo], x[lo + 1]);
        if a == b {
            a
        } else if a == f64::NEG_INFINITY && b == f64::INFINITY {
            f64::NAN
        } else if a.is_infinite() {
            a
        } else if b.is_infinite() {
            b
        } else if q == 0.5 {
            (a + b) / 2.0
        } else if t >= 0.5 {
            b - (b - a) * (1.0 - t)
        } else {
            a + (b - a) * t
        }
    }

    fn sorted(values: &[f64]) -> Vec<f64> {
        let mut sorted = values.to_vec();
        sorted.sort_unstable_by(f64::total_cmp);
        sorted
    }

    fn sketch_of(values: &[f64]) -> QuantileSketch {
        let mut sketch = QuantileSketch::new();
        sketch.extend_from_slice(values);
        sketch
    }

    /// Same value, or both NaN.
    fn same(a: f64, b: f64) -> bool {
        a == b || (a.is_nan() && b.is_nan())
    }

    const QS: [f64; 13] = [0.0, 0.01, 0.1, 0.2, 0.25, 1.0 / 3.0, 0.5, 0.6, 0.75, 0.9, 0.99, 0.999, 1.0];

    fn assert_matches_numpy(values: &[f64], sketch: &QuantileSketch) {
        let x = sorted(values);
        assert!(sketch.is_exact());
        assert_eq!(sketch.count(), values.len() as u64);
        for q in QS {
            let got = sketch.quantile(q).unwrap();
            let want = numpy_linear(&x, q);
            assert!(same(got, want), "q = {q}: got {got}, want {want} for {values:?}");
        }
    }

    #[test]
    fn keys_preserve_order_and_round_trip() {
        let values =
            [f64::NEG_INFINITY, -1e300, -1.5, -f64::MIN_POSITIVE, -0.0, 0.0, 5e-324, 1.0, 1e300, f64::INFINITY];
        for pair in values.windows(2) {
            assert!(to_key(pair[0]) < to_key(pair[1]), "{pair:?}");
        }
        for v in values {
            assert_eq!(from_key(to_key(v)).to_bits(), v.to_bits());
        }
    }

    #[test]
    fn empty_sketch_has_no_quantile() {
        let sketch = QuantileSketch::default();
        assert_eq!(sketch.count(), 0);
        assert!(sketch.is_exact());
        assert_eq!(sketch.quantile(0.5), None);
    }

    #[test]
    fn known_numpy_values() {
        // Values computed with numpy.quantile / numpy.median.
        let s = sketch_of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!(s.quantile(0.5), Some(2.5));
        assert_eq!(s.quantile(0.25), Some(1.75));
        assert_eq!(s.quantile(0.75), Some(3.25));
        assert_eq!(s.quantile(0.0), Some(1.0));
        assert_eq!(s.quantile(1.0), Some(4.0));
        let s = sketch_of(&[3.0, 1.0, 2.0]);
        assert_eq!(s.quantile(0.5), Some(2.0));
        let s = sketch_of(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(s.quantile(0.1), Some(1.4));
        assert_eq!(s.quantile(0.9), Some(4.6));
        let s = sketch_of(&[7.5]);
        assert_eq!(s.quantile(0.0), Some(7.5));
        assert_eq!(s.quantile(0.3), Some(7.5));
        assert_eq!(s.quantile(1.0), Some(7.5));
    }

    #[test]
    fn exact_small_inputs_match_numpy() {
        let cases: Vec<Vec<f64>> = vec![
            vec![42.0],
            vec![2.0, 1.0],
            vec![5.0, -3.0, 0.5],
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            vec![0.1, 0.2, 0.3, 0.7, 0.9, 1.3, 2.9],
            vec![3.0, 3.0, 3.0, 3.0],
            vec![1.0, 1.0, 2.0, 2.0, 2.0, 9.0, 9.0, -4.0],
            vec![f64::INFINITY, 1.0, 2.0, f64::NEG_INFINITY],
            vec![f64::NEG_INFINITY, f64::INFINITY],
            vec![f64::INFINITY, f64::INFINITY, 0.0],
            vec![f64::NEG_INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY, 3.0],
            vec![-0.0, 0.0, 1e-300, -1e300, 1e300],
        ];
        for values in &cases {
            assert_matches_numpy(values, &sketch_of(values));
        }
        let mut rng = Rng(7);
        for n in [10, 11, 100, 101, 1000, QuantileSketch::K] {
            let values: Vec<f64> = (0..n).map(|_| (rng.unit() * 50.0).round() - 10.0 + rng.unit()).collect();
            assert_matches_numpy(&values, &sketch_of(&values));
        }
    }

    #[test]
    fn infinite_ends() {
        let s = sketch_of(&[f64::NEG_INFINITY, 1.0, 2.0, f64::INFINITY]);
        assert_eq!(s.quantile(0.0), Some(f64::NEG_INFINITY));
        assert_eq!(s.quantile(0.2), Some(f64::NEG_INFINITY));
        assert_eq!(s.quantile(0.5), Some(1.5));
        assert_eq!(s.quantile(0.9), Some(f64::INFINITY));
        assert_eq!(s.quantile(1.0), Some(f64::INFINITY));
        assert!(sketch_of(&[f64::NEG_INFINITY, f64::INFINITY]).quantile(0.5).unwrap().is_nan());
        assert_eq!(sketch_of(&[f64::INFINITY, f64::INFINITY]).quantile(0.5), Some(f64::INFINITY));
        // The median of two huge values does not overflow.
        assert_eq!(sketch_of(&[1e308, 1.7e308]).quantile(0.5), Some(1.35e308));
    }

    #[test]
    fn insert_and_extend_give_the_same_sketch() {
        let mut rng = Rng(3);
        let values: Vec<f64> = (0..3 * QuantileSketch::K + 17).map(|_| rng.unit()).collect();
        let mut one_by_one = QuantileSketch::with_seed(9);
        for &v in &values {
            one_by_one.insert(v);
        }
        let mut batched = QuantileSketch::with_seed(9);
        for chunk in values.chunks(1000) {
            batched.extend_from_slice(chunk);
        }
        assert_eq!(one_by_one, batched);
        assert!(!batched.is_exact());
    }

    #[test]
    fn exactness_survives_merges_up_to_k() {
        let mut rng = Rng(11);
        let mut all = Vec::new();
        let mut merged = QuantileSketch::new();
        // Seven sketches of different sizes (and seeds) whose counts sum to exactly K.
        let sizes = [1, 2, 1000, 3000, 0, 4000, QuantileSketch::K - 8003];
        for (seed, &size) in sizes.iter().enumerate() {
            let values: Vec<f64> = (0..size).map(|_| (rng.unit() * 100.0).floor()).collect();
            let mut part = QuantileSketch::with_seed(seed as u64);
            part.extend_from_slice(&values);
            all.extend_from_slice(&values);
            merged.merge(part);
            assert_matches_numpy(&all, &merged);
        }
        assert_eq!(merged.count(), QuantileSketch::K as u64);
        // Into an empty sketch too.
        let mut empty = QuantileSketch::with_seed(1);
        empty.merge(merged.clone());
        assert_matches_numpy(&all, &empty);
        // One more value, and the sketch compacts.
        merged.insert(0.5);
        assert!(!merged.is_exact());
        assert_eq!(merged.count(), QuantileSketch::K as u64 + 1);
    }

    #[test]
    fn deterministic_for_a_seed() {
        let mut rng = Rng(5);
        let values: Vec<f64> = (0..100_000).map(|_| rng.unit()).collect();
        let mut a = QuantileSketch::with_seed(1);
        a.extend_from_slice(&values);
        let mut b = QuantileSketch::with_seed(1);
        b.extend_from_slice(&values);
        assert_eq!(a, b);
        let mut c = QuantileSketch::with_seed(2);
        c.extend_from_slice(&values);
        assert_ne!(a, c);
    }

    #[test]
    fn serde_round_trip() {
        let mut rng = Rng(13);
        let values: Vec<f64> = (0..50_000).map(|_| rng.unit() * 1e6 - 5e5).collect();
        for sketch in
            [QuantileSketch::new(), sketch_of(&[1.0, f64::NEG_INFINITY, -0.0, f64::INFINITY]), sketch_of(&values)]
        {
            let json = serde_json::to_string(&sketch).unwrap();
            let back: QuantileSketch = serde_json::from_str(&json).unwrap();
            assert_eq!(back, sketch);
            assert!(same(back.quantile(0.5).unwrap_or(0.0), sketch.quantile(0.5).unwrap_or(0.0)));
        }
    }

    #[test]
    fn memory_stays_bounded() {
        let mut sketch = QuantileSketch::new();
        for i in 0..1_000_000u32 {
            sketch.insert(f64::from(i.wrapping_mul(2_654_435_761)));
            if i % 1000 == 0 {
                assert!(sketch.retained() <= total_capacity(sketch.levels.len()));
            }
        }
        assert_eq!(sketch.count(), 1_000_000);
        assert!(sketch.retained() < 4 * QuantileSketch::K, "{} items retained", sketch.retained());
        assert!(sketch.retained() < 100_000);
        // The weights still sum to the count.
        let weight: u64 = sketch.sorted_items().iter().map(|&(_, w)| w).sum();
        assert_eq!(weight, sketch.count());
    }

    /// Largest normalized rank error of the 4-way merged sketch of `values` over a few quantiles.
    fn max_rank_error(values: &[f64]) -> f64 {
        let n = values.len();
        let mut merged = QuantileSketch::with_seed(0);
        for (worker, part) in values.chunks(n.div_ceil(4)).enumerate() {
            let mut sketch = QuantileSketch::with_seed(worker as u64);
            for batch in part.chunks(4096) {
                sketch.extend_from_slice(batch);
            }
            merged.merge(sketch);
        }
        assert_eq!(merged.count(), n as u64);
        assert!(!merged.is_exact());
        let x = sorted(values);
        let mut worst: f64 = 0.0;
        for q in [0.01, 0.1, 0.5, 0.9, 0.99] {
            let value = merged.quantile(q).unwrap();
            // Positions the value occupies in the sorted data; a value between two data points
            // occupies the gap between their positions.
            let below = x.partition_point(|&v| v < value);
            let up_to = x.partition_point(|&v| v <= value);
            let (first, last) = if up_to > below { (below, up_to - 1) } else { (below.saturating_sub(1), below) };
            let target = q * (n - 1) as f64;
            let error = (first as f64 - target).max(target - last as f64).max(0.0) / n as f64;
            assert!(error <= QuantileSketch::RANK_ERROR, "q = {q}: value {value}, rank error {error}");
            worst = worst.max(error);
        }
        eprintln!("max normalized rank error: {worst:.6}");
        worst
    }

    const N: usize = 1_000_000;

    #[test]
    fn rank_error_uniform() {
        let mut rng = Rng(21);
        let values: Vec<f64> = (0..N).map(|_| rng.unit()).collect();
        max_rank_error(&values);
    }

    #[test]
    fn rank_error_shuffled_permutation() {
        let mut rng = Rng(22);
        let mut values: Vec<f64> = (0..N).map(|i| i as f64).collect();
        for i in (1..N).rev() {
            values.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        max_rank_error(&values);
    }

    #[test]
    fn rank_error_heavy_duplicates() {
        let mut rng = Rng(23);
        let values: Vec<f64> = (0..N).map(|_| (rng.next_u64() % 7) as f64).collect();
        max_rank_error(&values);
    }

    #[test]
    fn rank_error_large_offset() {
        let mut rng = Rng(24);
        let values: Vec<f64> = (0..N).map(|_| 1e12 + rng.unit()).collect();
        max_rank_error(&values);
    }

    #[test]
    fn rank_error_sorted_input() {
        // Data often arrives sorted by some column: ascending within each worker's part.
        let values: Vec<f64> = (0..N).map(|i| (i as f64).sqrt()).collect();
        max_rank_error(&values);
    }
}
