//! [`MaskedCoMoments`]: the cross-products of columns that may have missing values, kept so
//! that the co-moments of the columns *after* their missing values are filled with
//! constants (any constants, chosen after the pass) follow exactly. It is what lets
//! `impute → standardize → pca` be fitted from one pass over the data
//! ([`crate::linear_chain`]).
//!
//! With `P` the presence mask of a batch (1 where a value is present, 0 where it is null or
//! NaN) and `X` its values centred on a shift `K` (`x − K` where present, 0 where missing),
//! a batch keeps
//!
//! - `G = XᵀX` (one GEMM, as [`crate::co_moments::CoMoments`] does),
//! - `H = XᵀP` (`H[j, k]` sums column `j` over the rows where `k` is present: its diagonal
//!   is the column's sum, and the rest is that sum minus column `j` over the rows where `k`
//!   is missing, a sparse correction),
//! - `Q = PᵀP` (rows where both columns are present: popcounts of the validity bitmaps),
//! - the row count and each column's present count.
//!
//! Filling column `j`'s missing values with `c_j` makes it `y_j = p_j x_j + (1 − p_j) d_j`
//! around the shift, with `d_j = c_j − K_j`, so
//!
//! `Σ y_j y_k = G_jk + d_k (H_jj − H_jk) + d_j (H_kk − H_kj) + d_j d_k (n − n_j − n_k + Q_jk)`
//!
//! and `Σ y_j = H_jj + (n − n_j) d_j`: the co-moments of the filled data, for fills known
//! only once the pass is over. Each batch is centred on its own present means, so no sum is
//! large; batches and workers merge by moving to a common shift (`x − K' = (x − K) + p δ`,
//! `δ = K − K'`: `G' = G + δ_k H_jk + δ_j H_kj + δ_j δ_k Q_jk`, `H' = H + δ_j Q_jk`), exact
//! algebra on small numbers.

use arrow::array::{Array, Float64Array};
use faer::linalg::matmul::triangular::BlockStructure;
use faer::{Accum, MatMut, MatRef, Par};
use serde::{Deserialize, Serialize};

use crate::OpError;
use crate::co_moments::CoMoments;
use crate::stats::Moments;

thread_local! {
    /// A fold's buffers, kept for the next fold on this thread.
    static SCRATCH: std::cell::RefCell<Scratch> = const { std::cell::RefCell::new(Scratch::new()) };
}

/// What [`MaskedCoMoments::fold`] reuses from batch to batch: the centred batch, the
/// presence bits, and each column's missing rows (listed one column after the other, with
/// where each column's list starts).
struct Scratch {
    centred: Vec<f64>,
    presence: Vec<u64>,
    absent_rows: Vec<u32>,
    absent_from: Vec<usize>,
}

impl Scratch {
    const fn new() -> Scratch {
        Scratch { centred: Vec::new(), presence: Vec::new(), absent_rows: Vec::new(), absent_from: Vec::new() }
    }
}

/// The sum of `column[r]` over `rows`, in eight independent lanes.
fn lane_sum_at(column: &[f64], rows: &[u32]) -> f64 {
    let mut lanes = [0.0; 8];
    let chunks = rows.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|&r| column[r as usize]).sum();
    for chunk in chunks {
        for (lane, &r) in lanes.iter_mut().zip(chunk) {
            *lane += column[r as usize];
        }
    }
    lanes.iter().sum::<f64>() + rest
}

/// For each value of a byte of a presence bitmap, its 8 bits as 8 masks of a float's bits
/// (all ones where the bit is set): selecting with them is a bitwise and, which vectorizes.
static BYTE_LANES: [[u64; 8]; 256] = byte_lanes();

const fn byte_lanes() -> [[u64; 8]; 256] {
    let mut lanes = [[0; 8]; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut bit = 0;
        while bit < 8 {
            if byte >> bit & 1 == 1 {
                lanes[byte][bit] = u64::MAX;
            }
            bit += 1;
        }
        byte += 1;
    }
    lanes
}

/// `to[r] = values[r]` where bit `r` of `present` is set and 0.0 elsewhere (arrow's null
/// slots hold any value), 8 rows at a time; returns the sum of `to`, in eight independent
/// lanes (a dependency chain of one add per value would cost its latency on every element).
fn select_present(values: &[f64], present: &[u64], to: &mut [f64]) -> f64 {
    let mut lanes = [0.0; 8];
    for (i, (to, values)) in to.chunks_exact_mut(8).zip(values.chunks_exact(8)).enumerate() {
        let masks = &BYTE_LANES[(present[i / 8] >> (8 * (i % 8)) & 0xff) as usize];
        for l in 0..8 {
            let v = f64::from_bits(values[l].to_bits() & masks[l]);
            to[l] = v;
            lanes[l] += v;
        }
    }
    let mut rest = 0.0;
    for r in values.len() / 8 * 8..values.len() {
        let v = if present[r / 64] >> (r % 64) & 1 == 1 { values[r] } else { 0.0 };
        to[r] = v;
        rest += v;
    }
    lanes.iter().sum::<f64>() + rest
}

/// `to[r] −= shift` where present, else 0.0; the sum of `to`.
fn centre_present(shift: f64, present: &[u64], to: &mut [f64]) -> f64 {
    let mut lanes = [0.0; 8];
    for (i, to) in to.chunks_exact_mut(8).enumerate() {
        let masks = &BYTE_LANES[(present[i / 8] >> (8 * (i % 8)) & 0xff) as usize];
        for l in 0..8 {
            let v = f64::from_bits((to[l] - shift).to_bits() & masks[l]);
            to[l] = v;
            lanes[l] += v;
        }
    }
    let mut rest = 0.0;
    let full = to.len() / 8 * 8;
    for (r, to) in to.iter_mut().enumerate().skip(full) {
        *to = if present[r / 64] >> (r % 64) & 1 == 1 { *to - shift } else { 0.0 };
        rest += *to;
    }
    lanes.iter().sum::<f64>() + rest
}

/// See the module documentation. Matrices are `d × d`, column-major; `g` and `q` keep only
/// their lower triangle (with the diagonal), `h` is full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskedCoMoments {
    rows: u64,
    shift: Vec<f64>,
    present: Vec<u64>,
    g: Vec<f64>,
    h: Vec<f64>,
    q: Vec<u64>,
    /// Whether a column held an infinite value (its co-moments are then meaningless).
    infinite: Vec<bool>,
}

impl MaskedCoMoments {
    pub fn new(d: usize) -> MaskedCoMoments {
        MaskedCoMoments {
            rows: 0,
            shift: vec![0.0; d],
            present: vec![0; d],
            g: vec![0.0; d * d],
            h: vec![0.0; d * d],
            q: vec![0; d * d],
            infinite: vec![false; d],
        }
    }

    pub fn dim(&self) -> usize {
        self.shift.len()
    }

    /// Rows folded so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Count, mean and squared deviations of column `j`'s present values.
    pub fn present_moments(&self, j: usize) -> Moments {
        let d = self.dim();
        let count = self.present[j];
        let (sum, squares) = (self.h[j + j * d], self.g[j + j * d]);
        let n = count.max(1) as f64;
        Moments {
            count,
            shift: self.shift[j],
            offset: sum / n,
            m2: (squares - sum * sum / n).max(0.0),
            infinite: self.infinite[j],
        }
    }

    /// Whether column `j` held an infinite value.
    pub fn infinite(&self, j: usize) -> bool {
        self.infinite[j]
    }

    /// Folds a batch given as `d` columns of equal length (nulls and NaN are missing).
    pub fn fold(&mut self, columns: &[&Float64Array]) -> Result<(), OpError> {
        let d = self.dim();
        if columns.len() != d {
            return Err(OpError::Internal(format!("{} columns folded into masked co-moments of {d}", columns.len())));
        }
        let rows = columns.first().map_or(0, |c| c.len());
        if rows == 0 {
            return Ok(());
        }
        if columns.iter().any(|c| c.len() != rows) {
            return Err(OpError::Internal("masked co-moments folded columns of different lengths".to_string()));
        }
        let words = rows.div_ceil(64);
        let mut batch = MaskedCoMoments::new(d);
        batch.rows = rows as u64;
        // Scratch reused from batch to batch: every element is written before it is read.
        let Scratch { mut centred, mut presence, mut absent_rows, mut absent_from } =
            SCRATCH.with_borrow_mut(|scratch| std::mem::replace(scratch, Scratch::new()));
        centred.resize(rows * d, 0.0);
        presence.resize(words * d, 0);
        for (j, column) in columns.iter().enumerate() {
            let bits = &mut presence[j * words..(j + 1) * words];
            let values = column.values();
            // Presence, a word at a time from the validity bitmap (less the NaN, below).
            match column.nulls() {
                Some(nulls) => {
                    let chunks = nulls.inner().bit_chunks();
                    for (to, word) in bits.iter_mut().zip(chunks.iter()) {
                        *to = word;
                    }
                    if chunks.remainder_len() > 0 {
                        bits[chunks.chunk_len()] = chunks.remainder_bits();
                    }
                }
                None => {
                    bits.fill(!0);
                    if !rows.is_multiple_of(64) {
                        bits[words - 1] = (1u64 << (rows % 64)) - 1;
                    }
                }
            }
            let out = &mut centred[j * rows..(j + 1) * rows];
            let mut total = select_present(values, bits, out);
            if !total.is_finite() {
                // A NaN (missing) or an infinity among the present values, or a sum that
                // overflowed: rare, so handled apart from the vectorized path.
                for (r, v) in values.iter().enumerate() {
                    if v.is_nan() {
                        bits[r / 64] &= !(1u64 << (r % 64));
                    }
                }
                total = select_present(values, bits, out);
                batch.infinite[j] = out.iter().any(|x| x.is_infinite());
            }
            let count: u64 = bits.iter().map(|w| w.count_ones() as u64).sum();
            let shift = if count == 0 { 0.0 } else { total / count as f64 };
            let shift = if shift.is_finite() { shift } else { 0.0 };
            let residual = centre_present(shift, bits, out);
            batch.shift[j] = shift;
            batch.present[j] = count;
            // H's diagonal: the column's centred sum (rounding leaves it near, not at, 0).
            batch.h[j + j * d] = residual;
        }
        // Q: rows where both columns are present.
        for k in 0..d {
            let bk = &presence[k * words..(k + 1) * words];
            for j in k..d {
                let bj = &presence[j * words..(j + 1) * words];
                batch.q[j + k * d] = bj.iter().zip(bk).map(|(a, b)| (a & b).count_ones() as u64).sum();
            }
        }
        // H[j, k] = H[j, j] minus column j over the rows where k is missing (a few percent
        // of the rows). Every column's missing rows are listed first, then each column j is
        // summed over every list while it is in the cache.
        absent_rows.clear();
        absent_from.clear();
        for k in 0..d {
            absent_from.push(absent_rows.len());
            for (w, &word) in presence[k * words..(k + 1) * words].iter().enumerate() {
                let mut absent = !word;
                if w + 1 == words && !rows.is_multiple_of(64) {
                    absent &= (1u64 << (rows % 64)) - 1;
                }
                while absent != 0 {
                    absent_rows.push((w * 64) as u32 + absent.trailing_zeros());
                    absent &= absent - 1;
                }
            }
        }
        absent_from.push(absent_rows.len());
        for j in 0..d {
            let column = &centred[j * rows..(j + 1) * rows];
            for k in (0..d).filter(|&k| k != j) {
                let missing_sum = lane_sum_at(column, &absent_rows[absent_from[k]..absent_from[k + 1]]);
                batch.h[j + k * d] = batch.h[j + j * d] - missing_sum;
            }
        }
        let x = MatRef::from_column_major_slice(&centred, rows, d);
        let g = MatMut::from_column_major_slice_mut(&mut batch.g, d, d);
        faer::linalg::matmul::triangular::matmul(
            g,
            BlockStructure::TriangularLower,
            Accum::Replace,
            x.transpose(),
            BlockStructure::Rectangular,
            x,
            BlockStructure::Rectangular,
            1.0,
            Par::Seq,
        );
        SCRATCH.with_borrow_mut(|scratch| *scratch = Scratch { centred, presence, absent_rows, absent_from });
        self.merge(batch)
    }

    /// Moves the statistics to the shift `to` (see the module documentation).
    fn reshift(&mut self, to: &[f64]) {
        let d = self.dim();
        let delta: Vec<f64> = self.shift.iter().zip(to).map(|(from, to)| from - to).collect();
        if delta.iter().all(|&v| v == 0.0) {
            return;
        }
        let q = |j: usize, k: usize| {
            let (j, k) = if j >= k { (j, k) } else { (k, j) };
            self.q[j + k * d] as f64
        };
        let mut g = self.g.clone();
        for k in 0..d {
            for j in k..d {
                g[j + k * d] +=
                    delta[k] * self.h[j + k * d] + delta[j] * self.h[k + j * d] + delta[j] * delta[k] * q(j, k);
            }
        }
        let mut h = self.h.clone();
        for k in 0..d {
            for j in 0..d {
                h[j + k * d] += delta[j] * q(j, k);
            }
        }
        self.g = g;
        self.h = h;
        self.shift = to.to_vec();
    }

    /// Merges `other` in, at this partial's shift.
    pub fn merge(&mut self, mut other: MaskedCoMoments) -> Result<(), OpError> {
        if other.dim() != self.dim() {
            return Err(OpError::Internal(format!(
                "masked co-moments of {} and {} columns cannot merge",
                self.dim(),
                other.dim()
            )));
        }
        if other.rows == 0 {
            return Ok(());
        }
        if self.rows == 0 {
            *self = other;
            return Ok(());
        }
        other.reshift(&self.shift);
        self.rows += other.rows;
        for (a, b) in self.present.iter_mut().zip(&other.present) {
            *a += b;
        }
        for (a, b) in self.g.iter_mut().zip(&other.g) {
            *a += b;
        }
        for (a, b) in self.h.iter_mut().zip(&other.h) {
            *a += b;
        }
        for (a, b) in self.q.iter_mut().zip(&other.q) {
            *a += b;
        }
        for (a, b) in self.infinite.iter_mut().zip(&other.infinite) {
            *a |= b;
        }
        Ok(())
    }

    /// The co-moments of the columns with their missing values filled: `fills[j]` for a
    /// column that is filled, `None` for one that has no missing value (or whose missing rows
    /// count as the shift, which no caller wants: the chain refuses such data first).
    pub fn filled(&self, fills: &[Option<f64>]) -> CoMoments {
        let d = self.dim();
        let n = self.rows as f64;
        let fill: Vec<f64> = (0..d).map(|j| fills[j].map_or(0.0, |c| c - self.shift[j])).collect();
        let sum: Vec<f64> = (0..d).map(|j| self.h[j + j * d] + (n - self.present[j] as f64) * fill[j]).collect();
        let mut m = vec![0.0; d * d];
        for k in 0..d {
            for j in k..d {
                let both_missing = n - self.present[j] as f64 - self.present[k] as f64 + self.q[j + k * d] as f64;
                let cross = self.g[j + k * d]
                    + fill[k] * (self.h[j + j * d] - self.h[j + k * d])
                    + fill[j] * (self.h[k + k * d] - self.h[k + j * d])
                    + fill[j] * fill[k] * both_missing;
                m[j + k * d] = cross - sum[j] * sum[k] / n;
            }
        }
        CoMoments { count: self.rows, shift: self.shift.clone(), offset: sum.iter().map(|s| s / n).collect(), m }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The co-moments of `columns` with missing values filled, computed the plain way.
    fn naive(columns: &[Vec<Option<f64>>], fills: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let d = columns.len();
        let n = columns[0].len();
        let filled: Vec<Vec<f64>> = columns
            .iter()
            .zip(fills)
            .map(|(c, f)| c.iter().map(|v| v.filter(|x| !x.is_nan()).unwrap_or(*f)).collect())
            .collect();
        let mean: Vec<f64> = filled.iter().map(|c| c.iter().sum::<f64>() / n as f64).collect();
        let mut m = vec![0.0; d * d];
        for k in 0..d {
            for j in k..d {
                m[j + k * d] = (0..n).map(|r| (filled[j][r] - mean[j]) * (filled[k][r] - mean[k])).sum();
            }
        }
        (mean, m)
    }

    fn column(seed: u64, n: usize, offset: f64, missing_every: usize) -> Vec<Option<f64>> {
        let mut state = seed;
        (0..n)
            .map(|r| {
                let v = crate::splitmix::next(&mut state) as f64 / u64::MAX as f64;
                match (missing_every > 0).then(|| r % missing_every) {
                    Some(0) => None,
                    Some(3) if missing_every > 5 => Some(f64::NAN),
                    _ => Some(offset + v * 10.0 + r as f64 * 1e-3),
                }
            })
            .collect()
    }

    #[test]
    fn filled_co_moments_match_the_plain_computation_over_batches_and_merges() {
        let n = 1000;
        let columns = vec![column(1, n, 1e6, 7), column(2, n, -3.0, 11), column(3, n, 0.0, 0), column(4, n, 50.0, 5)];
        let fills = [1e6 + 4.0, 2.5, 0.0, -7.0];
        let arrays: Vec<Float64Array> = columns.iter().map(|c| Float64Array::from(c.clone())).collect();
        // Three "workers" of uneven batches, merged.
        let mut total = MaskedCoMoments::new(4);
        for (lo, hi) in [(0, 130), (130, 131), (131, 600), (600, 1000)] {
            let mut part = MaskedCoMoments::new(4);
            let slices: Vec<Float64Array> = arrays.iter().map(|a| a.slice(lo, hi - lo)).collect();
            let views: Vec<&Float64Array> = slices.iter().collect();
            part.fold(&views).unwrap();
            total.merge(part).unwrap();
        }
        let fills_used = [Some(fills[0]), Some(fills[1]), None, Some(fills[3])];
        let got = total.filled(&fills_used);
        let (mean, m) = naive(&columns, &fills);
        assert_eq!(got.count, n as u64);
        for j in 0..4 {
            assert!((got.mean()[j] - mean[j]).abs() <= 1e-9 * mean[j].abs().max(1.0), "mean {j}");
            for k in 0..=j {
                let (a, b) = (got.m[j + k * 4], m[j + k * 4]);
                assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "m[{j},{k}]: {a} vs {b}");
            }
        }
    }

    #[test]
    fn whatever_a_null_slot_holds_is_ignored() {
        // Arrow leaves a null slot's value undefined: here NaN, infinities and huge numbers
        // that would poison every sum if they were read. 67 rows: a partial byte at the end.
        let n = 67;
        let columns = vec![column(5, n, 2.0, 3), column(6, n, -1e3, 4)];
        let arrays: Vec<Float64Array> = columns
            .iter()
            .map(|c| {
                let garbage = [f64::NAN, f64::INFINITY, -1e300, f64::NEG_INFINITY];
                let values: Vec<f64> =
                    c.iter().enumerate().map(|(r, v)| v.unwrap_or(garbage[r % garbage.len()])).collect();
                let nulls = arrow::buffer::NullBuffer::from(c.iter().map(Option::is_some).collect::<Vec<_>>());
                Float64Array::new(values.into(), Some(nulls))
            })
            .collect();
        let mut moments = MaskedCoMoments::new(2);
        moments.fold(&[&arrays[0], &arrays[1]]).unwrap();
        assert!(!moments.infinite(0) && !moments.infinite(1));
        let fills = [1.5, 7.0];
        let got = moments.filled(&[Some(fills[0]), Some(fills[1])]);
        let (mean, m) = naive(&columns, &fills);
        for j in 0..2 {
            assert!((got.mean()[j] - mean[j]).abs() <= 1e-9 * mean[j].abs().max(1.0), "mean {j}");
            for k in 0..=j {
                let (a, b) = (got.m[j + k * 2], m[j + k * 2]);
                assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "m[{j},{k}]: {a} vs {b}");
            }
        }
    }

    #[test]
    fn infinities_are_flagged_and_empty_batches_change_nothing() {
        let mut moments = MaskedCoMoments::new(2);
        let a = Float64Array::from(vec![Some(1.0), Some(f64::INFINITY)]);
        let b = Float64Array::from(vec![Some(2.0), None]);
        moments.fold(&[&a, &b]).unwrap();
        assert!(moments.infinite(0) && !moments.infinite(1));
        let empty = Float64Array::from(Vec::<f64>::new());
        moments.fold(&[&empty, &empty]).unwrap();
        assert_eq!((moments.rows(), &moments.present[..]), (2, &[2, 1][..]));
        assert!(moments.fold(&[&a]).is_err(), "a wrong column count is an error");
    }
}
