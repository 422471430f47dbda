//! A TCP proxy on a real socket, to take a server away from the app and
//! give it back: `cut` closes every connection and refuses new ones,
//! `restore` accepts again on the same port.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Forwards `127.0.0.1:<port>` to a target address.
pub struct TcpProxy {
    addr: SocketAddr,
    target: SocketAddr,
    running: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
}

impl TcpProxy {
    /// Starts forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Arc<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Arc::new(TcpProxy {
            addr: listener.local_addr().unwrap(),
            target,
            running: Mutex::new(None),
        });
        proxy.serve(listener);
        proxy
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn serve(&self, listener: TcpListener) {
        let stop = CancellationToken::new();
        let target = self.target;
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                loop {
                    let (client, _) = tokio::select! {
                        accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => return },
                        () = stop.cancelled() => return,
                    };
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(target).await else {
                            return;
                        };
                        let (mut client, mut server) = (client, server);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            () = stop.cancelled() => {}
                        }
                    });
                }
            }
        });
        *self.running.lock().unwrap() = Some((stop, task));
    }

    /// Closes every connection and the listening socket: the server is gone.
    pub async fn cut(&self) {
        let running = self.running.lock().unwrap().take();
        if let Some((stop, task)) = running {
            stop.cancel();
            let _ = task.await;
        }
    }

    /// Listens again on the same port: the server is back.
    pub async fn restore(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}
