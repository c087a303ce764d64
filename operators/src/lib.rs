//! Weir's operators: pure transforms on Arrow [`RecordBatch`]es.
//!
//! Every `op = "…"` of a job's `[[step]]` is one [`StepSpec`] variant (the registry in
//! [`step`]), configured by a serde struct that lives in the operator's own file. A spec is
//! *bound* to the schema that reaches it ([`StepSpec::bind`]), which resolves column
//! selectors, checks types and fixes the output schema before any data is read; the bound
//! step ([`BoundStep`]) then maps batches. Fitted steps bind to a [`FitStep`] instead, whose
//! mergeable partials ([`stats`], [`quantile_sketch`]) the engine folds, merges and finishes
//! into parameters before they map. Nothing here knows about timely, files or stores,
//! so each operator is unit-tested on a `RecordBatch` with no dataflow around it.
//!
//! [`RecordBatch`]: arrow::record_batch::RecordBatch

pub mod aggregate;
pub mod bound_step;
pub mod bucketize;
pub mod cast;
pub mod categories;
pub mod check;
pub mod clip;
pub mod co_moments;
pub mod dedupe;
pub mod derive;
pub mod drop_columns;
pub mod drop_nulls;
pub mod error;
pub mod exact_quantile;
pub mod explain;
pub mod expr;
pub mod filter;
pub mod fit;
pub mod fit_columns;
pub mod fitted_file;
pub mod group_table;
pub mod hash_encode;
pub mod impute;
pub mod join;
pub mod linear_chain;
pub mod mask;
pub mod masked_co_moments;
pub mod maxabs;
pub mod minmax;
pub mod normalize;
pub mod onehot;
pub mod onnx_graph;
pub mod onnx_runtime;
pub mod ordinal;
pub mod output_columns;
pub mod pca;
pub mod power;
pub mod quantile_sketch;
pub mod rejects;
pub mod rename;
pub mod robust_scale;
pub mod score;
pub mod select;
pub mod selector;
pub mod shapley;
pub mod splitmix;
pub mod standardize;
pub mod stats;
pub mod step;
pub mod tree_shap;
pub mod types;

pub use bound_step::BoundStep;
pub use error::OpError;
pub use fit::FitStep;
pub use step::{BindContext, Bound, StepSpec, bind_steps, is_open};
