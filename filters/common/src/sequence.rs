//! The request-phase sequencing of the suite module, pure (the `chain`
//! adapter drives it with the concerns' streams): run the steps in order,
//! stop at the first that holds or answers, and when the held one lets the
//! request go, run the rest with what arrived meanwhile (body, trailers).

/// What a step did with one request callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Held (callout, parked wait, wait for the body) or answered.
    Stop,
}

/// One concern's request phase.
pub trait Step {
    fn request_headers(&mut self, end_of_stream: bool) -> Flow;
    /// `body_size`: the new chunk, or all of the body so far for the step
    /// the sequence stopped at (it holds the request, so Envoy buffers).
    fn request_body(&mut self, body_size: usize, end_of_stream: bool) -> Flow;
    fn request_trailers(&mut self) -> Flow;
    /// Whether the step holds the request until its body is complete.
    fn waiting_for_body(&self) -> bool;
    /// The step's hold ended elsewhere (decided from another context).
    fn release(&mut self);
}

pub struct Sequence<S> {
    pub steps: Vec<S>,
    /// Passed to `on_run`: which request this is (Envoy's context id).
    pub id: u32,
    /// Called with `Some(id)` before steps run their request headers and
    /// with `None` after (the adapter shares one header read meanwhile).
    pub on_run: fn(Option<u32>),
    /// The step the request phase stopped at; later steps have not seen it.
    stopped_at: Option<usize>,
    headers_end: bool,
    body_total: usize,
    body_end: bool,
    trailers: bool,
    /// The body size reported with the last callback we stopped: while the
    /// request is held, Envoy reports its whole buffer, not the new chunk.
    buffered: usize,
}

impl<S: Step> Sequence<S> {
    pub fn new(steps: Vec<S>, id: u32, on_run: fn(Option<u32>)) -> Self {
        Sequence {
            steps,
            id,
            on_run,
            stopped_at: None,
            headers_end: false,
            body_total: 0,
            body_end: false,
            trailers: false,
            buffered: 0,
        }
    }

    pub fn stopped_at(&self) -> Option<usize> {
        self.stopped_at
    }

    pub fn request_headers(&mut self, end_of_stream: bool) -> Flow {
        self.headers_end = end_of_stream;
        self.run_from(0)
    }

    /// Step `index` let its held request go (its callout answered, or it was
    /// decided from another context: `released`). Runs the steps after it;
    /// `None` when the sequence was not stopped there.
    pub fn resume_after(&mut self, index: usize, released: bool) -> Option<Flow> {
        if self.stopped_at != Some(index) {
            return None;
        }
        self.stopped_at = None;
        if released {
            if let Some(step) = self.steps.get_mut(index) {
                step.release();
            }
        }
        let flow = self.run_from(index + 1);
        if flow == Flow::Continue {
            self.buffered = 0; // Envoy passes the buffer on; new chunks come as chunks
        }
        Some(flow)
    }

    /// Request headers, then what already arrived, through the steps from `from`.
    fn run_from(&mut self, from: usize) -> Flow {
        if from >= self.steps.len() {
            return Flow::Continue;
        }
        (self.on_run)(Some(self.id));
        let mut flow = Flow::Continue;
        for i in from..self.steps.len() {
            let Some(step) = self.steps.get_mut(i) else {
                break;
            };
            let mut f = step.request_headers(self.headers_end);
            let body_here = self.body_total > 0 || self.body_end;
            if body_here && (f == Flow::Continue || step.waiting_for_body()) {
                f = step.request_body(self.body_total, self.body_end);
            }
            if f == Flow::Continue && self.trailers {
                f = step.request_trailers();
            }
            if f == Flow::Stop {
                self.stopped_at = Some(i);
                flow = Flow::Stop;
                break;
            }
        }
        (self.on_run)(None);
        flow
    }

    pub fn request_body(&mut self, body_size: usize, end_of_stream: bool) -> Flow {
        let chunk = body_size.saturating_sub(self.buffered);
        self.body_total = self.body_total.saturating_add(chunk);
        self.body_end = end_of_stream;
        let flow = match self.stopped_at {
            None => self.each_until(None, |s| s.request_body(chunk, end_of_stream)),
            Some(last) => {
                let before = self.each_until(Some(last), |s| s.request_body(chunk, end_of_stream));
                if before == Flow::Stop {
                    Flow::Stop
                } else {
                    self.last_then_rest(last, |s| s.request_body(body_size, end_of_stream))
                }
            }
        };
        self.buffered = if flow == Flow::Continue { 0 } else { body_size };
        flow
    }

    pub fn request_trailers(&mut self) -> Flow {
        self.trailers = true;
        match self.stopped_at {
            None => self.each_until(None, |s| s.request_trailers()),
            Some(last) => {
                if self.each_until(Some(last), |s| s.request_trailers()) == Flow::Stop {
                    Flow::Stop
                } else {
                    self.last_then_rest(last, |s| s.request_trailers())
                }
            }
        }
    }

    /// Runs `call` on every step before `end` (all when `None`); stops at
    /// the first that stops.
    fn each_until(&mut self, end: Option<usize>, mut call: impl FnMut(&mut S) -> Flow) -> Flow {
        let end = end.unwrap_or(self.steps.len());
        for i in 0..end {
            let Some(step) = self.steps.get_mut(i) else {
                break;
            };
            if call(step) == Flow::Stop {
                self.stopped_at = Some(i);
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Runs `call` on the stopped step; if it lets the request go, the
    /// steps after it run now.
    fn last_then_rest(&mut self, last: usize, call: impl FnOnce(&mut S) -> Flow) -> Flow {
        let Some(step) = self.steps.get_mut(last) else {
            return Flow::Continue;
        };
        if call(step) == Flow::Stop {
            return Flow::Stop;
        }
        self.stopped_at = None;
        self.run_from(last + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// A scripted step: what it answers, and a log of what it was given.
    #[derive(Default)]
    struct Fake {
        hold_headers: bool,
        wait_body: bool,
        waiting: bool,
        held: bool,
        seen: Vec<String>,
    }

    impl Step for Fake {
        fn request_headers(&mut self, end: bool) -> Flow {
            self.seen.push(format!("headers end={end}"));
            if self.hold_headers {
                self.held = true;
                return Flow::Stop;
            }
            if self.wait_body && !end {
                self.waiting = true;
                return Flow::Stop;
            }
            Flow::Continue
        }
        fn request_body(&mut self, size: usize, end: bool) -> Flow {
            self.seen.push(format!("body {size} end={end}"));
            if self.held {
                return Flow::Stop;
            }
            if self.waiting {
                if !end {
                    return Flow::Stop;
                }
                self.waiting = false;
            }
            Flow::Continue
        }
        fn request_trailers(&mut self) -> Flow {
            self.seen.push("trailers".into());
            if self.held {
                return Flow::Stop;
            }
            self.waiting = false; // the body ended with the trailers
            Flow::Continue
        }
        fn waiting_for_body(&self) -> bool {
            self.waiting
        }
        fn release(&mut self) {
            self.held = false;
        }
    }

    fn seq(steps: Vec<Fake>) -> Sequence<Fake> {
        Sequence::new(steps, 7, |_| ())
    }

    fn seen(s: &Sequence<Fake>, i: usize) -> Vec<String> {
        s.steps[i].seen.clone()
    }

    #[test]
    fn every_step_runs_in_order_when_none_stops() {
        let mut s = seq(vec![Fake::default(), Fake::default()]);
        assert_eq!(s.request_headers(false), Flow::Continue);
        assert_eq!(s.request_body(5, false), Flow::Continue);
        assert_eq!(s.request_body(3, true), Flow::Continue);
        for i in 0..2 {
            assert_eq!(
                seen(&s, i),
                ["headers end=false", "body 5 end=false", "body 3 end=true"]
            );
        }
    }

    #[test]
    fn a_held_step_stops_the_rest_until_released_then_they_get_the_whole_body() {
        let hold = Fake {
            hold_headers: true,
            ..Fake::default()
        };
        let mut s = seq(vec![Fake::default(), hold, Fake::default()]);
        assert_eq!(s.request_headers(false), Flow::Stop);
        assert_eq!(s.stopped_at(), Some(1));
        // Envoy buffers while we stop: sizes are the whole buffer.
        assert_eq!(s.request_body(4, false), Flow::Stop);
        assert_eq!(s.request_body(10, true), Flow::Stop);
        assert!(
            seen(&s, 2).is_empty(),
            "the last step has not seen the request"
        );
        assert_eq!(seen(&s, 0)[1..], ["body 4 end=false", "body 6 end=true"]);
        assert_eq!(seen(&s, 1)[1..], ["body 4 end=false", "body 10 end=true"]);
        // Resumed at the wrong step: nothing happens.
        assert_eq!(s.resume_after(0, true), None);
        assert_eq!(s.resume_after(1, true), Some(Flow::Continue));
        assert!(!s.steps[1].held, "released");
        assert_eq!(seen(&s, 2), ["headers end=false", "body 10 end=true"]);
    }

    #[test]
    fn a_step_waiting_for_the_body_gets_it_when_it_arrived_during_an_earlier_hold() {
        let hold = Fake {
            hold_headers: true,
            ..Fake::default()
        };
        let wait = Fake {
            wait_body: true,
            ..Fake::default()
        };
        let mut s = seq(vec![hold, wait, Fake::default()]);
        assert_eq!(s.request_headers(false), Flow::Stop);
        assert_eq!(s.request_body(8, true), Flow::Stop);
        assert_eq!(s.resume_after(0, false), Some(Flow::Continue));
        assert_eq!(seen(&s, 1), ["headers end=false", "body 8 end=true"]);
        assert_eq!(seen(&s, 2), ["headers end=false", "body 8 end=true"]);
    }

    #[test]
    fn a_step_waiting_for_the_rest_of_the_body_continues_the_sequence_when_it_ends() {
        let wait = Fake {
            wait_body: true,
            ..Fake::default()
        };
        let mut s = seq(vec![Fake::default(), wait, Fake::default()]);
        assert_eq!(s.request_headers(false), Flow::Stop);
        assert_eq!(s.request_body(3, false), Flow::Stop);
        assert_eq!(s.request_body(9, true), Flow::Continue);
        assert_eq!(s.stopped_at(), None);
        assert_eq!(seen(&s, 0)[1..], ["body 3 end=false", "body 6 end=true"]);
        assert_eq!(seen(&s, 1)[1..], ["body 3 end=false", "body 9 end=true"]);
        assert_eq!(seen(&s, 2), ["headers end=false", "body 9 end=true"]);
        // After the buffer was passed on, chunks are chunks again.
        assert_eq!(s.buffered, 0);
    }

    #[test]
    fn trailers_end_a_wait_and_reach_the_later_steps() {
        let wait = Fake {
            wait_body: true,
            ..Fake::default()
        };
        let mut s = seq(vec![wait, Fake::default()]);
        assert_eq!(s.request_headers(false), Flow::Stop);
        assert_eq!(s.request_body(2, false), Flow::Stop);
        assert_eq!(s.request_trailers(), Flow::Continue);
        assert_eq!(s.stopped_at(), None);
        assert_eq!(
            seen(&s, 1),
            ["headers end=false", "body 2 end=false", "trailers"]
        );
    }

    #[test]
    fn on_run_brackets_every_run_of_request_headers() {
        thread_local! {
            static CALLS: std::cell::RefCell<Vec<Option<u32>>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        fn record(id: Option<u32>) {
            CALLS.with(|c| c.borrow_mut().push(id));
        }
        let hold = Fake {
            hold_headers: true,
            ..Fake::default()
        };
        let mut s = Sequence::new(vec![hold, Fake::default()], 9, record);
        s.request_headers(true);
        s.resume_after(0, true);
        // Nothing left to run: no bracket.
        s.resume_after(1, true);
        CALLS.with(|c| assert_eq!(*c.borrow(), [Some(9), None, Some(9), None]));
    }
}
