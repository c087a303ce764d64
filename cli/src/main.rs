//! The `weir` command: run, validate and inspect jobs and datasets; run the job service
//! (`serve`) and talk to it (`submit`, `runs`, `status`, `logs`, `cancel`, `jobs`).
//!
//! Exit codes: 0 success; 1 the job failed (a store, the cluster, or Weir itself);
//! 2 bad input (the job file, its source data, the arguments); 4 the input is not there yet.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use weir_engine::{ClusterSetup, FailureKind, JobFailure, ProcessContext, Progress, RunSummary, execute};
use weir_jobs::kubernetes::KubernetesCluster;
use weir_jobs::launcher::{ChildEvent, EventSink, LaunchPlan, join_local_cluster, launch_local, watch_launcher};
use weir_jobs::planning::{LoadedJob, RunOptions, load_job, plan_job};
use weir_jobs::report::{OutputMode, ProgressView, SummaryReport};
use weir_jobs::signals::Stop;
use weir_jobs::vars::{Variables, parse_pair};
use weir_jobs::{JobError, inspect};

#[derive(Parser)]
#[command(name = "weir", version, about = "Batch preprocessing and inference over Parquet datasets")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines look on stderr: text, or json (one object per line, for log
    /// collectors). Which lines: RUST_LOG (default `warn`, `info` for `weir serve`), e.g.
    /// RUST_LOG=info or RUST_LOG=weir_engine=debug.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(clap::Args)]
struct RunOutput {
    /// Print nothing but errors.
    #[arg(long)]
    quiet: bool,
    /// Print the end-of-run summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// After the summary, print where the time went, stage by stage.
    #[arg(long)]
    metrics: bool,
    /// Off a terminal (cron, a service's log), print a progress line every this many
    /// seconds (shards, rows, rows/s, time left).
    #[arg(long, default_value_t = 10)]
    progress_every_s: u64,
    /// Write the run's outcome (succeeded, failed with its class, cancelled) as JSON to this
    /// file when the run ends (the job service reads it).
    #[arg(long, value_name = "PATH")]
    result_file: Option<String>,
    /// Resolve relative paths in the job against this folder instead of the job file's
    /// (the job service runs stored jobs from its own working directory).
    #[arg(long, value_name = "DIR")]
    base_dir: Option<String>,
}

impl RunOutput {
    fn mode(&self) -> OutputMode {
        OutputMode {
            quiet: self.quiet || self.json,
            json: self.json,
            metrics: self.metrics,
            progress_every: Duration::from_secs(self.progress_every_s),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a job here: P local processes x N worker threads.
    Run {
        /// The job's TOML file.
        job: String,
        /// Worker threads per process (default: the cores divided by the processes, at least 1).
        #[arg(long, short = 'w')]
        workers: Option<usize>,
        /// Local processes forming one cluster on 127.0.0.1.
        #[arg(long, short = 'p', default_value_t = 1)]
        processes: usize,
        /// Set a variable used as {{key}} in the job (repeatable).
        #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_pair)]
        vars: Vec<(String, String)>,
        /// Read more variables from this JSON object of strings (the job service passes a
        /// run's variables this way, off the command line that every local user can read).
        #[arg(long, value_name = "PATH", hide = true)]
        vars_file: Option<String>,
        /// DANGEROUS: let mode = "overwrite" write into a filesystem or bucket root, a home
        /// directory, a directory holding the source, the job file or the working directory,
        /// or beside files no manifest records. Weir still deletes only files it recorded.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        output: RunOutput,
    },
    /// Run one process of a multi-host cluster (start one per line of the hostfile).
    Worker {
        /// The job's TOML file (the same on every process).
        job: String,
        /// One host:port per line, one line per process, in process order; or `kubernetes`:
        /// built from the environment of a Kubernetes Indexed Job (see `weir hostfile`).
        #[arg(long, required_unless_present = "local_cluster")]
        hostfile: Option<String>,
        /// This process's index (its line in the hostfile, from 0); with `--hostfile
        /// kubernetes`, JOB_COMPLETION_INDEX.
        #[arg(long, required_unless_present = "hostfile")]
        process: Option<usize>,
        /// Worker threads in this process (default: the cores, as for `weir run`). Every
        /// process of a cluster must run as many: a process with another count is refused.
        #[arg(long, short = 'w')]
        workers: Option<usize>,
        /// Set a variable used as {{key}} in the job (repeatable; the same on every process).
        #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_pair)]
        vars: Vec<(String, String)>,
        /// DANGEROUS: skip the overwrite guards (see `weir run --help`); pass it to every process.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        output: RunOutput,
        /// Started by `weir run --processes`: talk to the launcher on stdin/stdout.
        #[arg(long, hide = true)]
        local_cluster: bool,
        #[arg(long, hide = true)]
        processes: Option<usize>,
        /// The attempt id the launcher chose.
        #[arg(long, hide = true)]
        attempt: Option<String>,
    },
    /// Print the hostfile that a Kubernetes Indexed Job's environment describes
    /// (JOB_COMPLETION_INDEX, WEIR_PROCESSES, WEIR_JOB_NAME, WEIR_CLUSTER_SERVICE,
    /// WEIR_NAMESPACE, WEIR_CLUSTER_PORT): what `weir worker --hostfile kubernetes` uses.
    Hostfile,
    /// Run only a job's fitting passes and write its fitted parameters (fitted.json) to a
    /// file, for later runs to reuse with `fitted = "FILE"`; prints their SHA-256, which a
    /// `score` step's `fitted_sha256` pins a model to.
    Fit {
        /// The job's TOML file.
        job: String,
        /// Where to write fitted.json: a path, file:// or s3:// URI.
        #[arg(long, short = 'o')]
        output: String,
        /// Replace the file if it exists.
        #[arg(long)]
        overwrite: bool,
        /// Worker threads (default: the cores).
        #[arg(long, short = 'w')]
        workers: Option<usize>,
        /// Set a variable used as {{key}} in the job (repeatable).
        #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_pair)]
        vars: Vec<(String, String)>,
    },
    /// Check a job (spec, variables, source schema, steps) without running it.
    Validate {
        /// The job's TOML file.
        job: String,
        /// Set a variable used as {{key}} in the job (repeatable).
        #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_pair)]
        vars: Vec<(String, String)>,
        /// Check it as the job service will store and run it (its working directory, its
        /// keys and stores, your token's grants) instead of here; stores nothing.
        #[arg(long)]
        as_service: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the objects under a URI and whether it is a committed output.
    Ls {
        /// An output prefix or any folder: a path, file:// or s3://.
        uri: String,
        /// Print the output's status as one JSON object: committed, uncommitted,
        /// in_progress (with the holder) or not_a_weir_output.
        #[arg(long)]
        json: bool,
        /// Exit with code 3 unless the URI is a committed output.
        #[arg(long)]
        require_committed: bool,
    },
    /// Print the first rows of a dataset.
    Head {
        /// A Parquet file, a prefix or a glob: a path, file:// or s3://.
        uri: String,
        /// How many rows.
        #[arg(short = 'n', default_value_t = 10)]
        rows: usize,
    },
    /// Print the schema of a dataset.
    Schema {
        /// A Parquet file, a prefix or a glob: a path, file:// or s3://.
        uri: String,
    },
    /// Run the job service: an HTTP API to store jobs, submit, follow and cancel runs.
    Serve {
        /// Where the service keeps its database, tokens and run logs.
        #[arg(long, default_value = "weir-service")]
        state_dir: String,
        /// Address to listen on (port 0: any free port). Loopback unless told otherwise.
        #[arg(long, default_value = "127.0.0.1:8470")]
        listen: std::net::SocketAddr,
        /// Write the bound address (http://HOST:PORT, https:// with TLS) to this file once listening.
        #[arg(long)]
        address_file: Option<String>,
        /// Runs at once; the rest wait in the queue.
        #[arg(long, default_value_t = 2)]
        max_concurrent_runs: usize,
        /// Seconds a cancelled run has to stop after SIGTERM before SIGKILL.
        #[arg(long, default_value_t = 30)]
        cancel_grace_s: u64,
        /// Another host name the service answers to (the Host header; repeatable).
        #[arg(long = "allow-host", value_name = "HOST")]
        allow_hosts: Vec<String>,
        /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<String>,
        /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<String>,
        /// Seconds that checking one submitted definition (spec, source footers, model) may
        /// take; a check runs in a child process, killed at this deadline.
        #[arg(long, default_value_t = 30)]
        check_timeout_s: u64,
        /// An S3 endpoint that a definition from a non-admin token may name in `[storage]
        /// endpoint` (repeatable; AWS_ENDPOINT_URL is always allowed). Any other is refused,
        /// so no token can make the service send its credentials elsewhere.
        #[arg(long = "allow-endpoint", value_name = "URL")]
        allowed_endpoints: Vec<String>,
        /// Storage profiles (a TOML file of named stores with their endpoints, credentials'
        /// environment variables and prefixes): definitions from non-admin tokens then reach
        /// object stores through a profile only.
        #[arg(long, value_name = "FILE")]
        storage_profiles: Option<String>,
        /// Testing aid: the schedules read the time (RFC 3339) from this file.
        #[arg(long, hide = true)]
        clock_file: Option<String>,
    },
    /// The job service's definition checker: a request as JSON on stdin, the answer on stdout.
    #[command(hide = true)]
    CheckDefinition,
    /// Submit a run to the job service: a job file (sent inline) or a stored job's name.
    Submit {
        /// A job's TOML file, or the name of a job stored in the service.
        job: String,
        #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_pair)]
        vars: Vec<(String, String)>,
        /// A stored job's version (default: its current one).
        #[arg(long)]
        version: Option<i64>,
        /// Submitting again with the same key returns the same run instead of a new one.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Wait for the run to end, following the attempts the service retries it with; exit
        /// with the last attempt's outcome: 0 if it succeeded, 2 if it failed on bad input, 4
        /// if its input was not ready, 130 if cancelled, 1 otherwise.
        #[arg(long)]
        wait: bool,
        /// Print the run as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the service's runs, newest first.
    Runs {
        /// Only the runs of this job.
        #[arg(long)]
        job: Option<String>,
        /// queued, running, succeeded, failed, cancelled or lost.
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show one run of the service.
    Status {
        /// The run's id.
        run: String,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a run's log; with --follow, until the run ends.
    Logs {
        /// The run's id.
        run: String,
        /// Keep printing until the run ends.
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Cancel a queued or running run.
    Cancel {
        /// The run's id.
        run: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run a stored job for a range of past dates (its schedule's ticks, or one a day).
    Backfill {
        /// The stored job's name.
        job: String,
        /// The first date (YYYY-MM-DD) whose data to process.
        #[arg(long)]
        from: String,
        /// The last date, included.
        #[arg(long)]
        to: String,
        /// Dates that already have a run: none (skip them), failed (run again those whose
        /// latest run failed, was cancelled or lost), all.
        #[arg(long, default_value = "none")]
        reprocess: String,
        /// Runs of this backfill queued or running at once.
        #[arg(long, default_value_t = 1)]
        max_active: usize,
        /// List the dates and what would run, and submit nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also run dates whose interval has not ended yet (today's, for a daily job), under
        /// keys of their own: the schedule still runs them, on complete data, when they end.
        #[arg(long)]
        include_incomplete: bool,
        /// Wait until every date's run (and its retries) has ended; print each date's last
        /// attempt and exit 0 only if all succeeded (else as `submit --wait` for the worst).
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Create, list and revoke the service's tokens (admin).
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List, pause and resume the schedules of stored jobs.
    Schedules {
        #[command(subcommand)]
        command: SchedulesCommand,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Store, list, show and roll back the service's job definitions.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Create a token; prints it once.
    Create {
        /// Its name (1 to 64 characters).
        name: String,
        /// read, submit or admin.
        #[arg(long)]
        role: String,
        /// Limit it to this job (repeatable; default: every job).
        #[arg(long = "job", value_name = "JOB")]
        jobs: Vec<String>,
        /// Limit its runs to this URI prefix (repeatable; default: anywhere the service reaches).
        #[arg(long = "prefix", value_name = "URI")]
        prefixes: Vec<String>,
        /// Limit its runs to this encryption key id (repeatable; default: every key the service holds).
        #[arg(long = "key", value_name = "ID")]
        keys: Vec<String>,
        /// Let it submit job definitions inline (a file sent whole); without it, only stored
        /// jobs by name. Admin tokens always may.
        #[arg(long)]
        inline: bool,
        /// Limit its definitions to this storage profile (repeatable; default: any).
        #[arg(long = "profile", value_name = "NAME")]
        profiles: Vec<String>,
    },
    /// List the live tokens (never their values).
    Ls,
    /// Revoke a token.
    Revoke {
        /// Its name.
        name: String,
    },
}

#[derive(Subcommand)]
enum SchedulesCommand {
    /// Each stored job's schedule: cron, time zone, paused, the last tick and the next ones.
    Ls,
    /// Pause a job's schedule (whatever its definition says): ticks are skipped until resumed.
    Pause {
        /// The stored job's name.
        job: String,
    },
    /// Resume a paused schedule: nothing fires before its next tick.
    Resume {
        /// The stored job's name.
        job: String,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Store a job file as the job's next version (validated first).
    Put {
        /// The job's TOML file.
        file: String,
        /// Variables to validate it with.
        #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_pair)]
        vars: Vec<(String, String)>,
    },
    /// List the stored jobs.
    List,
    /// Show a job's current definition and its versions.
    Show {
        /// The job's name.
        name: String,
    },
    /// List a job's versions, newest first (which is current, when and by whom stored).
    Versions {
        /// The job's name.
        name: String,
    },
    /// Make an earlier version the current one.
    Rollback {
        /// The job's name.
        name: String,
        /// The version to make current.
        version: i64,
    },
}

/// Where the job service is, and the token to use.
#[derive(clap::Args)]
struct ServerArgs {
    /// The service's address (default: $WEIR_SERVER, else http://127.0.0.1:8470).
    #[arg(long, global = true)]
    server: Option<String>,
    /// A bearer token (default: $WEIR_TOKEN).
    #[arg(long, global = true)]
    token: Option<String>,
    /// A file holding the bearer token.
    #[arg(long, global = true)]
    token_file: Option<String>,
    /// Trust the service's certificate through this CA (PEM) instead of the system's web roots
    /// (default: $WEIR_CA_CERT).
    #[arg(long, global = true)]
    ca_cert: Option<String>,
}

/// mimalloc returns freed memory to the system steadily. With glibc's malloc, the
/// per-thread arenas and the adaptive mmap threshold let a long run's resident memory
/// creep up with the number of batches (bench/README.md has the figures).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Test builds only (`--features failpoints`): FAILPOINTS=name=action;… pauses or fails
    // the process at named points, so that the end-to-end tests hit a moment for sure.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve { .. }) { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only on a terminal: a log file or a collector gets plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // A panic inside the Parquet decoder is caught at the reader and reported as a
        // corrupt file (weir_connectors::decoder_guard); any other is a bug.
        if weir_connectors::decoder_guard::in_parquet_decoder() {
            return;
        }
        // Timely's network threads panic with this prefix when a connection to another
        // process of the cluster breaks: a peer died, or the link went silent for longer
        // than weir_engine::cluster::PEER_SILENCE_LIMIT. Not a bug: the run stops.
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        // A reader that stopped reading (`weir head … | head`): nothing is wrong, and there is
        // no run to speak of. Ends quietly, as ripgrep does.
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        if message.starts_with("timely communication error") {
            eprintln!(
                "weir: error: lost the connection to another process of the cluster ({message}); the run stops, uncommitted (a commit it had already decided is completed by the next run on the output)"
            );
            std::process::exit(1);
        }
        default_hook(info);
        eprintln!("weir: internal error (a bug in Weir); the run was not committed");
        std::process::exit(1);
    }));

    let cli = match service_command(cli) {
        Ok(code) => return code,
        Err(cli) => *cli,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weir: cannot start the I/O runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let stop = Stop::install(&runtime);
    match dispatch(cli.command, &runtime, &stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("weir: error: {}", failure.message);
            let code = stop.exit_code().unwrap_or_else(|| failure.exit_code());
            ExitCode::from(code as u8)
        }
    }
}

/// Runs the service and client commands (which need no stop handling); hands back the
/// others.
fn service_command(cli: Cli) -> Result<ExitCode, Box<Cli>> {
    use weir_service::api_types::{
        BackfillReply, CheckedJob, CreatedToken, JobDetail, JobList, RunList, ScheduleList, StoredJob, TokenList,
    };
    use weir_service::client::{Client, describe_run, exit_code_of, submission};
    use weir_service::schedules::ScheduleInfo;
    use weir_service::store::Run;
    use weir_service::{ServeConfig, serve};
    let client = |server: ServerArgs| Client::new(server.server, server.token, server.token_file, server.ca_cert);
    fn print_json(value: &impl serde::Serialize) {
        println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
    }
    let outcome = match cli.command {
        Command::Serve {
            state_dir,
            listen,
            address_file,
            max_concurrent_runs,
            cancel_grace_s,
            allow_hosts,
            tls_cert,
            tls_key,
            check_timeout_s,
            allowed_endpoints,
            storage_profiles,
            clock_file,
        } => {
            let tls =
                tls_cert.zip(tls_key).map(|(cert, key)| weir_service::TlsFiles { cert: cert.into(), key: key.into() });
            let config = ServeConfig {
                state_dir: state_dir.into(),
                listen,
                address_file: address_file.map(Into::into),
                max_concurrent_runs,
                cancel_grace: Duration::from_secs(cancel_grace_s),
                allow_hosts,
                clock_file: clock_file.map(Into::into),
                tls,
                check_timeout: Duration::from_secs(check_timeout_s.max(1)),
                allowed_endpoints,
                storage_profiles: storage_profiles
                    .or_else(|| std::env::var(weir_connectors::profiles::PROFILES_ENV).ok().filter(|p| !p.is_empty()))
                    .map(Into::into),
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("weir: cannot start the I/O runtime: {e}");
                    return Ok(ExitCode::from(1));
                }
            };
            return Ok(match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    eprintln!("weir: error: {message}");
                    ExitCode::from(1)
                }
            });
        }
        Command::CheckDefinition => return Ok(weir_service::definition_check::child_main()),
        Command::Submit { job, vars, version, idempotency_key, wait, json, server } => (|| {
            let client = client(server)?;
            let mut run: Run = client.post("/v1/runs", &submission(&job, version, &vars, idempotency_key)?)?;
            let id = run.id.clone();
            if !wait {
                if json {
                    print_json(&run)
                } else {
                    println!("{id}")
                }
                return Ok(0);
            }
            if !json {
                eprintln!("weir: submitted run {id}; waiting for it to end");
            }
            run = client.wait(&id, |failed, next| {
                if !json {
                    eprintln!(
                        "weir: attempt {} failed ({}); the service retries it as run {next}",
                        failed.attempt,
                        failed.error.as_deref().unwrap_or("no error recorded")
                    );
                }
            })?;
            if json {
                print_json(&run)
            } else {
                println!("{}", describe_run(&run))
            }
            Ok(exit_code_of(&run))
        })(),
        Command::Runs { job, state, limit, json, server } => (|| {
            let client = client(server)?;
            let mut query = vec![format!("limit={limit}")];
            query.extend(job.map(|job| format!("job={job}")));
            query.extend(state.map(|state| format!("state={state}")));
            let runs: RunList = client.get(&format!("/v1/runs?{}", query.join("&")))?;
            if json {
                print_json(&runs);
            } else {
                for run in &runs.runs {
                    println!("{}", describe_run(run));
                }
            }
            Ok(0)
        })(),
        Command::Status { run, json, server } => (|| {
            let run: Run = client(server)?.get(&format!("/v1/runs/{run}"))?;
            if json {
                print_json(&run)
            } else {
                println!("{}", describe_run(&run))
            }
            Ok(0)
        })(),
        Command::Logs { run, follow, server } => (|| client(server)?.logs(&run, follow).map(|()| 0))(),
        Command::Cancel { run, server } => (|| {
            let run: Run = client(server)?.post(&format!("/v1/runs/{run}/cancel"), &serde_json::json!({}))?;
            println!("{}", describe_run(&run));
            Ok(0)
        })(),
        Command::Backfill { job, from, to, reprocess, max_active, dry_run, include_incomplete, wait, server } => {
            (|| {
                let body = serde_json::json!({
                    "from": from, "to": to, "reprocess": reprocess, "max_active": max_active, "dry_run": dry_run,
                    "include_incomplete": include_incomplete,
                });
                let client = client(server)?;
                let reply: BackfillReply = client.post(&format!("/v1/jobs/{job}/backfill"), &body)?;
                for tick in &reply.ticks {
                    let existing = match (tick.existing, &tick.existing_run) {
                        (Some(state), Some(run)) => format!("{} ({run})", state.as_str()),
                        _ => "no run yet".into(),
                    };
                    let action = if tick.will_run { "runs" } else { "skipped" };
                    println!("{}  {}  {existing:<40}  {action}", tick.ds, tick.logical_time);
                }
                let Some(id) = &reply.id else {
                    println!("dry run: nothing submitted");
                    return Ok(0);
                };
                println!("backfill {id}: {} run(s), at most {max_active} at a time", reply.runs);
                if !wait {
                    return Ok(0);
                }
                let last = client.wait_backfill(&job, id, reply.runs.max(0) as usize)?;
                for run in &last {
                    println!("{}", describe_run(run));
                }
                // The worst outcome decides: a failure, then input not ready, then cancelled.
                let codes: Vec<i32> = last.iter().map(exit_code_of).collect();
                Ok([1, 2, 4, 130].into_iter().find(|code| codes.contains(code)).unwrap_or(0))
            })()
        }
        Command::Tokens { command, server } => (|| {
            let client = client(server)?;
            match command {
                TokensCommand::Create { name, role, jobs, prefixes, keys, inline, profiles } => {
                    let mut body = serde_json::json!({ "name": name, "role": role, "inline": inline });
                    if !jobs.is_empty() {
                        body["jobs"] = serde_json::json!(jobs);
                    }
                    if !prefixes.is_empty() {
                        body["prefixes"] = serde_json::json!(prefixes);
                    }
                    if !keys.is_empty() {
                        body["keys"] = serde_json::json!(keys);
                    }
                    if !profiles.is_empty() {
                        body["profiles"] = serde_json::json!(profiles);
                    }
                    let created: CreatedToken = client.post("/v1/tokens", &body)?;
                    print_json(&created);
                }
                TokensCommand::Ls => {
                    let listed: TokenList = client.get("/v1/tokens")?;
                    for token in &listed.tokens {
                        let list = |items: &Option<Vec<String>>| match items {
                            Some(items) => items.join(","),
                            None => "all".to_string(),
                        };
                        println!(
                            "{:<24}  {:<6}  jobs {}  prefixes {}  keys {}  profiles {}  inline {}  created {}",
                            token.name,
                            token.role.as_str(),
                            list(&token.jobs),
                            list(&token.prefixes),
                            list(&token.keys),
                            list(&token.profiles),
                            if token.inline { "yes" } else { "no" },
                            token.created_at
                        );
                    }
                }
                TokensCommand::Revoke { name } => {
                    client.delete(&format!("/v1/tokens/{name}"))?;
                    println!("revoked token '{name}'");
                }
            }
            Ok(0)
        })(),
        Command::Schedules { command, server } => (|| {
            let client = client(server)?;
            let schedules = match command {
                SchedulesCommand::Ls => client.get::<ScheduleList>("/v1/schedules")?.schedules,
                SchedulesCommand::Pause { job } => {
                    vec![client.post::<ScheduleInfo>(&format!("/v1/schedules/{job}/pause"), &serde_json::json!({}))?]
                }
                SchedulesCommand::Resume { job } => {
                    vec![client.post::<ScheduleInfo>(&format!("/v1/schedules/{job}/resume"), &serde_json::json!({}))?]
                }
            };
            for schedule in schedules {
                let state = match (schedule.paused, &schedule.paused_by) {
                    (true, Some(by)) => format!("paused by {by}"),
                    (true, None) => "paused".to_string(),
                    _ => "active".to_string(),
                };
                println!(
                    "{:<24}  {:<16}  {:<16}  {state}  last {}  next {}",
                    schedule.job,
                    schedule.cron,
                    schedule.timezone,
                    schedule.last_tick.as_deref().unwrap_or("-"),
                    if schedule.next_ticks.is_empty() { "-".to_string() } else { schedule.next_ticks.join(", ") }
                );
            }
            Ok(0)
        })(),
        Command::Jobs { command, server } => (|| {
            let client = client(server)?;
            match command {
                JobsCommand::Put { file, vars } => {
                    let definition =
                        std::fs::read_to_string(&file).map_err(|error| weir_service::client::ClientError {
                            message: format!("cannot read '{file}': {error}"),
                            exit_code: 2,
                        })?;
                    let vars: std::collections::BTreeMap<String, String> = vars.into_iter().collect();
                    let stored: StoredJob =
                        client.post("/v1/jobs", &serde_json::json!({ "definition": definition, "vars": vars }))?;
                    print_json(&stored);
                }
                JobsCommand::List => print_json(&client.get::<JobList>("/v1/jobs")?),
                JobsCommand::Show { name } => print_json(&client.get::<JobDetail>(&format!("/v1/jobs/{name}"))?),
                JobsCommand::Versions { name } => {
                    let job: JobDetail = client.get(&format!("/v1/jobs/{name}"))?;
                    for version in job.versions.iter().rev() {
                        println!(
                            "v{:<4} {}  {}  stored {} by {}",
                            version.version,
                            if version.version == job.version { "current" } else { "       " },
                            version.sha256,
                            version.created_at,
                            version.created_by
                        );
                    }
                }
                JobsCommand::Rollback { name, version } => print_json(&client.post::<JobDetail>(
                    &format!("/v1/jobs/{name}/rollback"),
                    &serde_json::json!({ "version": version }),
                )?),
            }
            Ok(0)
        })(),
        Command::Validate { job, vars, as_service: true, server } => (|| {
            let definition = std::fs::read_to_string(&job).map_err(|error| weir_service::client::ClientError {
                message: format!("cannot read '{job}': {error}"),
                exit_code: 2,
            })?;
            let vars: std::collections::BTreeMap<String, String> = vars.into_iter().collect();
            let reply: CheckedJob =
                client(server)?.post("/v1/check", &serde_json::json!({ "definition": definition, "vars": vars }))?;
            println!("job '{}' is valid as the service runs it; output {}", reply.name, reply.output_uri);
            Ok(0)
        })(),
        other => return Err(Box::new(Cli { command: other, log_format: cli.log_format })),
    };
    Ok(match outcome {
        Ok(code) => ExitCode::from(code as u8),
        Err(error) => {
            eprintln!("weir: error: {}", error.message);
            ExitCode::from(error.exit_code as u8)
        }
    })
}

/// `vars` with the run's date variables when `ds` is not given: the latest complete
/// interval of the job's `[schedule]`, as the job service's scheduler would give them
/// (`weir_jobs::schedule::with_run_date`). A file that cannot be read is reported later,
/// by the job's loading.
fn with_run_date(path: &str, vars: Vec<(String, String)>) -> Result<Vec<(String, String)>, JobFailure> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(vars) };
    let dated = weir_jobs::schedule::with_run_date(&text, vars, chrono::Utc::now())
        .map_err(|message| JobFailure::user(format!("job file '{path}': {message}")))?;
    Ok(dated)
}

/// The variables of `--vars-file`: a JSON object of strings, each name checked as `--var`'s.
fn read_vars_file(path: &str) -> Result<Vec<(String, String)>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("cannot read the variables file {path}: {error}"))?;
    let values: std::collections::BTreeMap<String, String> = serde_json::from_str(&text)
        .map_err(|error| format!("the variables file {path} is not a JSON object of strings: {error}"))?;
    for name in values.keys() {
        weir_jobs::vars::check_name(name).map_err(|message| format!("the variables file {path}: {message}"))?;
    }
    Ok(values.into_iter().collect())
}

/// The environment variable holding a cluster's shared secret (see engine/src/cluster.rs).
const CLUSTER_SECRET_ENV: &str = weir_jobs::launcher::CLUSTER_SECRET_ENV;

/// `weir ls` with `--require-committed` on an output that is not committed.
const EXIT_NOT_COMMITTED: i32 = 3;

fn dispatch(command: Command, runtime: &tokio::runtime::Runtime, stop: &Stop) -> Result<(), JobFailure> {
    let inspected = |result: Result<String, weir_connectors::ConnectorError>| match result {
        Ok(text) => {
            print!("{text}");
            Ok(())
        }
        Err(e) => Err(JobFailure::from_connector(&e)),
    };
    match command {
        Command::Run { job, workers, processes, mut vars, vars_file, force, output } => {
            if let Some(path) = &vars_file {
                vars.extend(read_vars_file(path).map_err(JobFailure::user)?);
            }
            let vars = with_run_date(&job, vars)?;
            // By default the cores are shared out between the processes.
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            let workers = workers.unwrap_or_else(|| (cores / processes.max(1)).max(1));
            let shape = Shape {
                workers: workers.max(1),
                processes: processes.max(1),
                force,
                base_dir: output.base_dir.clone(),
            };
            let result = run(&job, &Variables::new(&vars), shape, output.mode(), runtime, stop);
            if let Some(path) = &output.result_file {
                write_result_file(path, &result, stop);
            }
            result.map(drop)
        }
        Command::Worker { job, hostfile, process, workers, vars, force, output, local_cluster, processes, attempt } => {
            let role = WorkerRole {
                hostfile,
                process: process.unwrap_or(0),
                processes,
                workers: workers
                    .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
                    .max(1),
                local_cluster,
            };
            let options =
                RunOptions { attempt, force, base_dir: output.base_dir.clone().map(Into::into), fit_output: None };
            let vars = if local_cluster { vars } else { with_run_date(&job, vars)? };
            worker(&job, role, vars, options, output.mode(), runtime, stop)
        }
        Command::Validate { job, vars, .. } => validate(&job, &Variables::new(&with_run_date(&job, vars)?), runtime),
        Command::Fit { job, output, overwrite, workers, vars } => {
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            let vars = Variables::new(&with_run_date(&job, vars)?);
            fit(&job, &output, overwrite, workers.unwrap_or(cores).max(1), &vars, runtime, stop)
        }
        Command::Ls { uri, json, require_committed } => {
            let status = runtime.block_on(inspect::status(&uri)).map_err(|e| JobFailure::from_connector(&e))?;
            let printed = if json {
                serde_json::to_string(&status)
                    .map(|line| println!("{line}"))
                    .map_err(|e| JobFailure::internal(e.to_string()))
            } else {
                inspected(runtime.block_on(inspect::ls(&uri, &status)))
            };
            // Nothing there at all is "not committed" too, not an error, when that is the question.
            if require_committed && status.status != inspect::Status::Committed {
                eprintln!("weir: '{}' is not a committed output ({})", status.uri, status.status.as_str());
                std::process::exit(EXIT_NOT_COMMITTED);
            }
            printed
        }
        Command::Head { uri, rows } => inspected(runtime.block_on(inspect::head(&uri, rows))),
        Command::Schema { uri } => inspected(runtime.block_on(inspect::schema(&uri))),
        Command::Hostfile => {
            let cluster = KubernetesCluster::from_env(|name| std::env::var(name).ok()).map_err(JobFailure::user)?;
            print!("{}", cluster.hostfile());
            Ok(())
        }
        Command::Serve { .. }
        | Command::Submit { .. }
        | Command::Runs { .. }
        | Command::Status { .. }
        | Command::Logs { .. }
        | Command::Cancel { .. }
        | Command::Backfill { .. }
        | Command::Jobs { .. }
        | Command::Tokens { .. }
        | Command::Schedules { .. }
        | Command::CheckDefinition => Err(JobFailure::internal("a service command reached the run dispatcher")),
    }
}

fn failure(error: JobError) -> JobFailure {
    error.to_failure()
}

fn in_job(job: &LoadedJob) -> impl Fn(JobFailure) -> JobFailure + '_ {
    move |f| JobFailure { kind: f.kind, message: format!("job '{}' failed: {}", job.spec.name, f.message) }
}

/// Writes a run's outcome for whoever started it (`--result-file`, the job service):
/// `{"state": "succeeded", "exit_code": 0, …the summary…}` or `{"state": "failed" |
/// "cancelled", "kind": "user" | "external" | "internal" | "cancelled", "exit_code", "message"}`.
/// Written to a temporary name and renamed, so a reader never sees half of it.
fn write_result_file(path: &str, result: &Result<serde_json::Value, JobFailure>, stop: &Stop) {
    let value = match result {
        Ok(summary) => {
            let mut value = serde_json::json!({ "state": "succeeded", "exit_code": 0 });
            if let (Some(target), Some(summary)) = (value.as_object_mut(), summary.as_object()) {
                target.extend(summary.clone());
            }
            value
        }
        Err(failure) => {
            let kind = match failure.kind {
                FailureKind::User => "user",
                FailureKind::External => "external",
                FailureKind::Internal => "internal",
                FailureKind::Cancelled => "cancelled",
                FailureKind::InputNotReady => "input_not_ready",
            };
            // Cancelled by a signal; a failing worker also sets the abort flag, so the flag
            // alone says nothing.
            let cancelled = failure.kind == FailureKind::Cancelled || stop.exit_code().is_some();
            serde_json::json!({
                "state": if cancelled { "cancelled" } else { "failed" },
                "kind": kind,
                "exit_code": stop.exit_code().unwrap_or_else(|| failure.exit_code()),
                "message": failure.message,
            })
        }
    };
    let staged = format!("{path}.staged");
    if let Err(error) = std::fs::write(&staged, value.to_string()).and_then(|()| std::fs::rename(&staged, path)) {
        eprintln!("weir: cannot write the result file '{path}': {error}");
    }
}

/// Warnings about the plan (a score step after steps refitted in this run), on stderr
/// unless `--quiet`.
fn print_warnings(plan: &weir_engine::EnginePlan, mode: OutputMode) {
    if !mode.quiet {
        for warning in weir_jobs::planning::refit_warnings(plan) {
            eprintln!("weir: warning: {warning}");
        }
    }
}

/// The shape of a `weir run`.
struct Shape {
    workers: usize,
    processes: usize,
    force: bool,
    base_dir: Option<String>,
}

fn run(
    path: &str,
    vars: &Variables,
    shape: Shape,
    mode: OutputMode,
    runtime: &tokio::runtime::Runtime,
    stop: &Stop,
) -> Result<serde_json::Value, JobFailure> {
    let base_dir = shape.base_dir.as_ref().map(std::path::PathBuf::from);
    let options = RunOptions { attempt: None, force: shape.force, base_dir: base_dir.clone(), fit_output: None };
    let (job, plan) = match load_and_plan(path, vars, &options, runtime)? {
        (job, Planned::Run(plan)) => (job, *plan),
        (job, Planned::NothingNew(nothing)) => return Ok(nothing_new(&job, &nothing, mode)),
    };
    print_warnings(&plan, mode);
    let view = ProgressView::new(plan.shards.len() as u64, mode);
    let output = plan.sink.uri();
    let summary = if shape.processes == 1 {
        run_in_process(plan, ClusterSetup::SingleProcess { workers: shape.workers }, runtime, &view, None, stop)
    } else {
        let (sink, attempt) = (plan.sink.clone(), plan.attempt.clone());
        let rejects = plan.rejects.as_ref().map(|rejects| rejects.output.clone());
        drop(plan);
        let launch = LaunchPlan {
            job_path: path,
            vars,
            processes: shape.processes,
            workers: shape.workers,
            force: shape.force,
            base_dir: base_dir.as_deref(),
            sink,
            rejects,
            attempt,
            runtime,
            stop,
        };
        launch_local(launch, &view)
    };
    view.finish();
    let summary = summary.map_err(in_job(&job))?;
    let report = SummaryReport::new(&job.spec.name, vars.run_id(), output, &summary, view.elapsed());
    report.print(mode);
    Ok(serde_json::to_value(&report).unwrap_or_default())
}

/// Runs a plan on this process's workers, showing progress on `view` and/or sending it as
/// events to a launcher.
fn run_in_process(
    plan: weir_engine::EnginePlan,
    setup: ClusterSetup,
    runtime: &tokio::runtime::Runtime,
    view: &ProgressView,
    events: Option<EventSink>,
    stop: &Stop,
) -> Result<RunSummary, JobFailure> {
    let progress = Arc::new(Progress::default());
    let failure_events = events.clone();
    let context = ProcessContext {
        runtime: runtime.handle().clone(),
        progress: progress.clone(),
        abort: stop.abort_flag(),
        on_failure: Arc::new(move |failure: &JobFailure| {
            if let Some(events) = &failure_events {
                events.send(&ChildEvent::Failed(failure.clone()));
            }
        }),
        cluster_secret: std::env::var(CLUSTER_SECRET_ENV).unwrap_or_default().into_bytes(),
        connect_timeout: std::env::var("WEIR_CONNECT_TIMEOUT_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(weir_engine::cluster::DEFAULT_CONNECT_TIMEOUT),
    };
    let finished = Arc::new(AtomicBool::new(false));
    let outcome = std::thread::scope(|scope| {
        let (finished_flag, reporter_progress) = (finished.clone(), progress.clone());
        let reporter = scope.spawn(move || {
            while !finished_flag.load(Ordering::Relaxed) {
                let snapshot = reporter_progress.snapshot();
                view.update(&snapshot);
                if let Some(events) = &events {
                    events.send(&ChildEvent::Progress(snapshot));
                }
                // Woken early when the run ends, so a short run is not stretched to a tick.
                std::thread::park_timeout(Duration::from_millis(200));
            }
        });
        let outcome = execute(Arc::new(plan), setup, context);
        finished.store(true, Ordering::Relaxed);
        reporter.thread().unpark();
        outcome
    });
    view.update(&progress.snapshot());
    outcome
}

/// Which process of which cluster a `weir worker` is.
struct WorkerRole {
    hostfile: Option<String>,
    process: usize,
    processes: Option<usize>,
    workers: usize,
    local_cluster: bool,
}

fn worker(
    path: &str,
    role: WorkerRole,
    mut pairs: Vec<(String, String)>,
    mut options: RunOptions,
    mode: OutputMode,
    runtime: &tokio::runtime::Runtime,
    stop: &Stop,
) -> Result<(), JobFailure> {
    let WorkerRole { hostfile, process, processes, workers, local_cluster } = role;
    if local_cluster {
        let events = EventSink::default();
        let outcome = local_cluster_worker(
            path,
            process,
            processes.unwrap_or(1),
            workers,
            &pairs,
            &options,
            runtime,
            &events,
            stop,
        );
        match &outcome {
            Ok(summary) => events.send(&ChildEvent::Done(summary.clone())),
            Err(failure) => events.send(&ChildEvent::Failed(failure.clone())),
        }
        return outcome.map(|_| ());
    }
    let hostfile = hostfile.unwrap_or_default();
    let kubernetes = if hostfile == "kubernetes" {
        Some(KubernetesCluster::from_env(|name| std::env::var(name).ok()).map_err(JobFailure::user)?)
    } else {
        None
    };
    let process = kubernetes.as_ref().map_or(process, |cluster| cluster.process);
    let hosts = match &kubernetes {
        Some(cluster) => cluster.hostfile(),
        None => std::fs::read_to_string(&hostfile)
            .map_err(|e| JobFailure::user(format!("cannot read hostfile '{hostfile}': {e}")))?,
    };
    let addresses: Vec<String> = hosts
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect();
    if process >= addresses.len() {
        return Err(JobFailure::user(format!(
            "--process {process} is not a line of hostfile '{hostfile}' ({} processes)",
            addresses.len()
        )));
    }
    // Every process must agree on the run id and the attempt without talking: derive them
    // from what they share.
    let job_text = std::fs::read_to_string(path).unwrap_or_default();
    let hex = weir_jobs::planning::sha256_hex(format!("{job_text}\n{hosts}\n{pairs:?}").as_bytes())[..16].to_string();
    if !pairs.iter().any(|(key, _)| key == "run_id") {
        pairs.push(("run_id".to_string(), hex.clone()));
    }
    let vars = Variables::new(&pairs);
    if options.attempt.is_none() {
        options.attempt = Some(format!("{}.{}", vars.run_id(), &hex[..8]));
    }
    let (job, plan) = match load_and_plan(path, &vars, &options, runtime)? {
        (job, Planned::Run(plan)) => (job, *plan),
        (job, Planned::NothingNew(nothing)) => {
            // Every process sees the same ledger; process 0 says so.
            if process == 0 {
                nothing_new(&job, &nothing, mode);
            }
            return Ok(());
        }
    };
    if process == 0 {
        print_warnings(&plan, mode);
    }
    let output = plan.sink.uri();
    let view = ProgressView::new(plan.shards.len() as u64, if process == 0 { mode } else { OutputMode::SILENT });
    let setup = match &kubernetes {
        // A pod listens on all its interfaces: its own DNS name may not resolve yet.
        Some(cluster) => {
            let listener = std::net::TcpListener::bind(("0.0.0.0", cluster.port))
                .map_err(|e| JobFailure::external(format!("cannot listen on port {}: {e}", cluster.port)))?;
            ClusterSetup::LocalProcess { workers, process, addresses, listener }
        }
        None => ClusterSetup::Hosts { workers, process, addresses },
    };
    let summary = run_in_process(plan, setup, runtime, &view, None, stop);
    view.finish();
    let summary = summary.map_err(in_job(&job))?;
    if process == 0 {
        SummaryReport::new(&job.spec.name, vars.run_id(), output, &summary, view.elapsed()).print(mode);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn local_cluster_worker(
    path: &str,
    process: usize,
    processes: usize,
    workers: usize,
    pairs: &[(String, String)],
    options: &RunOptions,
    runtime: &tokio::runtime::Runtime,
    events: &EventSink,
    stop: &Stop,
) -> Result<RunSummary, JobFailure> {
    let (listener, addresses) =
        join_local_cluster(events).map_err(|e| JobFailure::external(format!("cannot join the local cluster: {e}")))?;
    if addresses.len() != processes {
        return Err(JobFailure::internal("the launcher sent a cluster of the wrong size"));
    }
    // The launcher holds our stdin: when it closes (it stopped us, or died), stop.
    watch_launcher(stop.clone());
    let plan = match load_and_plan(path, &Variables::new(pairs), options, runtime)? {
        (_, Planned::Run(plan)) => *plan,
        // The launcher planned first and found new files; the output moved on since.
        (_, Planned::NothingNew(nothing)) => return Err(failure(nothing)),
    };
    let view = ProgressView::new(0, OutputMode::SILENT);
    let setup = ClusterSetup::LocalProcess { workers, process, addresses, listener };
    run_in_process(plan, setup, runtime, &view, Some(events.clone()), stop)
}

/// An incremental run with no new input: a success that commits nothing. Says so on
/// stderr (or as JSON on stdout with `--json`; nothing with `--quiet`) and returns the
/// run's summary for the result file.
fn nothing_new(job: &LoadedJob, nothing: &JobError, mode: OutputMode) -> serde_json::Value {
    let summary = serde_json::json!({
        "job": job.spec.name,
        "run_id": job.vars.run_id(),
        "output": job.spec.sink.uri,
        "rows_in": 0,
        "rows_out": 0,
        "files": 0,
        "bytes": 0,
        "nothing_new": true,
    });
    if mode.json {
        println!("{summary}");
    } else if !mode.quiet {
        eprintln!("weir: {nothing}");
    }
    summary
}

/// `weir fit`: the fitting passes of a job in this process, then fitted.json to `output`.
fn fit(
    path: &str,
    output: &str,
    overwrite: bool,
    workers: usize,
    vars: &Variables,
    runtime: &tokio::runtime::Runtime,
    stop: &Stop,
) -> Result<(), JobFailure> {
    let job = load_job(path, vars, None).map_err(failure)?;
    if job.spec.sink.encryption.is_some() {
        return Err(JobFailure::user(format!(
            "job '{}': its sink encrypts its output, and `weir fit` would write the parameters fitted on those columns in the clear; run the job, which keeps them encrypted in _weir/fitted.parquet, and reuse them with fitted = \"OUTPUT\"",
            job.spec.name
        )));
    }
    let target =
        weir_connectors::Location::parse(output, &job.spec.storage).map_err(|e| JobFailure::from_connector(&e))?;
    if !overwrite && runtime.block_on(object_store::ObjectStoreExt::head(target.store(), target.path())).is_ok() {
        return Err(JobFailure::user(format!("'{}' exists; pass --overwrite to replace it", target.uri())));
    }
    let options = RunOptions { fit_output: Some(output.to_string()), ..RunOptions::default() };
    let plan = runtime.block_on(plan_job(&job, &options)).map_err(failure)?;
    let view = ProgressView::new(plan.shards.len() as u64, OutputMode::SILENT);
    let summary = run_in_process(plan, ClusterSetup::SingleProcess { workers }, runtime, &view, None, stop)
        .map_err(in_job(&job))?;
    let written = runtime
        .block_on(weir_connectors::objects::read_json::<weir_operators::fitted_file::FittedFile>(
            &target,
            target.path(),
        ))
        .map_err(|e| JobFailure::from_connector(&e))?
        .ok_or_else(|| JobFailure::internal("the fitted parameters just written cannot be read back"))?;
    println!(
        "job '{}': fitted {} step(s) in {} pass(es) into {} ({} bytes)\nfitted parameters SHA-256: {}",
        job.spec.name,
        written.steps.len(),
        summary.passes,
        target.uri(),
        summary.bytes,
        weir_operators::fitted_file::params_sha256(&written.steps)
    );
    Ok(())
}

/// What planning a job gives: a plan to run, or (an incremental source) nothing new to read.
enum Planned {
    Run(Box<weir_engine::EnginePlan>),
    NothingNew(JobError),
}

/// Loads a job file and plans it: what `run`, `worker`, a local cluster's processes and
/// `validate` all begin with.
fn load_and_plan(
    path: &str,
    vars: &Variables,
    options: &RunOptions,
    runtime: &tokio::runtime::Runtime,
) -> Result<(LoadedJob, Planned), JobFailure> {
    let job = load_job(path, vars, options.base_dir.as_deref()).map_err(failure)?;
    let planned = match runtime.block_on(plan_job(&job, options)) {
        Ok(plan) => Planned::Run(Box::new(plan)),
        Err(nothing @ JobError::NothingNew { .. }) => Planned::NothingNew(nothing),
        Err(error) => return Err(failure(error)),
    };
    Ok((job, planned))
}

fn validate(path: &str, vars: &Variables, runtime: &tokio::runtime::Runtime) -> Result<(), JobFailure> {
    let (job, plan) = match load_and_plan(path, vars, &RunOptions::default(), runtime)? {
        (job, Planned::Run(plan)) => (job, *plan),
        (job, Planned::NothingNew(nothing)) => {
            println!("job '{}' is valid; {nothing}", job.spec.name);
            return Ok(());
        }
    };
    for warning in weir_jobs::planning::refit_warnings(&plan) {
        println!("warning: {warning}");
    }
    println!(
        "job '{}' is valid: {} input file(s), {} rows, {} shard(s), {} step(s)",
        job.spec.name,
        plan.source.inputs().len(),
        plan.source.total_rows(),
        plan.shards.len(),
        job.spec.steps.len()
    );
    if let Some((number, op)) = plan.open_step() {
        println!(
            "output schema: known once step {number} ({op}) is fitted, as its columns are its categories; the steps after it are checked then, before any row is written"
        );
        return Ok(());
    }
    println!("output schema:");
    for field in plan.output_schema.fields() {
        println!("  {}: {}{}", field.name(), field.data_type(), if field.is_nullable() { "" } else { " not null" });
    }
    Ok(())
}
