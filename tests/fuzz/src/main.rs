//! `weir-fuzz`: Weir's fuzz harness, on stable Rust.
//!
//! Five targets take bytes and feed them to the code that reads what users hand Weir:
//!
//! - `job`: the job loader with variables (`NAME=VALUE` lines, `---`, then a job's TOML):
//!   parse, substitute, check, bind every step to a fixed schema, then fit and apply the
//!   steps to a fixed batch;
//! - `filter`: the filter language: parse, type-check against the fixed schema, evaluate on
//!   the fixed batch, and check that `e` and `not (e)` never keep the same row;
//! - `parquet`: the Parquet reader over a byte-mutated file: open (footer, schema, its depth),
//!   cut shards, read every shard, and check that the rows read add up to the footer's count;
//! - `onnx`: Weir's reader of an ONNX model's protobuf (the graph `explain` reads);
//! - `http`: a request (`METHOD PATH`, then the body) to the job service's routes, in
//!   process, with an admin token ([`http`]).
//!
//! Inputs run on a thread with a 2 MiB stack, a tokio worker's.
//!
//! Inputs come from the committed seed corpus (`corpus/TARGET/`), mutated byte-wise and with
//! each target's dictionary, and, for `job` and `filter`, from a generator that writes
//! well-formed inputs from the grammar. This is not coverage-guided (that needs a nightly
//! compiler's instrumentation); inputs that a target accepts join a small pool that is
//! mutated further. Every input is written to `OUT/TARGET.current` before it runs, so:
//!
//! - a panic is caught, the input is saved under `OUT/crashes/` and the harness exits 1;
//! - an input that runs longer than `--timeout-s` is saved the same way (a hang, exit 1);
//! - an abort (a stack overflow, a failed allocation) kills the process with its signal,
//!   and `OUT/TARGET.current` holds the input that did it.
//!
//! Replay an input with `weir-fuzz TARGET --replay FILE`. The run is reproducible from its
//! `--seed` (printed at the start), except for the time-based `{{run_id}}`.

mod generate;
mod http;
mod mutate;
mod target;
mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::targets::{Outcome, Target};

/// Fuzzes Weir's job loader, filter language, Parquet reader, ONNX graph reader and service endpoints.
#[derive(Parser)]
struct Args {
    /// `job`, `filter`, `parquet`, `onnx`, `http`, or `all` (each in turn, for `--seconds` each).
    target: String,
    /// How long to fuzz each target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The random seed (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// An input that runs longer than this is a hang.
    #[arg(long, default_value_t = 10)]
    timeout_s: u64,
    /// Runs these files through the target once each instead of fuzzing.
    #[arg(long, num_args = 1..)]
    replay: Vec<PathBuf>,
    /// The seed corpus (default: this crate's `corpus/`).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Where the current input and crashes are written (default: `target/fuzz/`).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    let names: Vec<&'static str> = match args.target.as_str() {
        "all" => targets::NAMES.to_vec(),
        name if let Some(known) = targets::NAMES.iter().find(|known| **known == name) => vec![*known],
        other => {
            eprintln!("weir-fuzz: unknown target '{other}'; known: {}, all", targets::NAMES.join(", "));
            std::process::exit(2);
        }
    };
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = args.corpus.clone().unwrap_or_else(|| crate_dir.join("corpus"));
    let out = args.out.clone().unwrap_or_else(|| crate_dir.join("../../target/fuzz"));
    if let Err(error) = std::fs::create_dir_all(out.join("crashes")) {
        eprintln!("weir-fuzz: cannot create {}: {error}", out.display());
        std::process::exit(2);
    }
    // Panics the Parquet reader catches (weir_connectors::decoder_guard) are handled
    // errors, not findings: keep them quiet, as the `weir` binary does.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !weir_connectors::decoder_guard::in_parquet_decoder() {
            default_hook(info);
        }
    }));
    let watchdog = Watchdog::start(Duration::from_secs(args.timeout_s));
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    // Inputs run on a thread with a tokio worker's stack (2 MiB), where `weir run` plans and
    // reads and `weir serve` used to check definitions: a recursion that only the main
    // thread's 8 MiB survives is a finding (an abort, with the input in TARGET.current).
    let fuzzing = std::thread::Builder::new()
        .name("weir-fuzz".into())
        .stack_size(2 << 20)
        .spawn(move || fuzz_all(&args, &names, &corpus, &out, seed, &watchdog))
        .unwrap_or_else(|error| {
            eprintln!("weir-fuzz: cannot start the fuzzing thread: {error}");
            std::process::exit(2);
        });
    if fuzzing.join().is_err() {
        std::process::exit(1);
    }
}

/// Fuzzes (or replays inputs into) each of `names` in turn.
fn fuzz_all(args: &Args, names: &[&str], corpus: &Path, out: &Path, seed: u64, watchdog: &Watchdog) {
    for &name in names {
        let mut target = targets::new(name);
        let current = out.join(format!("{name}.current"));
        watchdog.watch(&current, out, name);
        if !args.replay.is_empty() {
            for file in &args.replay {
                let input = std::fs::read(file).unwrap_or_else(|error| {
                    eprintln!("weir-fuzz: cannot read {}: {error}", file.display());
                    std::process::exit(2);
                });
                let outcome = run_one(&mut *target, &input, &current, out, name, watchdog);
                println!("{name}: {}: {outcome:?}", file.display());
            }
            continue;
        }
        let seeds = read_seeds(&corpus.join(name));
        if seeds.is_empty() {
            eprintln!("weir-fuzz: no seeds in {}", corpus.join(name).display());
            std::process::exit(2);
        }
        fuzz(&mut *target, name, seeds, seed, Duration::from_secs(args.seconds), &current, out, watchdog);
    }
}

/// Mutates and runs inputs for `budget`; exits the process on a failure.
#[allow(clippy::too_many_arguments)]
fn fuzz(
    target: &mut dyn Target,
    name: &str,
    seeds: Vec<Vec<u8>>,
    seed: u64,
    budget: Duration,
    current: &Path,
    out: &Path,
    watchdog: &Watchdog,
) {
    println!("{name}: fuzzing for {} s with seed {seed} ({} seed inputs)", budget.as_secs(), seeds.len());
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let (mut accepted, mut refused) = (0u64, 0u64);
    let started = Instant::now();
    while started.elapsed() < budget {
        let input = if rng.u8(..100) < target.generated_percent() {
            target.generate(&mut rng)
        } else {
            let base = if !pool.is_empty() && rng.bool() {
                &pool[rng.usize(..pool.len())]
            } else {
                &seeds[rng.usize(..seeds.len())]
            };
            let other = &seeds[rng.usize(..seeds.len())];
            mutate::mutate(&mut rng, base, other, target.dictionary(), target.max_len(), target.tail_bias())
        };
        match run_one(target, &input, current, out, name, watchdog) {
            Outcome::Accepted => {
                accepted += 1;
                if pool.len() < 512 {
                    pool.push(input);
                } else {
                    let slot = rng.usize(..pool.len());
                    pool[slot] = input;
                }
            }
            Outcome::Refused => refused += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let total = accepted + refused;
    println!(
        "{name}: {total} inputs in {seconds:.0} s ({:.0}/s): {accepted} accepted, {refused} refused with an error; no panic, abort or hang",
        total as f64 / seconds
    );
}

/// Runs one input under the watchdog; a panic saves the input and exits 1.
fn run_one(
    target: &mut dyn Target,
    input: &[u8],
    current: &Path,
    out: &Path,
    name: &str,
    watchdog: &Watchdog,
) -> Outcome {
    if let Err(error) = std::fs::write(current, input) {
        eprintln!("weir-fuzz: cannot write {}: {error}", current.display());
        std::process::exit(2);
    }
    watchdog.begin();
    let result = catch_unwind(AssertUnwindSafe(|| target.run(input)));
    watchdog.end();
    match result {
        Ok(outcome) => outcome,
        Err(_) => {
            let saved = save_crash(out, name, "panic", input);
            eprintln!("weir-fuzz: {name}: PANIC on the input saved as {}", saved.display());
            eprintln!("replay it with: weir-fuzz {name} --replay {}", saved.display());
            std::process::exit(1);
        }
    }
}

/// Copies a failing input to `OUT/crashes/TARGET-KIND-HASH`.
fn save_crash(out: &Path, name: &str, kind: &str, input: &[u8]) -> PathBuf {
    // FNV-1a: a stable name for the same input.
    let hash = input.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    let path = out.join("crashes").join(format!("{name}-{kind}-{hash:016x}"));
    if let Err(error) = std::fs::write(&path, input) {
        eprintln!("weir-fuzz: cannot save the input to {}: {error}", path.display());
    }
    path
}

/// Every file of a corpus directory, sorted by name.
fn read_seeds(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|entry| entry.ok().map(|e| e.path())).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    paths.sort();
    paths.iter().filter_map(|path| std::fs::read(path).ok()).collect()
}

/// A thread that ends the process when one input runs longer than the timeout, after
/// saving the input.
struct Watchdog {
    /// Milliseconds since `epoch` when the running input started, plus one; 0 when idle.
    running_since: Arc<AtomicU64>,
    epoch: Instant,
    state: Arc<std::sync::Mutex<(PathBuf, PathBuf, String)>>,
}

impl Watchdog {
    fn start(timeout: Duration) -> Watchdog {
        let running_since = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();
        let state = Arc::new(std::sync::Mutex::new((PathBuf::new(), PathBuf::new(), String::new())));
        let (since, watched) = (running_since.clone(), state.clone());
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(250));
                let started = since.load(Ordering::Acquire);
                if started == 0 {
                    continue;
                }
                let now = epoch.elapsed().as_millis() as u64 + 1;
                if now.saturating_sub(started) > timeout.as_millis() as u64 {
                    let (current, out, name) = watched.lock().map(|s| s.clone()).unwrap_or_default();
                    let input = std::fs::read(&current).unwrap_or_default();
                    let saved = save_crash(&out, &name, "hang", &input);
                    eprintln!(
                        "weir-fuzz: {name}: HANG: an input ran longer than {} s; saved as {}",
                        timeout.as_secs(),
                        saved.display()
                    );
                    std::process::exit(1);
                }
            }
        });
        Watchdog { running_since, epoch, state }
    }

    fn watch(&self, current: &Path, out: &Path, name: &str) {
        if let Ok(mut state) = self.state.lock() {
            *state = (current.to_path_buf(), out.to_path_buf(), name.to_string());
        }
    }

    fn begin(&self) {
        self.running_since.store(self.epoch.elapsed().as_millis() as u64 + 1, Ordering::Release);
    }

    fn end(&self) {
        self.running_since.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed seed runs through its target without a panic.
    #[test]
    fn the_seed_corpus_runs_clean() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        for name in targets::NAMES {
            let seeds = read_seeds(&corpus.join(name));
            assert!(seeds.len() >= 5, "{name}: only {} seeds", seeds.len());
            let mut target = targets::new(name);
            let accepted = seeds.iter().filter(|seed| target.run(seed) == Outcome::Accepted).count();
            assert!(accepted > 0, "{name}: no seed is accepted, so mutations start from nothing valid");
        }
    }

    /// The generators write inputs the targets accept, most of the time.
    #[test]
    fn generated_inputs_are_mostly_accepted() {
        let mut rng = fastrand::Rng::with_seed(7);
        for name in ["job", "filter"] {
            let mut target = targets::new(name);
            let accepted = (0..200)
                .filter(|_| {
                    let input = target.generate(&mut rng);
                    target.run(&input) == Outcome::Accepted
                })
                .count();
            assert!(accepted >= 60, "{name}: {accepted} of 200 generated inputs accepted");
        }
    }
}
