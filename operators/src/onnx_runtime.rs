//! Finding and loading ONNX Runtime, once per process.
//!
//! Weir builds `ort` with `load-dynamic`: the library is not linked in but opened at run
//! time, and only when a job has a `score` step. `ort` itself would panic with a bare
//! "dlopen failed" when it cannot find the library, so Weir looks for it first and turns
//! every failure into an error that says what to do. It tries, in order:
//!
//! 1. `ORT_DYLIB_PATH`, the path of the library file (`ort`'s own convention);
//! 2. the `onnxruntime` Python wheel in a `.venv` of the working directory, of the `weir`
//!    executable's directory, or of any of their parents
//!    (`.venv/lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so.*`), which is
//!    where the project's set-up (`tests/run.sh`) installs it;
//! 3. `libonnxruntime.so` in `/usr/local/lib` and `/usr/lib`.
//!
//! The library must be ONNX Runtime 1.31 or newer (the C API level Weir is built against).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use crate::OpError;

/// The command that installs the library where Weir finds it.
pub const INSTALL_HINT: &str = "python3 -m venv .venv && .venv/bin/pip install onnxruntime==1.31.1 (in the directory you run weir from), \
     or set ORT_DYLIB_PATH to a libonnxruntime.so of version 1.31 or newer";

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The process's ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<&'static Environment, OpError> {
    ENVIRONMENT
        .get_or_init(|| {
            let library = locate()?;
            let builder = ort::init_from(&library).map_err(|e| {
                format!("cannot load ONNX Runtime from '{}': {e}; install it with: {INSTALL_HINT}", library.display())
            })?;
            builder
                .with_name("weir")
                .with_telemetry(false)
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime from '{}': {e}", library.display()))
        })
        .as_ref()
        .map_err(|message| OpError::InvalidSpec(message.clone()))
}

/// Where the library is; see the module documentation.
pub fn locate() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "ORT_DYLIB_PATH is '{}', which is not a file; install ONNX Runtime with: {INSTALL_HINT}",
                path.display()
            ))
        };
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(dir) = std::env::current_dir() {
        roots.extend(dir.ancestors().map(Path::to_path_buf));
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        roots.extend(dir.ancestors().map(Path::to_path_buf));
    }
    for root in roots {
        if let Some(found) = in_venv(&root.join(".venv")) {
            return Ok(found);
        }
    }
    for dir in ["/usr/local/lib", "/usr/lib"] {
        let candidate = Path::new(dir).join("libonnxruntime.so");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(format!("ONNX Runtime (libonnxruntime.so, 1.31 or newer) was not found; install it with: {INSTALL_HINT}"))
}

/// The newest `libonnxruntime.so*` of the `onnxruntime` wheel in a virtual environment.
fn in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .ok()?
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("python3"))
        .filter_map(|entry| std::fs::read_dir(entry.path().join("site-packages/onnxruntime/capi")).ok())
        .flat_map(|entries| entries.flatten().map(|entry| entry.path()))
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("libonnxruntime.so")))
        .collect();
    found.sort();
    found.pop()
}
