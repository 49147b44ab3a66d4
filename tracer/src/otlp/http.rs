//! A minimal blocking HTTP/1.1 POST over std's TcpStream, for the exporter thread: one request
//! per connection (`Connection: close`), the whole exchange within the signal's timeout, and
//! the socket in flight reachable from another thread so shutdown can cut a stuck request.
use std::{
    io::{self, Read, Write},
    net::{Shutdown, TcpStream, ToSocketAddrs},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::config::Url;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, io::Error),
    #[error("{0} timed out")]
    Timeout(String),
    #[error("{0}: {1}")]
    Io(String, io::Error),
    #[error("{0}: not an HTTP response")]
    BadResponse(String),
    #[error("{0} answered HTTP {1}")]
    Status(String, u16),
}

impl HttpError {
    /// Worth trying again later: the collector is absent, slow or overloaded (the OTLP/HTTP
    /// spec's retryable codes), not a request it rejects.
    pub fn retryable(&self) -> bool {
        match self {
            HttpError::Status(_, code) => matches!(code, 429 | 502 | 503 | 504),
            HttpError::BadResponse(_) => false,
            _ => true,
        }
    }
}

/// The connection in flight, if any: [`cut`] shuts it down from another thread.
pub type InFlight = Arc<Mutex<Option<TcpStream>>>;

pub fn cut(inflight: &InFlight) {
    if let Some(s) = inflight.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = s.shutdown(Shutdown::Both);
    }
}

/// Response heads longer than this are not a collector's.
const MAX_HEAD: usize = 16 * 1024;

/// POSTs `body` to `url`; Ok once the server answered 2xx.
pub fn post(
    url: &Url,
    headers: &[(String, String)],
    content_type: &str,
    body: &[u8],
    timeout: Duration,
    inflight: &InFlight,
) -> Result<(), HttpError> {
    let deadline = Instant::now() + timeout;
    let what = url.to_string();
    let remaining = |what: &str| {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| HttpError::Timeout(what.to_owned()))
    };
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|_| HttpError::Resolve(url.authority()))?
        .collect();
    let mut last = None;
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, remaining(&what)?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut s = match (stream, last) {
        (Some(s), _) => s,
        (None, Some(e)) if e.kind() == io::ErrorKind::TimedOut => {
            return Err(HttpError::Timeout(what));
        }
        (None, Some(e)) => return Err(HttpError::Connect(url.authority(), e)),
        (None, None) => return Err(HttpError::Resolve(url.authority())),
    };
    *inflight.lock().unwrap_or_else(|e| e.into_inner()) = s.try_clone().ok();
    let result = exchange(&mut s, url, headers, content_type, body, &what, &remaining);
    inflight.lock().unwrap_or_else(|e| e.into_inner()).take();
    result
}

fn exchange(
    s: &mut TcpStream,
    url: &Url,
    headers: &[(String, String)],
    content_type: &str,
    body: &[u8],
    what: &str,
    remaining: &dyn Fn(&str) -> Result<Duration, HttpError>,
) -> Result<(), HttpError> {
    let io_err = |e: io::Error| {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            HttpError::Timeout(what.to_owned())
        } else {
            HttpError::Io(what.to_owned(), e)
        }
    };
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tracer/{}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        url.path,
        url.authority(),
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.set_nodelay(true).ok();
    for chunk in [head.as_bytes(), body] {
        let mut off = 0;
        while off < chunk.len() {
            s.set_write_timeout(Some(remaining(what)?))
                .map_err(io_err)?;
            match s.write(&chunk[off..]) {
                Ok(0) => {
                    return Err(HttpError::Io(
                        what.to_owned(),
                        io::ErrorKind::WriteZero.into(),
                    ));
                }
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(e)),
            }
        }
    }
    let mut buf = Vec::with_capacity(512);
    let mut tmp = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(HttpError::BadResponse(what.to_owned()));
        }
        s.set_read_timeout(Some(remaining(what)?)).map_err(io_err)?;
        match s.read(&mut tmp) {
            // Closed before answering (a collector going away, or shutdown cutting the
            // request): a network failure, worth retrying.
            Ok(0) => {
                return Err(HttpError::Io(
                    what.to_owned(),
                    io::Error::new(io::ErrorKind::UnexpectedEof, "closed before answering"),
                ));
            }
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let code: u16 = head
        .lines()
        .next()
        .filter(|l| l.starts_with("HTTP/1."))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| HttpError::BadResponse(what.to_owned()))?;
    // The body (a partial-success message at most) is not needed: the connection closes.
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(HttpError::Status(what.to_owned(), code))
    }
}

#[cfg(test)]
mod tests {
    use std::{net::TcpListener, thread};

    use super::*;

    fn url(port: u16) -> Url {
        Url::parse(&format!("http://127.0.0.1:{port}/v1/logs")).unwrap()
    }

    /// A server that reads one request and answers `reply`; returns what it read.
    fn serve_once(reply: &'static str) -> (u16, thread::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            let mut tmp = [0u8; 4096];
            // Head, then Content-Length bytes of body.
            loop {
                let n = s.read(&mut tmp).unwrap();
                got.extend_from_slice(&tmp[..n]);
                let text = String::from_utf8_lossy(&got).into_owned();
                if let Some((h, b)) = text.split_once("\r\n\r\n") {
                    let len: usize = h
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .unwrap()
                        .parse()
                        .unwrap();
                    if b.len() >= len {
                        break;
                    }
                }
            }
            s.write_all(reply.as_bytes()).unwrap();
            got
        });
        (port, h)
    }

    #[test]
    fn posts_and_reads_the_status() {
        let (port, h) = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let hdr = vec![("Authorization".to_owned(), "Bearer x".to_owned())];
        let inflight = InFlight::default();
        post(
            &url(port),
            &hdr,
            "application/x-protobuf",
            b"\x01\x02",
            Duration::from_secs(5),
            &inflight,
        )
        .unwrap();
        let got = String::from_utf8_lossy(&h.join().unwrap()).into_owned();
        assert!(got.starts_with("POST /v1/logs HTTP/1.1\r\n"), "{got}");
        assert!(got.contains("\r\nAuthorization: Bearer x\r\n"), "{got}");
        assert!(
            got.contains("\r\nContent-Type: application/x-protobuf\r\n"),
            "{got}"
        );
        assert!(got.ends_with("\r\n\r\n\x01\x02"), "{got:?}");
        assert!(inflight.lock().unwrap().is_none());
    }

    #[test]
    fn errors_say_whether_to_retry() {
        let (port, _h) = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n");
        let e = post(
            &url(port),
            &[],
            "x",
            b"",
            Duration::from_secs(5),
            &InFlight::default(),
        )
        .unwrap_err();
        assert!(
            matches!(e, HttpError::Status(_, 503)) && e.retryable(),
            "{e}"
        );
        let (port, _h) = serve_once("HTTP/1.1 400 Bad Request\r\n\r\n");
        let e = post(
            &url(port),
            &[],
            "x",
            b"",
            Duration::from_secs(5),
            &InFlight::default(),
        )
        .unwrap_err();
        assert!(!e.retryable(), "{e}");
        // Nobody listening.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = post(
            &url(port),
            &[],
            "x",
            b"",
            Duration::from_secs(5),
            &InFlight::default(),
        )
        .unwrap_err();
        assert!(matches!(e, HttpError::Connect(..)) && e.retryable(), "{e}");
    }

    #[test]
    fn a_silent_server_times_out_or_is_cut() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = Instant::now();
        let e = post(
            &url(port),
            &[],
            "x",
            b"abc",
            Duration::from_millis(300),
            &InFlight::default(),
        )
        .unwrap_err();
        assert!(matches!(e, HttpError::Timeout(_)), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3));
        // Cut from another thread long before the timeout.
        let inflight = InFlight::default();
        let i2 = inflight.clone();
        let cutter = thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            cut(&i2);
        });
        let t = Instant::now();
        assert!(
            post(
                &url(port),
                &[],
                "x",
                b"abc",
                Duration::from_secs(30),
                &inflight
            )
            .is_err()
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        cutter.join().unwrap();
        drop(l);
    }
}
