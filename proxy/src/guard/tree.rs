//! The second look: PostgreSQL's own parser (libpg_query, through `pg_query`), and a walk
//! over every node of the tree, so a refused statement is found wherever it is —
//! one of several statements of a simple Query, inside `EXPLAIN`, `PREPARE`,
//! `CREATE RULE`, a CTE, a `BEGIN ATOMIC` function body, or a function argument.
//!
//! Refused (the default set, `guard.role_changes: refuse`):
//! - `CREATE`/`ALTER`/`DROP ROLE|USER|GROUP` (incl. `PASSWORD`, `VALID UNTIL`,
//!   `ALTER GROUP … ADD USER`), `ALTER ROLE … RENAME`, `ALTER ROLE … [IN DATABASE] SET|RESET`;
//! - role membership: `GRANT role TO …`, `REVOKE role FROM …`;
//! - `ALTER SYSTEM`;
//! - `SET`/`RESET SESSION AUTHORIZATION` (any `SET session_authorization`);
//! - `set_config('role' | 'session_authorization', …)`, and any `set_config` whose
//!   setting name is not a string constant (it cannot be decided);
//! - `REASSIGN OWNED`: hands the shared role's objects to another role, which keeps them
//!   after the grant; `DROP OWNED`: also revokes every privilege granted *to* the shared
//!   role, changing it for every other identity that uses it;
//! - `ALTER DATABASE` (`SET`/`RESET`, options such as `CONNECTION LIMIT`, `RENAME`,
//!   `OWNER TO`): settings and limits carried into other people's sessions.
//!
//! Not refused: `SET ROLE` (the server's own membership check decides; it changes only
//! this session, and the audit flags it as a `setting_change`), `GRANT`/`REVOKE` of
//! privileges on objects (ordinary DDL the grant's role may be meant to do), user
//! mappings.
//!
//! The tree is walked through its serde form: every node kind is seen without a list of
//! which fields of which node hold children — a list that would silently miss a new one.

use pg_query::protobuf::ObjectType;
use serde_json::Value;

use super::{guarded_setting, Refusal};

/// Parses `sql` and looks for a refused statement anywhere in it.
pub fn check(sql: &[u8]) -> Option<Refusal> {
    const UNPARSABLE: Refusal = Refusal::role_change(
        "a statement jitgate could not parse although it may change a role (the server would very likely reject it too)",
    );
    let Ok(text) = std::str::from_utf8(sql) else {
        return Some(Refusal::role_change(
            "a statement that is not UTF-8 and may change a role (jitgate could not parse it)",
        ));
    };
    let Ok(parsed) = pg_query::parse(text, 0) else {
        return Some(UNPARSABLE);
    };
    let Ok(tree) = serde_json::to_value(&parsed.protobuf) else {
        return Some(UNPARSABLE);
    };
    find(&tree)
}

/// The highest `$n` a SQL text refers to (0: none, or it cannot be parsed).
pub fn max_param(sql: &[u8]) -> usize {
    let Some(tree) = std::str::from_utf8(sql)
        .ok()
        .and_then(|t| pg_query::parse(t, 0).ok())
        .and_then(|p| serde_json::to_value(&p.protobuf).ok())
    else {
        return 0;
    };
    let mut max = 0;
    walk(&tree, &mut |key, node| {
        if key == "ParamRef" {
            let n = node.get("number").and_then(Value::as_u64).unwrap_or(0);
            max = max.max(usize::try_from(n).unwrap_or(0));
        }
        false
    });
    max
}

/// Visits every object entry (`key`, value) depth first; stops when `f` says so.
fn walk(v: &Value, f: &mut impl FnMut(&str, &Value) -> bool) -> bool {
    match v {
        Value::Object(map) => map.iter().any(|(k, child)| f(k, child) || walk(child, f)),
        Value::Array(items) => items.iter().any(|child| walk(child, f)),
        _ => false,
    }
}

fn find(tree: &Value) -> Option<Refusal> {
    let mut found = None;
    walk(tree, &mut |key, node| {
        found = refused(key, node).map(Refusal::role_change);
        found.is_some()
    });
    found
}

fn int(node: &Value, field: &str) -> i64 {
    node.get(field).and_then(Value::as_i64).unwrap_or(0)
}

/// The node kinds (serde names of `pg_query::protobuf::node::Node` variants) refused.
fn refused(key: &str, node: &Value) -> Option<&'static str> {
    let role = i64::from(ObjectType::ObjectRole as i32);
    let database = i64::from(ObjectType::ObjectDatabase as i32);
    Some(match key {
        "CreateRoleStmt" => "CREATE ROLE/USER/GROUP",
        "AlterRoleStmt" => "ALTER ROLE/USER/GROUP",
        "AlterRoleSetStmt" => "ALTER ROLE … SET/RESET",
        "DropRoleStmt" => "DROP ROLE/USER/GROUP",
        "GrantRoleStmt" => "GRANT/REVOKE of role membership",
        "AlterSystemStmt" => "ALTER SYSTEM",
        "ReassignOwnedStmt" => "REASSIGN OWNED",
        "DropOwnedStmt" => "DROP OWNED",
        "AlterDatabaseStmt" | "AlterDatabaseSetStmt" => "ALTER DATABASE",
        "RenameStmt" if int(node, "rename_type") == role => "ALTER ROLE … RENAME",
        "RenameStmt" if int(node, "rename_type") == database => "ALTER DATABASE … RENAME",
        "AlterOwnerStmt" if int(node, "object_type") == database => "ALTER DATABASE … OWNER",
        "VariableSetStmt"
            if node
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case("session_authorization")) =>
        {
            "SET/RESET SESSION AUTHORIZATION"
        }
        "FuncCall" if is_set_config(node) => set_config(node)?,
        _ => return None,
    })
}

/// A call of a function named `set_config`, in any schema (`pg_catalog.set_config`, or a
/// function of that name elsewhere: not told apart, so refused alike).
fn is_set_config(node: &Value) -> bool {
    node.get("funcname")
        .and_then(Value::as_array)
        .and_then(|parts| parts.last())
        .and_then(string_node)
        .is_some_and(|name| name.eq_ignore_ascii_case("set_config"))
}

/// A `set_config` call: refused when its first argument is a guarded setting or not a
/// string constant.
fn set_config(node: &Value) -> Option<&'static str> {
    let first = node
        .get("args")
        .and_then(Value::as_array)
        .and_then(|args| args.first());
    match first.and_then(constant_text) {
        Some(name) if !guarded_setting(name) => None,
        Some(_) => Some("set_config of role or session_authorization"),
        None => Some(
            "set_config with a setting name that is not a string constant (it cannot be decided)",
        ),
    }
}

/// `{"node":{"String":{"sval":…}}}` → the string.
fn string_node(v: &Value) -> Option<&str> {
    v.get("node")?.get("String")?.get("sval")?.as_str()
}

/// A string constant, possibly cast (`'role'::text`).
fn constant_text(v: &Value) -> Option<&str> {
    let node = v.get("node")?;
    if let Some(c) = node.get("AConst") {
        return c.get("val")?.get("Sval")?.get("sval")?.as_str();
    }
    constant_text(node.get("TypeCast")?.get("arg")?)
}
