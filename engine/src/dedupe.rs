//! The keyed core of the `dedupe` step: among all rows of the cluster that share a key,
//! exactly one survives, the one with the smallest `(rank, shard, row)`.
//!
//! Each worker builds one [`KeyedDedupe`] dataflow (a differential-dataflow collection at a
//! single time) and pushes one [`DedupeRecord`] per row of its own shards. The dataflow:
//!
//! 1. exchanges every record by a hash of its key, so all records of one key meet on one
//!    worker, whichever workers and processes they came from;
//! 2. `reduce`s each key to its minimum value: differential presents a key's values sorted,
//!    and the value is `(rank, shard, row)`, so the first one is the winner;
//! 3. routes each winner `(shard, row)` to the worker that owns the shard, `owners[shard]`
//!    (timely's exchange sends a `u64` route `r` to worker `r % peers`), where it is
//!    collected and returned by [`KeyedDedupe::finish`].
//!
//! Records cross processes serialized by timely, so they are plain serde types. All records
//! enter at time 0, so nothing is reduced before every worker has closed its input: the
//! reduce sees each key once, complete, and emits no retractions. Until then each worker
//! holds the records whose key hashes to it (about `1 / peers` of them all, sorted and
//! consolidated by differential's batcher); the dataflow is torn down, and that memory freed,
//! before `finish` returns.

use std::cell::RefCell;
use std::rc::Rc;

use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use serde::{Deserialize, Serialize};
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::{Exchange, Inspect, Probe};
use timely::worker::Worker;

use crate::rounds::PARK;

/// One row's entry in the keyed dedupe.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct DedupeRecord {
    /// The row's key columns in arrow's row format (equal keys ⇔ equal bytes).
    pub key: Vec<u8>,
    /// Orders the rows of one key: the smallest wins (the caller encodes "keep first",
    /// "max of order_by", "min of order_by" into these bytes).
    pub rank: Vec<u8>,
    /// The index of the shard the row lives in.
    pub shard: u32,
    /// The row's position within the shard's stream.
    pub row: u64,
}

/// A record as the dataflow holds it: the key, and the value that orders the key's rows.
type Keyed = (Vec<u8>, (Vec<u8>, u32, u64));

/// A winner on its way back to its shard's owner: `((shard, row), time, diff)`.
type Winner = ((u32, u64), u64, isize);

/// The winners routed to a worker, with their multiplicities, as the dataflow captures them.
type Captured = Rc<RefCell<Vec<((u32, u64), isize)>>>;

/// A keyed dedupe dataflow built on one worker. Every worker of the cluster builds one, in
/// the same order relative to its other dataflows, pushes its own rows' records, and calls
/// [`KeyedDedupe::finish`].
pub(crate) struct KeyedDedupe {
    /// The records this worker adds, all at time 0.
    input: InputSession<u64, Keyed, isize>,
    /// Tells when every winner has reached its owner.
    probe: ProbeHandle<u64>,
    /// The winners (and their multiplicities) routed to this worker.
    winners: Captured,
    /// The dataflow's identifier on this worker, to wait for its teardown.
    dataflow: usize,
}

impl KeyedDedupe {
    /// Builds the dataflow on `worker`. Winners go back to the worker that owns their shard,
    /// `owners[shard]` ([`crate::plan::EnginePlan::shard_owners`]).
    pub(crate) fn build(worker: &mut Worker, owners: std::sync::Arc<[usize]>) -> Self {
        let winners: Captured = Rc::new(RefCell::new(Vec::new()));
        let captured = winners.clone();
        let probe = ProbeHandle::new();
        let dataflow = worker.next_dataflow_index();
        let input = worker.dataflow_named::<u64, _, _>("KeyedDedupe", |scope| {
            let (input, records) = scope.new_collection::<Keyed, isize>();
            records
                .arrange_by_key_named("DedupeArrange")
                .reduce_abelian::<_, ValBuilder<_, _, _, _>, ValSpine<Vec<u8>, (u32, u64), u64, isize>, _, _>(
                    "DedupeMin",
                    |_key, values, output| {
                        // Values come sorted: the first one present is the smallest (rank, shard, row).
                        if let Some(((_rank, shard, row), _count)) = values.iter().find(|(_, count)| *count > 0) {
                            output.push(((*shard, *row), 1));
                        }
                    },
                    |batch, key, updates| {
                        batch.clear();
                        batch.extend(updates.drain(..).map(|(winner, time, diff)| ((key.clone(), winner), time, diff)));
                    },
                )
                // Drop the key here rather than copying it out with every winner.
                .as_collection(|_key, winner| *winner)
                .inner
                .exchange(move |((shard, _row), _time, _diff): &Winner| {
                    owners.get(*shard as usize).map_or(u64::from(*shard), |&owner| owner as u64)
                })
                .inspect_core(move |event| {
                    if let Ok((_stamp, updates)) = event {
                        let mut captured = captured.borrow_mut();
                        captured.extend(updates.iter().map(|(winner, _time, diff)| (*winner, *diff)));
                    }
                })
                .probe_with(&probe);
            input
        });
        KeyedDedupe { input, probe, winners, dataflow }
    }

    /// Adds one row's record; only records of this worker's own rows belong here.
    pub(crate) fn push(&mut self, record: DedupeRecord) {
        let DedupeRecord { key, rank, shard, row } = record;
        self.input.insert((key, (rank, shard, row)));
    }
    /// Closes the input, runs the dataflow to completion, and returns the winners that
    /// belong to this worker's shards (`owners[shard] == worker.index()`), as `(shard, row)`
    /// sorted ascending. Every worker must call it.
    pub(crate) fn finish(self, worker: &mut Worker) -> Vec<(u32, u64)> {
        let KeyedDedupe { input, probe, winners, dataflow } = self;
        input.close();
        while !probe.done() {
            worker.step_or_park(Some(PARK));
        }
        // Let the dataflow shut down, so that its arrangements are freed before we return.
        while worker.installed_dataflows().contains(&dataflow) {
            worker.step_or_park(Some(PARK));
        }
        // Every update is a `+1` at time 0, but add them up anyway: a winner counts if its
        // total is positive.
        let mut updates = winners.take();
        updates.sort_unstable();
        updates
            .chunk_by(|a, b| a.0 == b.0)
            .filter(|same| same.iter().map(|(_, diff)| diff).sum::<isize>() > 0)
            .map(|same| same[0].0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Shards in the test data; shard `s` lives on worker `s % peers`.
    const SHARDS: u32 = 12;

    fn round_robin(peers: usize) -> std::sync::Arc<[usize]> {
        (0..SHARDS as usize).map(|s| s % peers).collect()
    }

    /// A small deterministic generator (an LCG), so every worker sees the same data.
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        *state >> 33
    }

    /// `rows` records over `SHARDS` shards, about `rows / keys` per key, with the duplicates
    /// of a key spread over shards (so over workers). Ranks are random bytes of varying
    /// length, and often tie, so that `(shard, row)` must break ties; the empty key stands
    /// for all-null keys.
    fn records(rows: u64, keys: u64, seed: u64) -> Vec<DedupeRecord> {
        let mut state = seed;
        let mut next_row = vec![0u64; SHARDS as usize];
        (0..rows)
            .map(|_| {
                let shard = (next(&mut state) % u64::from(SHARDS)) as u32;
                let row = next_row[shard as usize];
                next_row[shard as usize] += 1;
                let key_id = next(&mut state) % keys;
                let key = if key_id == 0 { Vec::new() } else { format!("key-{key_id}").into_bytes() };
                let rank_len = (next(&mut state) % 3) as usize;
                let rank = (0..rank_len).map(|_| (next(&mut state) % 4) as u8).collect();
                DedupeRecord { key, rank, shard, row }
            })
            .collect()
    }

    /// The winners computed without any dataflow: the minimum `(rank, shard, row)` per key.
    fn reference(records: &[DedupeRecord]) -> Vec<(u32, u64)> {
        let mut best: BTreeMap<&[u8], (&[u8], u32, u64)> = BTreeMap::new();
        for record in records {
            let candidate = (record.rank.as_slice(), record.shard, record.row);
            best.entry(record.key.as_slice())
                .and_modify(|current| *current = (*current).min(candidate))
                .or_insert(candidate);
        }
        let mut winners: Vec<(u32, u64)> = best.values().map(|&(_, shard, row)| (shard, row)).collect();
        winners.sort_unstable();
        winners
    }

    /// Runs the dedupe on `workers` threads, each pushing the records of its own shards,
    /// newest row first (so the winner is rarely the first record pushed). Returns each
    /// worker's result, by worker index.
    fn run_cluster(workers: usize, data: Vec<DedupeRecord>) -> Vec<Vec<(u32, u64)>> {
        let data = std::sync::Arc::new(data);
        let guards = timely::execute(timely::Config::process(workers), move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            let mut dedupe = KeyedDedupe::build(worker, round_robin(worker.peers()));
            let mut pushed = 0usize;
            for record in data.iter().rev().filter(|r| r.shard as usize % peers == index) {
                dedupe.push(record.clone());
                pushed += 1;
                if pushed.is_multiple_of(1000) {
                    worker.step();
                }
            }
            (index, dedupe.finish(worker))
        })
        .expect("the cluster starts");
        let mut results: Vec<(usize, Vec<(u32, u64)>)> =
            guards.join().into_iter().map(|result| result.expect("a worker finishes")).collect();
        results.sort_by_key(|(index, _)| *index);
        assert_eq!(results.len(), workers);
        results.into_iter().map(|(_, winners)| winners).collect()
    }

    /// Checks the cluster's answer against the reference, worker by worker.
    fn check(workers: usize, data: Vec<DedupeRecord>) {
        let expected = reference(&data);
        if data.len() > 100 {
            // Some key's winner is neither the first nor the last of its records in the data.
            let mut first: BTreeMap<&[u8], (u32, u64)> = BTreeMap::new();
            let mut last: BTreeMap<&[u8], (u32, u64)> = BTreeMap::new();
            for record in &data {
                first.entry(record.key.as_slice()).or_insert((record.shard, record.row));
                last.insert(record.key.as_slice(), (record.shard, record.row));
            }
            let ends: Vec<(u32, u64)> = first.values().chain(last.values()).copied().collect();
            assert!(expected.iter().any(|winner| !ends.contains(winner)), "the ranks decide some winners");
        }
        let results = run_cluster(workers, data);
        let mut union: Vec<(u32, u64)> = Vec::new();
        for (index, winners) in results.iter().enumerate() {
            assert!(winners.is_sorted(), "worker {index}: winners not sorted");
            assert!(
                winners.iter().all(|(shard, _)| *shard as usize % workers == index),
                "worker {index} got another worker's shard"
            );
            let own: Vec<(u32, u64)> =
                expected.iter().copied().filter(|(shard, _)| *shard as usize % workers == index).collect();
            assert_eq!(winners, &own, "worker {index}");
            union.extend(winners);
        }
        union.sort_unstable();
        assert_eq!(union, expected);
    }

    #[test]
    fn one_worker_keeps_the_minimum_of_each_key() {
        let data = records(5_000, 700, 7);
        let winners = reference(&data);
        assert!(winners.len() > 600 && winners.len() < data.len(), "the data has duplicates");
        check(1, data);
    }

    #[test]
    fn three_workers_route_winners_to_their_shard_owners() {
        check(3, records(8_000, 900, 11));
    }

    #[test]
    fn four_workers_with_many_duplicates_per_key() {
        check(4, records(6_000, 40, 23));
    }

    #[test]
    fn workers_without_rows_and_empty_input() {
        // Only shards 0 and 1 hold rows: workers 2..5 push nothing but still take part.
        let data: Vec<DedupeRecord> = records(3_000, 200, 5).into_iter().filter(|record| record.shard < 2).collect();
        check(5, data);
        check(3, Vec::new());
    }

    #[test]
    fn identical_records_and_ties_keep_one_winner() {
        let record =
            |key: &[u8], rank: &[u8], shard, row| DedupeRecord { key: key.to_vec(), rank: rank.to_vec(), shard, row };
        let data = vec![
            record(b"a", b"\x01", 2, 0),
            record(b"a", b"\x01", 2, 0),
            record(b"a", b"\x01", 1, 5),
            record(b"a", b"\x00\x09", 4, 3),
            record(b"b", b"", 0, 1),
            record(b"b", b"", 0, 0),
            record(b"", b"\x02", 5, 9),
            record(b"", b"\x01\x00", 3, 9),
        ];
        assert_eq!(reference(&data), vec![(0, 0), (3, 9), (4, 3)]);
        check(3, data.clone());
        check(1, data);
    }

    #[test]
    fn records_pushed_from_inside_another_dataflow() {
        use timely::container::CapacityContainerBuilder;
        use timely::dataflow::InputHandle;
        use timely::dataflow::channels::pact::Pipeline;
        use timely::dataflow::operators::generic::Operator;

        let data = records(4_000, 500, 13);
        let expected = reference(&data);
        let data = std::sync::Arc::new(data);
        let guards = timely::execute(timely::Config::process(3), move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            // Build the dedupe first, then a pass whose operator feeds it, as the engine does.
            let keyed = Rc::new(RefCell::new(Some(KeyedDedupe::build(worker, round_robin(worker.peers())))));
            let feed = keyed.clone();
            let mut input = InputHandle::<u64, CapacityContainerBuilder<Vec<DedupeRecord>>>::new();
            let probe = ProbeHandle::new();
            worker.dataflow::<u64, _, _>(|scope| {
                input
                    .to_stream(scope)
                    .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "Feed", move |_, _| {
                        move |input, _output| {
                            input.for_each(|_time, batch| {
                                if let Some(keyed) = feed.borrow_mut().as_mut() {
                                    batch.drain(..).for_each(|record| keyed.push(record));
                                }
                            });
                        }
                    })
                    .probe_with(&probe);
            });
            let mine: Vec<&DedupeRecord> = data.iter().filter(|r| r.shard as usize % peers == index).collect();
            for (time, chunk) in mine.chunks(500).enumerate() {
                input.send_batch(&mut chunk.iter().map(|r| (*r).clone()).collect());
                input.advance_to(time as u64 + 1);
                while probe.less_than(input.time()) {
                    worker.step_or_park(Some(PARK));
                }
            }
            input.close();
            while !probe.done() {
                worker.step_or_park(Some(PARK));
            }
            let keyed = keyed.take().expect("the dedupe is still there");
            keyed.finish(worker)
        })
        .expect("the cluster starts");
        let mut union: Vec<(u32, u64)> =
            guards.join().into_iter().flat_map(|result| result.expect("a worker finishes")).collect();
        union.sort_unstable();
        assert_eq!(union, expected);
    }

    #[test]
    fn two_dedupes_in_sequence_on_the_same_workers() {
        let first = records(2_000, 300, 3);
        let second = records(2_000, 100, 4);
        let (first_expected, second_expected) = (reference(&first), reference(&second));
        let data = std::sync::Arc::new((first, second));
        let guards = timely::execute(timely::Config::process(2), move |worker| {
            let peers = worker.peers();
            let index = worker.index();
            let mut results = Vec::new();
            for records in [&data.0, &data.1] {
                let mut dedupe = KeyedDedupe::build(worker, round_robin(worker.peers()));
                for record in records.iter().filter(|r| r.shard as usize % peers == index) {
                    dedupe.push(record.clone());
                }
                results.push(dedupe.finish(worker));
            }
            results
        })
        .expect("the cluster starts");
        let mut union = [Vec::new(), Vec::new()];
        for result in guards.join() {
            for (slot, winners) in union.iter_mut().zip(result.expect("a worker finishes")) {
                slot.extend(winners);
            }
        }
        for slot in &mut union {
            slot.sort_unstable();
        }
        assert_eq!(union[0], first_expected);
        assert_eq!(union[1], second_expected);
    }
}
