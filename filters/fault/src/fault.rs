//! The fault decision for one request: which fault (if any) applies, and
//! the abort or the delay it injects.

use crate::config::{Action, Fault, FaultSettings, Scope};
use meshware_common::path::RequestPath;
use meshware_common::request::FAULT_DRILL_HEADER;
use meshware_common::store::SetError;
use meshware_common::{
    Decision, HeaderEdits, Headers, HostEnv, LocalReply, Outcomes, Park, SharedStore, SourceAddress,
};
use std::borrow::Cow;

pub const OUTCOMES: &[&str] = &[
    "aborted",
    "delayed",
    "skipped_bound",
    "outside_window",
    "drill_refused",
    "killed",
];
pub const ABORTED: usize = 0;
pub const DELAYED: usize = 1;
pub const SKIPPED_BOUND: usize = 2;
pub const OUTSIDE_WINDOW: usize = 3;
pub const DRILL_REFUSED: usize = 4;
pub const KILLED: usize = 5;

/// The response header naming what a valid drill request got.
pub const INJECTED_HEADER: &str = "x-fault-injected";
/// A delay's park tag: no callout ever completes it, only its deadline.
pub const DELAY_TAG: u32 = 0xde1a;
const CAS_RETRIES: usize = 16;

/// Per request: the delay slot to give back, the drill's answer header.
#[derive(Debug, Default)]
pub struct Injected {
    /// The tenant's counter key, when this request holds a delay slot.
    pub slot_key: Option<String>,
    pub label: Option<String>,
}

fn counter_key(tenant: &str) -> String {
    format!("mw.fault.{tenant}.delayed")
}

fn read_count(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// Adds `delta` to the tenant's delayed-request count unless that would
/// pass `max`; returns whether it did.
fn adjust(store: &dyn SharedStore, key: &str, delta: i64, max: u64) -> bool {
    for _ in 0..CAS_RETRIES {
        let (current, cas) = match store.get(key) {
            Some((bytes, cas)) => (read_count(&bytes), Some(cas)),
            None => (0, None),
        };
        let next = if delta >= 0 {
            let n = current.saturating_add(delta.unsigned_abs());
            if n > max {
                return false;
            }
            n
        } else {
            current.saturating_sub(delta.unsigned_abs())
        };
        match store.set(key, next.to_string().as_bytes(), cas) {
            Ok(()) => return true,
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Failed) => return false,
        }
    }
    false
}

fn applies(f: &Fault, path: &RequestPath, method: &str) -> bool {
    f.route.as_ref().is_none_or(|p| p.matches_any(path))
        && f.methods
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == method))
}

pub struct Request<'a> {
    pub tenant: &'a str,
    pub headers: &'a Headers,
    pub path: &'a RequestPath,
    pub source: &'a mut SourceAddress,
    pub env: &'a dyn HostEnv,
}

pub fn on_request<'s>(
    s: &'s FaultSettings,
    req: Request<'_>,
    roll: &mut dyn FnMut(u64) -> u64,
    stream: &mut Injected,
) -> Decision<'s> {
    let mut outcomes = Outcomes::default();
    if !s.enabled {
        return Decision {
            outcomes: Outcomes::one(KILLED),
            ..Decision::default()
        };
    }
    let presented = req.headers.get(FAULT_DRILL_HEADER);
    let drill = presented.is_some_and(|t| s.drill_tokens.accepts(t.as_bytes()));
    if presented.is_some() && !drill {
        outcomes.add(DRILL_REFUSED);
    }
    let method = req.headers.get(":method").unwrap_or("");
    let now = req.env.now_ms();
    for f in &s.faults {
        if !applies(f, req.path, method) || (f.scope == Scope::Drill && !drill) {
            continue;
        }
        if !f.source_cidrs.is_empty()
            && !req
                .source
                .get()
                .is_some_and(|ip| f.source_cidrs.iter().any(|c| c.contains(ip)))
        {
            continue;
        }
        if f.start_ms.is_some_and(|t| now < t) || f.end_ms.is_some_and(|t| now >= t) {
            outcomes.add(OUTSIDE_WINDOW);
            continue;
        }
        if roll(1_000_000) >= f.per_million {
            continue;
        }
        let label = drill.then(|| f.label.clone());
        match &f.action {
            Action::Abort {
                status,
                grpc_status,
                body,
            } => {
                outcomes.add(ABORTED);
                let mut headers = vec![("content-type", "text/plain".to_string())];
                if let Some(l) = label {
                    headers.push((INJECTED_HEADER, l));
                }
                return Decision {
                    reply: Some(LocalReply {
                        status: *status,
                        headers,
                        body: Cow::Borrowed(body.as_bytes()),
                        grpc_status: *grpc_status,
                        ..LocalReply::default()
                    }),
                    outcomes,
                    ..Decision::default()
                };
            }
            Action::Delay { min_ms, max_ms } => {
                let key = counter_key(req.tenant);
                if !adjust(req.env, &key, 1, s.max_delayed) {
                    outcomes.add(SKIPPED_BOUND);
                    return Decision {
                        outcomes,
                        ..Decision::default()
                    };
                }
                let ms = min_ms + roll(max_ms - min_ms + 1);
                outcomes.add(DELAYED);
                stream.slot_key = Some(key);
                stream.label = label;
                return Decision {
                    outcomes,
                    park: Some(Park {
                        tag: DELAY_TAG,
                        deadline_ms: now.saturating_add(ms),
                    }),
                    ..Decision::default()
                };
            }
        }
    }
    Decision {
        outcomes,
        ..Decision::default()
    }
}

/// The stream ended, however it ended (the client gone during the delay
/// too): its delay slot is given back.
pub fn on_complete(s: &FaultSettings, stream: &mut Injected, env: &dyn HostEnv) {
    if let Some(key) = stream.slot_key.take() {
        adjust(env, &key, -1, s.max_delayed);
    }
}

pub fn on_response<'s>(stream: &mut Injected) -> HeaderEdits<'s> {
    let mut edits = HeaderEdits::default();
    if let Some(label) = stream.label.take() {
        edits.set(INJECTED_HEADER, label);
    }
    edits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parse_json;
    use meshware_common::store::MemoryStore;
    use serde_json::json;

    const TOKEN: &str = "drill-token-0123456789";

    fn settings(v: serde_json::Value) -> FaultSettings {
        let (mut s, e) = parse_json(v);
        assert_eq!(e, "");
        s.drill_tokens = meshware_common::live::StatusTokens(vec![TOKEN.into()]);
        s
    }

    fn run(
        s: &FaultSettings,
        st: &MemoryStore,
        pairs: &[(&str, &str)],
        roll: u64,
    ) -> (Decision<'static>, Injected)
    where
        FaultSettings: 'static,
    {
        let s: &'static FaultSettings = Box::leak(Box::new(s.clone()));
        let headers = Headers::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let path = RequestPath::read_all(headers.get(":path").unwrap_or("/")).unwrap();
        let mut source = SourceAddress::known("10.0.0.7".parse().ok());
        let mut injected = Injected::default();
        let d = on_request(
            s,
            Request {
                tenant: "acme",
                headers: &headers,
                path: &path,
                source: &mut source,
                env: st,
            },
            &mut |_| roll,
            &mut injected,
        );
        (d, injected)
    }

    #[test]
    fn drill_faults_need_the_drill_token() {
        let s = settings(json!({"drill_tokens": [], "faults": [
            {"name": "down", "percent": 100, "abort": {"status": 503, "grpc_status": "UNAVAILABLE"}}
        ]}));
        let st = MemoryStore::default();
        let (d, _) = run(&s, &st, &[(":path", "/")], 0);
        assert!(d.reply.is_none() && d.outcomes == Outcomes::default());
        let (d, _) = run(
            &s,
            &st,
            &[
                (":path", "/"),
                (FAULT_DRILL_HEADER, "wrong-token-0123456789"),
            ],
            0,
        );
        assert!(d.reply.is_none());
        assert!(d.outcomes.contains(DRILL_REFUSED));
        let (d, _) = run(&s, &st, &[(":path", "/"), (FAULT_DRILL_HEADER, TOKEN)], 0);
        let reply = d.reply.unwrap();
        assert_eq!((reply.status, reply.grpc_status), (503, Some(14)));
        assert!(reply
            .headers
            .contains(&(INJECTED_HEADER, "down; abort=503".into())));
    }

    #[test]
    fn delays_are_bounded_per_tenant_and_given_back() {
        let s = settings(json!({"drill_tokens": [], "max_delayed": 2, "faults": [
            {"name": "slow", "scope": "all", "percent": 100, "prefix": "/pay", "methods": ["POST"],
             "delay": {"min_ms": 100, "max_ms": 300}}
        ]}));
        let st = MemoryStore::default();
        *st.now.borrow_mut() = 1_000;
        let req = [(":path", "/pay/x"), (":method", "POST")];
        let (d1, mut i1) = run(&s, &st, &req, 50);
        assert_eq!(
            d1.park,
            Some(Park {
                tag: DELAY_TAG,
                deadline_ms: 1_150
            })
        );
        assert_eq!(i1.label, None, "no drill header: no answer header");
        let (d2, _) = run(&s, &st, &req, 0);
        assert!(d2.outcomes.contains(DELAYED));
        let (d3, _) = run(&s, &st, &req, 0);
        assert!(d3.park.is_none() && d3.outcomes.contains(SKIPPED_BOUND));
        on_complete(&s, &mut i1, &st);
        assert!(i1.slot_key.is_none(), "given back once");
        let (d4, _) = run(&s, &st, &req, 0);
        assert!(d4.outcomes.contains(DELAYED));
        // Other routes and methods are untouched.
        let (d5, _) = run(&s, &st, &[(":path", "/pay/x"), (":method", "GET")], 0);
        assert!(d5.park.is_none() && d5.outcomes == Outcomes::default());
    }

    #[test]
    fn percent_windows_sources_and_the_kill_switch() {
        let s = settings(json!({"drill_tokens": [], "faults": [
            {"name": "a", "scope": "all", "percent": 25, "abort": {"status": 500},
             "source_cidrs": ["10.0.0.0/24"],
             "start": "1970-01-01T00:00:01Z", "end": "1970-01-01T00:00:02Z"}
        ]}));
        let st = MemoryStore::default();
        *st.now.borrow_mut() = 1_500;
        assert!(run(&s, &st, &[], 249_999).0.reply.is_some());
        assert!(
            run(&s, &st, &[], 250_000).0.reply.is_none(),
            "25% of a million"
        );
        *st.now.borrow_mut() = 2_000;
        assert!(run(&s, &st, &[], 0).0.outcomes.contains(OUTSIDE_WINDOW));
        let mut other = s.clone();
        other.faults[0].source_cidrs =
            vec![meshware_common::net::Cidr::parse("192.168.0.0/16").unwrap()];
        *st.now.borrow_mut() = 1_500;
        assert!(
            run(&other, &st, &[], 0).0.reply.is_none(),
            "another source range"
        );
        let mut killed = s.clone();
        killed.enabled = false;
        let (d, _) = run(&killed, &st, &[], 0);
        assert!(d.reply.is_none() && d.outcomes.contains(KILLED));
    }
}
