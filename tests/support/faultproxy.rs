//! A TCP proxy that puts network faults between the gateway and a server it calls (PostgreSQL,
//! a provider fake), switchable at run time, open connections included: [`Fault::Pass`],
//! [`Fault::Delay`], [`Fault::Drop`] and [`Fault::Blackhole`]. A blackhole is what a
//! partition looks like from the client: connections are accepted and what the client sends is
//! read, but nothing is forwarded and nothing comes back — no reset, no close — so only the
//! client's own timeouts and deadlines end its wait. Back to `Pass`, what was held flows on, as
//! TCP's retransmissions do once a partition heals.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to the bytes between the two sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forwards both ways.
    Pass,
    /// Forwards both ways, each chunk after this long.
    Delay(Duration),
    /// Closes every connection, open ones and new ones, at once (a FIN, not a reset).
    Drop,
    /// Accepts and reads, forwards and answers nothing, closes nothing.
    Blackhole,
}

/// A running proxy; stopped (its connections closed) on drop.
pub struct FaultProxy {
    /// Where clients connect: `127.0.0.1:PORT`.
    pub addr: SocketAddr,
    fault: watch::Sender<Fault>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on a free loopback port, passing bytes.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (fault, watching) = watch::channel(Fault::Pass);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                tokio::spawn(relay(client, upstream, watching.clone()));
            }
        });
        FaultProxy {
            addr,
            fault,
            accept,
        }
    }

    /// Switches every connection, open or new, to `fault`.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.set(Fault::Drop);
    }
}

/// One client connection: its upstream connection is opened once bytes may pass.
async fn relay(mut client: TcpStream, upstream: SocketAddr, mut fault: watch::Receiver<Fault>) {
    let mut server: Option<TcpStream> = None;
    // What the client sent while nothing passed.
    let mut held = Vec::new();
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        let now = *fault.borrow_and_update();
        let delay = match now {
            Fault::Drop => return,
            Fault::Blackhole => None,
            Fault::Pass => Some(Duration::ZERO),
            Fault::Delay(delay) => Some(delay),
        };
        if delay.is_some() {
            if server.is_none() {
                match TcpStream::connect(upstream).await {
                    Ok(stream) => {
                        let _ = stream.set_nodelay(true);
                        server = Some(stream);
                    }
                    Err(_) => return,
                }
            }
            if !held.is_empty() {
                let Some(stream) = server.as_mut() else {
                    return;
                };
                if stream.write_all(&held).await.is_err() {
                    return;
                }
                held.clear();
            }
        }
        tokio::select! {
            changed = fault.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            read = client.read(&mut up) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                match (delay, server.as_mut()) {
                    (Some(delay), Some(stream)) => {
                        tokio::time::sleep(delay).await;
                        if stream.write_all(&up[..n]).await.is_err() {
                            return;
                        }
                    }
                    _ => held.extend_from_slice(&up[..n]),
                }
            }
            read = async { server.as_mut().unwrap().read(&mut down).await },
                if delay.is_some() && server.is_some() =>
            {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                tokio::time::sleep(delay.unwrap_or_default()).await;
                if client.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
