//! Change notifications: one dedicated connection LISTENs on [`CHANNEL`] and forwards the
//! grant ids that writers `pg_notify` into a broadcast channel.
//!
//! Every insert and update sends `pg_notify('jitgate_grants', id)` in its own
//! transaction, so PostgreSQL delivers it to every listening replica only on commit. A
//! supervisor task owns the listening connection, checks it with `SELECT 1` every
//! `check_interval` (a silently dead network is noticed too), and on losing it reconnects
//! with capped, jittered exponential backoff. Changes committed while nobody listened are
//! not replayed by PostgreSQL, so after every re-established LISTEN the supervisor sends
//! [`Uuid::nil`]: "you may have missed changes; reconcile everything".

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;
use tokio::time::timeout;
use tokio_postgres::{AsyncMessage, Client, Config, Connection, Socket};
use uuid::Uuid;

use super::describe::describe;
use super::pool::AbortOnDrop;
use super::tls::{self, Connector};
use crate::error::PolicyError;

/// The notification channel every writer notifies and every replica listens on.
pub const CHANNEL: &str = "jitgate_grants";

/// First wait after a failed (re)connection; doubles up to the configured maximum.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Listener settings, taken from [`super::PostgresStoreOptions`].
#[derive(Clone, Debug)]
pub(super) struct ListenSettings {
    /// The store's connection settings with the listener's own `application_name`.
    pub(super) config: Config,
    pub(super) target: String,
    pub(super) connect_timeout: Duration,
    pub(super) call_timeout: Duration,
    pub(super) check_interval: Duration,
    pub(super) backoff_max: Duration,
    pub(super) tls: Connector,
}

/// A LISTENing connection: the client (for health checks) and the task that reads
/// notifications from the socket.
pub(super) struct Session {
    client: Client,
    driver: AbortOnDrop,
}

/// Connects and LISTENs; the driver task starts forwarding notifications at once.
pub(super) async fn establish(
    settings: &ListenSettings,
    changes: &broadcast::Sender<Uuid>,
) -> Result<Session, PolicyError> {
    let fail = |what: &str| {
        PolicyError::Store(format!(
            "listen for grant changes at {}: {what}; the store is unreachable",
            settings.target
        ))
    };
    let (client, connection) = match timeout(
        settings.connect_timeout,
        settings.config.connect(settings.tls.make()),
    )
    .await
    {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            let advice = match tls::advice(&e, "") {
                "" => String::new(),
                advice => format!(" ({advice})"),
            };
            return Err(fail(&format!("cannot connect: {}{advice}", describe(&e))));
        }
        Err(_) => {
            return Err(fail(&format!(
                "no answer within {:?}",
                settings.connect_timeout
            )))
        }
    };
    let driver = AbortOnDrop(tokio::spawn(drive(connection, changes.clone())));
    match timeout(
        settings.call_timeout,
        client.batch_execute(&format!("LISTEN {CHANNEL}")),
    )
    .await
    {
        Ok(Ok(())) => Ok(Session { client, driver }),
        Ok(Err(e)) => Err(fail(&format!("LISTEN failed: {}", describe(&e)))),
        Err(_) => Err(fail(&format!(
            "LISTEN got no answer within {:?}",
            settings.call_timeout
        ))),
    }
}

/// Reads the connection until it ends, forwarding our channel's grant ids.
async fn drive<T: AsyncRead + AsyncWrite + Unpin>(
    mut connection: Connection<Socket, T>,
    changes: broadcast::Sender<Uuid>,
) {
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CHANNEL => {
                match Uuid::parse_str(n.payload()) {
                    // No receivers right now is fine: nobody needs the news.
                    Ok(id) => drop(changes.send(id)),
                    Err(_) => tracing::warn!(
                        channel = CHANNEL,
                        payload = n.payload(),
                        sender_pid = n.process_id(),
                        "ignoring a grant change notification that is not a grant id"
                    ),
                }
            }
            Some(Ok(AsyncMessage::Notice(notice))) => {
                tracing::debug!(notice = %notice, "grant store listener notice");
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %describe(&e), "grant store listener connection failed");
                return;
            }
            None => return,
        }
    }
}

/// Owns the listening connection for the store's lifetime: watches it, re-establishes it,
/// and announces each re-establishment with [`Uuid::nil`]. `session` is the connection
/// [`super::PostgresStore::connect`] established (nothing missed yet); `None` for a lazily
/// connected store, whose first LISTEN is announced too.
pub(super) async fn supervise(
    settings: ListenSettings,
    changes: broadcast::Sender<Uuid>,
    mut session: Option<Session>,
) {
    let mut announce = session.is_none();
    let mut backoff = INITIAL_BACKOFF;
    let mut failures = 0u32;
    loop {
        let current = match session.take() {
            Some(s) => s,
            None => match establish(&settings, &changes).await {
                Ok(s) => {
                    if failures > 0 {
                        tracing::info!(
                            attempts = failures + 1,
                            "listening for grant changes again"
                        );
                    }
                    failures = 0;
                    backoff = INITIAL_BACKOFF;
                    s
                }
                Err(e) => {
                    if failures == 0 {
                        tracing::warn!(error = %e, "cannot listen for grant changes; retrying");
                    } else {
                        tracing::debug!(error = %e, attempt = failures + 1, "still cannot listen for grant changes");
                    }
                    failures = failures.saturating_add(1);
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(settings.backoff_max.max(INITIAL_BACKOFF));
                    continue;
                }
            },
        };
        if announce {
            // Listening again: whatever changed meanwhile must be re-read.
            drop(changes.send(Uuid::nil()));
        }
        announce = true;
        watch(&settings, current).await;
        tracing::warn!(
            target_db = %settings.target,
            "lost the grant change listener connection; reconnecting"
        );
    }
}

/// Returns when the session's connection is gone or stops answering health checks.
async fn watch(settings: &ListenSettings, mut session: Session) {
    let mut checks = tokio::time::interval(settings.check_interval);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the connection was just checked by LISTEN.
    checks.tick().await;
    loop {
        tokio::select! {
            _ = &mut session.driver.0 => return,
            _ = checks.tick() => {
                let check = timeout(settings.call_timeout, session.client.simple_query("SELECT 1"));
                match check.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %describe(&e), "grant change listener health check failed");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(
                            timeout = ?settings.call_timeout,
                            "grant change listener health check got no answer"
                        );
                        return;
                    }
                }
            }
        }
    }
}

/// `base` ± 25 %, so replicas that lost the store together do not reconnect in lockstep.
fn jitter(base: Duration) -> Duration {
    // v4 UUIDs carry 122 random bits; 16 of them are plenty here.
    let r = (Uuid::new_v4().as_u128() & 0xffff) as f64 / f64::from(u16::MAX);
    base.mul_f64(0.75 + 0.5 * r)
}
