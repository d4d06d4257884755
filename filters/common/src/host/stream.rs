//! The HTTP context of one filter (`Stream`): reads the request once,
//! resolves the tenant, calls the core and applies its decision (header
//! edits, local replies, callouts, parked waits, held bodies), then the
//! response and log phases. The suite's chain runs one per concern (`Stage`).

use super::*;

pub struct Stream<F: HttpFilter> {
    pub(super) context_id: u32,
    pub(super) compiled: Option<Rc<Compiled<F>>>,
    pub(super) worker: Rc<Worker>,
    /// The request is held for a callout (its token and tag) or a parked wait;
    /// body and trailers must not let it through meanwhile.
    pub(super) held: Option<Option<(u32, u32)>>,
    /// The held callout also has a deadline (an entry in the parked list).
    pub(super) deadline: bool,
    /// The tenant slot when the filter acted on the request phase.
    pub(super) active_slot: Option<usize>,
    /// For log lines of later phases.
    pub(super) request_id: Option<String>,
    /// Holding the request for its body, up to this many bytes.
    pub(super) waiting_for_body: Option<usize>,
    /// The held body is a gRPC call's (`Decision::grpc_body`).
    pub(super) waiting_grpc: bool,
    /// Whether the request is a gRPC call, when its content type was read
    /// with its headers (`None`: read when a reply needs it).
    pub(super) grpc: Option<bool>,
    /// Bytes of the held body Envoy buffered so far.
    pub(super) body_buffered: usize,
    /// The suite module's records for the access log, kept for the log phase.
    #[cfg(feature = "suite")]
    pub(super) log_record: LogRecord,
    pub(super) state: F::Stream,
    pub(super) _filter: PhantomData<F>,
}

impl<F: HttpFilter> Context for Stream<F> {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if Stage::call_response(self, token_id, num_headers, body_size) == Some(true) {
            let _ = hostcalls::resume_http_request();
        }
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if Stage::grpc_response(self, token_id, status_code, response_size) == Some(true) {
            let _ = hostcalls::resume_http_request();
        }
    }
}

impl<F: HttpFilter> Stream<F> {
    fn callout_answered(
        &mut self,
        token_id: u32,
        read: impl FnOnce() -> Option<CalloutResponse>,
    ) -> Option<bool> {
        test_panic::at("http_call_response");
        if !F::MAKES_CALLOUTS {
            return None;
        }
        let tag = match self.held {
            Some(Some((token, tag))) if token == token_id => tag,
            _ => return None,
        };
        self.held = None;
        let (Some(compiled), Some(slot)) = (self.compiled.clone(), self.active_slot) else {
            return Some(true);
        };
        let response = read();
        // Was this request already answered at its deadline?
        let expired = std::mem::take(&mut self.deadline) && {
            let own = self.context_id;
            match self.worker.parked.try_borrow_mut() {
                Ok(mut parked) => {
                    let before = parked.len();
                    parked.retain(|p| p.context_id != own);
                    parked.len() == before
                }
                Err(_) => false,
            }
        };
        let resume = if expired {
            if let Some(settings) = compiled.profile.settings(slot) {
                let outcomes = F::on_callout_done(settings, tag, response.as_ref(), &EnvoyEnv);
                count(&compiled, slot, outcomes);
            }
            false
        } else {
            self.on_callout_answer(&compiled, slot, tag, response.as_ref(), 0)
        };
        // Requests of this tenant waiting for the same resource go on too.
        wake_parked::<F>(&compiled, &self.worker, slot, tag, self.context_id);
        Some(resume)
    }
}

pub(super) fn apply(map: MapType, edits: &HeaderEdits<'_>) {
    for op in &edits.ops {
        if map == MapType::HttpRequestHeaders {
            shared_headers::edit(op);
        } else if map == MapType::HttpResponseHeaders {
            shared_headers::edit_response(op);
        }
        let (name, result) = match op {
            HeaderOp::Set(name, value) => (
                name,
                hostcalls::set_map_value(map, name, Some(value.as_ref())),
            ),
            HeaderOp::Append(name, value) => (name, hostcalls::add_map_value(map, name, value)),
            HeaderOp::Remove(name) => (name, hostcalls::remove_map_value(map, name)),
        };
        // The name only: values can be credentials or identities.
        if result.is_err() {
            log::warn!("header edit failed: {name}");
        }
    }
    if edits.clear_route_cache {
        clear_route_cache();
    }
}

/// Whether the client's protocol carries gRPC streams: over HTTP/1.x a gRPC
/// call is gRPC-Web (Envoy's `grpc_web` filter translated it), which has no
/// client streaming, and its body ends in a frame of its own, after the
/// message: the call is waited for to its end, never taken for a stream.
fn client_can_stream() -> bool {
    let protocol = hostcalls::get_property(vec!["request", "protocol"])
        .ok()
        .flatten();
    !matches!(protocol.as_deref(), Some(b"HTTP/1.1" | b"HTTP/1.0"))
}

/// Envoy chooses the request's route again (on the headers as they are now).
fn clear_route_cache() {
    shared_headers::forget_properties();
    if hostcalls::call_foreign_function("clear_route_cache", None).is_err() {
        log::warn!("clear_route_cache is not available on this host");
    }
}

/// This body chunk becomes the replacement's body (the last chunk) or
/// nothing; the last one also adds its trailers (Envoy adds them to a
/// response only during its last body chunk).
fn replace_response(body_size: usize, end_of_stream: bool, with: &ResponseReplacement) {
    let body: &[u8] = if end_of_stream { &with.body } else { &[] };
    if hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, body).is_err() {
        log::warn!("response body replacement failed");
    }
    if !end_of_stream {
        return;
    }
    for (name, value) in &with.trailers {
        if hostcalls::add_map_value(MapType::HttpResponseTrailers, name, value).is_err() {
            log::warn!("response trailer not added: {name}");
        }
    }
}

/// Answers a request refused before any filter's work: 400 with a problem
/// details body naming the reason (never the path), counted per tenant.
pub(super) fn refuse<F: HttpFilter>(
    compiled: &Compiled<F>,
    slot: usize,
    refusal: crate::request::Refusal,
    grpc: Option<bool>,
) {
    if let Some(Some(id)) = compiled
        .request_counters
        .get(slot)
        .and_then(|c| c.get(refusal.outcome()))
    {
        add_metric(*id, 1);
    }
    let body = refusal.body();
    log::debug!(
        "{}",
        log_line(
            "request",
            compiled.profile.tenant_name(slot),
            None,
            &format!(
                "refused: {}",
                crate::request::OUTCOMES
                    .get(refusal.outcome())
                    .unwrap_or(&"")
            )
        )
    );
    let why = crate::request::OUTCOMES.get(refusal.outcome()).copied();
    let _ = send_reply(
        grpc,
        400,
        &[("content-type", "application/problem+json")],
        body.as_bytes(),
        Some(crate::grpc::INVALID_ARGUMENT),
        &crate::grpc::message("request", why),
    );
}

/// The filter state key by which the first meshware filter of a request
/// tells the others it already stripped the owned headers (a client cannot
/// set filter state; it could set a header).
pub(super) const FIRST_FILTER_KEY: &str = "meshware.first";

/// The live configuration's module name when every concern shares one
/// (the suite); a module on its own uses its filter's name.
pub(super) const LIVE_MODULE: Option<&str> = if cfg!(feature = "suite") {
    Some("suite")
} else {
    None
};

/// How a filter's view of the request differs from the headers it read,
/// after the owned headers were dealt with (`strip_or_receive`).
pub(super) enum OwnedHeaders {
    Unchanged,
    /// Removed from the request now (the first filter): remove them from
    /// the view, and from the suite's shared read once it is released.
    Removed(Vec<String>),
    /// Credentials the first filter removed and handed on: add them to
    /// the view.
    Handed(Vec<(String, String)>),
}

/// The first meshware filter of a request (in the suite module, its first
/// concern) strips the owned headers the client sent, so the identity
/// headers jwt_auth sets later are not stripped by the filters after it,
/// and marks the request in filter state. Credentials it removed (the
/// admin token) travel in that mark to the later filters.
/// Also returns the tenant a verified token claimed for the request, when
/// an earlier filter (jwt_auth) said so.
pub(super) fn strip_or_receive(
    context_id: u32,
    policy: &crate::request::RequestPolicy,
    headers: &Headers,
) -> (OwnedHeaders, Option<String>) {
    if shared_headers::first_done(context_id).is_some() {
        // A later concern of the suite: the shared read kept the credentials.
        return (OwnedHeaders::Unchanged, shared_headers::claimed(context_id));
    }
    let mark = hostcalls::get_property(vec![FIRST_FILTER_KEY])
        .ok()
        .flatten();
    shared_headers::set_first_done(context_id);
    if let Some(mark) = mark {
        let text = String::from_utf8_lossy(&mark);
        let claimed = crate::request::claimed_tenant(&text).map(str::to_string);
        let handed = crate::request::handed(&text);
        let owned = if handed.is_empty() {
            OwnedHeaders::Unchanged
        } else {
            OwnedHeaders::Handed(handed)
        };
        return (owned, claimed);
    }
    let credentials: Vec<(&str, &str)> = policy
        .credential_headers
        .iter()
        .filter_map(|name| headers.get(name).map(|v| (name.as_str(), v)))
        .collect();
    let mark = crate::request::handoff(&credentials);
    let _ = hostcalls::set_property(vec![FIRST_FILTER_KEY], Some(mark.as_bytes()));
    let mut removed = Vec::new();
    let mut stripped = false;
    for name in &policy.owned_headers {
        if headers.contains(name) {
            let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
            stripped = true;
            // This filter, and the suite's later concerns, still read the
            // credentials.
            if !policy.credential_headers.contains(name) {
                removed.push(name.clone());
            }
        }
    }
    if stripped {
        // Envoy may have routed on a header the client sent (the replay
        // route, canary's versions): never on one it may not set.
        clear_route_cache();
    }
    let owned = if removed.is_empty() {
        OwnedHeaders::Unchanged
    } else {
        OwnedHeaders::Removed(removed)
    };
    (owned, None)
}

/// The suite's shared read loses the owned headers the first concern removed.
pub(super) fn mirror_removed(owned: &OwnedHeaders) {
    if let OwnedHeaders::Removed(names) = owned {
        for name in names {
            shared_headers::edit(&HeaderOp::Remove(name.as_str().into()));
        }
    }
}

/// Counts a decision's outcomes, logs it and sends its local reply.
/// Returns true when a reply was sent (the stream must pause).
pub(super) fn act<F: HttpFilter>(
    compiled: &Compiled<F>,
    slot: usize,
    decision: &Decision<'_>,
    request_id: Option<&str>,
) -> bool {
    act_in::<F>(compiled, slot, decision, request_id, Record::Now, None)
}

/// `record`: where the decision's record for the access log goes.
pub(super) fn act_in<F: HttpFilter>(
    compiled: &Compiled<F>,
    slot: usize,
    decision: &Decision<'_>,
    request_id: Option<&str>,
    record: Record<'_>,
    grpc: Option<bool>,
) -> bool {
    match record {
        Record::Now => record_for_log::<F>(
            compiled,
            &decision.log_fields,
            Some((slot, decision.outcomes)),
        ),
        Record::Later(kept) => {
            kept.fields.extend(decision.log_fields.iter().cloned());
            if decision.outcomes != Outcomes::default() {
                kept.outcomes = Some((slot, decision.outcomes));
            }
        }
        Record::Skip => {}
    }
    if !decision.metrics.is_empty() {
        update_metrics(compiled, slot, &decision.metrics);
    }
    count(compiled, slot, decision.outcomes);
    let tenant = compiled.profile.tenant_name(slot);
    if log::log_enabled!(log::Level::Debug) && decision.outcomes != Outcomes::default() {
        let message = format!(
            "outcome={}",
            outcome_labels::<F>(compiled, slot, decision.outcomes)
        );
        log::debug!("{}", log_line(F::NAME, tenant, request_id, &message));
    }
    let Some(reply) = &decision.reply else {
        return false;
    };
    let reply_headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(
            reply
                .owned_headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .collect();
    let message = format!("local reply {}", reply.status);
    log::debug!("{}", log_line(F::NAME, tenant, request_id, &message));
    if !reply.owned_headers.is_empty() && reply.grpc_status.is_none() {
        // A stored response replayed as it was (idempotency).
        return hostcalls::send_local_reply(reply.status, &reply_headers, &reply.body, -1).is_ok();
    }
    let message = match &reply.grpc_message {
        Some(m) => m.to_string(),
        None => {
            let labels = outcome_labels::<F>(compiled, slot, decision.outcomes);
            crate::grpc::message(F::NAME, (!labels.is_empty()).then_some(labels.as_str()))
        }
    };
    send_reply(
        grpc,
        reply.status,
        &reply_headers,
        &reply.body,
        reply.grpc_status,
        &message,
    )
}

/// Whether the buffered request body holds at least one whole gRPC message
/// (a 5-byte prefix: flag, big-endian length; then the message).
pub(super) fn grpc_message_complete(body_size: usize) -> bool {
    if body_size < 5 {
        return false;
    }
    let Ok(Some(prefix)) = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, 5) else {
        return false;
    };
    let length = prefix
        .get(1..5)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(u32::MAX, u32::from_be_bytes);
    usize::try_from(length).is_ok_and(|n| body_size >= n.saturating_add(5))
}

/// Whether the request being answered is a gRPC call: `known` when the
/// stream saw its content type, else read now (only when a reply is sent,
/// so a request that passes pays nothing for it). Envoy's request headers
/// are gone once passed on: then the reply is plain HTTP.
pub(super) fn grpc_request(known: Option<bool>) -> bool {
    known.unwrap_or_else(|| {
        hostcalls::get_map_value_checked(MapType::HttpRequestHeaders, "content-type")
            .ok()
            .flatten()
            .is_some_and(|v| std::str::from_utf8(&v).is_ok_and(crate::grpc::is_grpc))
    })
}

/// Sends a local reply. A gRPC client gets it as a gRPC status
/// (`grpc_status`, or derived from `status`) in a trailers-only answer:
/// HTTP 200, `grpc-status`, `grpc-message` (percent-encoded), the reply's
/// headers as metadata; never Envoy's generic HTTP-to-gRPC mapping. The
/// status is also written as a header because Envoy does not take a
/// gRPC-Web call for gRPC (its `grpc_web` filter passes a 200 with
/// `grpc-status` on unchanged). Returns whether the host took it.
pub(crate) fn send_reply(
    grpc: Option<bool>,
    status: u32,
    headers: &[(&str, &str)],
    body: &[u8],
    grpc_status: Option<u8>,
    grpc_message: &str,
) -> bool {
    if grpc_request(grpc) {
        let code = grpc_status.unwrap_or_else(|| crate::grpc::status_for_http(status));
        let code_text = code.to_string();
        let mut metadata: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(k, _)| crate::grpc::is_metadata(k))
            .copied()
            .collect();
        metadata.push(("grpc-status", &code_text));
        metadata.push(("grpc-message", grpc_message));
        return hostcalls::send_local_reply(200, &metadata, b"", i32::from(code)).is_ok();
    }
    hostcalls::send_local_reply(status, headers, body, -1).is_ok()
}

/// The answer when a filter cannot decide (fail closed): 503, to a gRPC
/// client `UNAVAILABLE`.
pub(crate) fn send_unavailable(filter: &str) {
    let _ = send_reply(
        None,
        503,
        &[],
        b"",
        Some(crate::grpc::UNAVAILABLE),
        &crate::grpc::message(filter, Some("unavailable")),
    );
}

impl<F: HttpFilter> Stream<F> {
    /// In the suite module the record for the access log waits for the log
    /// phase, where it is written only for a line that will be written.
    fn act(&mut self, compiled: &Compiled<F>, slot: usize, decision: &Decision<'_>) -> bool {
        #[cfg(feature = "suite")]
        let record = Record::Later(&mut self.log_record);
        #[cfg(not(feature = "suite"))]
        let record = Record::Now;
        act_in::<F>(
            compiled,
            slot,
            decision,
            self.request_id.as_deref(),
            record,
            self.grpc,
        )
    }

    /// Starts a decision's callout or parks the request. Returns true when
    /// the request is now held or answered (the caller pauses it); false
    /// when it may go on. `depth` bounds callouts that fail to start and are
    /// decided again.
    fn hold(
        &mut self,
        compiled: &Compiled<F>,
        slot: usize,
        decision: &Decision<'_>,
        depth: u8,
    ) -> bool {
        if !F::MAKES_CALLOUTS {
            return false;
        }
        if let Some(callout) = &decision.callout {
            if let Some(token) = dispatch(callout) {
                self.held = Some(Some((token, callout.tag)));
                // A deadline shorter than the call's own timeout: the tick
                // answers the request then, and the late answer only
                // updates what the tenant shares.
                if let Some(park) = decision.park {
                    if let Ok(mut parked) = self.worker.parked.try_borrow_mut() {
                        if parked.len() < MAX_PARKED {
                            parked.push(Parked {
                                context_id: self.context_id,
                                slot,
                                tag: park.tag,
                                deadline_ms: park.deadline_ms,
                            });
                            self.deadline = true;
                        }
                    }
                }
                return true;
            }
            // Could not even start (unknown cluster): the same path as a failed call.
            self.held = None;
            return !self.on_callout_answer(compiled, slot, callout.tag, None, depth + 1);
        }
        if let Some(park) = decision.park {
            let Ok(mut parked) = self.worker.parked.try_borrow_mut() else {
                return false;
            };
            if parked.len() >= MAX_PARKED {
                drop(parked);
                if let Some(settings) = compiled.profile.settings(slot) {
                    let expired = F::on_park_expired(settings, park.tag);
                    if self.act(compiled, slot, &expired) {
                        return true;
                    }
                }
                return false;
            }
            parked.push(Parked {
                context_id: self.context_id,
                slot,
                tag: park.tag,
                deadline_ms: park.deadline_ms,
            });
            self.held = Some(None);
            return true;
        }
        false
    }

    /// Decides a held request with its callout's answer: replies, holds it
    /// again, or returns true when the request may go on (the caller resumes
    /// it). The current context is this stream's.
    fn on_callout_answer(
        &mut self,
        compiled: &Compiled<F>,
        slot: usize,
        tag: u32,
        response: Option<&CalloutResponse>,
        depth: u8,
    ) -> bool {
        let Some(settings) = compiled.profile.settings(slot) else {
            return true;
        };
        if depth > 2 {
            // A filter that keeps asking for failing callouts: fail closed.
            send_unavailable(F::NAME);
            return false;
        }
        let outcomes = F::on_callout_done(settings, tag, response, &EnvoyEnv);
        count(compiled, slot, outcomes);
        let worker = self.worker.clone();
        let state = &mut self.state;
        let Some(decision) = with_request(compiled, &worker, slot, |ctx| {
            F::on_callout_response(settings, ctx, state, tag, response)
        }) else {
            send_unavailable(F::NAME);
            return false;
        };
        if self.act(compiled, slot, &decision) {
            return false;
        }
        apply(MapType::HttpRequestHeaders, &decision.request);
        apply_tenant_header(compiled, slot, &decision.tenant_header, self.context_id);
        if self.hold(compiled, slot, &decision, depth) {
            return false;
        }
        self.held = None;
        true
    }
}

impl<F: HttpFilter> Stream<F> {
    /// Whether the request is still held. A parked request is woken from
    /// another request's context (`wake_parked`), which cannot reach this
    /// stream: once it is no longer in the parked list, its hold is over
    /// and body chunks arriving later must pass.
    fn still_held(&mut self) -> bool {
        match self.held {
            None => false,
            Some(Some(_)) => true,
            Some(None) => {
                let own = self.context_id;
                let parked = self
                    .worker
                    .parked
                    .try_borrow()
                    .map_or(true, |p| p.iter().any(|x| x.context_id == own));
                if !parked {
                    self.held = None;
                }
                parked
            }
        }
    }

    /// A chunk of a request held for its body: buffer (Envoy keeps the
    /// chunks while we pause) until the end or the limit, then decide.
    /// The compiled profile and tenant slot of a stream whose response
    /// body (and trailers) the filter reads (`READS_RESPONSE_BODY`,
    /// `wants_response`).
    fn reading_response(&self) -> Option<(Rc<Compiled<F>>, usize)> {
        if !F::READS_RESPONSE_BODY || !F::wants_response(&self.state) {
            return None;
        }
        Some((self.compiled.clone()?, self.active_slot?))
    }

    fn held_body(&mut self, body_size: usize, end_of_stream: bool, limit: usize) -> Action {
        let (Some(compiled), Some(slot)) = (self.compiled.clone(), self.active_slot) else {
            return Action::Continue;
        };
        let Some(settings) = compiled.profile.settings(slot) else {
            return Action::Continue;
        };
        if self.waiting_grpc
            && !end_of_stream
            && body_size <= limit
            && grpc_message_complete(body_size)
        {
            // A whole message and the stream goes on: a streaming call.
            self.waiting_for_body = None;
            let outcomes = F::on_request_stream(settings, &mut self.state);
            count(&compiled, slot, outcomes);
            return Action::Continue;
        }
        let decision = if body_size > limit {
            F::on_request_body_complete(settings, &mut self.state, None, &EnvoyEnv)
        } else if end_of_stream {
            let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default();
            F::on_request_body_complete(settings, &mut self.state, Some(&body), &EnvoyEnv)
        } else {
            return Action::Pause;
        };
        self.waiting_for_body = None;
        if self.act(&compiled, slot, &decision) {
            return Action::Pause;
        }
        apply(MapType::HttpRequestHeaders, &decision.request);
        Action::Continue
    }
}

#[cfg(feature = "suite")]
impl<F: HttpFilter> Stream<F> {
    /// Writes the kept records when the suite's log phase says the access
    /// logger will write this request's line (`shared_headers::line_logged`).
    fn write_kept_record(&mut self) {
        if self.log_record.fields.is_empty() && self.log_record.outcomes.is_none() {
            return;
        }
        let record = std::mem::take(&mut self.log_record);
        if let (Some(compiled), true) = (&self.compiled, shared_headers::line_logged()) {
            record_for_log::<F>(compiled, &record.fields, record.outcomes);
        }
    }
}

impl<F: HttpFilter> Stage for Stream<F> {
    fn request_headers(&mut self, end_of_stream: bool) -> Action {
        let Some(compiled) = self.compiled.clone() else {
            return Action::Continue;
        };
        // In the suite module, one read serves every concern.
        let shared = shared_headers::get(self.context_id);
        let owned;
        let headers: &Headers = match shared.as_deref() {
            Some(h) => h,
            None => {
                owned = match F::REQUEST_HEADERS {
                    None => match hostcalls::get_map_serialized(MapType::HttpRequestHeaders) {
                        Ok(map) => Headers::from_serialized(map),
                        Err(_) => return Action::Continue,
                    },
                    // The owned headers must be seen to be stripped: the
                    // whole map, in one read.
                    Some(_) if compiled.reads_owned => {
                        match hostcalls::get_map_serialized(MapType::HttpRequestHeaders) {
                            Ok(map) => Headers::from_serialized(map),
                            Err(_) => return Action::Continue,
                        }
                    }
                    Some(names) => Headers::from_bytes(declared_headers(
                        names,
                        compiled.profile.tenancy.header(),
                    )),
                };
                &owned
            }
        };
        #[cfg(feature = "test-panic")]
        if let Some(callback) = headers.get(test_panic::HEADER) {
            test_panic::arm(callback);
        }
        test_panic::at("request_headers");
        let profile = &compiled.profile;
        let header_value = profile.tenancy.header().and_then(|h| headers.get(&h.name));
        // Whether the map read is whole (a missing content type then means
        // not gRPC), or only the declared headers.
        let whole = shared.is_some() || F::REQUEST_HEADERS.is_none() || compiled.reads_owned;
        self.grpc = match headers.get("content-type") {
            Some(t) => Some(crate::grpc::is_grpc(t)),
            None => whole.then_some(false),
        };
        let raw_path = headers.get(":path").unwrap_or("/");
        let read = shared_headers::path(self.context_id, raw_path);
        let judged = crate::request::judge(
            profile,
            headers.get(":authority"),
            raw_path,
            read.as_deref(),
            header_value,
        );
        let slot = judged.slot;
        let tenant_source = judged.source;
        let refusal = judged.refusal.or_else(|| {
            crate::request::judge_grpc_timeout(headers.get("grpc-timeout"), || {
                headers
                    .get("content-type")
                    .map_or_else(|| grpc_request(None), crate::grpc::is_grpc)
            })
        });
        if let Some(refusal) = refusal {
            refuse(&compiled, slot, refusal, self.grpc);
            return Action::Pause;
        }
        // `?filter=<name>` asks for one filter's state: in separate modules,
        // the module that runs it answers and the others let it pass.
        let status_endpoint = compiled
            .status
            .as_ref()
            .filter(|s| s.matches(&judged.path))
            .map(|s| (s, crate::live::filter_query(raw_path)))
            .filter(|(_, only)| only.is_none_or(reports_state_of));
        if let Some((status, only)) = status_endpoint {
            // Served here, whichever filter meets it first: the allowed
            // ranges and token holders see the JSON, everyone else a plain 404.
            // The token header is read on this rare path only: the filter
            // may have read just the headers it declares.
            let token = if status.tokens.0.is_empty() {
                None
            } else {
                hostcalls::get_map_value_checked(MapType::HttpRequestHeaders, &status.token_header)
                    .ok()
                    .flatten()
            };
            let allowed = status.allows(source_address(), token.as_deref());
            if allowed {
                let body = status.body(&state_json(&EnvoyEnv, only));
                let headers = [
                    ("content-type", "application/json"),
                    ("cache-control", "no-store"),
                ];
                send_reply(self.grpc, 200, &headers, body.as_bytes(), None, "");
            } else {
                send_reply(self.grpc, 404, &[], b"", None, "");
            }
            return Action::Pause;
        }
        let (owned_headers, claimed) =
            strip_or_receive(self.context_id, profile.request_policy(slot), headers);
        // One tenant for the whole chain: the one a verified token claimed
        // before this filter, if any.
        let (slot, tenant_source) = match claimed.as_deref().and_then(|t| profile.slot_of(t)) {
            Some(claimed_slot) => (claimed_slot, crate::tenancy::Source::Header),
            None => (slot, tenant_source),
        };
        let adjusted;
        let headers = match &owned_headers {
            OwnedHeaders::Unchanged => headers,
            OwnedHeaders::Removed(names) => {
                let mut view = headers.clone();
                for name in names {
                    view.apply(&HeaderOp::Remove(name.as_str().into()));
                }
                adjusted = view;
                &adjusted
            }
            OwnedHeaders::Handed(handed) => {
                let mut view = headers.clone();
                for (name, value) in handed {
                    view.apply(&HeaderOp::Set(name.as_str().into(), value.as_str().into()));
                }
                adjusted = view;
                &adjusted
            }
        };
        // Only idempotency sets it (stripped from clients above): the replay
        // route answers this request, no upstream.
        if F::PASSES_REPLAYS
            && headers.get(crate::request::REPLAY_HEADER) == Some(crate::request::REPLAY_ROUTED)
        {
            drop(shared);
            mirror_removed(&owned_headers);
            return Action::Continue;
        }
        let worker = self.worker.clone();
        let settings = profile
            .settings(slot)
            .filter(|s| compiled.active && F::enabled(s));
        let (Some(settings), Ok(mut rng)) = (settings, worker.rng.try_borrow_mut()) else {
            drop(shared);
            mirror_removed(&owned_headers);
            return Action::Continue;
        };
        let tenant = Tenant {
            slot,
            name: profile.tenant_name(slot),
            source: tenant_source,
        };
        let mut source = SourceAddress::lazy(source_address);
        let mut ctx = RequestCtx {
            tenant,
            tenants: profile.tenant_names(),
            headers,
            rng: &mut rng,
            source: &mut source,
            env: &EnvoyEnv,
            path: &judged.path,
            policy: profile.request_policy(slot),
        };
        let decision = F::on_request(settings, &mut ctx, &mut self.state);
        drop(rng);
        self.active_slot = Some(slot);
        // Kept for log lines of this and later phases; copied only when
        // debug lines are written at all (the level follows Envoy's).
        if log::log_enabled!(log::Level::Debug) {
            self.request_id = decision
                .request
                .value_of("x-request-id")
                .or_else(|| headers.get("x-request-id"))
                .map(str::to_string);
        }
        // Released before editing, so the shared read is edited in place.
        drop(shared);
        mirror_removed(&owned_headers);
        if self.act(&compiled, slot, &decision) {
            return Action::Pause;
        }
        apply(MapType::HttpRequestHeaders, &decision.request);
        apply_tenant_header(&compiled, slot, &decision.tenant_header, self.context_id);
        if self.hold(&compiled, slot, &decision, 0) {
            return Action::Pause;
        }
        if let Some(limit) = decision.wait_for_body.filter(|_| F::HOLDS_REQUEST_BODY) {
            if !end_of_stream {
                self.waiting_for_body = Some(limit);
                self.waiting_grpc = decision.grpc_body && client_can_stream();
                return Action::Pause;
            }
            // No body: decide now.
            let decision =
                F::on_request_body_complete(settings, &mut self.state, Some(&[]), &EnvoyEnv);
            if self.act(&compiled, slot, &decision) {
                return Action::Pause;
            }
            apply(MapType::HttpRequestHeaders, &decision.request);
        }
        Action::Continue
    }

    fn request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.still_held() {
            // Continuing here would release the held headers too.
            return Action::Pause;
        }
        if let Some(limit) = self.waiting_for_body.filter(|_| F::HOLDS_REQUEST_BODY) {
            self.body_buffered = body_size;
            return self.held_body(body_size, end_of_stream, limit);
        }
        if !F::READS_REQUEST_BODY {
            return Action::Continue;
        }
        let (Some(compiled), Some(slot)) = (self.compiled.clone(), self.active_slot) else {
            return Action::Continue;
        };
        let Some(settings) = compiled.profile.settings(slot) else {
            return Action::Continue;
        };
        let decision = F::on_request_body(settings, &mut self.state, body_size, end_of_stream);
        if self.act(&compiled, slot, &decision) {
            return Action::Pause;
        }
        Action::Continue
    }

    fn request_trailers(&mut self) -> Action {
        if self.still_held() {
            return Action::Pause;
        }
        // With trailers (HTTP/2, gRPC) the body ends here, not with a data
        // frame: decide on what was buffered, or the request would pass undecided.
        if let Some(limit) = self.waiting_for_body.filter(|_| F::HOLDS_REQUEST_BODY) {
            return self.held_body(self.body_buffered, true, limit);
        }
        Action::Continue
    }

    fn log(&mut self) {
        #[cfg(feature = "suite")]
        self.write_kept_record();
        if !F::OBSERVES_COMPLETION {
            return;
        }
        let (Some(compiled), Some(slot)) = (self.compiled.clone(), self.active_slot) else {
            return;
        };
        let Some(settings) = compiled.profile.settings(slot) else {
            return;
        };
        let outcomes = F::on_complete(settings, &mut self.state, &EnvoyEnv);
        let decision = Decision {
            outcomes,
            ..Decision::default()
        };
        act_in::<F>(
            &compiled,
            slot,
            &decision,
            self.request_id.as_deref(),
            Record::Skip,
            self.grpc,
        );
        let updates = F::on_complete_metrics(settings, &mut self.state, &EnvoyEnv);
        if !updates.is_empty() {
            update_metrics(&compiled, slot, &updates);
        }
    }

    fn response_headers(&mut self, end_of_stream: bool) -> Action {
        test_panic::at("response_headers");
        let (Some(compiled), Some(slot)) = (self.compiled.clone(), self.active_slot) else {
            return Action::Continue;
        };
        let Some(settings) = compiled.profile.settings(slot) else {
            return Action::Continue;
        };
        F::on_response_start(settings, &mut self.state, &EnvoyEnv);
        let reads_headers = F::READS_RESPONSE_HEADERS && F::wants_response(&self.state);
        // In the suite module, the first concern's read serves the others.
        let shared = if reads_headers {
            shared_headers::response(self.context_id)
        } else {
            None
        };
        let owned;
        let headers: &Headers = match shared.as_deref() {
            Some(h) => h,
            None if reads_headers => {
                match hostcalls::get_map_serialized(MapType::HttpResponseHeaders) {
                    Ok(map) => {
                        owned = Headers::from_serialized(map);
                        &owned
                    }
                    Err(_) => return Action::Continue,
                }
            }
            None => {
                owned = Headers::default();
                &owned
            }
        };
        let edits = F::on_response(settings, headers, &mut self.state);
        // Released before editing, so the shared read is edited in place.
        drop(shared);
        apply(MapType::HttpResponseHeaders, &edits);
        let late = F::response_outcomes(&self.state);
        if late != Outcomes::default() {
            count(&compiled, slot, late);
            record_for_log::<F>(&compiled, &[], Some((slot, late)));
        }
        if F::READS_RESPONSE_BODY && end_of_stream {
            let outcomes = F::on_response_body(settings, &mut self.state, &[], true, &EnvoyEnv);
            count(&compiled, slot, outcomes);
        }
        Action::Continue
    }

    fn response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some((compiled, slot)) = self.reading_response() else {
            return Action::Continue;
        };
        let Some(settings) = compiled.profile.settings(slot) else {
            return Action::Continue;
        };
        if let Some(replacement) = F::response_replacement(&mut self.state, end_of_stream) {
            replace_response(body_size, end_of_stream, &replacement);
            return Action::Continue;
        }
        let chunk = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let outcomes =
            F::on_response_body(settings, &mut self.state, &chunk, end_of_stream, &EnvoyEnv);
        count(&compiled, slot, outcomes);
        Action::Continue
    }

    fn grpc(&self) -> Option<bool> {
        self.grpc
    }

    fn response_trailers(&mut self) -> Action {
        let Some((compiled, slot)) = self.reading_response() else {
            return Action::Continue;
        };
        let Some(settings) = compiled.profile.settings(slot) else {
            return Action::Continue;
        };
        let trailers = match hostcalls::get_map_serialized(MapType::HttpResponseTrailers) {
            Ok(map) => Headers::from_serialized(map),
            Err(_) => return Action::Continue,
        };
        let outcomes = F::on_response_trailers(settings, &mut self.state, &trailers, &EnvoyEnv);
        count(&compiled, slot, outcomes);
        Action::Continue
    }

    fn call_response(&mut self, token: u32, num_headers: usize, body_size: usize) -> Option<bool> {
        self.callout_answered(token, || callout_response(num_headers, body_size))
    }

    fn grpc_response(&mut self, token: u32, status_code: u32, size: usize) -> Option<bool> {
        self.callout_answered(token, || Some(grpc_callout_response(status_code, size)))
    }

    fn waiting_for_body(&self) -> bool {
        self.waiting_for_body.is_some()
    }

    fn records(&self, field: &str, value: &str) -> bool {
        #[cfg(feature = "suite")]
        return self
            .log_record
            .fields
            .iter()
            .any(|(f, v)| *f == field && v == value);
        #[cfg(not(feature = "suite"))]
        {
            let _ = (field, value);
            false
        }
    }

    fn release(&mut self) {
        self.held = None;
        self.deadline = false;
    }
}

// `timed`: the counting build's wall time per phase; nothing otherwise.
impl<F: HttpFilter> HttpContext for Stream<F> {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        hostcalls::timed(F::NAME, "request_headers", || {
            self.request_headers(end_of_stream)
        })
    }
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        hostcalls::timed(F::NAME, "request_body", || {
            self.request_body(body_size, end_of_stream)
        })
    }
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.request_trailers()
    }
    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        hostcalls::timed(F::NAME, "response_headers", || {
            self.response_headers(end_of_stream)
        })
    }
    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        hostcalls::timed(F::NAME, "response_body", || {
            self.response_body(body_size, end_of_stream)
        })
    }
    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.response_trailers()
    }
    fn on_log(&mut self) {
        hostcalls::timed(F::NAME, "log", || self.log());
        hostcalls::flush();
    }
}
