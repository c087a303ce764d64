//! Fitting a chain of fitted steps in one pass: `impute`, then `standardize` or `minmax`,
//! then `pca` (any two or all three, consecutive, in that order).
//!
//! Fitted one after the other, each step needs a pass over the output of the ones before
//! it: three passes for `impute → standardize → pca`. But every step of such a chain maps
//! a column by a constant fill or an affine map (`slope · x + intercept`), and the
//! statistics of the next step follow exactly from statistics of the raw input:
//!
//! - `impute` (mean, median from the sketch, or a numeric most frequent value) folds its own
//!   partial from the raw columns, as alone;
//! - `standardize` / `minmax` fold the moments / ranges of the present raw values; the
//!   imputed column is those plus `n − count` copies of the fill (Chan's merge with a
//!   zero-variance group; the fill joins the range);
//! - `pca` folds [`MaskedCoMoments`] of the raw columns, from which the co-moments of the
//!   filled columns follow for fills known only after the pass, and an affine map scales
//!   them: `M_z[j, k] = a_j a_k M_y[j, k]`, `mean_z = a · mean_y + b`.
//!
//! Each step's own `finish` then turns the derived statistics into its parameters, in
//! step order, so the parameters (and `fitted.json`) are those of fitting the steps one by
//! one, up to rounding in the last bits. [`compose`] takes the longest such chain at the
//! front of a run of fitted steps. It does not compose what would change the result:
//! an exact median (more passes), `pca` with `on_null = "skip"` (its fit drops rows), or
//! any column of the chain that is `Float16`/`Float32` (the steps between round it).
//!
//! Applied, the chain is one map ([`Fit::with_params`]): where it ends in a `pca` that
//! reads and drops every column the steps before it write, nobody sees the filled or scaled
//! values, so the fills and affine maps fold into pca's mean and weights and the batch is
//! read once (`Fused`, `PcaMap::fuse`), equal to applying the steps in turn up to
//! rounding (unit-tested to 1e-12); otherwise the members apply in turn (`Sequence`).

use std::collections::HashMap;

use arrow::array::{Array, Float64Array};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::fit::{Fit, FitShape, FitStep};
use crate::fit_columns::{FloatTransform, as_f64};
use crate::impute::{ImputeFit, ImputePartial};
use crate::masked_co_moments::MaskedCoMoments;
use crate::minmax::MinMaxFit;
use crate::pca::{PcaFit, PcaMap, missing};
use crate::standardize::StandardizeFit;
use crate::stats::{Moments, Range, all_finite};
use crate::{BoundStep, OpError};

/// The scaling step of a chain.
#[derive(Debug, Clone)]
enum ScaleFit {
    Standardize(StandardizeFit),
    MinMax(MinMaxFit),
}

/// A chain of two or three fitted steps fitted in one pass; see the module documentation.
#[derive(Debug)]
pub struct LinearChainFit {
    impute: Option<ImputeFit>,
    scale: Option<ScaleFit>,
    pca: Option<PcaFit>,
    shape: FitShape,
    /// For each column of `impute` (a mean) or of `standardize`, its position among
    /// `pca`'s columns, when every column of that step is one: the moments of its present
    /// values then come from the masked co-moments, and the step folds nothing of its own.
    impute_in_pca: Option<Vec<usize>>,
    scale_in_pca: Option<Vec<usize>>,
}

/// The position of each of `columns` among `pca`'s, if all are there.
fn positions_in(columns: &[String], pca: Option<&PcaFit>) -> Option<Vec<usize>> {
    let among = pca?.column_names();
    columns.iter().map(|c| among.iter().position(|p| p == c)).collect()
}

/// What one worker folds for a chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainPartial {
    rows: u64,
    impute: Option<ImputePartial>,
    scale: Option<ScalePartial>,
    pca: Option<MaskedCoMoments>,
}

/// The scaling step's partial: moments or ranges of each column's present raw values.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum ScalePartial {
    Moments(Vec<Moments>),
    Ranges(Vec<Range>),
}

fn only_float64(types: &[DataType]) -> bool {
    types.iter().all(|t| t == &DataType::Float64)
}

/// The longest chain at the front of `fits` (consecutive fitted steps, in step order) that
/// can be fitted in one pass, as one fitted step, with the number of steps it covers;
/// `None` when fewer than two steps compose.
pub fn compose(fits: &[&dyn FitStep]) -> Option<(usize, Box<dyn FitStep>)> {
    let mut next = fits.iter().map(|f| f.as_any()).peekable();
    let impute = next
        .next_if(|f| f.downcast_ref::<ImputeFit>().is_some_and(ImputeFit::fills_with_one_exact_number))
        .and_then(|f| f.downcast_ref::<ImputeFit>())
        .cloned();
    let scale = match next.peek() {
        Some(f) => match (f.downcast_ref::<StandardizeFit>(), f.downcast_ref::<MinMaxFit>()) {
            (Some(fit), _) if only_float64(&fit.columns().output_types) => Some(ScaleFit::Standardize(fit.clone())),
            (_, Some(fit)) if only_float64(&fit.columns().output_types) => Some(ScaleFit::MinMax(fit.clone())),
            _ => None,
        },
        None => None,
    };
    if scale.is_some() {
        next.next();
    }
    let pca = next
        .next_if(|f| f.downcast_ref::<PcaFit>().is_some_and(PcaFit::composable))
        .and_then(|f| f.downcast_ref::<PcaFit>())
        .cloned();
    let members = usize::from(impute.is_some()) + usize::from(scale.is_some()) + usize::from(pca.is_some());
    if members < 2 {
        return None;
    }
    let shapes: Vec<FitShape> = fits[..members].iter().map(|f| f.shape().clone()).collect();
    let mut columns: Vec<String> = Vec::new();
    let mut written: Vec<String> = Vec::new();
    for shape in &shapes {
        for column in &shape.columns {
            if !columns.contains(column) {
                columns.push(column.clone());
            }
        }
        for column in &shape.written {
            if !written.contains(column) {
                written.push(column.clone());
            }
        }
    }
    let output = shapes.last().map(|s| s.output.clone())?;
    let shape = FitShape { output, columns, written, keeps_every_row: true, strategy: None, open: false };
    let impute_in_pca =
        impute.as_ref().filter(|fit| fit.is_mean()).and_then(|fit| positions_in(fit.column_names(), pca.as_ref()));
    let scale_in_pca = match &scale {
        Some(ScaleFit::Standardize(fit)) => positions_in(&fit.columns().names, pca.as_ref()),
        _ => None,
    };
    let chain = LinearChainFit { impute, scale, pca, shape, impute_in_pca, scale_in_pca };
    Some((members, crate::fit::erase(chain)))
}

/// Tags an error with the chain member it comes from.
fn in_chain(member: usize) -> impl Fn(OpError) -> OpError {
    move |error| OpError::InChain { member, error: Box::new(error) }
}

/// A scaling member's map from its parameters, with each column's affine map (`None` for
/// one that is not affine).
type ScaleMap = (Box<dyn BoundStep>, Vec<Option<(f64, f64)>>);

fn scale_map<F: Fit>(
    fit: &F,
    params: &serde_json::Value,
    transforms: impl Fn(&F::Params) -> Result<Vec<FloatTransform>, OpError>,
) -> Result<ScaleMap, OpError> {
    let fitted: F::Params = from_json(params)?;
    let affine = transforms(&fitted)?.into_iter().map(FloatTransform::affine).collect();
    Ok((fit.with_params(fitted)?, affine))
}

fn to_json<T: Serialize>(params: &T) -> Result<serde_json::Value, OpError> {
    serde_json::to_value(params).map_err(|e| OpError::Internal(format!("fitted parameters do not serialise: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(params: &serde_json::Value) -> Result<T, OpError> {
    serde_json::from_value(params.clone())
        .map_err(|e| OpError::InvalidSpec(format!("the fitted parameters are malformed for this step: {e}")))
}

impl LinearChainFit {
    /// The member numbers (0-based, in step order) of the scaling step and of `pca`.
    fn members(&self) -> (usize, usize) {
        let scale = usize::from(self.impute.is_some());
        (scale, scale + usize::from(self.scale.is_some()))
    }

    /// The columns `pca` reads, as `Float64`, from a batch of the chain's input. A column no
    /// `impute` of the chain fills must have no missing value (as `pca` alone requires).
    fn pca_inputs(&self, fit: &PcaFit, batch: &RecordBatch) -> Result<Vec<Float64Array>, OpError> {
        let imputed = self.impute.as_ref().map_or(&[][..], |i| i.column_names());
        let (_, member) = self.members();
        fit.column_names()
            .iter()
            .map(|name| {
                let column = batch
                    .column_by_name(name)
                    .ok_or_else(|| OpError::Internal(format!("column '{name}' missing from a batch")))?;
                let values = as_f64(column)?;
                if !imputed.contains(name) {
                    if values.null_count() > 0 {
                        return Err(in_chain(member)(missing(name, "null")));
                    }
                    if !all_finite(values.values()) && values.values().iter().any(|v| v.is_nan()) {
                        return Err(in_chain(member)(missing(name, "NaN")));
                    }
                }
                Ok(values)
            })
            .collect()
    }
}

impl Fit for LinearChainFit {
    type Partial = ChainPartial;
    /// Each member's parameters, in step order.
    type Params = Vec<serde_json::Value>;

    fn shape(&self) -> FitShape {
        self.shape.clone()
    }

    fn new_partial(&self) -> ChainPartial {
        ChainPartial {
            rows: 0,
            impute: self.impute.as_ref().filter(|_| self.impute_in_pca.is_none()).map(|fit| fit.new_partial()),
            scale: self.scale.as_ref().filter(|_| self.scale_in_pca.is_none()).map(|scale| match scale {
                ScaleFit::Standardize(fit) => ScalePartial::Moments(fit.new_partial()),
                ScaleFit::MinMax(fit) => ScalePartial::Ranges(fit.new_partial()),
            }),
            pca: self.pca.as_ref().map(|fit| MaskedCoMoments::new(fit.column_names().len())),
        }
    }

    fn fold(&self, partial: &mut ChainPartial, batch: &RecordBatch) -> Result<(), OpError> {
        let (scale_member, pca_member) = self.members();
        partial.rows += batch.num_rows() as u64;
        if let (Some(fit), Some(into)) = (&self.impute, partial.impute.as_mut()) {
            fit.fold(into, batch).map_err(in_chain(0))?;
        }
        match (&self.scale, partial.scale.as_mut()) {
            (Some(ScaleFit::Standardize(fit)), Some(ScalePartial::Moments(into))) => fit.fold(into, batch),
            (Some(ScaleFit::MinMax(fit)), Some(ScalePartial::Ranges(into))) => fit.fold(into, batch),
            _ => Ok(()),
        }
        .map_err(in_chain(scale_member))?;
        if let (Some(fit), Some(into)) = (&self.pca, partial.pca.as_mut()) {
            let columns = self.pca_inputs(fit, batch)?;
            let views: Vec<&Float64Array> = columns.iter().collect();
            into.fold(&views).map_err(in_chain(pca_member))?;
        }
        Ok(())
    }

    fn merge(&self, into: &mut ChainPartial, other: ChainPartial) -> Result<(), OpError> {
        into.rows += other.rows;
        if let (Some(fit), Some(a), Some(b)) = (&self.impute, into.impute.as_mut(), other.impute) {
            fit.merge(a, b)?;
        }
        match (&self.scale, into.scale.as_mut(), other.scale) {
            (Some(_), None, None) => {}
            (Some(ScaleFit::Standardize(fit)), Some(ScalePartial::Moments(a)), Some(ScalePartial::Moments(b))) => {
                fit.merge(a, b)?
            }
            (Some(ScaleFit::MinMax(fit)), Some(ScalePartial::Ranges(a)), Some(ScalePartial::Ranges(b))) => {
                fit.merge(a, b)?
            }
            (None, None, None) => {}
            _ => return Err(OpError::Internal("a chain got partials of another chain".into())),
        }
        if let (Some(a), Some(b)) = (into.pca.as_mut(), other.pca) {
            a.merge(b)?;
        }
        Ok(())
    }

    fn finish(&self, partial: ChainPartial) -> Result<Vec<serde_json::Value>, OpError> {
        let (scale_member, pca_member) = self.members();
        let rows = partial.rows;
        let mut params = Vec::new();
        let mut fills: HashMap<&str, f64> = HashMap::new();
        let from_pca = |positions: &Vec<usize>| -> Result<Vec<Moments>, OpError> {
            let masked =
                partial.pca.as_ref().ok_or_else(|| OpError::Internal("a chain lost its pca partial".into()))?;
            Ok(positions.iter().map(|&j| masked.present_moments(j)).collect())
        };
        let impute_partial = match &self.impute_in_pca {
            Some(positions) => Some(ImputePartial::Moments(from_pca(positions)?)),
            None => partial.impute,
        };
        let scale_partial = match &self.scale_in_pca {
            Some(positions) => Some(ScalePartial::Moments(from_pca(positions)?)),
            None => partial.scale,
        };
        if let (Some(fit), Some(folded)) = (&self.impute, impute_partial) {
            let fitted = fit.finish(folded).map_err(in_chain(0))?;
            for (name, fill) in fit.column_names().iter().zip(fitted.ordered(fit.column_names())?) {
                let value = fill
                    .number()
                    .ok_or_else(|| OpError::Internal(format!("the fill of column '{name}' is not a number")))?;
                fills.insert(name, value);
            }
            params.push(to_json(&fitted)?);
        }
        let mut transforms: HashMap<&str, FloatTransform> = HashMap::new();
        let missing_of = |count: u64| rows.saturating_sub(count);
        match (&self.scale, scale_partial) {
            (Some(ScaleFit::Standardize(fit)), Some(ScalePartial::Moments(mut moments))) => {
                for (m, name) in moments.iter_mut().zip(&fit.columns().names) {
                    if let Some(&fill) = fills.get(name.as_str())
                        && missing_of(m.count) > 0
                    {
                        let filled = Moments { count: missing_of(m.count), shift: fill, ..Moments::default() };
                        m.merge(&filled);
                    }
                }
                let fitted = fit.finish(moments).map_err(in_chain(scale_member))?;
                let names = fit.columns().names.iter().map(String::as_str);
                transforms.extend(names.zip(fit.transforms(&fitted)?));
                params.push(to_json(&fitted)?);
            }
            (Some(ScaleFit::MinMax(fit)), Some(ScalePartial::Ranges(mut ranges))) => {
                for (range, name) in ranges.iter_mut().zip(&fit.columns().names) {
                    if let Some(&fill) = fills.get(name.as_str())
                        && missing_of(range.count) > 0
                    {
                        range.merge(&Range { count: missing_of(range.count), min: fill, max: fill });
                    }
                }
                let fitted = fit.finish(ranges).map_err(in_chain(scale_member))?;
                let names = fit.columns().names.iter().map(String::as_str);
                transforms.extend(names.zip(fit.transforms(&fitted)?));
                params.push(to_json(&fitted)?);
            }
            (None, None) => {}
            _ => return Err(OpError::Internal("a chain's scaling partial does not match its step".into())),
        }
        if let (Some(fit), Some(masked)) = (&self.pca, partial.pca) {
            let names = fit.column_names();
            if let Some(name) = names.iter().enumerate().find(|(j, _)| masked.infinite(*j)).map(|(_, n)| n) {
                return Err(in_chain(pca_member)(PcaFit::infinite(name)));
            }
            let filled: Vec<Option<f64>> = names.iter().map(|n| fills.get(n.as_str()).copied()).collect();
            let mut moments = masked.filled(&filled);
            let d = names.len();
            let affine: Vec<(f64, f64)> = names
                .iter()
                .map(|n| transforms.get(n.as_str()).and_then(|t| t.affine()).unwrap_or((1.0, 0.0)))
                .collect();
            for (j, &(slope, intercept)) in affine.iter().enumerate() {
                moments.shift[j] = slope * moments.shift[j] + intercept;
                moments.offset[j] *= slope;
                for (k, &(other, _)) in affine.iter().enumerate().take(j + 1) {
                    moments.m[j + k * d] *= slope * other;
                }
            }
            let fitted = fit.finish(moments).map_err(in_chain(pca_member))?;
            params.push(to_json(&fitted)?);
        }
        Ok(params)
    }

    /// The chain applied: one map when it can fuse (`Fused`), else its members in turn.
    fn with_params(&self, params: Vec<serde_json::Value>) -> Result<Box<dyn BoundStep>, OpError> {
        let mut params = params.iter();
        let mut next = || params.next().ok_or_else(|| OpError::InvalidSpec("a chain's parameters are short".into()));
        let mut steps: Vec<Box<dyn BoundStep>> = Vec::new();
        let mut fills: HashMap<&str, f64> = HashMap::new();
        let mut affine: HashMap<&str, Option<(f64, f64)>> = HashMap::new();
        if let Some(fit) = &self.impute {
            let fitted: <ImputeFit as Fit>::Params = from_json(next()?)?;
            for (name, fill) in fit.column_names().iter().zip(fitted.ordered(fit.column_names())?) {
                if let Some(value) = fill.number() {
                    fills.insert(name, value);
                }
            }
            steps.push(fit.with_params(fitted).map_err(in_chain(0))?);
        }
        let (scale_member, pca_member) = self.members();
        let (scale_names, scaled) = match &self.scale {
            Some(ScaleFit::Standardize(fit)) => {
                (&fit.columns().names[..], Some(scale_map(fit, next()?, |p| fit.transforms(p))))
            }
            Some(ScaleFit::MinMax(fit)) => {
                (&fit.columns().names[..], Some(scale_map(fit, next()?, |p| fit.transforms(p))))
            }
            None => (&[][..], None),
        };
        if let Some(scaled) = scaled {
            let (map, affines) = scaled.map_err(in_chain(scale_member))?;
            affine.extend(scale_names.iter().map(String::as_str).zip(affines));
            steps.push(map);
        }
        if let Some(fit) = &self.pca {
            let mut map = fit.map(from_json(next()?)?).map_err(in_chain(pca_member))?;
            // Fused only when pca reads every column the steps before it write, and drops
            // them: no one else sees the imputed or scaled values.
            let imputed = self.impute.as_ref().map_or(&[][..], |i| i.column_names());
            let names = fit.column_names();
            let covered = imputed.iter().chain(scale_names).all(|c| names.contains(c))
                && imputed.iter().all(|c| fills.contains_key(c.as_str()));
            let inputs: Option<Vec<(Option<f64>, f64, f64)>> = names
                .iter()
                .map(|n| {
                    let (slope, intercept) = match affine.get(n.as_str()) {
                        Some(affine) => (*affine)?,
                        None => (1.0, 0.0),
                    };
                    Some((fills.get(n.as_str()).copied(), slope, intercept))
                })
                .collect();
            let fused = match inputs {
                Some(inputs) => covered && fit.drops_inputs() && map.fuse(&inputs),
                None => false,
            };
            if fused {
                return Ok(Box::new(Fused { map, member: pca_member }));
            }
            steps.push(Box::new(map));
        }
        Ok(Box::new(Sequence { output: self.shape.output.clone(), steps }))
    }
}

/// The members of a fitted chain applied in turn; an error names its member
/// ([`OpError::InChain`]).
#[derive(Debug)]
struct Sequence {
    output: SchemaRef,
    steps: Vec<Box<dyn BoundStep>>,
}

impl BoundStep for Sequence {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        self.steps
            .iter()
            .enumerate()
            .try_fold(batch, |batch, (member, step)| step.apply(batch).map_err(in_chain(member)))
    }
}

/// A chain ending in a `pca` that reads and drops every column the steps before it write,
/// applied as one map of the raw columns: the fills and affine maps folded into pca's mean
/// and weights ([`PcaMap::fuse`]), one pass over the batch instead of one per step. Its
/// errors are pca's (a missing value in a column no `impute` fills, an infinity).
#[derive(Debug)]
struct Fused {
    map: PcaMap,
    member: usize,
}

impl BoundStep for Fused {
    fn output_schema(&self) -> SchemaRef {
        self.map.output_schema()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        self.map.apply(batch).map_err(in_chain(self.member))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float32Array, Int64Array};
    use arrow::datatypes::{Field, Schema};
    use serde_json::json;

    use super::*;
    use crate::fit::{erase, fit_in_process};
    use crate::impute::{BoundImpute, ImputeSpec};
    use crate::minmax::MinMaxSpec;
    use crate::pca::PcaSpec;
    use crate::standardize::StandardizeSpec;

    /// Three batches: `a` with nulls and NaN, `b` with nulls, `c` integers, `d` untouched.
    fn batches() -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Float64, true),
            Field::new("b", DataType::Float64, true),
            Field::new("c", DataType::Int64, false),
            Field::new("d", DataType::Float64, false),
        ]));
        let mut state = 7u64;
        let mut unit = move || crate::splitmix::next(&mut state) as f64 / u64::MAX as f64;
        [40usize, 1, 77]
            .iter()
            .map(|&rows| {
                let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for r in 0..rows {
                    let (u, v, w) = (unit(), unit(), unit());
                    a.push(match r % 9 {
                        0 => None,
                        4 => Some(f64::NAN),
                        _ => Some(1e4 + 3.0 * u + v),
                    });
                    b.push(if r % 5 == 2 { None } else { Some(-2.0 * u + w) });
                    c.push((w * 100.0) as i64);
                    d.push(v);
                }
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Float64Array::from(a)),
                        Arc::new(Float64Array::from(b)),
                        Arc::new(Int64Array::from(c)),
                        Arc::new(Float64Array::from(d)),
                    ],
                )
                .unwrap()
            })
            .collect()
    }

    fn bind(op: &str, spec: serde_json::Value, input: &SchemaRef) -> Box<dyn FitStep> {
        match op {
            "impute" => match serde_json::from_value::<ImputeSpec>(spec).unwrap().bind(input).unwrap() {
                BoundImpute::Fitted(fit) => erase(fit),
                BoundImpute::Constant(_) => panic!("a constant fill is not fitted"),
            },
            "standardize" => erase(serde_json::from_value::<StandardizeSpec>(spec).unwrap().bind(input).unwrap()),
            "minmax" => erase(serde_json::from_value::<MinMaxSpec>(spec).unwrap().bind(input).unwrap()),
            "pca" => erase(serde_json::from_value::<PcaSpec>(spec).unwrap().bind(input).unwrap()),
            other => panic!("no op {other}"),
        }
    }

    /// The steps bound in turn, each to the output of the one before.
    fn steps(specs: &[(&str, serde_json::Value)], input: &SchemaRef) -> Vec<Box<dyn FitStep>> {
        let mut schema = input.clone();
        specs
            .iter()
            .map(|(op, spec)| {
                let fit = bind(op, spec.clone(), &schema);
                schema = fit.shape().output.clone();
                fit
            })
            .collect()
    }

    /// Each step fitted on the output of the ones before it, as separate passes would.
    fn one_by_one(fits: &[Box<dyn FitStep>], batches: &[RecordBatch]) -> Vec<serde_json::Value> {
        let mut batches = batches.to_vec();
        let mut params = Vec::new();
        for fit in fits {
            let fitted = fit_in_process(fit.as_ref(), &batches);
            let step = fit.with_params(&fitted).unwrap();
            batches = batches.into_iter().map(|b| step.apply(b).unwrap()).collect();
            params.push(fitted);
        }
        params
    }

    fn assert_close(got: &serde_json::Value, want: &serde_json::Value, path: &str) {
        match (got, want) {
            (serde_json::Value::Number(a), serde_json::Value::Number(b)) => {
                let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{path}: {a} vs {b}");
            }
            (serde_json::Value::Array(a), serde_json::Value::Array(b)) => {
                assert_eq!(a.len(), b.len(), "{path}");
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    assert_close(x, y, &format!("{path}[{i}]"));
                }
            }
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{path}");
                for (key, x) in a {
                    assert_close(x, &b[key], &format!("{path}.{key}"));
                }
            }
            _ => assert_eq!(got, want, "{path}"),
        }
    }

    fn composed(fits: &[Box<dyn FitStep>]) -> Option<(usize, Box<dyn FitStep>)> {
        let views: Vec<&dyn FitStep> = fits.iter().map(|f| f.as_ref()).collect();
        compose(&views)
    }

    fn check_parity(specs: &[(&str, serde_json::Value)], members: usize) {
        let batches = batches();
        let fits = steps(specs, &batches[0].schema());
        let (covered, chain) = composed(&fits).expect("the steps compose");
        assert_eq!(covered, members);
        let together = fit_in_process(chain.as_ref(), &batches);
        let alone = one_by_one(&fits[..members], &batches);
        assert_close(&together, &serde_json::Value::Array(alone), "params");
        // The chain's own step maps as the members do in turn (fused, up to rounding).
        let map = chain.with_params(&together).unwrap();
        let fuses = specs.last().is_some_and(|(op, spec)| *op == "pca" && spec.get("keep_inputs").is_none());
        assert_eq!(format!("{map:?}").starts_with("Fused"), fuses && members == specs.len(), "{map:?}");
        for batch in &batches {
            let mapped = map.apply(batch.clone()).unwrap();
            let mut expected = batch.clone();
            for (fit, params) in fits[..members].iter().zip(together.as_array().unwrap()) {
                expected = fit.with_params(params).unwrap().apply(expected).unwrap();
            }
            assert_batches_close(&mapped, &expected);
        }
    }

    /// Equal schemas, equal non-float columns and float columns equal within 1e-12 (a fused
    /// map rounds in another order).
    fn assert_batches_close(got: &RecordBatch, want: &RecordBatch) {
        assert_eq!(got.schema(), want.schema());
        for (i, (a, b)) in got.columns().iter().zip(want.columns()).enumerate() {
            match (a.as_any().downcast_ref::<Float64Array>(), b.as_any().downcast_ref::<Float64Array>()) {
                (Some(a), Some(b)) => {
                    assert_eq!(a.nulls(), b.nulls(), "column {i}");
                    for (x, y) in a.values().iter().zip(b.values().iter()) {
                        let same = (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-12 * y.abs().max(1.0);
                        assert!(same, "column {i}: {x} vs {y}");
                    }
                }
                _ => assert_eq!(a, b, "column {i}"),
            }
        }
    }

    #[test]
    fn a_chain_whose_pca_keeps_its_inputs_applies_its_members_in_turn() {
        check_parity(
            &[
                ("impute", json!({"columns": ["a", "b"]})),
                ("standardize", json!({"columns": ["a", "b"]})),
                ("pca", json!({"columns": ["a", "b", "c"], "components": 2, "keep_inputs": true})),
            ],
            3,
        );
        // pca does not read every column the steps before it write: not fused either.
        let batches = batches();
        let fits = steps(
            &[
                ("impute", json!({"columns": ["a", "b"]})),
                ("standardize", json!({"columns": ["a", "b", "d"]})),
                ("pca", json!({"columns": ["a", "b", "c"], "components": 2})),
            ],
            &batches[0].schema(),
        );
        let (_, chain) = composed(&fits).unwrap();
        let map = chain.with_params(&fit_in_process(chain.as_ref(), &batches)).unwrap();
        assert!(format!("{map:?}").starts_with("Sequence"), "{map:?}");
    }

    #[test]
    fn a_fused_chain_refuses_what_pca_refuses_and_names_the_pca_member() {
        let batches = batches();
        let fits = steps(
            &[
                ("impute", json!({"columns": ["a"]})),
                ("standardize", json!({"columns": ["a", "d"]})),
                ("pca", json!({"columns": ["a", "d"], "components": 1})),
            ],
            &batches[0].schema(),
        );
        let (_, chain) = composed(&fits).unwrap();
        let map = chain.with_params(&fit_in_process(chain.as_ref(), &batches)).unwrap();
        assert!(format!("{map:?}").starts_with("Fused"), "{map:?}");
        // The batch with row 3 of `column` set to `value` (`d` made nullable to take a null).
        let with = |column: usize, value: Option<f64>| {
            let fields =
                batches[0].schema().fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>();
            let mut columns = batches[0].columns().to_vec();
            let mut values: Vec<Option<f64>> =
                columns[column].as_any().downcast_ref::<Float64Array>().unwrap().iter().collect();
            values[3] = value;
            columns[column] = Arc::new(Float64Array::from(values));
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
        };
        for (column, value, message) in [
            (3, None, "column 'd' holds a null"),
            (3, Some(f64::NAN), "column 'd' holds a NaN"),
            (0, Some(f64::INFINITY), "column 'a' holds an infinite value"),
            (3, Some(f64::NEG_INFINITY), "column 'd' holds an infinite value"),
        ] {
            let error = map.apply(with(column, value)).unwrap_err();
            let (member, inner) = error.chain_member();
            assert_eq!(member, 2, "{error}");
            assert!(inner.to_string().contains(message), "{inner}");
            assert!(error.is_user_error());
        }
        // A missing value of an imputed column is filled, as impute would.
        assert!(map.apply(with(0, None)).is_ok() && map.apply(with(0, Some(f64::NAN))).is_ok());
    }

    #[test]
    fn impute_standardize_pca_in_one_pass_equal_three_passes() {
        check_parity(
            &[
                ("impute", json!({"columns": ["a", "b"]})),
                ("standardize", json!({"columns": ["a", "b", "c"]})),
                ("pca", json!({"columns": ["a", "b", "c"], "components": 2})),
            ],
            3,
        );
    }

    #[test]
    fn other_shapes_of_chain_compose_too() {
        // The median from the sketch, then minmax over a subset; pca over a column only imputed.
        check_parity(
            &[
                ("impute", json!({"columns": ["a", "b"], "strategy": "median"})),
                ("minmax", json!({"columns": ["a", "c"], "range": [-1.0, 1.0]})),
                ("pca", json!({"columns": ["a", "b", "c", "d"], "components": 3, "whiten": true})),
            ],
            3,
        );
        check_parity(
            &[
                ("impute", json!({"columns": ["a", "b"], "strategy": "most_frequent"})),
                ("standardize", json!({"columns": ["b"]})),
            ],
            2,
        );
        check_parity(
            &[
                ("standardize", json!({"columns": ["c", "d"]})),
                ("pca", json!({"columns": ["c", "d"], "components": 1})),
            ],
            2,
        );
        check_parity(
            &[
                ("impute", json!({"columns": ["a"]})),
                ("pca", json!({"columns": ["a", "c"], "components": 0.9, "max_components": 2})),
            ],
            2,
        );
    }

    #[test]
    fn chains_that_would_change_the_result_do_not_compose() {
        let batches = batches();
        let schema = batches[0].schema();
        let exact = steps(
            &[
                ("impute", json!({"columns": ["a"], "strategy": "median", "exact": true})),
                ("standardize", json!({"columns": ["a"]})),
            ],
            &schema,
        );
        assert!(composed(&exact).is_none(), "an exact median takes more passes");
        let skip = steps(
            &[
                ("impute", json!({"columns": ["a"]})),
                ("standardize", json!({"columns": ["a"]})),
                ("pca", json!({"columns": ["a", "b"], "components": 1, "on_null": "skip"})),
            ],
            &schema,
        );
        assert_eq!(composed(&skip).map(|(n, _)| n), Some(2), "pca that drops rows is fitted on its own");
        assert!(composed(&skip[..1]).is_none(), "one step is no chain");
        assert!(composed(&skip[1..2]).is_none());

        let float32 = Arc::new(Schema::new(vec![Field::new("x", DataType::Float32, true)]));
        let rounded =
            steps(&[("impute", json!({"columns": ["x"]})), ("standardize", json!({"columns": ["x"]}))], &float32);
        assert!(composed(&rounded).is_none(), "Float32 columns are rounded between the steps");
        let batch = RecordBatch::try_new(float32, vec![Arc::new(Float32Array::from(vec![Some(1.0f32), None]))]);
        assert!(batch.is_ok());
    }

    #[test]
    fn a_missing_value_pca_would_refuse_names_the_pca_member() {
        let batches = batches();
        let fits = steps(
            &[
                ("impute", json!({"columns": ["a"]})),
                ("standardize", json!({"columns": ["a"]})),
                ("pca", json!({"columns": ["a", "b"], "components": 1})),
            ],
            &batches[0].schema(),
        );
        let (_, chain) = composed(&fits).unwrap();
        let mut partial = chain.new_partial();
        let error = chain.fold(&mut partial, &batches[0]).unwrap_err();
        let (member, inner) = error.chain_member();
        assert_eq!(member, 2);
        assert!(inner.to_string().contains("column 'b' holds a null"), "{inner}");
        assert!(error.is_user_error());
    }
}
