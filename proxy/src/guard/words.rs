//! SQL keywords found the way PostgreSQL's lexer sees them: ASCII case-insensitive, as
//! whole words. One pass of an Aho-Corasick automaton over the text, no allocation.
//!
//! Sound as a first look because keywords cannot be escaped or quoted: a quoted word is
//! an identifier, never a keyword, and comments only separate tokens, so a statement
//! always holds its keywords' ASCII letters literally. A keyword is a whole token: the
//! lexer reads identifier characters (letters, digits, `_`, `$`, any byte ≥ 0x80) as one
//! word, so `user_id` or `closed` is never the keyword. Only what *follows* is checked
//! strictly; before the word a digit is not taken as part of it (conservative: older
//! servers lex `1role` as `1 role`).

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// A set of words to look for.
#[derive(Debug)]
pub struct Words {
    ac: AhoCorasick,
}

/// A byte the lexer reads as part of an identifier or keyword (`ident_cont`).
fn word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

impl Words {
    /// The automaton for `patterns` (constant ASCII words).
    pub fn new(patterns: &[&str]) -> Words {
        // Built from constant patterns: cannot fail.
        #[allow(clippy::expect_used)]
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            // Leftmost-longest, not overlapping: faster (the automaton may skip ahead
            // with a prefilter), and no whole word is lost: a whole word starts at a
            // word boundary, which never lies inside another match of word bytes.
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns)
            .expect("constant patterns");
        Words { ac }
    }

    /// Every occurrence of a pattern in `sql`, in order: its index in the patterns, and
    /// whether it stands as a whole word.
    pub fn find<'a>(&'a self, sql: &'a [u8]) -> impl Iterator<Item = (usize, bool)> + 'a {
        self.ac.find_iter(sql).map(move |m| {
            let before = m.start().checked_sub(1).map(|i| sql[i]);
            let after = sql.get(m.end()).copied();
            let whole = !before.is_some_and(|b| word_byte(b) && !b.is_ascii_digit())
                && !after.is_some_and(word_byte);
            (m.pattern().as_usize(), whole)
        })
    }

    /// Whether any of the words stands in `sql` as a whole word.
    pub fn any(&self, sql: &[u8]) -> bool {
        self.find(sql).any(|(_, whole)| whole)
    }
}

#[cfg(test)]
mod tests {
    use super::Words;

    #[test]
    fn whole_words_only_any_case() {
        let w = Words::new(&["close", "prepare"]);
        assert!(w.any(b"CLOSE c"));
        assert!(w.any(b"select 1;Prepare s as select 1"));
        assert!(w.any(b"/*x*/close/**/all"));
        assert!(!w.any(b"select closed, prepared_at from t"));
        assert!(!w.any(b"select 1 as close_time"));
        assert!(!w.any(b"select $close"));
        // A digit before is not part of the word (conservative).
        assert!(w.any(b"select 1close"));
    }
}
