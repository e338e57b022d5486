//! Runs the pymongo suite (`tests/python`) against this build's `mongo-sim` binary, so that
//! `cargo test` covers a real client nobody here wrote. The interpreter is `$MONGO_SSE_PYTHON`
//! or the workspace's `.venv/bin/python` (created by `scripts/test`). Without it the test says so
//! loudly and passes, except under `CI=true`, where a missing interpreter is a failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Says why the suite did not run: a failure in CI, a loud note (written past libtest's output
/// capture, so it is seen even when the test passes) everywhere else.
fn skip(reason: &str) {
    let msg = format!("SKIP: pymongo test not run: {reason}; run scripts/test to create .venv");
    if in_ci() {
        panic!("{msg} (CI=true: a skipped suite is a failure)");
    }
    let mut err = std::io::stderr();
    let _ = writeln!(err, "\n==========\n{msg}\n==========");
}

#[test]
fn pymongo_suite_against_the_binary() {
    let root = workspace_root();
    let python = std::env::var_os("MONGO_SSE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    if std::env::var_os("MONGO_SSE_PYTHON").is_none() && !python.exists() {
        skip(&format!("{} does not exist", python.display()));
        return;
    }
    let probe = Command::new(&python)
        .args(["-c", "import pymongo, pytest"])
        .stdin(Stdio::null())
        .output();
    match probe {
        Err(e) => {
            skip(&format!("cannot run {}: {e}", python.display()));
            return;
        }
        Ok(out) if !out.status.success() => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| out.status.to_string());
            skip(&format!(
                "{} cannot import pymongo and pytest ({why})",
                python.display()
            ));
            return;
        }
        Ok(_) => {}
    }

    // pytest's output goes straight to this process's stdout/stderr, line by line as it runs.
    let status = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/python",
        ])
        .current_dir(&root)
        .env("MONGO_SIM_BIN", env!("CARGO_BIN_EXE_mongo-sim"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .status()
        .expect("pytest starts");
    assert!(
        status.success(),
        "pytest failed ({status}); its output is above"
    );
}
