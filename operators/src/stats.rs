//! Mergeable per-column statistics that fitted steps fold batches into: moments (count,
//! mean and the sum of squared deviations, merged with Chan's update), ranges (min/max) and
//! value counts (for the most frequent value). Each folds a batch, merges with a partial
//! from another worker, and is serializable so it can cross processes.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float32Type, Float64Type};
use serde::{Deserialize, Serialize};

use crate::OpError;

/// Whether every value is finite (neither NaN nor infinite). A scan without an early exit,
/// which the compiler vectorizes, unlike `iter().any(..)`: the common answer (all finite)
/// needs every value looked at anyway.
pub fn all_finite(values: &[f64]) -> bool {
    values.chunks(4096).all(|chunk| chunk.iter().fold(true, |all, v| all & v.is_finite()))
}

/// Count, mean and `m2 = Σ (x - mean)²` of the non-missing values seen.
///
/// Accuracy: the mean is kept as `shift + offset`, where `shift` is the first value seen
/// and `offset` the (small) distance of the mean from it, so a column of `1e12 + noise`
/// keeps the noise's digits instead of rounding the mean to the spacing of `f64` at 1e12
/// (about 1e-4). A batch is folded with the corrected two-pass formula around its own
/// mean, then merged with Chan et al.'s pairwise update, where the distance between two
/// means is computed from their shifts (an exact subtraction for nearby values) and
/// offsets. Nothing subtracts two large sums, as the naive `Σx² - (Σx)²/n` does.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Moments {
    pub count: u64,
    /// The first value seen; the mean is `shift + offset`.
    pub shift: f64,
    pub offset: f64,
    pub m2: f64,
    /// Whether an infinite value was seen (it would make the moments meaningless).
    pub infinite: bool,
}

impl Moments {
    /// Folds a slice of values that holds no NaN.
    pub fn fold(&mut self, values: &[f64]) {
        if values.is_empty() {
            return;
        }
        if !all_finite(values) && values.iter().any(|v| v.is_infinite()) {
            self.infinite = true;
            return;
        }
        let n = values.len() as f64;
        let shift = values[0];
        let offset = values.iter().map(|v| v - shift).sum::<f64>() / n;
        let (mut squares, mut deviations) = (0.0, 0.0);
        for v in values {
            let d = (v - shift) - offset;
            squares += d * d;
            deviations += d;
        }
        let batch = Moments {
            count: values.len() as u64,
            shift,
            offset,
            m2: (squares - deviations * deviations / n).max(0.0),
            infinite: false,
        };
        self.merge(&batch);
    }

    /// Chan's parallel update.
    pub fn merge(&mut self, other: &Moments) {
        self.infinite |= other.infinite;
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            let infinite = self.infinite;
            *self = *other;
            self.infinite = infinite;
            return;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let delta = (other.shift - self.shift) + (other.offset - self.offset);
        self.offset += delta * (nb / n);
        self.m2 += other.m2 + delta * delta * (na * nb / n);
        self.count += other.count;
    }

    /// The mean of the values seen.
    pub fn mean(&self) -> f64 {
        self.shift + self.offset
    }

    /// Population variance (ddof = 0).
    pub fn variance(&self) -> f64 {
        if self.count == 0 { f64::NAN } else { self.m2 / self.count as f64 }
    }
}

/// Count, min and max of the non-missing values seen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Range {
    pub count: u64,
    pub min: f64,
    pub max: f64,
}

impl Default for Range {
    fn default() -> Self {
        Range { count: 0, min: f64::INFINITY, max: f64::NEG_INFINITY }
    }
}

impl Range {
    /// Folds a slice of values that holds no NaN.
    pub fn fold(&mut self, values: &[f64]) {
        for &v in values {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.count += values.len() as u64;
    }

    pub fn merge(&mut self, other: &Range) {
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// How often each non-missing value occurs, keyed in the column's own kind so integer
/// columns stay integer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ValueCounts {
    Int(HashMap<i64, u64>),
    UInt(HashMap<u64, u64>),
    /// Keyed by the bits of the value (with `-0.0` folded into `0.0`).
    Float(HashMap<u64, u64>),
    Text(HashMap<String, u64>),
}

/// The most frequent value of a column, in its own kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ModeValue {
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
}

impl ValueCounts {
    /// Empty counts for a column of `data_type`; `None` for types that have no kind here.
    pub fn for_type(data_type: &DataType) -> Option<ValueCounts> {
        Some(match data_type {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => ValueCounts::Int(HashMap::new()),
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
                ValueCounts::UInt(HashMap::new())
            }
            DataType::Float32 | DataType::Float64 => ValueCounts::Float(HashMap::new()),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ValueCounts::Text(HashMap::new()),
            _ => return None,
        })
    }

    /// Counts the non-null, non-NaN values of `column`.
    pub fn fold(&mut self, column: &ArrayRef) -> Result<(), OpError> {
        match self {
            ValueCounts::Int(counts) => {
                let column = arrow::compute::cast(column, &DataType::Int64)?;
                for v in column.as_primitive::<arrow::datatypes::Int64Type>().iter().flatten() {
                    *counts.entry(v).or_default() += 1;
                }
            }
            ValueCounts::UInt(counts) => {
                let column = arrow::compute::cast(column, &DataType::UInt64)?;
                for v in column.as_primitive::<arrow::datatypes::UInt64Type>().iter().flatten() {
                    *counts.entry(v).or_default() += 1;
                }
            }
            ValueCounts::Float(counts) => {
                let mut count = |v: f64| {
                    if !v.is_nan() {
                        *counts.entry((v + 0.0).to_bits()).or_default() += 1;
                    }
                };
                match column.data_type() {
                    DataType::Float32 => {
                        column.as_primitive::<Float32Type>().iter().flatten().for_each(|v| count(v as f64))
                    }
                    _ => column.as_primitive::<Float64Type>().iter().flatten().for_each(count),
                }
            }
            ValueCounts::Text(counts) => {
                let column = arrow::compute::cast(column, &DataType::Utf8)?;
                for v in column.as_string::<i32>().iter().flatten() {
                    match counts.get_mut(v) {
                        Some(n) => *n += 1,
                        None => {
                            counts.insert(v.to_string(), 1);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub fn merge(&mut self, other: ValueCounts) -> Result<(), OpError> {
        fn add<K: std::hash::Hash + Eq>(into: &mut HashMap<K, u64>, from: HashMap<K, u64>) {
            for (k, n) in from {
                *into.entry(k).or_default() += n;
            }
        }
        match (self, other) {
            (ValueCounts::Int(a), ValueCounts::Int(b)) => add(a, b),
            (ValueCounts::UInt(a), ValueCounts::UInt(b)) => add(a, b),
            (ValueCounts::Float(a), ValueCounts::Float(b)) => add(a, b),
            (ValueCounts::Text(a), ValueCounts::Text(b)) => add(a, b),
            _ => return Err(OpError::Internal("value counts of different kinds cannot merge".to_string())),
        }
        Ok(())
    }

    /// The number of non-missing values counted.
    pub fn total(&self) -> u64 {
        match self {
            ValueCounts::Int(c) => c.values().sum(),
            ValueCounts::UInt(c) => c.values().sum(),
            ValueCounts::Float(c) => c.values().sum(),
            ValueCounts::Text(c) => c.values().sum(),
        }
    }

    /// Every value counted, each once, in ascending order (strings by code point).
    pub fn sorted_values(&self) -> Vec<ModeValue> {
        self.sorted_counts().into_iter().map(|(value, _)| value).collect()
    }

    /// Every value counted with its count, in ascending order of value.
    pub fn sorted_counts(&self) -> Vec<(ModeValue, u64)> {
        fn sorted<K: Clone + Ord>(counts: &HashMap<K, u64>) -> Vec<(K, u64)> {
            let mut pairs: Vec<(K, u64)> = counts.iter().map(|(k, n)| (k.clone(), *n)).collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            pairs
        }
        match self {
            ValueCounts::Int(c) => sorted(c).into_iter().map(|(v, n)| (ModeValue::Int(v), n)).collect(),
            ValueCounts::UInt(c) => sorted(c).into_iter().map(|(v, n)| (ModeValue::UInt(v), n)).collect(),
            ValueCounts::Float(c) => {
                let mut pairs: Vec<(f64, u64)> = c.iter().map(|(bits, n)| (f64::from_bits(*bits), *n)).collect();
                pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
                pairs.into_iter().map(|(v, n)| (ModeValue::Float(v), n)).collect()
            }
            ValueCounts::Text(c) => sorted(c).into_iter().map(|(v, n)| (ModeValue::Text(v), n)).collect(),
        }
    }

    /// How many distinct values were counted.
    pub fn distinct(&self) -> usize {
        match self {
            ValueCounts::Int(c) => c.len(),
            ValueCounts::UInt(c) => c.len(),
            ValueCounts::Float(c) => c.len(),
            ValueCounts::Text(c) => c.len(),
        }
    }

    /// The most frequent value; ties go to the smallest value (as scikit-learn's
    /// `SimpleImputer(strategy="most_frequent")`). `None` when nothing was counted.
    pub fn mode(&self) -> Option<ModeValue> {
        fn best<K: Clone, F: Fn(&K, &K) -> std::cmp::Ordering>(counts: &HashMap<K, u64>, cmp: F) -> Option<K> {
            counts.iter().max_by(|(ka, na), (kb, nb)| na.cmp(nb).then_with(|| cmp(kb, ka))).map(|(k, _)| k.clone())
        }
        match self {
            ValueCounts::Int(c) => best(c, |a, b| a.cmp(b)).map(ModeValue::Int),
            ValueCounts::UInt(c) => best(c, |a, b| a.cmp(b)).map(ModeValue::UInt),
            ValueCounts::Float(c) => best(c, |a, b| f64::from_bits(*a).total_cmp(&f64::from_bits(*b)))
                .map(|b| ModeValue::Float(f64::from_bits(b))),
            ValueCounts::Text(c) => best(c, |a, b| a.cmp(b)).map(ModeValue::Text),
        }
    }
}

/// The non-missing (non-null, non-NaN) values of a `Float64` array, appended to `into`.
pub fn present_values(column: &arrow::array::Float64Array, into: &mut Vec<f64>) {
    into.clear();
    if column.null_count() == 0 {
        into.extend(column.values().iter().copied().filter(|v| !v.is_nan()));
    } else {
        into.extend(column.iter().flatten().filter(|v| !v.is_nan()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn naive_var(values: &[f64]) -> f64 {
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / values.len() as f64
    }

    #[test]
    fn moments_merged_from_pieces_match_the_whole() {
        let values: Vec<f64> = (0..1000).map(|i| ((i * 37) % 101) as f64 * 0.5 - 7.0).collect();
        let mut whole = Moments::default();
        whole.fold(&values);
        let mut merged = Moments::default();
        for chunk in values.chunks(77) {
            let mut part = Moments::default();
            part.fold(chunk);
            merged.merge(&part);
        }
        let reference = naive_var(&values);
        assert!((whole.variance() - reference).abs() < 1e-12 * reference);
        assert!((merged.variance() - reference).abs() < 1e-12 * reference);
        assert_eq!(merged.count, 1000);
    }

    #[test]
    fn a_huge_offset_keeps_the_variance_of_the_noise() {
        let noise: Vec<f64> = (0..10_000).map(|i| ((i * 7919) % 1000) as f64 / 1000.0).collect();
        let shifted: Vec<f64> = noise.iter().map(|v| v + 1e12).collect();
        let mut merged = Moments::default();
        for chunk in shifted.chunks(999) {
            let mut part = Moments::default();
            part.fold(chunk);
            merged.merge(&part);
        }
        // The shifted values are the noise rounded to the spacing of f64 at 1e12; taking the
        // offset away again is exact, so this is the true variance of what was folded.
        let exact: Vec<f64> = shifted.iter().map(|v| v - 1e12).collect();
        let reference = naive_var(&exact);
        assert!((merged.variance() - reference).abs() < 1e-9 * reference, "{} vs {reference}", merged.variance());
    }

    #[test]
    fn the_mode_breaks_ties_toward_the_smallest_value() {
        let mut counts = ValueCounts::for_type(&DataType::Int32).unwrap();
        let column: ArrayRef = Arc::new(arrow::array::Int32Array::from(vec![Some(5), Some(3), None, Some(5), Some(3)]));
        counts.fold(&column).unwrap();
        assert_eq!(counts.mode(), Some(ModeValue::Int(3)));
        assert_eq!(counts.total(), 4);
        let mut text = ValueCounts::for_type(&DataType::Utf8).unwrap();
        let column: ArrayRef = Arc::new(arrow::array::StringArray::from(vec!["b", "a", "b"]));
        text.fold(&column).unwrap();
        assert_eq!(text.mode(), Some(ModeValue::Text("b".into())));
    }
}
