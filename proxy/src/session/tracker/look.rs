//! The verdict on a SQL text before it is forwarded: the guard's (does it change a role
//! or the server, under the target's setting), whether jitgate can follow the names it
//! defines (`sqlnames.rs`), and which setting it changes (for the `query` event).
//!
//! One keyword pass over the text serves the guard's prefilter, the SQL names' and
//! the setting lexer (one automaton over their words); only a text with one of the
//! guard's or the names' words is parsed, and only one with `SET`, `RESET`, `DISCARD`
//! or `set_config` is lexed for its setting.
//!
//! All three are functions of the text's bytes alone, and drivers send the same text
//! again and again — every Parse of the unnamed statement under `pgbench -M extended`,
//! an ORM's statements — so the verdict on the last text that holds nothing to refuse
//! or parse is kept, and the same bytes again are decided by one comparison instead of
//! three passes over them.

use std::sync::OnceLock;

use jitgate_audit::{setting_change, SettingChange};

use super::sqlnames::{self, Parsed};
use crate::guard::prefilter::{self, RoleWords};
use crate::guard::words::Words;
use crate::guard::{self, Refusal, RoleChanges};

/// What is decided about a text.
#[derive(Debug)]
pub struct Look {
    /// Refused: the server gets a substitute that fails (`guard/substitute.rs`).
    pub refusal: Option<Refusal>,
    /// What its statements do to names, when one of them may define or drop one.
    pub names: Option<Box<[Parsed]>>,
    /// The setting it changes, for the audit.
    pub setting: Option<SettingChange>,
}

/// Texts longer than this are not kept (a copy per text would cost more than the
/// passes it saves only for texts sent again).
const KEPT_MAX: usize = 1024;

/// The last text that was neither refused nor names anything, and its setting.
#[derive(Debug, Default)]
pub struct LastLook {
    sql: Vec<u8>,
    setting: Option<SettingChange>,
    kept: bool,
}

impl LastLook {
    /// The verdict on `sql` under `role_changes` (constant for a session).
    pub fn look(&mut self, role_changes: RoleChanges, sql: &[u8]) -> Look {
        if self.kept && self.sql == sql {
            return Look {
                refusal: None,
                names: None,
                setting: self.setting,
            };
        }
        let look = look_at(role_changes, sql);
        self.kept = look.refusal.is_none() && look.names.is_none() && sql.len() <= KEPT_MAX;
        if self.kept {
            self.sql.clear();
            self.sql.extend_from_slice(sql);
            self.setting = look.setting;
        }
        look
    }
}

/// Words whose presence, as a whole word, is needed for a text to change a setting
/// the audit flags (`jitgate_audit::setting_change` looks for `SET`, `RESET` and
/// `DISCARD` starting a statement, and `set_config(` calls): without one the lexer's
/// pass is skipped.
const SETTING_WORDS: [&str; 4] = ["set", "reset", "discard", "set_config"];

/// The words of the one pass: the guard's prefilter's, the SQL names' and the setting
/// lexer's, each once, with what each means to whom.
struct FirstLook {
    words: Words,
    /// Per word: its index in `prefilter::PATTERNS`.
    role: Vec<Option<usize>>,
    /// Per word: one of `sqlnames::KEYWORDS`.
    names: Vec<bool>,
    /// Per word: one of [`SETTING_WORDS`].
    setting: Vec<bool>,
}

fn first_look() -> &'static FirstLook {
    static FIRST: OnceLock<FirstLook> = OnceLock::new();
    FIRST.get_or_init(|| {
        let mut patterns: Vec<&'static str> = Vec::new();
        for w in prefilter::PATTERNS
            .iter()
            .chain(sqlnames::KEYWORDS.iter())
            .chain(SETTING_WORDS.iter())
        {
            if !patterns.contains(w) {
                patterns.push(w);
            }
        }
        let index_in = |set: &[&str], w: &str| set.iter().position(|s| *s == w);
        FirstLook {
            words: Words::new(&patterns),
            role: patterns
                .iter()
                .map(|w| index_in(&prefilter::PATTERNS, w))
                .collect(),
            names: patterns
                .iter()
                .map(|w| index_in(&sqlnames::KEYWORDS, w).is_some())
                .collect(),
            setting: patterns
                .iter()
                .map(|w| index_in(&SETTING_WORDS, w).is_some())
                .collect(),
        }
    })
}

/// The guard's verdict first; then whether jitgate can follow the names the text
/// defines (a text it cannot parse is refused).
pub(super) fn look_at(role_changes: RoleChanges, sql: &[u8]) -> Look {
    let first = first_look();
    let mut role_words = RoleWords::default();
    let (mut names_word, mut setting_word) = (false, false);
    for (id, whole) in first.words.find(sql) {
        if let Some(&Some(role_id)) = first.role.get(id) {
            role_words.see(role_id, whole);
        }
        names_word |= whole && first.names.get(id).copied().unwrap_or(false);
        setting_word |= whole && first.setting.get(id).copied().unwrap_or(false);
    }
    let setting = if setting_word {
        setting_change(sql)
    } else {
        None
    };
    let guarded = match role_changes {
        RoleChanges::Refuse if role_words.must_parse() => guard::check_parsed(sql),
        _ => None,
    };
    if guarded.is_some() || !names_word {
        return Look {
            refusal: guarded,
            names: None,
            setting,
        };
    }
    let (refusal, names) = match sqlnames::parse(sql) {
        Ok(names) => (None, names),
        Err(refusal) => (Some(refusal), None),
    };
    Look {
        refusal,
        names,
        setting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bytes_get_the_same_verdict_and_refusals_are_never_kept() {
        let mut last = LastLook::default();
        let plain = b"SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        for _ in 0..2 {
            let l = last.look(RoleChanges::Refuse, plain);
            assert!(l.refusal.is_none() && l.names.is_none() && l.setting.is_none());
        }
        // Flagged, not refused: kept, and still flagged from what was kept.
        for _ in 0..2 {
            let l = last.look(RoleChanges::Refuse, b"SET ROLE other");
            assert!(l.refusal.is_none());
            assert_eq!(l.setting, Some(SettingChange::Role));
        }
        let alter = b"ALTER ROLE app PASSWORD 'secret'";
        for _ in 0..2 {
            assert!(last.look(RoleChanges::Refuse, alter).refusal.is_some());
        }
        for _ in 0..2 {
            assert!(last.look(RoleChanges::Allow, alter).refusal.is_none());
        }
        for _ in 0..2 {
            let l = last.look(RoleChanges::Refuse, b"PREPARE s AS SELECT 1");
            assert!(l.names.is_some());
        }
        // The setting lexer runs on texts with its words, wherever they are.
        for (sql, setting) in [
            (
                &b"/* x */ set search_path = public"[..],
                Some(SettingChange::SearchPath),
            ),
            (b"select 1; RESET ALL", Some(SettingChange::All)),
            (b"DISCARD ALL", Some(SettingChange::All)),
            (
                b"select 1set_config('role', 'x', false)",
                Some(SettingChange::Role),
            ),
            (
                b"SELECT set_config('search_path', 'x', false)",
                Some(SettingChange::SearchPath),
            ),
            (b"UPDATE t SET role = 'x'", None),
            (b"select settings, reset_at from t", None),
        ] {
            assert_eq!(look_at(RoleChanges::Allow, sql).setting, setting, "{sql:?}");
            assert_eq!(
                look_at(RoleChanges::Allow, sql).setting,
                setting_change(sql)
            );
        }
        // A text differing in one byte from the kept one is looked at afresh.
        let _ = last.look(RoleChanges::Refuse, b"SELECT 1");
        assert!(last
            .look(RoleChanges::Refuse, b"SELECT 2")
            .refusal
            .is_none());
        assert_eq!(
            last.look(RoleChanges::Refuse, b"SET ROLE x").setting,
            Some(SettingChange::Role)
        );
        assert!(last
            .look(RoleChanges::Refuse, b"ALTER ROLE x PASSWORD 'y'")
            .refusal
            .is_some());
    }

    /// The shared pass decides as the guard's own pass does, also when the SQL names'
    /// and the setting lexer's words stand next to the guard's.
    #[test]
    fn the_shared_pass_refuses_what_the_guard_refuses() {
        for sql in [
            "ALTER ROLE app PASSWORD 'x'",
            "CLOSE c; ALTER ROLE app PASSWORD 'x'",
            "PREPARE s AS SELECT set_config('role', 'x', false)",
            "DECLARE c CURSOR FOR SELECT set_config('role', 'x', false)",
            "SET search_path = x; DROP ROLE other",
            "RESET ALL; GRANT pg_read_all_data TO app",
            "DISCARD ALL; CREATE GROUP g",
            "select 1;reset all;create/**/group g",
            "SELECT U&\"\\0073et_config\"('role', 'x', false)",
            "SET SESSION AUTHORIZATION other",
            "DEALLOCATE ALL; REVOKE app FROM other",
            "SELECT set_config('search_path', 'x', false)",
            "SELECT 1 AS close, 2 AS discard, 3 AS reset",
            "SET role other",
            "CREATE TABLE prepare_user (x int)",
            "SELECT count(*) FROM t GROUP BY a",
        ] {
            let guard = guard::check_sql(sql.as_bytes());
            let shared = look_at(RoleChanges::Refuse, sql.as_bytes())
                .refusal
                .filter(|r| r.reason == guard::Reason::RoleChange);
            assert_eq!(shared, guard, "{sql}");
        }
    }
}
