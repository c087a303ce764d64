//! `output = "{col}_z"` on a cleaning step (`cast`, `impute`, `standardize`, `minmax`,
//! `clip`): keep the raw columns and write the step's results beside them.
//!
//! ```toml
//! [[step]]
//! op = "standardize"
//! columns = ["age", "income"]
//! output = "{col}_z"          # age and income stay as they were; age_z and income_z are added
//! ```
//!
//! The pattern must hold `{col}`, which becomes each column's name. The step then reads the
//! columns it names as it would without `output`, and its results are new columns appended
//! after the input's, in the step's column order; a result name that is already a column
//! is an error naming it. Fitted parameters (`fitted.json`) are keyed by the result names,
//! so an earlier run's parameters are reused by a step with the same `output`. `mask` has
//! no `output`: keeping the raw value beside the masked one would defeat it.
//!
//! It is built from two plain parts: [`KeepInputs`], a map step that appends a copy of each
//! column under its result name (the arrays are shared, not copied), and the step itself
//! bound to those copies. A fitted step stays a fitted step ([`FitWithCopies`]): it folds
//! batches with the copies added and maps with them.

use std::any::Any;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::fit::{FitShape, FitStep, Partial};
use crate::rejects::Rejected;
use crate::{BoundStep, OpError};

/// The placeholder an `output` pattern must hold.
const PLACEHOLDER: &str = "{col}";

/// The result name of `column` under `pattern`.
fn result_name(pattern: &str, column: &str) -> String {
    pattern.replace(PLACEHOLDER, column)
}

/// Appends a copy of some input columns under their result names.
#[derive(Debug)]
pub struct KeepInputs {
    /// For each appended column, the input column it copies.
    sources: Vec<usize>,
    output: SchemaRef,
}

impl KeepInputs {
    /// Copies each of `columns` (names of `input`) to its result name under `pattern`, and
    /// returns the step with the renaming the step behind it uses (input name → result name).
    pub fn new(
        pattern: &str,
        columns: &[String],
        input: &SchemaRef,
    ) -> Result<(KeepInputs, Vec<(String, String)>), OpError> {
        if !pattern.contains(PLACEHOLDER) {
            return Err(OpError::InvalidSpec(format!(
                "output = \"{pattern}\" must hold {PLACEHOLDER}, which becomes each column's name (e.g. \"{PLACEHOLDER}_z\")"
            )));
        }
        let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
        let mut sources = Vec::new();
        let mut renamed = Vec::new();
        for column in columns {
            let index = input.index_of(column).map_err(|_| OpError::NoMatchingColumn {
                selector: column.clone(),
                available: crate::selector::column_list(input),
            })?;
            let name = result_name(pattern, column);
            if fields.iter().any(|field| field.name() == &name) {
                return Err(OpError::InvalidSpec(format!(
                    "output = \"{pattern}\" names the result of column '{column}' '{name}', which is already a column"
                )));
            }
            fields.push(Arc::new(input.field(index).clone().with_name(&name)));
            sources.push(index);
            renamed.push((column.clone(), name));
        }
        let output = Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()));
        Ok((KeepInputs { sources, output }, renamed))
    }
}

impl BoundStep for KeepInputs {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.extend(self.sources.iter().map(|&i| batch.column(i).clone()));
        Ok(RecordBatch::try_new(self.output.clone(), columns)?)
    }

    fn unchanged_columns(&self) -> Option<Vec<Option<usize>>> {
        let width = self.output.fields().len() - self.sources.len();
        Some((0..width).map(Some).chain(self.sources.iter().map(|&i| Some(i))).collect())
    }
}

/// A map step behind its [`KeepInputs`].
#[derive(Debug)]
pub struct MapWithCopies {
    copies: Arc<KeepInputs>,
    step: Box<dyn BoundStep>,
}

impl MapWithCopies {
    pub fn new(copies: Arc<KeepInputs>, step: Box<dyn BoundStep>) -> MapWithCopies {
        MapWithCopies { copies, step }
    }
}

impl BoundStep for MapWithCopies {
    fn output_schema(&self) -> SchemaRef {
        self.step.output_schema()
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, OpError> {
        self.step.apply(self.copies.apply(batch)?)
    }

    fn apply_rejecting(&self, batch: RecordBatch) -> Result<(RecordBatch, Option<Rejected>), OpError> {
        self.step.apply_rejecting(self.copies.apply(batch)?)
    }

    fn rejected_schema(&self) -> Option<SchemaRef> {
        self.step.rejected_schema()
    }

    fn unchanged_columns(&self) -> Option<Vec<Option<usize>>> {
        let copies = self.copies.unchanged_columns()?;
        let step = self.step.unchanged_columns()?;
        Some(step.into_iter().map(|column| column.and_then(|j| copies.get(j).copied().flatten())).collect())
    }
}

/// A fitted step behind its [`KeepInputs`]: it folds and maps batches with the copies added.
#[derive(Debug)]
pub struct FitWithCopies {
    copies: Arc<KeepInputs>,
    fit: Box<dyn FitStep>,
    shape: FitShape,
}

impl FitWithCopies {
    /// `sources` are the input columns the step reads (before they are copied).
    pub fn new(copies: KeepInputs, fit: Box<dyn FitStep>, sources: Vec<String>) -> FitWithCopies {
        let inner = fit.shape();
        let shape = FitShape {
            output: inner.output.clone(),
            columns: sources,
            written: inner.written.clone(),
            keeps_every_row: inner.keeps_every_row,
            strategy: inner.strategy.clone(),
            open: inner.open,
        };
        FitWithCopies { copies: Arc::new(copies), fit, shape }
    }
}

impl FitStep for FitWithCopies {
    fn shape(&self) -> &FitShape {
        &self.shape
    }

    /// Not the typed fit: a chain of fitted steps (`linear_chain`) does not fuse through it.
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn new_partial(&self) -> Partial {
        self.fit.new_partial()
    }

    fn fold(&self, partial: &mut Partial, batch: &RecordBatch) -> Result<(), OpError> {
        self.fit.fold(partial, &self.copies.apply(batch.clone())?)
    }

    fn merge(&self, into: &mut Partial, other: Partial) -> Result<(), OpError> {
        self.fit.merge(into, other)
    }

    fn next_pass(&self, merged: &mut Partial) -> Result<Option<Partial>, OpError> {
        self.fit.next_pass(merged)
    }

    fn finish(&self, partial: Partial) -> Result<serde_json::Value, OpError> {
        self.fit.finish(partial)
    }

    fn with_params(&self, params: &serde_json::Value) -> Result<Box<dyn BoundStep>, OpError> {
        Ok(Box::new(MapWithCopies::new(self.copies.clone(), self.fit.with_params(params)?)))
    }

    fn encode(&self, partial: &Partial) -> Result<Vec<u8>, OpError> {
        self.fit.encode(partial)
    }

    fn decode(&self, bytes: &[u8]) -> Result<Partial, OpError> {
        self.fit.decode(bytes)
    }
}
