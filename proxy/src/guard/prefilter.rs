//! The cheap first look: does a SQL text contain a word that every refused statement
//! must contain? Almost every statement does not, and is let through without parsing.
//!
//! Sound because SQL keywords cannot be escaped or quoted: a quoted word is an
//! identifier, never a keyword, and comments only separate tokens, so `ALTER ROLE`,
//! `ALTER SYSTEM`, `SET SESSION AUTHORIZATION`, `GRANT`/`REVOKE`, `REASSIGN`/`DROP OWNED`,
//! `ALTER DATABASE` and `CREATE/ALTER/DROP USER|GROUP` always hold their keyword's ASCII
//! letters literally (keywords match ASCII case-insensitively, as here). A keyword is a
//! whole token: the lexer reads identifier characters (letters, digits, `_`, `$`, any
//! byte ≥ 0x80) as one word, so `user_id`, `roles` or `granted` are never the keyword and
//! need no parse. Only *what follows* is checked strictly; before the word a digit is
//! not taken as part of it (conservative: older servers lex `1role` as `1 role`).
//! `set_config` and `session_authorization` are identifiers, and identifiers *can* be
//! spelled with escapes — but only as `U&"…"`, so that opening is a trigger too. Setting
//! names inside `set_config(…)` need no trigger: the function name decides, and the
//! parser reads the constant.
//!
//! `GROUP` alone (every `GROUP BY`) is not worth a parse: role statements spelled with
//! it (`CREATE GROUP`, `ALTER GROUP`, `DROP GROUP`) also hold CREATE, ALTER or DROP.

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

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

fn automaton() -> &'static AhoCorasick {
    static AC: OnceLock<AhoCorasick> = OnceLock::new();
    AC.get_or_init(|| {
        let patterns = STRONG
            .iter()
            .chain([&ESCAPED_IDENTIFIER, &GROUP])
            .chain(VERBS.iter());
        // Built from constant patterns: cannot fail.
        #[allow(clippy::expect_used)]
        AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(patterns)
            .expect("constant patterns")
    })
}

/// A byte the lexer reads as part of an identifier or keyword (`ident_cont`).
fn word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Whether `sql` must be parsed to be decided.
pub fn may_change_roles(sql: &[u8]) -> bool {
    let (mut group, mut verb) = (false, false);
    for m in automaton().find_overlapping_iter(sql) {
        let id = m.pattern().as_usize();
        if id == STRONG.len() {
            return true; // U&"
        }
        let before = m.start().checked_sub(1).map(|i| sql[i]);
        let after = sql.get(m.end()).copied();
        let whole = !before.is_some_and(|b| word_byte(b) && !b.is_ascii_digit())
            && !after.is_some_and(word_byte);
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
