//! The byte streams a session talks over: plain TCP or TLS on either side.

use tokio::net::TcpStream;
use tokio_util::either::Either;

/// Client-facing connection after the handshake.
pub type ClientStream = Either<TcpStream, Box<tokio_rustls::server::TlsStream<TcpStream>>>;

/// Proxy → database connection.
pub type UpstreamStream = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

/// Registers the socket under `stream` with the reactor of the runtime this runs on,
/// keeping the connection itself (its unread data, socket options, TLS state).
///
/// A parked upstream connection stays registered with the runtime of the session that
/// opened it. With `runtime.session_threads`, the session that takes it up may run on
/// another thread: every message would then wake that thread to wake this one. The new
/// registration is a duplicate descriptor of the same socket; the old one is
/// deregistered and closed when the stream it belonged to is dropped.
pub fn rehome_upstream(stream: &mut UpstreamStream) -> std::io::Result<()> {
    let tcp = match stream {
        Either::Left(tcp) => tcp,
        Either::Right(tls) => tls.get_mut().0,
    };
    let fd = std::os::fd::AsFd::as_fd(&*tcp).try_clone_to_owned()?;
    *tcp = TcpStream::from_std(std::net::TcpStream::from(fd))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::{Read, Write};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::runtime::Builder;

    use super::*;

    #[test]
    fn a_rehomed_stream_works_after_the_runtime_that_opened_it_is_gone() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let first = Builder::new_current_thread().enable_all().build().unwrap();
        let tcp = first.block_on(TcpStream::connect(addr)).unwrap();
        let mut stream: UpstreamStream = Either::Left(tcp);
        let (mut peer, _) = listener.accept().unwrap();
        peer.write_all(b"sent before").unwrap();
        // The reactor the socket was registered with stops for good.
        drop(first);
        let second = Builder::new_current_thread().enable_all().build().unwrap();
        second.block_on(async {
            rehome_upstream(&mut stream).unwrap();
            let mut buf = [0u8; 11];
            stream.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"sent before");
            peer.write_all(b"ping").unwrap();
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            stream.write_all(b"pong").await.unwrap();
        });
        let mut buf = [0u8; 4];
        peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
    }
}
