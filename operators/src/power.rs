//! `power`: the Yeo-Johnson power transform, like scikit-learn's
//! `PowerTransformer(method="yeo-johnson", standardize=True)`.
//!
//! ```toml
//! [[step]]
//! op = "power"
//! columns = ["income", "f_*"]
//! # method = "yeo-johnson"           # the only method (Box-Cox needs positive data)
//! # standardize = true               # then zero mean, unit variance, as scikit-learn
//! # output = "{col}_power"           # keep the raw column (see `output_columns`)
//! # fitted = "…"
//! ```
//!
//! Each value `x` becomes `ψ(x, λ)`: `((x + 1)^λ − 1) / λ` for `x ≥ 0` (`ln(1 + x)` when
//! `λ = 0`), `−((1 − x)^(2 − λ) − 1) / (2 − λ)` for `x < 0` (`−ln(1 − x)` when `λ = 2`);
//! then, with `standardize`, `(ψ − mean) / std` over the transformed column.
//!
//! `λ` is each column's maximum-likelihood estimate, as SciPy's `yeojohnson_normmax` finds
//! it for scikit-learn: the maximum of `−n/2 · ln(var ψ(x, λ)) + (λ − 1) · Σ sign(x) ln(1 + |x|)`
//! over SciPy's bounds (where `ψ` neither overflows nor underflows for values up to 20 times
//! the largest seen). The data is on many workers, so the search is map/reduce over passes:
//!
//! 1. a scan: count, moments, min, max and `Σ sign(x) ln(1 + |x|)` per column;
//! 2. search passes: every worker folds the moments of `ψ(x, λ)` for [`GRID`] values of `λ`
//!    spread over the current interval, the merged moments give the log-likelihood at each,
//!    and the interval shrinks to the neighbours of the best; once the spacing is below
//!    [`STOP_SPACING`] the parabola through the best point and its neighbours gives `λ`
//!    (within about 1e-8 of SciPy's, whose own tolerance is 1.5e-8; three or four passes);
//! 3. with `standardize`, a last pass for the mean and variance of `ψ(x, λ)`.
//!
//! As in scikit-learn, a column that is constant (a variance within rounding of zero) keeps
//! `λ = 1`, the identity; scikit-learn checks that only for columns without missing values,
//! Weir on the present values. Nulls and NaN are ignored by the fit and kept; an infinity is
//! an error naming the column (scikit-learn refuses it too). Integer columns become
//! `Float64`; float columns keep their width.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::fit::{Fit, FitShape};
use crate::fit_columns::{
    FloatTransform, NumericColumns, PerColumn, all_missing, no_infinity, numeric_step_schema, yeo_johnson,
};
use crate::stats::Moments;
use crate::{BoundStep, OpError};

/// Values of `λ` each search pass evaluates per column.
pub const GRID: usize = 64;
/// The grid spacing below which the search stops and interpolates.
pub const STOP_SPACING: f64 = 1e-3;
/// Search passes at most (the interval shrinks 31.5 times a pass: five reach the spacing
/// from SciPy's widest bounds).
const MAX_SEARCH_PASSES: u32 = 12;

/// `method`: only Yeo-Johnson.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PowerMethod {
    #[default]
    #[serde(rename = "yeo-johnson")]
    YeoJohnson,
}

/// `op = "power"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerSpec {
    pub columns: Vec<String>,
    #[serde(default)]
    pub method: PowerMethod,
    #[serde(default = "crate::fit_columns::default_true")]
    pub standardize: bool,
    /// Reuse the λ, means and scales of an earlier run's `_weir/fitted.json`.
    #[serde(default)]
    pub fitted: Option<String>,
    /// Keep the input columns; see [`crate::output_columns`].
    #[serde(default)]
    pub output: Option<String>,
}

impl PowerSpec {
    pub fn bind(&self, input: &SchemaRef) -> Result<PowerFit, OpError> {
        Ok(PowerFit { columns: numeric_step_schema(&self.columns, input, "power")?, standardize: self.standardize })
    }
}

/// A `power` step bound to its input, before its λ are fitted.
#[derive(Debug, Clone)]
pub struct PowerFit {
    columns: NumericColumns,
    standardize: bool,
}

/// What the first pass finds of one column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Scan {
    moments: Moments,
    min: f64,
    max: f64,
    /// `Σ sign(x) ln(1 + |x|)`: the log-likelihood's term that does not depend on the data
    /// through `λ`'s transform.
    log_sum: f64,
}

impl Scan {
    fn fold(&mut self, values: &[f64]) {
        if self.moments.count == 0 {
            (self.min, self.max) = (f64::INFINITY, f64::NEG_INFINITY);
        }
        self.moments.fold(values);
        for &x in values {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
            self.log_sum += x.signum() * x.abs().ln_1p();
        }
    }

    fn merge(&mut self, other: &Scan) {
        if other.moments.count == 0 {
            return;
        }
        if self.moments.count == 0 {
            *self = *other;
            return;
        }
        self.moments.merge(&other.moments);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.log_sum += other.log_sum;
    }
}

/// One column during the search: the grid of this pass and the moments of `ψ` at each
/// point, or the `λ` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Search {
    scan: Scan,
    grid: Vec<f64>,
    moments: Vec<Moments>,
    lambda: Option<f64>,
}

/// What workers fold, pass by pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PowerPartial {
    Scan(Vec<Scan>),
    Search {
        pass: u32,
        columns: Vec<Search>,
    },
    /// The moments of `ψ(x, λ)` at each column's `λ`, for `standardize`.
    Standardize(Vec<(f64, Moments)>),
}

/// The fitted parameters, as saved in `fitted.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerParams {
    method: PowerMethod,
    standardize: bool,
    #[serde(flatten)]
    columns: PerColumn<ColumnPower>,
}

/// One column's parameters: `(ψ(x, lambda) − mean) / scale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ColumnPower {
    lambda: f64,
    mean: f64,
    scale: f64,
    count: u64,
}

/// scikit-learn's `_is_constant_feature`: a variance within rounding of zero.
fn is_constant(moments: &Moments) -> bool {
    let (n, var, mean) = (moments.count as f64, moments.variance(), moments.mean());
    var <= n * f64::EPSILON * var + (n * mean * f64::EPSILON).powi(2)
}

/// SciPy's bounds on `λ` (`yeojohnson_normmax`): `ψ` of values up to 20 times the largest
/// seen stays within half the exponent range of `f64`.
fn bounds(scan: &Scan) -> (f64, f64) {
    let log1p_max = (20.0 * scan.min.abs().max(scan.max.abs())).ln_1p();
    let log_eps = f64::EPSILON.ln();
    let log_tiny = (f64::MIN_POSITIVE.ln() - log_eps) / 2.0;
    let log_max = (f64::MAX.ln() + log_eps) / 2.0;
    let (lower, upper) = (log_tiny / log1p_max, log_max / log1p_max);
    if scan.max < 0.0 {
        (2.0 - upper, 2.0 - lower)
    } else if scan.min < 0.0 {
        ((2.0 - upper).max(lower), (2.0 - lower).min(upper))
    } else {
        (lower, upper)
    }
}

fn grid(lower: f64, upper: f64) -> Vec<f64> {
    let step = (upper - lower) / (GRID - 1) as f64;
    (0..GRID).map(|i| if i == GRID - 1 { upper } else { lower + step * i as f64 }).collect()
}

/// The profile log-likelihood at `lambda` from the moments of `ψ(x, lambda)`; −∞ where the
/// transformed variance is not a positive finite number.
fn log_likelihood(lambda: f64, moments: &Moments, log_sum: f64) -> f64 {
    let var = moments.variance();
    if moments.infinite || !var.is_finite() || var < f64::MIN_POSITIVE {
        return f64::NEG_INFINITY;
    }
    -(moments.count as f64) / 2.0 * var.ln() + (lambda - 1.0) * log_sum
}

impl Search {
    /// After a pass: either `λ` (interpolated once the spacing is fine enough) or the grid
    /// of the next pass, around the best point.
    fn step(&mut self, last_pass: bool) {
        let likelihood: Vec<f64> = self
            .grid
            .iter()
            .zip(&self.moments)
            .map(|(&lambda, moments)| log_likelihood(lambda, moments, self.scan.log_sum))
            .collect();
        let best = (0..likelihood.len()).fold(0, |best, i| if likelihood[i] > likelihood[best] { i } else { best });
        let spacing = self.grid[1] - self.grid[0];
        let interior = best > 0 && best + 1 < self.grid.len();
        if spacing < STOP_SPACING || last_pass {
            let vertex = interior
                .then(|| {
                    let (f0, f1, f2) = (likelihood[best - 1], likelihood[best], likelihood[best + 1]);
                    let curvature = f0 - 2.0 * f1 + f2;
                    (curvature < 0.0 && curvature.is_finite())
                        .then(|| self.grid[best] - spacing * (f2 - f0) / (2.0 * curvature))
                })
                .flatten();
            self.lambda = Some(vertex.unwrap_or(self.grid[best]));
            self.grid.clear();
            self.moments.clear();
            return;
        }
        let lower = self.grid[best.saturating_sub(1)];
        let upper = self.grid[(best + 1).min(self.grid.len() - 1)];
        self.grid = grid(lower, upper);
        self.moments = vec![Moments::default(); GRID];
    }
}

impl Fit for PowerFit {
    type Partial = PowerPartial;
    type Params = PowerParams;

    fn shape(&self) -> FitShape {
        self.columns.shape()
    }

    fn new_partial(&self) -> PowerPartial {
        PowerPartial::Scan(vec![Scan::default(); self.columns.names.len()])
    }

    fn fold(&self, partial: &mut PowerPartial, batch: &RecordBatch) -> Result<(), OpError> {
        let mut values = Vec::new();
        let mut transformed = Vec::new();
        for position in 0..self.columns.names.len() {
            self.columns.present(batch, position, &mut values)?;
            match partial {
                PowerPartial::Scan(scans) => scans[position].fold(&values),
                PowerPartial::Search { columns, .. } => {
                    let search = &mut columns[position];
                    if search.lambda.is_some() {
                        continue;
                    }
                    for (&lambda, moments) in search.grid.iter().zip(search.moments.iter_mut()) {
                        transformed.clear();
                        transformed.extend(values.iter().map(|&x| yeo_johnson(x, lambda)));
                        moments.fold(&transformed);
                    }
                }
                PowerPartial::Standardize(columns) => {
                    let (lambda, moments) = &mut columns[position];
                    transformed.clear();
                    transformed.extend(values.iter().map(|&x| yeo_johnson(x, *lambda)));
                    moments.fold(&transformed);
                }
            }
        }
        Ok(())
    }

    fn merge(&self, into: &mut PowerPartial, other: PowerPartial) -> Result<(), OpError> {
        match (into, other) {
            (PowerPartial::Scan(into), PowerPartial::Scan(other)) => {
                into.iter_mut().zip(&other).for_each(|(a, b)| a.merge(b));
            }
            (PowerPartial::Search { columns: into, .. }, PowerPartial::Search { columns: other, .. }) => {
                for (a, b) in into.iter_mut().zip(&other) {
                    a.moments.iter_mut().zip(&b.moments).for_each(|(a, b)| a.merge(b));
                }
            }
            (PowerPartial::Standardize(into), PowerPartial::Standardize(other)) => {
                into.iter_mut().zip(&other).for_each(|((_, a), (_, b))| a.merge(b));
            }
            _ => return Err(OpError::Internal("power: partials of different passes".into())),
        }
        Ok(())
    }

    fn next_pass(&self, merged: &mut PowerPartial) -> Result<Option<PowerPartial>, OpError> {
        let columns: Vec<Search> = match merged {
            PowerPartial::Scan(scans) => {
                let mut columns = Vec::new();
                for (scan, name) in scans.iter().zip(&self.columns.names) {
                    no_infinity(name, "the power transform", scan.moments.infinite)?;
                    if scan.moments.count == 0 {
                        return Err(all_missing(name, "the power transform"));
                    }
                    let constant = is_constant(&scan.moments);
                    let (lower, upper) = bounds(scan);
                    columns.push(Search {
                        scan: *scan,
                        grid: if constant { vec![] } else { grid(lower, upper) },
                        moments: if constant { vec![] } else { vec![Moments::default(); GRID] },
                        // scikit-learn leaves a constant column as it is: λ = 1 is the identity.
                        lambda: constant.then_some(1.0),
                    });
                }
                columns
            }
            PowerPartial::Search { pass, columns } => {
                for search in columns.iter_mut().filter(|search| search.lambda.is_none()) {
                    search.step(*pass + 1 >= MAX_SEARCH_PASSES);
                }
                if columns.iter().any(|search| search.lambda.is_none()) {
                    return Ok(Some(PowerPartial::Search { pass: *pass + 1, columns: columns.clone() }));
                }
                columns.clone()
            }
            PowerPartial::Standardize(_) => return Ok(None),
        };
        if columns.iter().any(|search| search.lambda.is_none()) {
            return Ok(Some(PowerPartial::Search { pass: 0, columns }));
        }
        // Every λ is known: with `standardize`, one more pass for the transformed moments;
        // without, the scan's moments stand in (only their count is kept).
        let lambdas = columns.iter().map(|search| search.lambda.unwrap_or(1.0));
        if self.standardize {
            return Ok(Some(PowerPartial::Standardize(lambdas.map(|l| (l, Moments::default())).collect())));
        }
        *merged = PowerPartial::Standardize(lambdas.zip(columns.iter().map(|search| search.scan.moments)).collect());
        Ok(None)
    }

    fn finish(&self, partial: PowerPartial) -> Result<PowerParams, OpError> {
        let PowerPartial::Standardize(columns) = partial else {
            return Err(OpError::Internal("power: finished before its λ were found".into()));
        };
        let mut fitted = Vec::new();
        for ((lambda, moments), name) in columns.iter().zip(&self.columns.names) {
            let (mean, scale) = match self.standardize {
                false => (0.0, 1.0),
                true => {
                    no_infinity(name, "the transformed mean and variance", moments.infinite)?;
                    if moments.count == 0 {
                        return Err(all_missing(name, "the power transform"));
                    }
                    let var = moments.variance();
                    (moments.mean(), if is_constant(moments) { 1.0 } else { var.sqrt() })
                }
            };
            fitted.push(ColumnPower { lambda: *lambda, mean, scale, count: moments.count });
        }
        Ok(PowerParams {
            method: PowerMethod::YeoJohnson,
            standardize: self.standardize,
            columns: PerColumn::new(&self.columns.names, fitted),
        })
    }

    fn with_params(&self, params: PowerParams) -> Result<Box<dyn BoundStep>, OpError> {
        if params.standardize != self.standardize {
            return Err(OpError::InvalidSpec(format!(
                "the fitted parameters are for standardize = {}; this step asks for {}",
                params.standardize, self.standardize
            )));
        }
        let transforms = params
            .columns
            .ordered(&self.columns.names)?
            .iter()
            .map(|c| {
                if !(c.lambda.is_finite() && c.mean.is_finite() && c.scale.is_finite() && c.scale != 0.0) {
                    return Err(OpError::InvalidSpec(format!("power parameters {c:?} are not finite numbers")));
                }
                Ok(FloatTransform::YeoJohnson { lambda: c.lambda, mean: c.mean, scale: c.scale })
            })
            .collect::<Result<_, _>>()?;
        Ok(self.columns.map(transforms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, Float64Array};
    use arrow::datatypes::{DataType, Field, Float64Type, Schema};
    use std::sync::Arc;

    fn batch(values: Vec<Option<f64>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Float64Array::from(values))]).unwrap()
    }

    fn fit(batches: &[RecordBatch], standardize: bool) -> (serde_json::Value, Box<dyn BoundStep>) {
        let spec = PowerSpec {
            columns: vec!["x".into()],
            method: PowerMethod::YeoJohnson,
            standardize,
            fitted: None,
            output: None,
        };
        let fit = crate::fit::erase(spec.bind(&batches[0].schema()).unwrap());
        let params = crate::fit::fit_in_process(fit.as_ref(), batches);
        let step = fit.with_params(&params).unwrap();
        (params, step)
    }

    #[test]
    fn the_transform_matches_scikit_learns_branches() {
        assert_eq!(yeo_johnson(3.0, 0.0), 4f64.ln());
        assert_eq!(yeo_johnson(3.0, 0.5), (2.0 - 1.0) / 0.5);
        assert_eq!(yeo_johnson(-3.0, 2.0), -(4f64.ln()));
        assert_eq!(yeo_johnson(-3.0, 1.0), -((4f64).powf(1.0) - 1.0));
        assert_eq!(yeo_johnson(0.0, -7.0), 0.0);
    }

    /// λ maximises the profile log-likelihood: checked against a fine scan of it here (the
    /// comparison with SciPy is the end-to-end test's), and the output is standardized.
    #[test]
    fn lambda_maximises_the_likelihood_and_the_output_is_standardized() {
        let values: Vec<f64> = (0..400).map(|i| ((i as f64) * 0.37).exp() % 97.0 - 10.0).collect();
        let halves: Vec<RecordBatch> =
            values.chunks(150).map(|c| batch(c.iter().copied().map(Some).chain([None]).collect())).collect();
        let (params, step) = fit(&halves, true);
        let lambda = params["columns"]["x"]["lambda"].as_f64().unwrap();
        let log_sum: f64 = values.iter().map(|x| x.signum() * x.abs().ln_1p()).sum();
        let likelihood = |l: f64| {
            let mut moments = Moments::default();
            moments.fold(&values.iter().map(|&x| yeo_johnson(x, l)).collect::<Vec<_>>());
            log_likelihood(l, &moments, log_sum)
        };
        for delta in [1e-3, 1e-2, 1e-1] {
            assert!(
                likelihood(lambda) >= likelihood(lambda + delta) && likelihood(lambda) >= likelihood(lambda - delta)
            );
        }
        let out = step.apply(batch(values.iter().copied().map(Some).collect())).unwrap();
        let z = out.column(0).as_primitive::<Float64Type>();
        let mut moments = Moments::default();
        moments.fold(z.values());
        assert!(moments.mean().abs() < 1e-9 && (moments.variance() - 1.0).abs() < 1e-9, "{moments:?}");
        assert!(step.apply(batch(vec![None])).unwrap().column(0).is_null(0));
    }

    #[test]
    fn a_constant_column_keeps_lambda_one_and_an_infinity_names_the_column() {
        let (params, _) = fit(&[batch(vec![Some(4.0), Some(4.0), None])], false);
        assert_eq!(params["columns"]["x"]["lambda"], serde_json::json!(1.0));
        let spec = PowerSpec {
            columns: vec!["x".into()],
            method: PowerMethod::YeoJohnson,
            standardize: true,
            fitted: None,
            output: None,
        };
        let fit = spec.bind(&batch(vec![]).schema()).unwrap();
        let mut partial = fit.new_partial();
        fit.fold(&mut partial, &batch(vec![Some(1.0), Some(f64::INFINITY)])).unwrap();
        let error = fit.next_pass(&mut partial).unwrap_err().to_string();
        assert!(error.contains("column 'x'") && error.contains("infinite"), "{error}");
    }
}
