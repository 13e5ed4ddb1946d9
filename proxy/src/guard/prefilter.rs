//! The cheap first look: does a SQL text contain a word that every refused statement
//! must contain? Almost every statement does not, and is let through without parsing.
//!
//! Sound because SQL keywords cannot be escaped or quoted: a quoted word is an
//! identifier, never a keyword, and comments only separate tokens, so `ALTER ROLE`,
//! `ALTER SYSTEM`, `SET SESSION AUTHORIZATION`, `GRANT`/`REVOKE`, `REASSIGN`/`DROP OWNED`,
//! `ALTER DATABASE` and `CREATE/ALTER/DROP USER|GROUP` always hold their keyword's ASCII
//! letters literally (keywords match ASCII case-insensitively, as here). `set_config` is
//! an identifier, and identifiers *can* be spelled with escapes — but only as `U&"…"`,
//! so that opening is a trigger too. Setting names inside `set_config(…)` need no
//! trigger: the function name decides, and the parser reads the constant.
//!
//! `GROUP` alone (every `GROUP BY`) is not worth a parse: role statements spelled with
//! it (`CREATE GROUP`, `ALTER GROUP`, `DROP GROUP`) also hold CREATE, ALTER or DROP.

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// Any of these: parse.
const STRONG: [&str; 10] = [
    "role",
    "user",
    "system",
    "authorization",
    "set_config",
    "grant",
    "revoke",
    "owned",
    "database",
    "u&\"",
];
/// These only together with one of [`VERBS`].
const GROUP: &str = "group";
const VERBS: [&str; 3] = ["create", "alter", "drop"];

fn automaton() -> &'static AhoCorasick {
    static AC: OnceLock<AhoCorasick> = OnceLock::new();
    AC.get_or_init(|| {
        let patterns = STRONG
            .iter()
            .chain(std::iter::once(&GROUP))
            .chain(VERBS.iter());
        // Built from constant patterns: cannot fail.
        #[allow(clippy::expect_used)]
        AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(patterns)
            .expect("constant patterns")
    })
}

/// Whether `sql` must be parsed to be decided.
pub fn may_change_roles(sql: &[u8]) -> bool {
    let mut group = false;
    let mut verb = false;
    for m in automaton().find_iter(sql) {
        let id = m.pattern().as_usize();
        if id < STRONG.len() {
            return true;
        }
        if id == STRONG.len() {
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
