//! `jitgate serve`: the proxy, the admin API and the audit writer, wired together.
//!
//! [`start`] binds both listeners and returns a [`Server`] handle (tests and the demo use
//! it in-process); [`run`] adds signal handling: SIGINT/SIGTERM stop accepting, drain
//! sessions up to `drain_timeout`, end the rest, and flush the audit log.

use std::net::SocketAddr;
use std::sync::Arc;

use jitgate_audit::{AuditWriter, WriterGuard};
use jitgate_policy::{Engine, SqliteStore, SystemClock};
use jitgate_proxy::registry::SessionRegistry;
use jitgate_proxy::{listener, ProxyContext};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::error::Error;

/// A running jitgate: proxy listener, admin API, audit writer.
pub struct Server {
    /// Where clients connect (the bound address, so port 0 resolves).
    pub proxy_addr: SocketAddr,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    pub registry: Arc<SessionRegistry>,
    pub engine: Engine,
    pub audit: AuditWriter,
    shutdown: CancellationToken,
    proxy_task: JoinHandle<std::io::Result<()>>,
    admin_task: JoinHandle<std::io::Result<()>>,
    audit_guard: Option<WriterGuard>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, Error> {
    listener.local_addr().map_err(|source| Error::Io {
        context: "reading a listener's address".into(),
        source,
    })
}

/// Opens the store and the audit log, binds both listeners and starts serving.
pub async fn start(config: Config) -> Result<Server, Error> {
    let (audit, audit_guard) = AuditWriter::start(config.audit.clone())?;
    start_with_audit(config, audit, Some(audit_guard)).await
}

/// Like [`start`], but with an audit writer the caller made (`audit_guard` is its thread,
/// closed by [`Server::stop`]; `None` for [`AuditWriter::disabled`]). Exists for the
/// benchmark's audit-off mode (`P0`); the `jitgate` binary always goes through [`start`].
pub async fn start_with_audit(
    config: Config,
    audit: AuditWriter,
    audit_guard: Option<WriterGuard>,
) -> Result<Server, Error> {
    let store = SqliteStore::open(&config.store_path)?;
    let engine = Engine::new(
        Arc::new(store),
        Arc::new(SystemClock),
        config.catalog.clone(),
    );
    let registry = SessionRegistry::new();

    let proxy_listener = bind("proxy", config.proxy.listen).await?;
    let admin_listener = bind("admin API", config.admin.listen).await?;
    let proxy_addr = local_addr(&proxy_listener)?;
    let admin_addr = local_addr(&admin_listener)?;

    let shutdown = CancellationToken::new();
    let ctx = ProxyContext::new(
        Arc::new(config.proxy),
        engine.clone(),
        audit.clone(),
        Arc::clone(&registry),
    );
    let proxy_task = tokio::spawn(listener::serve(proxy_listener, ctx, shutdown.clone()));
    let state = ApiState {
        engine: engine.clone(),
        registry: Arc::clone(&registry),
        audit: audit.clone(),
        token: config.admin.token.clone(),
    };
    let admin_task = tokio::spawn(api::serve(admin_listener, state, shutdown.clone()));
    tracing::info!(%proxy_addr, %admin_addr, audit = ?audit.path(), "jitgate is serving");
    Ok(Server {
        proxy_addr,
        admin_addr,
        registry,
        engine,
        audit,
        shutdown,
        proxy_task,
        admin_task,
        audit_guard,
    })
}

impl Server {
    /// Stops accepting, drains and ends sessions, then flushes and closes the audit log.
    pub async fn stop(self) -> Result<(), Error> {
        self.shutdown.cancel();
        let joined = |r: Result<std::io::Result<()>, tokio::task::JoinError>, what: &str| match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(Error::Io {
                context: format!("{what} stopped with an error"),
                source,
            }),
            Err(e) => Err(Error::Io {
                context: format!("{what} task failed"),
                source: std::io::Error::other(e.to_string()),
            }),
        };
        let proxy = joined(self.proxy_task.await, "proxy listener");
        let admin = joined(self.admin_task.await, "admin API");
        drop(self.audit);
        if let Some(guard) = self.audit_guard {
            guard.close().await?;
        }
        tracing::info!("jitgate stopped; audit log flushed");
        proxy.and(admin)
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serves until SIGINT/SIGTERM, then shuts down gracefully.
pub async fn run(config: Config) -> Result<(), Error> {
    let server = start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: no new connections; draining sessions");
    server.stop().await
}
