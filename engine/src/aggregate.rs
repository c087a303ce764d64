//! The exchange of an `aggregate` step's partial groups: every worker sends each group of
//! its table to the worker its key hashes to ([`GroupTable::drain_partials`]; groups it
//! spilled earlier first, read back from its files), and merges the groups it receives into
//! a table of its own as they arrive, spilling that table as a sorted run whenever it
//! passes the step's memory budget ([`crate::group_spill`]).
//!
//! One timely dataflow per aggregate stage, built by every worker in the same order: an
//! input of `(destination, chunk of groups)` records, an `Exchange` on the destination (so
//! chunks cross processes serialized by timely), and an operator that merges each chunk
//! into the receiving worker's table. Each chunk a worker sends has a time of its own (1,
//! 2, …), and a worker sends chunk `t` only once every worker has merged everything sent
//! before `t - IN_FLIGHT` (the probe's frontier): without that flow control a worker whose
//! peers are still reading would queue all its groups in the channels, whatever the
//! tables' budgets. The stage waits until every chunk is merged, then until the dataflow is
//! torn down.

use std::cell::RefCell;
use std::rc::Rc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Exchange, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use timely::worker::Worker;
use weir_operators::group_table::{GroupTable, PartialGroup};

use crate::group_spill::{GroupSpill, GroupsError};
use crate::rounds::PARK;

/// Chunks a worker may have sent that are not merged everywhere yet.
const IN_FLIGHT: u64 = 8;

/// A chunk of groups for one worker.
type Chunk = (u64, Vec<PartialGroup>);

/// What the exchange moved from this worker.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Exchanged {
    /// Groups this worker sent (to itself included).
    pub groups: u64,
    /// Their size serialized (as timely sends them to another process).
    pub bytes: u64,
}

/// Sends each `(w, chunk)` of `outgoing` to worker `w`, and merges what reaches this worker
/// into `merged`, spilling it to `spill` as a sorted run whenever it holds more than
/// `budget` bytes. Every worker of the cluster must call it once per aggregate stage,
/// failed or not (a failed worker sends nothing), so that none waits forever.
pub(crate) fn exchange_partials(
    worker: &mut Worker,
    outgoing: impl Iterator<Item = Result<(usize, Vec<PartialGroup>), String>>,
    merged: &Rc<RefCell<GroupTable>>,
    spill: &Rc<RefCell<GroupSpill>>,
    budget: usize,
) -> Result<Exchanged, GroupsError> {
    let failure: Rc<RefCell<Option<GroupsError>>> = Rc::new(RefCell::new(None));
    let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<Chunk>>>::new();
    let probe = ProbeHandle::new();
    let dataflow = worker.next_dataflow_index();
    {
        let (table, failure, spill) = (merged.clone(), failure.clone(), spill.clone());
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
                                let mut table = table.borrow_mut();
                                let mut merged = table.merge(groups).map_err(GroupsError::Op);
                                if merged.is_ok() && table.memory_bytes() > budget {
                                    let estimate = table.memory_bytes() as u64;
                                    let run = table.drain_sorted();
                                    merged = spill.borrow_mut().spill_run(run, estimate).map_err(GroupsError::Spill);
                                }
                                if let Err(error) = merged {
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
    let mut time = 0u64;
    for chunk in outgoing {
        match chunk {
            Ok((destination, groups)) => {
                exchanged.groups += groups.len() as u64;
                exchanged.bytes += bincode::serialized_size(&groups).unwrap_or(0);
                input.send((destination as u64, groups));
                time += 1;
                input.advance_to(time);
                while probe.less_than(&time.saturating_sub(IN_FLIGHT)) {
                    worker.step_or_park(Some(PARK));
                }
            }
            Err(message) => {
                // Reading this worker's own spill failed: it sends no more, and fails.
                failure.borrow_mut().get_or_insert(GroupsError::Spill(message));
                break;
            }
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
