//! The `weir` commands that run the job service or talk to it (`serve`, `submit`, `runs`,
//! `status`, `logs`, `cancel`, `backfill`, `tokens`, `schedules`, `jobs`, `validate
//! --as-service`): their arguments beyond the top-level ones, the requests they send
//! through `weir_service::client`, and how they print the replies. Each returns the exit
//! code, or the client's error (which carries its own).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use weir_jobs::vars::parse_pair;
use weir_service::api_types::{
    BackfillReply, CheckedJob, CreatedToken, JobDetail, JobList, RunList, ScheduleList, StoredJob, TokenList,
};
use weir_service::client::{Client, ClientError, describe_run, exit_code_of, submission};
use weir_service::schedules::ScheduleInfo;
use weir_service::store::Run;

#[derive(Subcommand)]
pub enum TokensCommand {
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
pub enum SchedulesCommand {
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
pub enum JobsCommand {
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
pub struct ServerArgs {
    /// The service's address (default: $WEIR_SERVER, else http://127.0.0.1:8470).
    #[arg(long, global = true)]
    pub server: Option<String>,
    /// A bearer token (default: $WEIR_TOKEN).
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// A file holding the bearer token.
    #[arg(long, global = true)]
    pub token_file: Option<String>,
    /// Trust the service's certificate through this CA (PEM) instead of the system's web roots
    /// (default: $WEIR_CA_CERT).
    #[arg(long, global = true)]
    pub ca_cert: Option<String>,
}

// `weir serve`'s arguments.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Where the service keeps its database, tokens and run logs.
    #[arg(long, default_value = "weir-service")]
    pub state_dir: String,
    /// Address to listen on (port 0: any free port). Loopback unless told otherwise.
    #[arg(long, default_value = "127.0.0.1:8470")]
    pub listen: std::net::SocketAddr,
    /// Write the bound address (http://HOST:PORT, https:// with TLS) to this file once listening.
    #[arg(long)]
    pub address_file: Option<String>,
    /// Runs at once; the rest wait in the queue.
    #[arg(long, default_value_t = 2)]
    pub max_concurrent_runs: usize,
    /// Seconds a cancelled run has to stop after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 30)]
    pub cancel_grace_s: u64,
    /// Another host name the service answers to (the Host header; repeatable).
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_hosts: Vec<String>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<String>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<String>,
    /// Seconds that checking one submitted definition (spec, source footers, model) may
    /// take; a check runs in a child process, killed at this deadline.
    #[arg(long, default_value_t = 30)]
    pub check_timeout_s: u64,
    /// An S3 endpoint that a definition from a non-admin token may name in `[storage]
    /// endpoint` (repeatable; AWS_ENDPOINT_URL is always allowed). Any other is refused,
    /// so no token can make the service send its credentials elsewhere.
    #[arg(long = "allow-endpoint", value_name = "URL")]
    pub allowed_endpoints: Vec<String>,
    /// Storage profiles (a TOML file of named stores with their endpoints, credentials'
    /// environment variables and prefixes): definitions from non-admin tokens then reach
    /// object stores through a profile only.
    #[arg(long, value_name = "FILE")]
    pub storage_profiles: Option<String>,
    /// Testing aid: the schedules read the time (RFC 3339) from this file.
    #[arg(long, hide = true)]
    pub clock_file: Option<String>,
}

// `weir submit`'s arguments.
#[derive(clap::Args)]
pub struct SubmitArgs {
    /// A job's TOML file, or the name of a job stored in the service.
    pub job: String,
    #[arg(long = "var", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub vars: Vec<(String, String)>,
    /// A stored job's version (default: its current one).
    #[arg(long)]
    pub version: Option<i64>,
    /// Submitting again with the same key returns the same run instead of a new one.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Wait for the run to end, following the attempts the service retries it with; exit
    /// with the last attempt's outcome: 0 if it succeeded, 2 if it failed on bad input, 4
    /// if its input was not ready, 130 if cancelled, 1 otherwise.
    #[arg(long)]
    pub wait: bool,
    /// Print the run as JSON.
    #[arg(long)]
    pub json: bool,
}

// `weir runs`'s arguments.
#[derive(clap::Args)]
pub struct RunsArgs {
    /// Only the runs of this job.
    #[arg(long)]
    pub job: Option<String>,
    /// queued, running, succeeded, failed, cancelled or lost.
    #[arg(long)]
    pub state: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Print them as JSON.
    #[arg(long)]
    pub json: bool,
}

// `weir backfill`'s arguments.
#[derive(clap::Args)]
pub struct BackfillArgs {
    /// The stored job's name.
    pub job: String,
    /// The first date (YYYY-MM-DD) whose data to process.
    #[arg(long)]
    pub from: String,
    /// The last date, included.
    #[arg(long)]
    pub to: String,
    /// Dates that already have a run: none (skip them), failed (run again those whose
    /// latest run failed, was cancelled or lost), all.
    #[arg(long, default_value = "none")]
    pub reprocess: String,
    /// Runs of this backfill queued or running at once.
    #[arg(long, default_value_t = 1)]
    pub max_active: usize,
    /// List the dates and what would run, and submit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also run dates whose interval has not ended yet (today's, for a daily job), under
    /// keys of their own: the schedule still runs them, on complete data, when they end.
    #[arg(long)]
    pub include_incomplete: bool,
    /// Wait until every date's run (and its retries) has ended; print each date's last
    /// attempt and exit 0 only if all succeeded (else as `submit --wait` for the worst).
    #[arg(long)]
    pub wait: bool,
}

/// The exit of a client command: its code, or its error printed.
pub fn exit(outcome: Result<i32, ClientError>) -> ExitCode {
    match outcome {
        Ok(code) => ExitCode::from(code as u8),
        Err(error) => {
            eprintln!("weir: error: {}", error.message);
            ExitCode::from(error.exit_code as u8)
        }
    }
}

fn client(server: ServerArgs) -> Result<Client, ClientError> {
    Client::new(server.server, server.token, server.token_file, server.ca_cert)
}

fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// A job file to send, read whole.
fn read_definition(path: &str) -> Result<String, ClientError> {
    std::fs::read_to_string(path)
        .map_err(|error| ClientError { message: format!("cannot read '{path}': {error}"), exit_code: 2 })
}

/// Runs the job service until it stops.
pub fn serve(args: ServeArgs) -> ExitCode {
    let ServeArgs {
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
    } = args;
    let tls = tls_cert.zip(tls_key).map(|(cert, key)| weir_service::TlsFiles { cert: cert.into(), key: key.into() });
    let config = weir_service::ServeConfig {
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
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(weir_service::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("weir: error: {message}");
            ExitCode::from(1)
        }
    }
}

/// `weir submit`.
pub fn submit(args: SubmitArgs, server: ServerArgs) -> Result<i32, ClientError> {
    let SubmitArgs { job, vars, version, idempotency_key, wait, json } = args;
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
}

/// `weir runs`.
pub fn runs(args: RunsArgs, server: ServerArgs) -> Result<i32, ClientError> {
    let RunsArgs { job, state, limit, json } = args;
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
}

/// `weir status`.
pub fn status(run: &str, json: bool, server: ServerArgs) -> Result<i32, ClientError> {
    let run: Run = client(server)?.get(&format!("/v1/runs/{run}"))?;
    if json {
        print_json(&run)
    } else {
        println!("{}", describe_run(&run))
    }
    Ok(0)
}

/// `weir logs`.
pub fn logs(run: &str, follow: bool, server: ServerArgs) -> Result<i32, ClientError> {
    client(server)?.logs(run, follow).map(|()| 0)
}

/// `weir cancel`.
pub fn cancel(run: &str, server: ServerArgs) -> Result<i32, ClientError> {
    let run: Run = client(server)?.post(&format!("/v1/runs/{run}/cancel"), &serde_json::json!({}))?;
    println!("{}", describe_run(&run));
    Ok(0)
}

/// `weir backfill`.
pub fn backfill(args: BackfillArgs, server: ServerArgs) -> Result<i32, ClientError> {
    let BackfillArgs { job, from, to, reprocess, max_active, dry_run, include_incomplete, wait } = args;
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
}

/// `weir tokens …`.
pub fn tokens(command: TokensCommand, server: ServerArgs) -> Result<i32, ClientError> {
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
}

/// `weir schedules …`.
pub fn schedules(command: SchedulesCommand, server: ServerArgs) -> Result<i32, ClientError> {
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
}

/// `weir jobs …`.
pub fn jobs(command: JobsCommand, server: ServerArgs) -> Result<i32, ClientError> {
    let client = client(server)?;
    match command {
        JobsCommand::Put { file, vars } => {
            let definition = read_definition(&file)?;
            let vars: BTreeMap<String, String> = vars.into_iter().collect();
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
        JobsCommand::Rollback { name, version } => print_json(
            &client
                .post::<JobDetail>(&format!("/v1/jobs/{name}/rollback"), &serde_json::json!({ "version": version }))?,
        ),
    }
    Ok(0)
}

/// `weir validate --as-service`: the job checked by the service, as it would store and run it.
pub fn validate_as_service(job: &str, vars: Vec<(String, String)>, server: ServerArgs) -> Result<i32, ClientError> {
    let definition = read_definition(job)?;
    let vars: BTreeMap<String, String> = vars.into_iter().collect();
    let reply: CheckedJob =
        client(server)?.post("/v1/check", &serde_json::json!({ "definition": definition, "vars": vars }))?;
    println!("job '{}' is valid as the service runs it; output {}", reply.name, reply.output_uri);
    Ok(0)
}
