//! The sidecar's HTTP server under hostile clients (no broker needed: beats
//! queue, the server is what is tested): 2,000 idle connections and a
//! client sending its headers a byte at a time neither exhaust it nor
//! push its memory past the injected 32Mi limit, and `/livez` keeps being
//! answered. Nothing here asserts on speed: waits are polls with bounds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The injected sidecar's memory limit (SPEC: 32Mi).
const LIMIT_KIB: u64 = 32 * 1024;

struct Sidecar(Child);

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .expect("VmRSS")
}

/// `GET path` on a fresh connection; the status code, or None.
fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Rule: idle and slow clients cannot take the sidecar's HTTP server down:
/// with 2,000 idle connections and a slow-headers client held open,
/// `/livez` is answered (within a bounded wait), memory stays under the
/// container limit, and the idle ones are closed by the server.
#[test]
fn idle_and_slow_clients_neither_exhaust_the_server_nor_its_memory() {
    let port = heartbeat_e2e::process::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let child = Command::new(env!("CARGO_BIN_EXE_heartbeat-sidecar"))
        .args([
            "--topic",
            "limits",
            "--program-id",
            "limits",
            "--interval-secs",
            "1",
        ])
        .env("HEARTBEAT_HTTP_ADDR", addr.to_string())
        // A closed port on loopback: beats queue, the server is under test.
        .env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sidecar");
    let sidecar = Sidecar(child);
    let pid = sidecar.0.id();
    let start = Instant::now();
    while get(addr, "/livez") != Some(200) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the sidecar never answered /livez"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let idle: Vec<TcpStream> = (0..2000)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect();
    let mut slow = TcpStream::connect(addr).expect("slow client");
    let _ = slow.write_all(b"GET /livez HTTP/1.1\r\n");
    let mut peak = rss_kib(pid);
    let mut answered = false;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        // A byte every half second: never a whole header in time.
        let _ = slow.write_all(b"X");
        peak = peak.max(rss_kib(pid));
        if get(addr, "/livez") == Some(200) {
            answered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    peak = peak.max(rss_kib(pid));
    assert!(
        answered,
        "/livez was not answered while 2,000 idle connections were held"
    );
    assert!(
        peak < LIMIT_KIB,
        "resident memory peaked at {peak} KiB (limit {LIMIT_KIB})"
    );

    // The server closes what it holds idle: reading sees end of file.
    let closed = idle
        .iter()
        .take(50)
        .filter(|s| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            // `Read` is implemented for `&TcpStream`.
            let mut stream: &TcpStream = s;
            // Closed: end of file or a reset; a timeout means still open.
            match stream.read(&mut [0u8; 1]) {
                Ok(0) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                Ok(_) => false,
            }
        })
        .count();
    assert_eq!(closed, 50, "idle connections were not closed by the server");
    let metrics = Command::new("curl")
        .args(["-s", "--noproxy", "*", &format!("http://{addr}/metrics")])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        text.contains("heartbeat_sidecar_http_connections_refused_total"),
        "{text}"
    );
    eprintln!(
        "2,000 idle + 1 slow client: /livez answered after {:?}, peak RSS {peak} KiB",
        start.elapsed()
    );
}
