//! Inbound connections by PeerAuthentication mode: STRICT accepts TLS only, PERMISSIVE
//! peeks at the first byte to serve TLS and plaintext on one port, DISABLE is plaintext.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use mesh_core::Identity;
use rustls::ServerConfig;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::{peer_auth::Mode, verify::spiffe_identity};

/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;

/// An accepted connection: TLS (with the peer's identity) or plaintext.
#[derive(Debug)]
pub struct ServerIo(Inner);

#[derive(Debug)]
enum Inner {
    Tls(Box<TlsStream<TcpStream>>),
    Plain(TcpStream),
}

impl ServerIo {
    /// A plaintext connection, as a listener without TLS accepts it.
    pub fn plain(stream: TcpStream) -> Self {
        Self(Inner::Plain(stream))
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.0, Inner::Tls(_))
    }

    /// The ALPN protocol the client chose.
    pub fn alpn(&self) -> Option<&[u8]> {
        match &self.0 {
            Inner::Tls(t) => t.get_ref().1.alpn_protocol(),
            Inner::Plain(_) => None,
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// STRICT and the client spoke plaintext.
    #[error("plaintext connection refused: mTLS is STRICT")]
    PlaintextRefused,
    /// The TLS handshake failed (unknown CA, expired certificate, no client certificate).
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    /// The socket failed.
    #[error(transparent)]
    Io(io::Error),
}

/// Accepts connections for one workload.
#[derive(Clone)]
pub struct MtlsAcceptor {
    tls: TlsAcceptor,
    /// Configurations chosen by the client's SNI (host patterns: exact, `*.suffix`, `*`);
    /// the first match wins, `tls` when none does.
    by_sni: Arc<[(Vec<String>, Arc<ServerConfig>)]>,
}

impl std::fmt::Debug for MtlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsAcceptor").finish_non_exhaustive()
    }
}

impl MtlsAcceptor {
    /// With this server configuration (see [`crate::config::server_config`]).
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self { tls: TlsAcceptor::from(config), by_sni: Arc::new([]) }
    }

    /// Several configurations on one port, chosen by the server name the client asks for
    /// (SNI): the first whose host patterns match it (`bookinfo.example.com`,
    /// `*.example.com`, `*`), else `default`. As Envoy's filter chains per server name
    /// behind one gateway port.
    pub fn by_sni(default: Arc<ServerConfig>, choices: Vec<(Vec<String>, Arc<ServerConfig>)>) -> Self {
        Self { tls: TlsAcceptor::from(default), by_sni: choices.into() }
    }

    /// The configuration for the server name `sni`.
    fn choose(&self, sni: Option<&str>) -> Option<Arc<ServerConfig>> {
        let sni = sni?.to_ascii_lowercase();
        self.by_sni
            .iter()
            .find(|(hosts, _)| hosts.iter().any(|h| mesh_core::request::host_matches(h, &sni)))
            .map(|(_, c)| c.clone())
    }

    /// Accept `stream` under `mode`. The identity is the client's, for TLS connections.
    pub async fn accept(&self, stream: TcpStream, mode: Mode) -> Result<(ServerIo, Option<Identity>), AcceptError> {
        let tls = match mode {
            Mode::Disable => false,
            Mode::Strict | Mode::Permissive => {
                let mut first = [0u8; 1];
                let n = stream.peek(&mut first).await.map_err(AcceptError::Io)?;
                let is_tls = n == 1 && first[0] == TLS_HANDSHAKE;
                if !is_tls && mode == Mode::Strict {
                    return Err(AcceptError::PlaintextRefused);
                }
                is_tls
            }
        };
        if !tls {
            return Ok((ServerIo(Inner::Plain(stream)), None));
        }
        let tls = if self.by_sni.is_empty() {
            self.tls.accept(stream).await.map_err(AcceptError::Handshake)?
        } else {
            let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                .await
                .map_err(AcceptError::Handshake)?;
            let config = self.choose(start.client_hello().server_name()).unwrap_or_else(|| self.tls.config().clone());
            start.into_stream(config).await.map_err(AcceptError::Handshake)?
        };
        let identity = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(spiffe_identity);
        Ok((ServerIo(Inner::Tls(Box::new(tls))), identity))
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Inner::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
