//! SQL statements that define or drop the names the extended protocol runs under:
//! `PREPARE` (a prepared statement, which a Bind can use), `DECLARE` (a cursor, which is
//! a portal an Execute can run), `DEALLOCATE [ALL]`, `CLOSE [ALL]` and `DISCARD ALL`.
//! They share the server's tables with Parse and Bind, so a client can define a name
//! with SQL and run it with the protocol — and the tracker must know what the name
//! holds to record what runs.
//!
//! Such a text is found by its keyword (in the one pass of `look.rs`: almost every statement has
//! none and is not parsed), then parsed with PostgreSQL's own parser (`pg_query`) into
//! one [`Parsed`] per statement, in the server's order. What each did is applied only
//! when the server confirms it: the statement's CommandComplete, whose tag must be the
//! one the parse expects ([`Parsed::agrees`]) — the tracker never trusts its parse
//! alone. A text with the keyword that cannot be parsed (or holds a name that is not
//! UTF-8) is refused before it reaches the server: jitgate would not know what the
//! names it defines hold.
//!
//! Not seen: names defined by SQL run inside functions or `DO` blocks (a PL/pgSQL
//! cursor, `EXECUTE 'PREPARE …'`). An Execute of such a name is recorded with an empty
//! text; AUDIT.md says so.

use bytes::Bytes;
use pg_query::protobuf::DiscardMode;
use pg_query::NodeEnum;

use super::names::{key, Name};
use crate::guard::{Reason, Refusal};

/// `CURSOR_OPT_HOLD` (parsenodes.h): `DECLARE … WITH HOLD`.
const CURSOR_OPT_HOLD: i32 = 0x0020;

/// The keywords one of the statements must hold.
pub const KEYWORDS: [&str; 5] = ["prepare", "declare", "deallocate", "close", "discard"];

/// What one statement of a text does to the names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// `PREPARE name AS …`
    Prepare(Name),
    /// `DECLARE name CURSOR [WITH HOLD] FOR …`
    Declare { name: Name, hold: bool },
    /// `DEALLOCATE [PREPARE] name`
    Deallocate(Name),
    /// `DEALLOCATE [PREPARE] ALL`
    DeallocateAll,
    /// `CLOSE name`
    Close(Name),
    /// `CLOSE ALL`
    CloseAll,
    /// `DISCARD ALL`: closes every portal, deallocates every prepared statement.
    DiscardAll,
    /// Anything else: touches no name.
    Other,
}

/// The command tags that mean a statement defined or dropped a name.
const NAME_TAGS: [&str; 7] = [
    "PREPARE",
    "DECLARE CURSOR",
    "DEALLOCATE",
    "DEALLOCATE ALL",
    "CLOSE CURSOR",
    "CLOSE CURSOR ALL",
    "DISCARD ALL",
];

impl Parsed {
    /// The tag the server completes the statement with (`None`: none of [`NAME_TAGS`]).
    fn tag(&self) -> Option<&'static str> {
        Some(match self {
            Parsed::Prepare(_) => NAME_TAGS[0],
            Parsed::Declare { .. } => NAME_TAGS[1],
            Parsed::Deallocate(_) => NAME_TAGS[2],
            Parsed::DeallocateAll => NAME_TAGS[3],
            Parsed::Close(_) => NAME_TAGS[4],
            Parsed::CloseAll => NAME_TAGS[5],
            Parsed::DiscardAll => NAME_TAGS[6],
            Parsed::Other => return None,
        })
    }

    /// Whether the server's tag for this statement is the one its parse expects.
    pub fn agrees(&self, tag: &str) -> bool {
        match self.tag() {
            Some(expected) => expected == tag,
            None => !is_name_tag(tag),
        }
    }
}

/// Whether a command tag says a statement defined or dropped a name.
pub fn is_name_tag(tag: &str) -> bool {
    matches!(tag.as_bytes().first(), Some(b'P' | b'D' | b'C')) && NAME_TAGS.contains(&tag)
}

/// Why a text was refused: it may define names and could not be parsed.
const UNPARSABLE: Refusal = Refusal {
    what: "jitgate's parser rejected it",
    reason: Reason::UnfollowedNames,
};
const NOT_UTF8_NAME: Refusal = Refusal {
    what: "a statement or cursor name that is not UTF-8",
    reason: Reason::UnfollowedNames,
};

/// What the statements of `sql` (a Query's text, or a Parse's, which holds one of
/// [`KEYWORDS`] as a whole word: see `look.rs`) do to the names, in order. `Ok(None)`:
/// none touches a name. `Err`: one may, and jitgate cannot tell which name: the text is
/// refused.
pub fn parse(sql: &[u8]) -> Result<Option<Box<[Parsed]>>, Refusal> {
    // The server parses the text in its encoding. Not UTF-8: each byte is taken as a
    // Latin-1 character, which keeps every token where it was (bytes ≥ 0x80 stay
    // identifier characters); the names then must be ASCII to be known.
    let (text, utf8) = match std::str::from_utf8(sql) {
        Ok(t) => (std::borrow::Cow::Borrowed(t), true),
        Err(_) => (sql.iter().map(|&b| char::from(b)).collect(), false),
    };
    let parsed = pg_query::parse(&text, 0).map_err(|_| UNPARSABLE)?;
    let name = |n: &str| -> Result<Name, Refusal> {
        if !utf8 && !n.is_ascii() {
            return Err(NOT_UTF8_NAME);
        }
        Ok(key(Bytes::copy_from_slice(n.as_bytes())))
    };
    let mut out = Vec::with_capacity(parsed.protobuf.stmts.len());
    for raw in &parsed.protobuf.stmts {
        let node = raw.stmt.as_ref().and_then(|n| n.node.as_ref());
        out.push(match node {
            Some(NodeEnum::PrepareStmt(p)) => Parsed::Prepare(name(&p.name)?),
            Some(NodeEnum::DeclareCursorStmt(d)) => Parsed::Declare {
                name: name(&d.portalname)?,
                hold: d.options & CURSOR_OPT_HOLD != 0,
            },
            Some(NodeEnum::DeallocateStmt(d)) if d.isall => Parsed::DeallocateAll,
            Some(NodeEnum::DeallocateStmt(d)) => Parsed::Deallocate(name(&d.name)?),
            Some(NodeEnum::ClosePortalStmt(c)) if c.portalname.is_empty() => Parsed::CloseAll,
            Some(NodeEnum::ClosePortalStmt(c)) => Parsed::Close(name(&c.portalname)?),
            Some(NodeEnum::DiscardStmt(d)) if d.target == DiscardMode::DiscardAll as i32 => {
                Parsed::DiscardAll
            }
            _ => Parsed::Other,
        });
    }
    Ok(Some(out.into_boxed_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::RoleChanges;

    /// The keyword pass and the parse, as the tracker runs them.
    fn scan(sql: &[u8]) -> Result<Option<Box<[Parsed]>>, Refusal> {
        let look = super::super::look::look_at(RoleChanges::Allow, sql);
        match look.refusal {
            Some(refusal) => Err(refusal),
            None => Ok(look.names),
        }
    }

    fn names(sql: &str) -> Vec<Parsed> {
        scan(sql.as_bytes())
            .unwrap()
            .map(Vec::from)
            .unwrap_or_default()
    }

    fn n(s: &str) -> Name {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn each_statement_kind_in_order() {
        assert_eq!(scan(b"SELECT closed FROM t").unwrap(), None);
        assert_eq!(
            names("select 1; PREPARE Foo(int) AS SELECT $1; prepare \"Bar\" as select 2"),
            vec![
                Parsed::Other,
                Parsed::Prepare(n("foo")),
                Parsed::Prepare(n("Bar"))
            ]
        );
        assert_eq!(
            names("DECLARE c CURSOR FOR SELECT 1; declare h scroll cursor with hold for select 2"),
            vec![
                Parsed::Declare {
                    name: n("c"),
                    hold: false
                },
                Parsed::Declare {
                    name: n("h"),
                    hold: true
                }
            ]
        );
        assert_eq!(
            names("DEALLOCATE s; DEALLOCATE PREPARE ALL; deallocate all; CLOSE c; CLOSE ALL"),
            vec![
                Parsed::Deallocate(n("s")),
                Parsed::DeallocateAll,
                Parsed::DeallocateAll,
                Parsed::Close(n("c")),
                Parsed::CloseAll
            ]
        );
        assert_eq!(
            names("DISCARD ALL; DISCARD PLANS; discard temp"),
            vec![Parsed::DiscardAll, Parsed::Other, Parsed::Other]
        );
        // Empty statements are not statements, for the server either.
        assert_eq!(names(";;close c;;"), vec![Parsed::Close(n("c"))]);
    }

    #[test]
    fn long_names_are_cut_as_the_server_cuts_them() {
        let long = "a".repeat(70);
        assert_eq!(
            names(&format!("PREPARE {long} AS SELECT 1")),
            vec![Parsed::Prepare(n(&"a".repeat(63)))]
        );
    }

    #[test]
    fn unparsable_or_unnamable_texts_are_refused() {
        assert!(scan(b"PREPARE s AS SELEC 1").is_err());
        assert!(scan(b"CLOSE").is_err());
        // Latin-1 text: ASCII names are still known, others are not.
        assert_eq!(
            scan(b"PREPARE s AS SELECT '\xe9'").unwrap().map(Vec::from),
            Some(vec![Parsed::Prepare(n("s"))])
        );
        assert!(scan(b"PREPARE s\xe9 AS SELECT 1").is_err());
    }

    #[test]
    fn tags_agree_only_with_their_statement() {
        assert!(Parsed::Prepare(n("s")).agrees("PREPARE"));
        assert!(!Parsed::Prepare(n("s")).agrees("SELECT"));
        assert!(Parsed::Declare {
            name: n("c"),
            hold: true
        }
        .agrees("DECLARE CURSOR"));
        assert!(Parsed::CloseAll.agrees("CLOSE CURSOR ALL"));
        assert!(Parsed::Other.agrees("SELECT"));
        assert!(!Parsed::Other.agrees("DECLARE CURSOR"));
        assert!(is_name_tag("DISCARD ALL") && !is_name_tag("DISCARD PLANS"));
    }
}
