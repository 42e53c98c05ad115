//! The sidecar's HTTP server under hostile clients (no broker needed: beats
//! queue, the server is what is tested): 2,000 idle connections and a
//! client sending its headers a byte at a time neither exhaust it nor
//! push its memory past the injected 32Mi limit, and `/livez` keeps being
//! answered; nor can other sources holding as many connections as they
//! like keep the kubelet's probes (another source address on loopback)
//! from being answered within the probe's 1 s timeout. Nothing else here
//! asserts on speed: waits are polls with bounds.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use heartbeat_crds::sidecar_contract::path;
use heartbeat_listener_limits::Limits;

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
    heartbeat_e2e::procfs::rss_kib(pid).expect("VmRSS")
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

/// A sidecar serving on a free loopback port (127.0.0.1), once it
/// answers `/livez`.
fn start_sidecar() -> (Sidecar, SocketAddr) {
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
    let start = Instant::now();
    while get(addr, path::LIVEZ) != Some(200) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the sidecar never answered /livez"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    (sidecar, addr)
}

/// Rule: idle and slow clients cannot take the sidecar's HTTP server down:
/// with 2,000 idle connections and a slow-headers client held open,
/// `/livez` is answered (within a bounded wait), memory stays under the
/// container limit, and the idle ones are closed by the server.
#[test]
fn idle_and_slow_clients_neither_exhaust_the_server_nor_its_memory() {
    let (sidecar, addr) = start_sidecar();
    let pid = sidecar.0.id();

    // 2,000 client sockets need more than the usual 1,024 open files.
    raise_open_file_limit(IDLE as u64 + 256);
    let connecting = Instant::now();
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|i| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("idle connection {i} of {IDLE} failed: {e}"))
        })
        .collect();
    let connected_in = connecting.elapsed();
    let mut slow = TcpStream::connect(addr).expect("slow client");
    let _ = slow.write_all(b"GET /livez HTTP/1.1\r\n");
    let mut peak = rss_kib(pid);
    let mut answered = false;
    let mut probes = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        // A byte every half second: never a whole header in time.
        let _ = slow.write_all(b"X");
        peak = peak.max(rss_kib(pid));
        probes += 1;
        if get(addr, path::LIVEZ) == Some(200) {
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
    // The server refused what it could not hold: from one source it holds
    // `per_source` at once, and each is freed by the header timeout at the
    // earliest; so all but those held in the time it took to connect were
    // refused and counted. Never more than were made (idle, slow, probes).
    let refused = refused_total(addr);
    let caps = Limits::PROBED.caps;
    // One round more than the connecting took: the server may still be
    // accepting from its backlog after the last connect returned.
    let rounds = 2 + connected_in.as_millis() / Limits::PROBED.header_timeout.as_millis();
    let held_at_most = caps.per_source * rounds as usize;
    let made = IDLE + 1 + probes;
    assert!(
        refused >= IDLE.saturating_sub(held_at_most) && refused <= made,
        "refused {refused} of {made} connections; between {} and {made} expected ({IDLE} idle connected in {connected_in:?})",
        IDLE.saturating_sub(held_at_most)
    );
    eprintln!(
        "2,000 idle (connected in {connected_in:?}, {refused} refused) + 1 slow client: /livez answered after {:?}, peak RSS {peak} KiB",
        start.elapsed()
    );
}

/// Idle connections the first test holds.
const IDLE: usize = 2000;

/// Raises this process's soft open-file limit to at least `want` (up to the
/// hard limit; fails when that is lower).
fn raise_open_file_limit(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(
        hard >= want,
        "the open-file hard limit is {hard}; this test needs {want}"
    );
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).expect("setrlimit");
    }
}

/// `heartbeat_sidecar_http_connections_refused_total` from /metrics.
fn refused_total(addr: SocketAddr) -> usize {
    let metrics = Command::new("curl")
        .args([
            "-s",
            "--noproxy",
            "*",
            &format!("http://{addr}{}", path::METRICS),
        ])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&metrics.stdout);
    let samples = heartbeat_e2e::metrics::parse(&text);
    heartbeat_e2e::metrics::value(
        &samples,
        "heartbeat_sidecar_http_connections_refused_total",
        &[],
    )
    .map(|v| v as usize)
    .unwrap_or_else(|| panic!("no refusal count on /metrics: {text}"))
}

/// One keep-alive `GET /livez` on `s`; whether it was answered 200.
fn keep_alive_request(s: &mut TcpStream) -> bool {
    if s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return head.starts_with("HTTP/1.1 200");
            }
        }
    }
}

/// Another pod: from each of `sources`, `per_source` keep-alive
/// connections to `addr`, each sent a request in turn (so the header
/// timeout never closes them) and reopened whenever the server closes
/// it, until dropped. `held` is how many answered in the last round.
struct Intruder {
    stop: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    rounds: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Intruder {
    fn start(addr: SocketAddr, sources: &[Ipv4Addr], per_source: usize) -> Intruder {
        let (stop, held, rounds) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let mut conns: Vec<(Ipv4Addr, Option<TcpStream>)> = sources
            .iter()
            .flat_map(|s| (0..per_source).map(|_| (*s, None)))
            .collect();
        let (stop2, held2, rounds2) = (stop.clone(), held.clone(), rounds.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let mut alive = 0;
                for (source, conn) in conns.iter_mut() {
                    if conn.is_none() {
                        *conn = connect_from(*source, addr);
                    }
                    if let Some(s) = conn {
                        if keep_alive_request(s) {
                            alive += 1;
                        } else {
                            *conn = None;
                        }
                    }
                }
                held2.store(alive, Ordering::Relaxed);
                rounds2.fetch_add(1, Ordering::Relaxed);
            }
        });
        Intruder {
            stop,
            held,
            rounds,
            thread: Some(thread),
        }
    }

    fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Waits for one more whole round over the intruder's connections.
    fn next_round(&self) {
        let seen = self.rounds.load(Ordering::Relaxed);
        let start = Instant::now();
        while self.rounds.load(Ordering::Relaxed) <= seen {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the intruder is stuck"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the intruder holds at least `n` connections.
    fn wait_holding(&self, n: usize) {
        let start = Instant::now();
        while self.held() < n {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the intruder never held {n} connections (holds {})",
                self.held()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Intruder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connection to `addr` from `source` (any 127/8 address is loopback's).
fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> Option<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    socket
        .bind(&SocketAddr::new(IpAddr::V4(source), 0).into())
        .ok()?;
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(1))
        .ok()?;
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
    Some(s)
}

/// The kubelet's probe: `GET /livez` from 127.0.0.1 on a fresh connection,
/// answered 200 within its 1 s timeout (connect and answer together).
fn probe_answers_in_time(addr: SocketAddr) -> Result<Duration, String> {
    let start = Instant::now();
    let limit = Duration::from_secs(1);
    let mut s = connect_from(Ipv4Addr::LOCALHOST, addr).ok_or("connect failed")?;
    s.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)
        .map_err(|e| format!("no answer: {e}"))?;
    let took = start.elapsed();
    match &head[9..12] {
        b"200" if took < limit => Ok(took),
        code => Err(format!("{} after {took:?}", String::from_utf8_lossy(code))),
    }
}

/// Probes ten times, one per round of the intruder's requests.
fn probes_answer_while(intruder: &Intruder, addr: SocketAddr) {
    for i in 0..10 {
        intruder.next_round();
        if let Err(why) = probe_answers_in_time(addr) {
            panic!(
                "probe {i} failed while the intruder held {} connections: {why}",
                intruder.held()
            );
        }
    }
}

/// Rule: one source holds at most its share of the connections (32), and
/// however many it tries to hold, the kubelet's probe from another source
/// is answered within its 1 s timeout.
#[test]
fn one_source_holding_connections_cannot_starve_the_probes() {
    let (_sidecar, addr) = start_sidecar();
    // The share of one source, as the sidecar's limits set it.
    let per_source = 32;
    let intruder = Intruder::start(addr, &[Ipv4Addr::new(127, 0, 0, 2)], 300);
    // It got its connections: the test would see a global cap.
    intruder.wait_holding(per_source);
    probes_answer_while(&intruder, addr);
    assert!(
        intruder.held() <= per_source,
        "one source held {} connections (cap {per_source})",
        intruder.held()
    );
}

/// Rule: many sources together, each at its share, cannot starve the
/// kubelet either: once the listener is full, a source that holds fewer
/// connections than the busiest (the probe's: none) displaces the
/// busiest's oldest, so its probe is answered within 1 s.
#[test]
fn many_sources_filling_the_listener_cannot_starve_the_probes() {
    let (_sidecar, addr) = start_sidecar();
    let caps = heartbeat_listener_limits::Limits::PROBED.caps;
    let sources: Vec<Ipv4Addr> = (0..caps.total.div_ceil(caps.per_source) + 4)
        .map(|i| Ipv4Addr::new(127, 0, 1, i as u8 + 1))
        .collect();
    let intruder = Intruder::start(addr, &sources, caps.per_source);
    // They fill the listener (less the few they are reopening).
    intruder.wait_holding(caps.total * 3 / 4);
    probes_answer_while(&intruder, addr);
}
