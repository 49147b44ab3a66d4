//! The `/metrics` endpoint: a tiny HTTP/1.1 server on a thread of its own. It serves the text
//! the pipeline encoded at its last tick (an `Arc<String>` swapped under a mutex held for a
//! pointer copy), one connection at a time with short timeouts: a slow scraper delays other
//! scrapers, never the pipeline.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context as _;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A request head larger than this is refused.
const MAX_HEAD: usize = 16 << 10;

pub struct Server {
    addr: SocketAddr,
    text: Arc<Mutex<Arc<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` (a port of 0 picks a free one) and starts serving.
    pub fn start(addr: SocketAddr) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(addr)
            .with_context(|| format!("--metrics: cannot listen on {addr}"))?;
        let addr = listener.local_addr()?;
        let text = Arc::new(Mutex::new(Arc::new(String::from("# EOF\n"))));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (text.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("tracer-metrics".into())
            .spawn(move || serve(listener, t, s))
            .context("cannot start the metrics thread")?;
        tracing::info!("metrics at http://{addr}/metrics");
        Ok(Server {
            addr,
            text,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the pipeline puts the latest encoded metrics.
    pub fn text(&self) -> Arc<Mutex<Arc<String>>> {
        self.text.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept() with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: TcpListener, text: Arc<Mutex<Arc<String>>>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
        let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
        let body = text.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Err(e) = handle(&mut conn, &body) {
            tracing::debug!("metrics: a request failed: {e}");
        }
    }
}

fn handle(conn: &mut TcpStream, body: &str) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(
                conn,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            );
        }
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let b = if method == "HEAD" { "" } else { body };
            respond(conn, "200 OK", CONTENT_TYPE, b)
        }
        ("GET", "/") => respond(
            conn,
            "200 OK",
            "text/html; charset=utf-8",
            "<html><body><a href=\"/metrics\">/metrics</a></body></html>\n",
        ),
        ("GET" | "HEAD", _) => respond(conn, "404 Not Found", "text/plain", "not found\n"),
        _ => respond(
            conn,
            "405 Method Not Allowed",
            "text/plain",
            "only GET /metrics\n",
        ),
    }
}

fn respond(conn: &mut TcpStream, status: &str, ctype: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_the_latest_text_and_a_stuck_client_does_not_hold_the_pipeline() {
        let srv = Server::start("127.0.0.1:0".parse().unwrap()).unwrap();
        let text = srv.text();
        *text.lock().unwrap() = Arc::new("tracer_up 1\n# EOF\n".into());
        let r = get(srv.addr(), "/metrics");
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert!(r.contains(CONTENT_TYPE));
        assert!(r.ends_with("tracer_up 1\n# EOF\n"), "{r}");
        assert!(get(srv.addr(), "/nope").starts_with("HTTP/1.1 404"));
        // A client that connects and sends nothing: the publisher still swaps at once.
        let _stuck = TcpStream::connect(srv.addr()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let t0 = std::time::Instant::now();
        *text.lock().unwrap() = Arc::new("x\n".into());
        assert!(t0.elapsed() < Duration::from_millis(50));
    }
}
