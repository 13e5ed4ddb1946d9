//! The cheap first look: does a SQL text contain a word that every refused statement
//! must contain? Almost every statement does not, and is let through without parsing.
//!
//! Sound because SQL keywords cannot be escaped or quoted (see [`super::words`]): the
//! refused statements always hold their keyword's ASCII letters literally, as whole words,
//! so `user_id`, `roles` or `granted` need no parse.
//! `set_config` and `session_authorization` are identifiers, and identifiers *can* be
//! spelled with escapes — but only as `U&"…"`, so that opening is a trigger too. Setting
//! names inside `set_config(…)` need no trigger: the function name decides, and the
//! parser reads the constant.
//!
//! `GROUP` alone (every `GROUP BY`) is not worth a parse: role statements spelled with
//! it (`CREATE GROUP`, `ALTER GROUP`, `DROP GROUP`) also hold CREATE, ALTER or DROP.

use std::sync::OnceLock;

use super::words::Words;

/// Any of these as a word: parse.
const STRONG: [&str; 10] = [
    "role",
    "user",
    "system",
    "authorization",
    "session_authorization",
    "set_config",
    "grant",
    "revoke",
    "owned",
    "database",
];
/// `U&"`: an identifier spelled with Unicode escapes (may be `set_config`).
const ESCAPED_IDENTIFIER: &str = "u&\"";
/// These only together with one of [`VERBS`].
const GROUP: &str = "group";
const VERBS: [&str; 3] = ["create", "alter", "drop"];

fn words() -> &'static Words {
    static WORDS: OnceLock<Words> = OnceLock::new();
    WORDS.get_or_init(|| {
        let patterns: Vec<&str> = STRONG
            .iter()
            .chain([&ESCAPED_IDENTIFIER, &GROUP])
            .chain(VERBS.iter())
            .copied()
            .collect();
        Words::new(&patterns)
    })
}

/// Whether `sql` must be parsed to be decided.
pub fn may_change_roles(sql: &[u8]) -> bool {
    let (mut group, mut verb) = (false, false);
    for (id, whole) in words().find(sql) {
        if id == STRONG.len() {
            return true; // U&"
        }
        if !whole {
            continue;
        }
        if id < STRONG.len() {
            return true;
        }
        if id == STRONG.len() + 1 {
            group = true;
        } else {
            verb = true;
        }
        if group && verb {
            return true;
        }
    }
    false
}
