//! What the categorical encoders (`ordinal`, `onehot`) share: the columns they take, how
//! rare categories are grouped (`min_frequency`, `max_categories`, as scikit-learn 1.1+
//! groups them), and the bound on how many distinct values a worker counts.

use arrow::datatypes::{DataType, Field};
use serde::{Deserialize, Serialize};

use crate::OpError;

/// The most distinct values one worker counts per column: past it the column is an
/// identifier (for `hash_encode`), and counting it would only run the process out of memory.
pub const MAX_DISTINCT: usize = 1_000_000;

/// `min_frequency`: a count, or a fraction of the rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MinFrequency {
    Count(u64),
    Fraction(f64),
}

/// Refuses a column an encoder cannot take: categories are strings or integers.
pub fn check_category_column(op: &str, field: &Field) -> Result<(), OpError> {
    let fits = field.data_type().is_integer()
        || matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    match fits {
        true => Ok(()),
        false => Err(OpError::InvalidSpec(format!(
            "{op} encodes string or integer columns; column '{}' is {}",
            field.name(),
            field.data_type()
        ))),
    }
}

/// Refuses a `min_frequency` or `max_categories` that groups nothing sensible.
pub fn check_grouping(min_frequency: Option<MinFrequency>, max_categories: Option<usize>) -> Result<(), OpError> {
    match min_frequency {
        Some(MinFrequency::Count(0)) => {
            return Err(OpError::InvalidSpec(
                "min_frequency must be a count of at least 1, or a fraction in (0, 1)".into(),
            ));
        }
        Some(MinFrequency::Fraction(f)) if !(f > 0.0 && f < 1.0) => {
            return Err(OpError::InvalidSpec(format!(
                "min_frequency = {f}: a count of at least 1, or a fraction in (0, 1)"
            )));
        }
        _ => {}
    }
    if max_categories.is_some_and(|max| max < 1) {
        return Err(OpError::InvalidSpec("max_categories must be at least 1".into()));
    }
    Ok(())
}

/// The column's distinct-value bound, checked as counting goes.
pub fn check_distinct(column: &str, distinct: usize) -> Result<(), OpError> {
    match distinct > MAX_DISTINCT {
        true => Err(OpError::InvalidSpec(format!(
            "column '{column}' has more than {MAX_DISTINCT} distinct values: too many categories to count (an identifier?); hash it with hash_encode"
        ))),
        false => Ok(()),
    }
}

/// scikit-learn's `_identify_infrequent`: which of the sorted categories, with `counts`,
/// are infrequent among `rows` rows. A category seen fewer than `min_frequency` times (or
/// in less than that fraction of the rows) is infrequent; with `max_categories`, only the
/// `max_categories − 1` most frequent stay frequent (ties: the later category in sorted
/// order stays, as NumPy's stable argsort leaves them).
pub fn infrequent(
    counts: &[u64],
    rows: u64,
    min_frequency: Option<MinFrequency>,
    max_categories: Option<usize>,
) -> Vec<bool> {
    let mut infrequent: Vec<bool> = match min_frequency {
        Some(MinFrequency::Count(min)) => counts.iter().map(|&n| n < min).collect(),
        Some(MinFrequency::Fraction(f)) => counts.iter().map(|&n| (n as f64) < rows as f64 * f).collect(),
        None => vec![false; counts.len()],
    };
    let frequent = counts.len() - infrequent.iter().filter(|&&i| i).count();
    if let Some(max) = max_categories
        && max < frequent + 1
    {
        let keep = max - 1;
        if keep == 0 {
            infrequent.iter_mut().for_each(|i| *i = true);
        } else {
            // NumPy's stable argsort by count: all but the last `keep` are infrequent.
            let mut order: Vec<usize> = (0..counts.len()).collect();
            order.sort_by_key(|&i| counts[i]);
            for &i in &order[..order.len() - keep] {
                infrequent[i] = true;
            }
        }
    }
    infrequent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_categories_keeps_the_most_frequent_and_ties_keep_the_later_category() {
        // Counts of categories a < b < c < d; max 3 keeps two: d (9), then c over b (tie 5).
        assert_eq!(infrequent(&[1, 5, 5, 9], 20, None, Some(3)), [true, true, false, false]);
        assert_eq!(infrequent(&[1, 5, 5, 9], 20, Some(MinFrequency::Count(5)), None), [true, false, false, false]);
        assert_eq!(infrequent(&[1, 5, 5, 9], 20, Some(MinFrequency::Fraction(0.3)), None), [true, true, true, false]);
        assert_eq!(infrequent(&[1, 5], 6, None, Some(1)), [true, true]);
    }
}
