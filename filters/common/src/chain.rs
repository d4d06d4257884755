//! The suite module: every concern in one VM per worker. One root holds the
//! root of each concern the profile configures (`RootStage`); one HTTP
//! context runs their streams (`Stage`) in the documented order, as separate
//! Envoy filters would run, and stops where one of them holds or answers the
//! request. When a held concern lets the request go (a callout answered, a
//! body complete, a parked wait woken from another context), the concerns
//! after it run before the request reaches the upstream.

use crate::errors::ConfigErrors;
use crate::host::{
    follow_log_level, plugin_configuration, shared_headers, EnvoyEnv, RootStage, Stage,
};
use crate::hostcall as hostcalls;
use crate::sequence::{Flow, Sequence, Step};
use crate::store::HostEnv;
use hashbrown::HashMap;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::RefCell;
use std::rc::{Rc, Weak};

/// One concern the suite can run: its section name and how to make its root.
#[derive(Clone, Copy)]
pub struct Concern {
    pub name: &'static str,
    make: fn(u32) -> Box<dyn RootStage>,
}

fn make_root<F: crate::HttpFilter>(context_id: u32) -> Box<dyn RootStage> {
    Box::new(crate::host::Root::<F>::new(context_id))
}

/// The concern of filter `F` (its crate used as a library).
pub const fn concern<F: crate::HttpFilter>() -> Concern {
    Concern {
        name: F::NAME,
        make: make_root::<F>,
    }
}

thread_local! {
    /// Suite streams whose request phase stopped, by context id: a concern
    /// deciding such a request from another context (a parked request woken
    /// by another request's callout) resumes it through `resume`, so the
    /// concerns after it still run. A VM is single-threaded.
    static STOPPED: RefCell<HashMap<u32, Weak<RefCell<Chain>>>> = RefCell::new(HashMap::new());
}

fn register(context_id: u32, chain: &Rc<RefCell<Chain>>) {
    STOPPED.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            s.insert(context_id, Rc::downgrade(chain));
        }
    });
}

fn unregister(context_id: u32) -> Option<Weak<RefCell<Chain>>> {
    STOPPED.with(|s| {
        s.try_borrow_mut()
            .ok()
            .and_then(|mut s| s.remove(&context_id))
    })
}

/// Lets the request of `context_id` (the effective context) go on: in the
/// suite, through the concerns after the one that held it; in a module of
/// one filter, straight to Envoy's next filter.
pub fn resume(context_id: u32) {
    let Some(chain) = unregister(context_id).and_then(|w| w.upgrade()) else {
        let _ = hostcalls::resume_http_request();
        return;
    };
    let Ok(mut c) = chain.try_borrow_mut() else {
        // Never skip the concerns after the held one (identity before
        // authorization): refuse rather than let the request through.
        crate::host::send_unavailable("suite");
        return;
    };
    let Some(stopped) = c.stopped_at() else {
        return;
    };
    let flow = c.resume_after(stopped, true);
    drop(c);
    match flow {
        Some(Flow::Continue) => {
            let _ = hostcalls::resume_http_request();
        }
        _ => register(context_id, &chain),
    }
}

/// One request's streams of every enabled concern.
type Chain = Sequence<Box<dyn Stage>>;

fn flow(action: Action) -> Flow {
    if action == Action::Continue {
        Flow::Continue
    } else {
        Flow::Stop
    }
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Stop => Action::Pause,
    }
}

impl Step for Box<dyn Stage> {
    fn request_headers(&mut self, end_of_stream: bool) -> Flow {
        flow(Stage::request_headers(self.as_mut(), end_of_stream))
    }
    fn request_body(&mut self, body_size: usize, end_of_stream: bool) -> Flow {
        flow(Stage::request_body(self.as_mut(), body_size, end_of_stream))
    }
    fn request_trailers(&mut self) -> Flow {
        flow(Stage::request_trailers(self.as_mut()))
    }
    fn waiting_for_body(&self) -> bool {
        Stage::waiting_for_body(self.as_ref())
    }
    fn release(&mut self) {
        Stage::release(self.as_mut());
    }
}

/// The suite's HTTP context.
pub struct SuiteStream {
    context_id: u32,
    chain: Rc<RefCell<Chain>>,
}

impl SuiteStream {
    /// Registers a stopped request phase, so another context can resume it.
    fn request_action(&self, flow: Flow) -> Action {
        if flow == Flow::Continue {
            unregister(self.context_id);
        } else {
            register(self.context_id, &self.chain);
        }
        action(flow)
    }
}

impl Drop for SuiteStream {
    fn drop(&mut self) {
        unregister(self.context_id);
    }
}

impl Context for SuiteStream {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        self.answered(|stage| stage.call_response(token_id, num_headers, body_size));
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        self.answered(|stage| stage.grpc_response(token_id, status_code, response_size));
    }
}

impl SuiteStream {
    /// A callout's answer, offered to each stage until the one that made
    /// the call takes it; the request goes on when that stage lets it.
    fn answered(&mut self, mut take: impl FnMut(&mut Box<dyn Stage>) -> Option<bool>) {
        let Ok(mut c) = self.chain.try_borrow_mut() else {
            return;
        };
        let mut answered = None;
        for (i, stage) in c.steps.iter_mut().enumerate() {
            if let Some(go) = take(stage) {
                answered = Some((i, go));
                break;
            }
        }
        let Some((i, true)) = answered else {
            return;
        };
        let Some(flow) = c.resume_after(i, false) else {
            return;
        };
        drop(c);
        if self.request_action(flow) == Action::Continue {
            let _ = hostcalls::resume_http_request();
        }
    }
}

impl HttpContext for SuiteStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        hostcalls::timed("suite", "request_headers", || {
            let flow = match self.chain.try_borrow_mut() {
                Ok(mut c) => c.request_headers(end_of_stream),
                Err(_) => return Action::Continue,
            };
            self.request_action(flow)
        })
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let flow = match self.chain.try_borrow_mut() {
            Ok(mut c) => c.request_body(body_size, end_of_stream),
            Err(_) => return Action::Pause,
        };
        self.request_action(flow)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let flow = match self.chain.try_borrow_mut() {
            Ok(mut c) => c.request_trailers(),
            Err(_) => return Action::Pause,
        };
        self.request_action(flow)
    }

    // The response runs through the concerns in reverse, as Envoy runs
    // encoder filters; a concern that did not act on the request skips it.
    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        hostcalls::timed("suite", "response_headers", || {
            if let Ok(mut c) = self.chain.try_borrow_mut() {
                shared_headers::share_response(Some(self.context_id));
                for stage in c.steps.iter_mut().rev() {
                    stage.response_headers(end_of_stream);
                }
                shared_headers::share_response(None);
            }
        });
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Ok(mut c) = self.chain.try_borrow_mut() {
            for stage in c.steps.iter_mut().rev() {
                stage.response_body(body_size, end_of_stream);
            }
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if let Ok(mut c) = self.chain.try_borrow_mut() {
            for stage in c.steps.iter_mut().rev() {
                stage.response_trailers();
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        hostcalls::timed("suite", "log", || {
            if let Ok(mut c) = self.chain.try_borrow_mut() {
                shared_headers::phase(true);
                let sampled = c
                    .steps
                    .iter()
                    .any(|s| s.records(crate::decision::SAMPLED_FIELD, crate::decision::SAMPLED));
                let grpc = c.steps.iter().find_map(|s| s.grpc()).unwrap_or(false);
                shared_headers::set_line_logged(sampled, grpc);
                for stage in c.steps.iter_mut() {
                    stage.log();
                }
                shared_headers::phase(false);
            }
        });
        hostcalls::flush();
    }
}

/// A concern's stream; in the counting build, wrapped to time each phase.
fn stage(root: &dyn RootStage, context_id: u32) -> Box<dyn Stage> {
    let inner = root.stage(context_id);
    #[cfg(feature = "count-hostcalls")]
    let inner: Box<dyn Stage> = Box::new(timing::Timed {
        concern: root.name(),
        inner,
    });
    inner
}

#[cfg(feature = "count-hostcalls")]
mod timing {
    use crate::host::Stage;
    use crate::hostcall::timed;
    use proxy_wasm::types::Action;

    /// A concern's stream whose phases add their wall time to
    /// `meshware_stage_ns.<concern>.<phase>` (host calls included).
    pub struct Timed {
        pub concern: &'static str,
        pub inner: Box<dyn Stage>,
    }

    impl Stage for Timed {
        fn request_headers(&mut self, end_of_stream: bool) -> Action {
            timed(self.concern, "request_headers", || {
                self.inner.request_headers(end_of_stream)
            })
        }
        fn request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
            timed(self.concern, "request_body", || {
                self.inner.request_body(body_size, end_of_stream)
            })
        }
        fn request_trailers(&mut self) -> Action {
            self.inner.request_trailers()
        }
        fn response_headers(&mut self, end_of_stream: bool) -> Action {
            timed(self.concern, "response_headers", || {
                self.inner.response_headers(end_of_stream)
            })
        }
        fn response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
            timed(self.concern, "response_body", || {
                self.inner.response_body(body_size, end_of_stream)
            })
        }
        fn response_trailers(&mut self) -> Action {
            self.inner.response_trailers()
        }
        fn grpc(&self) -> Option<bool> {
            self.inner.grpc()
        }
        fn log(&mut self) {
            timed(self.concern, "log", || self.inner.log());
        }
        fn call_response(
            &mut self,
            token: u32,
            num_headers: usize,
            body_size: usize,
        ) -> Option<bool> {
            self.inner.call_response(token, num_headers, body_size)
        }
        fn grpc_response(&mut self, token: u32, status_code: u32, size: usize) -> Option<bool> {
            self.inner.grpc_response(token, status_code, size)
        }
        fn waiting_for_body(&self) -> bool {
            self.inner.waiting_for_body()
        }
        fn records(&self, field: &str, value: &str) -> bool {
            self.inner.records(field, value)
        }
        fn release(&mut self) {
            self.inner.release();
        }
    }
}

/// The suite's root: configures every concern the profile has a section for
/// (the others are skipped here, at no per-request cost), ticks each at its
/// own period and makes each request's chain.
pub struct SuiteRoot {
    context_id: u32,
    concerns: &'static [Concern],
    stages: Vec<Box<dyn RootStage>>,
    /// Per stage: period and the next due time of its tick, in ms.
    ticks: Vec<(u64, u64)>,
    /// The live configuration source (`config_source`): one for every concern.
    live: Option<crate::live_host::LiveHost>,
}

impl SuiteRoot {
    pub fn new(context_id: u32, concerns: &'static [Concern]) -> Self {
        SuiteRoot {
            context_id,
            concerns,
            stages: Vec::new(),
            ticks: Vec::new(),
            live: None,
        }
    }

    /// The concerns a profile runs (those with a section; invalid JSON:
    /// every concern, to report it).
    fn concerns_for(&self, config: &[u8]) -> Vec<&'static Concern> {
        let present = crate::profile::sections_present(config);
        self.concerns
            .iter()
            .filter(|c| {
                present
                    .as_ref()
                    .is_none_or(|p| p.iter().any(|s| s == c.name))
            })
            .collect()
    }

    /// Checks a profile with every concern's compile code (and the shared
    /// parts once when there is none), changing nothing.
    fn validate(&self, config: &str) -> Result<(), ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let mut concerns = self.concerns_for(config.as_bytes());
        if concerns.is_empty() {
            concerns.extend(self.concerns.first());
        }
        for concern in concerns {
            if let Err(e) = (concern.make)(self.context_id).validate(config) {
                errors.merge(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.finish())
        }
    }

    /// Swaps in a new (validated) profile between requests: in place when
    /// it runs the same concerns (their held requests and background calls
    /// carry on), else the stages are rebuilt (held requests answered first).
    fn reconfigure(&mut self, config: &str) {
        let names: Vec<&str> = self.stages.iter().map(|s| s.name()).collect();
        let wanted: Vec<&str> = self
            .concerns_for(config.as_bytes())
            .iter()
            .map(|c| c.name)
            .collect();
        if names == wanted {
            for stage in &mut self.stages {
                stage.reconfigure(config);
            }
            return;
        }
        for stage in &mut self.stages {
            stage.release();
        }
        match self.configure(config.as_bytes()) {
            Ok(enabled) => {
                log::info!(
                    "[suite] concerns now: {}",
                    crate::errors::joined(&enabled, ", ")
                );
                self.set_ticks();
            }
            Err(errors) => log::error!("[suite] live profile refused:\n{errors}"),
        }
    }

    /// Each stage's tick period and the VM's (the shortest any concern or
    /// the live source asks for, and the metric flush's).
    fn set_ticks(&mut self) {
        let now = EnvoyEnv.now_ms();
        self.ticks = self
            .stages
            .iter()
            .map(|s| (u64::from(s.tick_period_ms()), now))
            .collect();
        let shortest = self.ticks.iter().map(|t| t.0).filter(|p| *p > 0).min();
        let mut period = crate::host::vm_tick_period_ms(shortest.unwrap_or(0));
        if let Some(live) = &self.live {
            period = period.min(live.poll_ms());
        }
        hostcalls::set_tick_period(std::time::Duration::from_millis(period)).ok();
    }

    fn configure(&mut self, config: &[u8]) -> Result<Vec<&'static str>, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let mut stages = Vec::new();
        let mut enabled = Vec::new();
        for concern in self.concerns_for(config) {
            let mut root = (concern.make)(self.context_id);
            match root.configure(config) {
                Ok(()) => {
                    enabled.push(concern.name);
                    stages.push(root);
                }
                Err(e) => errors.merge(e),
            }
        }
        if enabled.is_empty() && errors.is_empty() {
            // No concern configured: the first one still runs, inactive, for
            // what every meshware filter does (path checks, owned headers);
            // its configure validates the shared parts.
            if let Some(concern) = self.concerns.first() {
                let mut root = (concern.make)(self.context_id);
                match root.configure(config) {
                    Ok(()) => stages.push(root),
                    Err(e) => errors.merge(e),
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors.finish());
        }
        self.stages = stages;
        Ok(enabled)
    }
}

impl Context for SuiteRoot {
    fn on_done(&mut self) -> bool {
        crate::host::flush_metrics();
        true
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(mut live) = self.live.take() {
            if live.owns(token_id) {
                let response = crate::host::callout_response(num_headers, body_size);
                let accepted = live.answer(response.as_ref(), &|c| self.validate(c));
                self.live = Some(live);
                if let Some(profile) = accepted {
                    self.reconfigure(&profile);
                }
                return;
            }
            self.live = Some(live);
        }
        for stage in &mut self.stages {
            stage.call_response(token_id, num_headers, body_size);
        }
    }

    /// A message of the live configuration's etcd watch.
    fn on_grpc_stream_message(&mut self, token_id: u32, message_size: usize) {
        crate::live_host::watch_message(self.live.as_mut(), token_id, message_size);
    }

    fn on_grpc_stream_close(&mut self, token_id: u32, status_code: u32) {
        crate::live_host::watch_closed(self.live.as_mut(), token_id, status_code);
    }
}

impl RootContext for SuiteRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        follow_log_level();
        let config = plugin_configuration();
        match self.configure(&config) {
            Ok(enabled) => {
                log::info!(
                    "[suite] concerns: {}",
                    crate::errors::joined(&enabled, ", ")
                );
                self.live = self
                    .stages
                    .first()
                    .and_then(|s| s.source_settings())
                    .map(|s| crate::live_host::LiveHost::new("suite", s, crate::host::seed()));
                // A reloaded VM starts on the latest accepted revision.
                if let Some(profile) = self.live.as_mut().and_then(|l| l.adopt()) {
                    self.reconfigure(&profile);
                }
                self.set_ticks();
                true
            }
            Err(errors) => {
                log::error!(
                    "[suite] invalid profile ({} problems):\n{errors}",
                    errors.len()
                );
                false
            }
        }
    }

    fn on_tick(&mut self) {
        crate::host::flush_metrics();
        if let Some(live) = self.live.as_mut() {
            let adopted = live.adopt();
            live.tick();
            if let Some(profile) = adopted {
                self.reconfigure(&profile);
            }
        }
        let now = EnvoyEnv.now_ms();
        for (stage, (period, due)) in self.stages.iter_mut().zip(self.ticks.iter_mut()) {
            if crate::host::tick_due(now, due, *period) {
                stage.tick();
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        hostcalls::timed("suite", "create", || {
            let stages = self
                .stages
                .iter()
                .map(|s| stage(s.as_ref(), context_id))
                .collect();
            Some(Box::new(SuiteStream {
                context_id,
                chain: Rc::new(RefCell::new(Sequence::new(
                    stages,
                    context_id,
                    shared_headers::share,
                ))),
            }) as _)
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
