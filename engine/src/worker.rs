//! What one worker does in a run: the output-preparation round, the stages that fit
//! steps or dedupe (see [`crate::stages`]), the final pass over its own shards into its part
//! file, and the commit round.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use timely::worker::Worker;

use weir_connectors::ConnectorError;
use weir_connectors::Location;
use weir_connectors::claim::Claim;
use weir_connectors::commit::{
    CommitFailure, CommitRecord, RejectsCommit, WriteMode, check_append, commit, prepare_output,
};
use weir_connectors::lease::Lease;
use weir_connectors::manifest::{
    CheckResult, ClusterInfo, InputFile, JobInfo, LedgerEntry, MANIFEST_FORMAT_VERSION, Manifest, RejectsInfo,
    StageTime, describe_schema,
};
use weir_connectors::parquet_sink::{PartFile, PartOptions, PartWriter};
use weir_operators::fitted_file::{FITTED_FORMAT_VERSION, FittedFile, FittedStep, params_sha256};

use crate::JobFailure;
use crate::cache::{SourceCache, SpillOptions};
use crate::context::{ProcessContext, RunSummary};
use crate::metrics::{Stage, sum_reports};
use crate::pass::{PassKind, run_pass};
use crate::plan::{EnginePlan, SharedPlan, StepKind};
use crate::rounds::leader_round;
use crate::sink::{RejectsSink, StagedPart, WorkerSink};
use crate::stages::{aggregate_stage, check_stage, dedupe_stage, fit_group, fit_stage};
use crate::state::WorkerState;

/// What a worker reports to the leader after its final pass.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WorkerReport {
    /// The global index of the worker.
    worker: usize,
    rows_in: u64,
    parts: Vec<StagedPart>,
    /// The worker's staged rejects part file (`sink.rejects`), if it rejected any row.
    rejects: Option<PartFile>,
    /// This worker's clocks ([`crate::metrics`]).
    stages: Vec<StageTime>,
    passes: u32,
}

/// What worker 0 holds between preparing the output and committing it.
#[derive(Default)]
struct LeaderState {
    lease: Option<Lease>,
    /// The manifest of the output this run replaces.
    previous: Option<Manifest>,
    /// With `sink.rejects`: the lease on the rejects output and its committed manifest.
    rejects_lease: Option<Lease>,
    rejects_previous: Option<Manifest>,
}

/// Runs the whole job on this worker; every worker returns the same result.
pub(crate) fn run_worker(
    worker: &mut Worker,
    plan: &SharedPlan,
    context: &ProcessContext,
    cluster: &ClusterInfo,
) -> Result<RunSummary, JobFailure> {
    let leader = Rc::new(RefCell::new(LeaderState::default()));
    let outcome = prepare_run_and_commit(worker, plan, context, cluster, &leader);
    // The commit round takes the leases; if they are still here the run failed before it.
    let (lease, rejects_lease) = {
        let mut leader = leader.borrow_mut();
        (leader.lease.take(), leader.rejects_lease.take())
    };
    for lease in rejects_lease.into_iter().chain(lease) {
        context.runtime.block_on(lease.release());
    }
    outcome
}

fn prepare_run_and_commit(
    worker: &mut Worker,
    plan: &SharedPlan,
    context: &ProcessContext,
    cluster: &ClusterInfo,
    leader: &Rc<RefCell<LeaderState>>,
) -> Result<RunSummary, JobFailure> {
    let prepared = {
        let (plan, runtime, leader) = (plan.clone(), context.runtime.clone(), leader.clone());
        leader_round(worker, plan.input_digest(), move |digests: Vec<String>| {
            if digests.iter().any(|digest| digest != &digests[0]) {
                return Err(JobFailure::external(format!(
                    "the processes of the cluster planned different inputs: the source '{}' (or another input) changed while they planned; run again",
                    plan.source.uri()
                )));
            }
            if plan.fit_output.is_some() {
                return Ok(()); // `weir fit` writes no output: no lease, nothing to prepare.
            }
            runtime
                .block_on(async {
                    let lease =
                        Lease::acquire(&plan.sink, Claim::new(&plan.run_id, &plan.attempt, plan.lease_ttl)).await?;
                    tracing::info!(output = %plan.sink.uri(), attempt = %plan.attempt, "holding the output's lease");
                    let prepared = match prepare_output(&plan.sink, plan.mode, plan.force).await {
                        Ok(previous) => check_generation(&plan, previous.as_ref())
                            .and_then(|()| match plan.rest {
                                Some(_) => Ok(()), // checked once the schema is known
                                None => check_append_schema(&plan, previous.as_ref()),
                            })
                            .map(|()| previous),
                        Err(error) => Err(error),
                    };
                    let previous = match prepared {
                        Ok(previous) => previous,
                        Err(error) => {
                            lease.release().await;
                            return Err(error);
                        }
                    };
                    let (rejects_lease, rejects_previous) = match prepare_rejects(&plan).await {
                        Ok(Some((lease, previous))) => (Some(lease), previous),
                        Ok(None) => (None, None),
                        Err(error) => {
                            lease.release().await;
                            return Err(error);
                        }
                    };
                    *leader.borrow_mut() =
                        LeaderState { lease: Some(lease), previous, rejects_lease, rejects_previous };
                    Ok(())
                })
                .map_err(|e| JobFailure::from_connector(&e))
        })
    };
    prepared??;

    let workers = cluster.workers_per_process.max(1) as u64;
    // Decrypted plaintext stays in memory or in the store, never on local disk.
    let spill = (!plan.source.is_decrypted()).then(|| SpillOptions {
        parent: plan.spill_dir.clone(),
        budget_bytes: plan.spill_bytes / workers,
        keep_free_bytes: plan.spill_keep_free_bytes,
    });
    let state = WorkerState::new(SourceCache::new(plan.cache_bytes / workers, spill));
    let (Built { fitted, checks }, plan) = build_chain(worker, plan, context, &state, leader)?;
    let plan = &plan;
    // Every worker has the same fitted parameters, so all stop here alike on a bad pin.
    check_pins(plan, &fitted)?;
    if let Some(target) = &plan.fit_output {
        let (plan, context, target) = (plan.clone(), context.clone(), target.clone());
        let stages = state.metrics.report();
        let passes = state.metrics.passes();
        return leader_round(worker, (), move |_: Vec<()>| {
            write_fitted_file(&plan, &context, &target, fitted, stages, passes)
        })?;
    }
    let report = final_pass(worker, plan, context, state);

    let (plan, context, cluster, leader) = (plan.clone(), context.clone(), cluster.clone(), leader.clone());
    leader_round(worker, report, move |reports| {
        let state = std::mem::take(&mut *leader.borrow_mut());
        commit_run(&plan, &context, &cluster, Built { fitted, checks }, reports, state)
    })?
}

/// What building the chain found out about the data before the final pass.
struct Built {
    /// The entries of `fitted.json`, in step order.
    fitted: Vec<FittedStep>,
    /// The results of the `check` steps, in step order.
    checks: Vec<CheckResult>,
}

/// Goes through the plan's steps, running a stage for each fitted step (group), each
/// dedupe and each check, so that `chain` ends up holding every step. A plan that stops at
/// an open step is bound further once that step is fitted ([`crate::plan::PlanRest`]), and
/// the output's schema, known then, is checked against the committed output's; returns the
/// plan that holds every step.
fn build_chain(
    worker: &mut Worker,
    plan: &SharedPlan,
    context: &ProcessContext,
    state: &Rc<WorkerState>,
    leader: &Rc<RefCell<LeaderState>>,
) -> Result<(Built, SharedPlan), JobFailure> {
    let mut plan = plan.clone();
    let mut built = Built { fitted: Vec::new(), checks: Vec::new() };
    let mut index = 0;
    loop {
        index = build_steps(worker, &plan, context, state, index, &mut built)?;
        let Some(rest) = plan.rest.clone() else { break };
        let bound =
            context.runtime.block_on(rest.bind(built.fitted.clone())).and_then(|next| match next.steps.len() < index {
                true => Err(JobFailure::internal("a plan bound further has fewer steps than the one it continues")),
                false => Ok(Arc::new(next)),
            });
        plan = agree_on_plan(worker, bound, leader)?;
    }
    Ok((built, plan))
}

/// Every worker binds the rest of the plan from the same parameters; this round makes them
/// stop together if any failed (an unreadable `fitted` file on one host), and, once the
/// plan is whole, has the leader check the output's schema, known now, against the
/// committed outputs it read under the leases.
fn agree_on_plan(
    worker: &mut Worker,
    bound: Result<SharedPlan, JobFailure>,
    leader: &Rc<RefCell<LeaderState>>,
) -> Result<SharedPlan, JobFailure> {
    let (failure, whole) = match &bound {
        Ok(plan) => (None, (plan.rest.is_none() && plan.fit_output.is_none()).then(|| plan.clone())),
        Err(failure) => (Some(failure.clone()), None),
    };
    let leader = leader.clone();
    leader_round(worker, failure, move |failures: Vec<Option<JobFailure>>| {
        if let Some(failure) = failures.into_iter().flatten().next() {
            return Err(failure);
        }
        let Some(plan) = whole else { return Ok(()) };
        let leader = leader.borrow();
        check_append_schema(&plan, leader.previous.as_ref())
            .and_then(|()| check_rejects_append_schema(&plan, leader.rejects_previous.as_ref()))
            .map_err(|e| JobFailure::from_connector(&e))
    })??;
    bound
}

/// Runs the stages of the plan's steps from `start` on, adding each step to the chain;
/// returns the index after the last.
fn build_steps(
    worker: &mut Worker,
    plan: &SharedPlan,
    context: &ProcessContext,
    state: &Rc<WorkerState>,
    start: usize,
    built: &mut Built,
) -> Result<usize, JobFailure> {
    let mut index = start;
    while index < plan.steps.len() {
        let step = &plan.steps[index];
        match &step.kind {
            StepKind::Map(map) => {
                state.chain.push_map(step.number, step.op, map.clone());
                built.fitted.extend(step.reused.clone());
                index += 1;
            }
            StepKind::Fit(_) => {
                let group = fit_group(plan, index);
                index = group.steps.end;
                built.fitted.extend(fit_stage(worker, plan, context, state, group)?);
            }
            StepKind::Dedupe(_) => {
                dedupe_stage(worker, plan, context, state, index)?;
                index += 1;
            }
            StepKind::Aggregate(_) => {
                aggregate_stage(worker, plan, context, state, index)?;
                index += 1;
            }
            StepKind::Check(check) => {
                built.checks.extend(check_stage(worker, plan, context, state, index)?);
                // With `on_fail = "reject"`, the rows it counted as failing leave the flow here.
                if let Some(rejecter) = check.rejecter() {
                    state.chain.push_map(step.number, step.op, Arc::new(rejecter));
                }
                index += 1;
            }
        }
    }
    Ok(index)
}

/// Streams this worker's shards through the whole chain into its part file.
fn final_pass(
    worker: &mut Worker,
    plan: &SharedPlan,
    context: &ProcessContext,
    state: Rc<WorkerState>,
) -> Result<WorkerReport, JobFailure> {
    let index = worker.index();
    let sink = Rc::new(RefCell::new(WorkerSink::new(index)));
    let rejects = Rc::new(RefCell::new(RejectsSink::new(index)));
    if plan.rejects.is_some() {
        state.chain.collect_rejects();
    }
    let consumer = {
        let (plan, context, sink, rejects, state) =
            (plan.clone(), context.clone(), sink.clone(), rejects.clone(), state.clone());
        Box::new(move |item: crate::chain::SourceBatch| {
            state.metrics.time(Stage::Write, || write_batch(&plan, &context, &sink, &rejects, &item))
        })
    };
    // Rows rejected before an aggregate, kept from its pass.
    let rejected_earlier = std::mem::take(&mut *state.rejected.borrow_mut());
    let outcome = match rejected_earlier.is_empty() {
        true => Ok(()),
        false => {
            let item = crate::chain::SourceBatch {
                shard: plan.groups_shard(index),
                batch: arrow::record_batch::RecordBatch::new_empty(plan.output_schema.clone()),
                fetched: None,
                rejected: rejected_earlier,
            };
            state.metrics.time(Stage::Write, || write_batch(plan, context, &sink, &rejects, &item))
        }
    }
    .and_then(|()| run_pass(worker, plan, context, state.clone(), consumer, PassKind::Final))
    .map(|rows| state.source_rows.get().unwrap_or(rows));
    let metrics = &state.metrics;
    let sink = std::mem::replace(&mut *sink.borrow_mut(), WorkerSink::new(index));
    let rejects = std::mem::replace(&mut *rejects.borrow_mut(), RejectsSink::new(index));
    let rows_in = match outcome {
        Ok(rows_in) => rows_in,
        Err(failure) => {
            context.runtime.block_on(async {
                sink.abort().await;
                rejects.abort().await;
            });
            return Err(failure);
        }
    };
    let finished = metrics.time(Stage::Write, || {
        context.runtime.block_on(async {
            let parts = sink.finish().await;
            let rejects = rejects.finish().await;
            Ok::<_, ConnectorError>((parts?, rejects?))
        })
    });
    let (parts, rejects) = finished.map_err(|e| JobFailure::from_connector(&e))?;
    Ok(WorkerReport { worker: index, rows_in, parts, rejects, stages: metrics.report(), passes: metrics.passes() })
}

/// Appends a batch to the worker's part file(s), and the rows its steps rejected to the
/// worker's rejects part file, opening them as needed.
fn write_batch(
    plan: &SharedPlan,
    context: &ProcessContext,
    sink: &RefCell<WorkerSink>,
    rejects: &RefCell<RejectsSink>,
    item: &crate::chain::SourceBatch,
) -> Result<(), JobFailure> {
    if item.batch.num_rows() > 0 {
        let mut sink = sink.borrow_mut();
        let write = sink.write(plan, &item.batch, item.shard, item.fetched.as_deref());
        context.runtime.block_on(write).map_err(|e| JobFailure::from_connector(&e))?;
        context.progress.rows_written(item.batch.num_rows());
    }
    for rejected in &item.rejected {
        let mut rejects = rejects.borrow_mut();
        context.runtime.block_on(rejects.write(plan, rejected)).map_err(|e| JobFailure::from_connector(&e))?;
    }
    Ok(())
}

/// With `sink.rejects`: takes the rejects output's lease (after the main output's, with the
/// same attempt id) and checks its prefix against `sink.mode` as the main output's is
/// checked; returns the lease and the committed rejects manifest.
async fn prepare_rejects(plan: &EnginePlan) -> Result<Option<(Lease, Option<Manifest>)>, ConnectorError> {
    let Some(rejects) = &plan.rejects else { return Ok(None) };
    let lease = Lease::acquire(&rejects.output, Claim::new(&plan.run_id, &plan.attempt, plan.lease_ttl)).await?;
    let checked = async {
        let previous = prepare_output(&rejects.output, plan.mode, plan.force).await?;
        if plan.rest.is_none() {
            check_rejects_append_schema(plan, previous.as_ref())?;
        }
        Ok(previous)
    };
    match checked.await {
        Ok(previous) => Ok(Some((lease, previous))),
        Err(error) => {
            lease.release().await;
            Err(error)
        }
    }
}

/// Checks, under the lease, what an incremental run needs of the committed output: the
/// generation its new files were chosen against is still the committed one (no run
/// appended in between).
fn check_generation(plan: &EnginePlan, previous: Option<&Manifest>) -> Result<(), ConnectorError> {
    if let Some(base) = plan.incremental_base {
        let now = previous.map_or(0, |manifest| manifest.generation);
        if now != base {
            return Err(ConnectorError::OutputMoved { uri: plan.sink.uri(), base, now });
        }
    }
    Ok(())
}

/// With `sink.rejects` in append mode: the committed rejects output takes this run's
/// rejects schema.
fn check_rejects_append_schema(plan: &EnginePlan, previous: Option<&Manifest>) -> Result<(), ConnectorError> {
    match (plan.mode, &plan.rejects, previous) {
        (WriteMode::Append, Some(rejects), Some(previous)) => {
            let schema = describe_schema(&rejects.layout.schema());
            check_append(&rejects.output, previous, &schema, &[], &plan.run_id, None)
        }
        _ => Ok(()),
    }
}

/// Checks, under the lease, what an append needs of the committed output: it takes this
/// run's schema and file names.
fn check_append_schema(plan: &EnginePlan, previous: Option<&Manifest>) -> Result<(), ConnectorError> {
    match (plan.mode, previous) {
        (WriteMode::Append, Some(previous)) => check_append(
            &plan.sink,
            previous,
            &describe_schema(&plan.output_schema),
            &plan.partition_by,
            &plan.run_id,
            plan.part_options.encryption.as_deref(),
        ),
        _ => Ok(()),
    }
}

/// The leader's side of the commit round: commit only if every worker succeeded and the
/// run was not cancelled; otherwise delete what the run staged.
fn commit_run(
    plan: &SharedPlan,
    context: &ProcessContext,
    cluster: &ClusterInfo,
    built: Built,
    reports: Vec<Result<WorkerReport, JobFailure>>,
    state: LeaderState,
) -> Result<RunSummary, JobFailure> {
    let Built { fitted, checks } = built;
    let runtime = &context.runtime;
    let LeaderState { lease, previous, rejects_lease, rejects_previous } = state;
    let Some(lease) = lease else {
        return Err(JobFailure::internal("the leader holds no lease on the output"));
    };
    let release = |lease: Lease, rejects_lease: Option<Lease>| {
        runtime.block_on(async {
            if let Some(rejects_lease) = rejects_lease {
                rejects_lease.release().await;
            }
            lease.release().await;
        })
    };
    let failure = JobFailure::first_cause(reports.iter().filter_map(|report| report.as_ref().err()))
        .or_else(|| context.abort.load(Ordering::Relaxed).then(JobFailure::cancelled))
        .or_else(|| {
            (plan.rejects.is_some() != rejects_lease.is_some())
                .then(|| JobFailure::internal("the leader holds no lease on the rejects output"))
        });
    if let Some(failure) = failure {
        release(lease, rejects_lease);
        return Err(failure);
    }
    let fitted = match (!fitted.is_empty()).then(|| fitted_json(plan, fitted)).transpose() {
        Ok(fitted) => fitted,
        Err(failure) => {
            release(lease, rejects_lease);
            return Err(failure);
        }
    };
    let reports: Vec<WorkerReport> = reports.into_iter().flatten().collect();
    let rows_in = reports.iter().map(|r| r.rows_in).sum();
    let passes = reports.iter().map(|r| r.passes).max().unwrap_or(0);
    let stages = sum_reports(reports.iter().map(|r| r.stages.clone()));
    let rejected: Vec<(usize, StagedPart)> = reports
        .iter()
        .filter_map(|r| r.rejects.clone().map(|part| (r.worker, StagedPart { folder: String::new(), part })))
        .collect();
    let staged: Vec<(usize, StagedPart)> =
        reports.into_iter().flat_map(|r| r.parts.into_iter().map(move |part| (r.worker, part))).collect();
    let outcome = runtime.block_on(async {
        // An encrypted output's fitted parameters are staged encrypted, like its part files,
        // so that neither the decision nor the output holds them in the clear.
        let (fitted, fitted_staged) = match (fitted, &plan.part_options.encryption) {
            (Some(json), Some(encryption)) => {
                let name = plan.staged_fitted_name();
                weir_connectors::encrypted_fitted::write(&plan.sink, &name, &json, encryption).await?;
                (None, Some(name))
            }
            (fitted, _) => (fitted, None),
        };
        let rejects = match &plan.rejects {
            None => None,
            Some(rejects) => {
                let output = Output {
                    location: &rejects.output,
                    previous: rejects_previous.as_ref(),
                    schema: rejects.layout.schema(),
                    file_schema: rejects.layout.schema(),
                    partition_by: &[],
                    part_options: &rejects.part_options,
                    incremental: false,
                };
                let (record, this_run) = output.record(plan, cluster, rejected).await?;
                let info = RejectsInfo { uri: rejects.output.uri(), rows: this_run.rows };
                Some((record, info))
            }
        };
        let output = Output {
            location: &plan.sink,
            previous: previous.as_ref(),
            schema: plan.output_schema.clone(),
            file_schema: plan.file_schema.clone(),
            partition_by: &plan.partition_by,
            part_options: &plan.part_options,
            incremental: plan.incremental_base.is_some(),
        };
        let (mut record, this_run) = output.record(plan, cluster, staged).await?;
        let manifest = &mut record.manifest;
        (manifest.models, manifest.stages, manifest.passes, manifest.checks) =
            (plan.models.clone(), stages, passes, checks);
        manifest.encryption = plan.part_options.encryption.as_deref().cloned();
        manifest.rejects = rejects.as_ref().map(|(_, info)| info.clone());
        (record.fitted, record.fitted_staged) = (fitted, fitted_staged);
        Ok::<_, ConnectorError>((record, this_run, rejects))
    });
    let (record, this_run, rejects) = match outcome {
        Ok(done) => done,
        Err(error) => {
            release(lease, rejects_lease);
            return Err(JobFailure::from_connector(&error));
        }
    };
    // A signal that came while the record was built still stops the run.
    if context.abort.load(Ordering::Relaxed) {
        release(lease, rejects_lease);
        return Err(JobFailure::cancelled());
    }
    let rejects_commit = match (&plan.rejects, &rejects_lease, rejects) {
        (Some(plan_rejects), Some(rejects_lease), Some((rejects_record, _))) => {
            Some(RejectsCommit { output: &plan_rejects.output, lease: rejects_lease, record: rejects_record })
        }
        _ => None,
    };
    match runtime.block_on(commit(&plan.sink, &lease, &record, rejects_commit)) {
        Ok(()) => {
            tracing::info!(
                output = %plan.sink.uri(),
                rows = record.manifest.rows,
                files = record.manifest.files.len(),
                "committed"
            );
            release(lease, rejects_lease);
            let mut manifest = record.manifest;
            // This run's files are the last ones (the only ones but with append).
            let files = manifest.files.split_off(manifest.files.len() - this_run.files);
            Ok(RunSummary {
                rows_in,
                rows_out: this_run.rows,
                bytes: this_run.bytes,
                files,
                stages: manifest.stages,
                passes: manifest.passes,
                checks: manifest.checks,
                rejects: manifest.rejects,
            })
        }
        Err(CommitFailure { error, decided }) => {
            if decided {
                // The decisions stay for the next run to complete; the leases expire.
                lease.abandon();
                if let Some(rejects_lease) = rejects_lease {
                    rejects_lease.abandon();
                }
            } else {
                release(lease, rejects_lease);
            }
            Err(JobFailure::from_connector(&error))
        }
    }
}

/// One output a run commits (the main one, or the rejects one) and what its record needs.
struct Output<'a> {
    location: &'a Location,
    /// Its committed manifest, read when the run prepared it.
    previous: Option<&'a Manifest>,
    schema: SchemaRef,
    file_schema: SchemaRef,
    partition_by: &'a [String],
    part_options: &'a PartOptions,
    /// The run reads an incremental source: its files join the output's ledger.
    incremental: bool,
}

/// The rows, bytes and files this run adds to an output.
struct ThisRun {
    rows: u64,
    bytes: u64,
    files: usize,
}

impl Output<'_> {
    /// The commit record of this output for the part files `staged` (by worker): the files
    /// to publish, those of the previous output to delete (or keep, with append), and a
    /// manifest with no models, stages, checks or fitted parameters yet (the main output's
    /// caller adds them).
    async fn record(
        &self,
        plan: &EnginePlan,
        cluster: &ClusterInfo,
        mut staged: Vec<(usize, StagedPart)>,
    ) -> Result<(CommitRecord, ThisRun), ConnectorError> {
        if staged.is_empty() && self.partition_by.is_empty() {
            // No rows at all: one empty part file still tells readers the schema. (A
            // partitioned output then has no folder, so no file.)
            let empty = PartWriter::create(
                self.location,
                &plan.staged_part_name(0, ""),
                &plan.part_name(0, ""),
                self.file_schema.clone(),
                self.part_options,
            )?;
            staged.push((0, StagedPart { folder: String::new(), part: empty.finish().await? }));
        }
        staged.sort_by(|(a_worker, a), (b_worker, b)| (&a.folder, a_worker).cmp(&(&b.folder, b_worker)));
        let new_files: Vec<PartFile> = staged
            .iter()
            .map(|(worker, staged)| PartFile { path: plan.part_name(*worker, &staged.folder), ..staged.part.clone() })
            .collect();
        let previous = self.previous;
        // Append keeps the committed files (and, for an incremental source, the ledger);
        // overwrite replaces them.
        let (kept, delete) = match plan.mode {
            WriteMode::Append => (previous.map(|m| m.files.clone()).unwrap_or_default(), vec![]),
            WriteMode::Overwrite | WriteMode::ErrorIfExists => {
                (vec![], previous.iter().flat_map(|m| m.files.iter().map(|f| f.path.clone())).collect())
            }
        };
        let mut ledger = match plan.mode {
            WriteMode::Append => previous.map(|m| m.ledger.clone()).unwrap_or_default(),
            _ => vec![],
        };
        if self.incremental {
            ledger.extend(plan.source.inputs().into_iter().map(|input| LedgerEntry {
                uri: input.uri,
                bytes: input.size,
                version: input.version,
            }));
        }
        let this_run = ThisRun {
            rows: new_files.iter().map(|f| f.rows).sum(),
            bytes: new_files.iter().map(|f| f.bytes).sum(),
            files: new_files.len(),
        };
        let files: Vec<PartFile> = kept.into_iter().chain(new_files).collect();
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            weir_version: env!("CARGO_PKG_VERSION").to_string(),
            job: JobInfo { name: plan.job_name.clone(), sha256: plan.job_sha256.clone() },
            run_id: plan.run_id.clone(),
            variables: plan.variables.clone(),
            committed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            inputs: plan
                .source
                .inputs()
                .into_iter()
                .map(|input| InputFile { uri: input.uri, bytes: input.size, rows: input.rows })
                .collect(),
            other_inputs: plan.other_inputs.clone(),
            rows: files.iter().map(|f| f.rows).sum(),
            bytes: files.iter().map(|f| f.bytes).sum(),
            files,
            generation: previous.map_or(1, |m| m.generation + 1),
            ledger,
            schema: describe_schema(&self.schema),
            partition_by: self.partition_by.to_vec(),
            cluster: cluster.clone(),
            encryption: None,
            models: vec![],
            stages: vec![],
            passes: 0,
            checks: vec![],
            rejects: None,
        };
        let record = CommitRecord {
            fitted: None,
            fitted_staged: None,
            delete,
            publish: staged
                .iter()
                .map(|(worker, staged)| (staged.part.path.clone(), plan.part_name(*worker, &staged.folder)))
                .collect(),
            manifest,
            rejects: None,
            condition: None,
        };
        Ok((record, this_run))
    }
}

/// `_weir/fitted.json` of this run. A parameter serde_json cannot write (a bug: parameters
/// are checked finite when fitted) fails the run rather than commit an empty file.
/// Fails the run if a pinned `score` step's fitted steps before it have parameters other
/// than those its model was trained on.
fn check_pins(plan: &EnginePlan, fitted: &[FittedStep]) -> Result<(), JobFailure> {
    for (step, pinned) in &plan.pins {
        let before: Vec<FittedStep> = fitted.iter().filter(|f| f.step < *step).cloned().collect();
        let got = params_sha256(&before);
        if !got.eq_ignore_ascii_case(pinned) {
            return Err(JobFailure::user(format!(
                "step {step} (score): its model was trained on fitted parameters with SHA-256 {pinned}, but the fitted steps before it have {got}{}; reuse the training run's parameters with fitted = \"…\", or train the model again",
                if before.iter().any(|f| f.reused_from.is_none()) { " (refitted on this run's input)" } else { "" }
            )));
        }
    }
    Ok(())
}

/// `weir fit`'s leader: writes the fitted parameters to `target` (one put: all or nothing).
fn write_fitted_file(
    plan: &SharedPlan,
    context: &ProcessContext,
    target: &weir_connectors::Location,
    fitted: Vec<FittedStep>,
    stages: Vec<StageTime>,
    passes: u32,
) -> Result<RunSummary, JobFailure> {
    let json = fitted_json(plan, fitted)?;
    let bytes = json.len() as u64;
    context
        .runtime
        .block_on(weir_connectors::objects::put_object(target, json.into_bytes()))
        .map_err(|e| JobFailure::from_connector(&e))?;
    Ok(RunSummary { rows_in: 0, rows_out: 0, bytes, files: vec![], stages, passes, checks: vec![], rejects: None })
}

fn fitted_json(plan: &SharedPlan, steps: Vec<FittedStep>) -> Result<String, JobFailure> {
    let file = FittedFile {
        format_version: FITTED_FORMAT_VERSION,
        weir_version: env!("CARGO_PKG_VERSION").to_string(),
        job: plan.job_name.clone(),
        run_id: plan.run_id.clone(),
        steps,
    };
    let mut json = serde_json::to_string_pretty(&file)
        .map_err(|error| JobFailure::internal(format!("cannot write the fitted parameters: {error}")))?;
    json.push('\n');
    Ok(json)
}
