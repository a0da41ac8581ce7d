//! A TCP proxy that a test can cut: every open connection shut at once, new ones refused for a
//! while, without touching the shared RabbitMQ (or PostgreSQL, forwarded to another address).

use super::broker::{broker_addr, broker_url_at};

/// A TCP proxy to the broker that a test can cut: every open connection is shut at once, and new
/// ones can be refused for a while, without touching the shared RabbitMQ.
pub struct Proxy {
    pub port: u16,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
}

struct ProxyState {
    conns: Vec<std::net::TcpStream>,
    accepting: bool,
}

impl Proxy {
    pub fn to_broker() -> Self {
        Self::between("127.0.0.1", broker_addr())
    }

    /// A proxy listening on a free port at `listen` (an address of this machine, e.g. the
    /// root end of a veth pair) to `upstream_addr` (`host:port`).
    pub fn between(listen: &str, upstream_addr: String) -> Self {
        use std::net::{Shutdown, TcpListener, TcpStream};
        let listener = TcpListener::bind((listen, 0)).expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(ProxyState {
            conns: Vec::new(),
            accepting: true,
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let accepting = shared.lock().map(|s| s.accepting).unwrap_or(false);
                if !accepting {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(&upstream_addr) else {
                    continue;
                };
                let pipe = |mut from: TcpStream, mut to: TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                };
                if let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
                    client.try_clone(),
                    upstream.try_clone(),
                    client.try_clone(),
                    upstream.try_clone(),
                ) {
                    if let Ok(mut s) = shared.lock() {
                        s.conns.push(c3);
                        s.conns.push(u3);
                    }
                    pipe(client, u2);
                    pipe(upstream, c2);
                }
            }
        });
        Self { port, state }
    }

    pub fn url(&self) -> String {
        broker_url_at(self.port)
    }

    /// Shuts every connection through the proxy, as a network cut or broker crash would.
    pub fn cut(&self) {
        if let Ok(mut s) = self.state.lock() {
            for c in s.conns.drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    pub fn set_accepting(&self, accepting: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.accepting = accepting;
        }
    }
}
