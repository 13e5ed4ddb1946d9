//! One test's world: jitgate in front of the logging cluster (upstream connections never
//! reused, so one backend pid is one session), a table `t (v text)` owned by the
//! upstream role, alice's grant, and the endpoints to reach the database through
//! jitgate and directly.

use std::time::Duration;

use super::exchange::Endpoint;
use crate::common;
use crate::harness::{Env, EnvConfig, ALICE, ALICE_PASSWORD};

pub struct Setup {
    pub env: Env,
    /// OID of `abs(int4)`, for FunctionCall.
    pub abs_oid: u32,
    /// Through jitgate as alice.
    pub proxy: Endpoint,
    /// Straight to PostgreSQL as the upstream role.
    pub direct: Endpoint,
}

pub async fn setup(prefix: &str) -> Setup {
    let cluster = tokio::task::spawn_blocking(common::logging_cluster)
        .await
        .expect("start the logging cluster");
    let env = Env::start_config(
        prefix,
        EnvConfig {
            cluster: Some(cluster),
            extra_top: "upstream_reuse:\n  enabled: false\n",
            ..EnvConfig::default()
        },
    )
    .await;
    assert_eq!(env.superuser_sql("SHOW log_statement"), "all");
    env.superuser_sql(&format!(
        "CREATE TABLE t (v text); ALTER TABLE t OWNER TO {}",
        env.upstream_user
    ));
    let abs_oid = env
        .superuser_sql("SELECT 'abs(int4)'::regprocedure::oid")
        .parse()
        .expect("abs(int4) has an OID");
    env.grant(ALICE, Duration::from_secs(3600)).await;
    let password = std::fs::read_to_string(env.dir.path().join("role.password"))
        .expect("the role's password file");
    let proxy = Endpoint {
        port: env.proxy_port(),
        user: ALICE.into(),
        password: ALICE_PASSWORD.into(),
        database: env.target.clone(),
    };
    let direct = Endpoint {
        port: cluster.port(),
        user: env.upstream_user.clone(),
        password,
        database: env.target.clone(),
    };
    Setup {
        env,
        abs_oid,
        proxy,
        direct,
    }
}
