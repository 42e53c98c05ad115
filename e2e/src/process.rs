//! Running the real sidecar binary as a process, with the env the injected
//! container carries, and talking to its HTTP port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use heartbeat_crds::sidecar_contract::{env, path};

/// A free loopback port (bound then released; fine for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running heartbeat-sidecar.
pub struct SidecarProcess {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
    http: reqwest::Client,
}

impl SidecarProcess {
    /// Starts `bin` with exactly `env` (plus PATH) and `args`, serving HTTP on a free port.
    pub fn spawn(bin: &Path, env: &[(&str, String)], args: &[&str]) -> SidecarProcess {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let log = std::env::temp_dir().join(format!("hb-sidecar-{}.log", crate::unique_suffix()));
        let log_file = std::fs::File::create(&log).expect("sidecar log");
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(env::HTTP_ADDR, addr.to_string())
            .env(env::LOG, "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .args(args)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        SidecarProcess {
            child,
            addr,
            log,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        }
    }

    /// The sidecar's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET (or POST with `body`) a path; returns (status, body).
    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let url = format!("http://{}{path}", self.addr);
        let req = match method {
            "POST" => self
                .http
                .post(&url)
                .body(body.unwrap_or_default().to_string()),
            _ => self.http.get(&url),
        };
        match req.send().await {
            Ok(r) => {
                let code = r.status().as_u16();
                (code, r.text().await.unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        self.call("GET", path, None).await
    }

    /// Polls `path` until it answers `code`, or panics after `timeout` with the log.
    pub async fn wait_for(&self, path: &str, code: u16, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (got, body) = self.get(path).await;
            if got == code {
                return body;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{path} did not answer {code} within {timeout:?} (last: {got} {body})\nsidecar log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A metric's value from /metrics.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = self.get(path::METRICS).await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Sends SIGTERM and waits for the exit (a hang guard of 10 s, not a speed check).
    pub fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("sidecar did not exit after SIGTERM\n{}", self.log());
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
