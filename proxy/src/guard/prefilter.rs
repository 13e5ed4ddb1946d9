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

/// The words looked for, by index: first the strong ones (any of them as a word:
/// parse), then `U&"` (an identifier spelled with Unicode escapes, which may be
/// `set_config`; not a word: anywhere), then `GROUP`, then the verbs it needs.
pub const PATTERNS: [&str; 15] = [
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
    "u&\"",
    "group",
    "create",
    "alter",
    "drop",
];
/// `PATTERNS[..STRONG]` are the strong words.
const STRONG: usize = 10;
const ESCAPED_IDENTIFIER: usize = 10;
/// `GROUP` counts only together with one of the verbs after it.
const GROUP: usize = 11;

/// What a pass over a text found of [`PATTERNS`], fed match by match (in order).
#[derive(Debug, Default)]
pub struct RoleWords {
    group: bool,
    verb: bool,
    parse: bool,
}

impl RoleWords {
    /// A match of `PATTERNS[id]`; `whole`: it stands as a whole word.
    pub fn see(&mut self, id: usize, whole: bool) {
        if id == ESCAPED_IDENTIFIER {
            self.parse = true;
        } else if whole {
            if id < STRONG {
                self.parse = true;
            } else if id == GROUP {
                self.group = true;
            } else {
                self.verb = true;
            }
            self.parse |= self.group && self.verb;
        }
    }

    /// Whether the text must be parsed to be decided.
    pub fn must_parse(&self) -> bool {
        self.parse
    }
}

fn words() -> &'static Words {
    static WORDS: OnceLock<Words> = OnceLock::new();
    WORDS.get_or_init(|| Words::new(&PATTERNS))
}

/// Whether `sql` must be parsed to be decided.
pub fn may_change_roles(sql: &[u8]) -> bool {
    let mut seen = RoleWords::default();
    for (id, whole) in words().find(sql) {
        seen.see(id, whole);
        if seen.must_parse() {
            return true;
        }
    }
    false
}
