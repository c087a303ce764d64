//! Finding and loading ONNX Runtime, once per process.
//!
//! Weir builds `ort` with `load-dynamic`: the library is not linked in but opened at run
//! time, and only when a job has a `score` step. `ort` itself would panic with a bare
//! "dlopen failed" when it cannot find the library, so Weir looks for it first and turns
//! every failure into an error that says what to do. It tries, in order:
//!
//! 1. `ORT_DYLIB_PATH`, the path of the library file (`ort`'s own convention);
//! 2. the `onnxruntime` Python wheel in the Python prefix the executable is installed into:
//!    for `PREFIX/bin/weir`, `PREFIX/lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so*`
//!    (also `lib64`, and Debian's `dist-packages`), which is where `pip install` of Weir's
//!    wheel (`cli/build-wheel.sh`) puts its `onnxruntime` dependency, in a virtual environment of
//!    any name or with `--user` or `--prefix`;
//! 3. the same wheel in a `.venv` of the working directory, of the `weir` executable's
//!    directory, or of any of their parents, which is where the project's set-up
//!    (`tests/run.sh`) installs it;
//! 4. `libonnxruntime.so` in `/usr/local/lib` and `/usr/lib`.
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
    let exe = std::env::current_exe().ok();
    if let Some(found) = exe.as_deref().and_then(in_exe_prefix) {
        return Ok(found);
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(dir) = std::env::current_dir() {
        roots.extend(dir.ancestors().map(Path::to_path_buf));
    }
    if let Some(dir) = exe.as_deref().and_then(Path::parent) {
        roots.extend(dir.ancestors().map(Path::to_path_buf));
    }
    for root in roots {
        if let Some(found) = in_prefix(&root.join(".venv")) {
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

/// The library of the Python prefix an executable `PREFIX/bin/weir` is installed into.
fn in_exe_prefix(exe: &Path) -> Option<PathBuf> {
    in_prefix(exe.parent()?.parent()?)
}

/// The newest `libonnxruntime.so*` of the `onnxruntime` wheel installed into a Python prefix
/// (a virtual environment, a `--user` or `--prefix` folder, `/usr/local`).
fn in_prefix(prefix: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = ["lib", "lib64"]
        .iter()
        .filter_map(|lib| std::fs::read_dir(prefix.join(lib)).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("python3"))
        .flat_map(|entry| {
            ["site-packages", "dist-packages"].map(|packages| entry.path().join(packages).join("onnxruntime/capi"))
        })
        .filter_map(|capi| std::fs::read_dir(capi).ok())
        .flat_map(|entries| entries.flatten().map(|entry| entry.path()))
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("libonnxruntime.so")))
        .collect();
    found.sort();
    found.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes `relative` under `root` as an empty file, with its folders.
    fn touch(root: &Path, relative: &str) -> PathBuf {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"").unwrap();
        path
    }

    #[test]
    fn finds_the_wheel_of_the_prefix_the_executable_is_installed_into() {
        let dir = tempfile::tempdir().unwrap();
        let exe = touch(dir.path(), "any-name/bin/weir");
        assert_eq!(in_exe_prefix(&exe), None);
        touch(dir.path(), "any-name/lib/python3.12/site-packages/numpy/libnumpy.so");
        assert_eq!(in_exe_prefix(&exe), None);
        let library =
            touch(dir.path(), "any-name/lib/python3.12/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1");
        touch(dir.path(), "any-name/lib/python3.12/site-packages/onnxruntime/capi/onnxruntime_pybind11_state.so");
        assert_eq!(in_exe_prefix(&exe), Some(library));
        // A file beside the prefix is not in it.
        assert_eq!(in_exe_prefix(&dir.path().join("weir")), None);
    }

    #[test]
    fn finds_debian_dist_packages_and_the_newest_library() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "usr/local/lib/python3.11/dist-packages/onnxruntime/capi/libonnxruntime.so.1.31.0");
        let newest =
            touch(dir.path(), "usr/local/lib/python3.11/dist-packages/onnxruntime/capi/libonnxruntime.so.1.31.1");
        assert_eq!(in_exe_prefix(&dir.path().join("usr/local/bin/weir")), Some(newest));
    }
}
