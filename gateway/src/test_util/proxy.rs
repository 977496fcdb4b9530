//! A TCP proxy whose connections can be cut at once (a network failure
//! both ends see as a dropped socket) or stalled (a half-open connection:
//! the sockets stay open and nothing more arrives). `capgate-bench
//! --scenario reattach` and the reconnect tests put it between workers and
//! the gateway.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A TCP proxy in front of the gateway whose connections can be cut at
/// once — a network failure both ends see as a dropped socket.
pub struct CuttableProxy {
    pub addr: std::net::SocketAddr,
    cuts: watch::Sender<u64>,
    stalls: watch::Sender<u64>,
    /// While set, new connections are dropped as soon as they are accepted.
    refusing: Arc<AtomicBool>,
    accepting: JoinHandle<()>,
}

impl CuttableProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cuts, _) = watch::channel(0u64);
        let cut_signal = cuts.clone();
        let (stalls, _) = watch::channel(0u64);
        let stall_signal = stalls.clone();
        let refusing = Arc::new(AtomicBool::new(false));
        let refuse = refusing.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if refuse.load(Ordering::SeqCst) {
                    continue;
                }
                let mut cut = cut_signal.subscribe();
                let mut stall = stall_signal.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                        // Stop forwarding but keep both sockets open until cut.
                        _ = stall.changed() => { let _ = cut.changed().await; }
                    }
                });
            }
        });
        Ok(Self {
            addr,
            cuts,
            stalls,
            refusing,
            accepting,
        })
    }

    /// Whether new connections are refused (the network stays down).
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Drops every connection open through the proxy; new ones are accepted.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Stops forwarding on every connection open through the proxy while
    /// keeping their sockets open: neither end sees a close. New
    /// connections are forwarded as usual.
    pub fn stall(&self) {
        self.stalls.send_modify(|n| *n += 1);
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap_or(("ws", url));
        let path = rest.find('/').map(|at| &rest[at..]).unwrap_or("");
        format!("{scheme}://{}{path}", self.addr)
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}
