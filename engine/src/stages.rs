//! The stages that need the whole dataset before the final pass can map it.
//!
//! - A *fit stage* fits one or more fitted steps: a pass folds every batch (as it leaves the
//!   chain built so far) into each step's partial; a leader round gathers the partials on
//!   worker 0, which merges them, finishes them into parameters and broadcasts those back;
//!   every worker then adds the fitted steps to its chain. A step may ask for more passes
//!   over the same input first (an exact quantile's search): the leader then broadcasts the
//!   partials of its next pass instead of its parameters. Consecutive fitted steps share a
//!   pass in two ways ([`fit_group`]): a chain whose statistics compose (`impute →
//!   standardize | minmax → pca`, [`weir_operators::linear_chain`]) is fitted as one step
//!   from the statistics of its input; otherwise steps share a pass when that is exactly
//!   equivalent: no step of the group reads a column an earlier one writes, and only the
//!   group's last step may drop rows or add columns.
//! - A *dedupe stage* feeds every row's key and rank, located by `(shard, position)`, into
//!   the keyed differential-dataflow reduction ([`crate::dedupe`]); the winners come back to
//!   the worker that owns their shard, and the chain gains a filter that keeps them.
//! - A *check stage* counts a `check` step's expectations: a pass folds every batch into the
//!   step's counts and, for a `unique` key, feeds each checked row's key into the same keyed
//!   reduction as a dedupe, whose winners (one per distinct key) each worker counts; a
//!   leader round sums the counts into results, and fails the run there when an expectation
//!   with `on_fail = "fail"` does not hold. The chain does not change.
//!
//! - An *aggregate stage* runs an `aggregate` step: a pass folds every batch into the
//!   worker's group table (map-side combining, [`weir_operators::group_table`]); the
//!   partial groups are exchanged by key hash and merged ([`crate::aggregate`]); each worker
//!   turns the groups it merged into rows, which replace its shards as the input of the
//!   passes after the step, and the chain starts again empty. The pass is the source's last:
//!   rows rejected before the step are kept for the final pass to write.
//!
//! Every worker goes through the same stages in the same order, and each stage ends with
//! a leader round, so a failure on one worker fails the stage on all of them.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::worker::Worker;
use weir_connectors::manifest::CheckResult;
use weir_operators::OpError;
use weir_operators::check::{CheckCounts, UniqueCount};
use weir_operators::fit::{FitStep, Partial};
use weir_operators::fitted_file::FittedStep;
use weir_operators::linear_chain;

use crate::JobFailure;
use crate::aggregate::exchange_partials;
use crate::chain::{KeptRows, RowCursor, step_failure};
use crate::context::ProcessContext;
use crate::dedupe::{DedupeRecord, KeyedDedupe};
use crate::group_spill::{GroupSpill, GroupsError};
use crate::metrics::{Stage, StepWork, WorkerMetrics};
use crate::pass::{PassKind, run_pass};
use crate::plan::{EnginePlan, PlannedStep, SharedPlan, StepKind};
use crate::rounds::leader_round;
use crate::state::{Groups, WorkerState};
use weir_operators::group_table::GroupTable;

fn fitter(plan: &EnginePlan, index: usize) -> Option<&dyn FitStep> {
    match &plan.steps[index].kind {
        StepKind::Fit(fit) => Some(fit.as_ref()),
        _ => None,
    }
}

/// The fitted steps one fit stage fits.
#[derive(Debug, Clone)]
pub(crate) struct FitGroup {
    /// The plan's steps, all fitted.
    pub steps: Range<usize>,
    /// One fit that covers all of `steps` from their input's statistics; `None` when each
    /// step folds its own partial.
    chain: Option<Arc<dyn FitStep>>,
}

impl FitGroup {
    /// The fits the stage folds, each with the plan index of the (first) step it covers.
    fn fits<'a>(&'a self, plan: &'a EnginePlan) -> Vec<(usize, &'a dyn FitStep)> {
        match &self.chain {
            Some(chain) => vec![(self.steps.start, chain.as_ref())],
            None => self.steps.clone().filter_map(|i| fitter(plan, i).map(|f| (i, f))).collect(),
        }
    }

    /// The clock of `work` (fold or finish) of the fit covering plan step `index`.
    fn stage(&self, plan: &EnginePlan, index: usize, finish: bool) -> Stage {
        let step = &plan.steps[index];
        let work = match (&self.chain, finish) {
            (Some(_), fold_or_finish) => {
                let last = &plan.steps[self.steps.end - 1];
                let (last, last_op) = (last.number, last.op);
                if fold_or_finish {
                    StepWork::FinishChain { last, last_op }
                } else {
                    StepWork::FoldChain { last, last_op }
                }
            }
            (None, true) => StepWork::Finish,
            (None, false) => StepWork::Fold,
        };
        Stage::Step { number: step.number, op: step.op, work }
    }
}

/// The fitted steps that one fit stage fits, starting with the fitted step at `start`: the
/// longest chain that composes, or else the steps that can share one pass.
pub(crate) fn fit_group(plan: &EnginePlan, start: usize) -> FitGroup {
    let run: Vec<&dyn FitStep> = (start..plan.steps.len()).map_while(|i| fitter(plan, i)).collect();
    if let Some((covered, chain)) = linear_chain::compose(&run) {
        return FitGroup { steps: start..start + covered, chain: Some(Arc::from(chain)) };
    }
    let mut rewritten: HashSet<String> = HashSet::new();
    let mut end = start;
    while let Some(fit) = plan.steps.get(end).and_then(|_| fitter(plan, end)) {
        let shape = fit.shape();
        if shape.columns.iter().any(|c| rewritten.contains(c)) {
            break;
        }
        // Every step of the group folds the batches that reach the first one, so each must
        // be bound to their layout: a step that drops rows, or that adds columns (writes
        // one it does not read: `pca`, `explain`, a step with `output`), is the last; and a
        // step that adds columns is the first, as it may rebuild whole batches in the
        // layout it was bound to, which the members before it change (a column's type).
        let adds_columns = shape.written.iter().any(|c| !shape.columns.contains(c));
        if adds_columns && end > start {
            break;
        }
        rewritten.extend(shape.written.iter().cloned());
        end += 1;
        if !shape.keeps_every_row || adds_columns {
            break;
        }
    }
    FitGroup { steps: start..end, chain: None }
}

/// The step an error of the fit covering plan step `index` belongs to (a chain's member),
/// and the error itself.
fn failing_step<'a>(plan: &'a EnginePlan, index: usize, error: &'a OpError) -> (&'a PlannedStep, &'a OpError) {
    let (member, inner) = error.chain_member();
    (&plan.steps[(index + member).min(plan.steps.len() - 1)], inner)
}

/// A fitted step's failure outside any one batch (merging or finishing).
fn fit_failure(plan: &EnginePlan, index: usize, error: &OpError) -> JobFailure {
    let (step, error) = failing_step(plan, index, error);
    let message = format!("step {} ({}): {error}", step.number, step.op);
    if error.is_user_error() { JobFailure::user(message) } else { JobFailure::internal(message) }
}

/// A partial as it travels between workers ([`FitStep::encode`]).
type EncodedPartial = Vec<u8>;

/// The outcome of one pass of a fit stage, broadcast by the leader: the parameters of the
/// fits finished by now (JSON), and the encoded partials of those that need another pass (an
/// exact quantile's search).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FitRound {
    params: Vec<Option<String>>,
    next: Vec<Option<EncodedPartial>>,
}

/// Applies `convert` to the item of each fit of `group` that has one (encoding partials for
/// a leader round, decoding them after).
fn per_fit<A, B>(
    plan: &EnginePlan,
    group: &FitGroup,
    items: Vec<Option<A>>,
    convert: impl Fn(&dyn FitStep, A) -> Result<B, OpError>,
) -> Result<Vec<Option<B>>, JobFailure> {
    group
        .fits(plan)
        .into_iter()
        .zip(items)
        .map(|((index, fit), item)| match item {
            Some(item) => convert(fit, item).map(Some).map_err(|e| fit_failure(plan, index, &e)),
            None => Ok(None),
        })
        .collect()
}

fn encode_all(
    plan: &EnginePlan,
    group: &FitGroup,
    partials: Vec<Option<Partial>>,
) -> Result<Vec<Option<EncodedPartial>>, JobFailure> {
    per_fit(plan, group, partials, |fit, partial| fit.encode(&partial))
}

fn decode_all(
    plan: &EnginePlan,
    group: &FitGroup,
    encoded: Vec<Option<EncodedPartial>>,
) -> Result<Vec<Option<Partial>>, JobFailure> {
    per_fit(plan, group, encoded, |fit, bytes| fit.decode(&bytes))
}

/// Runs a fit stage over `group` (see the module documentation) and returns the fitted
/// steps' entries for `fitted.json`. A step that needs more than one pass
/// ([`FitStep::next_pass`]) gets them, over the same input, before any step of the group
/// joins the chain.
pub(crate) fn fit_stage(
    worker: &mut Worker,
    plan: &SharedPlan,
    context: &ProcessContext,
    state: &Rc<WorkerState>,
    group: FitGroup,
) -> Result<Vec<FittedStep>, JobFailure> {
    let mut next: Vec<Option<Partial>> = group.fits(plan).iter().map(|(_, f)| Some(f.new_partial())).collect();
    let mut params: Vec<Option<String>> = vec![None; next.len()];
    while next.iter().any(Option::is_some) {
        let partials: Rc<RefCell<Vec<Option<Partial>>>> = Rc::new(RefCell::new(std::mem::take(&mut next)));
        let consumer = {
            let (plan, partials, group, state) = (plan.clone(), partials.clone(), group.clone(), state.clone());
            Box::new(move |item: crate::chain::SourceBatch| {
                let mut partials = partials.borrow_mut();
                for ((index, fit), partial) in group.fits(&plan).into_iter().zip(partials.iter_mut()) {
                    let Some(partial) = partial.as_mut() else { continue };
                    state.metrics.time(group.stage(&plan, index, false), || fit.fold(partial, &item.batch)).map_err(
                        |e| {
                            let (step, error) = failing_step(&plan, index, &e);
                            step_failure(&plan, step.number, step.op, item.shard, error)
                        },
                    )?;
                }
                Ok(())
            })
        };
        let outcome = run_pass(worker, plan, context, state.clone(), consumer, PassKind::Stage);
        let contribution = outcome.and_then(|_| encode_all(plan, &group, partials.take()));
        let (leader_plan, leader_group, leader_state) = (plan.clone(), group.clone(), state.clone());
        let round: Result<FitRound, JobFailure> = leader_round(
            worker,
            contribution,
            move |contributions: Vec<Result<Vec<Option<EncodedPartial>>, JobFailure>>| {
                finish_fits(&leader_plan, &leader_group, contributions, &leader_state.metrics)
            },
        )?;
        let round = round?;
        for (slot, fitted) in params.iter_mut().zip(round.params) {
            if fitted.is_some() {
                *slot = fitted;
            }
        }
        next = decode_all(plan, &group, round.next)?;
    }

    // What each step of the group was fitted to: its own parameters, or its share of a
    // chain's (one entry per member, in step order).
    let mut fitted: Vec<(usize, serde_json::Value)> = Vec::new();
    for ((index, _), json) in group.fits(plan).into_iter().zip(params) {
        let Some(json) = json else { continue };
        let step = &plan.steps[index];
        let value: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| JobFailure::internal(format!("step {}: fitted parameters do not parse: {e}", step.number)))?;
        match (&group.chain, value) {
            (Some(_), serde_json::Value::Array(members)) if members.len() == group.steps.len() => {
                fitted.extend(group.steps.clone().zip(members));
            }
            (Some(_), _) => {
                return Err(JobFailure::internal(format!(
                    "step {}: a chain's parameters do not cover its steps",
                    step.number
                )));
            }
            (None, value) => fitted.push((index, value)),
        }
    }
    // A chain joins the worker's steps as one map (fused where it can be, see
    // `linear_chain`); other fitted steps each as their own.
    if let Some(chain) = &group.chain
        && !fitted.is_empty()
    {
        let params = serde_json::Value::Array(fitted.iter().map(|(_, value)| value.clone()).collect());
        let mapped = chain.with_params(&params).map_err(|e| fit_failure(plan, group.steps.start, &e))?;
        let members = group.steps.clone().map(|i| (plan.steps[i].number, plan.steps[i].op)).collect();
        state.chain.push_chain(members, Arc::from(mapped));
    }
    let mut entries = Vec::new();
    for (index, value) in fitted {
        let (Some(fit), step) = (fitter(plan, index), &plan.steps[index]) else { continue };
        if group.chain.is_none() {
            let mapped = fit.with_params(&value).map_err(|e| fit_failure(plan, index, &e))?;
            state.chain.push_map(step.number, step.op, Arc::from(mapped));
        }
        entries.push(FittedStep {
            step: step.number,
            op: step.op.to_string(),
            strategy: fit.shape().strategy.clone(),
            columns: fit.shape().columns.clone(),
            reused_from: None,
            params: value,
        });
    }
    Ok(entries)
}

/// The leader's side of a fit pass: merge every worker's partials, then for each fit
/// either finish them into parameters or hand out the partials of its next pass.
fn finish_fits(
    plan: &EnginePlan,
    group: &FitGroup,
    contributions: Vec<Result<Vec<Option<EncodedPartial>>, JobFailure>>,
    metrics: &WorkerMetrics,
) -> Result<FitRound, JobFailure> {
    if let Some(failure) = JobFailure::first_cause(contributions.iter().filter_map(|c| c.as_ref().err())) {
        return Err(failure);
    }
    let fits = group.fits(plan);
    let mut merged: Option<Vec<Option<Partial>>> = None;
    for encoded in contributions.into_iter().flatten() {
        let partials = decode_all(plan, group, encoded)?;
        match merged.as_mut() {
            None => merged = Some(partials),
            Some(merged) => {
                for ((&(index, fit), into), other) in fits.iter().zip(merged.iter_mut()).zip(partials) {
                    let (Some(into), Some(other)) = (into.as_mut(), other) else { continue };
                    metrics
                        .time(group.stage(plan, index, true), || fit.merge(into, other))
                        .map_err(|e| fit_failure(plan, index, &e))?;
                }
            }
        }
    }
    let merged = merged.ok_or_else(|| JobFailure::internal("a fit stage gathered no partials"))?;
    let mut round = FitRound { params: Vec::new(), next: Vec::new() };
    for ((index, fit), partial) in fits.into_iter().zip(merged) {
        let Some(mut partial) = partial else {
            round.params.push(None);
            round.next.push(None);
            continue;
        };
        let stage = group.stage(plan, index, true);
        let next = metrics.time(stage, || fit.next_pass(&mut partial)).map_err(|e| fit_failure(plan, index, &e))?;
        match next {
            Some(next) => {
                round.params.push(None);
                round.next.push(Some(fit.encode(&next).map_err(|e| fit_failure(plan, index, &e))?));
            }
            None => {
                let params = metrics.time(stage, || fit.finish(partial)).map_err(|e| fit_failure(plan, index, &e))?;
                round.params.push(Some(params.to_string()));
                round.next.push(None);
            }
        }
    }
    Ok(round)
}

/// Runs the dedupe stage of the step at `index` (see the module documentation) and adds
/// its filter to the chain.
pub(crate) fn dedupe_stage(
    worker: &mut Worker,
    plan: &SharedPlan,
    context: &ProcessContext,
    state: &Rc<WorkerState>,
    index: usize,
) -> Result<(), JobFailure> {
    let step = &plan.steps[index];
    let owners: Arc<[usize]> = plan.owners_with_groups(worker.peers()).into();
    let keyed = Rc::new(RefCell::new(Some(KeyedDedupe::build(worker, owners))));
    let keys_stage = Stage::Step { number: step.number, op: step.op, work: StepWork::Keys };
    let consumer = {
        let (plan, keyed, state) = (plan.clone(), keyed.clone(), state.clone());
        let cursor = RowCursor::default();
        Box::new(move |item: crate::chain::SourceBatch| {
            let step = &plan.steps[index];
            let StepKind::Dedupe(dedupe) = &step.kind else { return Ok(()) };
            state.metrics.time(keys_stage, || {
                let encoded = dedupe
                    .encode(&item.batch)
                    .map_err(|e| step_failure(&plan, step.number, step.op, item.shard, &e))?;
                let first = cursor.advance(item.shard, item.batch.num_rows());
                let mut keyed = keyed.borrow_mut();
                let Some(keyed) = keyed.as_mut() else { return Ok(()) };
                for row in 0..item.batch.num_rows() {
                    keyed.push(DedupeRecord {
                        key: encoded.keys.row(row).as_ref().to_vec(),
                        rank: encoded.ranks.as_ref().map(|r| r.row(row).as_ref().to_vec()).unwrap_or_default(),
                        shard: item.shard as u32,
                        row: first + row as u64,
                    });
                }
                Ok(())
            })
        })
    };
    let outcome = run_pass(worker, plan, context, state.clone(), consumer, PassKind::Stage);
    // Every worker finishes the keyed dataflow, failed or not, so none waits forever.
    let keyed = keyed.take().ok_or_else(|| JobFailure::internal("the dedupe input is gone after its pass"))?;
    let reduce_stage = Stage::Step { number: step.number, op: step.op, work: StepWork::Reduce };
    let winners = state.metrics.time(reduce_stage, || keyed.finish(worker));
    agree(worker, outcome.map(|_| ()))?;
    state.chain.push_keep(step.number, KeptRows::new(winners));
    Ok(())
}

/// What one worker counted in a check stage: the row-level counts and, for a `unique` key,
/// the rows it fed and the distinct keys whose winner came back to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckContribution {
    counts: CheckCounts,
    unique: UniqueCount,
}

/// Runs the check stage of the step at `index` (see the module documentation) and returns
/// its results; with `on_fail = "fail"`, a failed expectation is the run's failure.
pub(crate) fn check_stage(
    worker: &mut Worker,
    plan: &SharedPlan,
    context: &ProcessContext,
    state: &Rc<WorkerState>,
    index: usize,
) -> Result<Vec<CheckResult>, JobFailure> {
    let step = &plan.steps[index];
    let StepKind::Check(check) = &step.kind else {
        return Err(JobFailure::internal(format!("step {} is not a check", step.number)));
    };
    let owners: Arc<[usize]> = plan.owners_with_groups(worker.peers()).into();
    let keyed = Rc::new(RefCell::new(check.has_unique().then(|| KeyedDedupe::build(worker, owners))));
    let counts = Rc::new(RefCell::new((check.new_counts(), 0u64)));
    let count_stage = Stage::Step { number: step.number, op: step.op, work: StepWork::Count };
    let consumer = {
        let (plan, keyed, counts, state) = (plan.clone(), keyed.clone(), counts.clone(), state.clone());
        let cursor = RowCursor::default();
        Box::new(move |item: crate::chain::SourceBatch| {
            let step = &plan.steps[index];
            let StepKind::Check(check) = &step.kind else { return Ok(()) };
            let failure = |e: &OpError| step_failure(&plan, step.number, step.op, item.shard, e);
            state.metrics.time(count_stage, || {
                let mut counts = counts.borrow_mut();
                check.fold(&mut counts.0, &item.batch).map_err(|e| failure(&e))?;
                let first = cursor.advance(item.shard, item.batch.num_rows());
                let mut keyed = keyed.borrow_mut();
                let (Some(keys), Some(keyed)) =
                    (check.unique_keys(&item.batch).map_err(|e| failure(&e))?, keyed.as_mut())
                else {
                    return Ok(());
                };
                for (row, _) in keys.checked.iter().enumerate().filter(|(_, checked)| **checked) {
                    counts.1 += 1;
                    keyed.push(DedupeRecord {
                        key: keys.keys.row(row).as_ref().to_vec(),
                        rank: Vec::new(),
                        shard: item.shard as u32,
                        row: first + row as u64,
                    });
                }
                Ok(())
            })
        })
    };
    let outcome = run_pass(worker, plan, context, state.clone(), consumer, PassKind::Stage);
    // Every worker finishes the keyed dataflow, failed or not, so none waits forever.
    let distinct = match keyed.take() {
        Some(keyed) => {
            let reduce_stage = Stage::Step { number: step.number, op: step.op, work: StepWork::Reduce };
            state.metrics.time(reduce_stage, || keyed.finish(worker)).len() as u64
        }
        None => 0,
    };
    let (counts, keyed_rows) = counts.take();
    let contribution =
        outcome.map(|_| CheckContribution { counts, unique: UniqueCount { rows: keyed_rows, distinct } });
    let leader_plan = plan.clone();
    let results: Result<Vec<CheckResult>, JobFailure> =
        leader_round(worker, contribution, move |contributions: Vec<Result<CheckContribution, JobFailure>>| {
            if let Some(failure) = JobFailure::first_cause(contributions.iter().filter_map(|c| c.as_ref().err())) {
                return Err(failure);
            }
            let step = &leader_plan.steps[index];
            let StepKind::Check(check) = &step.kind else {
                return Err(JobFailure::internal(format!("step {} is not a check", step.number)));
            };
            let mut counts = check.new_counts();
            let mut unique = UniqueCount::default();
            for contribution in contributions.into_iter().flatten() {
                counts.merge(&contribution.counts);
                unique.rows += contribution.unique.rows;
                unique.distinct += contribution.unique.distinct;
            }
            let results = check.results(&counts, check.has_unique().then_some(unique));
            if let Some(error) = check.failure(&results) {
                return Err(JobFailure::user(format!("step {} ({}): {error}", step.number, step.op)));
            }
            Ok(results
                .into_iter()
                .map(|result| CheckResult {
                    step: step.number,
                    name: check.name().map(str::to_string),
                    expectation: result.expectation,
                    columns: result.columns,
                    on_fail: check.on_fail().as_str().to_string(),
                    rows: result.rows,
                    failing_rows: result.failing_rows,
                    passed: result.passed,
                    message: result.message,
                })
                .collect())
        })?;
    let results = results?;
    for failed in results.iter().filter(|r| !r.passed) {
        if worker.index() == 0 {
            // The run's summary prints it; the log keeps it for a service's run log too.
            tracing::info!(step = failed.step, expectation = %failed.expectation, "check failed (on_fail = warn): {}", failed.message);
        }
    }
    Ok(results)
}

/// Runs the aggregate stage of the step at `index` (see the module documentation).
pub(crate) fn aggregate_stage(
    worker: &mut Worker,
    plan: &SharedPlan,
    context: &ProcessContext,
    state: &Rc<WorkerState>,
    index: usize,
) -> Result<(), JobFailure> {
    let step = &plan.steps[index];
    let StepKind::Aggregate(aggregate) = &step.kind else {
        return Err(JobFailure::internal("an aggregate stage for a step that is not an aggregate"));
    };
    let (number, op) = (step.number, step.op);
    let failed = |e: OpError| JobFailure::user(format!("step {number} ({op}) failed: {e}"));
    let groups_failed = move |e: GroupsError| match e {
        GroupsError::Op(e) => failed(e),
        GroupsError::Spill(message) => JobFailure::external(format!("step {number} ({op}) failed: {message}")),
    };
    let folded = Rc::new(RefCell::new(GroupTable::new(aggregate.clone()).map_err(failed)?));
    let merged = Rc::new(RefCell::new(GroupTable::new(aggregate.clone()).map_err(failed)?));
    let peers = worker.peers();
    let spill = Rc::new(RefCell::new(GroupSpill::new(&plan.spill_dir, plan.spill_keep_free_bytes, peers)));
    let budget = aggregate.memory_bytes;
    if plan.rejects.is_some() {
        state.chain.collect_rejects();
    }
    let combine = Stage::Step { number, op, work: StepWork::Combine };
    let spilling = Stage::Step { number, op, work: StepWork::SpillGroups };
    let consumer = {
        let (plan, folded, state, spill) = (plan.clone(), folded.clone(), state.clone(), spill.clone());
        let cursor = RowCursor::default();
        Box::new(move |item: crate::chain::SourceBatch| {
            state.rejected.borrow_mut().extend(item.rejected);
            let mut table = folded.borrow_mut();
            state.metrics.time(combine, || {
                let first = cursor.advance(item.shard, item.batch.num_rows());
                table
                    .update(&item.batch, item.shard as u32, first)
                    .map_err(|e| step_failure(&plan, number, op, item.shard, &e))
            })?;
            // Past the budget: the partial groups go to local disk, by destination, and
            // the table starts again.
            if table.memory_bytes() > budget {
                let estimate = table.memory_bytes() as u64;
                let partials = table.drain_partials(peers);
                state
                    .metrics
                    .time(spilling, || spill.borrow_mut().spill_partials(partials, estimate))
                    .map_err(|message| JobFailure::external(format!("step {number} ({op}) failed: {message}")))?;
            }
            Ok(())
        })
    };
    let outcome = run_pass(worker, plan, context, state.clone(), consumer, PassKind::Aggregate);
    if state.source_rows.get().is_none()
        && let Ok(rows) = &outcome
    {
        state.source_rows.set(Some(*rows));
    }
    // Every worker takes part in the exchange, failed or not (sending nothing), so none
    // waits forever; the leader round below then fails them all alike.
    let in_memory = match &outcome {
        Ok(_) => folded.borrow_mut().drain_partials(peers),
        Err(_) => Vec::new(),
    };
    drop(folded);
    let outgoing = spill.borrow_mut().outgoing(in_memory);
    let outgoing: Box<dyn Iterator<Item = _>> = match &outcome {
        Ok(_) => Box::new(outgoing),
        Err(_) => Box::new(std::iter::empty()),
    };
    let merge = Stage::Step { number, op, work: StepWork::Merge };
    let exchanged = state.metrics.time(merge, || exchange_partials(worker, outgoing, &merged, &spill, budget));
    let one_group = worker.index() == 0;
    let groups = outcome.and_then(|_| {
        let exchanged = exchanged.map_err(groups_failed)?;
        state.metrics.count(merge, exchanged.groups, exchanged.bytes);
        let mut table = Rc::try_unwrap(merged)
            .map_err(|_| JobFailure::internal("the aggregate's merged groups are still shared"))?
            .into_inner();
        let mut spill = spill.borrow_mut();
        if !spill.has_runs() {
            let batches = state.metrics.time(merge, || table.finish(one_group, plan.batch_size)).map_err(failed)?;
            return Ok(Groups { batches, spilled: None });
        }
        // Spilled: the runs and what is left in memory, merged in key order, written to a
        // file as the groups' rows.
        let in_memory = table.drain_sorted();
        let estimate = spill.bytes;
        let rows = state
            .metrics
            .time(merge, || {
                let sorted = spill.merged(in_memory, &table)?;
                spill.write_rows(
                    &aggregate.output_schema(),
                    |emit| table.finish_sorted(sorted, one_group, plan.batch_size, emit),
                    estimate,
                )
            })
            .map_err(groups_failed)?;
        tracing::info!(
            step = number,
            spilled_bytes = spill.bytes,
            groups = rows.rows,
            "aggregate: groups spilled to local disk ({} MiB)",
            spill.bytes.div_ceil(1 << 20)
        );
        Ok(Groups { batches: Vec::new(), spilled: Some(rows) })
    });
    {
        let spill = spill.borrow();
        state.metrics.count(spilling, spill.groups, spill.bytes);
    }
    agree(worker, groups.as_ref().map(|_| ()).map_err(Clone::clone))?;
    let groups = groups?;
    tracing::debug!(step = number, groups = groups.batches.iter().map(|b| b.num_rows()).sum::<usize>(), "aggregated");
    state.chain.reset();
    *state.groups.borrow_mut() = Some(groups);
    Ok(())
}

/// A leader round on every worker's outcome of a stage: all fail alike with the first cause
/// if any failed.
fn agree(worker: &mut Worker, outcome: Result<(), JobFailure>) -> Result<(), JobFailure> {
    leader_round(worker, outcome, |outcomes: Vec<Result<(), JobFailure>>| {
        match JobFailure::first_cause(outcomes.iter().filter_map(|o| o.as_ref().err())) {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    })?
}
