//! `cargo run -p build-contracts [-- --check]`: compiles `contracts/src/*.sol` through
//! foundry-compilers, driving the pinned solc-js behind `tools/solc/solc` (no native compiler
//! is downloaded), into `contracts/out/<Name>.json`: the ABI and bytecode artifact `alloy::sol!`
//! binds at build time. `--check` recompiles and fails when a committed artifact differs or
//! belongs to no contract any more (`scripts/test` runs it).
//!
//! The settings are fixed here and in `foundry.toml` alike: cancun (deployable on every current
//! EVM chain), optimizer 1000 runs, no metadata hash (the bytecode depends on source and
//! settings only).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use foundry_compilers::artifacts::{CompilerOutput, Severity};
use foundry_compilers::solc::Solc;
use serde::Serialize;
use serde_json::{Value, json};

/// One artifact, fields in the order `sol!` users are used to reading them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Artifact<'a> {
    contract_name: &'a str,
    source_name: &'a str,
    abi: &'a Value,
    bytecode: Value,
    deployed_bytecode: Value,
}

fn sources(src: &Path) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "sol") {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            let content = std::fs::read_to_string(&p)?;
            out.insert(format!("src/{name}"), json!({ "content": content }));
        }
    }
    Ok(out)
}

fn run(root: &Path, check: bool) -> anyhow::Result<bool> {
    let solc = Solc::new(root.join("tools/solc/solc"))
        .context("tools/solc/solc (run scripts/setup: it installs solc-js)")?;
    let sources = sources(&root.join("contracts/src"))?;
    eprintln!(
        "[build-contracts] compiling {} with solc {} (foundry-compilers over tools/solc/solc)",
        sources.keys().cloned().collect::<Vec<_>>().join(", "),
        solc.version
    );
    let input = json!({
        "language": "Solidity",
        "sources": sources,
        "settings": {
            "evmVersion": "cancun",
            "optimizer": { "enabled": true, "runs": 1000 },
            "metadata": { "bytecodeHash": "none" },
            "outputSelection": { "*": { "*": ["abi", "devdoc", "userdoc", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
        },
    });
    let raw = solc.compile_output(&input).context("running solc")?;
    // Typed for the diagnostics; raw for the ABI, kept exactly as solc wrote it.
    let typed: CompilerOutput = serde_json::from_slice(&raw).context("solc's output")?;
    for e in &typed.errors {
        eprintln!("{}", e.formatted_message.as_deref().unwrap_or(&e.message));
    }
    if typed.errors.iter().any(|e| e.severity == Severity::Error) {
        bail!("the contracts do not compile");
    }
    let out: Value = serde_json::from_slice(&raw)?;
    let out_dir = root.join("contracts/out");
    std::fs::create_dir_all(&out_dir)?;
    let mut same = true;
    let mut written = Vec::new();
    let files = out["contracts"]
        .as_object()
        .context("no contracts in solc's output")?;
    let mut undocumented = Vec::new();
    for (file, contracts) in files {
        let source = sources
            .get(file)
            .and_then(|s| s["content"].as_str())
            .unwrap_or_default();
        for (name, c) in contracts.as_object().into_iter().flatten() {
            undocumented.extend(natspec_gaps(name, c, &public_state_variables(source)));
            let code = |k: &str| -> anyhow::Result<Value> {
                let hex = c["evm"][k]["object"]
                    .as_str()
                    .filter(|h| !h.is_empty())
                    .with_context(|| format!("solc wrote no {k} for {name}"))?;
                Ok(json!({ "object": format!("0x{hex}") }))
            };
            let artifact = Artifact {
                contract_name: name,
                source_name: file,
                abi: &c["abi"],
                bytecode: code("bytecode")?,
                deployed_bytecode: code("deployedBytecode")?,
            };
            let text = format!("{}\n", serde_json::to_string_pretty(&artifact)?);
            let dest: PathBuf = out_dir.join(format!("{name}.json"));
            written.push(dest.clone());
            let shown = dest
                .strip_prefix(root)
                .unwrap_or(&dest)
                .display()
                .to_string();
            if check {
                if std::fs::read_to_string(&dest).ok().as_deref() == Some(text.as_str()) {
                    eprintln!("[build-contracts] ok: {shown} matches {file}");
                } else {
                    eprintln!(
                        "[build-contracts] DRIFT: {shown} differs from a fresh compile of {file}"
                    );
                    same = false;
                }
            } else {
                std::fs::write(&dest, &text)?;
                let runtime = c["evm"]["deployedBytecode"]["object"]
                    .as_str()
                    .map_or(0, |s| s.len() / 2);
                eprintln!("[build-contracts] wrote {shown} ({runtime} bytes runtime)");
            }
        }
    }
    if !undocumented.is_empty() {
        for u in &undocumented {
            eprintln!("[build-contracts] NATSPEC: {u}");
        }
        bail!(
            "{} NatSpec gaps: every external function, event and error needs a notice and an @param for each parameter (and functions an @return for each result)",
            undocumented.len()
        );
    }
    // An artifact of a contract that no longer exists is bound by nothing but misleads
    // readers: a check fails on it, a build removes it.
    for e in std::fs::read_dir(&out_dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "json") && !written.contains(&p) {
            let shown = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            if check {
                eprintln!(
                    "[build-contracts] STALE: {shown} belongs to no contract in contracts/src"
                );
                same = false;
            } else {
                std::fs::remove_file(&p)?;
                eprintln!("[build-contracts] removed {shown} (no such contract any more)");
            }
        }
    }
    Ok(same)
}

/// Names of the public state variables declared in `source`: their getters are documented by
/// the variable's comment (NatSpec gives state variables no @param).
fn public_state_variables(source: &str) -> Vec<String> {
    source
        .lines()
        .filter(|l| l.starts_with("    ") && !l.starts_with("     ") && l.contains(" public "))
        .filter(|l| !l.trim_start().starts_with("function") && !l.trim_start().starts_with("//"))
        .filter_map(|l| {
            let after = l.split(" public ").nth(1)?;
            after
                .split_whitespace()
                .find(|w| !matches!(*w, "constant" | "immutable"))
                .map(|w| w.trim_end_matches(';').to_owned())
        })
        .collect()
}

/// What the NatSpec of contract `name` leaves out: a notice for every function, event and
/// error of its ABI, an @param for every named parameter, an @return for every result of a
/// function (public state variables' getters need only their notice).
fn natspec_gaps(name: &str, c: &Value, getters: &[String]) -> Vec<String> {
    let (dev, user) = (&c["devdoc"], &c["userdoc"]);
    let mut gaps = Vec::new();
    for item in c["abi"].as_array().into_iter().flatten() {
        let kind = item["type"].as_str().unwrap_or_default();
        let fname = item["name"].as_str().unwrap_or_default();
        let types: Vec<String> = item["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(abi_type)
            .collect();
        let sig = format!("{fname}({})", types.join(","));
        let (docs, notice_at) = match kind {
            "function" => (&dev["methods"][&sig], &user["methods"][&sig]),
            "event" => (&dev["events"][&sig], &user["events"][&sig]),
            "error" => (&dev["errors"][&sig][0], &user["errors"][&sig][0]),
            _ => continue,
        };
        let has_notice = notice_at["notice"].is_string() || docs["details"].is_string();
        if !has_notice {
            gaps.push(format!("{name}.{sig} ({kind}) has no notice"));
        }
        if kind == "function" && getters.iter().any(|g| g == fname) {
            continue;
        }
        for input in item["inputs"].as_array().into_iter().flatten() {
            let p = input["name"].as_str().unwrap_or_default();
            if !p.is_empty() && !docs["params"][p].is_string() {
                gaps.push(format!("{name}.{sig} ({kind}): no @param {p}"));
            }
        }
        if kind == "function" {
            for (i, out) in item["outputs"].as_array().into_iter().flatten().enumerate() {
                let key = match out["name"].as_str().unwrap_or_default() {
                    "" => format!("_{i}"),
                    n => n.to_owned(),
                };
                if !docs["returns"][&key].is_string() {
                    gaps.push(format!("{name}.{sig}: no @return for result {key}"));
                }
            }
        }
    }
    gaps
}

/// A parameter's type as it appears in a signature (tuples spelled out).
fn abi_type(p: &Value) -> String {
    let t = p["type"].as_str().unwrap_or_default();
    match t.strip_prefix("tuple") {
        Some(suffix) => {
            let inner: Vec<String> = p["components"]
                .as_array()
                .into_iter()
                .flatten()
                .map(abi_type)
                .collect();
            format!("({}){suffix}", inner.join(","))
        }
        None => t.to_owned(),
    }
}

/// The project folder: the nearest folder upwards from here with `contracts/src` and
/// `tools/solc/solc`, so the tool works from any checkout and subfolder.
fn project_root() -> anyhow::Result<PathBuf> {
    let here = std::env::current_dir()?;
    here.ancestors()
        .find(|d| d.join("contracts/src").is_dir() && d.join("tools/solc/solc").exists())
        .map(Path::to_path_buf)
        .with_context(|| {
            format!(
                "no contracts/src and tools/solc/solc in {} or above: run it inside the ehr-share checkout",
                here.display()
            )
        })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = match args.as_slice() {
        [] => false,
        [a] if a == "--check" => true,
        _ => {
            eprintln!("usage: build-contracts [--check]");
            return ExitCode::from(2);
        }
    };
    match project_root().and_then(|root| run(&root, check)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!(
                "[build-contracts] run `cargo run -p build-contracts` and commit contracts/out"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("[build-contracts] {e:#}");
            ExitCode::from(2)
        }
    }
}
