//! The stages that need the whole dataset before the final pass can map it.
//!
//! - A *fit stage* fits one or more fitted steps: a pass folds every batch (as it leaves the
//!   chain built so far) into each step's partial; a leader round gathers the partials on
//!   worker 0, which merges them, finishes them into parameters and broadcasts those back;
//!   every worker then adds the fitted steps to its chain. Consecutive fitted steps share a
//!   pass when that is exactly equivalent: no step of the group reads a column an earlier
//!   one writes, and only the group's last step may drop rows.
//! - A *dedupe stage* feeds every row's key and rank, located by `(shard, position)`, into
//!   the keyed differential-dataflow reduction ([`crate::dedupe`]); the winners come back to
//!   the worker that owns their shard, and the chain gains a filter that keeps them.
//!
//! Every worker goes through the same stages in the same order, and each stage ends with
//! a leader round, so a failure on one worker fails the stage on all of them.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

use timely::worker::Worker;
use weir_operators::fit::{FittedStep, Partial};
use weir_operators::{FitStep, OpError};

use crate::JobFailure;
use crate::chain::{Chain, KeptRows, RowCursor, step_failure};
use crate::dedupe::{DedupeRecord, KeyedDedupe};
use crate::metrics::{Stage, StepWork, WorkerMetrics};
use crate::pass::run_pass;
use crate::plan::{EnginePlan, SharedPlan, StepKind};
use crate::rounds::leader_round;
use crate::run::ProcessContext;

fn lost_round() -> JobFailure {
    JobFailure::internal("a leader round ended without a result")
}

fn fitter(plan: &EnginePlan, index: usize) -> Option<&dyn FitStep> {
    match &plan.steps[index].kind {
        StepKind::Fit(fit) => Some(fit.as_ref()),
        _ => None,
    }
}

/// The fitted steps that can share one pass, starting with the fitted step at `start`.
pub(crate) fn fit_group(plan: &EnginePlan, start: usize) -> Range<usize> {
    let mut rewritten: HashSet<String> = HashSet::new();
    let mut end = start;
    while let Some(fit) = plan.steps.get(end).and_then(|_| fitter(plan, end)) {
        if fit.columns().iter().any(|c| rewritten.contains(c)) {
            break;
        }
        rewritten.extend(fit.written_columns());
        end += 1;
        if !fit.keeps_every_row() {
            break;
        }
    }
    start..end
}

/// A fitted step's failure outside any one batch (merging or finishing).
fn fit_failure(plan: &EnginePlan, index: usize, error: &OpError) -> JobFailure {
    let step = &plan.steps[index];
    let message = format!("step {} ({}): {error}", step.number, step.op);
    if error.is_user_error() { JobFailure::user(message) } else { JobFailure::internal(message) }
}

/// Runs a fit stage over `group` (see the module documentation) and returns the fitted
/// steps' entries for `fitted.json`.
pub(crate) fn fit_stage(
    worker: &mut Worker,
    plan: &SharedPlan,
    context: &ProcessContext,
    chain: &Rc<Chain>,
    group: Range<usize>,
) -> Result<Vec<FittedStep>, JobFailure> {
    let fitters: Vec<&dyn FitStep> = group.clone().filter_map(|i| fitter(plan, i)).collect();
    let partials: Rc<RefCell<Vec<Partial>>> = Rc::new(RefCell::new(fitters.iter().map(|f| f.new_partial()).collect()));
    let consumer = {
        let (plan, partials, group, metrics) = (plan.clone(), partials.clone(), group.clone(), chain.metrics().clone());
        Box::new(move |item: crate::chain::SourceBatch| {
            let mut partials = partials.borrow_mut();
            for (index, partial) in group.clone().zip(partials.iter_mut()) {
                let (Some(fit), step) = (fitter(&plan, index), &plan.steps[index]) else { continue };
                let stage = Stage::Step { number: step.number, op: step.op, work: StepWork::Fold };
                metrics
                    .time(stage, || fit.fold(partial, &item.batch))
                    .map_err(|e| step_failure(&plan, step.number, step.op, item.shard, &e))?;
            }
            Ok(())
        })
    };
    let outcome = run_pass(worker, plan, context, chain.clone(), consumer, false);
    let contribution = outcome.map(|_| partials.take());

    let (leader_plan, leader_group, leader_metrics) = (plan.clone(), group.clone(), chain.metrics().clone());
    let params: Result<Vec<String>, JobFailure> =
        leader_round(worker, contribution, move |contributions: Vec<Result<Vec<Partial>, JobFailure>>| {
            finish_fits(&leader_plan, leader_group, contributions, &leader_metrics)
        })
        .ok_or_else(lost_round)?;
    let params = params?;

    let mut entries = Vec::new();
    for (index, json) in group.zip(params) {
        let (Some(fit), step) = (fitter(plan, index), &plan.steps[index]) else { continue };
        let value: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| JobFailure::internal(format!("step {}: fitted parameters do not parse: {e}", step.number)))?;
        let mapped = fit.with_params(&value).map_err(|e| fit_failure(plan, index, &e))?;
        chain.push_map(step.number, step.op, Arc::from(mapped));
        entries.push(FittedStep {
            step: step.number,
            op: step.op.to_string(),
            strategy: fit.strategy(),
            columns: fit.columns(),
            reused_from: None,
            params: value,
        });
    }
    Ok(entries)
}

/// The leader's side of a fit stage: merge every worker's partials and finish them.
fn finish_fits(
    plan: &EnginePlan,
    group: Range<usize>,
    contributions: Vec<Result<Vec<Partial>, JobFailure>>,
    metrics: &WorkerMetrics,
) -> Result<Vec<String>, JobFailure> {
    let finish_stage = |index: usize| {
        let step = &plan.steps[index];
        Stage::Step { number: step.number, op: step.op, work: StepWork::Finish }
    };
    if let Some(failure) = JobFailure::first_cause(contributions.iter().filter_map(|c| c.as_ref().err())) {
        return Err(failure);
    }
    let mut merged: Option<Vec<Partial>> = None;
    for partials in contributions.into_iter().flatten() {
        match merged.as_mut() {
            None => merged = Some(partials),
            Some(merged) => {
                for ((index, into), other) in group.clone().zip(merged.iter_mut()).zip(partials) {
                    let Some(fit) = fitter(plan, index) else { continue };
                    metrics
                        .time(finish_stage(index), || fit.merge(into, other))
                        .map_err(|e| fit_failure(plan, index, &e))?;
                }
            }
        }
    }
    let merged = merged.ok_or_else(|| JobFailure::internal("a fit stage gathered no partials"))?;
    group
        .zip(merged)
        .map(|(index, partial)| {
            let fit = fitter(plan, index).ok_or_else(|| JobFailure::internal("a fit group holds a non-fitted step"))?;
            let params =
                metrics.time(finish_stage(index), || fit.finish(partial)).map_err(|e| fit_failure(plan, index, &e))?;
            Ok(params.to_string())
        })
        .collect()
}

/// Runs the dedupe stage of the step at `index` (see the module documentation) and adds
/// its filter to the chain.
pub(crate) fn dedupe_stage(
    worker: &mut Worker,
    plan: &SharedPlan,
    context: &ProcessContext,
    chain: &Rc<Chain>,
    index: usize,
) -> Result<(), JobFailure> {
    let step = &plan.steps[index];
    let keyed = Rc::new(RefCell::new(Some(KeyedDedupe::build(worker))));
    let keys_stage = Stage::Step { number: step.number, op: step.op, work: StepWork::Keys };
    let consumer = {
        let (plan, keyed, metrics) = (plan.clone(), keyed.clone(), chain.metrics().clone());
        let cursor = RowCursor::default();
        Box::new(move |item: crate::chain::SourceBatch| {
            let step = &plan.steps[index];
            let StepKind::Dedupe(dedupe) = &step.kind else { return Ok(()) };
            metrics.time(keys_stage, || {
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
    let outcome = run_pass(worker, plan, context, chain.clone(), consumer, false);
    // Every worker finishes the keyed dataflow, failed or not, so none waits forever.
    let keyed = keyed.take().ok_or_else(|| JobFailure::internal("the dedupe input is gone after its pass"))?;
    let reduce_stage = Stage::Step { number: step.number, op: step.op, work: StepWork::Reduce };
    let winners = chain.metrics().time(reduce_stage, || keyed.finish(worker));
    let agreed: Result<(), JobFailure> = leader_round(
        worker,
        outcome.map(|_| ()),
        |outcomes: Vec<Result<(), JobFailure>>| match JobFailure::first_cause(
            outcomes.iter().filter_map(|o| o.as_ref().err()),
        ) {
            Some(failure) => Err(failure),
            None => Ok(()),
        },
    )
    .ok_or_else(lost_round)?;
    agreed?;
    chain.push_keep(step.number, KeptRows::new(winners));
    Ok(())
}
