//! The request/approval workflow end to end: a real jitgate (config file with a policy)
//! in front of real PostgreSQL, driven over HTTP with the CLI's client as the people
//! involved, and psql/tokio-postgres as the DBA's session.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;
mod harness;

use std::time::Duration;

use harness::{
    Env, EnvConfig, ALICE, ALICE_PASSWORD, BOB, BOB_PASSWORD, CAROL, CAROL_PASSWORD, ROLE,
};
use jitgate::api::{
    AdminClient, Decision, DecisionBody, ExplainQuery, ExtendBody, LoginBody, RequestBody,
    RequestsQuery, RevokeBody,
};
use jitgate::Error;
use jitgate_audit::EventBody;
use jitgate_policy::GrantState;
use jitgate_proxy::settings::Secret;

fn policy(target: &str) -> String {
    format!(
        "policy:\n\
         \x20 groups:\n\
         \x20   dbas: [{BOB}, {CAROL}]\n\
         \x20 rules:\n\
         \x20   - name: write\n\
         \x20     requesters: {{ identities: [{ALICE}] }}\n\
         \x20     targets: [{target}]\n\
         \x20     roles: [{ROLE}]\n\
         \x20     max_duration: 2h\n\
         \x20     approvals: {{ count: 1, from: [dbas] }}\n\
         \x20     pending_timeout: 10m\n\
         \x20     break_glass: {{ max_duration: 10m, review_by: [dbas] }}\n\
         notifications:\n\
         \x20 expiring_soon: 3s\n"
    )
}

async fn env_with_policy(prefix: &str) -> Env {
    // The target name is only known inside start_config; the rule names it, so the
    // policy is written for a wildcard target and narrowed by the role.
    let top = policy("\"*\"");
    Env::start_config(
        prefix,
        EnvConfig {
            extra_top: &top,
            ..EnvConfig::default()
        },
    )
    .await
}

async fn login(env: &Env, identity: &str, password: &str) -> AdminClient {
    let anonymous = AdminClient::new(env.admin_url(), Secret::new(String::new())).unwrap();
    let view = anonymous
        .login(&LoginBody {
            identity: identity.into(),
            password: password.into(),
        })
        .await
        .unwrap();
    assert_eq!(view.identity, identity);
    AdminClient::new(env.admin_url(), Secret::new(view.token)).unwrap()
}

fn admin(env: &Env) -> AdminClient {
    AdminClient::new(env.admin_url(), Secret::new(harness::ADMIN_TOKEN)).unwrap()
}

fn status(result: Result<impl std::fmt::Debug, Error>) -> (u16, String) {
    match result {
        Err(Error::Admin { status, message }) => (status, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn write_request(env: &Env, reason: &str) -> RequestBody {
    RequestBody {
        target: env.target.clone(),
        role: ROLE.into(),
        duration: "30m".into(),
        reason: Some(reason.into()),
        ticket: None,
        start_at: None,
        break_glass: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_request_approve_connect_extend_revoke() {
    let env = env_with_policy("wf_tour").await;

    // Logging in: the psql password; wrong and unknown look the same.
    let anonymous = AdminClient::new(env.admin_url(), Secret::new(String::new())).unwrap();
    let wrong = status(
        anonymous
            .login(&LoginBody {
                identity: ALICE.into(),
                password: "nope".into(),
            })
            .await,
    );
    let unknown = status(
        anonymous
            .login(&LoginBody {
                identity: "mallory".into(),
                password: "nope".into(),
            })
            .await,
    );
    assert_eq!(wrong, unknown);
    assert_eq!(wrong.0, 401);
    let alice = login(&env, ALICE, ALICE_PASSWORD).await;
    let bob = login(&env, BOB, BOB_PASSWORD).await;
    let carol = login(&env, CAROL, CAROL_PASSWORD).await;
    let me = bob.whoami().await.unwrap();
    assert_eq!(me.identity.as_deref(), Some(BOB));
    assert_eq!(me.groups, ["dbas"]);
    // A login token is not the admin token.
    assert_eq!(status(alice.sessions().await).0, 403);

    // Explain says who approves.
    let explained = alice
        .explain(&ExplainQuery {
            identity: ALICE.into(),
            target: env.target.clone(),
            role: ROLE.into(),
        })
        .await
        .unwrap();
    assert!(explained.text.contains("write"), "{}", explained.text);

    // Request, with a retry under the same idempotency key.
    let filed = alice
        .request_access(&write_request(&env, "INC-1 fix a row"), Some("k-1"))
        .await
        .unwrap();
    assert_eq!(filed.grant.grant.state, GrantState::Pending);
    let id = filed.grant.grant.id;
    let retried = alice
        .request_access(&write_request(&env, "INC-1 fix a row"), Some("k-1"))
        .await
        .unwrap();
    assert_eq!(retried.grant.grant.id, id);
    assert!(retried.steps.is_empty());

    // Pending: no access yet.
    let err = harness::refused(env.connect().await, "pending request");
    assert_eq!(err.as_db_error().unwrap().code().code(), "42501");

    // Bob sees it waiting; alice cannot approve her own; the admin token cannot approve.
    let pending = bob
        .requests(&RequestsQuery {
            pending: Some(true),
            mine: None,
        })
        .await
        .unwrap();
    assert!(pending.iter().any(|r| r.grant.id == id));
    let (code, message) = status(
        alice
            .decide(id, Decision::Approve, &DecisionBody::default())
            .await,
    );
    assert_eq!(code, 403, "{message}");
    assert_eq!(
        status(
            admin(&env)
                .decide(id, Decision::Approve, &DecisionBody::default())
                .await
        )
        .0,
        403
    );
    let approved = bob
        .decide(
            id,
            Decision::Approve,
            &DecisionBody {
                comment: Some("ok".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(approved.grant.grant.state, GrantState::Approved);
    let original_end = approved.grant.grant.expires_at;

    // Connect and keep the session open across the extension.
    let (client, _conn) = env.connect().await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    let ext = alice
        .extend(
            id,
            &ExtendBody {
                duration: "15m".into(),
                reason: Some("still migrating".into()),
                ticket: None,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(ext.grant.grant.state, GrantState::Pending);
    let applied = carol
        .decide(
            ext.grant.grant.id,
            Decision::Approve,
            &DecisionBody::default(),
        )
        .await
        .unwrap();
    assert!(applied.steps.iter().any(|s| s.action == "extended"));
    let new_end = original_end
        .checked_add(jiff::SignedDuration::from_mins(15))
        .unwrap();
    let sessions = admin(&env).sessions().await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        sessions[0].deadline, new_end,
        "live session got the new deadline"
    );
    client.simple_query("SELECT 2").await.unwrap();

    // Two more pending extensions, each within the rule's 2h alone (about 45m left +
    // 60m), not together: the second approval is refused, the grant keeps the first.
    let hour = ExtendBody {
        duration: "60m".into(),
        reason: Some("one more hour".into()),
        ticket: None,
    };
    let first = alice.extend(id, &hour, None).await.unwrap().grant.grant.id;
    let second = alice.extend(id, &hour, None).await.unwrap().grant.grant.id;
    carol
        .decide(first, Decision::Approve, &DecisionBody::default())
        .await
        .unwrap();
    let (code, message) = status(
        carol
            .decide(second, Decision::Approve, &DecisionBody::default())
            .await,
    );
    assert_eq!(code, 409, "{message}");
    assert!(message.contains("latest allowed end"), "{message}");
    let sessions = admin(&env).sessions().await.unwrap();
    assert_eq!(
        sessions[0].deadline,
        new_end
            .checked_add(jiff::SignedDuration::from_mins(60))
            .unwrap(),
        "only the first extension applied"
    );

    // Revoke ends it at once.
    let revoked = admin(&env)
        .revoke(
            id,
            &RevokeBody {
                reason: Some("done".into()),
                revoked_by: Some("dba-lead".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(revoked.sessions_dropped, 1);
    let err = client.simple_query("SELECT 3").await.unwrap_err();
    let code = err.as_db_error().map(|e| e.code().code().to_owned());
    assert!(
        code.as_deref() == Some("57P01") || err.is_closed(),
        "{err:?}"
    );
    // Approving anything now is a clear conflict.
    let (code, message) = status(
        carol
            .decide(id, Decision::Approve, &DecisionBody::default())
            .await,
    );
    assert_eq!(code, 409, "{message}");

    // Every step is in the audit log, chained with the session events.
    let events = env.audit_events();
    let steps: Vec<(String, Option<String>, String)> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::GrantTransition {
                action, from, to, ..
            } => Some((action.clone(), from.clone(), to.clone())),
            _ => None,
        })
        .collect();
    let actions: Vec<&str> = steps.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        actions,
        [
            "requested",
            "approved",
            "activated",
            "extension_requested",
            "approved",
            "extended",
            // The two one-hour extensions: the first applied, the second refused (a
            // refused approval writes nothing).
            "extension_requested",
            "extension_requested",
            "approved",
            "extended"
        ],
        "{steps:?}"
    );
    assert_eq!(steps[1].1.as_deref(), Some("pending"));
    assert_eq!(steps[1].2, "approved");
    let approved_event = events
        .iter()
        .find(|e| matches!(&e.body, EventBody::GrantTransition { action, .. } if action == "approved"))
        .unwrap();
    match &approved_event.body {
        EventBody::GrantTransition {
            actor,
            rule,
            comment,
            ..
        } => {
            assert_eq!(actor, BOB);
            assert_eq!(rule.as_deref(), Some("write"));
            assert_eq!(comment.as_deref(), Some("ok"));
        }
        _ => unreachable!(),
    }
    assert!(events.iter().any(|e| matches!(
        &e.body,
        EventBody::GrantRevoked { revoked_by, from, .. }
            if revoked_by == "dba-lead" && from.as_deref() == Some("approved")
    )));
    let report = jitgate_audit::verify::verify(&env.audit_path(), None).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_reports_expiring_soon_and_expiry() {
    let env = env_with_policy("wf_sweep").await;
    let alice = login(&env, ALICE, ALICE_PASSWORD).await;
    let bob = login(&env, BOB, BOB_PASSWORD).await;
    let mut body = write_request(&env, "short fix");
    body.duration = "5s".into();
    let id = alice
        .request_access(&body, None)
        .await
        .unwrap()
        .grant
        .grant
        .id;
    bob.decide(id, Decision::Approve, &DecisionBody::default())
        .await
        .unwrap();
    let seen = |action: &'static str| {
        let events = env.audit_events();
        move || {
            events.iter().any(
                |e| matches!(&e.body, EventBody::GrantTransition { action: a, .. } if a == action),
            )
        }
    };
    env.eventually("expiring_soon", Duration::from_secs(30), || {
        seen("expiring_soon")()
    })
    .await;
    env.eventually("expired", Duration::from_secs(30), || seen("expired")())
        .await;
    let g = admin(&env).get(id).await.unwrap();
    assert_eq!(g.grant.state, GrantState::Expired);
    // Exactly one of each, however many sweeps ran.
    let events = env.audit_events();
    for action in ["expiring_soon", "expired", "activated"] {
        let n = events
            .iter()
            .filter(
                |e| matches!(&e.body, EventBody::GrantTransition { action: a, .. } if a == action),
            )
            .count();
        assert_eq!(n, 1, "{action}");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_and_deny_through_the_api() {
    let env = env_with_policy("wf_glass").await;
    let alice = login(&env, ALICE, ALICE_PASSWORD).await;
    let bob = login(&env, BOB, BOB_PASSWORD).await;

    let denied_id = alice
        .request_access(&write_request(&env, "curious"), None)
        .await
        .unwrap()
        .grant
        .grant
        .id;
    let (code, message) = status(
        bob.decide(denied_id, Decision::Deny, &DecisionBody::default())
            .await,
    );
    assert_eq!(code, 400, "a denial needs a comment: {message}");
    let denied = bob
        .decide(
            denied_id,
            Decision::Deny,
            &DecisionBody {
                comment: Some("use the replica".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(denied.grant.grant.state, GrantState::Denied);

    let mut glass = write_request(&env, "outage INC-9");
    glass.break_glass = true;
    glass.duration = "5m".into();
    let taken = alice.request_access(&glass, None).await.unwrap();
    assert_eq!(taken.grant.grant.state, GrantState::Approved);
    assert!(taken.grant.grant.break_glass);
    let (client, _conn) = env.connect().await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    let reviewed = bob
        .decide(
            taken.grant.grant.id,
            Decision::Review,
            &DecisionBody {
                comment: Some("justified".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        reviewed.grant.grant.review.as_ref().map(|r| r.by.as_str()),
        Some(BOB)
    );
    let events = env.audit_events();
    assert!(events.iter().any(|e| matches!(
        &e.body,
        EventBody::GrantTransition { action, break_glass: true, .. } if action == "break_glass"
    )));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_swaps_the_rules_and_keeps_sessions() {
    // Starts without a policy: nobody may request.
    let env = Env::start("wf_reload").await;
    let alice = login(&env, ALICE, ALICE_PASSWORD).await;
    let (code, _) = status(alice.request_access(&write_request(&env, "x"), None).await);
    assert_eq!(code, 403);
    env.grant(ALICE, Duration::from_secs(600)).await;
    let (client, _conn) = env.connect().await.unwrap();

    // A broken file keeps the old rules.
    let original = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(&env.config_path, format!("{original}policy: [oops\n")).unwrap();
    assert!(!jitgate::serve::reload(
        &env.config_path,
        &env.server().engine
    ));
    // A good one takes effect; the live session is untouched.
    std::fs::write(&env.config_path, format!("{original}{}", policy("\"*\""))).unwrap();
    assert!(jitgate::serve::reload(
        &env.config_path,
        &env.server().engine
    ));
    let filed = alice
        .request_access(&write_request(&env, "after reload"), None)
        .await
        .unwrap();
    assert_eq!(filed.grant.grant.state, GrantState::Pending);
    client.simple_query("SELECT 1").await.unwrap();
    env.stop().await;
}

/// What the test's webhook receiver got: (event header, timestamp header, signature
/// header, body).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String, Vec<u8>)>>>;

async fn webhook_receiver() -> (String, Received) {
    use axum::http::HeaderMap;
    let got: Received = Default::default();
    let sink = std::sync::Arc::clone(&got);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let sink = std::sync::Arc::clone(&sink);
            async move {
                let h = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                sink.lock().unwrap().push((
                    h("x-jitgate-event"),
                    h("x-jitgate-timestamp"),
                    h("x-jitgate-signature"),
                    body.to_vec(),
                ));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_steps_reach_a_configured_webhook_signed() {
    const SECRET: &str = "webhook-secret-0123456789";
    let (url, got) = webhook_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("hook.secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let top = policy("\"*\"").replace(
        "notifications:\n",
        &format!(
            "notifications:\n  webhooks:\n    - name: chatops\n      url: {url}\n      secret_file: {}\n      events: [request.created, request.approved, grant.revoked]\n",
            secret_file.display()
        ),
    );
    let env = Env::start_config(
        "wf_hook",
        EnvConfig {
            extra_top: &top,
            ..EnvConfig::default()
        },
    )
    .await;
    let alice = login(&env, ALICE, ALICE_PASSWORD).await;
    let bob = login(&env, BOB, BOB_PASSWORD).await;
    let id = alice
        .request_access(&write_request(&env, "INC-5"), None)
        .await
        .unwrap()
        .grant
        .grant
        .id;
    bob.decide(id, Decision::Approve, &DecisionBody::default())
        .await
        .unwrap();
    admin(&env)
        .revoke(id, &RevokeBody::default())
        .await
        .unwrap();
    env.eventually("three deliveries", Duration::from_secs(20), || {
        got.lock().unwrap().len() >= 3
    })
    .await;
    let got = got.lock().unwrap().clone();
    let events: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
    // `grant.activated` is filtered out by the webhook's event list.
    assert_eq!(
        events,
        ["request.created", "request.approved", "grant.revoked"]
    );
    for (_, ts, sig, body) in &got {
        assert!(jitgate::notify::verify_signature(
            SECRET.as_bytes(),
            ts,
            body,
            sig
        ));
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(json["grant"]["id"], id.to_string());
        assert!(!String::from_utf8_lossy(body).contains(SECRET));
    }
    env.eventually("deliveries audited", Duration::from_secs(10), || {
        env.audit_events()
            .iter()
            .filter(|e| matches!(&e.body, EventBody::WebhookDelivery { outcome, .. } if outcome == "delivered"))
            .count()
            == 3
    })
    .await;
    env.stop().await;
}
