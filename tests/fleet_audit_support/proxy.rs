//! A TCP proxy between a host and the database, to lose the database (`cut`) or partition it
//! (`blackhole`) and bring it back (`heal`). Shared by the fleet tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tollgate::backend::postgres::PgBackend;

pub struct Proxy {
    pub port: u16,
    /// `Some(true)`: connections are cut (refused); `Some(false)`: black-holed (kept open,
    /// nothing forwarded).
    mode: Arc<Mutex<Option<bool>>>,
    live: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: (String, u16)) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode: Arc<Mutex<Option<bool>>> = Arc::default();
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (m, l, st) = (mode.clone(), live.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = conn else { continue };
                match *m.lock() {
                    Some(true) => {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    Some(false) => {
                        l.lock().push(client); // held open, never answered
                        continue;
                    }
                    None => {}
                }
                let Ok(server) = TcpStream::connect((upstream.0.as_str(), upstream.1)) else {
                    continue;
                };
                l.lock()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let m = m.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            // Black-holed: swallow everything.
                            if *m.lock() == Some(false) {
                                continue;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            port,
            mode,
            live,
            stop,
        }
    }

    pub fn kill_connections(&self) {
        for s in self.live.lock().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// The database is gone: live connections are cut, new ones refused.
    pub fn cut(&self) {
        *self.mode.lock() = Some(true);
        self.kill_connections();
    }

    /// A network partition: connections stay open, nothing gets through.
    pub fn blackhole(&self) {
        *self.mode.lock() = Some(false);
    }

    /// The network is back (black-holed connections are closed, as a partition's usually are
    /// by then).
    pub fn heal(&self) {
        *self.mode.lock() = None;
        self.kill_connections();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.kill_connections();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

pub fn through_proxy(b: &PgBackend) -> (Proxy, PgBackend) {
    let cfg = b.config();
    let host = match &cfg.get_hosts()[0] {
        postgres::config::Host::Tcp(h) => h.clone(),
        #[allow(unreachable_patterns)]
        _ => "127.0.0.1".to_owned(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let proxy = Proxy::start((host, port));
    let url = format!(
        "host=127.0.0.1 port={} user={} dbname={}",
        proxy.port,
        cfg.get_user().unwrap_or("postgres"),
        cfg.get_dbname().unwrap_or("postgres")
    );
    let pb = PgBackend::from_url(&url, b.schema(), Duration::from_secs(2)).unwrap();
    (proxy, pb)
}
