//! The operator registry: one [`StepSpec`] variant per `op = "…"`, and [`Bound`], what
//! binding gives: a map step ([`BoundStep`]), a fitted step that must see the data first
//! ([`FitStep`]), a keyed dedupe that the engine runs across workers, or a `check` whose expectations
//! it counts across workers.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};

use crate::OpError;
use crate::aggregate::{Aggregate, AggregateSpec};
use crate::bound_step::BoundStep;
use crate::bucketize::{BoundBucketize, BucketizeSpec, Encode};
use crate::cast::CastSpec;
use crate::check::{Check, CheckSpec};
use crate::clip::{BoundClip, ClipSpec};
use crate::dedupe::{Dedupe, DedupeSpec};
use crate::derive::DeriveSpec;
use crate::drop_columns::DropSpec;
use crate::drop_nulls::DropNullsSpec;
use crate::explain::ExplainSpec;
use crate::filter::FilterSpec;
use crate::fit::{Fit, FitStep, erase};
use crate::hash_encode::HashEncodeSpec;
use crate::impute::{BoundImpute, ImputeSpec};
use crate::join::{JoinInput, JoinSpec};
use crate::mask::MaskSpec;
use crate::maxabs::MaxAbsSpec;
use crate::minmax::MinMaxSpec;
use crate::normalize::NormalizeSpec;
use crate::onehot::OneHotSpec;
use crate::ordinal::OrdinalSpec;
use crate::output_columns::{FitWithCopies, KeepInputs, MapWithCopies};
use crate::pca::PcaSpec;
use crate::power::PowerSpec;
use crate::rename::RenameSpec;
use crate::robust_scale::RobustScaleSpec;
use crate::score::ScoreSpec;
use crate::select::SelectSpec;
use crate::standardize::StandardizeSpec;

/// One `[[step]]` of a job, as written in the job's TOML (`op` selects the variant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum StepSpec {
    Select(SelectSpec),
    Drop(DropSpec),
    Rename(RenameSpec),
    Cast(CastSpec),
    Filter(FilterSpec),
    Derive(DeriveSpec),
    DropNulls(DropNullsSpec),
    Mask(MaskSpec),
    Impute(ImputeSpec),
    Standardize(StandardizeSpec),
    #[serde(rename = "minmax")]
    MinMax(MinMaxSpec),
    #[serde(rename = "maxabs")]
    MaxAbs(MaxAbsSpec),
    RobustScale(RobustScaleSpec),
    Power(PowerSpec),
    Normalize(NormalizeSpec),
    HashEncode(HashEncodeSpec),
    Clip(ClipSpec),
    Bucketize(BucketizeSpec),
    Ordinal(OrdinalSpec),
    #[serde(rename = "onehot")]
    OneHot(OneHotSpec),
    Join(JoinSpec),
    Aggregate(AggregateSpec),
    Dedupe(DedupeSpec),
    Check(CheckSpec),
    Pca(PcaSpec),
    Score(ScoreSpec),
    Explain(ExplainSpec),
}

impl StepSpec {
    /// The URIs the step reads from (a `fitted` output, a `model`), to resolve relative
    /// paths against the job file's folder.
    pub fn uris_mut(&mut self) -> Vec<&mut String> {
        match self {
            StepSpec::Score(spec) => vec![&mut spec.model],
            StepSpec::Explain(spec) => [Some(&mut spec.model), spec.fitted.as_mut()].into_iter().flatten().collect(),
            other => other.fitted_mut().and_then(Option::as_mut).into_iter().collect(),
        }
    }

    /// The URIs the step reads from, as [`StepSpec::uris_mut`] lists them.
    pub fn uris(&self) -> Vec<&str> {
        match self {
            StepSpec::Score(spec) => vec![spec.model.as_str()],
            StepSpec::Explain(spec) => {
                [Some(spec.model.as_str()), spec.fitted.as_deref()].into_iter().flatten().collect()
            }
            other => other.fitted().into_iter().collect(),
        }
    }

    /// The model a `score` or `explain` step runs, and the SHA-256 it pins, if any.
    pub fn model(&self) -> Option<(&str, Option<&str>)> {
        match self {
            StepSpec::Score(spec) => Some((&spec.model, spec.sha256.as_deref())),
            StepSpec::Explain(spec) => Some((&spec.model, spec.sha256.as_deref())),
            _ => None,
        }
    }

    /// The `fitted = "URI"` of a fitted op (impute, standardize, minmax, clip, pca); `None`
    /// for the others.
    pub fn fitted_mut(&mut self) -> Option<&mut Option<String>> {
        match self {
            StepSpec::Impute(spec) => Some(&mut spec.fitted),
            StepSpec::Standardize(spec) => Some(&mut spec.fitted),
            StepSpec::MinMax(spec) => Some(&mut spec.fitted),
            StepSpec::Clip(spec) => Some(&mut spec.fitted),
            StepSpec::Pca(spec) => Some(&mut spec.fitted),
            StepSpec::Ordinal(spec) => Some(&mut spec.fitted),
            StepSpec::OneHot(spec) => Some(&mut spec.fitted),
            StepSpec::MaxAbs(spec) => Some(&mut spec.fitted),
            StepSpec::RobustScale(spec) => Some(&mut spec.fitted),
            StepSpec::Power(spec) => Some(&mut spec.fitted),
            StepSpec::Bucketize(spec) => Some(&mut spec.fitted),
            StepSpec::Explain(spec) => Some(&mut spec.fitted),
            _ => None,
        }
    }

    /// Whether the step is fitted on the data as configured: a `clip` with fixed bounds and
    /// an `impute` with a constant are not, so a job-level `fitted` passes them by.
    pub fn is_fitted(&self) -> bool {
        match self {
            StepSpec::Clip(spec) => spec.quantiles.is_some(),
            StepSpec::Bucketize(spec) => spec.n_bins.is_some(),
            StepSpec::OneHot(spec) => spec.is_fitted(),
            StepSpec::Impute(spec) => spec.strategy != crate::impute::ImputeStrategy::Constant,
            StepSpec::Standardize(_)
            | StepSpec::MinMax(_)
            | StepSpec::Pca(_)
            | StepSpec::Ordinal(_)
            | StepSpec::MaxAbs(_)
            | StepSpec::RobustScale(_)
            | StepSpec::Power(_)
            | StepSpec::Explain(_) => true,
            _ => false,
        }
    }

    /// The `fitted = "URI"` of a fitted op, if it reuses parameters: the one place the
    /// planner learns it (the bound fitted step does not carry it).
    pub fn fitted(&self) -> Option<&str> {
        match self {
            StepSpec::Impute(spec) => spec.fitted.as_deref(),
            StepSpec::Standardize(spec) => spec.fitted.as_deref(),
            StepSpec::MinMax(spec) => spec.fitted.as_deref(),
            StepSpec::Clip(spec) => spec.fitted.as_deref(),
            StepSpec::Pca(spec) => spec.fitted.as_deref(),
            StepSpec::Ordinal(spec) => spec.fitted.as_deref(),
            StepSpec::OneHot(spec) => spec.fitted.as_deref(),
            StepSpec::MaxAbs(spec) => spec.fitted.as_deref(),
            StepSpec::RobustScale(spec) => spec.fitted.as_deref(),
            StepSpec::Power(spec) => spec.fitted.as_deref(),
            StepSpec::Bucketize(spec) => spec.fitted.as_deref(),
            StepSpec::Explain(spec) => spec.fitted.as_deref(),
            _ => None,
        }
    }

    /// Gives an open step (`onehot`, `bucketize` with `encode = "onehot"`) its fitted
    /// parameters, as `fitted.json` holds them, so that the steps after it can be bound to
    /// the columns it makes: the planner's late binding. Other steps are left as they are.
    pub fn set_known_params(&mut self, params: &serde_json::Value) -> Result<(), OpError> {
        let malformed =
            |e: serde_json::Error| OpError::InvalidSpec(format!("the fitted parameters are malformed: {e}"));
        match self {
            StepSpec::OneHot(spec) => spec.known = Some(serde_json::from_value(params.clone()).map_err(malformed)?),
            StepSpec::Bucketize(spec) if spec.encode == Encode::OneHot => {
                spec.known = Some(serde_json::from_value(params.clone()).map_err(malformed)?)
            }
            _ => {}
        }
        Ok(())
    }

    /// The other input a `join` reads whole, and the most bytes it may take decoded.
    pub fn joined_input(&self) -> Option<(&str, u64)> {
        match self {
            StepSpec::Join(spec) => Some((spec.with.as_str(), spec.broadcast_max_bytes())),
            _ => None,
        }
    }

    /// The fitted parameters' SHA-256 a `score` step is pinned to (`fitted_sha256`).
    pub fn fitted_pin(&self) -> Option<&str> {
        match self {
            StepSpec::Score(spec) => spec.fitted_sha256.as_deref(),
            _ => None,
        }
    }

    /// The `op` name as written in the job.
    pub fn op_name(&self) -> &'static str {
        match self {
            StepSpec::Select(_) => "select",
            StepSpec::Drop(_) => "drop",
            StepSpec::Rename(_) => "rename",
            StepSpec::Cast(_) => "cast",
            StepSpec::Filter(_) => "filter",
            StepSpec::Derive(_) => "derive",
            StepSpec::DropNulls(_) => "drop_nulls",
            StepSpec::Mask(_) => "mask",
            StepSpec::Impute(_) => "impute",
            StepSpec::Standardize(_) => "standardize",
            StepSpec::MinMax(_) => "minmax",
            StepSpec::Clip(_) => "clip",
            StepSpec::Bucketize(_) => "bucketize",
            StepSpec::MaxAbs(_) => "maxabs",
            StepSpec::RobustScale(_) => "robust_scale",
            StepSpec::Power(_) => "power",
            StepSpec::Normalize(_) => "normalize",
            StepSpec::HashEncode(_) => "hash_encode",
            StepSpec::Ordinal(_) => "ordinal",
            StepSpec::OneHot(_) => "onehot",
            StepSpec::Join(_) => "join",
            StepSpec::Aggregate(_) => "aggregate",
            StepSpec::Dedupe(_) => "dedupe",
            StepSpec::Check(_) => "check",
            StepSpec::Pca(_) => "pca",
            StepSpec::Score(_) => "score",
            StepSpec::Explain(_) => "explain",
        }
    }

    /// Resolves selectors and types against `input`; the result handles batches of that
    /// schema. `context` holds what binding needs from outside (the models' bytes). A
    /// cleaning step with `output` keeps its input columns ([`crate::output_columns`]).
    pub fn bind(&self, input: &SchemaRef, context: &BindContext) -> Result<Bound, OpError> {
        if let StepSpec::Bucketize(BucketizeSpec { encode: Encode::OneHot, output: Some(_), .. }) = self {
            return Err(OpError::InvalidSpec(
                "encode = \"onehot\" replaces each column with its bucket columns; it takes no `output`".into(),
            ));
        }
        match self.output_pattern() {
            Some(pattern) => self.bind_keeping_inputs(pattern, input, context),
            None => self.bind_in_place(input, context),
        }
    }

    /// `output = "{col}…"` of a cleaning step (cast, impute, standardize, minmax, clip).
    pub fn output_pattern(&self) -> Option<&str> {
        match self {
            StepSpec::Cast(spec) => spec.output.as_deref(),
            StepSpec::Impute(spec) => spec.output.as_deref(),
            StepSpec::Standardize(spec) => spec.output.as_deref(),
            StepSpec::MinMax(spec) => spec.output.as_deref(),
            StepSpec::Clip(spec) => spec.output.as_deref(),
            StepSpec::Ordinal(spec) => spec.output.as_deref(),
            StepSpec::Bucketize(spec) => spec.output.as_deref(),
            StepSpec::MaxAbs(spec) => spec.output.as_deref(),
            StepSpec::RobustScale(spec) => spec.output.as_deref(),
            StepSpec::Power(spec) => spec.output.as_deref(),
            _ => None,
        }
    }

    /// Binds a cleaning step with `output`: a copy of each column it rewrites under its
    /// result name, then the step itself, without `output`, on those copies.
    fn bind_keeping_inputs(&self, pattern: &str, input: &SchemaRef, context: &BindContext) -> Result<Bound, OpError> {
        let selected: Vec<(String, Option<&String>)> = match self {
            StepSpec::Cast(spec) => {
                let mut selected = Vec::new();
                for (selector, type_name) in &spec.columns {
                    for index in crate::selector::resolve_one(selector, input)? {
                        selected.push((input.field(index).name().clone(), Some(type_name)));
                    }
                }
                selected
            }
            StepSpec::Impute(ImputeSpec { columns, .. })
            | StepSpec::Standardize(StandardizeSpec { columns, .. })
            | StepSpec::MinMax(MinMaxSpec { columns, .. })
            | StepSpec::Clip(ClipSpec { columns, .. })
            | StepSpec::Ordinal(OrdinalSpec { columns, .. })
            | StepSpec::Bucketize(BucketizeSpec { columns, .. })
            | StepSpec::MaxAbs(MaxAbsSpec { columns, .. })
            | StepSpec::RobustScale(RobustScaleSpec { columns, .. })
            | StepSpec::Power(PowerSpec { columns, .. }) => crate::selector::resolve(columns, input)?
                .into_iter()
                .map(|index| (input.field(index).name().clone(), None))
                .collect(),
            _ => return Err(OpError::Internal(format!("{} has no output", self.op_name()))),
        };
        let sources: Vec<String> = selected.iter().map(|(name, _)| name.clone()).collect();
        let (copies, renamed) = KeepInputs::new(pattern, &sources, input)?;
        let results: Vec<String> = renamed.iter().map(|(_, result)| result.clone()).collect();
        let retargeted = match self {
            StepSpec::Cast(spec) => {
                let columns = renamed
                    .iter()
                    .zip(&selected)
                    .map(|((_, result), (_, ty))| (result.clone(), ty.cloned().unwrap_or_default()));
                let hidden =
                    renamed.iter().filter(|(source, _)| spec.hidden.contains(source)).map(|(_, result)| result.clone());
                StepSpec::Cast(CastSpec {
                    columns: columns.collect(),
                    hidden: spec.hidden.iter().cloned().chain(hidden).collect(),
                    output: None,
                    ..spec.clone()
                })
            }
            StepSpec::Impute(spec) => StepSpec::Impute(ImputeSpec { columns: results, output: None, ..spec.clone() }),
            StepSpec::Standardize(spec) => {
                StepSpec::Standardize(StandardizeSpec { columns: results, output: None, ..spec.clone() })
            }
            StepSpec::MinMax(spec) => StepSpec::MinMax(MinMaxSpec { columns: results, output: None, ..spec.clone() }),
            StepSpec::Clip(spec) => StepSpec::Clip(ClipSpec { columns: results, output: None, ..spec.clone() }),
            StepSpec::Ordinal(spec) => {
                StepSpec::Ordinal(OrdinalSpec { columns: results, output: None, ..spec.clone() })
            }
            StepSpec::Bucketize(spec) => {
                StepSpec::Bucketize(BucketizeSpec { columns: results, output: None, ..spec.clone() })
            }
            StepSpec::MaxAbs(spec) => StepSpec::MaxAbs(MaxAbsSpec { columns: results, output: None, ..spec.clone() }),
            StepSpec::RobustScale(spec) => {
                StepSpec::RobustScale(RobustScaleSpec { columns: results, output: None, ..spec.clone() })
            }
            StepSpec::Power(spec) => StepSpec::Power(PowerSpec { columns: results, output: None, ..spec.clone() }),
            _ => return Err(OpError::Internal(format!("{} has no output", self.op_name()))),
        };
        Ok(match retargeted.bind_in_place(&copies.output_schema(), context)? {
            Bound::Map(step) => Bound::Map(Box::new(MapWithCopies::new(Arc::new(copies), step))),
            Bound::Fit(fit) => Bound::Fit(Box::new(FitWithCopies::new(copies, fit, sources))),
            Bound::Dedupe(_) | Bound::Check(_) | Bound::Aggregate(_) => {
                return Err(OpError::Internal(format!("{} bound to neither a map nor a fit", self.op_name())));
            }
        })
    }

    /// Binds the step to rewrite its columns where they are.
    fn bind_in_place(&self, input: &SchemaRef, context: &BindContext) -> Result<Bound, OpError> {
        Ok(match self {
            StepSpec::Select(spec) => Bound::Map(Box::new(spec.bind(input)?)),
            StepSpec::Drop(spec) => Bound::Map(Box::new(spec.bind(input)?)),
            StepSpec::Rename(spec) => Bound::Map(Box::new(spec.bind(input)?)),
            StepSpec::Cast(spec) => Bound::Map(Box::new(spec.bind(input)?)),
            StepSpec::Filter(spec) => Bound::Map(Box::new(spec.bind(input)?)),
            StepSpec::Derive(spec) => Bound::Map(Box::new(spec.bind(input)?)),
            StepSpec::DropNulls(spec) => Bound::Map(Box::new(spec.bind(input)?)),
            StepSpec::Mask(spec) => Bound::Map(Box::new(spec.bind(input)?)),
            StepSpec::Impute(spec) => match spec.bind(input)? {
                BoundImpute::Constant(step) => Bound::Map(Box::new(step)),
                BoundImpute::Fitted(fit) => Bound::Fit(erase(fit)),
            },
            StepSpec::Standardize(spec) => Bound::Fit(erase(spec.bind(input)?)),
            StepSpec::MinMax(spec) => Bound::Fit(erase(spec.bind(input)?)),
            StepSpec::Clip(spec) => match spec.bind(input)? {
                BoundClip::Fixed(step) => Bound::Map(step),
                BoundClip::Fitted(fit) => Bound::Fit(erase(fit)),
            },
            StepSpec::Ordinal(spec) => Bound::Fit(erase(spec.bind(input)?)),
            StepSpec::OneHot(spec) => {
                let fit = spec.bind(input)?;
                match (spec.is_fitted(), fit.given_params()) {
                    (false, Some(params)) => Bound::Map(fit.with_params(params)?),
                    _ => Bound::Fit(erase(fit)),
                }
            }
            StepSpec::Bucketize(spec) => match spec.bind(input)? {
                BoundBucketize::Fixed(step) => Bound::Map(step),
                BoundBucketize::Fitted(fit) => Bound::Fit(erase(fit)),
            },
            StepSpec::MaxAbs(spec) => Bound::Fit(erase(spec.bind(input)?)),
            StepSpec::RobustScale(spec) => Bound::Fit(erase(spec.bind(input)?)),
            StepSpec::Power(spec) => Bound::Fit(erase(spec.bind(input)?)),
            StepSpec::Normalize(spec) => Bound::Map(Box::new(spec.bind(input)?)),
            StepSpec::HashEncode(spec) => Bound::Map(Box::new(spec.bind(input)?)),
            StepSpec::Join(spec) => Bound::Map(Box::new(spec.bind(input, &context.inputs)?)),
            StepSpec::Aggregate(spec) => Bound::Aggregate(Arc::new(spec.bind(input)?)),
            StepSpec::Dedupe(spec) => Bound::Dedupe(spec.bind(input)?),
            StepSpec::Check(spec) => Bound::Check(spec.bind(input)?),
            StepSpec::Pca(spec) => Bound::Fit(erase(spec.bind(input)?)),
            StepSpec::Score(spec) => {
                let model = context.models.get(&spec.model).cloned().ok_or_else(|| {
                    OpError::Internal(format!("model '{}' was not fetched before binding", spec.model))
                })?;
                Bound::Map(Box::new(spec.bind(input, model)?))
            }
            StepSpec::Explain(spec) => {
                let model = context.models.get(&spec.model).cloned().ok_or_else(|| {
                    OpError::Internal(format!("model '{}' was not fetched before binding", spec.model))
                })?;
                Bound::Fit(erase(spec.bind(input, model)?))
            }
        })
    }
}

/// What binding needs from outside the job's schema: the bytes of every model a `score`
/// step names, keyed by URI (fetched by the caller, once per process), whether the sink
/// encrypts the output, and the other inputs `join` steps read.
#[derive(Debug, Default, Clone)]
pub struct BindContext {
    pub models: HashMap<String, Arc<[u8]>>,
    /// The sink encrypts the output: the values of every column that reaches it are secret,
    /// and errors do not show them.
    pub output_encrypted: bool,
    /// The job's other inputs (`[inputs.NAME]`) that `join` steps read, whole, by name.
    pub inputs: HashMap<String, Arc<JoinInput>>,
}

/// A step bound to the schema that reaches it.
#[derive(Debug)]
pub enum Bound {
    /// Maps each batch on its own.
    Map(Box<dyn BoundStep>),
    /// Must be fitted on the data before it can map.
    Fit(Box<dyn FitStep>),
    /// Keeps one row per key across the whole dataset.
    Dedupe(Dedupe),
    /// Counts expectations over the whole dataset and passes its rows on unchanged.
    Check(Check),
    /// One row per group of the whole dataset: folded per worker, merged by key across
    /// workers, and the rows after it are the groups'.
    Aggregate(Arc<Aggregate>),
}

impl Bound {
    /// Whether the step's output columns are known only once it is fitted.
    pub fn is_open(&self) -> bool {
        matches!(self, Bound::Fit(fit) if fit.shape().open)
    }

    /// The schema of the batches the step returns (an open step's input, until it is
    /// fitted).
    pub fn output_schema(&self) -> SchemaRef {
        match self {
            Bound::Map(step) => step.output_schema(),
            Bound::Fit(fit) => fit.shape().output.clone(),
            Bound::Dedupe(dedupe) => dedupe.output_schema(),
            Bound::Check(check) => check.output_schema(),
            Bound::Aggregate(aggregate) => aggregate.output_schema(),
        }
    }
}

/// A step that failed to bind, with its 1-based position in the job.
#[derive(Debug, thiserror::Error)]
#[error("step {number} ({op}): {source}")]
pub struct BindError {
    pub number: usize,
    pub op: &'static str,
    #[source]
    pub source: OpError,
}

/// Binds a chain of steps, each to the output schema of the one before it.
pub fn bind_steps(steps: &[StepSpec], input: &SchemaRef, context: &BindContext) -> Result<Vec<Bound>, BindError> {
    let mut schema = input.clone();
    let mut bound: Vec<Bound> = Vec::with_capacity(steps.len());
    // The lineage of each step's input columns (what `rename`s hide from a name).
    let mut lineage = vec![Lineage::of_source(input)];
    let mut schemas = vec![input.clone()];
    for (index, spec) in steps.iter().enumerate() {
        if let StepSpec::Mask(mask) = spec {
            check_masked_not_fitted(&bound, steps, index, &mask.columns, &schema, &lineage)?;
        }
        let step = spec.bind(&schema, context).map_err(|source| BindError {
            number: index + 1,
            op: spec.op_name(),
            source,
        })?;
        schema = step.output_schema();
        let next = lineage[index].after(spec, &schema);
        lineage.push(next);
        schemas.push(schema.clone());
        if schema.fields().is_empty() {
            return Err(BindError {
                number: index + 1,
                op: spec.op_name(),
                source: OpError::InvalidSpec("no column is left after this step; an output needs at least one".into()),
            });
        }
        let open = step.is_open();
        bound.push(step);
        if open {
            break;
        }
    }
    let bound_specs = &steps[..bound.len()];
    // Bound up to an open step, the columns that later masks hide and that reach the
    // output are not known yet: if any may be secret, every cast before it hides its values.
    let unseen_secrets = bound.len() < steps.len()
        && (context.output_encrypted || steps[bound.len()..].iter().any(|step| matches!(step, StepSpec::Mask(_))));
    hide_secret_values(bound_specs, &mut bound, &schemas, &lineage, context, unseen_secrets)?;
    Ok(bound)
}

/// Whether `bound` stops at an open step ([`FitShape::open`](crate::fit::FitShape::open)):
/// the steps after it are bound once it is fitted.
pub fn is_open(bound: &[Bound]) -> bool {
    bound.last().is_some_and(Bound::is_open)
}

/// Rebinds each `cast` whose columns are masked by a later step, or reach an encrypted
/// output (every cast's columns with `all_secret`), so that its errors name the row of a value that cannot be cast but never show
/// the value (columns are followed through renames by their lineage).
fn hide_secret_values(
    steps: &[StepSpec],
    bound: &mut [Bound],
    schemas: &[SchemaRef],
    lineage: &[Lineage],
    context: &BindContext,
    all_secret: bool,
) -> Result<(), BindError> {
    let mut secret: Vec<usize> = Vec::new();
    for (index, spec) in steps.iter().enumerate() {
        if let StepSpec::Mask(mask) = spec
            && let Ok(columns) = crate::selector::resolve(&mask.columns, &schemas[index])
        {
            secret.extend(columns.iter().filter_map(|&i| lineage[index].of(schemas[index].field(i).name())));
        }
    }
    if context.output_encrypted
        && let (Some(output), Some(last)) = (schemas.last(), lineage.last())
    {
        secret.extend(output.fields().iter().filter_map(|field| last.of(field.name())));
    }
    for (index, spec) in steps.iter().enumerate() {
        let StepSpec::Cast(cast) = spec else { continue };
        let hidden: Vec<String> = schemas[index]
            .fields()
            .iter()
            .map(|field| field.name().clone())
            .filter(|name| all_secret || lineage[index].of(name).is_some_and(|id| secret.contains(&id)))
            .collect();
        if hidden.is_empty() {
            continue;
        }
        let rebound = StepSpec::Cast(CastSpec { hidden, ..cast.clone() })
            .bind(&schemas[index], context)
            .map_err(|source| BindError { number: index + 1, op: spec.op_name(), source })?;
        bound[index] = rebound;
    }
    Ok(())
}

/// Where each column of a schema comes from: an id per source column, kept through steps
/// that keep the column's name and through `rename`; a column a step adds gets a new id.
#[derive(Debug, Clone)]
struct Lineage {
    origin: HashMap<String, usize>,
    next_id: usize,
}

impl Lineage {
    fn of_source(schema: &SchemaRef) -> Lineage {
        let origin = schema.fields().iter().enumerate().map(|(id, f)| (f.name().clone(), id)).collect();
        Lineage { origin, next_id: schema.fields().len() }
    }

    /// The lineage of `output`, the schema `step` makes from the one this describes.
    fn after(&self, step: &StepSpec, output: &SchemaRef) -> Lineage {
        let renames = match step {
            StepSpec::Rename(rename) => Some(&rename.columns),
            _ => None,
        };
        let mut next_id = self.next_id;
        let mut origin = HashMap::new();
        // `output = "{col}…"`: a result column comes from the column it was computed from.
        let results: HashMap<String, &String> = step
            .output_pattern()
            .map(|pattern| self.origin.keys().map(|column| (pattern.replace("{col}", column), column)).collect())
            .unwrap_or_default();
        for field in output.fields() {
            let name = field.name();
            // The input column this one is: renamed into this name, or of this name unless a
            // rename moved that one away.
            let input = match renames {
                Some(renames) => match renames.iter().find(|(_, new)| *new == name) {
                    Some((old, _)) => Some(old),
                    None => (!renames.contains_key(name)).then_some(name),
                },
                None if self.origin.contains_key(name) => Some(name),
                None => results.get(name).copied(),
            };
            let id = input.and_then(|input| self.origin.get(input).copied()).unwrap_or_else(|| {
                next_id += 1;
                next_id - 1
            });
            origin.insert(name.clone(), id);
        }
        Lineage { origin, next_id }
    }

    fn of(&self, name: &str) -> Option<usize> {
        self.origin.get(name).copied()
    }
}

/// A fitted step's parameters are written to `fitted.json`, and some of them are values of
/// the column (the most frequent value, a minimum, a quantile). A column that a later
/// `mask` step hides must not leak that way, so fitting on it before the mask is refused,
/// whatever it was called there (columns are followed through `rename`s by their lineage).
fn check_masked_not_fitted(
    bound: &[Bound],
    steps: &[StepSpec],
    mask_index: usize,
    selectors: &[String],
    schema: &SchemaRef,
    lineage: &[Lineage],
) -> Result<(), BindError> {
    let Ok(masked) = crate::selector::resolve(selectors, schema) else { return Ok(()) };
    let masked: Vec<usize> =
        masked.iter().filter_map(|&i| lineage[mask_index].of(schema.field(i).name().as_str())).collect();
    for (index, step) in bound.iter().enumerate() {
        let Bound::Fit(fit) = step else { continue };
        if steps[index].fitted().is_some() {
            continue;
        }
        let is_masked = |column: &&String| lineage[index].of(column).is_some_and(|id| masked.contains(&id));
        if let Some(column) = fit.shape().columns.iter().find(is_masked) {
            return Err(BindError {
                number: index + 1,
                op: steps[index].op_name(),
                source: OpError::InvalidSpec(format!(
                    "column '{column}' is masked by step {} ({}), but this step would write parameters fitted on its raw \
                     values to fitted.json; fit it after the mask, or reuse parameters with fitted = \"…\"",
                    mask_index + 1,
                    steps[mask_index].op_name()
                )),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use serde_json::json;

    fn impute(column: &str, strategy: &str) -> serde_json::Value {
        json!({ "op": "impute", "columns": [column], "strategy": strategy })
    }

    fn rename(from: &str, to: &str) -> serde_json::Value {
        json!({ "op": "rename", "columns": { from: to } })
    }

    fn mask(column: &str) -> serde_json::Value {
        json!({ "op": "mask", "columns": [column], "method": "redact" })
    }

    fn bind(steps: Vec<serde_json::Value>) -> Result<Vec<Bound>, BindError> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("ssn", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
        ]));
        let steps: Vec<StepSpec> = serde_json::from_value(serde_json::Value::Array(steps)).unwrap();
        bind_steps(&steps, &schema, &BindContext::default())
    }

    /// A column fitted under one name and masked under another (through renames, either
    /// way round) is still refused: the guard follows lineage, not names.
    #[test]
    fn a_masked_column_is_followed_through_renames() {
        let cases = [
            vec![impute("ssn", "most_frequent"), rename("ssn", "id"), mask("id")],
            vec![rename("ssn", "id"), impute("id", "most_frequent"), rename("id", "ssn"), mask("ssn")],
            vec![impute("ssn", "most_frequent"), mask("ssn")],
        ];
        for case in cases {
            let err = bind(case.clone()).err().unwrap_or_else(|| panic!("{case:?} was accepted")).to_string();
            assert!(err.contains("is masked by step") && err.contains("fitted.json"), "{case:?}\n{err}");
        }
        // A cast of a column masked later names the row, never the value.
        let steps = vec![
            json!({ "op": "rename", "columns": { "ssn": "id" } }),
            json!({ "op": "cast", "columns": { "id": "int64" } }),
            mask("id"),
        ];
        let bound = bind(steps).unwrap();
        let batch = arrow::record_batch::RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Utf8, true),
                Field::new("x", DataType::Float64, true),
            ])),
            vec![
                Arc::new(arrow::array::StringArray::from(vec!["12", "4111-1111"])),
                Arc::new(arrow::array::Float64Array::from(vec![1.0, 2.0])),
            ],
        )
        .unwrap();
        let Bound::Map(cast) = &bound[1] else { panic!("cast is a map step") };
        let err = cast.apply(batch).unwrap_err().to_string();
        assert!(err.contains("row 1") && err.contains("not shown") && !err.contains("4111"), "{err}");
        // A column that takes a masked column's old name is another column.
        bind(vec![rename("ssn", "secret"), rename("x", "ssn"), impute("ssn", "mean"), mask("secret")]).unwrap();
    }

    /// A step with `output` keeps its input and appends its results; a result is followed
    /// back to its column by the mask guard, and a cast's result of a masked column hides
    /// its values too.
    #[test]
    fn output_keeps_the_input_and_results_keep_their_lineage() {
        let steps = vec![json!({ "op": "cast", "columns": { "ssn": "int64" }, "output": "{col}_n" })];
        let bound = bind(steps).unwrap();
        let names: Vec<String> = bound[0].output_schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["ssn", "x", "ssn_n"]);
        let batch = arrow::record_batch::RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("ssn", DataType::Utf8, true),
                Field::new("x", DataType::Float64, true),
            ])),
            vec![
                Arc::new(arrow::array::StringArray::from(vec!["12", "13"])),
                Arc::new(arrow::array::Float64Array::from(vec![1.0, 2.0])),
            ],
        )
        .unwrap();
        let Bound::Map(cast) = &bound[0] else { panic!("cast is a map step") };
        let out = cast.apply(batch.clone()).unwrap();
        assert_eq!(out.column(0).as_ref(), batch.column(0).as_ref());
        assert_eq!(out.column(2).as_ref(), &arrow::array::Int64Array::from(vec![12, 13]));

        let imputed_then_masked = vec![
            json!({ "op": "impute", "columns": ["ssn"], "strategy": "most_frequent", "output": "{col}_filled" }),
            mask("ssn"),
        ];
        let err = bind(imputed_then_masked).unwrap_err().to_string();
        assert!(err.contains("column 'ssn' is masked by step 2"), "{err}");
        let err = bind(vec![impute("x_mean", "mean"), mask("ssn")]).unwrap_err().to_string();
        assert!(err.contains("matches no column"), "{err}");
        for (output, expected) in [("z", "must hold {col}"), ("{col}", "already a column"), ("x", "must hold")] {
            let step = json!({ "op": "standardize", "columns": ["x"], "output": output });
            let err = bind(vec![step]).unwrap_err().to_string();
            assert!(err.contains(expected), "{output}: {err}");
        }
    }
}
