//! Benchmark instrument (`make bench` with `BENCH_PROBE=1`): on every
//! request's headers, make one kind of host call `count` times. Against the
//! no-op module in the same rounds, (probe - no-op) / count is what one such
//! call costs Envoy, which tells where the filters' time goes.
//!
//! Configuration: `{"call": "<kind>", "count": N}` with kind one of
//! [`CALLS`].

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

/// What one probe does per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub call: usize,
    pub count: usize,
}

/// Parses the plugin configuration; the error says what is wrong.
pub fn parse(config: &[u8]) -> Result<Plan, String> {
    let v: serde_json::Value =
        serde_json::from_slice(config).map_err(|e| format!("probe configuration: {e}"))?;
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
    Ok(Plan {
        call,
        count: count as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_name_a_known_call_and_a_bounded_count() {
        assert_eq!(
            parse(br#"{"call":"set_property","count":10}"#),
            Ok(Plan { call: 4, count: 10 })
        );
        assert!(parse(br#"{"call":"nothing","count":10}"#)
            .unwrap_err()
            .starts_with("call: one of get_header"));
        assert!(parse(br#"{"call":"get_header","count":0}"#).is_err());
        assert!(parse(b"not json").is_err());
    }
}

#[cfg(target_os = "wasi")]
mod wasm {
    use super::{parse, Plan, CALLS};
    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{Action, ContextType, MapType, MetricType};
    use std::rc::Rc;

    /// The plan plus what it needs prepared at configure time.
    struct Prepared {
        plan: Plan,
        keys: Vec<String>,
        metric: u32,
    }

    #[derive(Default)]
    struct Root {
        prepared: Option<Rc<Prepared>>,
    }

    struct Stream {
        prepared: Option<Rc<Prepared>>,
    }

    impl Context for Root {}
    impl Context for Stream {}

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
            // Distinct filter-state keys, as the filters write one per concern.
            let keys = (0..plan.count).map(|i| format!("probe.k{i}")).collect();
            self.prepared = Some(Rc::new(Prepared { plan, keys, metric }));
            true
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Stream {
                prepared: self.prepared.clone(),
            }))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    impl HttpContext for Stream {
        fn on_http_request_headers(&mut self, _headers: usize, _eos: bool) -> Action {
            let Some(p) = self.prepared.as_deref() else {
                return Action::Continue;
            };
            let req = MapType::HttpRequestHeaders;
            for key in p.keys.iter().take(p.plan.count) {
                // The results are discarded: the calls are what is measured.
                match CALLS.get(p.plan.call).copied().unwrap_or("") {
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
            Action::Continue
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| Box::<Root>::default());
    }}
}
