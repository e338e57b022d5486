//! Runs the pymongo suites (`tests/python` of the workspace and this crate's own
//! `tests/python`) against this build's `mongo-sim` binary, so that
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

    // pytest's output goes straight to this process's stdout/stderr as it runs; the summary it
    // also writes to a report file says how many tests ran, which must be all of them.
    let report = std::env::temp_dir().join(format!("mongo-sim-pytest-{}.xml", std::process::id()));
    let status = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml"])
        .arg(&report)
        .arg("tests/python")
        .arg("crates/mongo-sim/tests/python")
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
    let xml = std::fs::read_to_string(&report).expect("pytest wrote its report");
    let _ = std::fs::remove_file(&report);
    let count = |attr: &str| -> usize {
        xml.split(&format!(" {attr}=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {attr} in the pytest report"))
    };
    let (tests, skipped) = (count("tests"), count("skipped"));
    assert_eq!(skipped, 0, "pytest skipped tests");
    assert!(
        tests >= MIN_TESTS,
        "pytest ran {tests} tests, expected at least {MIN_TESTS}"
    );
}

/// The tests in both `tests/python` directories (7 + 6): a collection error or a renamed file
/// must not pass quietly.
const MIN_TESTS: usize = 15;
