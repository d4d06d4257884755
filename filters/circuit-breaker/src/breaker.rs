//! The circuit-breaker decision per request, and the bookkeeping when the
//! stream ends.

use crate::circuit::{admit, complete, Admission, Evidence, State, Transition};
use crate::config::{BreakerSettings, CircuitKey, RouteBudget, CLIENT_BUDGET_HEADERS};
use meshware_common::path::RequestPath;
use meshware_common::{property_u64, Decision, Headers, HostEnv, LocalReply, Outcomes};
use std::borrow::Cow;

pub const OUTCOMES: &[&str] = &[
    "allowed",
    "rejected",
    "bulkhead_rejected",
    "opened",
    "half_opened",
    "closed",
    "probe_succeeded",
    "probe_failed",
    "failure_recorded",
    "client_budget_stripped",
    "client_aborted",
    "grpc_deadline_lowered",
];
pub const ALLOWED: usize = 0;
pub const REJECTED: usize = 1;
pub const BULKHEAD_REJECTED: usize = 2;
pub const OPENED: usize = 3;
pub const HALF_OPENED: usize = 4;
pub const CLOSED: usize = 5;
pub const PROBE_SUCCEEDED: usize = 6;
pub const PROBE_FAILED: usize = 7;
pub const FAILURE_RECORDED: usize = 8;
pub const CLIENT_BUDGET_STRIPPED: usize = 9;
pub const CLIENT_ABORTED: usize = 10;
pub const GRPC_DEADLINE_LOWERED: usize = 11;

/// Envoy's response flag `DC` (downstream connection termination).
pub const DOWNSTREAM_CONNECTION_TERMINATION: u64 = 0x4000;
/// Envoy's response flag `DR` (the client reset its stream: an HTTP/2 or
/// HTTP/3 RST_STREAM, a cancelled gRPC call, a browser navigating away).
pub const DOWNSTREAM_REMOTE_RESET: u64 = 0x1000_0000;

/// Carried from admission to the end of the stream.
#[derive(Debug, Default)]
pub struct Admitted {
    circuit_key: Option<String>,
    probe: bool,
    /// A bulkhead slot to give back (with the circuit's key, exactly once).
    slot: bool,
    started_ms: u64,
    /// A gRPC call: its outcome is its gRPC status, not the HTTP one.
    grpc: bool,
    /// When the response headers arrived (with `slow_ms` only).
    first_byte_ms: Option<u64>,
}

/// The circuit's shared-data key: tenant and cluster or route.
///
/// `version`: the value of canary's routing header. Envoy keeps reporting
/// the cluster of the route it matched before canary wrote that header
/// (clearing the route cache makes the router match again, but the
/// cluster a filter can read stays the old one until then), so under
/// canary the cluster the router will use is the one the version routes
/// to: the key carries the version, and each version's upstream gets its
/// own circuit.
fn circuit_key(
    s: &BreakerSettings,
    tenant: &str,
    route: Option<&RouteBudget>,
    version: Option<&str>,
    env: &dyn HostEnv,
) -> String {
    let scope = match s.key {
        CircuitKey::Route => route
            .map(|r| r.name.clone())
            .unwrap_or_else(|| "default".to_string()),
        CircuitKey::Cluster => env
            .property(&["xds", "cluster_name"])
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_else(|| "unknown".to_string()),
    };
    match version {
        Some(v) => format!("mw.cb.{tenant}.{scope}@{v}"),
        None => format!("mw.cb.{tenant}.{scope}"),
    }
}

fn reject<'s>(
    s: &'s BreakerSettings,
    state: State,
    retry_after_s: u64,
    outcomes: Outcomes,
) -> Decision<'s> {
    Decision {
        reply: Some(LocalReply {
            status: s.status,
            headers: vec![
                ("content-type", s.fallback_content_type.clone()),
                ("retry-after", retry_after_s.to_string()),
                ("x-circuit-state", state.label().to_string()),
            ],
            body: Cow::Borrowed(s.fallback_body.as_bytes()),
            ..LocalReply::default()
        }),
        outcomes,
        ..Decision::default()
    }
}

/// `routing_header`: canary's, when the tenant has canary (the request
/// policy's `routing_header`).
pub fn on_request<'s>(
    s: &'s BreakerSettings,
    tenant: &str,
    headers: &Headers,
    path: &RequestPath,
    routing_header: Option<&str>,
    env: &dyn HostEnv,
    admitted: &mut Admitted,
) -> Decision<'s> {
    let mut decision = Decision::default();
    // The canonical reading's route, else the first reading that has one:
    // a route's budget and circuit apply if any reading reaches it.
    let route = path.readings().iter().find_map(|r| s.routes.best(r));
    if s.strip_client_envoy_headers {
        for name in CLIENT_BUDGET_HEADERS {
            if headers.contains(name) {
                decision.request.remove(*name);
                decision.outcomes.add(CLIENT_BUDGET_STRIPPED);
            }
        }
    }
    if let Some(route) = route {
        if let Some(v) = &route.timeout_ms {
            decision
                .request
                .set("x-envoy-upstream-rq-timeout-ms", v.as_str());
        }
        if let Some(v) = &route.max_retries {
            decision.request.set("x-envoy-max-retries", v.as_str());
        }
        if let Some(v) = &route.retry_on {
            decision.request.set("x-envoy-retry-on", v.as_str());
        }
        if let Some(v) = &route.retry_grpc_on {
            decision.request.set("x-envoy-retry-grpc-on", v.as_str());
        }
    }
    let grpc = headers
        .get("content-type")
        .is_some_and(meshware_common::grpc::is_grpc);
    if let (true, Some(budget)) = (grpc, route.and_then(|r| r.timeout)) {
        // The upstream must not keep working past the budget Envoy gives
        // the call: a longer (or absent, or unreadable) client deadline is
        // lowered to it.
        let client = headers
            .get("grpc-timeout")
            .and_then(|v| meshware_common::grpc::parse_timeout(v).ok());
        if client.is_none_or(|ms| ms > budget) {
            decision.request.set(
                "grpc-timeout",
                meshware_common::grpc::format_timeout(budget),
            );
            decision.outcomes.add(GRPC_DEADLINE_LOWERED);
        }
    }
    let version = routing_header
        .and_then(|h| headers.get(h))
        .filter(|v| !v.is_empty());
    let key = circuit_key(s, tenant, route, version, env);
    let now = env.now_ms();
    let admit = admit(env, &key, s, now, s.max_in_flight);
    match admit.admission {
        Admission::Rejected {
            state,
            retry_after_s,
        } => {
            decision.outcomes.add(REJECTED);
            return reject(s, state, retry_after_s, decision.outcomes);
        }
        Admission::BulkheadFull => {
            decision.outcomes.add(BULKHEAD_REJECTED);
            let mut d = reject(s, State::Closed, 1, decision.outcomes);
            if let Some(reply) = &mut d.reply {
                reply.headers.retain(|(k, _)| *k != "x-circuit-state");
                reply
                    .headers
                    .push(("x-circuit-state", "bulkhead-full".to_string()));
                // The tenant's share of concurrency is used up, a quota
                // like a rate limit: clients that retry UNAVAILABLE at once
                // would only add to the load the bulkhead sheds.
                reply.grpc_status = Some(meshware_common::grpc::RESOURCE_EXHAUSTED);
            }
            return d;
        }
        Admission::Probe { half_opened } => {
            if half_opened {
                decision.outcomes.add(HALF_OPENED);
            }
            admitted.probe = true;
        }
        Admission::Allowed => {}
    }
    admitted.slot = admit.slot;
    admitted.circuit_key = Some(key);
    admitted.started_ms = now;
    admitted.grpc = grpc;
    decision.outcomes.add(ALLOWED);
    decision
}

/// The response started: slowness is the time to it, so a long stream
/// (server streaming gRPC, a download) is not slow for lasting.
pub fn on_response_start(s: &BreakerSettings, admitted: &mut Admitted, env: &dyn HostEnv) {
    if s.slow_ms.is_some() && admitted.circuit_key.is_some() && admitted.first_byte_ms.is_none() {
        admitted.first_byte_ms = Some(env.now_ms());
    }
}

/// At the end of every admitted stream: release the bulkhead slot and feed
/// the outcome to the circuit. No response (upstream reset, timeout) is a
/// failure; a client that disconnected first is not evidence either way.
pub fn on_complete(s: &BreakerSettings, admitted: &mut Admitted, env: &dyn HostEnv) -> Outcomes {
    let mut outcomes = Outcomes::default();
    let Some(key) = admitted.circuit_key.take() else {
        return outcomes;
    };
    let slot = std::mem::take(&mut admitted.slot);
    let now = env.now_ms();
    let status = env
        .property(&["response", "code"])
        .and_then(|b| property_u64(&b))
        .unwrap_or(0);
    // The flags matter only without a response: read them only then (a
    // property read is one of the dearest host calls).
    let client_went_away = status == 0
        && env
            .property(&["response", "flags"])
            .and_then(|b| property_u64(&b))
            .is_some_and(|flags| {
                flags & (DOWNSTREAM_CONNECTION_TERMINATION | DOWNSTREAM_REMOTE_RESET) != 0
            });
    if client_went_away {
        // The client went away first: says nothing about the upstream. A
        // probe that ends this way is given back as a failure, so the
        // half-open circuit does not wait for it forever.
        let evidence = admitted.probe.then_some(Evidence {
            failure: true,
            probe: true,
        });
        complete(env, &key, s, now, slot, evidence);
        if admitted.probe {
            outcomes.add(PROBE_FAILED);
        }
        outcomes.add(CLIENT_ABORTED);
        return outcomes;
    }
    let answered = admitted.first_byte_ms.unwrap_or(now);
    let slow = s
        .slow_ms
        .is_some_and(|limit| answered.saturating_sub(admitted.started_ms) > limit);
    // A gRPC call fails with HTTP 200 and a `grpc-status` (Envoy's own
    // upstream failures too: 503/504 become UNAVAILABLE/DEADLINE_EXCEEDED
    // toward a gRPC client); Envoy reads it from headers or trailers.
    let grpc_failure = admitted.grpc
        && status != 0
        && env
            .property(&["response", "grpc_status"])
            .and_then(|b| property_u64(&b))
            .is_some_and(|code| code < 32 && s.grpc_failure_codes & (1 << code) != 0);
    let failure = status == 0 || status >= 500 || grpc_failure || slow;
    if failure {
        outcomes.add(FAILURE_RECORDED);
    }
    if admitted.probe {
        outcomes.add(if failure {
            PROBE_FAILED
        } else {
            PROBE_SUCCEEDED
        });
    }
    let evidence = Evidence {
        failure,
        probe: admitted.probe,
    };
    match complete(env, &key, s, now, slot, Some(evidence)) {
        Some(Transition::Opened) | Some(Transition::Reopened) => {
            crate::circuit::remember_opened(env, &key);
            outcomes.add(OPENED)
        }
        Some(Transition::Closed) => outcomes.add(CLOSED),
        None => {}
    }
    outcomes
}
