//! The Idempotency-Key decision (draft-ietf-httpapi-idempotency-key-header):
//! the first request with a key goes upstream holding an in-flight mark; a
//! duplicate while it runs gets 409, a duplicate with another payload 422, and
//! a duplicate after completion the stored response, without the upstream.

use crate::config::{GrpcReplay, IdempotencySettings, OverLimit};
use crate::store::{find_or_claim, finish, slot_keys, Claim, Entry, Stored};
use meshware_common::bucket::fnv1a_64;
use meshware_common::path::RequestPath;
use meshware_common::request::{
    REPLAY_CARRIER, REPLAY_CONTENT_TYPE, REPLAY_HEADER, REPLAY_METHOD, REPLAY_ROUTED,
};
use meshware_common::{
    Decision, HeaderEdits, Headers, HostEnv, LocalReply, Outcomes, ResponseReplacement,
    SourceAddress,
};
use std::borrow::Cow;

pub const OUTCOMES: &[&str] = &[
    "first",
    "replayed",
    "conflict_in_flight",
    "mismatch",
    "evicted",
    "missing_key",
    "invalid_key",
    "store_full",
    "stored",
    "released",
    "too_large",
    "streaming",
    "not_replayable",
];
pub const FIRST: usize = 0;
pub const REPLAYED: usize = 1;
pub const CONFLICT_IN_FLIGHT: usize = 2;
pub const MISMATCH: usize = 3;
pub const EVICTED: usize = 4;
pub const MISSING_KEY: usize = 5;
pub const INVALID_KEY: usize = 6;
pub const STORE_FULL: usize = 7;
pub const STORED: usize = 8;
pub const RELEASED: usize = 9;
pub const TOO_LARGE: usize = 10;
pub const STREAMING: usize = 11;
pub const NOT_REPLAYABLE: usize = 12;

/// Response headers never stored: per-hop, or recomputed by Envoy.
const NOT_STORED: &[&str] = &[
    "date",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "x-envoy-upstream-service-time",
];

/// A request waiting for its body, then the upstream exchange it owns.
#[derive(Debug, Default)]
pub struct Flight {
    pending: Option<Pending>,
    /// Slot and scope of our in-flight mark.
    claimed: Option<(String, String, u128)>,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    too_big: bool,
    /// A gRPC call: its response ends with trailers, which are stored too.
    grpc: bool,
    trailers: Vec<(String, String)>,
    /// A duplicate gRPC call replayed in full (`GrpcReplay::Full`).
    replay: Option<Replaying>,
}

#[derive(Debug)]
enum Replaying {
    /// Sent to the replay route; its answer is still to come.
    Routed(Stored),
    /// The replay route answered: its body and trailers become these.
    Body(Stored),
    /// Something else answered (no replay route deployed): the duplicate
    /// learns it already ran, as without `full`.
    Refused,
}

impl Flight {
    /// Whether this request's response is to be stored (its mark is ours)
    /// or replaced (a replay): either reads the response.
    pub fn stores_response(&self) -> bool {
        self.claimed.is_some() || self.replay.is_some()
    }
}

#[derive(Debug)]
struct Pending {
    scope: String,
    slots: [String; 2],
    method: String,
    path: String,
}

/// The key per the draft: a structured-field string (`"..."`, printable
/// ASCII, `\"` and `\\` escapes); bare tokens too when allowed.
pub fn parse_key(raw: &str, s: &IdempotencySettings) -> Result<String, &'static str> {
    let raw = raw.trim();
    let key = if let Some(inner) = raw.strip_prefix('"') {
        let inner = inner.strip_suffix('"').ok_or("unterminated string")?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('"' | '\\')) => out.push(e),
                    _ => return Err("bad escape"),
                },
                '"' => return Err("unescaped quote"),
                c if (' '..='~').contains(&c) => out.push(c),
                _ => return Err("non-printable character"),
            }
        }
        out
    } else if s.allow_bare_keys {
        let ok = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b));
        if !ok {
            return Err("not a token");
        }
        raw.to_string()
    } else {
        return Err("must be a quoted string");
    };
    if key.is_empty() {
        return Err("empty");
    }
    if key.len() > s.max_key_length {
        return Err("too long");
    }
    Ok(key)
}

fn problem<'s>(status: u32, title: &str, detail: &str, outcome: usize) -> Decision<'s> {
    let body = meshware_common::jsontext::problem("about:blank", title, status, detail);
    Decision {
        reply: Some(LocalReply {
            status,
            headers: vec![("content-type", "application/problem+json".to_string())],
            body: Cow::Owned(body.into_bytes()),
            ..LocalReply::default()
        }),
        outcomes: Outcomes::one(outcome),
        ..Decision::default()
    }
}

/// 128 bits from two independent FNV-1a runs over method, path and body.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> u128 {
    let parts =
        |tag: &'static [u8]| fnv1a_64(&[tag, method.as_bytes(), &[0], path.as_bytes(), &[0], body]);
    u128::from(parts(b"idem-a")) << 64 | u128::from(parts(b"idem-b"))
}

pub fn on_request<'s>(
    s: &'s IdempotencySettings,
    tenant: &str,
    headers: &Headers,
    request_path: &RequestPath,
    source: &mut SourceAddress,
    flight: &mut Flight,
) -> Decision<'s> {
    let method = headers.get(":method").unwrap_or("");
    // The fingerprint keeps the raw target: another spelling of the path
    // with the same key is a different request (422), never a replay.
    let path = headers.get(":path").unwrap_or("/");
    // A route applies when any reading of the path reaches it; required
    // when any such route requires a key.
    let mut applies = false;
    let mut required = false;
    for reading in request_path.readings() {
        if let Some(route) = s
            .routes
            .best_where(reading, |r| r.methods.iter().any(|m| m == method))
        {
            applies = true;
            required |= route.required;
        }
    }
    if !applies {
        return Decision::default();
    }
    let values: Vec<&str> = headers.get_all(&s.header).collect();
    let raw = match values.as_slice() {
        [] if required => {
            return problem(
                400,
                "Bad Request",
                "an Idempotency-Key header is required",
                MISSING_KEY,
            )
        }
        [] => return Decision::default(),
        [one] => *one,
        _ => {
            return problem(
                400,
                "Bad Request",
                "exactly one Idempotency-Key header",
                INVALID_KEY,
            )
        }
    };
    let key = match parse_key(raw, s) {
        Ok(k) => k,
        Err(why) => {
            return problem(
                400,
                "Bad Request",
                &format!("invalid Idempotency-Key: {why}"),
                INVALID_KEY,
            )
        }
    };
    // One caller can never see another caller's response: the scope holds
    // the caller's identity (user, else client address).
    let identity = match headers.get(&s.user_header).filter(|u| !u.is_empty()) {
        Some(user) => format!("user:{user}"),
        None => format!(
            "addr:{}",
            source
                .get()
                .map(meshware_common::net::key_text)
                .unwrap_or_default()
        ),
    };
    let scope = format!("{tenant}\n{identity}\n{key}");
    flight.pending = Some(Pending {
        slots: slot_keys(tenant, &scope, s.max_entries),
        scope,
        method: method.to_string(),
        path: path.to_string(),
    });
    flight.grpc = headers
        .get("content-type")
        .is_some_and(meshware_common::grpc::is_grpc);
    Decision {
        wait_for_body: Some(s.max_request_bytes),
        // A streaming call never ends its body while it waits for answers:
        // only a unary one (one message, then the end) is held.
        grpc_body: flight.grpc,
        ..Decision::default()
    }
}

pub fn on_body<'s>(
    s: &'s IdempotencySettings,
    flight: &mut Flight,
    body: Option<&[u8]>,
    env: &dyn HostEnv,
) -> Decision<'s> {
    let Some(p) = flight.pending.take() else {
        return Decision::default();
    };
    let Some(body) = body else {
        return match s.over_limit {
            OverLimit::Reject => problem(
                413,
                "Content Too Large",
                "request body too large for idempotency",
                TOO_LARGE,
            ),
            OverLimit::Skip => Decision {
                outcomes: Outcomes::one(TOO_LARGE),
                ..Decision::default()
            },
        };
    };
    let fp = fingerprint(&p.method, &p.path, body);
    let now = env.now_ms();
    let mark = Entry {
        scope: p.scope.clone(),
        fingerprint: fp,
        expires_ms: now.saturating_add(s.in_flight_timeout_ms),
        response: None,
    };
    match find_or_claim(env, &p.slots, &mark, now) {
        Claim::Claimed { slot } => {
            flight.claimed = Some((slot, p.scope, fp));
            Decision {
                outcomes: Outcomes::one(FIRST),
                ..Decision::default()
            }
        }
        Claim::Found(e) if e.fingerprint != fp => problem(
            422,
            "Unprocessable Content",
            "this Idempotency-Key was used with another request",
            MISMATCH,
        ),
        Claim::Found(Entry { response: None, .. }) => problem(
            409,
            "Conflict",
            "a request with this Idempotency-Key is in progress",
            CONFLICT_IN_FLIGHT,
        ),
        Claim::Found(Entry {
            response: Some(stored),
            ..
        }) if flight.grpc => replay_grpc(s, stored, flight, env),
        Claim::Found(Entry {
            response: Some(stored),
            ..
        }) => {
            let mut owned_headers = stored.headers;
            owned_headers.push(("idempotency-replayed".to_string(), "true".to_string()));
            Decision {
                reply: Some(LocalReply {
                    status: u32::from(stored.status),
                    owned_headers,
                    body: Cow::Owned(stored.body),
                    ..LocalReply::default()
                }),
                outcomes: Outcomes::one(REPLAYED),
                ..Decision::default()
            }
        }
        Claim::Full | Claim::Unavailable => Decision {
            outcomes: Outcomes::one(STORE_FULL),
            ..Decision::default()
        },
    }
}

/// A stored gRPC response to a duplicate call. Envoy answers a gRPC request
/// from a filter only in the trailers-only form (status and metadata, no
/// message), so a call that ended without a message (every failure) is
/// replayed exactly; one that returned messages cannot be, and the
/// duplicate learns so as ALREADY_EXISTS instead of running again.
///
/// With `grpc_replay: full` such a call is replayed too: the duplicate goes
/// on to the replay route (as a request no server runs as a call, should
/// the route be missing), and its answer is replaced by the stored one in
/// `replay_headers` and `response_replacement`.
fn replay_grpc<'s>(
    s: &IdempotencySettings,
    stored: Stored,
    flight: &mut Flight,
    env: &dyn HostEnv,
) -> Decision<'s> {
    if !stored.body.is_empty() && s.grpc_replay == GrpcReplay::Full && env.replaces_responses() {
        let mut request = HeaderEdits::default();
        // OPTIONS: safe by HTTP's rules, and refused by gRPC servers (which
        // take only POST): were the replay route missing, no upstream would
        // run the call again. (A gRPC server may run a POST whatever its
        // content type: grpcio does.)
        request.set(":method", REPLAY_METHOD);
        request.set("content-type", REPLAY_CONTENT_TYPE);
        request.set(REPLAY_HEADER, REPLAY_ROUTED);
        request.clear_route_cache = true;
        flight.replay = Some(Replaying::Routed(stored));
        // Counted when the answer shows whether the replay route carried
        // it (`response_outcomes`): replayed, or not_replayable.
        return Decision {
            request,
            ..Decision::default()
        };
    }
    if !stored.body.is_empty() {
        return Decision {
            reply: Some(LocalReply {
                status: 409,
                headers: vec![("idempotency-replayed", "false".to_string())],
                grpc_status: Some(meshware_common::grpc::ALREADY_EXISTS),
                ..LocalReply::default()
            }),
            outcomes: Outcomes::one(NOT_REPLAYABLE),
            ..Decision::default()
        };
    }
    // Trailers-only: the status is in the headers; otherwise the trailers.
    let all = || stored.headers.iter().chain(stored.trailers.iter());
    let value = |name: &str| all().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let code = value("grpc-status")
        .and_then(|v| v.parse::<u8>().ok())
        .unwrap_or(meshware_common::grpc::UNKNOWN);
    let mut owned_headers: Vec<(String, String)> = all()
        .filter(|(k, _)| !matches!(k.as_str(), "content-type" | "grpc-status" | "grpc-message"))
        .cloned()
        .collect();
    owned_headers.push(("idempotency-replayed".to_string(), "true".to_string()));
    Decision {
        reply: Some(LocalReply {
            status: 200,
            owned_headers,
            grpc_status: Some(code),
            grpc_message: value("grpc-message").map(Cow::Owned),
            ..LocalReply::default()
        }),
        outcomes: Outcomes::one(REPLAYED),
        ..Decision::default()
    }
}

/// A held gRPC call turned out to be a stream: it passes, never claimed.
pub fn on_stream(flight: &mut Flight) -> Outcomes {
    match flight.pending.take() {
        Some(_) => Outcomes::one(STREAMING),
        None => Outcomes::default(),
    }
}

pub fn on_response(flight: &mut Flight, headers: &Headers) -> HeaderEdits<'static> {
    if let Some(Replaying::Routed(stored)) = flight.replay.take() {
        return replay_headers(flight, stored, headers);
    }
    if flight.claimed.is_none() {
        return HeaderEdits::default();
    }
    flight.status = headers
        .get(":status")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    flight.headers = headers
        .iter()
        .filter(|(k, _)| !k.starts_with(':') && !NOT_STORED.contains(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    HeaderEdits::default()
}

static NO_ROUTE_WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The replay route's answer headers become the stored response's (with
/// `idempotency-replayed: true`); any other answer becomes ALREADY_EXISTS,
/// trailers-only. Its `date` stays: never stored, always current.
fn replay_headers(flight: &mut Flight, stored: Stored, headers: &Headers) -> HeaderEdits<'static> {
    let mut edits = HeaderEdits::default();
    for (name, _) in headers.iter() {
        if !name.starts_with(':') && name != "date" {
            edits.remove(name.to_string());
        }
    }
    if headers.get(REPLAY_HEADER) != Some(REPLAY_CARRIER) {
        // Once per VM: a deployment without the route would say it per call.
        if !NO_ROUTE_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            log::warn!(
                "idempotency: no replay route answered a replay (grpc_replay: full needs one); \
                 such duplicates get ALREADY_EXISTS"
            );
        }
        // Whatever answered (405, 415, a gRPC error): gRPC clients read
        // `grpc-status` from an HTTP 200.
        edits.set(":status", "200");
        edits.set("content-type", "application/grpc");
        edits.set(
            "grpc-status",
            meshware_common::grpc::ALREADY_EXISTS.to_string(),
        );
        edits.set("idempotency-replayed", "false");
        flight.replay = Some(Replaying::Refused);
        return edits;
    }
    edits.set(":status", stored.status.to_string());
    for (index, (name, value)) in stored.headers.iter().enumerate() {
        let seen = stored
            .headers
            .get(..index)
            .is_some_and(|before| before.iter().any(|(n, _)| n == name));
        if seen {
            edits.append(name.clone(), value.clone());
        } else {
            edits.set(name.clone(), value.clone());
        }
    }
    edits.set("idempotency-replayed", "true");
    flight.replay = Some(Replaying::Body(stored));
    edits
}

/// A routed replay's outcome, once its answer's headers are rewritten:
/// replayed when the replay route carried it, not_replayable when
/// something else answered (ALREADY_EXISTS).
pub fn response_outcomes(flight: &Flight) -> Outcomes {
    match flight.replay {
        Some(Replaying::Body(_)) => Outcomes::one(REPLAYED),
        Some(Replaying::Refused) => Outcomes::one(NOT_REPLAYABLE),
        _ => Outcomes::default(),
    }
}

/// A replay's body: nothing until the replay route's answer ends, then
/// the stored body and trailers.
pub fn response_replacement(flight: &mut Flight, end: bool) -> Option<ResponseReplacement> {
    match flight.replay.take() {
        None => None,
        Some(Replaying::Body(stored)) if end => Some(ResponseReplacement {
            body: stored.body,
            trailers: stored.trailers,
        }),
        // The status in the trailers too: headers followed by a body are
        // not the trailers-only form, whose status a client reads.
        Some(Replaying::Refused) if end => Some(ResponseReplacement {
            body: Vec::new(),
            trailers: vec![(
                "grpc-status".to_string(),
                meshware_common::grpc::ALREADY_EXISTS.to_string(),
            )],
        }),
        Some(other) => {
            flight.replay = Some(other);
            Some(ResponseReplacement::default())
        }
    }
}

pub fn on_response_body(
    s: &IdempotencySettings,
    flight: &mut Flight,
    chunk: &[u8],
    end: bool,
    env: &dyn HostEnv,
) -> Outcomes {
    if flight.claimed.is_none() {
        return Outcomes::default();
    }
    if flight.body.len() + chunk.len() > s.max_response_bytes {
        flight.too_big = true;
    } else {
        flight.body.extend_from_slice(chunk);
    }
    if !end {
        return Outcomes::default();
    }
    store(s, flight, env)
}

/// The response's trailers: with them (HTTP/2, gRPC) the response ends
/// here rather than with its last body chunk.
pub fn on_response_trailers(
    s: &IdempotencySettings,
    flight: &mut Flight,
    trailers: &Headers,
    env: &dyn HostEnv,
) -> Outcomes {
    if flight.claimed.is_none() {
        return Outcomes::default();
    }
    flight.trailers = trailers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    store(s, flight, env)
}

/// The response is complete: stored for duplicates, or the key released.
/// A gRPC call is judged by its grpc-status (a failure of the upstream,
/// UNAVAILABLE say, is kept only with `store_5xx`, as a 5xx is).
fn store(s: &IdempotencySettings, flight: &mut Flight, env: &dyn HostEnv) -> Outcomes {
    let Some((slot, scope, fp)) = flight.claimed.take() else {
        return Outcomes::default();
    };
    let grpc_status = flight
        .headers
        .iter()
        .chain(flight.trailers.iter())
        .find(|(k, _)| k == "grpc-status")
        .and_then(|(_, v)| v.parse::<u64>().ok());
    let effective = match (flight.grpc, grpc_status) {
        (true, Some(code)) => meshware_common::grpc::http_equivalent(code),
        _ => u64::from(flight.status),
    };
    let keep = !flight.too_big && flight.status != 0 && (effective < 500 || s.store_5xx);
    if !keep {
        finish(env, &slot, &scope, None);
        return Outcomes::one(RELEASED);
    }
    let entry = Entry {
        scope: scope.clone(),
        fingerprint: fp,
        expires_ms: env.now_ms().saturating_add(s.ttl_ms),
        response: Some(Stored {
            status: flight.status,
            headers: std::mem::take(&mut flight.headers),
            trailers: std::mem::take(&mut flight.trailers),
            body: std::mem::take(&mut flight.body),
        }),
    };
    finish(env, &slot, &scope, Some(&entry));
    Outcomes::one(STORED)
}

/// The stream ended: a mark still held means no complete response was
/// stored (reset, abort, another filter's reply), so the key is released.
pub fn on_complete(flight: &mut Flight, env: &dyn HostEnv) -> Outcomes {
    match flight.claimed.take() {
        Some((slot, scope, _)) => {
            finish(env, &slot, &scope, None);
            Outcomes::one(RELEASED)
        }
        None => Outcomes::default(),
    }
}

/// Tick: clears expired entries, a window at a time.
pub fn sweep(
    s: &IdempotencySettings,
    tenant: &str,
    env: &dyn HostEnv,
    cursor: &std::cell::Cell<u64>,
) -> Outcomes {
    let (cleared, next) =
        crate::store::sweep(env, tenant, cursor.get(), 256, s.max_entries, env.now_ms());
    cursor.set(next);
    if cleared > 0 {
        Outcomes::one(EVICTED)
    } else {
        Outcomes::default()
    }
}
