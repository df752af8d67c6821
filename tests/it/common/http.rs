//! Plain HTTP/1.1 requests for tests of Ember's HTTP servers (`ember serve`, the web UI).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// One HTTP/1.1 request to `addr`; the status and the body.
pub fn request(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    read_response(stream)
}

/// A request to `addr` whose JSON answer is parsed.
pub fn json_request(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let text = body.map(Value::to_string);
    let (status, answer) = request(addr, method, path, text.as_deref());
    let value = serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {answer}"));
    (status, value)
}

pub fn read_response(mut stream: TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, body.to_string())
}

/// The `HOST:PORT` to dial for a server's `http://localhost:PORT/` URL.
pub fn address_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .replace("localhost", "127.0.0.1")
}
