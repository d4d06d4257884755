//! A real gRPC stack behind and in front of Envoy: grpcio's server and
//! client (PyPI, in the project's virtualenv), driven through
//! `tests/grpc/server.py` and `tests/grpc/client.py`.

use crate::envoy::free_port;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test service on a free port; killed on drop (its log printed when
/// the test failed).
pub struct GrpcServer {
    pub port: u16,
    child: Child,
    log: PathBuf,
}

impl GrpcServer {
    pub fn start() -> GrpcServer {
        let port = free_port();
        let log =
            std::env::temp_dir().join(format!("meshware-grpc-{}-{port}.log", std::process::id()));
        let out = std::fs::File::create(&log).expect("grpc server log");
        let err = out.try_clone().expect("grpc server log");
        let child = Command::new(crate::python())
            .arg(crate::root().join("tests/grpc/server.py"))
            .arg(port.to_string())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the gRPC server: {e} (run `make setup`)"));
        let server = GrpcServer { port, child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&server.log)
            .unwrap_or_default()
            .contains("serving on")
        {
            assert!(
                Instant::now() < deadline,
                "the gRPC server did not start:\n{}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- gRPC server log -----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// One call with grpcio's client: what the client saw (`code`, `details`,
/// `initial_metadata`, `trailing_metadata`, `responses`).
pub fn call(port: u16, method: &str, request: &str, extra: &[&str]) -> Value {
    let out = Command::new(crate::python())
        .arg(crate::root().join("tests/grpc/client.py"))
        .arg(format!("127.0.0.1:{port}"))
        .arg(method)
        .arg(request)
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the gRPC client: {e}"));
    assert!(
        out.status.success(),
        "gRPC client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
