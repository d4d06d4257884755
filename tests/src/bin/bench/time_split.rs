//! `BENCH_TIME=1` (`make bench-time`): where Envoy's CPU time per request
//! goes, by code region, sampled by `perf` with the kernel's software clock
//! (this machine has no hardware counters).
//!
//! Instructions (`instructions.rs`) say how much work each part does, not
//! how long it takes: RSA arithmetic in Envoy's native jwt_authn runs many
//! instructions per cycle, V8's code and the host-call glue few. This
//! samples time: every sample is a running instruction of an Envoy thread,
//! with its call chain (frame pointers), and falls in one region:
//! - the VM's code: V8's code space (the wasm functions and the wrappers
//!   between wasm and C++), which perf maps as `[JIT]` / `perf-<pid>.map`;
//! - Envoy called from the VM: Envoy's code with a VM frame in its call
//!   chain (host calls, and V8's runtime called by wasm). A frame without a
//!   frame pointer ends the chain early, so this is a lower bound, and the
//!   rest is counted below;
//! - Envoy, the rest: request processing, calling into the VM;
//! - the kernel (network stack, scheduling) and shared libraries.
//!
//! Shares of the samples times the CPU microseconds per request of the same
//! window (`/proc`) give microseconds per region.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// CPU time by region, as shares (0..1) of the samples or, after
/// `scaled`, microseconds per request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimeSplit {
    pub vm: f64,
    pub envoy_from_vm: f64,
    pub envoy_rest: f64,
    pub kernel: f64,
    pub libraries: f64,
}

impl TimeSplit {
    pub fn scaled(&self, by: f64) -> TimeSplit {
        TimeSplit {
            vm: self.vm * by,
            envoy_from_vm: self.envoy_from_vm * by,
            envoy_rest: self.envoy_rest * by,
            kernel: self.kernel * by,
            libraries: self.libraries * by,
        }
    }

    pub fn parts(&self) -> [f64; 5] {
        [
            self.vm,
            self.envoy_from_vm,
            self.envoy_rest,
            self.kernel,
            self.libraries,
        ]
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Region {
    Vm,
    Envoy,
    Kernel,
    Libraries,
}

/// The region of one `perf script` line (`<address> (<object>)`).
fn region(line: &str) -> Region {
    let object = line
        .rsplit_once('(')
        .map_or("", |(_, o)| o.trim_end_matches(')'));
    let file = object.rsplit('/').next().unwrap_or(object);
    if object.starts_with("[JIT]") || (file.starts_with("perf-") && file.ends_with(".map")) {
        Region::Vm
    } else if object.starts_with("[kernel") {
        Region::Kernel
    } else if file == "envoy" {
        Region::Envoy
    } else {
        Region::Libraries
    }
}

/// Shares of the samples of `perf script -F ip,dso` (a sample: its leaf
/// line, then its callers, then a blank line). `None` without samples.
pub fn classify(script: &str) -> Option<(TimeSplit, usize)> {
    let mut counts = TimeSplit::default();
    let mut samples = 0usize;
    for sample in script.split("\n\n") {
        let mut lines = sample.lines().map(str::trim).filter(|l| !l.is_empty());
        let Some(leaf) = lines.next() else {
            continue;
        };
        samples += 1;
        match region(leaf) {
            Region::Vm => counts.vm += 1.0,
            Region::Kernel => counts.kernel += 1.0,
            Region::Libraries => counts.libraries += 1.0,
            Region::Envoy => {
                if lines.any(|l| region(l) == Region::Vm) {
                    counts.envoy_from_vm += 1.0;
                } else {
                    counts.envoy_rest += 1.0;
                }
            }
        }
    }
    (samples > 0).then(|| (counts.scaled(1.0 / samples as f64), samples))
}

/// A `perf record` of one process, until `finish`.
pub struct Recording {
    perf: Child,
    data: PathBuf,
}

/// Starts sampling `pid` (all its threads) into `data`.
pub fn record(pid: u32, data: &Path) -> Result<Recording, String> {
    let perf = Command::new(perf_bin())
        .args(["record", "-q", "-e", "cpu-clock", "-F", "4999", "-g", "-p"])
        .arg(pid.to_string())
        .arg("-o")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("perf: {e} (apt-get install linux-perf)"))?;
    // perf attaches to every thread before the first sample; requests sent
    // earlier would go unsampled.
    std::thread::sleep(std::time::Duration::from_millis(500));
    Ok(Recording {
        perf,
        data: data.to_path_buf(),
    })
}

impl Recording {
    /// Stops the recording (SIGINT, so perf writes its file) and returns
    /// the shares and the sample count.
    pub fn finish(mut self) -> Result<(TimeSplit, usize), String> {
        let pid = self.perf.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let status = self.perf.wait().map_err(|e| e.to_string())?;
        // perf writes its file on SIGINT, then ends by the same signal.
        if !status.success() && std::os::unix::process::ExitStatusExt::signal(&status) != Some(2) {
            return Err(format!("perf record: {status}"));
        }
        let out = Command::new(perf_bin())
            .args(["script", "-F", "ip,dso", "-i"])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("perf script: {e}"))?;
        let _ = std::fs::remove_file(&self.data);
        let text = String::from_utf8_lossy(&out.stdout);
        classify(&text).ok_or_else(|| format!("{}: no samples", self.data.display()))
    }
}

fn perf_bin() -> String {
    std::env::var("PERF_BIN").unwrap_or_else(|_| "perf".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shape of `perf script -F ip,dso` with call chains (perf 6.1): a
    // VM leaf, an Envoy leaf called from the VM, an Envoy leaf without a VM
    // caller, a kernel leaf, a libc leaf.
    const SCRIPT: &str = "\
\t    14796d466 (/tmp/perf-3786.map)
\t    14796d3d6 (/tmp/perf-3786.map)
\t     2fac014 (/opt/envoy/_bin/envoy)

\t     2fac8ea (/opt/envoy/_bin/envoy)
\t     2f4921e (/opt/envoy/_bin/envoy)
\t    14796d37d (/tmp/perf-3786.map)
\t     2c98501 (/opt/envoy/_bin/envoy)

\t     556b54b (/opt/envoy/_bin/envoy)
\t     5570e80 (/opt/envoy/_bin/envoy)

\tffffffff8a2 ([kernel.kallsyms])
\t     556b54b (/opt/envoy/_bin/envoy)

\t       1a2b3 (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t    14796d37d ([JIT] tid 3786)

";

    #[test]
    fn samples_fall_in_their_leaf_region_and_envoy_splits_by_caller() {
        let (split, samples) = classify(SCRIPT).unwrap();
        assert_eq!(samples, 5);
        assert_eq!(
            split,
            TimeSplit {
                vm: 0.2,
                envoy_from_vm: 0.2,
                envoy_rest: 0.2,
                kernel: 0.2,
                libraries: 0.2,
            }
        );
    }

    #[test]
    fn both_spellings_of_the_vm_region_count_as_vm() {
        let (split, _) = classify("\t 1 ([JIT] tid 9)\n\n\t 2 (/tmp/perf-9.map)\n").unwrap();
        assert_eq!(split.vm, 1.0);
    }

    #[test]
    fn no_samples_is_none() {
        assert!(classify("\n\n").is_none());
    }
}
