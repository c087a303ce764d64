//! What one worker does in a run: the output-preparation round, the map pass over its own
//! shards, and the commit round.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;
use weir_connectors::commit::{abort_run, commit, prepare_output};
use weir_connectors::manifest::{ClusterInfo, InputFile, JobInfo, MANIFEST_FORMAT_VERSION, Manifest, describe_schema};
use weir_connectors::parquet_sink::{PartFile, PartWriter};

use crate::JobFailure;
use crate::plan::SharedPlan;
use crate::rounds::{PARK, leader_round};
use crate::run::{ProcessContext, RunSummary};

/// A batch on the map path, with the shard it came from (for error messages).
#[derive(Clone)]
struct SourceBatch {
    shard: usize,
    batch: RecordBatch,
}

/// What a worker reports to the leader after its map pass.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WorkerReport {
    rows_in: u64,
    part: Option<PartFile>,
}

fn lost_round() -> JobFailure {
    JobFailure::internal("a leader round ended without a result")
}

/// Runs the whole job on this worker; every worker returns the same result.
pub(crate) fn run_worker(
    worker: &mut Worker,
    plan: &SharedPlan,
    context: &ProcessContext,
    cluster: &ClusterInfo,
) -> Result<RunSummary, JobFailure> {
    let prepared = {
        let plan = plan.clone();
        let runtime = context.runtime.clone();
        leader_round(worker, (), move |_: Vec<()>| {
            runtime.block_on(prepare_output(&plan.sink, plan.mode)).map_err(|e| JobFailure::from_connector(&e))
        })
    };
    prepared.ok_or_else(lost_round)??;

    let report = map_pass(worker, plan, context);

    let plan = plan.clone();
    let runtime = context.runtime.clone();
    let cluster = cluster.clone();
    leader_round(worker, report, move |reports| commit_run(&plan, &runtime, &cluster, reports))
        .ok_or_else(lost_round)?
}

/// Records the first failure of this worker and tells the process about it at once.
fn record(slot: &RefCell<Option<JobFailure>>, context: &ProcessContext, failure: JobFailure) {
    let mut slot = slot.borrow_mut();
    if slot.is_none() {
        context.abort.store(true, Ordering::Relaxed);
        (context.on_failure)(&failure);
        *slot = Some(failure);
    }
}

/// Applies every step to one batch; `None` when no row is left.
fn apply_steps(plan: &SharedPlan, item: SourceBatch) -> Result<Option<SourceBatch>, JobFailure> {
    let mut batch = item.batch;
    for planned in &plan.steps {
        batch = planned.step.apply(batch).map_err(|error| {
            let shard = &plan.shards[item.shard];
            let file = &plan.source.files()[shard.file];
            let message = format!(
                "step {} ({}) failed on '{}', row group {}: {error}",
                planned.number, planned.op, file.uri, shard.row_group
            );
            if error.is_user_error() { JobFailure::user(message) } else { JobFailure::internal(message) }
        })?;
        if batch.num_rows() == 0 {
            return Ok(None);
        }
    }
    Ok(Some(SourceBatch { shard: item.shard, batch }))
}

/// Streams this worker's shards through the steps into its part file.
///
/// Pacing: batch `t` enters the dataflow at time `t`; before reading batch `t + 1` the
/// worker steps until the probe on the sink shows every batch before `t + 1 - K` written,
/// so at most `K = max_batches_in_flight` batches are read but unwritten at any moment.
fn map_pass(worker: &mut Worker, plan: &SharedPlan, context: &ProcessContext) -> Result<WorkerReport, JobFailure> {
    let index = worker.index();
    let peers = worker.peers();
    let failure: Rc<RefCell<Option<JobFailure>>> = Rc::new(RefCell::new(None));
    let writer: Rc<RefCell<Option<PartWriter>>> = Rc::new(RefCell::new(None));
    let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<SourceBatch>>>::new();
    let probe = ProbeHandle::new();

    worker.dataflow::<u64, _, _>(|scope| {
        let (step_plan, step_failure, step_context) = (plan.clone(), failure.clone(), context.clone());
        let mapped = input.to_stream(scope).unary::<CapacityContainerBuilder<Vec<SourceBatch>>, _, _, _>(
            Pipeline,
            "Steps",
            move |_capability, _info| {
                move |input, output| {
                    input.for_each(|time, data| {
                        let mut session = output.session(&time);
                        for item in data.drain(..) {
                            if step_failure.borrow().is_some() {
                                continue;
                            }
                            match apply_steps(&step_plan, item) {
                                Ok(Some(mapped)) => session.give(mapped),
                                Ok(None) => {}
                                Err(failure) => record(&step_failure, &step_context, failure),
                            }
                        }
                    });
                }
            },
        );
        let (sink_plan, sink_failure, sink_context, sink_writer) =
            (plan.clone(), failure.clone(), context.clone(), writer.clone());
        mapped
            .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "ParquetSink", move |_capability, _info| {
                move |input, _output| {
                    input.for_each(|_time, data| {
                        for item in data.drain(..) {
                            if sink_failure.borrow().is_some() {
                                continue;
                            }
                            if let Err(failure) =
                                write_batch(&sink_plan, &sink_context, &sink_writer, index, &item.batch)
                            {
                                record(&sink_failure, &sink_context, failure);
                            }
                        }
                    });
                }
            })
            .probe_with(&probe);
    });

    let mut rows_in = 0u64;
    let mut time = 0u64;
    'shards: for shard in plan.shards_of(index, peers) {
        if failure.borrow().is_some() || context.abort.load(Ordering::Relaxed) {
            break;
        }
        let mut stream = match plan.source.read_shard(shard, plan.batch_size) {
            Ok(stream) => stream,
            Err(error) => {
                record(&failure, context, JobFailure::from_connector(&error));
                break;
            }
        };
        while let Some(next) = context.runtime.block_on(stream.next()) {
            let batch = match next {
                Ok(batch) => batch,
                Err(error) => {
                    record(&failure, context, JobFailure::from_connector(&error));
                    break 'shards;
                }
            };
            rows_in += batch.num_rows() as u64;
            context.progress.rows_read(batch.num_rows());
            input.send(SourceBatch { shard: shard.index, batch });
            time += 1;
            input.advance_to(time);
            worker.step();
            let horizon = time.saturating_sub(plan.max_batches_in_flight);
            while probe.less_than(&horizon) {
                worker.step_or_park(Some(PARK));
            }
            if failure.borrow().is_some() || context.abort.load(Ordering::Relaxed) {
                break 'shards;
            }
        }
        context.progress.shard_done();
    }
    input.close();
    while !probe.done() {
        worker.step_or_park(Some(PARK));
    }

    let open_writer = writer.borrow_mut().take();
    if let Some(failure) = failure.borrow_mut().take() {
        if let Some(open_writer) = open_writer {
            context.runtime.block_on(open_writer.abort());
        }
        return Err(failure);
    }
    let part = match open_writer {
        Some(open_writer) => {
            Some(context.runtime.block_on(open_writer.finish()).map_err(|e| JobFailure::from_connector(&e))?)
        }
        None => None,
    };
    Ok(WorkerReport { rows_in, part })
}

/// Appends a batch to the worker's part file, opening it on the first batch.
fn write_batch(
    plan: &SharedPlan,
    context: &ProcessContext,
    writer: &RefCell<Option<PartWriter>>,
    worker: usize,
    batch: &RecordBatch,
) -> Result<(), JobFailure> {
    let mut writer = writer.borrow_mut();
    if writer.is_none() {
        let created =
            PartWriter::create(&plan.sink, &plan.part_name(worker), plan.output_schema.clone(), plan.part_options)
                .map_err(|e| JobFailure::from_connector(&e))?;
        *writer = Some(created);
    }
    if let Some(open) = writer.as_mut() {
        context.runtime.block_on(open.write(batch)).map_err(|e| JobFailure::from_connector(&e))?;
        context.progress.rows_written(batch.num_rows());
    }
    Ok(())
}

/// The leader's side of the commit round: commit only if every worker succeeded.
fn commit_run(
    plan: &SharedPlan,
    runtime: &tokio::runtime::Handle,
    cluster: &ClusterInfo,
    reports: Vec<Result<WorkerReport, JobFailure>>,
) -> Result<RunSummary, JobFailure> {
    if let Some(failure) = reports.iter().find_map(|report| report.as_ref().err()) {
        runtime.block_on(abort_run(&plan.sink, &plan.run_id));
        return Err(failure.clone());
    }
    let reports: Vec<WorkerReport> = reports.into_iter().flatten().collect();
    let rows_in = reports.iter().map(|r| r.rows_in).sum();
    let mut files: Vec<PartFile> = reports.into_iter().filter_map(|r| r.part).collect();
    let outcome = runtime.block_on(async {
        if files.is_empty() {
            // No rows at all: one empty part file still tells readers the schema.
            let empty =
                PartWriter::create(&plan.sink, &plan.part_name(0), plan.output_schema.clone(), plan.part_options)?;
            files.push(empty.finish().await?);
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            weir_version: env!("CARGO_PKG_VERSION").to_string(),
            job: JobInfo { name: plan.job_name.clone(), sha256: plan.job_sha256.clone() },
            run_id: plan.run_id.clone(),
            committed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            inputs: plan
                .source
                .files()
                .iter()
                .map(|f| InputFile { uri: f.uri.clone(), bytes: f.size, rows: f.rows })
                .collect(),
            rows: files.iter().map(|f| f.rows).sum(),
            bytes: files.iter().map(|f| f.bytes).sum(),
            files: files.clone(),
            schema: describe_schema(&plan.output_schema),
            cluster: cluster.clone(),
        };
        commit(&plan.sink, &manifest).await?;
        Ok::<_, weir_connectors::ConnectorError>(manifest)
    });
    match outcome {
        Ok(manifest) => {
            Ok(RunSummary { rows_in, rows_out: manifest.rows, bytes: manifest.bytes, files: manifest.files })
        }
        Err(error) => {
            runtime.block_on(abort_run(&plan.sink, &plan.run_id));
            Err(JobFailure::from_connector(&error))
        }
    }
}
