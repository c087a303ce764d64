//! The output commit protocol. It needs no renames that are atomic across files and no
//! conditional puts, so it works on every S3-compatible store:
//!
//! 1. The run takes the prefix's [`Lease`](crate::lease::Lease): at most one run holds a
//!    prefix at a time.
//! 2. [`prepare_output`] checks the prefix against `sink.mode`: with `error_if_exists`, any
//!    visible object or a manifest is an error; with `overwrite`, every visible object must
//!    be recorded in the committed manifest (unless forced), and that manifest is kept to
//!    know what to delete; `append` checks the same and keeps that manifest to extend it.
//!    Nothing is deleted yet.
//! 3. Workers write their part files under the run's own hidden directory
//!    `_weir/runs/<attempt>/`, which no Parquet reader looks into (a `_` path component).
//! 4. [`commit`] (once, after every worker reported success, with the lease checked):
//!    writes the decision, `_weir/runs/<attempt>/commit.json` (the new manifest, the
//!    fitted parameters, the files to delete and the files to publish), then [`publish`]es
//!    it: delete `_SUCCESS`, delete the previous output's files by their recorded names,
//!    move the staged files to `part-NNNNN-<run_id>.parquet`, write `_weir/fitted.json`,
//!    `_weir/manifest.json` and `_SUCCESS` last, and delete the decision.
//! 5. A run that fails or is cancelled deletes its own directory and nothing else.
//!
//! A run with a rejects output (`sink.rejects`) holds both prefixes' leases and commits
//! both as one: see [`commit`].
//!
//! Readers see the previous output, untouched, until publishing starts; publishing is a
//! few metadata operations (local renames, or server-side copies on S3). A run killed while
//! publishing leaves its decision behind, and the next run to take the lease completes
//! that publication before anything else (every step is idempotent).

use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::lease::Lease;
use crate::lease::remove_attempt;
use crate::listing::list_all;
use crate::manifest::Manifest;
use crate::objects::{delete_objects, read_json};
pub use crate::publication::{
    COMMIT_FILE, CommitRecord, FITTED_FILE, LinkedDecision, MANIFEST_FILE, RUNS_DIR, SUCCESS_FILE, decision_path,
    publish,
};
use crate::publication::{exists, put};
use crate::{ConnectorError, Location};

/// What to do when the output prefix already holds objects (`sink.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// Refuse to run (Spark's default).
    #[default]
    ErrorIfExists,
    /// Replace the committed output.
    Overwrite,
    /// Add this run's part files to the committed output, leaving its files in place, and
    /// commit a new manifest generation listing both (Spark's `append`).
    Append,
}

/// The relative path of every visible object under `output` (no `_` or `.` component).
fn relative(output: &Location, path: &Path) -> String {
    path.prefix_match(output.path())
        .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"))
        .unwrap_or_else(|| path.to_string())
}

fn is_hidden(relative: &str) -> bool {
    relative.split('/').any(|part| part.starts_with(['_', '.']))
}

/// Step 2 of the protocol, run while holding the lease; see the module documentation.
/// Returns the manifest of the output being replaced, if any. With `force`, visible
/// objects that no manifest records are allowed (and left in place).
pub async fn prepare_output(
    output: &Location,
    mode: WriteMode,
    force: bool,
) -> Result<Option<Manifest>, ConnectorError> {
    let objects = list_all(output, output.path()).await?;
    let visible: Vec<String> =
        objects.iter().map(|meta| relative(output, &meta.location)).filter(|name| !is_hidden(name)).collect();
    let manifest: Option<Manifest> = read_json(output, &output.join(MANIFEST_FILE)).await?;
    let success = objects.iter().any(|meta| meta.location == output.join(SUCCESS_FILE));
    match mode {
        WriteMode::ErrorIfExists => {
            let object = visible
                .first()
                .cloned()
                .or_else(|| success.then(|| SUCCESS_FILE.to_string()))
                .or_else(|| manifest.is_some().then(|| MANIFEST_FILE.to_string()));
            match object {
                Some(object) => Err(ConnectorError::OutputExists { uri: output.uri(), object }),
                None => Ok(None),
            }
        }
        WriteMode::Overwrite | WriteMode::Append => {
            let recorded: Vec<&str> = manifest.iter().flat_map(|m| m.files.iter().map(|f| f.path.as_str())).collect();
            if let Some(foreign) = visible.iter().find(|name| !recorded.contains(&name.as_str())) {
                if !force {
                    return Err(ConnectorError::ForeignObject { uri: output.uri(), object: foreign.clone() });
                }
                tracing::warn!(uri = %output.uri(), object = %foreign, "--force: writing beside objects Weir did not write; they are left in place");
            }
            Ok(manifest)
        }
    }
}

/// A commit that failed, and whether it failed after its decision was written (the
/// decision then stays, for the next run on the prefix to complete).
#[derive(Debug)]
pub struct CommitFailure {
    pub error: ConnectorError,
    pub decided: bool,
}

/// The rejects output (`sink.rejects`) a run commits with its main output: the lease the run
/// holds on it and what to publish there.
pub struct RejectsCommit<'a> {
    pub output: &'a Location,
    pub lease: &'a Lease,
    pub record: CommitRecord,
}

/// Step 4 of the protocol: records the decision under the lease's directory, publishes it,
/// and removes the decision.
///
/// With a rejects output, two prefixes commit as one. The rejects output's decision is
/// written first, as a *conditional* one naming the main output's decision
/// ([`CommitRecord::condition`]); then the main output's decision, naming the rejects one
/// ([`CommitRecord::rejects`]), is the commit point. Publication goes main, then rejects;
/// the rejects decision is removed before the main one, so that while a conditional
/// decision exists, the main decision it names exists if and only if the run committed.
/// Whoever next holds either prefix resolves a dead run's decisions by that rule
/// ([`crate::lease`]): on the rejects prefix, publish if the main decision exists, else
/// discard; on the main prefix, publish, then take the rejects prefix's lease (whose
/// clean-up publishes the rejects) before removing the main decision.
pub async fn commit(
    output: &Location,
    lease: &Lease,
    record: &CommitRecord,
    rejects: Option<RejectsCommit<'_>>,
) -> Result<(), CommitFailure> {
    let undecided = |error| CommitFailure { error, decided: false };
    let mut main = record.clone();
    let rejects = rejects.map(|rejects| {
        main.rejects = Some(LinkedDecision::new(rejects.output, rejects.lease.attempt()));
        let mut record = rejects.record;
        record.condition = Some(LinkedDecision::new(output, lease.attempt()));
        (rejects.output, rejects.lease, record)
    });
    lease.check().await.map_err(undecided)?;
    if let Some((rejects_output, rejects_lease, rejects_record)) = &rejects {
        rejects_lease.check().await.map_err(undecided)?;
        let decision = decision_path(rejects_output, rejects_lease.attempt());
        put(rejects_output, &decision, to_json(rejects_output, rejects_record).map_err(undecided)?)
            .await
            .map_err(undecided)?;
        fail::fail_point!("rejects-prepared");
    }
    let decision = decision_path(output, lease.attempt());
    put(output, &decision, to_json(output, &main).map_err(undecided)?).await.map_err(undecided)?;
    fail::fail_point!("commit-decided");
    let decided = |error| CommitFailure { error, decided: true };
    publish(output, &main).await.map_err(decided)?;
    if let Some((rejects_output, rejects_lease, rejects_record)) = &rejects {
        fail::fail_point!("main-published");
        publish(rejects_output, rejects_record).await.map_err(decided)?;
        let rejects_decision = decision_path(rejects_output, rejects_lease.attempt());
        delete_objects(rejects_output, &[rejects_decision]).await.map_err(decided)?;
    }
    delete_objects(output, &[decision]).await.map_err(decided)
}

fn to_json(output: &Location, record: &CommitRecord) -> Result<Vec<u8>, ConnectorError> {
    serde_json::to_vec_pretty(record).map_err(|e| ConnectorError::Invalid { uri: output.uri(), message: e.to_string() })
}

/// Completes the commit that `attempt` decided, if it decided one: what a launcher (or the
/// service, after a restart) does when the process that was publishing died. A rejects
/// output committed with it is completed too, and its attempt's directory removed. Returns
/// the committed manifest. A rejects output's conditional decision whose main output did not
/// decide is not a commit (`None`).
pub async fn complete_decided(output: &Location, attempt: &str) -> Result<Option<Manifest>, ConnectorError> {
    let decision = decision_path(output, attempt);
    let Some(record) = read_json::<CommitRecord>(output, &decision).await? else { return Ok(None) };
    if let Some(main) = &record.condition
        && !main.is_decided(output).await?
    {
        return Ok(None);
    }
    publish(output, &record).await?;
    if let Some(link) = &record.rejects {
        let rejects = link.output(output)?;
        if let Some(linked) = read_json::<CommitRecord>(&rejects, &decision_path(&rejects, &link.attempt)).await? {
            publish(&rejects, &linked).await?;
        }
        remove_attempt(&rejects, &link.attempt).await?;
    }
    delete_objects(output, &[decision]).await?;
    Ok(Some(record.manifest))
}

/// Checks, under the lease, that appending `new_files` with `schema` to the committed
/// output `previous` is sound: the schemas are equal (column names, types and
/// nullability, in order), and the committed files include none of run `run_id` (part
/// files are named `part-NNNNN-<run_id>.parquet`, so publishing a run id used twice would
/// replace committed files).
pub fn check_append(
    output: &Location,
    previous: &Manifest,
    schema: &[crate::manifest::ColumnInfo],
    partition_by: &[String],
    run_id: &str,
    encryption: Option<&crate::encryption::SinkEncryption>,
) -> Result<(), ConnectorError> {
    let conflict = |message: String| Err(ConnectorError::AppendConflict { uri: output.uri(), message });
    if previous.encryption.as_ref() != encryption {
        let describe = |e: Option<&crate::encryption::SinkEncryption>| match e {
            None => "no encryption".to_string(),
            Some(e) => format!("encryption under keys {:?}", e.key_ids()),
        };
        return conflict(format!(
            "the committed output has {}, this run would add files with {}; append with the same [sink.encryption]",
            describe(previous.encryption.as_ref()),
            describe(encryption)
        ));
    }
    if previous.schema.len() != schema.len() {
        let names = |columns: &[crate::manifest::ColumnInfo]| {
            columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
        };
        return conflict(format!(
            "the committed output has the columns [{}], this run writes [{}]",
            names(&previous.schema),
            names(schema)
        ));
    }
    for (committed, new) in previous.schema.iter().zip(schema) {
        if committed != new {
            return conflict(format!(
                "the committed output's column '{}' is {} (nullable: {}), this run writes '{}' as {} (nullable: {})",
                committed.name, committed.data_type, committed.nullable, new.name, new.data_type, new.nullable
            ));
        }
    }
    if previous.partition_by != partition_by {
        return conflict(format!(
            "the committed output is partitioned by {:?}, this run by {partition_by:?}",
            previous.partition_by
        ));
    }
    let suffix = format!("-{run_id}.parquet");
    let file_name = |path: &str| path.rsplit('/').next().unwrap_or_default().to_string();
    if let Some(taken) =
        previous.files.iter().find(|f| file_name(&f.path).starts_with("part-") && f.path.ends_with(&suffix))
    {
        return conflict(format!(
            "it already holds '{}' from a run with the id '{run_id}'; give this run another run id",
            taken.path
        ));
    }
    Ok(())
}

/// Whether the output at `output` is committed (has `_SUCCESS`).
pub async fn is_committed(output: &Location) -> Result<bool, ConnectorError> {
    exists(output, &output.join(SUCCESS_FILE)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StorageOptions;
    use crate::claim::Claim;
    use crate::lease::DEFAULT_LEASE_TTL;
    use crate::manifest::{ClusterInfo, JobInfo, MANIFEST_FORMAT_VERSION};
    use crate::parquet_sink::PartFile;
    use crate::test_support::touch;

    fn manifest(run_id: &str, files: &[&str]) -> Manifest {
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            weir_version: "test".into(),
            job: JobInfo { name: "t".into(), sha256: String::new() },
            run_id: run_id.into(),
            variables: Default::default(),
            committed_at: String::new(),
            inputs: vec![],
            other_inputs: vec![],
            files: files.iter().map(|f| PartFile { path: f.to_string(), rows: 1, bytes: 1 }).collect(),
            rows: files.len() as u64,
            bytes: files.len() as u64,
            schema: vec![],
            cluster: ClusterInfo { processes: 1, workers_per_process: 1 },
            models: vec![],
            stages: vec![],
            passes: 1,
            checks: vec![],
            rejects: None,
            partition_by: vec![],
            generation: 1,
            ledger: vec![],
            encryption: None,
        }
    }

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut out: Vec<String> =
            walk(dir).into_iter().map(|p| p.strip_prefix(dir).unwrap().display().to_string()).collect();
        out.sort();
        out
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = vec![];
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                out.extend(walk(&entry.path()));
            } else {
                out.push(entry.path());
            }
        }
        out
    }

    #[tokio::test]
    async fn error_if_exists_names_an_object_and_overwrite_needs_recorded_files() {
        let dir = tempfile::tempdir().unwrap();
        let output = Location::parse(dir.path().to_str().unwrap(), &StorageOptions::default()).unwrap();
        assert_eq!(prepare_output(&output, WriteMode::ErrorIfExists, false).await.unwrap(), None);
        touch(dir.path(), "part-00000-old.parquet");
        touch(dir.path(), "_SUCCESS");
        std::fs::create_dir_all(dir.path().join("_weir")).unwrap();
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            serde_json::to_vec(&manifest("old", &["part-00000-old.parquet"])).unwrap(),
        )
        .unwrap();
        let err = prepare_output(&output, WriteMode::ErrorIfExists, false).await.unwrap_err();
        assert!(err.to_string().contains("part-00000-old.parquet") && err.is_user_error(), "{err}");
        let previous = prepare_output(&output, WriteMode::Overwrite, false).await.unwrap().unwrap();
        assert_eq!(previous.run_id, "old");
        touch(dir.path(), "notes.txt");
        let err = prepare_output(&output, WriteMode::Overwrite, false).await.unwrap_err();
        assert!(err.to_string().contains("notes.txt") && err.is_user_error(), "{err}");
        assert!(prepare_output(&output, WriteMode::Overwrite, true).await.is_ok());
        assert!(dir.path().join("notes.txt").exists());
    }

    #[tokio::test]
    async fn commit_replaces_exactly_the_recorded_files_and_publish_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let output = Location::parse(dir.path().to_str().unwrap(), &StorageOptions::default()).unwrap();
        touch(dir.path(), "part-00000-old.parquet");
        touch(dir.path(), "part-00000-other.parquet");
        touch(dir.path(), "_SUCCESS");
        let lease = Lease::acquire(&output, Claim::new("new", "new.00000001", DEFAULT_LEASE_TTL)).await.unwrap();
        touch(dir.path(), "_weir/runs/new.00000001/part-00000.parquet");
        let record = CommitRecord {
            rejects: None,
            condition: None,
            manifest: manifest("new", &["part-00000-new.parquet"]),
            fitted: None,
            fitted_staged: None,
            delete: vec!["part-00000-old.parquet".into()],
            publish: vec![("_weir/runs/new.00000001/part-00000.parquet".into(), "part-00000-new.parquet".into())],
        };
        commit(&output, &lease, &record, None).await.unwrap();
        lease.release().await;
        assert_eq!(
            names(dir.path()),
            ["_SUCCESS", "_weir/manifest.json", "part-00000-new.parquet", "part-00000-other.parquet"]
        );
        publish(&output, &record).await.unwrap();
        assert!(dir.path().join("part-00000-new.parquet").exists());
    }

    #[tokio::test]
    async fn publish_removes_what_a_killed_put_left_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let output = Location::parse(dir.path().to_str().unwrap(), &StorageOptions::default()).unwrap();
        touch(dir.path(), "_weir/manifest.json#1");
        touch(dir.path(), "_SUCCESS#12");
        touch(dir.path(), "_weir/manifest.json#notes");
        touch(dir.path(), "_weir/runs/r.00000001/part-00000.parquet");
        let record = CommitRecord {
            rejects: None,
            condition: None,
            manifest: manifest("r", &["part-00000-r.parquet"]),
            fitted: None,
            fitted_staged: None,
            delete: vec![],
            publish: vec![("_weir/runs/r.00000001/part-00000.parquet".into(), "part-00000-r.parquet".into())],
        };
        publish(&output, &record).await.unwrap();
        assert!(!dir.path().join("_weir/manifest.json#1").exists());
        assert!(!dir.path().join("_SUCCESS#12").exists());
        assert!(dir.path().join("_weir/manifest.json#notes").exists(), "not a put's leftover: kept");
        assert!(dir.path().join("_SUCCESS").exists() && dir.path().join("_weir/manifest.json").exists());
    }

    fn staged_record(run_id: &str, attempt: &str) -> CommitRecord {
        CommitRecord {
            rejects: None,
            condition: None,
            manifest: manifest(run_id, &[&format!("part-00000-{run_id}.parquet")]),
            fitted: None,
            fitted_staged: None,
            delete: vec![],
            publish: vec![(format!("{RUNS_DIR}/{attempt}/part-00000.staged"), format!("part-00000-{run_id}.parquet"))],
        }
    }

    /// A launcher completing a run killed after its main decision publishes the rejects
    /// output too (its conditional decision holds), and removes the rejects attempt; a
    /// conditional decision whose main output never decided is no commit.
    #[tokio::test]
    async fn completing_a_decided_commit_completes_its_rejects_output() {
        let dir = tempfile::tempdir().unwrap();
        let local = |name: &str| Location::parse(dir.path().join(name).to_str().unwrap(), &StorageOptions::default());
        let (main, rejects) = (local("main").unwrap(), local("rejects").unwrap());
        let attempt = "r.00000001";
        for name in ["main", "rejects"] {
            touch(&dir.path().join(name), &format!("{RUNS_DIR}/{attempt}/part-00000.staged"));
            touch(&dir.path().join(name), &format!("{RUNS_DIR}/{attempt}/claim.json"));
        }
        let put_record = |output: &Location, record: &CommitRecord| {
            let path = output.local_file(&decision_path(output, attempt)).unwrap();
            std::fs::write(path, serde_json::to_vec(record).unwrap()).unwrap();
        };
        let conditional =
            CommitRecord { condition: Some(LinkedDecision::new(&main, attempt)), ..staged_record("r", attempt) };
        put_record(&rejects, &conditional);
        // The main output never decided: the conditional decision is no commit.
        assert_eq!(complete_decided(&rejects, attempt).await.unwrap(), None);
        assert_eq!(complete_decided(&main, attempt).await.unwrap(), None);
        assert!(!dir.path().join("rejects/_SUCCESS").exists());

        let decided =
            CommitRecord { rejects: Some(LinkedDecision::new(&rejects, attempt)), ..staged_record("r", attempt) };
        put_record(&main, &decided);
        let manifest = complete_decided(&main, attempt).await.unwrap().unwrap();
        assert_eq!(manifest.run_id, "r");
        for name in ["main", "rejects"] {
            let names = names(&dir.path().join(name));
            assert!(
                names.contains(&"part-00000-r.parquet".to_string()) && names.contains(&"_SUCCESS".to_string()),
                "{name}: {names:?}"
            );
        }
        assert!(!dir.path().join(format!("rejects/{RUNS_DIR}/{attempt}")).exists(), "the rejects attempt is removed");
        assert!(!dir.path().join(format!("main/{RUNS_DIR}/{attempt}/{COMMIT_FILE}")).exists());
    }

    /// A decision that an earlier build recorded for run id `v1.` (`part-00000-v1..parquet`)
    /// is carried out, and a record with a traversing name deletes nothing.
    #[tokio::test]
    async fn publish_checks_every_name_before_deleting_anything() {
        let dir = tempfile::tempdir().unwrap();
        let output = Location::parse(dir.path().to_str().unwrap(), &StorageOptions::default()).unwrap();
        touch(dir.path(), "part-00000-old.parquet");
        touch(dir.path(), "_SUCCESS");
        touch(dir.path(), "_weir/runs/v1..00000001/part-00000.parquet");
        let bad = CommitRecord {
            rejects: None,
            condition: None,
            manifest: manifest("x", &["part-00000-x.parquet"]),
            fitted: None,
            fitted_staged: None,
            delete: vec!["part-00000-old.parquet".into()],
            publish: vec![
                ("_weir/runs/v1..00000001/part-00000.parquet".into(), "part-00000-x.parquet".into()),
                ("_weir/runs/../../part-00000.parquet".into(), "part-00001-x.parquet".into()),
            ],
        };
        let err = publish(&output, &bad).await.unwrap_err();
        assert!(err.to_string().contains("nothing was deleted"), "{err}");
        assert_eq!(
            names(dir.path()),
            ["_SUCCESS", "_weir/runs/v1..00000001/part-00000.parquet", "part-00000-old.parquet"]
        );
        let wedged = CommitRecord {
            rejects: None,
            condition: None,
            manifest: manifest("v1.", &["part-00000-v1..parquet"]),
            fitted: None,
            fitted_staged: None,
            delete: vec!["part-00000-old.parquet".into()],
            publish: vec![("_weir/runs/v1..00000001/part-00000.parquet".into(), "part-00000-v1..parquet".into())],
        };
        publish(&output, &wedged).await.unwrap();
        assert_eq!(names(dir.path()), ["_SUCCESS", "_weir/manifest.json", "part-00000-v1..parquet"]);
    }
}
