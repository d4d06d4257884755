//! `BENCH_INSTRUCTIONS=1` (`make bench-instructions`): instructions per
//! request, counted by valgrind's callgrind in a real Envoy.
//!
//! CPU time on this shared machine moves by tens of percent with other
//! load; a count of executed instructions does not, so it can tell apart
//! configurations (and builds) that differ by a few percent. It is not
//! time: V8's code, Envoy's allocator and the kernel run at different
//! instructions per cycle, and system calls are not counted at all. The
//! harness reports both; this one says where the work is.
//!
//! Each configuration runs once under callgrind (`--smc-check=all-non-file`,
//! which V8's generated code needs): warm-up requests, then the counters
//! are zeroed, `n` requests run and the counts are dumped; then the same
//! wall time passes with no requests and is dumped too, and subtracted:
//! the timers (metric flushes every 100 ms, Envoy's stats) run about thirty
//! times as often per request under valgrind as at full speed.

use std::path::Path;
use std::process::Command;

/// Executed instructions by where the code lives.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Split {
    /// Envoy's binary, including its code outside the file mapping (Envoy
    /// moves its hot text to anonymous memory below 4 GiB; those addresses
    /// appear in bare Envoy too).
    pub envoy: f64,
    /// Anonymous code above 4 GiB: V8's code space (the wasm modules'
    /// compiled functions and the wrappers and builtins they call).
    pub vm: f64,
    /// Shared libraries (libc's memcpy and friends, the loader).
    pub libraries: f64,
}

/// A dump's split and callgrind's own total for it (`totals:`), which the
/// split must add up to.
pub struct Dump {
    pub split: Split,
    pub totals: Option<f64>,
}

impl Split {
    pub fn total(&self) -> f64 {
        self.envoy + self.vm + self.libraries
    }

    pub fn minus(&self, other: &Split) -> Split {
        Split {
            envoy: self.envoy - other.envoy,
            vm: self.vm - other.vm,
            libraries: self.libraries - other.libraries,
        }
    }

    pub fn per(&self, n: f64) -> Split {
        Split {
            envoy: self.envoy / n,
            vm: self.vm / n,
            libraries: self.libraries / n,
        }
    }
}

/// Where the code of `object` (callgrind's `ob=`) and `function` (`fn=`)
/// belongs.
fn classify(object: &str, function: &str) -> Where {
    if object == "???" {
        let address = function
            .strip_prefix("0x")
            .and_then(|h| u64::from_str_radix(h, 16).ok());
        return match address {
            Some(a) if a < 1 << 32 => Where::Envoy,
            _ => Where::Vm,
        };
    }
    let file = object.rsplit('/').next().unwrap_or(object);
    if file == "envoy" {
        Where::Envoy
    } else {
        Where::Libraries
    }
}

#[derive(Clone, Copy)]
enum Where {
    Envoy,
    Vm,
    Libraries,
}

/// Callgrind's name compression: `(12) name` defines id 12, `(12)` uses it.
fn name<'a>(names: &mut std::collections::HashMap<&'a str, &'a str>, spec: &'a str) -> &'a str {
    let Some(rest) = spec.strip_prefix('(') else {
        return spec;
    };
    let Some((id, tail)) = rest.split_once(')') else {
        return spec;
    };
    let tail = tail.trim_start();
    if tail.is_empty() {
        names.get(id).copied().unwrap_or("?")
    } else {
        names.insert(id, tail);
        tail
    }
}

/// Exclusive instruction counts of one callgrind dump, by where the code
/// lives. A cost line right after `calls=` is the call's inclusive cost
/// (counted again in the callee), so it is skipped.
pub fn parse(dump: &str) -> Dump {
    let mut objects = std::collections::HashMap::new();
    let mut functions = std::collections::HashMap::new();
    let (mut object, mut function) = ("?", "?");
    let mut call_cost_next = false;
    let mut split = Split::default();
    let mut totals = None;
    for line in dump.lines() {
        if let Some(total) = line.strip_prefix("totals:") {
            totals = total.split_whitespace().next().and_then(|t| t.parse().ok());
        } else if let Some(spec) = line.strip_prefix("ob=") {
            object = name(&mut objects, spec);
        } else if let Some(spec) = line.strip_prefix("fn=") {
            function = name(&mut functions, spec);
        } else if let Some(spec) = line.strip_prefix("cob=") {
            name(&mut objects, spec);
        } else if let Some(spec) = line.strip_prefix("cfn=") {
            name(&mut functions, spec);
        } else if line.starts_with("calls=") {
            call_cost_next = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
            if std::mem::take(&mut call_cost_next) {
                continue;
            }
            let Some(cost) = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse::<f64>().ok())
            else {
                continue;
            };
            match classify(object, function) {
                Where::Envoy => split.envoy += cost,
                Where::Vm => split.vm += cost,
                Where::Libraries => split.libraries += cost,
            }
        }
    }
    Dump { split, totals }
}

/// valgrind's command line for Envoy, dumps to `out` (`out.1`, `out.2`, ...).
pub fn wrapper(out: &Path) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        "--smc-check=all-non-file".into(),
        format!("--callgrind-out-file={}", out.display()),
    ]
}

/// Sends a command (`-z`: zero the counters, `-d`: dump them) to the
/// callgrind run of `pid` and waits for it to be carried out.
pub fn control(pid: u32, command: &str) -> Result<(), String> {
    let status = Command::new("callgrind_control")
        .arg(command)
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("callgrind_control: {e} (apt-get install valgrind)"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("callgrind_control {command} {pid}: {status}"))
    }
}

/// Reads dump `part` of `out`; an error unless its split adds up to
/// callgrind's own total.
pub fn read_dump(out: &Path, part: u32) -> Result<Split, String> {
    let path = format!("{}.{part}", out.display());
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let dump = parse(&text);
    match dump.totals {
        Some(t) if t == dump.split.total() => Ok(dump.split),
        t => Err(format!(
            "{path}: the split adds up to {}, callgrind's total is {t:?}",
            dump.split.total()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shape of a callgrind dump (valgrind 3.19, default options):
    // compressed names, a call's inclusive cost after `calls=`.
    const DUMP: &str = "\
version: 1
creator: callgrind-3.19.0
events: Ir
ob=(1) /usr/lib/x86_64-linux-gnu/libc.so.6
fl=(1) ???
fn=(1) __memcpy_avx_unaligned_erms
0 50
ob=(2) /opt/envoy/_bin/envoy
fn=(2) 0x0000000002fad8c0
0 400
cob=(3) ???
cfn=(3) 0x00003626f6aed180
calls=2 0
0 9000
0 7
ob=(3)
fn=(3)
0 1000
fn=(4) 0x000000000628d840
0 111
ob=(2)
fn=(2)
+2 3
totals: 1571
";

    #[test]
    fn exclusive_costs_go_to_where_the_code_lives() {
        let dump = parse(DUMP);
        assert_eq!(dump.totals, Some(1571.0));
        let s = dump.split;
        // Envoy: 400 + 7 + 3 in its binary, 111 in its anonymous text below 4 GiB;
        // the call's inclusive 9000 is not counted.
        assert_eq!(s.envoy, 521.0);
        assert_eq!(s.vm, 1000.0);
        assert_eq!(s.libraries, 50.0);
        assert_eq!(s.total(), 1571.0);
    }

    #[test]
    fn the_idle_dump_is_subtracted_per_request() {
        let busy = Split {
            envoy: 1000.0,
            vm: 500.0,
            libraries: 100.0,
        };
        let idle = Split {
            envoy: 200.0,
            vm: 100.0,
            libraries: 0.0,
        };
        let per = busy.minus(&idle).per(4.0);
        assert_eq!(
            per,
            Split {
                envoy: 200.0,
                vm: 100.0,
                libraries: 25.0
            }
        );
    }
}
