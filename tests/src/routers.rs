//! Real HTTP routers nobody here wrote, behind Envoy, for the differential
//! path test (`tests/tests/paths.rs`): Flask (werkzeug's router, PyPI),
//! Express (npm) and nginx (Debian), each serving the same handlers from
//! `tests/routers/` and answering which one served a request. `make
//! test-routers` installs them.

use crate::envoy::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One router process; killed on drop.
pub struct Router {
    pub name: &'static str,
    pub port: u16,
    child: Child,
    log: PathBuf,
    _dir: PathBuf,
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- {} log -----\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "meshware-router-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn nginx_binary() -> PathBuf {
    std::env::var_os("NGINX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

impl Router {
    fn spawn(name: &'static str, mut command: Command, port: u16, dir: PathBuf) -> Router {
        let log = dir.join("router.log");
        let out = std::fs::File::create(&log).expect("router log");
        let err = out.try_clone().expect("router log");
        let child = command
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e} (run `make test-routers`)"));
        let mut router = Router {
            name,
            port,
            child,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = router.child.try_wait() {
                panic!(
                    "{name} exited with {status} (run `make test-routers`):\n{}",
                    std::fs::read_to_string(&router.log).unwrap_or_default()
                );
            }
            if crate::http::get(port, "/", &[]).is_ok_and(|r| r.status == 200) {
                return router;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not answer on :{port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn flask() -> Router {
        let port = free_port();
        let mut c = Command::new(crate::python());
        c.arg(crate::root().join("tests/routers/flask_app.py"))
            .arg(port.to_string());
        Router::spawn("flask", c, port, scratch("flask"))
    }

    pub fn express() -> Router {
        let port = free_port();
        let mut c = Command::new("node");
        c.arg(crate::root().join("tests/routers/express/app.js"))
            .arg(port.to_string());
        Router::spawn("express", c, port, scratch("express"))
    }

    pub fn nginx() -> Router {
        let port = free_port();
        let dir = scratch("nginx");
        let template = std::fs::read_to_string(crate::root().join("tests/routers/nginx.conf"))
            .expect("tests/routers/nginx.conf");
        let conf = template
            .replace("@PORT@", &port.to_string())
            .replace("@DIR@", &dir.display().to_string());
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).expect("nginx.conf");
        let mut c = Command::new(nginx_binary());
        c.arg("-e")
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&path);
        Router::spawn("nginx", c, port, dir)
    }

    /// Every router.
    pub fn all() -> Vec<Router> {
        vec![Router::flask(), Router::express(), Router::nginx()]
    }
}
