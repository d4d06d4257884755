//! A real rate limit service for the global-limit tests: Kuadrant's
//! limitador engine doing the counting, served over Envoy's rate limit
//! service gRPC API (`envoy.service.ratelimit.v3.RateLimitService/
//! ShouldRateLimit`) with tonic, the messages declared with prost (an
//! implementation independent of the filter's hand-written codec).
//!
//! Each descriptor of a request is checked on its own, as envoyproxy/
//! ratelimit and Limitador do: its entries are CEL's `descriptors[0]`
//! (`descriptors[0].tenant == 'acme'`), the request's `domain` is the
//! limits' namespace, `hits_addend` (0: 1) the amount.
//!
//! Storage: limitador's Redis storage (`AsyncRedisStorage`, the one
//! Limitador runs with `redis`), against a real Redis the service starts
//! (`crate::redis`), or one shared by several services: two proxies, each
//! with its own service, counting in one Redis, as Limitador replicas do.
//! limitador compiles its Redis storage only together with its RocksDB disk
//! storage; the e2e crate links Debian's RocksDB for that
//! (`.cargo/config.toml`), and no test uses the disk storage.

use crate::redis::Redis;
use limitador::limit::{Context, Expression, Limit, Predicate};
use limitador::storage::redis::AsyncRedisStorage;
use limitador::AsyncRateLimiter;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};

/// The protocol's messages (the fields the service reads and writes).
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RateLimitRequest {
        #[prost(string, tag = "1")]
        pub domain: String,
        #[prost(message, repeated, tag = "2")]
        pub descriptors: Vec<RateLimitDescriptor>,
        #[prost(uint32, tag = "3")]
        pub hits_addend: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RateLimitDescriptor {
        #[prost(message, repeated, tag = "1")]
        pub entries: Vec<Entry>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RateLimitResponse {
        /// `Code`: 0 UNKNOWN, 1 OK, 2 OVER_LIMIT.
        #[prost(int32, tag = "1")]
        pub overall_code: i32,
        #[prost(message, repeated, tag = "2")]
        pub statuses: Vec<DescriptorStatus>,
        #[prost(message, repeated, tag = "3")]
        pub response_headers_to_add: Vec<HeaderValue>,
        #[prost(message, repeated, tag = "4")]
        pub request_headers_to_add: Vec<HeaderValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DescriptorStatus {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(message, optional, tag = "2")]
        pub current_limit: Option<RateLimit>,
        #[prost(uint32, tag = "3")]
        pub limit_remaining: u32,
        #[prost(message, optional, tag = "4")]
        pub duration_until_reset: Option<Duration>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RateLimit {
        #[prost(uint32, tag = "1")]
        pub requests_per_unit: u32,
        /// `Unit`: 1 SECOND, 2 MINUTE, 3 HOUR, 4 DAY.
        #[prost(int32, tag = "2")]
        pub unit: i32,
        #[prost(string, tag = "3")]
        pub name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Duration {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HeaderValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// What a broken service might send: field 2 (statuses) holding bytes
    /// that are no `DescriptorStatus`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Junk {
        #[prost(int32, tag = "1")]
        pub overall_code: i32,
        #[prost(bytes = "vec", tag = "2")]
        pub statuses: Vec<u8>,
    }
}

/// One limit: `max` hits per `seconds` in `domain`, for the descriptors
/// the CEL `conditions` select, one counter per value of `variables`.
#[derive(Debug, Clone)]
pub struct LimitSpec {
    pub name: &'static str,
    pub domain: &'static str,
    pub max: u64,
    pub seconds: u64,
    pub conditions: Vec<String>,
    pub variables: Vec<String>,
}

/// How the service behaves (tests switch it while it runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Answers after this long.
    Slow(Duration),
    /// Answers a message that is not a `RateLimitResponse`.
    Junk,
}

struct State {
    limiter: AsyncRateLimiter,
    mode: Mutex<Mode>,
    calls: Mutex<u64>,
}

pub const OK: i32 = 1;
pub const OVER_LIMIT: i32 = 2;

impl State {
    /// The service's answer; a storage failure (Redis gone) is `UNAVAILABLE`,
    /// as Limitador answers it.
    async fn decide(
        &self,
        request: &proto::RateLimitRequest,
    ) -> Result<proto::RateLimitResponse, tonic::Status> {
        let namespace = request.domain.as_str().into();
        let hits = u64::from(request.hits_addend.max(1));
        let mut response = proto::RateLimitResponse {
            overall_code: OK,
            ..Default::default()
        };
        for descriptor in &request.descriptors {
            let entries: HashMap<String, String> = descriptor
                .entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect();
            let mut ctx = Context::default();
            ctx.list_binding("descriptors".to_string(), vec![entries]);
            let status = match self
                .limiter
                .check_rate_limited_and_update(&namespace, &ctx, hits)
                .await
            {
                Ok(result) => {
                    let code = if result.limited { OVER_LIMIT } else { OK };
                    if result.limited {
                        response.overall_code = OVER_LIMIT;
                    }
                    // The tightest counter speaks for the descriptor.
                    let tightest = result
                        .counters
                        .iter()
                        .min_by_key(|c| c.remaining().unwrap_or(c.max_value()));
                    proto::DescriptorStatus {
                        code,
                        current_limit: tightest.map(|c| proto::RateLimit {
                            requests_per_unit: c.max_value() as u32,
                            unit: match c.window().as_secs() {
                                1 => 1,
                                60 => 2,
                                3600 => 3,
                                _ => 4,
                            },
                            name: c.limit().name().unwrap_or("").to_string(),
                        }),
                        limit_remaining: tightest.and_then(|c| c.remaining()).unwrap_or(0) as u32,
                        duration_until_reset: tightest.and_then(|c| c.expires_in()).map(|d| {
                            proto::Duration {
                                seconds: d.as_secs() as i64,
                                nanos: d.subsec_nanos() as i32,
                            }
                        }),
                    }
                }
                Err(e) => return Err(tonic::Status::unavailable(format!("storage: {e}"))),
            };
            response.statuses.push(status);
        }
        if response.overall_code == OVER_LIMIT {
            response.response_headers_to_add.push(proto::HeaderValue {
                key: "X-RateLimit-Service".into(),
                value: "limitador".into(),
            });
        } else {
            response.request_headers_to_add.push(proto::HeaderValue {
                key: "x-global-checked".into(),
                value: "1".into(),
            });
        }
        Ok(response)
    }
}

const PATH: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

#[derive(Clone)]
struct RlsService(Arc<State>);

impl tonic::server::NamedService for RlsService {
    const NAME: &'static str = "envoy.service.ratelimit.v3.RateLimitService";
}

struct Decide(Arc<State>);

impl tonic::server::UnaryService<proto::RateLimitRequest> for Decide {
    type Response = proto::RateLimitResponse;
    type Future = BoxFuture<tonic::Response<Self::Response>, tonic::Status>;
    fn call(&mut self, request: tonic::Request<proto::RateLimitRequest>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            if let Ok(mut calls) = state.calls.lock() {
                *calls += 1;
            }
            let mode = state.mode.lock().map(|m| *m).unwrap_or(Mode::Normal);
            if let Mode::Slow(delay) = mode {
                tokio::time::sleep(delay).await;
            }
            state
                .decide(request.get_ref())
                .await
                .map(tonic::Response::new)
        })
    }
}

struct DecideJunk;

impl tonic::server::UnaryService<proto::RateLimitRequest> for DecideJunk {
    type Response = proto::Junk;
    type Future = BoxFuture<tonic::Response<Self::Response>, tonic::Status>;
    fn call(&mut self, _request: tonic::Request<proto::RateLimitRequest>) -> Self::Future {
        Box::pin(async move {
            Ok(tonic::Response::new(proto::Junk {
                overall_code: OK,
                statuses: b"garbage, not a message".to_vec(),
            }))
        })
    }
}

impl<B> Service<http::Request<B>> for RlsService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::BoxBody>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let state = self.0.clone();
        if request.uri().path() != PATH {
            return Box::pin(async move {
                Ok(tonic::Status::unimplemented("no such method").into_http())
            });
        }
        let junk = state.mode.lock().map(|m| *m == Mode::Junk).unwrap_or(false);
        Box::pin(async move {
            let codec = tonic::codec::ProstCodec::default();
            let mut grpc = tonic::server::Grpc::new(codec);
            if junk {
                if let Ok(mut calls) = state.calls.lock() {
                    *calls += 1;
                }
                let codec = tonic::codec::ProstCodec::default();
                return Ok(tonic::server::Grpc::new(codec)
                    .unary(DecideJunk, request)
                    .await);
            }
            Ok(grpc.unary(Decide(state), request).await)
        })
    }
}

/// The running service: its port, its mode, its call count. Stopped when
/// dropped.
pub struct Rls {
    pub port: u16,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The Redis this service started for itself (none when shared).
    own_redis: Option<Redis>,
}

impl Rls {
    /// A service counting in a Redis of its own.
    pub fn start(limits: &[LimitSpec]) -> Rls {
        let redis = Redis::start();
        let mut rls = Rls::start_on(&redis, limits);
        rls.own_redis = Some(redis);
        rls
    }

    /// A service counting in `redis`, which other services may share.
    pub fn start_on(redis: &Redis, limits: &[LimitSpec]) -> Rls {
        let parsed: Vec<Limit> = limits
            .iter()
            .map(|l| {
                let conditions: Vec<Predicate> = l
                    .conditions
                    .iter()
                    .map(|c| Predicate::parse(c).expect("condition"))
                    .collect();
                let variables: Vec<Expression> = l
                    .variables
                    .iter()
                    .map(|v| Expression::parse(v).expect("variable"))
                    .collect();
                let mut limit = Limit::new(l.domain, l.max, l.seconds, conditions, variables);
                limit.set_name(l.name.to_string());
                limit
            })
            .collect();
        let url = redis.url();
        let port = crate::envoy::free_port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                // The storage connects (and loads its scripts) in the runtime.
                let storage = match AsyncRedisStorage::new(&url).await {
                    Ok(storage) => storage,
                    Err(e) => {
                        let _ =
                            ready_tx.send(Err(format!("limitador's Redis storage at {url}: {e}")));
                        return;
                    }
                };
                let limiter = AsyncRateLimiter::new_with_storage(Box::new(storage));
                for limit in parsed {
                    limiter.add_limit(limit);
                }
                let state = Arc::new(State {
                    limiter,
                    mode: Mutex::new(Mode::Normal),
                    calls: Mutex::new(0),
                });
                let service = RlsService(state.clone());
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let server = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_shutdown(addr, async {
                        let _ = stopped.await;
                    });
                let _ = ready_tx.send(Ok(state));
                if let Err(e) = server.await {
                    eprintln!("rate limit service: {e}");
                }
            });
        });
        let state = match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(state)) => state,
            Ok(Err(e)) => panic!("{e}\n{}", redis.log()),
            Err(e) => panic!("rate limit service not started: {e}"),
        };
        // Listening once a connection is accepted.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        Rls {
            port,
            state,
            stop: Some(stop),
            thread: Some(thread),
            own_redis: None,
        }
    }

    /// Kills the Redis this service started (its storage gone).
    pub fn stop_redis(&mut self) {
        if let Some(redis) = self.own_redis.as_mut() {
            redis.stop();
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        if let Ok(mut m) = self.state.mode.lock() {
            *m = mode;
        }
    }

    /// Calls the service answered (or is answering).
    pub fn calls(&self) -> u64 {
        self.state.calls.lock().map(|c| *c).unwrap_or(0)
    }
}

impl Drop for Rls {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A limit on descriptors whose entry `key` equals `value`, counted per
/// value of entry `per` (if any).
pub fn limit(
    name: &'static str,
    max: u64,
    seconds: u64,
    when: &[(&str, &str)],
    per: Option<&str>,
) -> LimitSpec {
    LimitSpec {
        name,
        domain: "meshware",
        max,
        seconds,
        conditions: when
            .iter()
            .map(|(k, v)| format!("descriptors[0].{k} == '{v}'"))
            .collect(),
        variables: per.iter().map(|k| format!("descriptors[0].{k}")).collect(),
    }
}
