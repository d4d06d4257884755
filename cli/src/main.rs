//! `meshware validate <profile.json>`: checks a tenant profile for every filter
//! with the filters' own code (run it in CI before deploying).
//! `meshware bootstrap --profile <f> --wasm-dir <d> [...]`: prints the Envoy
//! bootstrap (JSON) with every filter, for `envoy -c` or `func-e run -c`.

use meshware_cli::{validate_profile, FILTERS};
use std::process::ExitCode;

const USAGE: &str = "usage:
  meshware validate <profile.json>
  meshware bootstrap --profile <profile.json> --wasm-dir <dir>
                     [--listen 127.0.0.1:10000] [--admin-port 9901]
                     [--upstream host:port] [--upstream <version>=host:port]...
                     [--upstream-protocol downstream|http1|http2] [--access-log /dev/stdout]
                     [--grpc-timeout-max 300] [--grpc-web on|off] [--env NAME]...
                     [--filters a,b,... | --filters suite | --native] [--ecds-dir <dir>]
                     (--native: the suite as Envoy 1.40.0's dynamic module <dir>/libmeshware.so)
  meshware hash-token < token.txt
  meshware istio --profile <profile.json> [--namespace default] [--selector app=shop]
                 [--allow-plain-secrets yes]
                 [--image oci://registry/meshware] [--tag 0.1.0] [--wasm-dir dist]
                 [--service shop.default.svc.cluster.local] [--out istio]
  meshware oci [--wasm-dir dist] [--tag 0.1.0] [--out dist/oci]
  meshware push --etcd http://host:2379 --prefix /meshware/ <profile.json>
  meshware get --etcd http://host:2379 --prefix /meshware/ [--revision N]
  meshware rollback --etcd http://host:2379 --prefix /meshware/ --to <revision>";

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

fn validate(args: &[String]) -> Result<ExitCode, String> {
    let [path] = args else {
        return Err(USAGE.to_string());
    };
    let json = read(path)?;
    for w in meshware_cli::profile_warnings(&json) {
        eprintln!("warning: {w}");
    }
    match validate_profile(&json) {
        Ok(()) => {
            let names: Vec<&str> = FILTERS.iter().map(|f| f.name).collect();
            println!("{path}: valid for {}", names.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{path}: {} problem(s)", errors.len());
            for e in errors.iter() {
                eprintln!("{e}");
            }
            Ok(ExitCode::from(1))
        }
    }
}

fn bootstrap(args: &[String]) -> Result<ExitCode, String> {
    let (value, warnings) =
        meshware_cli::bootstrap::from_args(args).map_err(|e| format!("{e}\n{USAGE}"))?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// Parses `--flag value` pairs into a map; unknown flags are errors.
fn flags(
    args: &[String],
    known: &[&str],
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if !known.contains(&flag.as_str()) {
            return Err(format!("unknown option {flag}\n{USAGE}"));
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        out.insert(flag.clone(), value.clone());
    }
    Ok(out)
}

/// sha256 of every filter module in `wasm_dir`.
/// Every module `make build` ships: the filters, then the suite module.
fn modules() -> impl Iterator<Item = &'static str> {
    FILTERS
        .iter()
        .map(|f| f.name)
        .chain([meshware_cli::bootstrap::SUITE])
}

fn module_digests(wasm_dir: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    modules()
        .map(|name| {
            let path = format!("{wasm_dir}/{name}.wasm");
            let bytes =
                std::fs::read(&path).map_err(|e| format!("{path}: {e} (run make build)"))?;
            Ok((name.to_string(), meshware_cli::oci::sha256_hex(&bytes)))
        })
        .collect()
}

fn istio(args: &[String]) -> Result<ExitCode, String> {
    let f = flags(
        args,
        &[
            "--profile",
            "--namespace",
            "--selector",
            "--image",
            "--tag",
            "--wasm-dir",
            "--service",
            "--out",
            "--allow-plain-secrets",
        ],
    )?;
    let get = |k: &str, default: &str| f.get(k).cloned().unwrap_or_else(|| default.to_string());
    let path = f
        .get("--profile")
        .ok_or_else(|| format!("--profile is required\n{USAGE}"))?;
    let json = read(path)?;
    if let Err(errors) = validate_profile(&json) {
        return Err(format!("{path} is invalid:\n{errors}"));
    }
    // The manifests carry the profile into the cluster (resources anyone in
    // the namespace may read, GitOps repositories): no secret in clear.
    let plain = meshware_cli::plain_secrets(&json);
    if !plain.is_empty() && f.get("--allow-plain-secrets").map(String::as_str) != Some("yes") {
        return Err(format!(
            "{path} holds secrets in clear; give hashes or environment references instead, or pass --allow-plain-secrets yes:\n{}",
            plain.join("\n")
        ));
    }
    let text = String::from_utf8(json).map_err(|_| "profile is not UTF-8".to_string())?;
    let mut selector = std::collections::BTreeMap::new();
    for pair in get("--selector", "app=shop").split(',') {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("--selector: expected key=value, got {pair}"))?;
        selector.insert(k.trim().to_string(), v.trim().to_string());
    }
    let params = meshware_cli::istio::IstioParams {
        namespace: get("--namespace", "default"),
        selector,
        image: get("--image", "oci://ghcr.io/example/meshware"),
        tag: get("--tag", env!("CARGO_PKG_VERSION")),
        sha256: module_digests(&get("--wasm-dir", "dist"))?,
    };
    let service = get("--service", "shop.default.svc.cluster.local");
    let files =
        meshware_cli::istio::render_all(&text, &params, &service).map_err(|e| e.to_string())?;
    let out = get("--out", "istio");
    for (name, content) in files {
        let p = std::path::Path::new(&out).join(name);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let p = p.display().to_string();
        std::fs::write(&p, content).map_err(|e| format!("{p}: {e}"))?;
        println!("wrote {p}");
    }
    Ok(ExitCode::SUCCESS)
}

fn oci(args: &[String]) -> Result<ExitCode, String> {
    let f = flags(args, &["--wasm-dir", "--tag", "--out"])?;
    let wasm_dir = f
        .get("--wasm-dir")
        .cloned()
        .unwrap_or_else(|| "dist".into());
    let tag = f
        .get("--tag")
        .cloned()
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").into());
    let out = f.get("--out").cloned().unwrap_or_else(|| "dist/oci".into());
    for name in modules() {
        let path = format!("{wasm_dir}/{name}.wasm");
        let wasm = std::fs::read(&path).map_err(|e| format!("{path}: {e} (run make build)"))?;
        let dir = std::path::Path::new(&out).join(name.replace('_', "-"));
        let digest = meshware_cli::oci::write_layout(&dir, &wasm, &tag)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        println!(
            "{}  {digest}  plugin.wasm sha256:{}",
            dir.display(),
            meshware_cli::oci::sha256_hex(&wasm)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `meshware hash-token`: the token from stdin (never argv, which other
/// users and shell histories see), its `sha256:<hex>` on stdout.
fn hash_token() -> Result<ExitCode, String> {
    let mut token = String::new();
    std::io::stdin()
        .read_line(&mut token)
        .map_err(|e| format!("cannot read the token from stdin: {e}"))?;
    let token = token.trim_end_matches(['\r', '\n']);
    if token.is_empty() {
        return Err("no token on stdin (printf %s \"$TOKEN\" | meshware hash-token)".to_string());
    }
    println!("{}", meshware_cli::hash_token(token));
    Ok(ExitCode::SUCCESS)
}

/// `--etcd` and `--prefix`, required by every store command.
fn store_flags(
    f: &std::collections::BTreeMap<String, String>,
) -> Result<(meshware_cli::etcd::Endpoint, String), String> {
    let url = f
        .get("--etcd")
        .ok_or_else(|| format!("--etcd is required\n{USAGE}"))?;
    let prefix = f
        .get("--prefix")
        .ok_or_else(|| format!("--prefix is required\n{USAGE}"))?;
    if prefix.is_empty() {
        return Err("--prefix: must not be empty".into());
    }
    Ok((meshware_cli::etcd::Endpoint::parse(url)?, prefix.clone()))
}

fn push_profile(
    etcd: &meshware_cli::etcd::Endpoint,
    prefix: &str,
    profile: &serde_json::Value,
    what: &str,
) -> Result<ExitCode, String> {
    println!("{}", meshware_cli::etcd::push(etcd, prefix, profile, what)?);
    Ok(ExitCode::SUCCESS)
}

fn push(args: &[String]) -> Result<ExitCode, String> {
    let Some((path, flag_args)) = args.split_last() else {
        return Err(USAGE.to_string());
    };
    let f = flags(flag_args, &["--etcd", "--prefix"])?;
    let (etcd, prefix) = store_flags(&f)?;
    let json = read(path)?;
    let profile: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| format!("{path}: (root): invalid JSON: {e}"))?;
    push_profile(&etcd, &prefix, &profile, path)
}

fn get(args: &[String]) -> Result<ExitCode, String> {
    let f = flags(args, &["--etcd", "--prefix", "--revision"])?;
    let (etcd, prefix) = store_flags(&f)?;
    let revision = match f.get("--revision") {
        Some(r) => Some(
            r.parse()
                .map_err(|_| format!("--revision: not a number: {r}"))?,
        ),
        None => None,
    };
    let stored = meshware_cli::etcd::read(&etcd, &prefix, revision)?;
    let profile = meshware_cli::etcd::profile_of(&stored)?;
    let text = serde_json::to_string_pretty(&profile).map_err(|e| e.to_string())?;
    println!("{text}");
    eprintln!("store revision {}", stored.revision);
    Ok(ExitCode::SUCCESS)
}

fn rollback(args: &[String]) -> Result<ExitCode, String> {
    let f = flags(args, &["--etcd", "--prefix", "--to"])?;
    let (etcd, prefix) = store_flags(&f)?;
    let to: u64 = f
        .get("--to")
        .ok_or_else(|| format!("--to is required\n{USAGE}"))?
        .parse()
        .map_err(|_| "--to: not a revision number".to_string())?;
    let stored = meshware_cli::etcd::read(&etcd, &prefix, Some(to))?;
    let profile =
        meshware_cli::etcd::profile_of(&stored).map_err(|e| format!("revision {to}: {e}"))?;
    push_profile(
        &etcd,
        &prefix,
        &profile,
        &format!("rollback to revision {to}"),
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((cmd, rest)) if cmd == "validate" => validate(rest),
        Some((cmd, rest)) if cmd == "bootstrap" => bootstrap(rest),
        Some((cmd, rest)) if cmd == "istio" => istio(rest),
        Some((cmd, rest)) if cmd == "oci" => oci(rest),
        Some((cmd, rest)) if cmd == "push" => push(rest),
        Some((cmd, rest)) if cmd == "get" => get(rest),
        Some((cmd, rest)) if cmd == "rollback" => rollback(rest),
        Some((cmd, rest)) if cmd == "hash-token" && rest.is_empty() => hash_token(),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}
