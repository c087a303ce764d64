//! [`CoMoments`]: the count, mean and centred cross-products of a set of columns, mergeable
//! across batches and workers: the partial `pca` folds its input into (and the sufficient
//! statistics of any covariance-based fit).

use faer::linalg::matmul::triangular::BlockStructure;
use faer::{Accum, MatMut, MatRef, Par};
use serde::{Deserialize, Serialize};

use crate::OpError;

/// Count, mean and centred cross-products `M = Σ (x − mean)(x − mean)ᵀ` of `d` columns,
/// mergeable across batches and workers.
///
/// Like [`crate::stats::Moments`], the mean is `shift + offset`, where `shift` is the first
/// row seen, so merging never subtracts two large sums. `m` is a `d × d` column-major
/// matrix of which only the lower triangle (with the diagonal) is kept; the rest stays 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoMoments {
    pub count: u64,
    pub shift: Vec<f64>,
    pub offset: Vec<f64>,
    pub m: Vec<f64>,
}

impl CoMoments {
    pub fn new(d: usize) -> CoMoments {
        CoMoments { count: 0, shift: vec![0.0; d], offset: vec![0.0; d], m: vec![0.0; d * d] }
    }

    /// The number of columns.
    pub fn dim(&self) -> usize {
        self.shift.len()
    }

    /// The mean of each column.
    pub fn mean(&self) -> Vec<f64> {
        self.shift.iter().zip(&self.offset).map(|(s, o)| s + o).collect()
    }

    /// `M[i, j]` for any `i`, `j` (the matrix is symmetric).
    pub fn at(&self, i: usize, j: usize) -> f64 {
        let (i, j) = if i >= j { (i, j) } else { (j, i) };
        self.m[i + j * self.dim()]
    }

    /// Folds a batch given as `d` columns of equal length holding no null, NaN or infinity:
    /// the batch is centred on its own mean, its cross-products come from one GEMM, and it
    /// is merged in with Chan's update.
    pub fn fold(&mut self, columns: &[&[f64]]) -> Result<(), OpError> {
        let d = self.dim();
        if columns.len() != d {
            return Err(OpError::Internal(format!("pca folded {} columns into co-moments of {d}", columns.len())));
        }
        let rows = columns.first().map_or(0, |c| c.len());
        if rows == 0 {
            return Ok(());
        }
        let r = rows as f64;
        let mut centred = vec![0.0; rows * d];
        let (mut shift, mut offset, mut residual) =
            (Vec::with_capacity(d), Vec::with_capacity(d), Vec::with_capacity(d));
        for (j, column) in columns.iter().enumerate() {
            if column.len() != rows {
                return Err(OpError::Internal("pca folded columns of different lengths".to_string()));
            }
            let s = column[0];
            let o = column.iter().map(|v| v - s).sum::<f64>() / r;
            let mut sum = 0.0;
            for (to, v) in centred[j * rows..(j + 1) * rows].iter_mut().zip(column.iter()) {
                *to = (v - s) - o;
                sum += *to;
            }
            shift.push(s);
            // The second pass's residual moves the mean by what rounding left in the first.
            offset.push(o + sum / r);
            residual.push(sum);
        }
        // Σ (c − c̄)(c − c̄)ᵀ = Σ c cᵀ − (Σ c)(Σ c)ᵀ / r, the corrected two-pass formula.
        add_outer_lower(&mut self.m, &residual, -1.0 / r);
        if self.count == 0 {
            self.shift = shift;
            self.offset = offset;
        } else {
            let (na, n) = (self.count as f64, self.count as f64 + r);
            let delta = self.delta(&shift, &offset);
            for (o, dl) in self.offset.iter_mut().zip(&delta) {
                *o += dl * (r / n);
            }
            add_outer_lower(&mut self.m, &delta, na * r / n);
        }
        let x = MatRef::from_column_major_slice(&centred, rows, d);
        let m = MatMut::from_column_major_slice_mut(&mut self.m, d, d);
        faer::linalg::matmul::triangular::matmul(
            m,
            BlockStructure::TriangularLower,
            Accum::Add,
            x.transpose(),
            BlockStructure::Rectangular,
            x,
            BlockStructure::Rectangular,
            1.0,
            Par::Seq,
        );
        self.count += rows as u64;
        Ok(())
    }

    /// The other mean minus this one, from the shifts (an exact subtraction for nearby
    /// values) and the offsets.
    fn delta(&self, shift: &[f64], offset: &[f64]) -> Vec<f64> {
        (0..self.dim()).map(|j| (shift[j] - self.shift[j]) + (offset[j] - self.offset[j])).collect()
    }

    /// Chan's pairwise update.
    pub fn merge(&mut self, other: &CoMoments) -> Result<(), OpError> {
        if other.dim() != self.dim() || other.m.len() != self.m.len() {
            return Err(OpError::Internal(format!(
                "co-moments of {} and {} columns cannot merge",
                self.dim(),
                other.dim()
            )));
        }
        if other.count == 0 {
            return Ok(());
        }
        if self.count == 0 {
            *self = other.clone();
            return Ok(());
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let n = na + nb;
        let delta = self.delta(&other.shift, &other.offset);
        for (o, dl) in self.offset.iter_mut().zip(&delta) {
            *o += dl * (nb / n);
        }
        for (a, b) in self.m.iter_mut().zip(&other.m) {
            *a += b;
        }
        add_outer_lower(&mut self.m, &delta, na * nb / n);
        self.count += other.count;
        Ok(())
    }
}

/// `m += alpha · v vᵀ` on the lower triangle of the column-major `d × d` matrix `m`.
fn add_outer_lower(m: &mut [f64], v: &[f64], alpha: f64) {
    let d = v.len();
    for j in 0..d {
        let a = alpha * v[j];
        if a == 0.0 {
            continue;
        }
        for (to, vi) in m[j * d + j..(j + 1) * d].iter_mut().zip(&v[j..]) {
            *to += a * vi;
        }
    }
}
