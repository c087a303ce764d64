//! A worker's part files for the final pass: one staged file, or with `sink.partition_by`
//! one per partition folder its rows fall into (`_weir/runs/<attempt>/k=v/…/part-NNNNN.staged`,
//! published as `k=v/…/part-NNNNN-<run_id>.parquet`). The partition columns are taken out
//! of the rows written: readers get them back from the folder names, as from Spark's and
//! Hive's partitioned tables. With `sink.rejects`, also the worker's rejects part file
//! ([`RejectsSink`]).

use std::collections::HashMap;

use arrow::array::UInt32Array;
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use weir_connectors::ConnectorError;
use weir_connectors::chunk_copy::BatchOrigin;
use weir_connectors::fetched_chunks::FetchedChunks;
use weir_connectors::parquet_sink::{PartFile, PartWriter};
use weir_connectors::partitions::row_folders;

use crate::plan::EnginePlan;

/// The most partition folders one worker writes into in one run: each open part file
/// buffers a row group.
pub const MAX_OPEN_PARTITIONS: usize = 512;

/// A part file a worker staged: its partition folder (`""` without `partition_by`) and
/// the file, its path relative to the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagedPart {
    pub folder: String,
    pub part: PartFile,
}

/// The open part files of one worker.
pub struct WorkerSink {
    worker: usize,
    writers: Vec<(String, PartWriter)>,
    by_folder: HashMap<String, usize>,
}

impl WorkerSink {
    pub fn new(worker: usize) -> WorkerSink {
        WorkerSink { worker, writers: Vec::new(), by_folder: HashMap::new() }
    }

    /// Appends `batch` (of the plan's output schema), rows of shard `shard`, to the part
    /// files of its rows' partition folders, opening them as needed. `fetched`: the
    /// shard's column chunks, on its first batch when the part files copy them.
    pub async fn write(
        &mut self,
        plan: &EnginePlan,
        batch: &RecordBatch,
        shard: usize,
        fetched: Option<&FetchedChunks>,
    ) -> Result<(), ConnectorError> {
        if plan.partition_by.is_empty() {
            // After an aggregate, rows come from no source shard (and copy no chunk).
            let origin =
                plan.shards.get(shard).map(|shard| BatchOrigin { source: plan.source.as_ref(), shard, fetched });
            return self.writer(plan, "")?.write(batch, origin).await;
        }
        let invalid =
            |e: arrow::error::ArrowError| ConnectorError::Invalid { uri: plan.sink.uri(), message: e.to_string() };
        let keys: Vec<_> = plan
            .partition_by
            .iter()
            .map(|name| {
                batch.column_by_name(name).cloned().ok_or_else(|| ConnectorError::Invalid {
                    uri: plan.sink.uri(),
                    message: format!("the rows written lack the partition column '{name}'"),
                })
            })
            .collect::<Result<_, _>>()?;
        let folders = row_folders(&plan.partition_by, &keys).map_err(invalid)?;
        let stored: Vec<usize> = batch
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, field)| !plan.partition_by.contains(field.name()))
            .map(|(index, _)| index)
            .collect();
        let data = batch.project(&stored).map_err(invalid)?;
        // Rows grouped by folder, folders in the order their first row comes.
        let mut groups: Vec<(&str, Vec<u32>)> = Vec::new();
        let mut group_of: HashMap<&str, usize> = HashMap::new();
        for (row, folder) in folders.iter().enumerate() {
            let group = *group_of.entry(folder.as_str()).or_insert_with(|| {
                groups.push((folder.as_str(), Vec::new()));
                groups.len() - 1
            });
            groups[group].1.push(row as u32);
        }
        for (folder, rows) in groups {
            let part = if rows.len() == data.num_rows() {
                data.clone()
            } else {
                take_record_batch(&data, &UInt32Array::from(rows)).map_err(invalid)?
            };
            self.writer(plan, folder)?.write(&part, None).await?;
        }
        Ok(())
    }

    fn writer(&mut self, plan: &EnginePlan, folder: &str) -> Result<&mut PartWriter, ConnectorError> {
        let index = match self.by_folder.get(folder) {
            Some(&index) => index,
            None => {
                if self.writers.len() >= MAX_OPEN_PARTITIONS {
                    return Err(ConnectorError::Invalid {
                        uri: plan.sink.uri(),
                        message: format!(
                            "one worker's rows fall into more than {MAX_OPEN_PARTITIONS} partition folders of sink.partition_by = {:?}; partition by columns with fewer distinct values",
                            plan.partition_by
                        ),
                    });
                }
                let name = plan.staged_part_name(self.worker, folder);
                let identity = plan.part_name(self.worker, folder);
                let writer =
                    PartWriter::create(&plan.sink, &name, &identity, plan.file_schema.clone(), &plan.part_options)?;
                self.writers.push((folder.to_string(), writer));
                self.by_folder.insert(folder.to_string(), self.writers.len() - 1);
                self.writers.len() - 1
            }
        };
        Ok(&mut self.writers[index].1)
    }

    /// Completes every part file.
    pub async fn finish(self) -> Result<Vec<StagedPart>, ConnectorError> {
        let mut parts = Vec::with_capacity(self.writers.len());
        for (folder, writer) in self.writers {
            parts.push(StagedPart { folder, part: writer.finish().await? });
        }
        Ok(parts)
    }

    /// Abandons every part file (a failed pass).
    pub async fn abort(self) {
        for (_, writer) in self.writers {
            writer.abort().await;
        }
    }
}

/// A worker's part file of the rejects output (`sink.rejects`), opened at its first
/// rejected row, staged under the rejects output's own `_weir/runs/<attempt>/`.
pub struct RejectsSink {
    worker: usize,
    writer: Option<PartWriter>,
}

impl RejectsSink {
    pub fn new(worker: usize) -> RejectsSink {
        RejectsSink { worker, writer: None }
    }

    /// Appends rejected rows (of the rejects layout's schema).
    pub async fn write(&mut self, plan: &EnginePlan, batch: &RecordBatch) -> Result<(), ConnectorError> {
        let Some(rejects) = &plan.rejects else {
            return Err(ConnectorError::Invalid {
                uri: plan.sink.uri(),
                message: "rows were rejected but the job has no sink.rejects".into(),
            });
        };
        let writer = match &mut self.writer {
            Some(writer) => writer,
            empty => empty.insert(PartWriter::create(
                &rejects.output,
                &plan.staged_part_name(self.worker, ""),
                &plan.part_name(self.worker, ""),
                rejects.layout.schema(),
                &rejects.part_options,
            )?),
        };
        writer.write(batch, None).await
    }

    /// Completes the part file, if any row was rejected.
    pub async fn finish(self) -> Result<Option<PartFile>, ConnectorError> {
        match self.writer {
            Some(writer) => Ok(Some(writer.finish().await?)),
            None => Ok(None),
        }
    }

    /// Abandons the part file (a failed pass).
    pub async fn abort(self) {
        if let Some(writer) = self.writer {
            writer.abort().await;
        }
    }
}
