//! `meshware validate <profile.json>`: checks a tenant profile for every filter
//! with the filters' own code (run it in CI before deploying).
//! `meshware bootstrap --profile <f> --wasm-dir <d> [...]`: prints the Envoy
//! bootstrap (JSON) with every filter, for `envoy -c` or `func-e run -c`.

use meshware_cli::bootstrap::{render, BootstrapParams};
use meshware_cli::{validate_profile, FILTERS};
use std::process::ExitCode;

const USAGE: &str = "usage:
  meshware validate <profile.json>
  meshware bootstrap --profile <profile.json> --wasm-dir <dir>
                     [--listen-port 10000] [--admin-port 9901] [--upstream-port 8080]
                     [--filters a,b,...]
  meshware istio-canary --profile <profile.json> --service <host> [--namespace default]";

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

fn validate(args: &[String]) -> Result<ExitCode, String> {
    let [path] = args else {
        return Err(USAGE.to_string());
    };
    let json = read(path)?;
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
    let mut profile = None;
    let mut wasm_dir = None;
    let mut listen_port = 10000u16;
    let mut admin_port = 9901u16;
    let mut upstream_port = 8080u16;
    let mut filters = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let port = || {
            value
                .parse::<u16>()
                .map_err(|_| format!("{flag}: not a port: {value}"))
        };
        match flag.as_str() {
            "--profile" => profile = Some(value.clone()),
            "--wasm-dir" => wasm_dir = Some(value.clone()),
            "--listen-port" => listen_port = port()?,
            "--admin-port" => admin_port = port()?,
            "--upstream-port" => upstream_port = port()?,
            "--filters" => {
                let names: Vec<String> = value.split(',').map(str::to_string).collect();
                if let Some(f) = names.iter().find(|f| meshware_cli::filter(f).is_none()) {
                    return Err(format!("--filters: unknown filter {f}"));
                }
                filters = Some(names);
            }
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    let profile_path = profile.ok_or_else(|| format!("--profile is required\n{USAGE}"))?;
    let wasm_dir = wasm_dir.ok_or_else(|| format!("--wasm-dir is required\n{USAGE}"))?;
    let json = read(&profile_path)?;
    if let Err(errors) = validate_profile(&json) {
        return Err(format!("{profile_path} is invalid:\n{errors}"));
    }
    let wasm_dir = std::fs::canonicalize(&wasm_dir).map_err(|e| format!("{wasm_dir}: {e}"))?;
    let profile = String::from_utf8(json).map_err(|_| "profile is not UTF-8".to_string())?;
    let mut params =
        BootstrapParams::suite(listen_port, admin_port, upstream_port, wasm_dir, profile);
    if let Some(filters) = filters {
        params.filters = filters;
    }
    let value = render(&params);
    let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn istio_canary(args: &[String]) -> Result<ExitCode, String> {
    let (mut profile, mut service, mut namespace) = (None, None, "default".to_string());
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?
            .clone();
        match flag.as_str() {
            "--profile" => profile = Some(value),
            "--service" => service = Some(value),
            "--namespace" => namespace = value,
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    let path = profile.ok_or_else(|| format!("--profile is required\n{USAGE}"))?;
    let service = service.ok_or_else(|| format!("--service is required\n{USAGE}"))?;
    let json = read(&path)?;
    if let Err(errors) = validate_profile(&json) {
        return Err(format!("{path} is invalid:\n{errors}"));
    }
    let docs = meshware_cli::istio::canary_routing(&json, &service, &namespace)
        .map_err(|e| e.to_string())?;
    print!(
        "{}{}",
        meshware_cli::GENERATED_HEADER,
        meshware_cli::yaml::documents(&docs)
    );
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((cmd, rest)) if cmd == "validate" => validate(rest),
        Some((cmd, rest)) if cmd == "bootstrap" => bootstrap(rest),
        Some((cmd, rest)) if cmd == "istio-canary" => istio_canary(rest),
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
