//! Spotting statements that change who the session acts as or how it resolves names:
//! the `setting_change` of a `query` event.
//!
//! A security reviewer wants to find every attempt to switch role (`SET ROLE`), to
//! impersonate (`SET SESSION AUTHORIZATION`) or to redirect unqualified names
//! (`SET search_path`), however the client spelled it. This is a single pass over the SQL
//! bytes that knows just enough of PostgreSQL's lexical rules — whitespace, `--` and
//! nested `/* */` comments, `'…'`/`E'…'` strings, `"…"` identifiers, `$tag$…$tag$` bodies,
//! `;` between statements — to look at the first words of each statement and at every
//! `set_config(` call, without being fooled by keywords inside strings or comments. It
//! does not see changes made inside function bodies or dynamic SQL (`EXECUTE '…'`).
//! Cost: one pass over the bytes, no allocation.

use crate::event::SettingChange;

/// The first setting change `sql` attempts, in text order, if any.
pub fn setting_change(sql: &[u8]) -> Option<SettingChange> {
    let mut lx = Lexer { s: sql, i: 0 };
    let mut statement_start = true;
    loop {
        lx.skip_space();
        let &c = lx.s.get(lx.i)?;
        if statement_start {
            statement_start = false;
            let mut probe = Lexer { s: sql, i: lx.i };
            if let Some(change) = probe.statement() {
                return Some(change);
            }
        }
        match c {
            b';' => {
                statement_start = true;
                lx.i += 1;
            }
            b'\'' => lx.skip_string(),
            b'"' => lx.skip_quoted_ident(),
            b'$' => lx.skip_dollar(),
            c if is_ident_start(c) => {
                let word = lx.word();
                if word.eq_ignore_ascii_case(b"set_config") {
                    let mut probe = Lexer { s: sql, i: lx.i };
                    if let Some(change) = probe.set_config_call() {
                        return Some(change);
                    }
                }
            }
            _ => lx.i += 1,
        }
    }
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_cont(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

/// The setting a name (as in `SET <name>`, `RESET <name>`, `set_config('<name>', …)`)
/// refers to, if it is one we flag. `session` alone means the caller must look for a
/// following `authorization`.
fn named(name: &[u8]) -> Option<SettingChange> {
    if name.eq_ignore_ascii_case(b"role") {
        Some(SettingChange::Role)
    } else if name.eq_ignore_ascii_case(b"search_path") {
        Some(SettingChange::SearchPath)
    } else if name.eq_ignore_ascii_case(b"session_authorization") {
        Some(SettingChange::SessionAuthorization)
    } else {
        None
    }
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Lexer<'a> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.s.get(self.i + ahead).copied()
    }

    /// Skips whitespace and comments.
    fn skip_space(&mut self) {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(c), _) if c.is_ascii_whitespace() => self.i += 1,
                (Some(b'-'), Some(b'-')) => {
                    let rest = &self.s[self.i..];
                    self.i += memchr::memchr(b'\n', rest).unwrap_or(rest.len());
                }
                (Some(b'/'), Some(b'*')) => self.skip_block_comment(),
                _ => return,
            }
        }
    }

    /// `/* … */`, which nests in PostgreSQL.
    fn skip_block_comment(&mut self) {
        let mut depth = 0usize;
        while self.i < self.s.len() {
            match (self.peek(0), self.peek(1)) {
                (Some(b'/'), Some(b'*')) => {
                    depth += 1;
                    self.i += 2;
                }
                (Some(b'*'), Some(b'/')) => {
                    self.i += 2;
                    depth -= 1;
                    if depth == 0 {
                        return;
                    }
                }
                _ => self.i += 1,
            }
        }
    }

    /// An identifier or keyword (unquoted), returned as written.
    fn word(&mut self) -> &'a [u8] {
        let start = self.i;
        while self.peek(0).is_some_and(is_ident_cont) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// The next word after whitespace/comments: an unquoted identifier, or the content of
    /// a `"quoted"` one (quoted names are case-sensitive, so they are returned only when
    /// already lowercase — `"ROLE"` is not the role setting).
    fn next_word(&mut self) -> Option<&'a [u8]> {
        self.skip_space();
        match self.peek(0)? {
            b'"' => {
                let start = self.i + 1;
                self.skip_quoted_ident();
                let end = self.i.saturating_sub(1).max(start);
                let name = &self.s[start..end];
                if name.iter().any(|c| c.is_ascii_uppercase() || *c == b'"') {
                    Some(b"\"")
                } else {
                    Some(name)
                }
            }
            c if is_ident_start(c) => Some(self.word()),
            _ => None,
        }
    }

    /// `'…'` with `''` doubling; `E'…'` also honours backslash escapes.
    fn skip_string(&mut self) {
        let escapes = self.i > 0
            && matches!(self.s[self.i - 1], b'e' | b'E')
            && !(self.i > 1 && is_ident_cont(self.s[self.i - 2]));
        self.i += 1;
        while let Some(c) = self.peek(0) {
            self.i += 1;
            match c {
                b'\\' if escapes => self.i += 1,
                b'\'' if self.peek(0) == Some(b'\'') => self.i += 1,
                b'\'' => return,
                _ => {}
            }
        }
        self.i = self.i.min(self.s.len());
    }

    /// `"…"` with `""` doubling.
    fn skip_quoted_ident(&mut self) {
        self.i += 1;
        while let Some(c) = self.peek(0) {
            self.i += 1;
            if c == b'"' {
                if self.peek(0) == Some(b'"') {
                    self.i += 1;
                } else {
                    return;
                }
            }
        }
    }

    /// `$tag$ … $tag$` (a dollar-quoted body), or a lone `$` / `$1` parameter.
    fn skip_dollar(&mut self) {
        let open_start = self.i;
        let mut j = self.i + 1;
        if self.s.get(j).is_some_and(|c| c.is_ascii_digit()) {
            self.i = j; // $1: a parameter
            return;
        }
        while self
            .s
            .get(j)
            .is_some_and(|&c| is_ident_cont(c) && c != b'$')
        {
            j += 1;
        }
        if self.s.get(j) != Some(&b'$') {
            self.i += 1;
            return;
        }
        let delimiter = &self.s[open_start..=j];
        let body = j + 1;
        self.i = match memchr::memmem::find(&self.s[body..], delimiter) {
            Some(pos) => body + pos + delimiter.len(),
            None => self.s.len(),
        };
    }

    /// At the start of a statement: does it change a flagged setting?
    fn statement(&mut self) -> Option<SettingChange> {
        let verb = self.next_word()?;
        if verb.eq_ignore_ascii_case(b"set") {
            let mut name = self.next_word()?;
            if name.eq_ignore_ascii_case(b"local") || name.eq_ignore_ascii_case(b"session") {
                let scope_was_session = name.eq_ignore_ascii_case(b"session");
                let after = self.next_word()?;
                if scope_was_session && after.eq_ignore_ascii_case(b"authorization") {
                    return Some(SettingChange::SessionAuthorization);
                }
                name = after;
            }
            self.setting_named(name)
        } else if verb.eq_ignore_ascii_case(b"reset") {
            let name = self.next_word()?;
            if name.eq_ignore_ascii_case(b"all") {
                return Some(SettingChange::All);
            }
            self.setting_named(name)
        } else if verb.eq_ignore_ascii_case(b"discard") {
            let what = self.next_word()?;
            what.eq_ignore_ascii_case(b"all")
                .then_some(SettingChange::All)
        } else {
            None
        }
    }

    /// `name` (just read) is `role`, `search_path`, `session_authorization`, or `session`
    /// followed by `authorization`.
    fn setting_named(&mut self, name: &[u8]) -> Option<SettingChange> {
        if name.eq_ignore_ascii_case(b"session") {
            let next = self.next_word()?;
            return next
                .eq_ignore_ascii_case(b"authorization")
                .then_some(SettingChange::SessionAuthorization);
        }
        named(name)
    }

    /// Just after the word `set_config`: `( '<name>' , …`.
    fn set_config_call(&mut self) -> Option<SettingChange> {
        self.skip_space();
        if self.peek(0) != Some(b'(') {
            return None; // not a call (a column or alias named set_config)
        }
        self.i += 1;
        self.skip_space();
        let escapes = matches!(self.peek(0), Some(b'e' | b'E')) && self.peek(1) == Some(b'\'');
        if escapes {
            self.i += 1;
        }
        if self.peek(0) != Some(b'\'') {
            return Some(SettingChange::Unknown);
        }
        let start = self.i + 1;
        self.skip_string();
        let end = self.i.saturating_sub(1).max(start);
        let literal = &self.s[start..end];
        if literal.contains(&b'\'') || literal.contains(&b'\\') {
            // Doubled quotes or escapes in a setting name: not a plain name, be careful.
            return Some(SettingChange::Unknown);
        }
        named(literal.trim_ascii())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SettingChange::*;

    fn check(sql: &str) -> Option<SettingChange> {
        setting_change(sql.as_bytes())
    }

    #[test]
    fn role_changes() {
        for sql in [
            "SET ROLE admin",
            "set role none",
            "  \n\tSet Role 'x'",
            "SET SESSION ROLE admin",
            "SET LOCAL ROLE admin",
            "RESET ROLE",
            "set role = 'x'",
            "SET \"role\" TO admin",
            "-- switch\nSET ROLE admin",
            "/* a /* nested */ comment */ SET/**/ROLE admin",
            "select 1; set role admin",
            "BEGIN; SET LOCAL ROLE admin; COMMIT",
            "select set_config('role', 'admin', false)",
            "SELECT pg_catalog.SET_CONFIG( 'ROLE' , 'admin', true)",
            "select set_config(E'role', 'admin', false)",
        ] {
            assert_eq!(check(sql), Some(Role), "{sql}");
        }
    }

    #[test]
    fn authorization_and_search_path() {
        for sql in [
            "SET SESSION AUTHORIZATION admin",
            "set session session authorization default",
            "set local session authorization x",
            "RESET SESSION AUTHORIZATION",
            "set session_authorization = 'x'",
            "select set_config('session_authorization', 'x', false)",
        ] {
            assert_eq!(check(sql), Some(SessionAuthorization), "{sql}");
        }
        for sql in [
            "SET search_path TO evil, public",
            "set search_path = public",
            "SET SESSION search_path TO x",
            "set local search_path to x",
            "RESET search_path",
            "select set_config('search_path', 'evil', false)",
        ] {
            assert_eq!(check(sql), Some(SearchPath), "{sql}");
        }
        assert_eq!(check("RESET ALL"), Some(All));
        assert_eq!(check("discard all"), Some(All));
        assert_eq!(check("select set_config($1, $2, false)"), Some(Unknown));
        assert_eq!(
            check("select set_config(name, 'x', false) from t"),
            Some(Unknown)
        );
    }

    #[test]
    fn other_statements_are_not_flagged() {
        for sql in [
            "",
            "   ",
            "select 1",
            "SET statement_timeout = 0",
            "SET TIME ZONE 'UTC'",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "reset statement_timeout",
            "DISCARD PLANS",
            "select 'SET ROLE admin'",
            "select 'x'; select $$; set role admin $$",
            "select $tag$ ; set role x $tag$",
            "select \"; set role x\"",
            "select 1 -- ; set role x",
            "select 1 /* ; set role x */",
            "select E'\\'; set role x'",
            "select 'it''s; set role x'",
            "select set_config('app.user_id', $1, true)",
            "select set_config from t",
            "select my_set_config('role', 'x')",
            "update t set role = 'admin'",
            "SET \"ROLE\" TO x",
            "ALTER ROLE x SET search_path = y",
            "select $1; select 2",
        ] {
            assert_eq!(check(sql), None, "{sql}");
        }
    }

    #[test]
    fn malformed_sql_does_not_panic() {
        for sql in [
            "'",
            "\"",
            "$",
            "$a",
            "$a$",
            "/*",
            "/* /*",
            "--",
            "set",
            "set session",
            "reset",
            "set_config(",
            "set_config('",
            "set_config(E",
            "e'",
            "select e'\\",
            ";;;",
        ] {
            let _ = check(sql);
        }
        let _ = setting_change(b"\xff\xfe set role \x00");
        assert_eq!(setting_change(b"\xff; set role x"), Some(Role));
    }

    #[test]
    fn the_first_change_is_reported() {
        assert_eq!(check("set search_path = x; set role y"), Some(SearchPath));
    }
}
