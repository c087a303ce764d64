//! The exchange of an `aggregate` step's partial groups: every worker sends each group of
//! its table to the worker its key hashes to ([`GroupTable::drain_partials`]), and merges
//! the groups it receives into a table of its own as they arrive.
//!
//! One timely dataflow per aggregate stage, built by every worker in the same order: an
//! input of `(destination, chunk of groups)` records, an `Exchange` on the destination (so
//! chunks cross processes serialized by timely), and an operator that merges each chunk
//! into the receiving worker's table. All records enter at time 0; the stage waits until
//! every chunk is merged, then until the dataflow is torn down.

use std::cell::RefCell;
use std::rc::Rc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Exchange, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;
use weir_operators::OpError;
use weir_operators::group_table::{GroupTable, PartialGroup};

use crate::rounds::PARK;

/// Groups per exchanged record: large enough to amortise a record's overhead, small
/// enough that a record is never a large allocation of its own.
const GROUPS_PER_CHUNK: usize = 4096;

/// A chunk of groups for one worker.
type Chunk = (u64, Vec<PartialGroup>);

/// What the exchange moved from this worker.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Exchanged {
    /// Groups this worker sent (to itself included).
    pub groups: u64,
}

/// Sends `outgoing[w]` to worker `w`, and merges what reaches this worker into `merged`.
/// Every worker of the cluster must call it once per aggregate stage, failed or not (a
/// failed worker sends nothing), so that none waits forever.
pub(crate) fn exchange_partials(
    worker: &mut Worker,
    outgoing: Vec<Vec<PartialGroup>>,
    merged: &Rc<RefCell<GroupTable>>,
) -> Result<Exchanged, OpError> {
    let failure: Rc<RefCell<Option<OpError>>> = Rc::new(RefCell::new(None));
    let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<Chunk>>>::new();
    let probe = ProbeHandle::new();
    let dataflow = worker.next_dataflow_index();
    {
        let (table, failure) = (merged.clone(), failure.clone());
        worker.dataflow::<u64, _, _>(|scope| {
            input
                .to_stream(scope)
                .exchange(|(destination, _): &Chunk| *destination)
                .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "MergeGroups", move |_, _| {
                    move |input, _output| {
                        input.for_each(|_time, data| {
                            for (_, groups) in data.drain(..) {
                                if failure.borrow().is_some() {
                                    continue;
                                }
                                if let Err(error) = table.borrow_mut().merge(groups) {
                                    *failure.borrow_mut() = Some(error);
                                }
                            }
                        });
                    }
                })
                .probe_with(&probe);
        });
    }
    let mut exchanged = Exchanged::default();
    for (destination, groups) in outgoing.into_iter().enumerate() {
        exchanged.groups += groups.len() as u64;
        let mut groups = groups.into_iter().peekable();
        while groups.peek().is_some() {
            let chunk: Vec<PartialGroup> = groups.by_ref().take(GROUPS_PER_CHUNK).collect();
            input.send((destination as u64, chunk));
            worker.step();
        }
    }
    input.close();
    while !probe.done() {
        worker.step_or_park(Some(PARK));
    }
    while worker.installed_dataflows().contains(&dataflow) {
        worker.step_or_park(Some(PARK));
    }
    match failure.take() {
        Some(error) => Err(error),
        None => Ok(exchanged),
    }
}
