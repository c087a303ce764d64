//! The `weir` command: run, validate and inspect jobs and datasets; run the job service
//! (`serve`) and talk to it (`submit`, `runs`, `status`, `logs`, `cancel`, `jobs`).
//!
//! Exit codes: 0 success; 1 the job failed (a store, the cluster, or Weir itself);
//! 2 bad input (the job file, its source data, the arguments); 4 the input is not there yet.

mod service_commands;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use service_commands::{
    BackfillArgs, JobsCommand, RunsArgs, SchedulesCommand, ServeArgs, ServerArgs, SubmitArgs, TokensCommand, exit,
};
use weir_engine::JobFailure;
use weir_jobs::inspect;
use weir_jobs::kubernetes::KubernetesCluster;
use weir_jobs::report::OutputMode;
use weir_jobs::run::fit::{FitRequest, fit_job};
use weir_jobs::run::local::{RunRequest, run_job};
use weir_jobs::run::validate::{Validated, Validation, validate_job};
use weir_jobs::run::worker::{WorkerRequest, run_worker};
use weir_jobs::signals::Stop;
use weir_jobs::vars::parse_pair;

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
        #[command(flatten)]
        args: ServeArgs,
    },
    /// The job service's definition checker: a request as JSON on stdin, the answer on stdout.
    #[command(hide = true)]
    CheckDefinition,
    /// Submit a run to the job service: a job file (sent inline) or a stored job's name.
    Submit {
        #[command(flatten)]
        args: SubmitArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the service's runs, newest first.
    Runs {
        #[command(flatten)]
        args: RunsArgs,
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
        #[command(flatten)]
        args: BackfillArgs,
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
    init_logs(&cli);
    install_panic_hook();
    dispatch(cli.command)
}

/// Log lines on stderr, as `--log-format` and RUST_LOG ask.
fn init_logs(cli: &Cli) {
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
}

/// A panic is a bug in Weir, and ends the process at once (a cluster's other processes
/// then lose it and stop too), so no run commits after a panic; with two exceptions.
fn install_panic_hook() {
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
}

/// Runs each command: the local ones (which need the I/O runtime and stop handling) in
/// [`local`], the job service's in `service_commands`.
fn dispatch(command: Command) -> ExitCode {
    use service_commands as service;
    match command {
        Command::Run { job, workers, processes, vars, vars_file, force, output } => local(|runtime, stop| {
            let request = RunRequest {
                job: &job,
                workers,
                processes,
                vars,
                vars_file: vars_file.as_deref(),
                force,
                base_dir: output.base_dir.as_deref(),
                result_file: output.result_file.as_deref(),
                mode: output.mode(),
            };
            run_job(request, runtime, stop)
        }),
        Command::Worker { job, hostfile, process, workers, vars, force, output, local_cluster, processes, attempt } => {
            local(|runtime, stop| {
                let request = WorkerRequest {
                    job: &job,
                    hostfile,
                    process,
                    workers,
                    vars,
                    force,
                    base_dir: output.base_dir.as_deref(),
                    mode: output.mode(),
                    local_cluster,
                    processes,
                    attempt,
                };
                run_worker(request, runtime, stop)
            })
        }
        Command::Hostfile => local(|_, _| {
            let cluster = KubernetesCluster::from_env(|name| std::env::var(name).ok()).map_err(JobFailure::user)?;
            print!("{}", cluster.hostfile());
            Ok(())
        }),
        Command::Fit { job, output, overwrite, workers, vars } => local(|runtime, stop| {
            let fitted = fit_job(FitRequest { job: &job, output: &output, overwrite, workers, vars }, runtime, stop)?;
            println!(
                "job '{}': fitted {} step(s) in {} pass(es) into {} ({} bytes)\nfitted parameters SHA-256: {}",
                fitted.job, fitted.steps, fitted.passes, fitted.uri, fitted.bytes, fitted.params_sha256
            );
            Ok(())
        }),
        Command::Validate { job, vars, as_service: false, .. } => {
            local(|runtime, _| validate_job(&job, vars, runtime).map(|validation| print_validation(&validation)))
        }
        Command::Ls { uri, json, require_committed } => local(|runtime, _| ls(&uri, json, require_committed, runtime)),
        Command::Head { uri, rows } => local(|runtime, _| inspected(runtime.block_on(inspect::head(&uri, rows)))),
        Command::Schema { uri } => local(|runtime, _| inspected(runtime.block_on(inspect::schema(&uri)))),
        Command::Serve { args } => service::serve(args),
        Command::CheckDefinition => weir_service::definition_check::child_main(),
        Command::Validate { job, vars, as_service: true, server } => {
            exit(service::validate_as_service(&job, vars, server))
        }
        Command::Submit { args, server } => exit(service::submit(args, server)),
        Command::Runs { args, server } => exit(service::runs(args, server)),
        Command::Status { run, json, server } => exit(service::status(&run, json, server)),
        Command::Logs { run, follow, server } => exit(service::logs(&run, follow, server)),
        Command::Cancel { run, server } => exit(service::cancel(&run, server)),
        Command::Backfill { args, server } => exit(service::backfill(args, server)),
        Command::Tokens { command, server } => exit(service::tokens(command, server)),
        Command::Schedules { command, server } => exit(service::schedules(command, server)),
        Command::Jobs { command, server } => exit(service::jobs(command, server)),
    }
}

/// Runs a local command with the I/O runtime and the stop handling (SIGINT/SIGTERM); a
/// failure is printed, and exits 2 for bad input, 4 for input not ready, 1 otherwise, or
/// the signal's code when stopped.
fn local(command: impl FnOnce(&tokio::runtime::Runtime, &Stop) -> Result<(), JobFailure>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weir: cannot start the I/O runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let stop = Stop::install(&runtime);
    match command(&runtime, &stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("weir: error: {}", failure.message);
            let code = stop.exit_code().unwrap_or_else(|| failure.exit_code());
            ExitCode::from(code as u8)
        }
    }
}

/// `weir ls` with `--require-committed` on an output that is not committed.
const EXIT_NOT_COMMITTED: i32 = 3;

/// `weir ls`: the objects under a URI (or its output status as JSON).
fn ls(uri: &str, json: bool, require_committed: bool, runtime: &tokio::runtime::Runtime) -> Result<(), JobFailure> {
    let status = runtime.block_on(inspect::status(uri)).map_err(|e| JobFailure::from_connector(&e))?;
    let printed = if json {
        serde_json::to_string(&status).map(|line| println!("{line}")).map_err(|e| JobFailure::internal(e.to_string()))
    } else {
        inspected(runtime.block_on(inspect::ls(uri, &status)))
    };
    // Nothing there at all is "not committed" too, not an error, when that is the question.
    if require_committed && status.status != inspect::Status::Committed {
        eprintln!("weir: '{}' is not a committed output ({})", status.uri, status.status.as_str());
        std::process::exit(EXIT_NOT_COMMITTED);
    }
    printed
}

/// Prints what an inspection command found.
fn inspected(result: Result<String, weir_connectors::ConnectorError>) -> Result<(), JobFailure> {
    match result {
        Ok(text) => {
            print!("{text}");
            Ok(())
        }
        Err(e) => Err(JobFailure::from_connector(&e)),
    }
}

/// `weir validate`'s report.
fn print_validation(validation: &Validation) {
    let job = &validation.job;
    let (warnings, input_files, rows, shards, steps, open_step, output_schema) = match &validation.outcome {
        Validated::NothingNew(nothing) => {
            println!("job '{job}' is valid; {nothing}");
            return;
        }
        Validated::Planned { warnings, input_files, rows, shards, steps, open_step, output_schema } => {
            (warnings, input_files, rows, shards, steps, open_step, output_schema)
        }
    };
    for warning in warnings {
        println!("warning: {warning}");
    }
    println!("job '{job}' is valid: {input_files} input file(s), {rows} rows, {shards} shard(s), {steps} step(s)");
    if let Some((number, op)) = open_step {
        println!(
            "output schema: known once step {number} ({op}) is fitted, as its columns are its categories; the steps after it are checked then, before any row is written"
        );
        return;
    }
    println!("output schema:");
    for field in output_schema.fields() {
        println!("  {}: {}{}", field.name(), field.data_type(), if field.is_nullable() { "" } else { " not null" });
    }
}
