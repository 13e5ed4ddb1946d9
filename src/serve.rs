//! `jitgate serve`: the proxy, the admin API, the audit writer, the webhook notifier and
//! the grant lifecycle tasks, wired together.
//!
//! [`start`] binds both listeners and returns a [`Server`] handle (tests and the demo use
//! it in-process); [`run`] adds signal handling: SIGINT/SIGTERM stop accepting, drain
//! sessions up to `drain_timeout`, end the rest, and flush the audit log; SIGHUP reloads
//! the approval rules (`policy:`) from the config file without touching live sessions.

use std::net::SocketAddr;
use std::sync::Arc;

use jitgate_audit::{AuditWriter, WriterGuard};
use jitgate_policy::{
    Engine, GrantStore, PostgresStore, PostgresStoreOptions, SignedDuration, SqliteStore,
    SystemClock,
};
use jitgate_proxy::provision::{self, Provisioner};
use jitgate_proxy::registry::SessionRegistry;
use jitgate_proxy::settings::ProxySettings;
use jitgate_proxy::{listener, ProxyContext};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState, LoginLimits, TokenKeys};
use crate::config::{Config, StoreConfig, StoreSettings};
use crate::error::Error;
use crate::lifecycle::{sync, Lifecycle};
use crate::notify::{Notifier, NotifierGuard};

/// How long shutdown waits for queued webhook deliveries.
const NOTIFY_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A running jitgate: proxy listener, admin API, audit writer.
pub struct Server {
    /// Where clients connect (the bound address, so port 0 resolves).
    pub proxy_addr: SocketAddr,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    pub registry: Arc<SessionRegistry>,
    pub engine: Engine,
    pub audit: AuditWriter,
    /// Engine, registry, audit and notifier together (what grant changes go through).
    pub lifecycle: Lifecycle,
    /// Open client connections, in all and per address (`client_limits`).
    pub connections: Arc<jitgate_proxy::limits::ConnectionLimits>,
    shutdown: CancellationToken,
    proxy_task: JoinHandle<std::io::Result<()>>,
    admin_task: JoinHandle<std::io::Result<()>>,
    background: Vec<JoinHandle<()>>,
    notifier_guard: NotifierGuard,
    audit_guard: Option<WriterGuard>,
}

/// Opens the configured grant store.
pub async fn open_store(cfg: &StoreConfig) -> Result<Arc<dyn GrantStore>, Error> {
    Ok(open_store_and_witness(cfg).await?.0)
}

/// Opens the configured grant store; a PostgreSQL store is also returned as itself, to
/// serve as the audit witness.
async fn open_store_and_witness(
    cfg: &StoreConfig,
) -> Result<(Arc<dyn GrantStore>, Option<Arc<PostgresStore>>), Error> {
    Ok(match &cfg.backend {
        StoreSettings::Sqlite(path) => (Arc::new(SqliteStore::open(path)?), None),
        StoreSettings::Postgres {
            conninfo,
            connect_timeout,
            pool_size,
            tls,
        } => {
            let options = PostgresStoreOptions {
                connect_timeout: *connect_timeout,
                pool_size: usize::try_from(*pool_size).unwrap_or(4),
                tls: tls.clone(),
                ..PostgresStoreOptions::default()
            };
            let store = Arc::new(PostgresStore::connect(conninfo.expose(), options).await?);
            (store.clone(), Some(store))
        }
    })
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

/// Checks, off the startup path, that each ephemeral target's admin credential can
/// provision (`provision::preflight`, as `jitgate check-config` does), and logs a
/// warning per problem: a database that is down or a missing privilege must not keep
/// jitgate from starting (the other targets work), but the operator should hear of it
/// before the first login of a grant fails.
async fn warn_unless_admins_can_provision(
    settings: Arc<ProxySettings>,
    shutdown: CancellationToken,
) {
    let check = provision::preflight::check_all(settings.targets.values());
    let reports = tokio::select! {
        _ = shutdown.cancelled() => return,
        reports = check => reports,
    };
    for report in reports {
        if report.ok() {
            tracing::info!(target = %report.target, "{report}");
        } else {
            for problem in &report.problems {
                tracing::warn!(
                    target = %report.target,
                    "{problem} (jitgate starts anyway; grants on this target fail at login until this is fixed)"
                );
            }
        }
    }
}

/// Opens the store and the audit log, binds both listeners and starts serving.
pub async fn start(config: Config) -> Result<Server, Error> {
    let mut audit_config = config.audit.clone();
    if let (Some(witness), Some(key)) = (&config.witness, &config.audit.signing_key) {
        // A log cut back together with its checkpoints file is refused too.
        audit_config.witnessed =
            crate::witness::newest(&config.store.backend, witness, &key.public()).await;
    }
    let (audit, audit_guard) = AuditWriter::start(audit_config)?;
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
    let (store, postgres) = open_store_and_witness(&config.store).await?;
    if let (Some(witness), Some(postgres)) = (&config.witness, postgres) {
        crate::witness::attach(&audit, postgres, witness.log.clone())?;
    }
    let engine = Engine::new(store, Arc::new(SystemClock), config.catalog.clone())
        .with_rules(config.rules.clone());
    let registry = SessionRegistry::new();
    let settings = Arc::new(config.proxy);
    let provisioner = Arc::new(Provisioner::default());
    let (notifier, notifier_guard) =
        Notifier::start(config.notifications.webhooks.clone(), audit.clone());
    let lifecycle = Lifecycle {
        engine: engine.clone(),
        registry: Arc::clone(&registry),
        audit: audit.clone(),
        notifier,
        own_changes: Default::default(),
        provisioner: Arc::clone(&provisioner),
    };
    let login_keys = match &config.user_sessions.key {
        Some(key) => TokenKeys::new(key.expose().as_bytes(), config.user_sessions.ttl),
        None => TokenKeys::random(config.user_sessions.ttl),
    };
    let identities = Arc::new(settings.identities.clone());

    let proxy_listener = bind("proxy", settings.listen).await?;
    let admin_listener = bind("admin API", config.admin.listen).await?;
    let proxy_addr = local_addr(&proxy_listener)?;
    let admin_addr = local_addr(&admin_listener)?;

    let shutdown = CancellationToken::new();
    let expiring_lead = SignedDuration::try_from(config.notifications.expiring_soon)
        .unwrap_or(SignedDuration::from_mins(10));
    let background = vec![
        tokio::spawn(sync::run_sweeper(
            lifecycle.clone(),
            expiring_lead,
            shutdown.clone(),
        )),
        tokio::spawn(sync::run_sync(
            lifecycle.clone(),
            config.store.reconcile_interval,
            shutdown.clone(),
        )),
        tokio::spawn(provision::sweep::run(
            Arc::clone(&provisioner),
            Arc::clone(&settings),
            engine.clone(),
            Arc::clone(&registry),
            shutdown.clone(),
        )),
        tokio::spawn(warn_unless_admins_can_provision(
            Arc::clone(&settings),
            shutdown.clone(),
        )),
    ];
    let ctx = ProxyContext::new(
        settings,
        engine.clone(),
        audit.clone(),
        Arc::clone(&registry),
        provisioner,
    );
    let refusal_audit = Arc::clone(&ctx.refusal_audit);
    let connections = Arc::clone(&ctx.connections);
    let mock_secret = ctx.mock_secret;
    let login_limits = LoginLimits::new(&ctx.settings.client_limits);
    let proxy_task = tokio::spawn(listener::serve(proxy_listener, ctx, shutdown.clone()));
    let state = ApiState {
        lifecycle: lifecycle.clone(),
        token: config.admin.token.clone(),
        login_keys,
        identities,
        mock_secret,
        login_limits,
        refusal_audit,
    };
    let admin_task = match config.admin_tls {
        Some(tls) => tokio::spawn(api::serve_tls(admin_listener, state, shutdown.clone(), tls)),
        None => tokio::spawn(api::serve(admin_listener, state, shutdown.clone())),
    };
    tracing::info!(%proxy_addr, %admin_addr, audit = ?audit.path(), "jitgate is serving");
    Ok(Server {
        proxy_addr,
        admin_addr,
        registry,
        engine,
        audit,
        lifecycle,
        connections,
        shutdown,
        proxy_task,
        admin_task,
        background,
        notifier_guard,
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
        for task in self.background {
            let _ = task.await;
        }
        self.notifier_guard.close(NOTIFY_DRAIN).await;
        drop(self.lifecycle);
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

/// Serves until SIGINT/SIGTERM, then shuts down gracefully. SIGHUP reloads the rules.
pub async fn run(config: Config) -> Result<(), Error> {
    let path = config.path.clone();
    let server = start(config).await?;
    let reloader = tokio::spawn(reload_on_sighup(path, server.engine.clone()));
    shutdown_signal().await;
    reloader.abort();
    tracing::info!("shutting down: no new connections; draining sessions");
    server.stop().await
}

/// Re-reads the config file on every SIGHUP and swaps in its approval rules. A file that
/// does not load keeps the old rules (and says why); live sessions are never touched.
async fn reload_on_sighup(path: std::path::PathBuf, engine: Engine) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; restart to change the rules");
            return;
        };
        while hup.recv().await.is_some() {
            reload(&path, &engine);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, engine);
    }
}

/// One reload: the `policy:` section takes effect; other sections need a restart.
pub fn reload(path: &std::path::Path, engine: &Engine) -> bool {
    match crate::config::load(path) {
        Ok(config) => {
            let rules = config.rules.len();
            engine.set_rules(config.rules);
            tracing::info!(path = %path.display(), rules,
                "config reloaded: approval rules (policy:) updated; other sections take effect at restart");
            true
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e,
                "config reload failed; keeping the rules in force");
            false
        }
    }
}
