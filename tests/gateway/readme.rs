//! The README is the product's manual, so it is tested like code: its configuration table lists
//! exactly the variables the code reads, and every endpoint and command it names exists.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use regex::Regex;

use crate::common::*;
use crate::process::command;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md")
}

/// The text of one `## ` section (up to the next one).
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README has no `## {heading}` section"));
    let rest = &text[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

/// Variables the process reads that are not the gateway's configuration (documented all the
/// same, in the same table).
const OTHER_VARS: &[&str] = &["RUST_LOG"];

#[test]
fn configuration_table_lists_exactly_the_variables_the_code_reads() {
    let text = readme();
    let table = section(&text, "Configuration");
    // A row's first cell names one variable, or a pair (`A` / `B`) that shares its meaning.
    let row = Regex::new(r"(?m)^\| (`[A-Z][^|]*)\|").unwrap();
    let name = Regex::new(r"`([A-Z][A-Z0-9_]+)`").unwrap();
    let documented: BTreeSet<&str> = row
        .captures_iter(table)
        .flat_map(|c| {
            name.captures_iter(c.get(1).unwrap().as_str())
                .map(|n| n.get(1).unwrap().as_str())
        })
        .collect();
    assert!(
        documented.len() >= 30,
        "found only {} rows: {documented:?}",
        documented.len()
    );

    let read: BTreeSet<&str> = mongo_sse::config::VARS
        .iter()
        .copied()
        .chain(OTHER_VARS.iter().copied())
        .collect();
    let undocumented: Vec<_> = read.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&read).collect();
    assert!(
        undocumented.is_empty(),
        "read by the code, missing from the README table: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "in the README table, not read by the code: {unknown:?}"
    );

    // And `config::VARS` is the whole truth: every variable name the source spells out is in it.
    let literal = Regex::new(r#""((?:SSE|MONGODB)_[A-Z0-9_]+)""#).unwrap();
    let mut spelled = BTreeSet::new();
    let mut files = 0;
    for file in rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")) {
        files += 1;
        let source = std::fs::read_to_string(&file).expect("read source");
        // Unit tests spell made-up names on purpose.
        let source = source.split("#[cfg(test)]").next().unwrap_or_default();
        for c in literal.captures_iter(source) {
            spelled.insert(c[1].to_string());
        }
    }
    assert!(files >= 20, "scanned only {files} source files");
    let missing: Vec<_> = spelled
        .iter()
        .filter(|v| !read.contains(v.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "spelled in src/ but not in config::VARS: {missing:?}"
    );
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Every `METHOD /path` the README names in code, and every path a `curl` example requests.
fn endpoints(text: &str) -> BTreeSet<(String, String)> {
    let named = Regex::new(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`?\s]*)").unwrap();
    let mut out: BTreeSet<(String, String)> = named
        .captures_iter(text)
        .map(|c| (c[1].to_string(), c[2].to_string()))
        .collect();
    let curl = Regex::new(r"(?m)^\s*curl\b(.*)$").unwrap();
    let url = Regex::new(r"https?://[^/\s'\x22]+(/[^\s'\x22?]*)").unwrap();
    let method = Regex::new(r"-X\s*([A-Z]+)").unwrap();
    for c in curl.captures_iter(text) {
        let args = &c[1];
        let m = method
            .captures(args)
            .map(|m| m[1].to_string())
            .unwrap_or_else(|| {
                if args.contains(" -d ") || args.contains("--data") {
                    "POST".into()
                } else {
                    "GET".into()
                }
            });
        if let Some(u) = url.captures(args) {
            out.insert((m, u[1].to_string()));
        }
    }
    out
}

/// A path template made concrete: `{ws}` and the like get sample values.
fn concrete(path: &str) -> String {
    let placeholder = Regex::new(r"\{([a-z_]+)\}").unwrap();
    placeholder
        .replace_all(path, |c: &regex::Captures| match &c[1] {
            "file" => "sse-client.js".to_string(),
            other => format!("sample-{other}"),
        })
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_the_readme_names_exists() {
    let text = readme();
    let endpoints = endpoints(&text);
    assert!(endpoints.len() >= 8, "found only {endpoints:?}");
    let mongo = Mongo::start("readme_endpoints").await;
    let gw = start_gateway(&mongo, &[]).await;
    let base = base_url(&gw);
    let client = http();
    let mut checked = 0;
    for (method, path) in &endpoints {
        let url = format!("{base}{}", concrete(path));
        let request = client
            .request(method.parse().expect("an HTTP method"), &url)
            .header("content-type", "application/json")
            .body("{}")
            .timeout(Duration::from_secs(10));
        // Streams stay open: the status line and headers are all this needs.
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {}", error_chain(&e)));
        let status = response.status().as_u16();
        let is_stream = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let body = if is_stream {
            String::new()
        } else {
            response.text().await.unwrap_or_default()
        };
        let unrouted = status == 404 && body.contains("no such endpoint");
        assert!(
            !unrouted,
            "the README names {method} {path}, which the gateway does not route: {body}"
        );
        checked += 1;
    }
    eprintln!("{checked} endpoints checked: {endpoints:?}");
}

/// Every `mongo-sse <command>` (or `cargo run … -- <command>`) the README shows.
fn commands(text: &str) -> BTreeSet<String> {
    let code = Regex::new(r"(?s)```(?:sh|bash|console)?\n(.*?)```|`([^`\n]+)`").unwrap();
    let invocation =
        Regex::new(r"(?:^|[\s;&|(])(?:mongo-sse|cargo run(?: --release)? --) ([a-z][a-z-]*)\b")
            .unwrap();
    let mut out = BTreeSet::new();
    for c in code.captures_iter(text) {
        let snippet = c.get(1).or_else(|| c.get(2)).unwrap().as_str();
        for line in snippet.lines() {
            for i in invocation.captures_iter(line) {
                out.insert(i[1].to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_the_readme_names_exists() {
    let commands = commands(&readme());
    assert!(commands.contains("serve"), "found {commands:?}");
    let help = command(&[])
        .arg("--help")
        .output()
        .await
        .expect("mongo-sse --help");
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for c in &commands {
        assert!(
            help.contains(&format!("  {c} ")),
            "the README shows `mongo-sse {c}`, which --help does not list:\n{help}"
        );
        let out = command(&[])
            .args([c.as_str(), "--help"])
            .output()
            .await
            .expect("mongo-sse <command> --help");
        assert!(
            out.status.success(),
            "mongo-sse {c} --help: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("commands checked: {commands:?}");
}
