//! The byte streams a session talks over: plain TCP or TLS on either side.

use tokio::net::TcpStream;
use tokio_util::either::Either;

/// Client-facing connection after the handshake.
pub type ClientStream = Either<TcpStream, Box<tokio_rustls::server::TlsStream<TcpStream>>>;

/// Proxy → database connection.
pub type UpstreamStream = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;
