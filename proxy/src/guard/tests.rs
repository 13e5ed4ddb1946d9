use super::*;

fn refused(sql: &str) -> bool {
    check_sql(sql.as_bytes()).is_some()
}

#[test]
fn role_and_server_changes_are_refused() {
    for sql in [
        "ALTER ROLE CURRENT_USER PASSWORD 'x'",
        "alter user app password 'SCRAM-SHA-256$4096:abc'",
        "ALTER USER app WITH ENCRYPTED PASSWORD 'md5abc'",
        "ALTER ROLE app RENAME TO other",
        "ALTER ROLE app SET search_path = evil",
        "ALTER ROLE app RESET ALL",
        "ALTER ROLE app IN DATABASE db SET work_mem = '1GB'",
        "ALTER ROLE app VALID UNTIL 'infinity'",
        "CREATE ROLE backdoor LOGIN PASSWORD 'x'",
        "CREATE USER backdoor",
        "CREATE GROUP g",
        "ALTER GROUP g ADD USER app",
        "DROP ROLE other",
        "DROP USER IF EXISTS other",
        "GRANT pg_read_all_data TO app",
        "REVOKE app FROM other",
        "ALTER SYSTEM SET log_statement = 'none'",
        "ALTER SYSTEM RESET ALL",
        "SET SESSION AUTHORIZATION other",
        "RESET SESSION AUTHORIZATION",
        "SET session_authorization = 'other'",
        "SELECT set_config('role', 'other', false)",
        "SELECT pg_catalog.set_config('Session_Authorization', 'x', false)",
        "SELECT set_config('ro' || 'le', 'other', false)",
        "SELECT set_config($1, 'other', false)",
        "SELECT set_config('role'::text, 'x', false)",
        "SELECT U&\"\\0073et_config\"('role', 'x', false)",
        "WITH c AS (SELECT set_config('role', 'x', false)) SELECT * FROM c",
        "EXPLAIN ANALYZE SELECT set_config('role', 'x', false)",
        "PREPARE p AS SELECT set_config('role', 'x', false)",
        "SELECT 1; ALTER ROLE app PASSWORD 'x'; SELECT 2",
        "REASSIGN OWNED BY CURRENT_USER TO other",
        "DROP OWNED BY CURRENT_USER",
        "ALTER DATABASE db SET log_statement = 'none'",
        "ALTER DATABASE db RESET ALL",
        "ALTER DATABASE db CONNECTION LIMIT 0",
        "ALTER DATABASE db RENAME TO x",
        "ALTER DATABASE db OWNER TO other",
        "AlTeR/* c */RoLe app PASSWORD 'x'",
        // Fails closed: hits the prefilter and cannot be parsed.
        "ALTER ROLE app PASSWORD",
    ] {
        assert!(refused(sql), "{sql}");
    }
}

#[test]
fn harmless_statements_pass() {
    for sql in [
        "SELECT 'role'",
        "SELECT user_id, role FROM accounts GROUP BY user_id, role",
        "SELECT current_user, session_user",
        "SELECT set_config('search_path', 'public', false)",
        "SELECT set_config('application_name', $1, false)",
        "SET ROLE other",
        "GRANT SELECT ON t TO other",
        "SELECT current_database()",
        "SELECT count(*) FROM t GROUP BY a",
        "CREATE TABLE t (user_id int, role text)",
        "SELECT 'ALTER ROLE x PASSWORD ''y'''",
    ] {
        assert!(!refused(sql), "{sql}");
    }
}

#[test]
fn pgbench_statements_are_not_even_parsed() {
    for sql in [
        "BEGIN;",
        "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
        "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
        "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2;",
        "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2;",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);",
        "END;",
        "SELECT count(*) FROM t GROUP BY a",
        // Not the keywords: parts of longer words.
        "SELECT user_id, roles, granted, databases, current_user FROM users",
        "SELECT \"role$x\" FROM t",
    ] {
        assert!(!prefilter::may_change_roles(sql.as_bytes()), "{sql}");
    }
    for sql in [
        "create group g",
        "ALTER/**/ROLE x",
        "alter\nuser x",
        "SET session_authorization = x",
        "SELECT \"set_config\"('role', 'x', false)",
        "SELECT pg_catalog.set_config('role', 'x', false)",
        "SELECT U&\"\\0073et_config\"('role', 'x', false)",
        "select 1;grant r to u",
        "SELECT 1role",
    ] {
        assert!(prefilter::may_change_roles(sql.as_bytes()), "{sql}");
    }
}

#[test]
fn fast_path_set_config_is_refused_for_guarded_settings() {
    let arg = |s: &str| Some(Bytes::copy_from_slice(s.as_bytes()));
    assert!(check_function_call(SET_CONFIG_OID, &[arg("role"), arg("x"), arg("f")]).is_some());
    assert!(check_function_call(SET_CONFIG_OID, &[arg("SESSION_AUTHORIZATION")]).is_some());
    assert!(check_function_call(SET_CONFIG_OID, &[None]).is_some());
    assert!(check_function_call(SET_CONFIG_OID, &[arg("work_mem"), arg("1MB")]).is_none());
    assert!(check_function_call(1, &[arg("role")]).is_none());
}

#[test]
fn passwords_are_masked() {
    let masked = mask_passwords(b"ALTER USER app PASSWORD 'SCRAM-SHA-256$4096:s$k:v'").unwrap();
    assert_eq!(masked, b"ALTER USER app PASSWORD '<redacted>'");
    let masked =
        mask_passwords(b"CREATE ROLE a LOGIN ENCRYPTED PASSWORD 'it''s' VALID UNTIL 'x'").unwrap();
    assert_eq!(
        masked,
        b"CREATE ROLE a LOGIN ENCRYPTED PASSWORD '<redacted>' VALID UNTIL 'x'"
    );
    assert!(mask_passwords(b"ALTER ROLE a RENAME TO b").is_none());
    assert!(mask_passwords(b"SELECT 'PASSWORD ''x'''").is_none());
}

#[test]
fn the_substitute_parses_and_holds_no_client_text() {
    let r = Refusal::role_change("ALTER ROLE");
    let sql = substitute::refusal_sql(r);
    assert!(pg_query::parse(&sql, 0).is_ok(), "{sql}");
    assert!(check_sql(sql.as_bytes()).is_none());
    assert_eq!(tree::max_param(b"SELECT set_config($1, $3, false)"), 3);
}
