//! The client's startup parameters: who it is, which target, which role, and which
//! parameters may travel upstream.
//!
//! Only allow-listed parameters reach the database. Settings that would change the
//! session's identity or name resolution behind the audit's back (`role`,
//! `session_authorization`, `search_path`), replication connections, and any `options`
//! other than allow-listed `-c name=value` pairs are refused with a clear error; unknown
//! parameters are dropped. The role a grant maps to can be picked with the documented
//! option `-c jitgate.role=<role>` (e.g. `PGOPTIONS='-c jitgate.role=readonly'`).

use crate::protocol::{sqlstate, PgError};

/// The option that picks among several granted roles.
pub const ROLE_OPTION: &str = "jitgate.role";

/// Run-time parameters a client may set at startup (names compared case-insensitively).
const FORWARDED: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "extra_float_digits",
    "intervalstyle",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "bytea_output",
    "standard_conforming_strings",
];

/// Parameters refused outright: they change identity or name resolution.
const FORBIDDEN: &[&str] = &["role", "session_authorization", "search_path"];

/// What the startup packet asks for, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientStartup {
    pub identity: String,
    pub target: String,
    /// Role picked with `-c jitgate.role=…`; `None` = the only granted one.
    pub role: Option<String>,
    pub application_name: Option<String>,
    /// Parameters to send upstream (never `user`/`database`).
    pub forward: Vec<(String, String)>,
}

fn refuse(message: String) -> PgError {
    PgError::fatal(sqlstate::INSUFFICIENT_PRIVILEGE, message)
}

/// Interprets the startup parameters; `Err` is the FATAL error to send the client.
pub fn interpret(params: &[(String, String)]) -> Result<ClientStartup, PgError> {
    let mut identity = None;
    let mut database = None;
    let mut role = None;
    let mut application_name = None;
    let mut forward = Vec::new();
    for (name, value) in params {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "user" => identity = Some(value.clone()),
            "database" => database = Some(value.clone()),
            "replication" => {
                if !matches!(
                    value.to_ascii_lowercase().as_str(),
                    "false" | "off" | "no" | "0"
                ) {
                    return Err(refuse(
                        "replication connections are not allowed through jitgate".into(),
                    ));
                }
            }
            "options" => {
                for (opt, val) in parse_options(value)? {
                    let opt_lower = opt.to_ascii_lowercase();
                    if opt_lower == ROLE_OPTION {
                        role = Some(val);
                    } else if FORWARDED.contains(&opt_lower.as_str()) {
                        forward.push((opt, val));
                    } else {
                        return Err(refuse(format!(
                            "startup option \"-c {opt}\" is not allowed through jitgate"
                        ))
                        .with_hint("set it with SET after connecting, so that it is audited"));
                    }
                }
            }
            _ if FORBIDDEN.contains(&lower.as_str()) => {
                return Err(refuse(format!(
                    "startup parameter \"{name}\" is not allowed through jitgate"
                ))
                .with_hint("set it with SET after connecting, so that it is audited"));
            }
            _ if FORWARDED.contains(&lower.as_str()) => {
                if lower == "application_name" {
                    application_name = Some(value.clone());
                }
                forward.push((name.clone(), value.clone()));
            }
            _ => {
                tracing::debug!(parameter = %name, "dropping startup parameter not on the allow-list")
            }
        }
    }
    let identity = identity.filter(|u| !u.is_empty()).ok_or_else(|| {
        PgError::fatal(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            "no user name specified in the startup packet",
        )
    })?;
    // Postgres's rule: the database defaults to the user name.
    let target = database
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| identity.clone());
    // Options are rebuilt so that what goes upstream is exactly what was checked.
    let forward = merge_options(forward);
    Ok(ClientStartup {
        identity,
        target,
        role,
        application_name,
        forward,
    })
}

/// Settings from `options` travel upstream as startup parameters of their own (Postgres
/// treats both the same way), so no `options` string is ever forwarded.
fn merge_options(forward: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(forward.len());
    for (name, value) in forward {
        if let Some(existing) = out.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            existing.1 = value;
        } else {
            out.push((name, value));
        }
    }
    out
}

/// Splits a libpq `options` string into `-c name=value` / `--name=value` pairs, honouring
/// backslash escapes of spaces like Postgres's `pg_split_opts`.
fn parse_options(options: &str) -> Result<Vec<(String, String)>, PgError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut out = Vec::new();
    let mut iter = words.into_iter();
    while let Some(w) = iter.next() {
        let setting = if w == "-c" {
            iter.next()
        } else if let Some(rest) = w.strip_prefix("-c") {
            Some(rest.to_owned())
        } else {
            w.strip_prefix("--").map(str::to_owned)
        };
        let bad = || {
            refuse(format!(
                "startup option \"{w}\" is not allowed through jitgate; only -c name=value settings are"
            ))
        };
        let setting = setting.ok_or_else(bad)?;
        let (name, value) = setting.split_once('=').ok_or_else(bad)?;
        out.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn identity_target_and_role_come_from_the_startup_packet() {
        let s = interpret(&p(&[
            ("user", "alice"),
            ("database", "prod"),
            ("application_name", "psql"),
            ("options", "-c jitgate.role=readonly --statement-timeout=5s"),
            ("client_encoding", "UTF8"),
        ]))
        .unwrap();
        assert_eq!(s.identity, "alice");
        assert_eq!(s.target, "prod");
        assert_eq!(s.role.as_deref(), Some("readonly"));
        assert_eq!(s.application_name.as_deref(), Some("psql"));
        assert_eq!(
            s.forward,
            p(&[
                ("application_name", "psql"),
                ("statement_timeout", "5s"),
                ("client_encoding", "UTF8")
            ])
        );
    }

    #[test]
    fn database_defaults_to_user_and_unknown_params_are_dropped() {
        let s = interpret(&p(&[("user", "bob"), ("some_driver_flag", "1")])).unwrap();
        assert_eq!(s.target, "bob");
        assert!(s.forward.is_empty());
    }

    #[test]
    fn identity_changing_settings_are_refused() {
        for params in [
            p(&[("user", "a"), ("role", "postgres")]),
            p(&[("user", "a"), ("search_path", "evil")]),
            p(&[("user", "a"), ("options", "-c role=postgres")]),
            p(&[
                ("user", "a"),
                ("options", "-csession_authorization=postgres"),
            ]),
            p(&[("user", "a"), ("options", "-D /tmp")]),
            p(&[("user", "a"), ("replication", "database")]),
        ] {
            let err = interpret(&params).unwrap_err();
            assert_eq!(err.code, "42501", "{params:?}");
            assert!(err.message.contains("not allowed"), "{}", err.message);
        }
        assert!(interpret(&p(&[("user", "a"), ("replication", "false")])).is_ok());
    }

    #[test]
    fn missing_user_is_refused() {
        assert_eq!(
            interpret(&p(&[("database", "x")])).unwrap_err().code,
            "28000"
        );
    }

    #[test]
    fn escaped_spaces_in_options() {
        let s = interpret(&p(&[
            ("user", "a"),
            ("options", r"-c application_name=my\ app"),
        ]))
        .unwrap();
        assert_eq!(s.forward, p(&[("application_name", "my app")]));
    }
}
