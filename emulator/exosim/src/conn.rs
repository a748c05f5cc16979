//! Connections the emulator can break on purpose: an acceptor that wraps every accepted TCP
//! stream so a handler can make the connection fail without sending a response.
//!
//! This is how the Exchange faults `reset_before_apply` and `reset_after_apply` really reach
//! the client as a broken connection. A handler looks up its connection by the peer address
//! (axum's `ConnectInfo`) and kills it; from then on every read and write on the socket fails, so
//! hyper gives up on the response it was about to write and drops the connection: the client
//! sees the connection close with no HTTP response at all.

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Live connections by peer address.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    live: Mutex<HashMap<SocketAddr, Arc<AtomicBool>>>,
}

impl Connections {
    /// Breaks the connection from `peer`; false when it is not (or no longer) open.
    pub(crate) fn kill(&self, peer: SocketAddr) -> bool {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.get(&peer).is_some_and(|flag| {
            flag.store(true, Ordering::SeqCst);
            true
        })
    }
}

/// The acceptor: sits under TLS (`RustlsAcceptor::new(..).acceptor(KillAcceptor)`).
#[derive(Debug, Clone)]
pub(crate) struct KillAcceptor {
    pub connections: Arc<Connections>,
}

impl<S> axum_server::accept::Accept<TcpStream, S> for KillAcceptor {
    type Stream = KillableStream;
    type Service = S;
    type Future = Ready<io::Result<(KillableStream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        // axum-server's default acceptor sets TCP_NODELAY; replacing it must not lose that, or
        // Nagle meets the client's delayed ACK and every sequential request stalls ~40 ms.
        let accepted = stream.set_nodelay(true).and_then(|()| stream.peer_addr());
        ready(accepted.map(|peer| {
            let killed = Arc::new(AtomicBool::new(false));
            self.connections
                .live
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(peer, killed.clone());
            (
                KillableStream {
                    inner: stream,
                    killed,
                    peer,
                    connections: self.connections.clone(),
                },
                service,
            )
        }))
    }
}

/// A TCP stream that fails every operation once killed.
#[derive(Debug)]
pub(crate) struct KillableStream {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
    peer: SocketAddr,
    connections: Arc<Connections>,
}

impl KillableStream {
    fn check(&self) -> io::Result<()> {
        if self.killed.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection reset by exosim fault injection",
            ))
        } else {
            Ok(())
        }
    }
}

impl Drop for KillableStream {
    fn drop(&mut self) {
        let mut live = self
            .connections
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if live
            .get(&self.peer)
            .is_some_and(|f| Arc::ptr_eq(f, &self.killed))
        {
            live.remove(&self.peer);
        }
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
