//! Accept loop, and graceful shutdown with a drain deadline.
//!
//! Accepted connections become sessions on the session threads (`session_threads`, the default)
//! or on the runtime this loop runs on (`session_threads: 0`, or when every session
//! thread has stopped running); the threads stop only
//! after every session has ended and the parked connections are closed.
//!
//! On shutdown the listener stops accepting at once; live sessions get
//! `drain_timeout` to finish by themselves, then every remaining session is told jitgate
//! is shutting down and is closed on both sides (its teardown still runs, so its
//! `session_end` event is written). Upstream connections parked for reuse are swept
//! every second while serving and closed at shutdown. The [`crate::backstop`] starts and
//! stops with the accept loop, on a thread of its own.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backstop;
use crate::session::{self, ProxyContext};
use crate::session_threads::SessionThreads;

/// Time sessions get for their teardown after they were told to end.
const TERMINATE_GRACE: Duration = Duration::from_secs(5);

/// How often parked upstream connections are checked against their limits.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Closes parked connections past their idle time, lifetime or grant deadline until
/// `stop` is cancelled.
async fn sweep_parked(ctx: Arc<ProxyContext>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let closed = ctx.registry.parked().sweep(&ctx.settings.reuse);
                if closed > 0 {
                    tracing::debug!(closed, "closed parked upstream connections past their limits");
                }
            }
        }
    }
}

/// Writes the count of pre-authentication refusal events that were not written (see
/// [`crate::limits::refusals`]) once a minute, and a last time when `stop` is cancelled.
async fn summarise_refusals(ctx: Arc<ProxyContext>, stop: CancellationToken) {
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + SUMMARY_EVERY, SUMMARY_EVERY);
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        if let Err(e) = ctx.refusal_audit.flush(&ctx.audit).await {
            tracing::error!(error = %e, "could not audit the count of refusals not written");
        }
        if stopping {
            return;
        }
    }
}

/// How often [`summarise_refusals`] runs.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Starts a session on an accepted connection: here, or on one of `threads`.
fn start_session(
    threads: Option<&SessionThreads>,
    tracker: &TaskTracker,
    ctx: &Arc<ProxyContext>,
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) {
    let ctx = Arc::clone(ctx);
    let Some(threads) = threads else {
        tracker.spawn(session::run(ctx, tcp, peer));
        return;
    };
    // The socket leaves this runtime's reactor and joins the chosen session thread's.
    let std_tcp = match tcp.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, %peer, "could not hand an accepted connection to a session thread");
            return;
        }
    };
    let token = tracker.token();
    let spawned = threads.spawn(move || async move {
        let _token = token;
        match tokio::net::TcpStream::from_std(std_tcp) {
            Ok(tcp) => session::run(ctx, tcp, peer).await,
            Err(e) => {
                tracing::warn!(error = %e, %peer, "could not register an accepted connection")
            }
        }
    });
    if let Err(make) = spawned {
        // No session thread is running (all blocked, say on a hung audit disk): the
        // session runs here, where it is answered — refused, if the audit log is stuck.
        tracker.spawn(make());
    }
}

/// Accepts connections until `shutdown` is cancelled, then drains.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let threads = match ctx.settings.session_threads {
        0 => None,
        n => Some(SessionThreads::start(n)?),
    };
    let tracker = TaskTracker::new();
    let stop_sweeping = CancellationToken::new();
    let sweeper = tokio::spawn(sweep_parked(Arc::clone(&ctx), stop_sweeping.clone()));
    let summaries = tokio::spawn(summarise_refusals(Arc::clone(&ctx), stop_sweeping.clone()));
    let backstop = backstop::start(Arc::clone(&ctx.registry), stop_sweeping.clone())?;
    let mut backoff = Duration::from_millis(5);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    backoff = Duration::from_millis(5);
                    start_session(threads.as_ref(), &tracker, &ctx, tcp, peer);
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a bit instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
    drop(listener);
    ctx.draining.cancel();
    tracker.close();
    let live = ctx.registry.len();
    if live > 0 {
        tracing::info!(
            sessions = live,
            "draining sessions for up to {:?}",
            ctx.settings.drain_timeout
        );
    }
    if tokio::time::timeout(ctx.settings.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::info!(
            sessions = ctx.registry.len(),
            "drain deadline passed; ending live sessions"
        );
        ctx.terminate.cancel();
        if tokio::time::timeout(TERMINATE_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some sessions did not finish their teardown in time");
        }
    }
    stop_sweeping.cancel();
    let _ = sweeper.await;
    let _ = summaries.await;
    let _ = tokio::task::spawn_blocking(move || backstop.join()).await;
    ctx.registry.parked().close_all().await;
    // Parked connections may belong to a session thread's reactor: closed above, before
    // the threads stop.
    drop(threads);
    Ok(())
}
