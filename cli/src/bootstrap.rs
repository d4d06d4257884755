//! The one Envoy bootstrap template. Rendered as JSON (which Envoy and func-e
//! read directly) so the embedded profile never needs YAML escaping.

use meshware_common::metrics::stats_tags;
use meshware_common::request::{REPLAY_CARRIER, REPLAY_HEADER, REPLAY_ROUTED};
use serde_json::{json, Value};
use std::path::PathBuf;

pub struct Upstream {
    pub name: String,
    /// An IP address or a DNS name (then the cluster resolves it).
    pub address: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// What the proxy speaks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 only (the demo's and the tests' echo).
    Http1,
    /// HTTP/2 without TLS (h2c): gRPC-only backends.
    Http2,
    /// What the client spoke: HTTP/2 (every gRPC client) stays HTTP/2,
    /// HTTP/1.1 stays HTTP/1.1. Services that serve gRPC and plain HTTP
    /// on one port (Go, Kratos, grpc-gateway) need this; the CLI's default.
    Downstream,
}

impl Protocol {
    pub fn parse(text: &str) -> Result<Protocol, String> {
        match text {
            "http1" => Ok(Protocol::Http1),
            "http2" | "h2c" => Ok(Protocol::Http2),
            "downstream" => Ok(Protocol::Downstream),
            _ => Err(format!("expected http1, http2 or downstream, not {text}")),
        }
    }
}

impl Upstream {
    /// `127.0.0.1:<port>` over HTTP/1.1 (the demo's and the tests' echo).
    pub fn local(name: &str, port: u16) -> Upstream {
        Upstream {
            name: name.to_string(),
            address: "127.0.0.1".to_string(),
            port,
            protocol: Protocol::Http1,
        }
    }

    /// `host:port` (`[v6]:port` for IPv6) as given to `--upstream`.
    pub fn parse(name: &str, text: &str) -> Result<Upstream, String> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text}: expected host:port"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{text}: not a port: {port}"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{text}: expected host:port"));
        }
        Ok(Upstream {
            name: name.to_string(),
            address: host.to_string(),
            port,
            protocol: Protocol::Http1,
        })
    }
}

/// A route taken before the default one: requests whose `header` equals
/// `value` go to `cluster` (canary versions).
pub struct HeaderRoute {
    pub header: String,
    pub value: String,
    pub cluster: String,
}

pub struct BootstrapParams {
    /// The listener's address (`127.0.0.1`; `0.0.0.0` to serve others).
    pub listen_address: String,
    pub listen_port: u16,
    pub admin_port: u16,
    /// The first upstream receives the default route.
    pub upstreams: Vec<Upstream>,
    /// Checked in order before the default route.
    pub header_routes: Vec<HeaderRoute>,
    /// Folder holding `<filter>.wasm`; made absolute by the caller.
    pub wasm_dir: PathBuf,
    /// Filter names in chain order (see `FILTERS`).
    pub filters: Vec<String>,
    /// The tenant profile document, passed verbatim as plugin configuration.
    pub profile: String,
    /// Where Envoy writes the JSON access log (when `access_log` is among
    /// the filters).
    pub access_log_path: String,
    /// Answer every request from the route itself (`200 ok`) instead of an
    /// upstream: the benchmark measures the proxy, not the upstream.
    pub direct_response: bool,
    /// gRPC calls (`content-type: application/grpc*`) get routes of their
    /// own whose timeout is the client's `grpc-timeout`, at most this long
    /// (none without one: gRPC's "no deadline"), instead of the 15 s route
    /// timeout of plain HTTP requests.
    pub grpc_timeout_max_s: u64,
    /// Envoy's `grpc_web` filter first in the chain: gRPC-Web calls from
    /// browsers reach the filters and the upstream as gRPC.
    pub grpc_web: bool,
    /// Environment variables of Envoy's process passed to every VM
    /// (`--env NAME`), beside those the profile's secrets name.
    pub env: Vec<String>,
    /// Each filter's configuration from a file in this folder (ECDS,
    /// `ecds_files`) instead of inline: rewriting the files reconfigures
    /// the filters for the next request on every connection.
    pub ecds_dir: Option<PathBuf>,
    /// The suite as Envoy's dynamic module (`<wasm_dir>/libmeshware.so`,
    /// Envoy 1.40.0 only) instead of `suite.wasm`: `filters` is `[suite]`.
    pub native: bool,
}

impl BootstrapParams {
    /// Every filter of the suite in order, one upstream cluster named `echo`
    /// (the default route): the shape of the demo, the tests and the CLI output.
    pub fn suite(
        listen_port: u16,
        admin_port: u16,
        upstream_port: u16,
        wasm_dir: PathBuf,
        profile: String,
    ) -> Self {
        BootstrapParams {
            listen_address: "127.0.0.1".into(),
            listen_port,
            admin_port,
            upstreams: vec![Upstream::local("echo", upstream_port)],
            header_routes: Vec::new(),
            wasm_dir,
            filters: crate::FILTERS.iter().map(|f| f.name.to_string()).collect(),
            profile,
            access_log_path: "/dev/stdout".into(),
            direct_response: false,
            grpc_timeout_max_s: DEFAULT_GRPC_TIMEOUT_MAX_S,
            grpc_web: false,
            env: Vec::new(),
            ecds_dir: None,
            native: false,
        }
    }

    /// Adds an upstream cluster `name` on `port` and routes every canary
    /// version the profile names (other than a tenant's default) to it, on the
    /// routing header the profile configures. The canary filter clears the
    /// route cache after writing that header, so these routes see its value.
    pub fn route_canary_versions(&mut self, profile: &str, name: &str, port: u16) {
        self.upstreams.push(Upstream::local(name, port));
        for (header, version) in crate::canary_routes(profile.as_bytes()) {
            self.header_routes.push(HeaderRoute {
                header,
                value: version,
                cluster: name.to_string(),
            });
        }
    }

    /// Routes canary `version` (on every routing header the profile uses for
    /// it) to `upstream`, its own cluster `version-<version>`. Returns false
    /// when no tenant of the profile names that version.
    pub fn route_version(&mut self, profile: &str, version: &str, mut upstream: Upstream) -> bool {
        let cluster = format!("version-{version}");
        let mut routed = false;
        for (header, v) in crate::canary_routes(profile.as_bytes()) {
            if v == version {
                self.header_routes.push(HeaderRoute {
                    header,
                    value: v,
                    cluster: cluster.clone(),
                });
                routed = true;
            }
        }
        upstream.name = cluster;
        self.upstreams.push(upstream);
        routed
    }
}

/// `meshware bootstrap`'s options, read into the one template the demo and
/// the tests render too. Returns the bootstrap and warnings (canary versions
/// no `--upstream` serves).
pub fn from_args(args: &[String]) -> Result<(Value, Vec<String>), String> {
    let mut profile_path = None;
    let mut wasm_dir = None;
    let mut listen = ("127.0.0.1".to_string(), 10000u16);
    let mut admin_port = 9901u16;
    let mut default_upstream = Upstream::local("echo", 8080);
    let mut versions: Vec<(String, Upstream)> = Vec::new();
    let mut protocol = Protocol::Downstream;
    let mut access_log = None;
    let mut filters = None;
    let mut grpc_timeout_max_s = DEFAULT_GRPC_TIMEOUT_MAX_S;
    let mut grpc_web = false;
    let mut env = Vec::new();
    let mut ecds_dir = None;
    let mut native = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--native" {
            native = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let port = || {
            value
                .parse::<u16>()
                .map_err(|_| format!("{flag}: not a port: {value}"))
        };
        match flag.as_str() {
            "--profile" => profile_path = Some(value.clone()),
            "--wasm-dir" => wasm_dir = Some(value.clone()),
            "--listen" => {
                let u = Upstream::parse("listener", value)?;
                listen = (u.address, u.port);
            }
            "--listen-port" => listen.1 = port()?,
            "--admin-port" => admin_port = port()?,
            "--upstream-port" => default_upstream.port = port()?,
            "--upstream" => match value.split_once('=') {
                Some((version, address)) => {
                    versions.push((version.to_string(), Upstream::parse("", address)?))
                }
                None => default_upstream = Upstream::parse("echo", value)?,
            },
            "--upstream-protocol" => {
                protocol = Protocol::parse(value).map_err(|e| format!("{flag}: {e}"))?;
            }
            "--access-log" => access_log = Some(value.clone()),
            "--grpc-timeout-max" => {
                grpc_timeout_max_s = value
                    .parse::<u64>()
                    .map_err(|_| format!("{flag}: not a number of seconds: {value}"))?
            }
            "--grpc-web" => {
                grpc_web = match value.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => return Err(format!("{flag}: expected on or off, not {value}")),
                }
            }
            "--filters" => filters = Some(crate::parse_filters(value)?),
            "--ecds-dir" => ecds_dir = Some(PathBuf::from(value)),
            "--env" => {
                let reference = json!({ meshware_common::secret::ENV_KEY: value });
                meshware_common::secret::source(&reference).map_err(|e| format!("{flag}: {e}"))?;
                env.push(value.clone());
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let profile_path = profile_path.ok_or("--profile is required")?;
    let wasm_dir = wasm_dir.ok_or("--wasm-dir is required")?;
    let json =
        std::fs::read(&profile_path).map_err(|e| format!("cannot read {profile_path}: {e}"))?;
    if let Err(errors) = crate::validate_profile(&json) {
        return Err(format!("{profile_path} is invalid:\n{errors}"));
    }
    let wasm_dir = std::fs::canonicalize(&wasm_dir).map_err(|e| format!("{wasm_dir}: {e}"))?;
    let profile = String::from_utf8(json).map_err(|_| "profile is not UTF-8".to_string())?;
    let mut params = BootstrapParams::suite(listen.1, admin_port, 0, wasm_dir, profile.clone());
    params.listen_address = listen.0;
    default_upstream.protocol = protocol;
    params.upstreams = vec![default_upstream];
    let mut warnings = Vec::new();
    for (version, mut upstream) in versions {
        upstream.protocol = protocol;
        if !params.route_version(&profile, &version, upstream) {
            return Err(format!(
                "--upstream {version}=...: no tenant of the profile has a canary version \"{version}\""
            ));
        }
    }
    let routed: Vec<&str> = params
        .header_routes
        .iter()
        .map(|r| r.value.as_str())
        .collect();
    for (_, version) in crate::canary_routes(profile.as_bytes()) {
        if !routed.contains(&version.as_str()) {
            warnings.push(format!(
                "canary version \"{version}\" has no --upstream {version}=host:port: the default upstream serves it"
            ));
        }
    }
    if let Some(path) = access_log {
        params.access_log_path = path;
    }
    params.grpc_timeout_max_s = grpc_timeout_max_s;
    params.grpc_web = grpc_web;
    params.env = env;
    if let Some(dir) = ecds_dir {
        std::fs::create_dir_all(&dir).map_err(|e| format!("--ecds-dir {}: {e}", dir.display()))?;
        let dir = std::fs::canonicalize(&dir)
            .map_err(|e| format!("--ecds-dir {}: {e}", dir.display()))?;
        params.ecds_dir = Some(dir);
    }
    if let Some(filters) = filters {
        params.filters = filters;
    }
    if native {
        if params.filters.iter().any(|f| f != SUITE) && params.filters.len() != crate::FILTERS.len()
        {
            return Err("--native runs every concern in one module: it takes no --filters".into());
        }
        let module = params.wasm_dir.join(NATIVE_MODULE);
        if !module.exists() {
            return Err(format!(
                "{}: no such file (make build-native)",
                module.display()
            ));
        }
        params.filters = vec![SUITE.to_string()];
        params.native = true;
    }
    // With --ecds-dir the filters' configurations are files: written (again)
    // here, so running the same command after a profile change reloads them.
    write_ecds_files(&params)?;
    Ok((render(&params), warnings))
}

/// The longest `grpc-timeout` the rendered routes honour (`--grpc-timeout-max`).
pub const DEFAULT_GRPC_TIMEOUT_MAX_S: u64 = 300;

/// The single module with every concern (`dist/suite.wasm`), usable in
/// `BootstrapParams::filters` instead of the separate modules.
pub const SUITE: &str = "suite";

pub fn wasm_filter(
    name: &str,
    wasm_dir: &std::path::Path,
    profile: &str,
    extra_env: &[String],
) -> Value {
    let code = json!({"local": {"filename": wasm_dir.join(format!("{name}.wasm"))}});
    wasm_filter_with_code(name, code, profile, extra_env)
}

/// The native build of the suite (Envoy's dynamic modules), in the modules' folder.
pub const NATIVE_MODULE: &str = "libmeshware.so";

/// The Envoy release whose dynamic-module ABI the native build speaks.
pub const NATIVE_ENVOY_VERSION: &str = "1.40.0";

const DYNAMIC_MODULE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";

/// The `envoy.filters.http.dynamic_modules` entry of the native suite: the
/// same profile as the wasm suite's configuration. Its stats scope is
/// `meshware`, so its metrics have the wasm build's names.
pub fn native_filter(dir: &std::path::Path, profile: &str) -> Value {
    json!({
        "name": format!("meshware.{SUITE}"),
        "typed_config": {
            "@type": DYNAMIC_MODULE_TYPE,
            "dynamic_module_config": {
                "module": {"local": {"filename": dir.join(NATIVE_MODULE)}},
                "metrics_namespace": "meshware",
                // Never unloaded: its worker state and timer thread live
                // as long as the process.
                "do_not_close": true
            },
            "filter_name": SUITE,
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": profile
            }
        }
    })
}

/// One filter of the chain as the parameters ask for it: its wasm module,
/// or the native suite.
pub fn filter_entry(p: &BootstrapParams, filter: &str) -> Value {
    if p.native && filter == SUITE {
        native_filter(&p.wasm_dir, &p.profile)
    } else {
        wasm_filter(filter, &p.wasm_dir, &p.profile, &p.env)
    }
}

/// The environment variables a VM gets from Envoy's process: those the
/// profile's secrets reference (`{"env": "NAME"}`) and `extra`. Sorted, unique.
pub fn vm_env_names(profile: &str, extra: &[String]) -> Vec<String> {
    let mut names = serde_json::from_str::<Value>(profile)
        .map(|v| meshware_common::secret::env_names(&v))
        .unwrap_or_default();
    names.extend(extra.iter().cloned());
    names.sort();
    names.dedup();
    names
}

/// The `envoy.filters.http.wasm` entry of one filter with the given
/// `vm_config.code`: shared by the bootstrap and the Istio EnvoyFilter.
pub fn wasm_filter_with_code(
    name: &str,
    code: Value,
    profile: &str,
    extra_env: &[String],
) -> Value {
    let id = format!("meshware.{name}");
    let mut vm_config = json!({
        "vm_id": id,
        "runtime": "envoy.wasm.runtime.v8",
        "code": code
    });
    let env = vm_env_names(profile, extra_env);
    if let (false, Some(vm)) = (env.is_empty(), vm_config.as_object_mut()) {
        // Names only: the values stay in Envoy's environment, out of the
        // config (and of /config_dump).
        vm.insert(
            "environment_variables".into(),
            json!({"host_env_keys": env}),
        );
    }
    json!({
        "name": id,
        "typed_config": {
            "@type": WASM_TYPE,
            "config": {
                "name": id,
                "root_id": name,
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": profile
                },
                "vm_config": vm_config,
                // Per filter: reload the VM, or fail closed (endpoint_guard,
                // jwt_auth, and the suite module, which holds them).
                "failure_policy": crate::filter(name).map_or("FAIL_CLOSED", |f| f.failure.envoy()),
                // Envoy >= 1.35: a filter that pauses in request headers (to
                // hold a request for its body: idempotency) still gets the
                // body callbacks instead of a stalled stream.
                "allow_on_headers_stop_iteration": true
            }
        }
    })
}

fn cluster(up: &Upstream) -> Value {
    let mut c = cluster_at(&up.name, &up.address, up.port);
    let Some(fields) = c.as_object_mut() else {
        return c;
    };
    if up.address.parse::<std::net::IpAddr>().is_err() {
        fields.insert("type".into(), json!("STRICT_DNS"));
        // `localhost` and dual-stack names: the address the upstream most
        // likely listens on, IPv6 when there is no IPv4 one.
        fields.insert("dns_lookup_family".into(), json!("V4_PREFERRED"));
    }
    let http = match up.protocol {
        Protocol::Http1 => None,
        Protocol::Http2 => Some(json!({"explicit_http_config": {"http2_protocol_options": {}}})),
        Protocol::Downstream => Some(json!({"use_downstream_protocol_config": {
            "http_protocol_options": {}, "http2_protocol_options": {}
        }})),
    };
    if let Some(mut http) = http {
        if let Some(o) = http.as_object_mut() {
            o.insert(
                "@type".into(),
                json!("type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"),
            );
        }
        fields.insert(
            "typed_extension_protocol_options".into(),
            json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": http}),
        );
    }
    c
}

/// A plain HTTP/1.1 cluster of one endpoint on 127.0.0.1.
pub fn static_cluster(name: &str, port: u16) -> Value {
    cluster_at(name, "127.0.0.1", port)
}

/// A STATIC HTTP/2 cluster of one endpoint on 127.0.0.1: a gRPC service
/// (a rate limit service, for `rate_limit.global`).
pub fn grpc_cluster(name: &str, port: u16) -> Value {
    let mut c = cluster_at(name, "127.0.0.1", port);
    if let Some(fields) = c.as_object_mut() {
        fields.insert(
            "typed_extension_protocol_options".into(),
            json!({
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}
                }
            }),
        );
    }
    c
}

/// A STATIC HTTP/1.1 cluster of one endpoint.
fn cluster_at(name: &str, address: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": address, "port_value": port}
            }}}]}]
        }
    })
}

/// The JSON access log line: Envoy's own fields plus what the filters
/// recorded in filter state (`wasm.meshware.*`, see the access-log filter).
/// No header a client authenticates with is ever part of it.
pub fn access_log_format() -> Value {
    let state = |key: &str| format!("%FILTER_STATE(wasm.meshware.{key}:PLAIN)%");
    let decisions: serde_json::Map<String, Value> = crate::FILTERS
        .iter()
        .filter(|f| f.name != "access_log")
        .map(|f| (f.name.to_string(), json!(state(f.name))))
        .collect();
    json!({
        "time": "%START_TIME%",
        "tenant": state("tenant"),
        "method": "%REQ(:METHOD)%",
        "path": state("path"),
        "route": "%ROUTE_NAME%",
        "status": "%RESPONSE_CODE%",
        "grpc_status": "%GRPC_STATUS_NUMBER%",
        "response_flags": "%RESPONSE_FLAGS%",
        "duration_ms": "%DURATION%",
        "upstream_ms": "%RESPONSE_DURATION%",
        "bytes_in": "%BYTES_RECEIVED%",
        "bytes_out": "%BYTES_SENT%",
        "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "trace_id": state("trace_id"),
        "user": state("user"),
        "decisions": decisions
    })
}

/// A gRPC call (by its request's content type) that ended with a status
/// other than OK.
pub const GRPC_ERROR_EXPRESSION: &str = "'content-type' in request.headers && \
    request.headers['content-type'].startsWith('application/grpc') && \
    response.grpc_status != 0";

/// Envoy's file access logger writing `access_log_format`: every response
/// with status >= 400 (or none), and successful ones the access-log filter
/// sampled for the tenant (the rule the suite's records follow:
/// `meshware_common::decision::LOGGED_FROM_STATUS`).
pub fn access_log(path: &str) -> Value {
    use meshware_common::decision::{LOGGED_FROM_STATUS, SAMPLED, SAMPLED_FIELD};
    let sampled = format!("filter_state['wasm.meshware.{SAMPLED_FIELD}'] == b'{SAMPLED}'");
    json!({
        "name": "envoy.access_loggers.file",
        "filter": {"or_filter": {"filters": [
            {"status_code_filter": {"comparison": {"op": "GE",
                "value": {"default_value": LOGGED_FROM_STATUS, "runtime_key": "meshware.access_log.min_status"}}}},
            {"status_code_filter": {"comparison": {"op": "EQ",
                "value": {"default_value": 0, "runtime_key": "meshware.access_log.no_status"}}}},
            {"extension_filter": {
                "name": "envoy.access_loggers.extension_filters.cel",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                    "expression": sampled
                }
            }},
            // A failed gRPC call is an error although its HTTP status is 200.
            {"extension_filter": {
                "name": "envoy.access_loggers.extension_filters.cel",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                    "expression": GRPC_ERROR_EXPRESSION
                }
            }}
        ]}},
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path,
            "log_format": {"json_format": access_log_format()}
        }
    })
}

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// The ECDS file of one filter in `dir`.
pub fn ecds_path(dir: &std::path::Path, filter: &str) -> PathBuf {
    dir.join(format!("{filter}.json"))
}

/// The files `ecds_dir` holds, one per filter: an xDS discovery response
/// with the filter's whole configuration (module, profile, VM settings).
pub fn ecds_files(p: &BootstrapParams) -> Vec<(PathBuf, Value)> {
    let Some(dir) = &p.ecds_dir else {
        return Vec::new();
    };
    p.filters
        .iter()
        .map(|f| {
            let filter = filter_entry(p, f);
            let resource = json!({
                "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                "name": filter.get("name").cloned().unwrap_or(Value::Null),
                "typed_config": filter.get("typed_config").cloned().unwrap_or(Value::Null)
            });
            (ecds_path(dir, f), json!({"resources": [resource]}))
        })
        .collect()
}

/// Writes the ECDS files, each atomically (a temporary file renamed over
/// it: Envoy watches the folder and reads only complete files).
pub fn write_ecds_files(p: &BootstrapParams) -> Result<(), String> {
    for (path, value) in ecds_files(p) {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, value.to_string())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// The replay listener's name, also its cluster's.
pub const REPLAY_LISTENER: &str = "meshware_replay";

/// Whether the chain runs idempotency for a profile that has its section:
/// then a duplicate gRPC call may be replayed in full (`grpc_replay`).
fn replays_grpc(p: &BootstrapParams) -> bool {
    p.filters.iter().any(|f| f == "idempotency" || f == SUITE)
        && has_section(&p.profile, "idempotency")
}

/// Whether the profile has a section `name` (in defaults or a tenant).
pub fn has_section(profile: &str, name: &str) -> bool {
    meshware_common::profile::sections_present(profile.as_bytes())
        .is_some_and(|s| s.iter().any(|s| s == name))
}

/// The replay listener (docs/CONFIG.md, idempotency `grpc_replay`): an
/// internal listener of this Envoy, no port, answering every request
/// `200` with the replay marker and a body the idempotency filter replaces
/// with the stored response. No upstream is ever involved.
pub fn replay_listener() -> Value {
    json!({
        "name": REPLAY_LISTENER,
        "internal_listener": {},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": REPLAY_LISTENER,
                "route_config": {"name": REPLAY_LISTENER, "virtual_hosts": [{
                    "name": "all", "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"},
                        "direct_response": {"status": 200, "body": {"inline_string": "replay"}},
                        "response_headers_to_add": [{"header": {"key": REPLAY_HEADER, "value": REPLAY_CARRIER}}]}]
                }]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
            }
        }]}]
    })
}

/// The cluster reaching the replay listener.
pub fn replay_cluster() -> Value {
    json!({
        "name": REPLAY_LISTENER,
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": REPLAY_LISTENER, "endpoints": [{"lb_endpoints": [{
            "endpoint": {"address": {"envoy_internal_address": {"server_listener_name": REPLAY_LISTENER}}}
        }]}]}
    })
}

/// The route, first of the service's: a request the idempotency filter
/// marked (the header is owned: stripped from every client) goes to the
/// replay listener, never to an upstream.
pub fn replay_route() -> Value {
    json!({"name": "idempotency-replay",
        "match": {"prefix": "/", "headers": [{"name": REPLAY_HEADER,
                                               "string_match": {"exact": REPLAY_ROUTED}}]},
        "route": {"cluster": REPLAY_LISTENER}})
}

/// Envoy's internal listeners (Istio's proxies have it on already).
pub fn internal_listener_extension() -> Value {
    json!({"name": "envoy.bootstrap.internal_listener", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"
    }})
}

fn add_replay_listener(bootstrap: &mut serde_json::Map<String, Value>) {
    bootstrap.insert(
        "bootstrap_extensions".into(),
        json!([internal_listener_extension()]),
    );
    if let Some(resources) = bootstrap
        .get_mut("static_resources")
        .and_then(Value::as_object_mut)
    {
        for (key, item) in [
            ("listeners", replay_listener()),
            ("clusters", replay_cluster()),
        ] {
            if let Some(list) = resources.get_mut(key).and_then(Value::as_array_mut) {
                list.push(item);
            }
        }
    }
}

pub fn render(p: &BootstrapParams) -> Value {
    let mut http_filters: Vec<Value> = p
        .filters
        .iter()
        .map(|f| match &p.ecds_dir {
            None => filter_entry(p, f),
            Some(dir) => json!({
                "name": format!("meshware.{f}"),
                "config_discovery": {
                    "config_source": {
                        "resource_api_version": "V3",
                        "path_config_source": {
                            "path": ecds_path(dir, f),
                            "watched_directory": {"path": dir}
                        }
                    },
                    "type_urls": [if p.native { DYNAMIC_MODULE_TYPE } else { WASM_TYPE }]
                }
            }),
        })
        .collect();
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));
    let grpc_action = |cluster: &str| {
        json!({"cluster": cluster, "timeout": "0s",
               "max_stream_duration": {"grpc_timeout_header_max": format!("{}s", p.grpc_timeout_max_s)}})
    };
    let mut routes: Vec<Value> = Vec::new();
    for r in &p.header_routes {
        let headers = json!([{"name": r.header, "string_match": {"exact": r.value}}]);
        let name = format!("{}-{}", r.cluster, r.value);
        routes.push(json!({"name": format!("{name}-grpc"),
            "match": {"prefix": "/", "grpc": {}, "headers": headers}, "route": grpc_action(&r.cluster)}));
        routes.push(
            json!({"name": name, "match": {"prefix": "/", "headers": headers},
            "route": {"cluster": r.cluster}}),
        );
    }
    let replays = replays_grpc(p);
    if replays {
        // First: a replayed duplicate must never reach an upstream.
        routes.push(replay_route());
    }
    let default_cluster = p
        .upstreams
        .first()
        .map(|u| u.name.as_str())
        .unwrap_or("echo");
    if p.direct_response {
        routes.push(json!({"name": "default", "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}));
    } else {
        routes.push(
            json!({"name": "default-grpc", "match": {"prefix": "/", "grpc": {}},
            "route": grpc_action(default_cluster)}),
        );
        routes.push(
            json!({"name": "default", "match": {"prefix": "/"}, "route": {"cluster": default_cluster}}),
        );
    }
    if p.grpc_web {
        http_filters.insert(0, json!({
            "name": "envoy.filters.http.grpc_web",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"}
        }));
    }
    // The suite module logs when the profile configures the access-log concern.
    let suite_logs = p.filters.iter().any(|f| f == SUITE) && has_section(&p.profile, "access_log");
    let access_logs: Vec<Value> = if suite_logs || p.filters.iter().any(|f| f == "access_log") {
        vec![access_log(&p.access_log_path)]
    } else {
        Vec::new()
    };
    let tags: Vec<Value> = stats_tags()
        .into_iter()
        .map(|(name, regex)| json!({"tag_name": name, "regex": regex}))
        .collect();
    let mut bootstrap = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p.admin_port}}},
        "stats_config": {"stats_tags": tags},
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": p.listen_address, "port_value": p.listen_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress",
                        "use_remote_address": true,
                        // Envoy's own path normalization, before any filter
                        // and the router (docs/SECURITY.md, "Paths"): dot
                        // segments resolved, `//` merged, encoded `/` and
                        // `\` refused. The filters stay safe without it.
                        "normalize_path": true,
                        "merge_slashes": true,
                        "path_with_escaped_slashes_action": "REJECT_REQUEST",
                        // Bounds a request Envoy never resumes: held for a
                        // callout whose callback crashed the VM (docs/RELIABILITY.md).
                        "stream_idle_timeout": "60s",
                        // trace-context decides which incoming request ids to keep.
                        "preserve_external_request_id": true,
                        // security-headers decides about `server`; Envoy must not re-add it.
                        "server_header_transformation": "PASS_THROUGH",
                        "access_log": access_logs,
                        "route_config": {
                            "name": "local",
                            "virtual_hosts": [{
                                "name": "all",
                                "domains": ["*"],
                                "routes": routes
                            }]
                        },
                        "http_filters": http_filters
                    }
                }]}]
            }],
            "clusters": p.upstreams.iter().map(cluster).collect::<Vec<_>>()
        }
    });
    if let (true, Some(b)) = (replays, bootstrap.as_object_mut()) {
        add_replay_listener(b);
    }
    if let (true, Some(b)) = (p.ecds_dir.is_some(), bootstrap.as_object_mut()) {
        // xDS subscriptions (the ECDS files) need the node's identity.
        b.insert(
            "node".into(),
            json!({"id": "meshware", "cluster": "meshware"}),
        );
    }
    bootstrap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_parse_from_the_command_line() {
        let u = Upstream::parse("x", "10.1.2.3:8081").unwrap();
        assert_eq!((u.address.as_str(), u.port), ("10.1.2.3", 8081));
        let u = Upstream::parse("x", "[::1]:80").unwrap();
        assert_eq!(u.address, "::1");
        let u = Upstream::parse("x", "shop.default.svc:8080").unwrap();
        let c = cluster(&u);
        assert_eq!(c["type"], "STRICT_DNS");
        assert!(c.get("typed_extension_protocol_options").is_none());
        let mixed = Upstream {
            protocol: Protocol::Downstream,
            ..u
        };
        let options = &cluster(&mixed)["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert!(options["use_downstream_protocol_config"]["http2_protocol_options"].is_object());
        assert_eq!(Protocol::parse("h2c"), Ok(Protocol::Http2));
        assert!(Protocol::parse("http3").is_err());
        for bad in ["nohost", ":80", "h:99999", "h:x"] {
            assert!(Upstream::parse("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn renders_filters_in_order_before_the_router() {
        let v = render(&BootstrapParams {
            listen_address: "127.0.0.1".into(),
            listen_port: 1,
            admin_port: 2,
            upstreams: vec![Upstream::local("echo", 3)],
            header_routes: vec![HeaderRoute {
                header: "x-v".into(),
                value: "v2".into(),
                cluster: "canary".into(),
            }],
            access_log_path: "/dev/null".into(),
            direct_response: false,
            wasm_dir: "/d".into(),
            filters: vec!["trace_context".into()],
            profile: "{\"x\":1}".into(),
            grpc_timeout_max_s: DEFAULT_GRPC_TIMEOUT_MAX_S,
            grpc_web: true,
            env: Vec::new(),
            ecds_dir: None,
            native: false,
        });
        let hcm = &v["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        let filters = hcm["http_filters"].as_array().unwrap();
        let routes = &hcm["route_config"]["virtual_hosts"][0]["routes"];
        // Each route has a gRPC twin first: the client's deadline as timeout.
        assert_eq!(routes[0]["match"]["grpc"], json!({}));
        assert_eq!(routes[0]["route"]["cluster"], "canary");
        assert_eq!(routes[0]["route"]["timeout"], "0s");
        assert_eq!(
            routes[0]["route"]["max_stream_duration"]["grpc_timeout_header_max"],
            "300s"
        );
        assert_eq!(routes[1]["match"]["headers"][0]["name"], "x-v");
        assert_eq!(routes[1]["route"]["cluster"], "canary");
        assert!(routes[1]["match"].get("grpc").is_none());
        assert_eq!(routes[2]["route"]["cluster"], "echo");
        assert_eq!(routes[3]["route"]["cluster"], "echo");
        assert_eq!(filters[0]["name"], "envoy.filters.http.grpc_web");
        assert_eq!(filters[1]["name"], "meshware.trace_context");
        assert_eq!(hcm["normalize_path"], true);
        assert_eq!(hcm["merge_slashes"], true);
        assert_eq!(hcm["path_with_escaped_slashes_action"], "REJECT_REQUEST");
        assert_eq!(filters[2]["name"], "envoy.filters.http.router");
        let cfg = &filters[1]["typed_config"]["config"];
        assert_eq!(cfg["configuration"]["value"], "{\"x\":1}");
        assert_eq!(
            cfg["vm_config"]["code"]["local"]["filename"],
            "/d/trace_context.wasm"
        );
        assert_eq!(
            v["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
                [0]["endpoint"]["address"]["socket_address"]["port_value"],
            3
        );
    }
}
