//! From a job file to an engine plan: parse it and substitute variables (→ [`LoadedJob`]),
//! parse and check the spec, open the source (footers, schema), bind every step to the
//! schema that reaches it, and cut the source into shards (→ [`EnginePlan`]). Every
//! process of a cluster runs this and gets the same plan.

use arrow::datatypes::SchemaRef;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use weir_connectors::commit::{FITTED_FILE, is_committed};
use weir_connectors::encrypted_fitted;
use weir_connectors::encryption::Decryptor;
use weir_connectors::keys::KeySource;
use weir_connectors::lease::{DEFAULT_LEASE_TTL, check_run_id, new_attempt_id};
use weir_connectors::ledger::{self, committed_manifest};
use weir_connectors::listing::list_data_files;
use weir_connectors::parquet_sink::{PartOptions, stored_schema};
use weir_connectors::parquet_source::ParquetSource;
use weir_connectors::profiles::StorageProfiles;
use weir_connectors::publication::{ENCRYPTED_FITTED_FILE, MANIFEST_FILE};
use weir_connectors::source::{Shard, Source};
use weir_connectors::{ConnectorError, Location};

use weir_connectors::manifest::{InputFile, ModelInfo, OtherInput};
use weir_connectors::object_reader::read_object_at_most;
use weir_engine::{BoundRest, EnginePlan, PlanRest, PlannedStep, RejectsPlan, StepKind};
use weir_operators::fitted_file::{FittedFile, FittedStep, params_sha256};
use weir_operators::join::JoinInput;
use weir_operators::rejects::RejectsLayout;
use weir_operators::step::BindError;
use weir_operators::{BindContext, Bound, OpError, StepSpec, bind_steps, is_open};

use crate::JobError;
use crate::spec::{
    DEFAULT_BATCH_SIZE, DEFAULT_CACHE_MB, DEFAULT_MAX_SHARD_ROWS, DEFAULT_ROW_GROUP_ROWS, DEFAULT_SPILL_MB, JobSpec,
    OnChanged,
};
use crate::vars::Variables;

/// Batches a worker may have read but not yet written (the backpressure window).
pub const MAX_BATCHES_IN_FLIGHT: u64 = 4;

/// A job file after variable substitution and parsing.
#[derive(Debug, Clone)]
pub struct LoadedJob {
    pub path: String,
    pub spec: JobSpec,
    /// SHA-256 (hex) of the job's text and the values of the variables it names.
    pub sha256: String,
    pub vars: Variables,
}

/// How this process takes part in a run, beyond the job file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// This attempt's id (`<run_id>.<8 hex>`); a fresh one when `None`.
    pub attempt: Option<String>,
    /// `--force`: skip the output guards ([`check_output_target`]).
    pub force: bool,
    /// What relative paths in the job are relative to (default: the job file's folder).
    pub base_dir: Option<std::path::PathBuf>,
    /// `weir fit`: where to write `fitted.json`; the run then only fits.
    pub fit_output: Option<String>,
}

/// Reads, substitutes and parses a job file. Relative local paths in it (source, sink,
/// `fitted`, `model`) are resolved against `base`, by default the job file's folder, so
/// that a job runs the same from any working directory (cron's, a service's).
pub fn load_job(path: &str, vars: &Variables, base: Option<&std::path::Path>) -> Result<LoadedJob, JobError> {
    check_run_id(vars.run_id()).map_err(|message| JobError::Invalid { job: path.to_string(), message })?;
    let raw = std::fs::read_to_string(path).map_err(|source| JobError::Read { path: path.to_string(), source })?;
    let mut job = load_job_text(path, &raw, vars)?;
    let folder = match base {
        Some(base) => base.to_path_buf(),
        None => std::path::Path::new(path).parent().map(std::path::Path::to_path_buf).unwrap_or_default(),
    };
    let folder = std::path::absolute(&folder).unwrap_or(folder);
    let spec = &mut job.spec;
    for uri in [&mut spec.source.uri, &mut spec.sink.uri]
        .into_iter()
        .chain(spec.sink.rejects.as_mut())
        .chain(spec.inputs.values_mut().map(|input| &mut input.uri))
        .chain(spec.steps.iter_mut().flat_map(|step| step.uris_mut()))
    {
        *uri = resolve_relative(uri, &folder);
    }
    Ok(job)
}

/// `uri` joined to `folder` when it is a relative local path; anything with a scheme
/// (`s3://`, `file://`) or an absolute path is left as it is. A trailing slash is kept.
pub fn resolve_relative(uri: &str, folder: &std::path::Path) -> String {
    if uri.is_empty() || uri.contains("://") || std::path::Path::new(uri).is_absolute() {
        return uri.to_string();
    }
    let joined = folder.join(uri).to_string_lossy().into_owned();
    if uri.ends_with('/') && !joined.ends_with('/') { format!("{joined}/") } else { joined }
}

/// Substitutes and parses a job's text; `path` names it in errors.
pub fn load_job_text(path: &str, raw: &str, vars: &Variables) -> Result<LoadedJob, JobError> {
    let declared = crate::declared_vars::declared(raw);
    let checked;
    let vars = match &declared {
        Some(declared) => {
            checked = crate::declared_vars::apply(declared, vars)
                .map_err(|message| JobError::Invalid { job: path.to_string(), message })?;
            &checked
        }
        None => vars,
    };
    let document = vars.parse_and_substitute(path, raw)?;
    let mut spec =
        JobSpec::from_document(document, raw).map_err(|message| JobError::Toml { path: path.to_string(), message })?;
    // A job-level `fitted` applies to every fitted step that names none of its own (not to
    // a clip with fixed bounds or a constant impute, which fit nothing).
    if let Some(fitted) = &spec.fitted {
        for slot in spec.steps.iter_mut().filter(|step| step.is_fitted()).filter_map(StepSpec::fitted_mut) {
            slot.get_or_insert_with(|| fitted.clone());
        }
    }
    spec.check().map_err(|message| JobError::Invalid { job: spec.name.clone(), message })?;
    apply_storage_profile(&mut spec).map_err(|message| JobError::Invalid { job: spec.name.clone(), message })?;
    let mut hashed = raw.to_string();
    for (name, value) in vars.pairs() {
        if raw.contains(&name) {
            hashed.push_str(&format!("\0{name}={value}"));
        }
    }
    let sha256 = sha256_hex(hashed.as_bytes());
    Ok(LoadedJob { path: path.to_string(), spec, sha256, vars: vars.clone() })
}

/// The SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Plans a loaded job: opens the source, binds the steps, cuts shards.
pub async fn plan_job(job: &LoadedJob, options: &RunOptions) -> Result<EnginePlan, JobError> {
    let spec = &job.spec;
    let name = spec.name.clone();
    let connector = |what: &'static str| {
        let name = name.clone();
        move |source| JobError::Connector { job: name, what, source: Box::new(source) }
    };
    let source_location = Location::parse(&spec.source.uri, &spec.storage).map_err(connector("source"))?;
    let sink = Location::parse(&spec.sink.uri, &spec.storage).map_err(connector("sink"))?;
    if sink.local_path().is_some_and(|path| path.is_file()) {
        return Err(connector("sink")(ConnectorError::InvalidUri {
            uri: sink.uri(),
            reason: "it is a file; an output is a directory (a prefix) of part files".into(),
        }));
    }
    if source_location.overlaps(&sink) {
        return Err(connector("sink")(weir_connectors::ConnectorError::SinkOverlapsSource {
            source_uri: source_location.uri(),
            sink_uri: sink.uri(),
        }));
    }
    if !options.force {
        check_output_target(&sink, &source_location, &job.path).map_err(connector("sink"))?;
    }
    if let Some(ready) = &spec.source.ready {
        ready.ensure_ready(&source_location, chrono::Utc::now()).await.map_err(connector("source"))?;
    }
    let decryptor = source_decryptor(&name, spec)?;
    // The one place that picks the source's format: Parquet (see `weir_connectors::source`).
    let (source, incremental_base): (Arc<dyn Source>, _) = if spec.source.incremental {
        let (source, base) = open_incremental(&name, &source_location, &sink, spec, decryptor.as_ref()).await?;
        (Arc::new(source), Some(base))
    } else {
        let source = ParquetSource::open(
            &source_location,
            spec.source.columns.as_deref(),
            spec.source.partitioning,
            decryptor.as_ref(),
        )
        .await
        .map_err(connector("source"))?;
        (Arc::new(source), None)
    };
    let (mut context, models) = fetch_models(spec).await?;
    context.output_encrypted = spec.sink.encryption.is_some();
    let (inputs, other_inputs) = read_other_inputs(spec, &sink).await?;
    context.inputs = inputs;
    if let Some(encryption) = &spec.sink.encryption {
        encryption.check_keys(&KeySource::from_env()).map_err(|e| connector("sink")(ConnectorError::SinkKey(e)))?;
    }
    let shards = source.shards(spec.source.max_shard_rows.unwrap_or(DEFAULT_MAX_SHARD_ROWS));
    tracing::info!(
        job = %name,
        files = source.inputs().len(),
        rows = source.total_rows(),
        shards = shards.len(),
        steps = spec.steps.len(),
        "planned"
    );
    let opened = Arc::new(OpenedJob {
        job: job.clone(),
        options: options.clone(),
        attempt: options.attempt.clone().unwrap_or_else(|| new_attempt_id(job.vars.run_id())),
        source_location,
        sink,
        source,
        shards,
        incremental_base,
        context,
        models,
        other_inputs,
    });
    let mut plan = opened.bind_steps(&[]).await?;
    // An open step whose parameters are reused needs no pass: the rest is bound now.
    while plan.open_step().is_some() && plan.steps.last().is_some_and(|step| step.reused.is_some()) {
        let reused: Vec<FittedStep> = plan.steps.iter().filter_map(|step| step.reused.clone()).collect();
        plan = opened.bind_steps(&reused).await?;
    }
    Ok(plan)
}

/// A job with its source opened, its shards cut and its models fetched: what binding its
/// steps starts from, first at planning and then, when a step is open (`onehot`), once
/// more for each open step the run fits ([`weir_engine::PlanRest`]).
struct OpenedJob {
    job: LoadedJob,
    options: RunOptions,
    attempt: String,
    source_location: Location,
    sink: Location,
    source: Arc<dyn Source>,
    shards: Vec<Shard>,
    incremental_base: Option<u64>,
    context: BindContext,
    models: Vec<ModelInfo>,
    other_inputs: Vec<OtherInput>,
}

impl OpenedJob {
    /// The plan of the job with each open step given its parameters from `fitted` (the
    /// `fitted.json` entries so far, by step number); it stops at the first open step
    /// without them.
    async fn bind_steps(self: &Arc<Self>, fitted: &[FittedStep]) -> Result<EnginePlan, JobError> {
        let (job, options) = (&self.job, &self.options);
        let spec = &job.spec;
        let name = spec.name.clone();
        let mut specs = spec.steps.clone();
        for (index, step) in specs.iter_mut().enumerate() {
            let Some(entry) = fitted.iter().find(|entry| entry.step == index + 1) else { continue };
            let op = step.op_name();
            step.set_known_params(&entry.params).map_err(|source| JobError::Step {
                job: name.clone(),
                source: Box::new(BindError { number: index + 1, op, source }),
            })?;
        }
        let bound = bind_steps(&specs, self.source.schema(), &self.context)
            .map_err(|source| JobError::Step { job: name.clone(), source: Box::new(source) })?;
        let open = is_open(&bound);
        let output_schema =
            bound.last().map(|step| step.output_schema()).unwrap_or_else(|| self.source.schema().clone());
        let output_schema = stored_schema(&output_schema);
        // Past an open step the output's columns are not known: checked when they are.
        let file_schema = match open {
            true => output_schema.clone(),
            false => partitioned_file_schema(&name, &output_schema, &spec.sink.partition_by)?,
        };
        if let Some(encryption) = spec.sink.encryption.as_ref().filter(|_| !open) {
            encryption.check(&file_schema, &spec.sink.partition_by).map_err(|message| JobError::Invalid {
                job: name.clone(),
                message: format!("sink.encryption: {message}"),
            })?;
        }
        let steps = plan_steps(&name, &specs, bound, &spec.storage).await?;
        let rejects = plan_rejects(job, options, &steps, &self.source_location, &self.sink, open)?;
        let pins = check_pins_at_planning(&name, spec, &steps)?;
        let fit_output = match &options.fit_output {
            None => None,
            Some(uri) => {
                if !steps.iter().any(|step| matches!(step.kind, StepKind::Fit(_)) || step.reused.is_some()) {
                    return Err(JobError::Invalid {
                        job: name.clone(),
                        message: "it has no fitted step (impute, standardize, minmax, clip, pca): nothing to fit"
                            .into(),
                    });
                }
                Some(Location::parse(uri, &spec.storage).map_err(|source| JobError::Connector {
                    job: name.clone(),
                    what: "fitted output",
                    source: Box::new(source),
                })?)
            }
        };
        let row_group_rows = spec.sink.row_group_rows.unwrap_or(DEFAULT_ROW_GROUP_ROWS);
        let copy_columns = match open {
            true => None,
            false => copy_columns(spec, self.source.as_ref(), &self.shards, &steps, &file_schema, row_group_rows),
        };
        Ok(EnginePlan {
            job_name: name,
            job_sha256: job.sha256.clone(),
            run_id: job.vars.run_id().to_string(),
            variables: job.vars.pairs().into_iter().collect(),
            attempt: self.attempt.clone(),
            lease_ttl: spec.sink.lease_ttl_s.map(Duration::from_secs).unwrap_or(DEFAULT_LEASE_TTL),
            force: options.force,
            source: self.source.clone(),
            shards: self.shards.clone(),
            steps,
            output_schema,
            partition_by: spec.sink.partition_by.clone(),
            file_schema,
            sink: self.sink.clone(),
            mode: spec.sink.mode,
            part_options: PartOptions {
                codec: spec.sink.compression,
                level: spec.sink.compression_level,
                row_group_rows,
                encryption: spec.sink.encryption.clone().map(Arc::new),
                copy_columns,
            },
            batch_size: spec.source.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
            max_batches_in_flight: MAX_BATCHES_IN_FLIGHT,
            cache_bytes: spec.source.cache_mb.unwrap_or(DEFAULT_CACHE_MB).saturating_mul(1 << 20),
            spill_bytes: spec.source.spill_mb.unwrap_or(DEFAULT_SPILL_MB).saturating_mul(1 << 20),
            spill_dir: spec.source.spill_dir.clone().unwrap_or_else(std::env::temp_dir),
            spill_keep_free_bytes: spec.source.spill_keep_free_mb.map(|mb| mb.saturating_mul(1 << 20)),
            models: self.models.clone(),
            incremental_base: self.incremental_base,
            pins,
            fit_output,
            rejects,
            rest: open.then(|| self.clone() as Arc<dyn PlanRest>),
            other_inputs: self.other_inputs.clone(),
        })
    }
}

impl std::fmt::Debug for OpenedJob {
    /// Only the job's name: the rest holds variables and models' bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedJob").field("job", &self.job.spec.name).finish_non_exhaustive()
    }
}

impl PlanRest for OpenedJob {
    fn bind(self: Arc<Self>, fitted: Vec<FittedStep>) -> BoundRest {
        Box::pin(async move { self.bind_steps(&fitted).await.map_err(|error| error.to_failure()) })
    }
}

/// `sink.rejects`: checks the rejects output's place and the steps that reject rows, and
/// lays out its schema ([`RejectsLayout`]). A rejecting step needs `sink.rejects`, and
/// `sink.rejects` needs a rejecting step. Refused: a place on another store than the sink
/// (the two commit as one), one that overlaps the sink or the source, `[sink.encryption]`
/// (the rejected rows would be in the clear) and a rejecting step before a `mask` (they
/// would show what the mask hides).
fn plan_rejects(
    job: &LoadedJob,
    options: &RunOptions,
    steps: &[PlannedStep],
    source: &Location,
    sink: &Location,
    open: bool,
) -> Result<Option<RejectsPlan>, JobError> {
    let spec = &job.spec;
    let invalid = |message: String| JobError::Invalid { job: spec.name.clone(), message };
    // Each rejecting step's number, op and the schema of the rows it rejects.
    let mut rejecting: Vec<(usize, &str, SchemaRef)> = Vec::new();
    for step in steps {
        let schema = match &step.kind {
            StepKind::Map(map) => map.rejected_schema(),
            StepKind::Check(check) => check.rejecter().map(|_| check.output_schema()),
            StepKind::Fit(_) | StepKind::Dedupe(_) | StepKind::Aggregate(_) => None,
        };
        rejecting.extend(schema.map(|schema| (step.number, step.op, schema)));
    }
    let Some(uri) = &spec.sink.rejects else {
        return match rejecting.first() {
            Some((number, op, _)) => Err(invalid(format!(
                "step {number} ({op}) rejects rows, but the job has no sink.rejects to write them to; add rejects = \"URI\" under [sink]"
            ))),
            None => Ok(None),
        };
    };
    let first = rejecting.first().map(|(number, op, _)| (*number, *op));
    // Past an open step, the rejecting steps may come later: checked once it is bound.
    if first.is_none() && !open {
        return Err(invalid(
            "sink.rejects is set, but no step rejects rows (a cast with on_error = \"reject\", or a check with on_fail = \"reject\")".into(),
        ));
    }
    if let Some((first, first_op)) = first
        && let Some(mask) =
            spec.steps.iter().enumerate().skip(first).find(|(_, step)| matches!(step, StepSpec::Mask(_)))
    {
        return Err(invalid(format!(
            "step {first} ({first_op}) rejects rows before step {} (mask) hides columns: sink.rejects would show the values the mask hides; put the mask first",
            mask.0 + 1
        )));
    }
    if spec.sink.encryption.is_some() {
        return Err(invalid(
            "sink.rejects cannot be used with [sink.encryption]: the rejected rows would be written in the clear"
                .into(),
        ));
    }
    let connector =
        |source| JobError::Connector { job: spec.name.clone(), what: "sink.rejects", source: Box::new(source) };
    let output = Location::parse(uri, &spec.storage).map_err(connector)?;
    if !output.same_store(sink) {
        return Err(invalid(format!(
            "sink.rejects '{}' must be on the same store as sink.uri '{}' (both local paths, or one S3 bucket): the two outputs commit as one",
            output.uri(),
            sink.uri()
        )));
    }
    for (what, other) in [("sink.uri", sink), ("source.uri", source)] {
        if output.overlaps(other) {
            return Err(invalid(format!(
                "sink.rejects '{}' overlaps {what} '{}'; give the rejects a prefix of their own",
                output.uri(),
                other.uri()
            )));
        }
    }
    if !options.force {
        check_output_target(&output, source, &job.path).map_err(connector)?;
    }
    let layout = RejectsLayout::new(rejecting.iter().map(|(_, _, schema)| schema))
        .map_err(|error| invalid(format!("sink.rejects: {error}")))?;
    let part_options = PartOptions {
        codec: spec.sink.compression,
        level: spec.sink.compression_level,
        row_group_rows: spec.sink.row_group_rows.unwrap_or(DEFAULT_ROW_GROUP_ROWS),
        encryption: None,
        copy_columns: None,
    };
    Ok(Some(RejectsPlan { output, layout, part_options }))
}

/// For each column of the part files, the source column it is, unchanged and row for row,
/// when part files may copy the source's encoded column chunks instead of encoding them
/// again ([`weir_connectors::chunk_copy`]); `None` when they may not. They may when:
///
/// - every step keeps every row in order (`select`, `drop`, a `score` without
///   `on_null = "skip"`: [`weir_operators::BoundStep::unchanged_columns`]) and at least one
///   column passes through all of them unchanged, with the type the source stores;
/// - `sink.copy_unchanged_columns` is not turned off;
/// - the part files are neither partitioned nor encrypted, the source is not decrypted, the
///   columns are flat, and no `sink.compression_level` is asked for (a copied chunk keeps
///   the level it was compressed with);
/// - the source's row groups hold at least half of `sink.row_group_rows` on average, since
///   a row group that copies chunks is exactly one source row group.
///
/// Each row group then still decides for itself which chunks it copies: only whole source
/// row groups, and chunks stored with the sink's codec and the output's Parquet type.
fn copy_columns(
    spec: &JobSpec,
    source: &dyn Source,
    shards: &[Shard],
    steps: &[PlannedStep],
    file_schema: &SchemaRef,
    row_group_rows: usize,
) -> Option<Arc<[Option<usize>]>> {
    let sink = &spec.sink;
    if !sink.copy_unchanged_columns
        || !sink.partition_by.is_empty()
        || sink.encryption.is_some()
        || sink.compression_level.is_some()
    {
        return None;
    }
    if source.is_decrypted() || file_schema.fields().iter().any(|f| f.data_type().is_nested()) {
        return None;
    }
    let row_groups = shards.iter().filter(|shard| shard.offset == 0).count() as u64;
    if row_groups == 0 || source.total_rows() / row_groups < row_group_rows as u64 / 2 {
        return None;
    }
    let mut columns: Vec<Option<usize>> = (0..source.schema().fields().len()).map(Some).collect();
    for step in steps {
        let map = match &step.kind {
            StepKind::Map(map) => map,
            // A check passes every row and column on as it is, unless it rejects rows.
            StepKind::Check(check) if check.rejecter().is_none() => continue,
            StepKind::Check(_) => return None,
            StepKind::Fit(_) | StepKind::Dedupe(_) | StepKind::Aggregate(_) => return None,
        };
        columns = map
            .unchanged_columns()?
            .into_iter()
            .map(|input| input.and_then(|i| columns.get(i).copied().flatten()))
            .collect();
    }
    let columns: Vec<Option<usize>> = columns
        .into_iter()
        .zip(file_schema.fields())
        .map(|(column, field)| column.filter(|&c| source.schema().field(c).data_type() == field.data_type()))
        .collect();
    (columns.len() == file_schema.fields().len() && columns.iter().any(Option::is_some)).then(|| columns.into())
}

/// The `score` steps pinned to fitted parameters (`fitted_sha256`), as (step number,
/// SHA-256). A pin whose fitted steps are all reused (`fitted = "…"`) is checked here
/// already, so that `weir validate` reports it; the others are checked by the engine once
/// fitted.
fn check_pins_at_planning(job: &str, spec: &JobSpec, steps: &[PlannedStep]) -> Result<Vec<(usize, String)>, JobError> {
    let mut pins = Vec::new();
    for (index, step) in spec.steps.iter().enumerate() {
        let Some(pinned) = step.fitted_pin() else { continue };
        let number = index + 1;
        let before: Vec<&PlannedStep> = steps.iter().filter(|s| s.number < number).collect();
        let all_reused = before.iter().all(|s| !matches!(s.kind, StepKind::Fit(_)));
        if all_reused {
            let reused: Vec<FittedStep> = before.iter().filter_map(|s| s.reused.clone()).collect();
            let got = params_sha256(&reused);
            if !got.eq_ignore_ascii_case(pinned) {
                return Err(JobError::Invalid {
                    job: job.to_string(),
                    message: format!(
                        "step {number} (score): its model was trained on fitted parameters with SHA-256 {pinned}, but the fitted parameters this job reuses have {got}"
                    ),
                });
            }
        }
        pins.push((number, pinned.to_string()));
    }
    Ok(pins)
}

/// The schema of the part files of an output partitioned by `partition_by`: the output's
/// columns but those. Each partition column must be an output column of a type whose
/// values name folders exactly, and at least one column must be left for the files.
fn partitioned_file_schema(
    job: &str,
    output: &arrow::datatypes::SchemaRef,
    partition_by: &[String],
) -> Result<arrow::datatypes::SchemaRef, JobError> {
    let invalid = |message: String| JobError::Invalid { job: job.to_string(), message };
    for (index, name) in partition_by.iter().enumerate() {
        if partition_by[..index].contains(name) {
            return Err(invalid(format!("sink.partition_by names '{name}' twice")));
        }
        let field = output.field_with_name(name).map_err(|_| {
            let columns: Vec<&str> = output.fields().iter().map(|f| f.name().as_str()).collect();
            invalid(format!("sink.partition_by: no output column '{name}'; the output has: {}", columns.join(", ")))
        })?;
        if !weir_connectors::partitions::can_partition_by(field.data_type()) {
            return Err(invalid(format!(
                "sink.partition_by: column '{name}' is {}; partition by integer, string, date or boolean columns",
                field.data_type()
            )));
        }
    }
    let kept: Vec<arrow::datatypes::FieldRef> =
        output.fields().iter().filter(|f| !partition_by.contains(f.name())).cloned().collect();
    if kept.is_empty() {
        return Err(invalid("sink.partition_by takes every output column; the files would hold none".into()));
    }
    Ok(std::sync::Arc::new(arrow::datatypes::Schema::new(kept)))
}

/// An incremental source: the listed files that the committed output's ledger does not
/// hold yet, and the generation of that output (0 when none is committed). The commit
/// round checks, under the lease, that the generation is still the same.
async fn open_incremental(
    job: &str,
    source: &Location,
    sink: &Location,
    spec: &JobSpec,
    decryptor: Option<&Decryptor>,
) -> Result<(ParquetSource, u64), JobError> {
    let connector =
        |what: &'static str| move |error| JobError::Connector { job: job.to_string(), what, source: Box::new(error) };
    let files = list_data_files(source).await.map_err(connector("source"))?;
    let previous = committed_manifest(sink).await.map_err(connector("sink"))?;
    let (base, ledger) = previous.map_or((0, vec![]), |manifest| (manifest.generation, manifest.ledger));
    let selection = ledger::select(source, files, &ledger);
    if !selection.changed.is_empty() {
        let list = selection
            .changed
            .iter()
            .map(|c| {
                format!(
                    "'{}' ({} bytes, version {}; processed at {} bytes, version {})",
                    c.uri, c.bytes, c.version, c.was.bytes, c.was.version
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        match spec.source.on_changed.unwrap_or_default() {
            OnChanged::Fail => {
                return Err(JobError::Invalid {
                    job: job.to_string(),
                    message: format!(
                        "source '{}': {} file(s) changed since their rows were added to the output: {list}; an incremental run never processes a file twice: restore them, write new data to new files, or set source.on_changed = \"skip\"",
                        source.uri(),
                        selection.changed.len()
                    ),
                });
            }
            OnChanged::Skip => {
                tracing::warn!(job, "skipping changed input files (source.on_changed = \"skip\"): {list}")
            }
        }
    }
    if selection.new.is_empty() {
        return Err(JobError::NothingNew {
            job: job.to_string(),
            source_uri: source.uri(),
            processed: selection.processed + selection.changed.len(),
        });
    }
    tracing::info!(
        job,
        new = selection.new.len(),
        processed = selection.processed,
        generation = base,
        "incremental source"
    );
    let opened = ParquetSource::open_files(
        source,
        selection.new,
        spec.source.columns.as_deref(),
        spec.source.partitioning,
        decryptor,
    )
    .await
    .map_err(connector("source"))?;
    Ok((opened, base))
}

/// The decryption of the source's files when the job has `[source.decryption]`.
fn source_decryptor(job: &str, spec: &JobSpec) -> Result<Option<Decryptor>, JobError> {
    spec.source
        .decryption
        .as_ref()
        .map(|decryption| Decryptor::new(decryption, KeySource::from_env()))
        .transpose()
        .map_err(|message| JobError::Invalid { job: job.to_string(), message })
}

/// A warning for each `score` step that comes after steps fitting their parameters on this
/// run's own input: a model trained on features from other parameters (the training
/// run's) scores these differently, and nightly refits drift silently.
pub fn refit_warnings(plan: &EnginePlan) -> Vec<String> {
    let mut warnings = Vec::new();
    for score in plan.steps.iter().filter(|step| step.op == "score") {
        let refitted: Vec<String> = plan
            .steps
            .iter()
            .filter(|step| step.number < score.number && matches!(step.kind, StepKind::Fit(_)))
            .map(|step| format!("{} ({})", step.number, step.op))
            .collect();
        if !refitted.is_empty() {
            warnings.push(format!(
                "job '{}', step {} (score) scores features that step(s) {} fit on this run's own input; a model \
                 trained on features from other parameters scores them differently. To reuse the training run's \
                 parameters, set fitted = \"<its output>\" (for the whole job, or per step)",
                plan.job_name,
                score.number,
                refitted.join(", ")
            ));
        }
    }
    warnings
}

/// Refuses, in every mode, an output in a place that is almost certainly not a dedicated
/// output directory: a filesystem or bucket root, a home directory, or a directory that
/// contains the source, the job file or the working directory. Weir deletes only what
/// earlier runs recorded, so this guards against writing its files into such a place at
/// all (a home directory holding only dotfiles looks empty to `error_if_exists`).
pub fn check_output_target(sink: &Location, source: &Location, job_path: &str) -> Result<(), ConnectorError> {
    let refuse = |reason: String| Err(ConnectorError::DangerousOutput { uri: sink.uri(), reason });
    if sink.path().as_ref().is_empty() {
        return refuse(if sink.is_s3() { "it is a whole bucket".into() } else { "it is the filesystem root".into() });
    }
    if sink.contains(source) {
        return refuse(format!("it contains the source '{}'", source.uri()));
    }
    let Some(directory) = sink.local_path() else { return Ok(()) };
    let options = weir_connectors::StorageOptions::default();
    let homes = std::env::var("HOME").into_iter().chain(["/root".to_string(), "/home".to_string()]);
    for home in homes.filter(|home| !home.is_empty() && home != "/") {
        let home_path = std::fs::canonicalize(&home).unwrap_or_else(|_| home.clone().into());
        if home_path.starts_with(&directory) {
            return refuse(format!("it is or contains a home directory ('{home}')"));
        }
    }
    if directory.parent() == Some(std::path::Path::new("/home")) {
        return refuse("it is a home directory".into());
    }
    let places = [
        ("the job file", Some(job_path.to_string())),
        ("the working directory", std::env::current_dir().ok().map(|d| d.display().to_string())),
    ];
    for (what, place) in places {
        let Some(place) = place else { continue };
        if let Ok(location) = Location::parse(&place, &options)
            && sink.contains(&location)
        {
            return refuse(format!("it contains {what} ('{place}')"));
        }
    }
    Ok(())
}

/// Turns bound steps into planned ones. A fitted step with `fitted = "URI"` becomes a map
/// step here, with the parameters of its entry in that `fitted.json` (each file is read
/// once; the n-th step of an op over a column set reuses the n-th such entry).
async fn plan_steps(
    job: &str,
    specs: &[StepSpec],
    bound: Vec<Bound>,
    storage: &weir_connectors::StorageOptions,
) -> Result<Vec<PlannedStep>, JobError> {
    let mut files: HashMap<String, FittedFile> = HashMap::new();
    let mut occurrences: HashMap<(String, &'static str, Vec<String>), usize> = HashMap::new();
    let mut steps = Vec::with_capacity(specs.len());
    for (index, (spec, bound)) in specs.iter().zip(bound).enumerate() {
        let (number, op) = (index + 1, spec.op_name());
        let step_error = |source: OpError| JobError::Step {
            job: job.to_string(),
            source: Box::new(BindError { number, op, source }),
        };
        let (kind, reused) = match bound {
            Bound::Map(step) => (StepKind::Map(Arc::from(step)), None),
            Bound::Dedupe(dedupe) => (StepKind::Dedupe(dedupe), None),
            Bound::Aggregate(aggregate) => (StepKind::Aggregate(aggregate), None),
            Bound::Check(check) => (StepKind::Check(check), None),
            Bound::Fit(fit) => match spec.fitted().map(str::to_string) {
                None => (StepKind::Fit(fit), None),
                Some(uri) => {
                    if !files.contains_key(&uri) {
                        let bytes = read_fitted(&uri, storage).await.map_err(|source| JobError::StepInput {
                            job: job.to_string(),
                            number,
                            op,
                            what: "fitted parameters",
                            source: Box::new(source),
                        })?;
                        let file = FittedFile::parse(&uri, &bytes).map_err(step_error)?;
                        files.insert(uri.clone(), file);
                    }
                    let file = &files[&uri];
                    let columns = fit.shape().columns.clone();
                    let occurrence = occurrences.entry((uri.clone(), op, columns.clone())).or_default();
                    let strategy = fit.shape().strategy.clone();
                    let entry = file.find(&uri, op, strategy.as_deref(), &columns, *occurrence).map_err(step_error)?;
                    *occurrence += 1;
                    let step = fit.with_params(&entry.params).map_err(|e| {
                        step_error(OpError::InvalidSpec(format!("the parameters in '{uri}' do not fit: {e}")))
                    })?;
                    let reused = FittedStep {
                        step: number,
                        op: op.to_string(),
                        strategy,
                        columns,
                        reused_from: Some(uri.clone()),
                        params: entry.params.clone(),
                    };
                    (StepKind::Map(Arc::from(step)), Some(reused))
                }
            },
        };
        steps.push(PlannedStep { number, op, kind, reused });
    }
    Ok(steps)
}

/// `[storage] profile = "…"`: the profile's endpoint, region and credentials
/// ([`StorageProfiles`], from the file `WEIR_STORAGE_PROFILES` names), and every `s3://`
/// place of the job under the profile's prefixes.
fn apply_storage_profile(spec: &mut JobSpec) -> Result<(), String> {
    let Some(name) = spec.storage.profile.clone() else { return Ok(()) };
    let profiles = StorageProfiles::from_env()?;
    StorageProfiles::apply(profiles.as_ref(), &mut spec.storage)?;
    let profile = profiles.as_ref().map(|profiles| profiles.get(&name)).transpose()?;
    if let Some(profile) = profile {
        for (field, uri) in spec.places() {
            if uri.starts_with("s3://") && !profile.covers(uri) {
                return Err(format!(
                    "{field} '{uri}' is outside the prefixes of storage profile '{name}' ({})",
                    profile.prefixes.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// Reads the fitted parameters `fitted = URI` names: an earlier run's output prefix (its
/// `_weir/fitted.json`, or for an encrypted output its `_weir/fitted.parquet`, decrypted
/// with the keys in the environment), that file itself, or any other JSON file of that
/// format. An earlier run's parameters are read only when its output is committed
/// (`_SUCCESS`).
async fn read_fitted(uri: &str, storage: &weir_connectors::StorageOptions) -> Result<bytes::Bytes, ConnectorError> {
    let fitted_file = format!("/{FITTED_FILE}");
    let encrypted_file = format!("/{ENCRYPTED_FITTED_FILE}");
    let prefix = match uri.strip_suffix(&fitted_file).or_else(|| uri.strip_suffix(&encrypted_file)) {
        Some(prefix) => Some(prefix.to_string()),
        None if uri.ends_with(".json") => None,
        None if uri.ends_with(".parquet") => return read_encrypted_fitted(uri, storage).await,
        None => Some(uri.trim_end_matches('/').to_string()),
    };
    let Some(prefix) = prefix else { return read_input(uri, storage, MAX_FITTED_BYTES).await };
    let output = Location::parse(&format!("{prefix}/"), storage)?;
    if !is_committed(&output).await? {
        return Err(ConnectorError::Invalid {
            uri: output.uri(),
            message: "it is not a committed output (no _SUCCESS): fitted parameters are read only from committed runs"
                .into(),
        });
    }
    let manifest: Option<weir_connectors::manifest::Manifest> =
        weir_connectors::objects::read_json(&output, &output.join(MANIFEST_FILE)).await?;
    if manifest.is_some_and(|manifest| manifest.encryption.is_some()) {
        return read_encrypted_fitted(&format!("{prefix}{encrypted_file}"), storage).await;
    }
    read_input(&format!("{prefix}{fitted_file}"), storage, MAX_FITTED_BYTES).await
}

/// Reads and decrypts an encrypted output's `fitted.parquet` ([`encrypted_fitted`]).
async fn read_encrypted_fitted(
    uri: &str,
    storage: &weir_connectors::StorageOptions,
) -> Result<bytes::Bytes, ConnectorError> {
    let bytes = read_input(uri, storage, MAX_FITTED_BYTES).await?;
    encrypted_fitted::read(uri, bytes, weir_connectors::keys::KeySource::from_env()).map(bytes::Bytes::from)
}

/// The largest model read: ONNX's protobuf cannot hold more (larger models keep their
/// weights as external data, which Weir does not read).
pub const MAX_MODEL_BYTES: u64 = 2 << 30;
/// The largest `fitted.json` read (a PCA over thousands of columns is tens of MB).
pub const MAX_FITTED_BYTES: u64 = 1 << 30;

/// Reads a file a step needs (an earlier run's `fitted.json`, a model) from any store, if
/// it is at most `max` bytes.
async fn read_input(
    uri: &str,
    storage: &weir_connectors::StorageOptions,
    max: u64,
) -> Result<bytes::Bytes, ConnectorError> {
    let location = Location::parse(uri, storage)?;
    read_object_at_most(&location, max).await
}

/// Fetches every model the job's `score` steps name, once per URI, and checks the
/// `sha256` pins. Errors name the step.
/// Reads every `[inputs.NAME]` whole (the other side of a broadcast `join`), each at most
/// the largest `broadcast_max_mb` of the steps that read it, decoded: the inputs by name
/// for binding, and their files for the manifest. An input may not overlap the sink.
async fn read_other_inputs(
    spec: &JobSpec,
    sink: &Location,
) -> Result<(HashMap<String, Arc<JoinInput>>, Vec<OtherInput>), JobError> {
    let mut inputs = HashMap::new();
    let mut other_inputs = Vec::new();
    for (name, input) in &spec.inputs {
        let what = "an input";
        let connector = |source| JobError::Connector { job: spec.name.clone(), what, source: Box::new(source) };
        let limit = spec.steps.iter().filter_map(StepSpec::joined_input).filter(|(with, _)| with == name);
        let limit = limit.map(|(_, bytes)| bytes).max().unwrap_or(0);
        let location = Location::parse(&input.uri, &spec.storage).map_err(connector)?;
        if location.overlaps(sink) {
            return Err(JobError::Invalid {
                job: spec.name.clone(),
                message: format!("[inputs.{name}] '{}' overlaps sink.uri '{}'", location.uri(), sink.uri()),
            });
        }
        let source = ParquetSource::open(&location, input.columns.as_deref(), input.partitioning, None)
            .await
            .map_err(connector)?;
        let mut batches = Vec::new();
        let mut bytes = 0u64;
        for shard in source.shards(DEFAULT_MAX_SHARD_ROWS) {
            let mut stream = source.read_shard(&shard, DEFAULT_BATCH_SIZE, None).map_err(connector)?;
            while let Some(batch) = futures::StreamExt::next(&mut stream).await {
                let batch = batch.map_err(connector)?;
                bytes += batch.get_array_memory_size() as u64;
                if bytes > limit {
                    return Err(JobError::Invalid {
                        job: spec.name.clone(),
                        message: format!(
                            "[inputs.{name}] '{}' takes more than {} MiB decoded, the most a join broadcasts (broadcast_max_mb); raise it if every process has the memory",
                            location.uri(),
                            limit >> 20
                        ),
                    });
                }
                batches.push(batch);
            }
        }
        let rows = arrow::compute::concat_batches(source.schema(), &batches)
            .map_err(|e| JobError::Invalid { job: spec.name.clone(), message: format!("[inputs.{name}]: {e}") })?;
        let files =
            source.inputs().into_iter().map(|i| InputFile { uri: i.uri, bytes: i.size, rows: i.rows }).collect();
        other_inputs.push(OtherInput { name: name.clone(), uri: location.uri(), files });
        inputs.insert(name.clone(), Arc::new(JoinInput::new(name.clone(), rows)));
    }
    Ok((inputs, other_inputs))
}

async fn fetch_models(spec: &JobSpec) -> Result<(BindContext, Vec<ModelInfo>), JobError> {
    let mut context = BindContext::default();
    let mut models: Vec<ModelInfo> = Vec::new();
    for (index, step) in spec.steps.iter().enumerate() {
        let Some((uri, pin)) = step.model() else { continue };
        let op = step.op_name();
        let step_error = |source: OpError| JobError::Step {
            job: spec.name.clone(),
            source: Box::new(BindError { number: index + 1, op, source }),
        };
        if !context.models.contains_key(uri) {
            let bytes =
                read_input(uri, &spec.storage, MAX_MODEL_BYTES).await.map_err(|source| JobError::StepInput {
                    job: spec.name.clone(),
                    number: index + 1,
                    op,
                    what: "model",
                    source: Box::new(source),
                })?;
            let sha256 = sha256_hex(&bytes);
            models.push(ModelInfo { uri: uri.to_string(), sha256, bytes: bytes.len() as u64 });
            context.models.insert(uri.to_string(), std::sync::Arc::from(bytes.as_ref()));
        }
        let info = models.iter().find(|m| m.uri == uri).expect("fetched above");
        if let Some(pin) = pin
            && !pin.eq_ignore_ascii_case(&info.sha256)
        {
            return Err(step_error(OpError::InvalidSpec(format!(
                "model '{uri}' has sha256 {}, but the step pins {pin}",
                info.sha256
            ))));
        }
    }
    Ok((context, models))
}
