//! `null-relay LISTEN UPSTREAM`: the floor for any proxy (label `R` in BENCHMARKS.md).
//!
//! Accepts TCP connections and copies bytes both ways to UPSTREAM with tokio's
//! `copy_bidirectional`, TCP_NODELAY on both sockets, nothing parsed. Whatever a real proxy
//! costs beyond this is the price of looking at the protocol.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream] = args.as_slice() else {
        bail!("usage: null-relay LISTEN_ADDR UPSTREAM_ADDR");
    };
    let listen: SocketAddr = listen.parse().context("LISTEN_ADDR")?;
    let upstream: SocketAddr = upstream.parse().context("UPSTREAM_ADDR")?;
    let listener = TcpListener::bind(listen).await.context("binding")?;
    loop {
        let mut client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                // Out of fds and the like: back off instead of spinning.
                eprintln!("null-relay: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}
