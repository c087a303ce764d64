//! Interventional Shapley values of one model output, for rows of features, against a
//! background sample (the `explain` step's arithmetic, apart from ONNX Runtime).
//!
//! The value of a coalition `S` of features for a row `x` is `v(S) = mean_b f(x_S, b_¬S)`:
//! the model's output with the features in `S` taken from `x` and the others from each
//! background row `b`, averaged over the background. The Shapley value of feature `i` is
//! `φ_i = Σ_{S ∌ i} |S|! (F − |S| − 1)! / F! · (v(S ∪ {i}) − v(S))`, and they add up to
//! `f(x) − v(∅)`, where `v(∅)` is the base value (the mean output over the background).
//!
//! - [`exact`] enumerates all `2^F` coalitions: `2^F · B` model rows per explained row.
//! - [`permutation`] is the antithetic permutation estimator (as `shap`'s
//!   `PermutationExplainer`): for each of `pairs` random feature orders and its reverse, the
//!   features join one at a time, each credited with the change of `v`. Every order's
//!   credits add up to `f(x) − v(∅)` exactly, so additivity holds for any budget; the
//!   estimate converges to the exact values as the orders grow. It costs `2 · pairs ·
//!   (F − 1)` coalitions (`· B` model rows) per row, plus `v(∅)` and `f(x)` once.
//!
//! Orders come from a seeded generator and are the same for every row, and the model is
//! called on blocks whose make-up depends only on the rows given, so a row's values do
//! not depend on which worker explains it.

use crate::OpError;
use crate::splitmix;

/// Evaluates the model output being explained on `rows` (row-major, `width` per row).
pub trait Evaluate {
    fn evaluate(&self, rows: &[f64], width: usize) -> Result<Vec<f64>, OpError>;
}

impl<F: Fn(&[f64], usize) -> Result<Vec<f64>, OpError>> Evaluate for F {
    fn evaluate(&self, rows: &[f64], width: usize) -> Result<Vec<f64>, OpError> {
        self(rows, width)
    }
}

/// One row's attributions.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribution {
    /// One value per feature, in the features' order.
    pub values: Vec<f64>,
    /// `v(∅)`: the mean output over the background.
    pub base: f64,
    /// `f(x)`: the model's output for the row.
    pub output: f64,
}

impl Attribution {
    /// `f(x) − base − Σ φ`: zero up to rounding.
    pub fn residual(&self) -> f64 {
        self.output - self.base - self.values.iter().sum::<f64>()
    }
}

/// Model rows per call of the model.
const BLOCK_ROWS: usize = 1 << 18;

/// Evaluates `v(S)` for each row of `rows` and each coalition of `coalitions` (a mask per
/// feature): `result[r][c]`. The (row, coalition) pairs go to the model in blocks of about
/// [`BLOCK_ROWS`] model rows, so memory stays bounded whatever the number of coalitions.
fn coalition_values(
    model: &dyn Evaluate,
    rows: &[Vec<f64>],
    background: &[Vec<f64>],
    coalitions: &[Vec<bool>],
) -> Result<Vec<Vec<f64>>, OpError> {
    let width = background.first().map_or(0, Vec::len);
    let pairs_per_block = (BLOCK_ROWS / background.len().max(1)).max(1);
    let pairs: Vec<(usize, usize)> = (0..rows.len()).flat_map(|r| (0..coalitions.len()).map(move |c| (r, c))).collect();
    let mut values = vec![Vec::with_capacity(coalitions.len()); rows.len()];
    for block in pairs.chunks(pairs_per_block) {
        let mut matrix = Vec::with_capacity(block.len() * background.len() * width);
        for &(r, c) in block {
            for b in background {
                matrix.extend((0..width).map(|j| if coalitions[c][j] { rows[r][j] } else { b[j] }));
            }
        }
        let out = model.evaluate(&matrix, width)?;
        if out.len() != block.len() * background.len() {
            return Err(OpError::Internal(format!(
                "the model gave {} values for {} rows",
                out.len(),
                block.len() * background.len()
            )));
        }
        for (&(r, _), chunk) in block.iter().zip(out.chunks(background.len())) {
            values[r].push(mean(chunk));
        }
    }
    Ok(values)
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The base value and each row's output, which every method needs.
fn ends(model: &dyn Evaluate, rows: &[Vec<f64>], background: &[Vec<f64>]) -> Result<(f64, Vec<f64>), OpError> {
    let width = background.first().map_or(0, Vec::len);
    let base = mean(&model.evaluate(&background.concat(), width)?);
    let outputs = model.evaluate(&rows.concat(), width)?;
    Ok((base, outputs))
}

/// Exact Shapley values by enumerating every coalition (`F` at most [`MAX_EXACT_FEATURES`]).
pub fn exact(model: &dyn Evaluate, rows: &[Vec<f64>], background: &[Vec<f64>]) -> Result<Vec<Attribution>, OpError> {
    let width = background.first().map_or(0, Vec::len);
    if width > MAX_EXACT_FEATURES {
        return Err(OpError::InvalidSpec(format!(
            "exact Shapley values over {width} features would take 2^{width} coalitions a row; use method = \"permutation\""
        )));
    }
    let coalitions: Vec<Vec<bool>> =
        (0..1usize << width).map(|set| (0..width).map(|j| set & (1 << j) != 0).collect()).collect();
    let values = coalition_values(model, rows, background, &coalitions)?;
    // |S|! (F − |S| − 1)! / F!, by |S|.
    let weight: Vec<f64> = (0..width)
        .map(|s| {
            let factorial = |n: usize| (1..=n).map(|k| k as f64).product::<f64>();
            factorial(s) * factorial(width - s - 1) / factorial(width)
        })
        .collect();
    let (base, outputs) = ends(model, rows, background)?;
    Ok(values
        .iter()
        .zip(outputs)
        .map(|(v, output)| {
            let values = (0..width)
                .map(|i| {
                    (0..1usize << width)
                        .filter(|set| set & (1 << i) == 0)
                        .map(|set| weight[set.count_ones() as usize] * (v[set | (1 << i)] - v[set]))
                        .sum()
                })
                .collect();
            Attribution { values, base, output }
        })
        .collect())
}

/// The most features [`exact`] enumerates.
pub const MAX_EXACT_FEATURES: usize = 16;

/// `pairs` random feature orders from `seed` (Fisher–Yates over SplitMix64).
pub fn orders(width: usize, pairs: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut state = seed ^ splitmix::GAMMA;
    let mut next = || splitmix::next(&mut state);
    (0..pairs)
        .map(|_| {
            let mut order: Vec<usize> = (0..width).collect();
            for i in (1..width).rev() {
                order.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            order
        })
        .collect()
}

/// Shapley values estimated from `pairs` antithetic pairs of feature orders.
pub fn permutation(
    model: &dyn Evaluate,
    rows: &[Vec<f64>],
    background: &[Vec<f64>],
    pairs: usize,
    seed: u64,
) -> Result<Vec<Attribution>, OpError> {
    let width = background.first().map_or(0, Vec::len);
    let (base, outputs) = ends(model, rows, background)?;
    let mut sums = vec![vec![0.0; width]; rows.len()];
    let orders: Vec<Vec<usize>> = orders(width, pairs, seed)
        .into_iter()
        .flat_map(|order| {
            let reverse = order.iter().rev().copied().collect();
            [order, reverse]
        })
        .collect();
    for order in &orders {
        // The coalitions strictly between ∅ and all features, in the order's sequence.
        let coalitions: Vec<Vec<bool>> = (1..width)
            .map(|k| {
                let mut mask = vec![false; width];
                order[..k].iter().for_each(|&j| mask[j] = true);
                mask
            })
            .collect();
        let interior = coalition_values(model, rows, background, &coalitions)?;
        for ((sum, inner), output) in sums.iter_mut().zip(&interior).zip(&outputs) {
            let mut previous = base;
            for (k, &feature) in order.iter().enumerate() {
                let current = if k + 1 == width { *output } else { inner[k] };
                sum[feature] += current - previous;
                previous = current;
            }
        }
    }
    let count = orders.len().max(1) as f64;
    Ok(sums
        .into_iter()
        .zip(outputs)
        .map(|(sum, output)| Attribution { values: sum.into_iter().map(|s| s / count).collect(), base, output })
        .collect())
}

/// Antithetic pairs of orders that `max_evals` coalitions a row buy for `width` features.
pub fn pairs_for_budget(max_evals: usize, width: usize) -> usize {
    (max_evals / (2 * width.saturating_sub(1)).max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `f(z) = 1 + Σ w_j z_j + c · z_0 · z_1`: linear plus one interaction.
    fn model(rows: &[f64], width: usize) -> Result<Vec<f64>, OpError> {
        let w = [0.5, -2.0, 3.0, 0.25];
        Ok(rows
            .chunks(width)
            .map(|z| 1.0 + z.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() + 0.75 * z[0] * z[1])
            .collect())
    }

    fn data() -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let background = vec![vec![0.0, 1.0, 2.0, -1.0], vec![1.0, -1.0, 0.5, 0.0], vec![2.0, 0.0, -1.0, 3.0]];
        let rows = vec![vec![1.5, 2.0, -0.5, 1.0], vec![-1.0, 0.5, 4.0, 2.0]];
        (rows, background)
    }

    #[test]
    fn exact_values_of_a_linear_model_with_one_interaction_are_known() {
        let (rows, background) = data();
        let found = exact(&model, &rows, &background).unwrap();
        let w = [0.5, -2.0, 3.0, 0.25];
        for (x, attribution) in rows.iter().zip(&found) {
            // Linear terms: w_j (x_j − E b_j). The interaction c·z0·z1 splits evenly between
            // features 0 and 1 over the background pairs: each gets c/2 · E_b[x0 x1 − b0 b1 ...].
            for j in 2..4 {
                let mean_b = background.iter().map(|b| b[j]).sum::<f64>() / 3.0;
                assert!((attribution.values[j] - w[j] * (x[j] - mean_b)).abs() < 1e-12);
            }
            assert!(attribution.residual().abs() < 1e-12, "{attribution:?}");
        }
    }

    #[test]
    fn a_background_larger_than_a_block_splits_the_work_and_changes_nothing() {
        // 70,000 background rows: 3 (row, coalition) pairs a model call, so the 2 × 16 pairs
        // take 11 calls, plus 2 for the base value and the outputs.
        let background: Vec<Vec<f64>> =
            (0..70_000).map(|i| (0..4).map(|j| ((i * 7 + j * 13) % 97) as f64 / 10.0).collect()).collect();
        let rows = vec![vec![1.5, 2.0, -0.5, 1.0], vec![-1.0, 0.5, 4.0, 2.0]];
        let calls = std::cell::Cell::new(0);
        let counted = |z: &[f64], width: usize| {
            calls.set(calls.get() + 1);
            model(z, width)
        };
        let found = exact(&counted, &rows, &background).unwrap();
        assert_eq!(calls.get(), 2 + 32usize.div_ceil(3));
        let w = [0.5, -2.0, 3.0, 0.25];
        for (x, attribution) in rows.iter().zip(&found) {
            for j in 2..4 {
                let mean_b = background.iter().map(|b| b[j]).sum::<f64>() / background.len() as f64;
                assert!((attribution.values[j] - w[j] * (x[j] - mean_b)).abs() < 1e-9);
            }
            assert!(attribution.residual().abs() < 1e-9, "{attribution:?}");
        }
    }

    #[test]
    fn permutations_add_up_exactly_and_converge_to_the_exact_values() {
        let (rows, background) = data();
        let truth = exact(&model, &rows, &background).unwrap();
        let mut errors = Vec::new();
        for pairs in [1, 8, 64] {
            let estimate = permutation(&model, &rows, &background, pairs, 7).unwrap();
            let error = estimate
                .iter()
                .zip(&truth)
                .flat_map(|(e, t)| e.values.iter().zip(&t.values).map(|(a, b)| (a - b).abs()))
                .fold(0.0, f64::max);
            assert!(estimate.iter().all(|a| a.residual().abs() < 1e-12));
            errors.push(error);
        }
        // A model whose only interaction is between two features is exact with one antithetic
        // pair already; the linear parts never err.
        assert!(errors.iter().all(|e| *e < 1e-12), "{errors:?}");
    }

    #[test]
    fn orders_are_permutations_and_depend_on_the_seed() {
        let a = orders(6, 3, 1);
        for order in &a {
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..6).collect::<Vec<_>>());
        }
        assert_eq!(a, orders(6, 3, 1));
        assert_ne!(a, orders(6, 3, 2));
        assert_eq!(pairs_for_budget(500, 10), 27);
    }
}
