//! Config loading: the shipped examples load, and every kind of mistake is reported with
//! the field that holds it (and never with a secret).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};

use jitgate::config::{self, LogFormat, StoreSettings};
use jitgate::ConfigError;
use jitgate_audit::Durability;
use jitgate_proxy::settings::UpstreamTls;

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The env vars the examples reference. Every test sets the same values, so tests running
/// in parallel never disagree about them.
fn set_example_env() {
    for (name, value) in [
        ("PROD_RO_PASSWORD", "prod-ro-secret-value"),
        ("PROD_RW_PASSWORD", "prod-rw-secret-value"),
        ("ANALYTICS_PASSWORD", "analytics-secret-value"),
        ("APP_PASSWORD", "app-secret-value"),
        ("JITGATE_ADMIN_TOKEN", ADMIN_TOKEN),
        ("CFGTEST_RO_PASSWORD", "cfgtest-secret-value"),
        ("CFGTEST_ADMIN_TOKEN", ADMIN_TOKEN),
    ] {
        std::env::set_var(name, value);
    }
}

const VERIFIER: &str = "SCRAM-SHA-256$4096:pgLk2ty//ojYzgNkOmbvrQ==$oUjxOBa69Yw/eqhzhV2aaKAzCtnx+qbxqhETFLYnktQ=:mPZ+HtNQVJQn5NM3y9Z22zIthEDp//7rjjLBC9WJdQw=";

/// A valid config; tests break one thing in it with `str::replace`.
fn base_yaml() -> String {
    format!(
        r#"listen: 127.0.0.1:6432
login_timeout: 10s
identities:
  alice:
    scram_verifier: "{VERIFIER}"
targets:
  prod:
    host: 127.0.0.1
    port: 5432
    tls: {{ mode: disable }}
    roles:
      readonly:
        user: app_ro
        password_env: CFGTEST_RO_PASSWORD
store: {{ sqlite: grants.db }}
audit: {{ path: audit.jsonl }}
admin: {{ listen: 127.0.0.1:6433, token_env: CFGTEST_ADMIN_TOKEN }}
"#
    )
}

/// Writes `yaml` as `jitgate.yaml` in a fresh directory.
fn write_config(yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jitgate.yaml");
    std::fs::write(&path, yaml).unwrap();
    (dir, path)
}

/// Loads `yaml`, expecting failure.
fn load_err(yaml: &str) -> ConfigError {
    set_example_env();
    let (_dir, path) = write_config(yaml);
    config::load(&path).expect_err("config should be rejected")
}

/// Asserts the error names `field` and says `needle`.
fn assert_names(err: &ConfigError, field: &str, needle: &str) {
    let text = err.to_string();
    assert_eq!(err.field_path(), Some(field), "field of: {text}");
    assert!(text.contains(&format!("{field}: ")), "{text}");
    assert!(text.contains(needle), "{text:?} should contain {needle:?}");
    assert!(text.contains("jitgate.yaml"), "names the file: {text}");
}

#[test]
fn base_config_is_valid() {
    set_example_env();
    let (dir, path) = write_config(&base_yaml());
    let config = config::load(&path).unwrap();
    assert!(matches!(
        &config.store.backend,
        StoreSettings::Sqlite(p) if *p == dir.path().join("grants.db")
    ));
    assert_eq!(config.audit.path, dir.path().join("audit.jsonl"));
    assert_eq!(config.admin.token.expose(), ADMIN_TOKEN);
}

#[test]
fn reference_example_loads() {
    set_example_env();
    let config = config::load(&examples().join("jitgate.yaml")).unwrap();
    let p = &config.proxy;
    assert_eq!(p.listen, "127.0.0.1:6432".parse().unwrap());
    assert!(p.tls.is_none());
    assert_eq!(p.login_timeout, std::time::Duration::from_secs(10));
    assert_eq!(p.drain_timeout, std::time::Duration::from_secs(30));
    assert_eq!(p.max_message_len, 64 * 1024 * 1024);
    let mut identities: Vec<_> = p.identities.keys().cloned().collect();
    identities.sort();
    assert_eq!(identities, ["alice", "bob"]);

    let prod = &p.targets["prod"];
    assert_eq!(
        (prod.host.as_str(), prod.port, prod.database.as_str()),
        ("127.0.0.1", 5432, "app")
    );
    assert!(matches!(prod.tls, UpstreamTls::Disable));
    assert_eq!(prod.roles["readonly"].user, "app_ro");
    assert_eq!(
        prod.roles["readonly"].password.expose(),
        "prod-ro-secret-value"
    );
    // Defaults: port 5432, database = target name.
    let analytics = &p.targets["analytics"];
    assert_eq!(
        (analytics.port, analytics.database.as_str()),
        (5432, "analytics")
    );

    assert_eq!(
        config.catalog.targets["prod"].iter().collect::<Vec<_>>(),
        ["readonly", "readwrite"]
    );
    assert!(config.catalog.identities.contains("bob"));
    assert!(matches!(
        &config.store.backend,
        StoreSettings::Sqlite(p) if *p == examples().join("grants.db")
    ));
    assert_eq!(config.audit.path, examples().join("audit.jsonl"));
    assert_eq!(config.audit.durability, Durability::Write);
    assert_eq!(config.admin.listen, "127.0.0.1:6433".parse().unwrap());
    assert_eq!(config.admin.token.expose(), ADMIN_TOKEN);
    assert_eq!(config.log_format, LogFormat::Text);
    assert!(config.path.is_absolute());
    assert_eq!(config.rules.names(), ["prod-read", "prod-write"]);
    assert_eq!(config.rules.groups_of("bob"), ["dbas"]);
    assert_eq!(
        config.notifications.expiring_soon,
        std::time::Duration::from_secs(600)
    );
}

#[test]
fn minimal_example_loads() {
    set_example_env();
    let config = config::load(&examples().join("minimal.yaml")).unwrap();
    let app = &config.proxy.targets["app"];
    assert_eq!((app.port, app.database.as_str()), (5432, "app"));
    assert_eq!(app.roles["readonly"].password.expose(), "app-secret-value");
}

/// examples/tls.yaml, copied next to freshly generated certificates and secret files.
#[test]
fn tls_example_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tls.yaml");
    std::fs::copy(examples().join("tls.yaml"), &path).unwrap();
    let server = rcgen::generate_simple_self_signed(vec!["proxy.example".to_owned()]).unwrap();
    std::fs::write(dir.path().join("server.crt"), server.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("server.key"),
        server.signing_key.serialize_pem(),
    )
    .unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["db.internal".to_owned()]).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/prod_ro"), "file-password\r\n").unwrap();
    std::fs::write(
        dir.path().join("secrets/admin_token"),
        format!("{ADMIN_TOKEN}\n"),
    )
    .unwrap();

    let config = config::load(&path).unwrap();
    let tls = config.proxy.tls.as_ref().expect("client TLS configured");
    assert_eq!(tls.alpn_protocols, [b"postgresql".to_vec()]);
    assert!(config.proxy.tls_required);
    let prod = &config.proxy.targets["prod"];
    match &prod.tls {
        UpstreamTls::VerifyFull { server_name, .. } => assert_eq!(server_name, "db.internal"),
        other => panic!("expected verify-full, got {other:?}"),
    }
    assert_eq!(prod.roles["readonly"].password.expose(), "file-password");
    assert_eq!(config.admin.token.expose(), ADMIN_TOKEN);
    assert_eq!(config.audit.durability, Durability::Fsync);
    assert_eq!(config.log_format, LogFormat::Json);

    // A key that does not belong to the certificate.
    std::fs::write(
        dir.path().join("server.key"),
        ca.signing_key.serialize_pem(),
    )
    .unwrap();
    let err = config::load(&path).unwrap_err();
    assert_eq!(err.field_path(), Some("tls"), "{err}");
}

#[test]
fn bad_verifier_names_field() {
    let err = load_err(&base_yaml().replace(VERIFIER, "SCRAM-SHA-256$not-a-verifier"));
    assert_names(
        &err,
        "identities.alice.scram_verifier",
        "not a SCRAM-SHA-256 verifier",
    );
    assert!(err.to_string().contains("jitgate hash-password"), "{err}");
    assert!(
        !err.to_string().contains("not-a-verifier"),
        "no verifier text: {err}"
    );
}

#[test]
fn unset_env_var_names_field() {
    let err = load_err(&base_yaml().replace("CFGTEST_RO_PASSWORD", "CFGTEST_NEVER_SET_VAR"));
    assert_names(
        &err,
        "targets.prod.roles.readonly.password_env",
        "environment variable CFGTEST_NEVER_SET_VAR is not set",
    );
}

#[test]
fn unknown_field_names_field_and_line() {
    let err = load_err(&base_yaml().replace("    port: 5432", "    prot: 5432"));
    let text = err.to_string();
    assert!(text.contains("targets.prod"), "{text}");
    assert!(text.contains("unknown field `prot`"), "{text}");
    assert!(text.contains("line 9"), "line of the typo: {text}");
}

#[test]
fn bad_duration_names_field() {
    let err = load_err(&base_yaml().replace("login_timeout: 10s", "login_timeout: 10 parsecs"));
    assert_names(&err, "login_timeout", "invalid duration");
    let err = load_err(&base_yaml().replace("login_timeout: 10s", "login_timeout: 10"));
    assert_names(&err, "login_timeout", "invalid duration");
}

#[test]
fn bad_listen_address_names_field() {
    let err = load_err(&base_yaml().replace("listen: 127.0.0.1:6432", "listen: localhost"));
    assert_names(&err, "listen", "not a socket address");
    let err = load_err(&base_yaml().replace("listen: 127.0.0.1:6433", "listen: 127.0.0.1:99999"));
    assert_names(&err, "admin.listen", "not a socket address");
}

#[test]
fn missing_config_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.yaml");
    let err = config::load(&path).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("nope.yaml"), "{text}");
    assert!(text.contains("cannot read config file"), "{text}");
}

#[test]
fn missing_referenced_files_name_field() {
    let err = load_err(&base_yaml().replace(
        "password_env: CFGTEST_RO_PASSWORD",
        "password_file: secrets/missing",
    ));
    assert_names(
        &err,
        "targets.prod.roles.readonly.password_file",
        "secrets/missing",
    );
    let err = load_err(&format!(
        "tls: {{ cert_file: missing.crt, key_file: missing.key }}\n{}",
        base_yaml()
    ));
    assert_names(&err, "tls.cert_file", "missing.crt");
}

#[test]
fn bad_names_and_shapes_name_field() {
    let err = load_err(&base_yaml().replace("  alice:", "  \"al ice\":"));
    assert_names(&err, "identities.al ice", "contains ' '");
    let err = load_err(&base_yaml().replace("tls: { mode: disable }", "tls: { mode: require }"));
    assert!(err.to_string().contains("targets.prod.tls.mode"), "{err}");
    let err = load_err(&base_yaml().replace(
        "password_env: CFGTEST_RO_PASSWORD",
        "password_env: CFGTEST_RO_PASSWORD\n        password_file: x",
    ));
    assert_names(&err, "targets.prod.roles.readonly", "not both");
}

#[test]
fn short_admin_token_is_refused_without_showing_it() {
    std::env::set_var("CFGTEST_SHORT_TOKEN", "short-tok");
    let err = load_err(&base_yaml().replace("CFGTEST_ADMIN_TOKEN", "CFGTEST_SHORT_TOKEN"));
    assert_names(&err, "admin.token_env", "shorter than 16");
    assert!(!err.to_string().contains("short-tok"), "{err}");
}

#[test]
fn secrets_never_in_debug_output() {
    set_example_env();
    let config = config::load(&examples().join("jitgate.yaml")).unwrap();
    let debug = format!("{config:?}");
    for secret in [
        "prod-ro-secret-value",
        "analytics-secret-value",
        ADMIN_TOKEN,
    ] {
        assert!(!debug.contains(secret), "{secret} leaked into Debug");
    }
}

#[test]
fn client_loaders_need_only_their_section() {
    set_example_env();
    // The role's env var is unset: serve could not start, but the CLI can still talk to it.
    let (dir, path) =
        write_config(&base_yaml().replace("CFGTEST_RO_PASSWORD", "CFGTEST_NEVER_SET_VAR"));
    assert!(config::load(&path).is_err());
    let admin = config::load_admin(&path).unwrap();
    assert_eq!(admin.listen, "127.0.0.1:6433".parse().unwrap());
    assert_eq!(admin.token.expose(), ADMIN_TOKEN);
    assert_eq!(
        config::load_audit_path(&path).unwrap(),
        dir.path().join("audit.jsonl")
    );
    // A typo anywhere is still reported.
    let (_dir, path) = write_config(&base_yaml().replace("    port: 5432", "    prot: 5432"));
    assert!(config::load_admin(&path).is_err());
}

#[test]
fn workflow_sections_name_the_field_that_is_wrong() {
    // Store: exactly one backend.
    let both = base_yaml().replace(
        "store: { sqlite: grants.db }",
        "store: { sqlite: grants.db, postgres: { url_env: CFGTEST_STORE_URL, tls: { mode: disable } } }",
    );
    assert_names(&load_err(&both), "store", "not both");
    let neither = base_yaml().replace("store: { sqlite: grants.db }", "store: {}");
    assert_names(&load_err(&neither), "store", "missing grant store");
    let unset = base_yaml().replace(
        "store: { sqlite: grants.db }",
        "store: { postgres: { url_env: CFGTEST_UNSET_STORE_URL, tls: { mode: disable } } }",
    );
    assert_names(
        &load_err(&unset),
        "store.postgres.url_env",
        "CFGTEST_UNSET_STORE_URL",
    );
    // TLS to the store is a choice the operator makes: no tls is an error, and a CA
    // without verification is refused.
    let no_tls = base_yaml().replace(
        "store: { sqlite: grants.db }",
        "store: { postgres: { url_env: CFGTEST_UNSET_STORE_URL } }",
    );
    let err = load_err(&no_tls).to_string();
    assert!(err.contains("tls"), "{err}");
    let ca_without_verify = base_yaml().replace(
        "store: { sqlite: grants.db }",
        "store: { postgres: { url_env: PATH, tls: { mode: disable, ca_file: ca.pem } } }",
    );
    assert_names(
        &load_err(&ca_without_verify),
        "store.postgres.tls.ca_file",
        "only meaningful with mode: verify-full",
    );
    let weak = base_yaml().replace(
        "store: { sqlite: grants.db }",
        "store: { postgres: { url_env: PATH, tls: { mode: require } } }",
    );
    let err = load_err(&weak).to_string();
    assert!(err.contains("unknown variant `require`"), "{err}");

    // Policy: validated against what the config defines, with the rule's path.
    let unknown_role = format!(
        "{}policy:\n  rules:\n    - name: r\n      requesters: {{ identities: [alice] }}\n      targets: [prod]\n      roles: [superuser]\n      max_duration: 1h\n",
        base_yaml()
    );
    let err = load_err(&unknown_role);
    let field = err.field_path().unwrap_or_default().to_owned();
    assert!(field.starts_with("policy.rules[0].roles"), "{err}");
    let bad_regex = format!(
        "{}policy:\n  rules:\n    - name: r\n      requesters: {{ identities: [alice] }}\n      targets: [prod]\n      roles: [readonly]\n      max_duration: 1h\n      ticket: '(INC'\n",
        base_yaml()
    );
    assert_names(&load_err(&bad_regex), "policy.rules[0].ticket", "");

    // Webhooks: known events, a real secret, an http(s) URL.
    let hook = |body: &str| {
        format!(
            "{}notifications:\n  webhooks:\n    - name: chat\n{body}",
            base_yaml()
        )
    };
    let bad_url = hook("      url: ftp://x\n      secret_env: CFGTEST_ADMIN_TOKEN\n");
    assert_names(&load_err(&bad_url), "notifications.webhooks[0].url", "http");
    let bad_event = hook(
        "      url: https://x.example/h\n      secret_env: CFGTEST_ADMIN_TOKEN\n      events: [grant.exploded]\n",
    );
    assert_names(
        &load_err(&bad_event),
        "notifications.webhooks[0].events[0]",
        "unknown event",
    );
    let ok = hook("      url: https://x.example/h\n      secret_env: CFGTEST_ADMIN_TOKEN\n");
    set_example_env();
    let (_dir, path) = write_config(&ok);
    let config = config::load(&path).unwrap();
    assert_eq!(config.notifications.webhooks.len(), 1);
    assert!(
        !format!("{config:?}").contains(ADMIN_TOKEN),
        "the webhook secret is not in Debug output"
    );
}
