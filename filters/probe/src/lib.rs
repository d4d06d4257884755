//! Benchmark instrument (`make bench`), two plans:
//! - `{"call": "<kind>", "count": N}` (`BENCH_PROBE=1`): on every request's
//!   headers, make one kind of host call ([`CALLS`]) `count` times. Against
//!   the no-op module in the same rounds, (probe - no-op) / count is what
//!   one such call costs Envoy.
//! - `{"replay": [<step>, ...]}`: make exactly the host calls another module
//!   made for one request, in the callbacks it made them in, with the same
//!   arguments and nothing else (the steps are the stand-in host's trace,
//!   `tests/vmprof/host.cjs` with `VMPROF_TRACE`). Replaying the suite's
//!   trace measures what its host calls cost Envoy without its code: the
//!   least a module that tells Envoy the same things can cost.

/// The host calls the probe can make, as the filters make them.
pub const CALLS: &[&str] = &[
    "get_header",
    "get_headers",
    "set_header",
    "get_property",
    "set_property",
    "increment_metric",
    "shared_data",
    "current_time",
];

/// The callbacks a replayed call can be made in, in the order Envoy makes
/// them for a request.
pub const PHASES: &[&str] = &[
    "request_headers",
    "response_headers",
    "response_body",
    "log",
    "done",
];

/// One host call of a replay, with its arguments prepared (strings as the
/// bytes the host reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    GetMap {
        map: u32,
    },
    GetMapValue {
        map: u32,
        key: Vec<u8>,
    },
    ReplaceMapValue {
        map: u32,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    AddMapValue {
        map: u32,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    RemoveMapValue {
        map: u32,
        key: Vec<u8>,
    },
    /// The path's segments joined by NUL, as the ABI passes it.
    GetProperty {
        path: Vec<u8>,
    },
    SetProperty {
        path: Vec<u8>,
        value: Vec<u8>,
    },
    GetSharedData {
        key: Vec<u8>,
    },
    /// Written with the CAS of the last read of the same replay.
    SetSharedData {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    CurrentTime,
    ForeignFunction {
        name: Vec<u8>,
        argument: Vec<u8>,
    },
    /// Metric type as the ABI numbers it (0 counter, 1 gauge, 2 histogram).
    IncrementMetric {
        metric_type: u32,
        delta: i64,
    },
    RecordMetric {
        metric_type: u32,
        value: u64,
    },
    Log {
        level: u32,
        message: Vec<u8>,
    },
    RandomBytes {
        length: usize,
    },
}

/// What one probe does per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Repeat {
        call: usize,
        count: usize,
    },
    /// The calls of each phase of [`PHASES`], in order.
    Replay(Vec<Vec<Op>>),
}

/// Parses the plugin configuration; the error says what is wrong.
pub fn parse(config: &[u8]) -> Result<Plan, String> {
    let v: serde_json::Value =
        serde_json::from_slice(config).map_err(|e| format!("probe configuration: {e}"))?;
    if let Some(steps) = v.get("replay") {
        return parse_replay(steps);
    }
    let call = v
        .get("call")
        .and_then(|c| c.as_str())
        .and_then(|c| CALLS.iter().position(|k| *k == c))
        .ok_or_else(|| format!("call: one of {}", CALLS.join(", ")))?;
    let count = v
        .get("count")
        .and_then(|c| c.as_u64())
        .filter(|c| (1..=1000).contains(c))
        .ok_or("count: an integer in 1..=1000")?;
    Ok(Plan::Repeat {
        call,
        count: count as usize,
    })
}

/// Every step must be one the probe can make, in a phase it gets: a replay
/// that silently skipped a call would measure less than the module does.
fn parse_replay(steps: &serde_json::Value) -> Result<Plan, String> {
    let steps = steps.as_array().ok_or("replay: a list of steps")?;
    let mut phases = vec![Vec::new(); PHASES.len()];
    let mut errors = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let on = step.get("on").and_then(|o| o.as_str()).unwrap_or("");
        let phase = PHASES.iter().position(|p| *p == on);
        match (phase, parse_op(step)) {
            (Some(p), Ok(op)) => {
                if let Some(list) = phases.get_mut(p) {
                    list.push(op);
                }
            }
            (None, _) => errors.push(format!(
                "replay[{i}].on: {on:?} is not one of {}",
                PHASES.join(", ")
            )),
            (_, Err(e)) => errors.push(format!("replay[{i}]: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(Plan::Replay(phases))
    } else {
        Err(errors.join("; "))
    }
}

fn parse_op(step: &serde_json::Value) -> Result<Op, String> {
    let text = |field: &str| -> Result<Vec<u8>, String> {
        step.get(field)
            .and_then(|v| v.as_str())
            .map(|s| s.as_bytes().to_vec())
            .ok_or_else(|| format!("{field}: a string"))
    };
    let bytes = |field: &str| -> Result<Vec<u8>, String> {
        step.get(field)
            .and_then(|v| v.as_str())
            .and_then(from_hex)
            .ok_or_else(|| format!("{field}: hexadecimal bytes"))
    };
    let number = |field: &str| -> Result<u64, String> {
        step.get(field)
            .and_then(|v| v.as_u64())
            .ok_or_else(|| format!("{field}: a non-negative integer"))
    };
    let small = |field: &str| -> Result<u32, String> {
        u32::try_from(number(field)?).map_err(|_| format!("{field}: too large"))
    };
    let path = || -> Result<Vec<u8>, String> {
        let segments = step
            .get("path")
            .and_then(|p| p.as_array())
            .filter(|p| !p.is_empty())
            .ok_or("path: a list of strings")?;
        let mut out = Vec::new();
        for (i, s) in segments.iter().enumerate() {
            let s = s.as_str().ok_or("path: a list of strings")?;
            if i > 0 {
                out.push(0);
            }
            out.extend_from_slice(s.as_bytes());
        }
        Ok(out)
    };
    let call = step.get("call").and_then(|c| c.as_str()).unwrap_or("");
    Ok(match call {
        "proxy_get_header_map_pairs" => Op::GetMap { map: small("map")? },
        "proxy_get_header_map_value" => Op::GetMapValue {
            map: small("map")?,
            key: text("key")?,
        },
        "proxy_replace_header_map_value" => Op::ReplaceMapValue {
            map: small("map")?,
            key: text("key")?,
            value: text("value")?,
        },
        "proxy_add_header_map_value" => Op::AddMapValue {
            map: small("map")?,
            key: text("key")?,
            value: text("value")?,
        },
        "proxy_remove_header_map_value" => Op::RemoveMapValue {
            map: small("map")?,
            key: text("key")?,
        },
        "proxy_get_property" => Op::GetProperty { path: path()? },
        "proxy_set_property" => Op::SetProperty {
            path: path()?,
            value: bytes("value")?,
        },
        "proxy_get_shared_data" => Op::GetSharedData { key: text("key")? },
        "proxy_set_shared_data" => Op::SetSharedData {
            key: text("key")?,
            value: bytes("value")?,
        },
        "proxy_get_current_time_nanoseconds" => Op::CurrentTime,
        "proxy_call_foreign_function" => Op::ForeignFunction {
            name: text("name")?,
            argument: bytes("argument")?,
        },
        "proxy_increment_metric" => Op::IncrementMetric {
            metric_type: small("metric")?,
            delta: step
                .get("delta")
                .and_then(|d| d.as_i64())
                .ok_or("delta: an integer")?,
        },
        "proxy_record_metric" => Op::RecordMetric {
            metric_type: small("metric")?,
            value: number("value")?,
        },
        "proxy_log" => Op::Log {
            level: small("level")?,
            message: text("message")?,
        },
        "random_get" => Op::RandomBytes {
            length: usize::try_from(number("length")?).map_err(|_| "length: too large")?,
        },
        other => return Err(format!("call: the probe cannot replay {other:?}")),
    })
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            match pair {
                [hi, lo] => Some((digit(*hi)? * 16 + digit(*lo)?) as u8),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_name_a_known_call_and_a_bounded_count() {
        assert_eq!(
            parse(br#"{"call":"set_property","count":10}"#),
            Ok(Plan::Repeat { call: 4, count: 10 })
        );
        assert!(parse(br#"{"call":"nothing","count":10}"#)
            .unwrap_err()
            .starts_with("call: one of get_header"));
        assert!(parse(br#"{"call":"get_header","count":0}"#).is_err());
        assert!(parse(b"not json").is_err());
    }

    #[test]
    fn a_replay_keeps_each_call_in_its_phase_and_order() {
        let trace = br#"{"replay": [
            {"on": "request_headers", "call": "proxy_get_header_map_pairs", "map": 0},
            {"on": "log", "call": "proxy_get_property", "path": ["response", "code"]},
            {"on": "request_headers", "call": "proxy_set_shared_data", "key": "k", "value": "00ff10"},
            {"on": "response_headers", "call": "proxy_replace_header_map_value", "map": 2, "key": "vary", "value": "Origin"},
            {"on": "log", "call": "proxy_record_metric", "metric": 2, "value": 7}
        ]}"#;
        let Ok(Plan::Replay(phases)) = parse(trace) else {
            panic!("not a replay: {:?}", parse(trace));
        };
        assert_eq!(phases.len(), PHASES.len());
        assert_eq!(
            phases[0],
            vec![
                Op::GetMap { map: 0 },
                Op::SetSharedData {
                    key: b"k".to_vec(),
                    value: vec![0x00, 0xff, 0x10]
                }
            ]
        );
        assert_eq!(
            phases[1],
            vec![Op::ReplaceMapValue {
                map: 2,
                key: b"vary".to_vec(),
                value: b"Origin".to_vec()
            }]
        );
        assert!(phases[2].is_empty());
        assert_eq!(
            phases[3],
            vec![
                // The ABI's path: segments joined by NUL.
                Op::GetProperty {
                    path: b"response\0code".to_vec()
                },
                Op::RecordMetric {
                    metric_type: 2,
                    value: 7
                }
            ]
        );
    }

    #[test]
    fn a_replay_with_a_call_it_cannot_make_is_refused_whole() {
        let err = parse(
            br#"{"replay": [
                {"on": "request_headers", "call": "proxy_send_local_response"},
                {"on": "tick", "call": "proxy_get_current_time_nanoseconds"},
                {"on": "log", "call": "proxy_set_shared_data", "key": "k", "value": "0g"}
            ]}"#,
        )
        .unwrap_err();
        assert!(
            err.contains("replay[0]: call: the probe cannot replay \"proxy_send_local_response\""),
            "{err}"
        );
        assert!(
            err.contains("replay[1].on: \"tick\" is not one of"),
            "{err}"
        );
        assert!(err.contains("replay[2]: value: hexadecimal bytes"), "{err}");
    }

    #[test]
    fn hex_is_read_in_pairs() {
        assert_eq!(from_hex("0a1B"), Some(vec![0x0a, 0x1b]));
        assert_eq!(from_hex(""), Some(vec![]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }
}

#[cfg(target_os = "wasi")]
mod wasm {
    use super::{parse, Op, Plan, CALLS, PHASES};
    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType, MapType, MetricType};
    use std::rc::Rc;

    /// The ABI's functions themselves: a replay makes each call as cheaply
    /// as a module can (no SDK copies into `String`s and `Vec`s).
    mod abi {
        #[link(wasm_import_module = "env")]
        extern "C" {
            pub fn proxy_get_header_map_pairs(
                map: u32,
                data: *mut *mut u8,
                size: *mut usize,
            ) -> u32;
            pub fn proxy_get_header_map_value(
                map: u32,
                key: *const u8,
                key_size: usize,
                data: *mut *mut u8,
                size: *mut usize,
            ) -> u32;
            pub fn proxy_replace_header_map_value(
                map: u32,
                key: *const u8,
                key_size: usize,
                value: *const u8,
                value_size: usize,
            ) -> u32;
            pub fn proxy_add_header_map_value(
                map: u32,
                key: *const u8,
                key_size: usize,
                value: *const u8,
                value_size: usize,
            ) -> u32;
            pub fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
            pub fn proxy_get_property(
                path: *const u8,
                path_size: usize,
                data: *mut *mut u8,
                size: *mut usize,
            ) -> u32;
            pub fn proxy_set_property(
                path: *const u8,
                path_size: usize,
                value: *const u8,
                value_size: usize,
            ) -> u32;
            pub fn proxy_get_shared_data(
                key: *const u8,
                key_size: usize,
                data: *mut *mut u8,
                size: *mut usize,
                cas: *mut u32,
            ) -> u32;
            pub fn proxy_set_shared_data(
                key: *const u8,
                key_size: usize,
                value: *const u8,
                value_size: usize,
                cas: u32,
            ) -> u32;
            pub fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
            pub fn proxy_call_foreign_function(
                name: *const u8,
                name_size: usize,
                argument: *const u8,
                argument_size: usize,
                data: *mut *mut u8,
                size: *mut usize,
            ) -> u32;
            pub fn proxy_increment_metric(id: u32, delta: i64) -> u32;
            pub fn proxy_record_metric(id: u32, value: u64) -> u32;
            pub fn proxy_log(level: u32, message: *const u8, message_size: usize) -> u32;
        }

        #[link(wasm_import_module = "wasi_snapshot_preview1")]
        extern "C" {
            pub fn random_get(buffer: *mut u8, length: usize) -> i32;
        }

        /// Gives back what the host allocated in this module for an answer
        /// (the SDK's `proxy_on_memory_allocate`: a `Vec` of exactly `size`).
        pub fn release(data: *mut u8, size: usize) {
            if !data.is_null() {
                // SAFETY: the host filled `data` with a pointer from the SDK's
                // allocator export, `size` bytes, now owned by us.
                drop(unsafe { Vec::from_raw_parts(data, size, size) });
            }
        }
    }

    /// The plan plus what it needs prepared at configure time.
    struct Prepared {
        plan: Plan,
        keys: Vec<String>,
        metric: u32,
        /// A metric per ABI metric type, for replayed metric calls.
        metrics_by_type: [u32; 3],
        /// The longest random read of a replay.
        random_length: usize,
    }

    impl Prepared {
        /// The replay's metric of an ABI metric type.
        fn metric_of(&self, metric_type: u32) -> u32 {
            self.metrics_by_type
                .get(metric_type as usize)
                .copied()
                .unwrap_or(0)
        }
    }

    #[derive(Default)]
    struct Root {
        prepared: Option<Rc<Prepared>>,
    }

    struct Stream {
        prepared: Option<Rc<Prepared>>,
        random: Vec<u8>,
    }

    impl Context for Root {}

    impl RootContext for Root {
        fn on_configure(&mut self, _size: usize) -> bool {
            let config = self.get_plugin_configuration().unwrap_or_default();
            let plan = match parse(&config) {
                Ok(p) => p,
                Err(e) => {
                    let _ = hostcalls::log(proxy_wasm::types::LogLevel::Error, &e);
                    return false;
                }
            };
            let metric = hostcalls::define_metric(MetricType::Counter, "probe.calls").unwrap_or(0);
            let by_type =
                |t: MetricType, name: &str| hostcalls::define_metric(t, name).unwrap_or(0);
            let metrics_by_type = [
                by_type(MetricType::Counter, "probe.replay_counter"),
                by_type(MetricType::Gauge, "probe.replay_gauge"),
                by_type(MetricType::Histogram, "probe.replay_histogram"),
            ];
            let (count, random_length) = match &plan {
                Plan::Repeat { count, .. } => (*count, 0),
                Plan::Replay(phases) => (
                    0,
                    phases
                        .iter()
                        .flatten()
                        .map(|op| match op {
                            Op::RandomBytes { length } => *length,
                            _ => 0,
                        })
                        .max()
                        .unwrap_or(0),
                ),
            };
            // Distinct filter-state keys, as the filters write one per concern.
            let keys = (0..count).map(|i| format!("probe.k{i}")).collect();
            self.prepared = Some(Rc::new(Prepared {
                plan,
                keys,
                metric,
                metrics_by_type,
                random_length,
            }));
            true
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            let random_length = self.prepared.as_ref().map_or(0, |p| p.random_length);
            Some(Box::new(Stream {
                prepared: self.prepared.clone(),
                random: vec![0; random_length],
            }))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    impl Stream {
        /// The replayed calls of one phase; their answers are dropped.
        fn replay(&mut self, phase: &str) {
            let Some(p) = self.prepared.clone() else {
                return;
            };
            let Plan::Replay(phases) = &p.plan else {
                return;
            };
            let Some(ops) = PHASES
                .iter()
                .position(|name| *name == phase)
                .and_then(|i| phases.get(i))
            else {
                return;
            };
            let mut cas = 0u32;
            for op in ops {
                let (mut data, mut size) = (std::ptr::null_mut::<u8>(), 0usize);
                // SAFETY: every pointer and length describes a live slice
                // of the plan (or a local written by the host).
                unsafe {
                    match op {
                        Op::GetMap { map } => {
                            abi::proxy_get_header_map_pairs(*map, &mut data, &mut size);
                        }
                        Op::GetMapValue { map, key } => {
                            abi::proxy_get_header_map_value(
                                *map,
                                key.as_ptr(),
                                key.len(),
                                &mut data,
                                &mut size,
                            );
                        }
                        Op::ReplaceMapValue { map, key, value } => {
                            abi::proxy_replace_header_map_value(
                                *map,
                                key.as_ptr(),
                                key.len(),
                                value.as_ptr(),
                                value.len(),
                            );
                        }
                        Op::AddMapValue { map, key, value } => {
                            abi::proxy_add_header_map_value(
                                *map,
                                key.as_ptr(),
                                key.len(),
                                value.as_ptr(),
                                value.len(),
                            );
                        }
                        Op::RemoveMapValue { map, key } => {
                            abi::proxy_remove_header_map_value(*map, key.as_ptr(), key.len());
                        }
                        Op::GetProperty { path } => {
                            abi::proxy_get_property(
                                path.as_ptr(),
                                path.len(),
                                &mut data,
                                &mut size,
                            );
                        }
                        Op::SetProperty { path, value } => {
                            abi::proxy_set_property(
                                path.as_ptr(),
                                path.len(),
                                value.as_ptr(),
                                value.len(),
                            );
                        }
                        Op::GetSharedData { key } => {
                            abi::proxy_get_shared_data(
                                key.as_ptr(),
                                key.len(),
                                &mut data,
                                &mut size,
                                &mut cas,
                            );
                        }
                        Op::SetSharedData { key, value } => {
                            abi::proxy_set_shared_data(
                                key.as_ptr(),
                                key.len(),
                                value.as_ptr(),
                                value.len(),
                                cas,
                            );
                        }
                        Op::CurrentTime => {
                            let mut now = 0u64;
                            abi::proxy_get_current_time_nanoseconds(&mut now);
                        }
                        Op::ForeignFunction { name, argument } => {
                            abi::proxy_call_foreign_function(
                                name.as_ptr(),
                                name.len(),
                                argument.as_ptr(),
                                argument.len(),
                                &mut data,
                                &mut size,
                            );
                        }
                        Op::IncrementMetric { metric_type, delta } => {
                            abi::proxy_increment_metric(p.metric_of(*metric_type), *delta);
                        }
                        Op::RecordMetric { metric_type, value } => {
                            abi::proxy_record_metric(p.metric_of(*metric_type), *value);
                        }
                        Op::Log { level, message } => {
                            abi::proxy_log(*level, message.as_ptr(), message.len());
                        }
                        Op::RandomBytes { length } => {
                            let length = (*length).min(self.random.len());
                            abi::random_get(self.random.as_mut_ptr(), length);
                        }
                    }
                }
                abi::release(data, size);
            }
        }

        fn repeat(&self) {
            let Some(p) = self.prepared.as_deref() else {
                return;
            };
            let Plan::Repeat { call, count } = p.plan else {
                return;
            };
            let req = MapType::HttpRequestHeaders;
            for key in p.keys.iter().take(count) {
                // The results are discarded: the calls are what is measured.
                match CALLS.get(call).copied().unwrap_or("") {
                    "get_header" => {
                        let _ = hostcalls::get_map_value_bytes(req, ":path");
                    }
                    "get_headers" => {
                        let _ = hostcalls::get_map_bytes(req);
                    }
                    "set_header" => {
                        let _ = hostcalls::set_map_value(req, "x-probe", Some("1"));
                    }
                    "get_property" => {
                        let _ = hostcalls::get_property(vec!["source", "address"]);
                    }
                    "set_property" => {
                        let _ = hostcalls::set_property(vec![key.as_str()], Some(b"allowed"));
                    }
                    "increment_metric" => {
                        let _ = hostcalls::increment_metric(p.metric, 1);
                    }
                    "shared_data" => {
                        if let Ok((value, cas)) = hostcalls::get_shared_data("probe") {
                            let next = value.map_or(0u8, |v| v.first().copied().unwrap_or(0));
                            let _ = hostcalls::set_shared_data(
                                "probe",
                                Some(&[next.wrapping_add(1)]),
                                cas,
                            );
                        }
                    }
                    "current_time" => {
                        let _ = hostcalls::get_current_time();
                    }
                    _ => {}
                }
            }
        }
    }

    impl HttpContext for Stream {
        fn on_http_request_headers(&mut self, _headers: usize, _eos: bool) -> Action {
            self.repeat();
            self.replay("request_headers");
            Action::Continue
        }

        fn on_http_response_headers(&mut self, _headers: usize, _eos: bool) -> Action {
            self.replay("response_headers");
            Action::Continue
        }

        fn on_http_response_body(&mut self, _size: usize, _eos: bool) -> Action {
            self.replay("response_body");
            Action::Continue
        }

        fn on_log(&mut self) {
            self.replay("log");
        }
    }

    impl Context for Stream {
        fn on_done(&mut self) -> bool {
            self.replay("done");
            true
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| Box::<Root>::default());
    }}
}
