//! The group table of an [`Aggregate`]: each group's key (the `by` columns in Arrow's row
//! format, floats made canonical) and one mergeable [`State`] per aggregate function.
//!
//! The engine folds a worker's rows into its table ([`GroupTable::update`]: map-side
//! combining), drains the table's partial groups by destination worker
//! ([`GroupTable::drain_partials`]: a fixed hash of the key, so every process sends a key
//! to the same worker), merges the partials it receives into a fresh table
//! ([`GroupTable::merge`]) and turns that into the groups' rows ([`GroupTable::finish`]).
//! States are plain serde types: timely serializes them between processes, and the engine
//! writes them to spill files.
//!
//! A table counts the bytes it holds ([`GroupTable::memory_bytes`], an estimate: keys,
//! states and the index's slots). When it passes the aggregate's `memory_mb`, the engine
//! takes its groups out — by destination ([`GroupTable::drain_partials`]) on the partial
//! side, sorted by key ([`GroupTable::drain_sorted`]) on the merged side, as a run on
//! local disk — and the table starts again empty. The merged groups come back as one
//! stream sorted by key, equal keys merged ([`GroupTable::merge_into`]), and
//! [`GroupTable::finish_sorted`] turns that stream into rows batch by batch.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use arrow::row::{RowConverter, Rows, SortField};
use serde::{Deserialize, Serialize};

use crate::OpError;
use crate::aggregate::{Aggregate, Function, canonical_floats};

/// The seed of the hash that sends a group to its worker: the same in every process.
const DESTINATION_SEED: u64 = 0x5745_4952_4147_4752;

/// What one aggregate function knows of one group so far; two states of the same function
/// merge into the state of both groups' rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum State {
    /// Rows or non-null values.
    Count(i64),
    /// An integer sum, exact, and how many values it adds.
    IntSum { sum: i128, n: i64 },
    /// A float sum with its Neumaier compensation, and how many values it adds.
    FloatSum { sum: f64, compensation: f64, n: i64 },
    /// Welford's running moments.
    Moments { n: i64, mean: f64, m2: f64 },
    /// The smallest or largest value so far, in the row format.
    Extreme(Option<Vec<u8>>),
    /// The distinct non-null values, in the row format.
    /// (Boxed, like `Ordered`'s row, so that every state is as small as the common ones.)
    Distinct(Box<HashSet<Vec<u8>>>),
    /// The first or last row so far.
    Ordered(Option<Box<OrderedRow>>),
}

/// A candidate row of `first` / `last`: its order key, its place in the input, its value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OrderedRow {
    /// The `order by` value in the row format (empty without `order by`).
    pub order: Vec<u8>,
    pub shard: u32,
    pub row: u64,
    /// The value in the row format (a null's encoding when null).
    pub value: Vec<u8>,
}

/// One group on its way to the worker that merges it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialGroup {
    pub key: Vec<u8>,
    pub states: Vec<State>,
}

/// A worker's groups; see the module documentation.
pub struct GroupTable {
    aggregate: Arc<Aggregate>,
    /// The key columns' converter (`None` without `by`: one group, the empty key).
    keys: Option<RowConverter>,
    index: HashMap<Box<[u8]>, u32, foldhash::fast::RandomState>,
    /// `states[group * width + function]`.
    states: Vec<State>,
    width: usize,
    /// Per function: the converter of its values (min, max, first, last, distinct count).
    values: Vec<Option<RowConverter>>,
    /// Per function: the converter of its `order by` values.
    orders: Vec<Option<RowConverter>>,
    /// An estimate of the bytes the table holds; see [`GroupTable::memory_bytes`].
    bytes: usize,
}

/// Bytes a group costs besides its key's bytes and its states: the key's box, the index's
/// slot (with the load factor's slack) and its control byte.
const GROUP_OVERHEAD: usize = std::mem::size_of::<Box<[u8]>>() + 2 * (std::mem::size_of::<Box<[u8]>>() + 4) + 2;
/// Bytes a kept value costs besides its own: its vector's header (and, in a distinct set,
/// the set's slot).
const VALUE_OVERHEAD: usize = 2 * std::mem::size_of::<Vec<u8>>();

// A state is a small value: the large ones are boxed.
const _: () = assert!(std::mem::size_of::<State>() <= 48);

/// The heap bytes a state holds besides itself.
fn state_heap_bytes(state: &State) -> usize {
    match state {
        State::Extreme(Some(value)) => value.len() + VALUE_OVERHEAD,
        State::Distinct(seen) => seen.iter().map(|value| value.len() + VALUE_OVERHEAD).sum(),
        State::Ordered(Some(row)) => row.order.len() + row.value.len() + 2 * VALUE_OVERHEAD,
        _ => 0,
    }
}

impl std::fmt::Debug for GroupTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupTable").field("groups", &self.index.len()).finish()
    }
}

impl GroupTable {
    pub fn new(aggregate: Arc<Aggregate>) -> Result<Self, OpError> {
        // The output starts with the key columns, of their input types.
        let output = aggregate.output_schema();
        let keys = match aggregate.by.is_empty() {
            true => None,
            false => Some(RowConverter::new(
                output
                    .fields()
                    .iter()
                    .take(aggregate.by.len())
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect(),
            )?),
        };
        let mut values = Vec::new();
        let mut orders = Vec::new();
        for aggregation in &aggregate.aggregations {
            let keeps_values = matches!(
                aggregation.function,
                Function::Min | Function::Max | Function::Ordered { .. } | Function::CountDistinct
            );
            values.push(match keeps_values {
                true => Some(RowConverter::new(vec![SortField::new(aggregation.argument_type())])?),
                false => None,
            });
            orders.push(match &aggregation.order {
                Some((order, options)) => {
                    Some(RowConverter::new(vec![SortField::new_with_options(order.data_type(), *options)])?)
                }
                None => None,
            });
        }
        let width = aggregate.aggregations.len();
        Ok(GroupTable {
            aggregate,
            keys,
            index: HashMap::default(),
            states: Vec::new(),
            width,
            values,
            orders,
            bytes: 0,
        })
    }

    /// An estimate of the bytes the groups take: keys, states (and the values they keep)
    /// and the index.
    pub fn memory_bytes(&self) -> usize {
        self.bytes
    }

    /// How many groups the table holds.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn initial(&self) -> impl Iterator<Item = State> + '_ {
        self.aggregate.aggregations.iter().map(|aggregation| match aggregation.function {
            Function::CountRows | Function::Count => State::Count(0),
            Function::CountDistinct => State::Distinct(Box::default()),
            Function::Sum { integer: true } | Function::Avg { integer: true } => State::IntSum { sum: 0, n: 0 },
            Function::Sum { integer: false } | Function::Avg { integer: false } => {
                State::FloatSum { sum: 0.0, compensation: 0.0, n: 0 }
            }
            Function::Variance { .. } => State::Moments { n: 0, mean: 0.0, m2: 0.0 },
            Function::Min | Function::Max => State::Extreme(None),
            Function::Ordered { .. } => State::Ordered(None),
        })
    }

    /// The group of `key`, added with initial states if new.
    fn group(&mut self, key: &[u8]) -> u32 {
        if let Some(&group) = self.index.get(key) {
            return group;
        }
        let group = self.index.len() as u32;
        self.index.insert(key.into(), group);
        let initial: Vec<State> = self.initial().collect();
        self.states.extend(initial);
        self.bytes += key.len() + GROUP_OVERHEAD + self.width * std::mem::size_of::<State>();
        group
    }

    /// The group of each row of `batch`.
    fn groups_of(&mut self, batch: &RecordBatch) -> Result<Vec<u32>, OpError> {
        let Some(keys) = &self.keys else {
            let group = self.group(&[]);
            return Ok(vec![group; batch.num_rows()]);
        };
        let rows = keys.convert_columns(&self.aggregate.keys(batch))?;
        Ok((0..batch.num_rows()).map(|row| self.group(rows.row(row).as_ref())).collect())
    }

    /// Folds `batch` (rows of the step's input; its first row is row `first_row` of
    /// `shard` as the step sees it) into the groups.
    pub fn update(&mut self, batch: &RecordBatch, shard: u32, first_row: u64) -> Result<(), OpError> {
        let groups = self.groups_of(batch)?;
        let aggregate = self.aggregate.clone();
        for (function, aggregation) in aggregate.aggregations.iter().enumerate() {
            let argument = aggregation.argument.as_ref().map(|argument| argument.evaluate(batch)).transpose()?;
            let width = self.width;
            let slots = groups.iter().map(|&group| group as usize * width + function);
            match (aggregation.function, &argument) {
                (Function::CountRows, _) => {
                    for slot in slots {
                        if let State::Count(count) = &mut self.states[slot] {
                            *count += 1;
                        }
                    }
                }
                (Function::Count, Some(values)) => {
                    for (row, slot) in slots.enumerate() {
                        if let State::Count(count) = &mut self.states[slot] {
                            *count += i64::from(values.is_valid(row));
                        }
                    }
                }
                (Function::Sum { integer: true } | Function::Avg { integer: true }, Some(values)) => {
                    for (slot, value) in slots.zip(integers(values)?) {
                        if let (State::IntSum { sum, n }, Some(value)) = (&mut self.states[slot], value) {
                            *sum += value;
                            *n += 1;
                        }
                    }
                }
                (Function::Sum { integer: false } | Function::Avg { integer: false }, Some(values)) => {
                    let values = cast(values, &DataType::Float64)?;
                    for (slot, value) in slots.zip(values.as_primitive::<Float64Type>()) {
                        if let (State::FloatSum { sum, compensation, n }, Some(value)) = (&mut self.states[slot], value)
                        {
                            neumaier(sum, compensation, value);
                            *n += 1;
                        }
                    }
                }
                (Function::Variance { .. }, Some(values)) => {
                    let values = cast(values, &DataType::Float64)?;
                    for (slot, value) in slots.zip(values.as_primitive::<Float64Type>()) {
                        if let (State::Moments { n, mean, m2 }, Some(value)) = (&mut self.states[slot], value) {
                            *n += 1;
                            let delta = value - *mean;
                            *mean += delta / *n as f64;
                            *m2 += delta * (value - *mean);
                        }
                    }
                }
                (Function::Min | Function::Max, Some(values)) => {
                    let rows = self.value_rows(function, &canonical_floats(values))?;
                    let max = aggregation.function == Function::Max;
                    for (row, slot) in slots.enumerate() {
                        if values.is_null(row) {
                            continue;
                        }
                        let value = rows.row(row);
                        if let State::Extreme(current) = &mut self.states[slot] {
                            let better = match current {
                                None => true,
                                Some(current) if max => value.as_ref() > current.as_slice(),
                                Some(current) => value.as_ref() < current.as_slice(),
                            };
                            if better {
                                if current.is_none() {
                                    self.bytes += value.as_ref().len() + VALUE_OVERHEAD;
                                }
                                let bytes = current.get_or_insert_with(Vec::new);
                                bytes.clear();
                                bytes.extend_from_slice(value.as_ref());
                            }
                        }
                    }
                }
                (Function::CountDistinct, Some(values)) => {
                    let rows = self.value_rows(function, &canonical_floats(values))?;
                    for (row, slot) in slots.enumerate() {
                        if values.is_null(row) {
                            continue;
                        }
                        let value = rows.row(row);
                        if let State::Distinct(seen) = &mut self.states[slot]
                            && !seen.contains(value.as_ref())
                        {
                            seen.insert(value.as_ref().to_vec());
                            self.bytes += value.as_ref().len() + VALUE_OVERHEAD;
                        }
                    }
                }
                (Function::Ordered { last }, Some(values)) => {
                    let rows = self.value_rows(function, values)?;
                    let order_rows = match (&aggregation.order, &self.orders[function]) {
                        (Some((order, _)), Some(converter)) => {
                            let order = canonical_floats(&order.evaluate(batch)?);
                            Some(converter.convert_columns(&[order])?)
                        }
                        _ => None,
                    };
                    for (row, slot) in slots.enumerate() {
                        let order = order_rows.as_ref().map_or(&[][..], |rows| rows.row(row).data());
                        let position = (shard, first_row + row as u64);
                        if let State::Ordered(current) = &mut self.states[slot] {
                            let better = match current {
                                None => true,
                                Some(current) => {
                                    let candidate = (order, position);
                                    let held = (current.order.as_slice(), (current.shard, current.row));
                                    if last { candidate > held } else { candidate < held }
                                }
                            };
                            if better {
                                if current.is_none() {
                                    self.bytes += order.len() + rows.row(row).as_ref().len() + 2 * VALUE_OVERHEAD;
                                }
                                *current = Some(Box::new(OrderedRow {
                                    order: order.to_vec(),
                                    shard,
                                    row: position.1,
                                    value: rows.row(row).as_ref().to_vec(),
                                }));
                            }
                        }
                    }
                }
                (_, None) => return Err(OpError::Internal(format!("{} has no argument", aggregation.name))),
            }
        }
        Ok(())
    }

    fn value_rows(&self, function: usize, values: &ArrayRef) -> Result<Rows, OpError> {
        let converter = self.values[function]
            .as_ref()
            .ok_or_else(|| OpError::Internal("an aggregate function keeps no values".into()))?;
        Ok(converter.convert_columns(std::slice::from_ref(values))?)
    }

    /// Takes every group out of the table, by the worker (of `peers`) that merges it.
    pub fn drain_partials(&mut self, peers: usize) -> Vec<Vec<PartialGroup>> {
        let peers = peers.max(1);
        let hasher = foldhash::fast::FixedState::with_seed(DESTINATION_SEED);
        let mut out: Vec<Vec<PartialGroup>> = (0..peers).map(|_| Vec::new()).collect();
        self.bytes = 0;
        let mut states: Vec<Option<State>> = std::mem::take(&mut self.states).into_iter().map(Some).collect();
        for (key, group) in std::mem::take(&mut self.index) {
            let destination = destination(&hasher, &key, peers, self.keys.is_none());
            let at = group as usize * self.width;
            let states = states[at..at + self.width].iter_mut().filter_map(Option::take).collect();
            out[destination].push(PartialGroup { key: key.into_vec(), states });
        }
        out
    }

    /// Takes every group out of the table, sorted by key.
    pub fn drain_sorted(&mut self) -> Vec<PartialGroup> {
        self.bytes = 0;
        let mut states = std::mem::take(&mut self.states).into_iter();
        let mut order: Vec<(Box<[u8]>, u32)> = std::mem::take(&mut self.index).into_iter().collect();
        order.sort_unstable_by_key(|(_, group)| *group);
        // In group order the states come off the front of `states`, a group's width at a time.
        let mut groups: Vec<PartialGroup> = order
            .into_iter()
            .map(|(key, _)| PartialGroup { key: key.into_vec(), states: states.by_ref().take(self.width).collect() })
            .collect();
        groups.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        groups
    }

    /// Merges groups from other tables of the same aggregate into this one.
    pub fn merge(&mut self, partials: impl IntoIterator<Item = PartialGroup>) -> Result<(), OpError> {
        let aggregate = self.aggregate.clone();
        for partial in partials {
            if partial.states.len() != self.width {
                return Err(OpError::Internal("a partial group has another number of states".into()));
            }
            let group = self.group(&partial.key) as usize;
            for (function, (incoming, aggregation)) in
                partial.states.into_iter().zip(&aggregate.aggregations).enumerate()
            {
                self.bytes += state_heap_bytes(&incoming);
                merge_state(&mut self.states[group * self.width + function], incoming, aggregation.function)?;
            }
        }
        Ok(())
    }

    /// Merges `incoming` into `held`, two partial groups of the same key.
    pub fn merge_into(&self, held: &mut PartialGroup, incoming: PartialGroup) -> Result<(), OpError> {
        if held.states.len() != self.width || incoming.states.len() != self.width {
            return Err(OpError::Internal("a partial group has another number of states".into()));
        }
        let functions = self.aggregate.aggregations.iter().map(|aggregation| aggregation.function);
        for ((state, incoming), function) in held.states.iter_mut().zip(incoming.states).zip(functions) {
            merge_state(state, incoming, function)?;
        }
        Ok(())
    }

    /// The groups' rows, sorted by key, in batches of at most `batch_size` rows, with
    /// `having` applied. Without `by`, `one_group` makes the one group exist even when no row
    /// came (the worker that owns the empty key passes it).
    pub fn finish(mut self, one_group: bool, batch_size: usize) -> Result<Vec<RecordBatch>, OpError> {
        let groups = self.drain_sorted();
        let mut batches = Vec::new();
        self.finish_sorted::<OpError>(groups.into_iter().map(Ok), one_group, batch_size, &mut |batch| {
            batches.push(batch);
            Ok(())
        })?;
        Ok(batches)
    }

    /// The rows of `groups` (whole groups, sorted by key, each key once), handed to `emit`
    /// in batches of at most `batch_size` rows, with `having` applied; `one_group` as in
    /// [`GroupTable::finish`].
    pub fn finish_sorted<E: From<OpError>>(
        &self,
        groups: impl Iterator<Item = Result<PartialGroup, E>>,
        one_group: bool,
        batch_size: usize,
        emit: &mut dyn FnMut(RecordBatch) -> Result<(), E>,
    ) -> Result<(), E> {
        let batch_size = batch_size.max(1);
        let mut chunk: Vec<PartialGroup> = Vec::with_capacity(batch_size.min(1 << 16));
        let mut any = false;
        for group in groups {
            chunk.push(group?);
            any = true;
            if chunk.len() == batch_size {
                emit(self.rows_of(&chunk)?)?;
                chunk.clear();
            }
        }
        if !any && one_group && self.keys.is_none() {
            chunk.push(PartialGroup { key: Vec::new(), states: self.initial().collect() });
        }
        if !chunk.is_empty() {
            emit(self.rows_of(&chunk)?)?;
        }
        Ok(())
    }

    /// The rows of `groups`, `having` applied.
    fn rows_of(&self, groups: &[PartialGroup]) -> Result<RecordBatch, OpError> {
        let mut columns: Vec<ArrayRef> = match &self.keys {
            Some(keys) => {
                let parser = keys.parser();
                keys.convert_rows(groups.iter().map(|group| parser.parse(&group.key)))?
            }
            None => Vec::new(),
        };
        for (function, aggregation) in self.aggregate.aggregations.iter().enumerate() {
            let states = groups.iter().map(|group| &group.states[function]);
            columns.push(self.finish_column(function, aggregation, states)?);
        }
        let batch = RecordBatch::try_new(self.aggregate.output_schema(), columns)?;
        self.aggregate.having(batch)
    }

    fn finish_column<'a>(
        &self,
        function: usize,
        aggregation: &crate::aggregate::Aggregation,
        states: impl Iterator<Item = &'a State>,
    ) -> Result<ArrayRef, OpError> {
        let wrong = || OpError::Internal(format!("aggregate '{}': a state of another function", aggregation.name));
        Ok(match aggregation.function {
            Function::CountRows | Function::Count => {
                Arc::new(states.map(|s| if let State::Count(c) = s { Ok(*c) } else { Err(wrong()) }).collect::<Result<
                    Int64Array,
                    _,
                >>(
                )?)
            }
            Function::CountDistinct => Arc::new(
                states
                    .map(|s| if let State::Distinct(seen) = s { Ok(seen.len() as i64) } else { Err(wrong()) })
                    .collect::<Result<Int64Array, _>>()?,
            ),
            Function::Sum { integer: true } => {
                let out_of_range = || {
                    OpError::InvalidSpec(format!(
                        "aggregate '{}': the sum of a group leaves int64's range (DuckDB would widen it to HUGEINT); cast the argument to double",
                        aggregation.name
                    ))
                };
                let values = states.map(|s| match s {
                    State::IntSum { n: 0, .. } => Ok(None),
                    State::IntSum { sum, .. } => i64::try_from(*sum).map(Some).map_err(|_| out_of_range()),
                    _ => Err(wrong()),
                });
                Arc::new(values.collect::<Result<Int64Array, _>>()?)
            }
            Function::Avg { integer: true } => Arc::new(
                states
                    .map(|s| match s {
                        State::IntSum { n: 0, .. } => Ok(None),
                        State::IntSum { sum, n } => Ok(Some(*sum as f64 / *n as f64)),
                        _ => Err(wrong()),
                    })
                    .collect::<Result<Float64Array, _>>()?,
            ),
            Function::Sum { integer: false } | Function::Avg { integer: false } => {
                let average = matches!(aggregation.function, Function::Avg { .. });
                Arc::new(
                    states
                        .map(|s| match s {
                            State::FloatSum { n: 0, .. } => Ok(None),
                            State::FloatSum { sum, compensation, n } => {
                                let total = if sum.is_finite() { sum + compensation } else { *sum };
                                Ok(Some(if average { total / *n as f64 } else { total }))
                            }
                            _ => Err(wrong()),
                        })
                        .collect::<Result<Float64Array, _>>()?,
                )
            }
            Function::Variance { sample, root } => Arc::new(
                states
                    .map(|s| match s {
                        State::Moments { n, m2, .. } => {
                            let divisor = if sample { n - 1 } else { *n };
                            Ok((divisor > 0).then(|| {
                                let variance = m2 / divisor as f64;
                                if root { variance.sqrt() } else { variance }
                            }))
                        }
                        _ => Err(wrong()),
                    })
                    .collect::<Result<Float64Array, _>>()?,
            ),
            Function::Min | Function::Max | Function::Ordered { .. } => {
                let converter = self.values[function].as_ref().ok_or_else(wrong)?;
                let null = converter.convert_columns(&[new_null_array(&aggregation.argument_type(), 1)])?;
                let null = null.row(0);
                let parser = converter.parser();
                let bytes: Vec<&[u8]> = states
                    .map(|s| match s {
                        State::Extreme(value) => Ok(value.as_deref().unwrap_or(null.data())),
                        State::Ordered(value) => Ok(value.as_ref().map_or(null.data(), |v| v.value.as_slice())),
                        _ => Err(wrong()),
                    })
                    .collect::<Result<_, _>>()?;
                let mut columns = converter.convert_rows(bytes.iter().map(|b| parser.parse(b)))?;
                columns.pop().ok_or_else(wrong)?
            }
        })
    }
}

/// The worker of `peers` that merges the group of `key`.
fn destination(hasher: &foldhash::fast::FixedState, key: &[u8], peers: usize, global: bool) -> usize {
    if global { 0 } else { (hasher.hash_one(key) % peers as u64) as usize }
}

/// Neumaier's compensated addition of `value` to `sum`.
fn neumaier(sum: &mut f64, compensation: &mut f64, value: f64) {
    let total = *sum + value;
    if sum.abs() >= value.abs() {
        *compensation += (*sum - total) + value;
    } else {
        *compensation += (value - total) + *sum;
    }
    *sum = total;
}

/// The values of an integer column as `i128`.
fn integers(values: &ArrayRef) -> Result<Vec<Option<i128>>, OpError> {
    Ok(match values.data_type() {
        DataType::UInt64 => values.as_primitive::<UInt64Type>().iter().map(|v| v.map(i128::from)).collect(),
        _ => cast(values, &DataType::Int64)?.as_primitive::<Int64Type>().iter().map(|v| v.map(i128::from)).collect(),
    })
}

/// Merges `incoming` into `state` (both of `function`).
fn merge_state(state: &mut State, incoming: State, function: Function) -> Result<(), OpError> {
    match (state, incoming) {
        (State::Count(a), State::Count(b)) => *a += b,
        (State::IntSum { sum, n }, State::IntSum { sum: other, n: m }) => {
            *sum += other;
            *n += m;
        }
        (State::FloatSum { sum, compensation, n }, State::FloatSum { sum: other, compensation: c, n: m }) => {
            neumaier(sum, compensation, other);
            *compensation += c;
            *n += m;
        }
        (State::Moments { n, mean, m2 }, State::Moments { n: nb, mean: mean_b, m2: m2_b }) => {
            if nb > 0 {
                let total = *n + nb;
                let delta = mean_b - *mean;
                *mean += delta * nb as f64 / total as f64;
                *m2 += m2_b + delta * delta * (*n as f64) * (nb as f64) / total as f64;
                *n = total;
            }
        }
        (State::Extreme(current), State::Extreme(Some(value))) => {
            let better = match current {
                None => true,
                Some(held) if function == Function::Max => value > *held,
                Some(held) => value < *held,
            };
            if better {
                *current = Some(value);
            }
        }
        (State::Extreme(_), State::Extreme(None)) => {}
        (State::Distinct(seen), State::Distinct(other)) => {
            if seen.len() < other.len() {
                let mine = std::mem::replace(seen, other);
                seen.extend(*mine);
            } else {
                seen.extend(*other);
            }
        }
        (State::Ordered(current), State::Ordered(Some(row))) => {
            let last = function == (Function::Ordered { last: true });
            let better = match current {
                None => true,
                Some(held) => {
                    let (candidate, held) = ((&row.order, row.shard, row.row), (&held.order, held.shard, held.row));
                    if last { candidate > held } else { candidate < held }
                }
            };
            if better {
                *current = Some(row);
            }
        }
        (State::Ordered(_), State::Ordered(None)) => {}
        _ => return Err(OpError::Internal("merging states of two different aggregate functions".into())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::AggregateSpec;
    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    fn batch(keys: Vec<Option<&str>>, values: Vec<Option<f64>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("x", DataType::Float64, true),
        ]));
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(keys)), Arc::new(Float64Array::from(values))])
            .unwrap()
    }

    fn aggregate(text: &str) -> Arc<Aggregate> {
        let spec: AggregateSpec = toml::from_str(text).unwrap();
        Arc::new(spec.bind(&batch(vec![], vec![]).schema()).unwrap())
    }

    /// Folds `batches` on `tables` tables (batch i on table i % tables), exchanges and
    /// merges as the engine does, and returns the rows sorted.
    fn run(aggregate: &Arc<Aggregate>, batches: &[RecordBatch], tables: usize) -> Vec<String> {
        let mut folded: Vec<GroupTable> = (0..tables).map(|_| GroupTable::new(aggregate.clone()).unwrap()).collect();
        for (i, batch) in batches.iter().enumerate() {
            folded[i % tables].update(batch, i as u32, 0).unwrap();
        }
        let mut merged: Vec<GroupTable> = (0..tables).map(|_| GroupTable::new(aggregate.clone()).unwrap()).collect();
        for table in &mut folded {
            for (destination, partials) in table.drain_partials(tables).into_iter().enumerate() {
                merged[destination].merge(partials).unwrap();
            }
        }
        let mut rows = Vec::new();
        for (worker, table) in merged.into_iter().enumerate() {
            for out in table.finish(worker == 0, 2).unwrap() {
                let text = arrow::util::pretty::pretty_format_batches(&[out]).unwrap().to_string();
                // Cells trimmed, so that column widths (per batch) do not matter.
                let cells = |line: &str| line.split('|').map(str::trim).collect::<Vec<_>>().join("|");
                rows.extend(text.lines().filter(|l| l.starts_with("| ")).skip(1).map(cells));
            }
        }
        rows.sort();
        rows
    }

    #[test]
    fn the_same_groups_whatever_the_number_of_tables() {
        let aggregate = aggregate(
            r#"by = ["k"]
            aggs = { n = "count(*)", c = "count(x)", s = "sum(x)", lo = "min(x)", d = "count(distinct x)", l = "last(x)", v = "var_samp(x)" }"#,
        );
        let batches = vec![
            batch(vec![Some("a"), None, Some("b")], vec![Some(1.0), Some(2.0), None]),
            batch(vec![Some("a"), Some("a"), None], vec![Some(-0.0), Some(0.0), None]),
            batch(vec![Some("b"), Some("c"), Some("a")], vec![Some(f64::NAN), Some(5.0), Some(3.0)]),
        ];
        let one = run(&aggregate, &batches, 1);
        assert_eq!(one.len(), 4, "{one:?}");
        assert_eq!(one, run(&aggregate, &batches, 3));
        let a = one.iter().find(|r| r.starts_with("|a|")).unwrap();
        // a: 1, -0, 0, 3: count 4, sum 4, min 0 (as DuckDB: -0.0 is 0.0), distinct {1, 0, 3}, last 3.
        assert_eq!(a, "|a|4|4|4.0|0.0|3|3.0|2.0|");
        let b = one.iter().find(|r| r.starts_with("|b|")).unwrap();
        // b: null and NaN: one value, NaN; a sample variance of one value is null.
        assert_eq!(b, "|b|2|1|NaN|NaN|1|NaN||");
        assert!(one.contains(&"||2|1|2.0|2.0|1|||".to_string()), "the null key is a group: {one:?}");
    }

    #[test]
    fn groups_drained_as_sorted_runs_and_merged_back_finish_alike() {
        let aggregate = aggregate(
            r#"by = ["k"]
            aggs = { n = "count(*)", s = "sum(x)", d = "count(distinct x)", l = "last(x)", lo = "min(x)" }"#,
        );
        let batches = vec![
            batch(vec![Some("a"), None, Some("b")], vec![Some(1.0), Some(2.0), None]),
            batch(vec![Some("a"), Some("c"), None], vec![Some(4.0), Some(0.5), Some(2.0)]),
            batch(vec![Some("b"), Some("c"), Some("a")], vec![Some(7.0), Some(5.0), Some(3.0)]),
        ];
        // One run per batch, as a table spilled after every batch would write them.
        let mut runs: Vec<PartialGroup> = Vec::new();
        for (i, batch) in batches.iter().enumerate() {
            let mut table = GroupTable::new(aggregate.clone()).unwrap();
            table.update(batch, i as u32, 0).unwrap();
            assert!(table.memory_bytes() > 0);
            let run = table.drain_sorted();
            assert!(run.windows(2).all(|w| w[0].key < w[1].key) && table.memory_bytes() == 0 && table.is_empty());
            runs.extend(run);
        }
        runs.sort_by(|a, b| a.key.cmp(&b.key));
        let table = GroupTable::new(aggregate.clone()).unwrap();
        let mut merged: Vec<PartialGroup> = Vec::new();
        for group in runs {
            match merged.last_mut() {
                Some(held) if held.key == group.key => table.merge_into(held, group).unwrap(),
                _ => merged.push(group),
            }
        }
        let mut rows = Vec::new();
        table
            .finish_sorted::<OpError>(merged.into_iter().map(Ok), true, 2, &mut |out| {
                let text = arrow::util::pretty::pretty_format_batches(&[out]).unwrap().to_string();
                let cells = |line: &str| line.split('|').map(str::trim).collect::<Vec<_>>().join("|");
                rows.extend(text.lines().filter(|l| l.starts_with("| ")).skip(1).map(cells));
                Ok(())
            })
            .unwrap();
        rows.sort();
        assert_eq!(rows, run(&aggregate, &batches, 2));
    }

    #[test]
    fn without_by_one_row_even_with_no_input() {
        let aggregate = aggregate(r#"aggs = { n = "count(*)", s = "sum(x)" }"#);
        let rows = run(&aggregate, &[batch(vec![], vec![])], 2);
        assert_eq!(rows, ["|0||"]);
    }
}
