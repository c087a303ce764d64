//! Helpers shared by the connectors' unit tests.

/// Creates `relative` (and its parent directories) under `dir`, holding one byte.
pub(crate) fn touch(dir: &std::path::Path, relative: &str) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"x").unwrap();
}
