//! Leader rounds: every worker contributes one value, worker 0 folds them all into a
//! result, and the result is broadcast back to every worker, all through timely channels.
//! This is the reduce-then-broadcast of MapReduce, used for output preparation, for the
//! commit, and for fitted parameters.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::worker::Worker;

use crate::JobFailure;

/// How long a waiting worker parks between checks for messages.
pub(crate) const PARK: Duration = Duration::from_millis(5);

/// Runs one leader round; see the module documentation. Every worker must call it, in the
/// same order relative to its other rounds. `leader` runs on worker 0 only and gets the
/// contributions in worker order, so what it computes does not depend on which worker's
/// message arrived first (merged floating-point statistics are then reproducible). Fails
/// only if the cluster lost the result, which the protocol rules out (an internal error).
pub fn leader_round<T, R, F>(worker: &mut Worker, contribution: T, leader: F) -> Result<R, JobFailure>
where
    T: Serialize + for<'a> Deserialize<'a> + Clone + Send + 'static,
    R: Serialize + for<'a> Deserialize<'a> + Clone + Send + 'static,
    F: FnOnce(Vec<T>) -> R + 'static,
{
    let result: Rc<RefCell<Option<R>>> = Rc::new(RefCell::new(None));
    let captured = result.clone();
    let is_leader = worker.index() == 0;
    let index = worker.index();
    let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<(usize, T)>>>::new();
    worker.dataflow::<u64, _, _>(|scope| {
        let mut leader = Some(leader);
        let mut gathered: Vec<(usize, T)> = Vec::new();
        input
            .to_stream(scope)
            .exchange(|_| 0)
            .unary_frontier::<CapacityContainerBuilder<Vec<R>>, _, _, _>(
                Pipeline,
                "LeaderFold",
                move |capability, _info| {
                    let mut capability = Some(capability);
                    move |(input, frontier), output| {
                        input.for_each(|_time, data| gathered.append(data));
                        if frontier.is_empty()
                            && let Some(capability) = capability.take()
                            && is_leader
                            && let Some(leader) = leader.take()
                        {
                            gathered.sort_by_key(|(worker, _)| *worker);
                            let folded = leader(gathered.drain(..).map(|(_, value)| value).collect());
                            output.session(&capability).give(folded);
                        }
                    }
                },
            )
            .broadcast()
            .sink(Pipeline, "LeaderResult", move |(input, _frontier)| {
                input.for_each(|_time, data| {
                    if let Some(value) = data.pop() {
                        *captured.borrow_mut() = Some(value);
                    }
                });
            });
    });
    input.send((index, contribution));
    input.close();
    while result.borrow().is_none() && worker.has_dataflows() {
        worker.step_or_park(Some(PARK));
    }
    result.take().ok_or_else(|| JobFailure::internal("a leader round ended without a result"))
}
