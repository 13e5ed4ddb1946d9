//! Passwords are not written to the audit log in clear: in a refused statement, the
//! string constant after each `PASSWORD` keyword (`ALTER ROLE … PASSWORD '…'`, psql's
//! `\password`, `CREATE USER … ENCRYPTED PASSWORD '…'`) is replaced by `'<redacted>'`
//! before the text is recorded. Tokens come from PostgreSQL's own scanner, so a
//! `PASSWORD` inside a string or comment is not taken for the keyword.

use pg_query::protobuf::Token;

const REDACTED: &[u8] = b"'<redacted>'";

/// `sql` with every password constant replaced; `None` when there is none (or the text
/// cannot be scanned: then there is nothing the scanner would call a password either…
/// except that the server's scanner would — so an unscannable text is withheld whole).
pub fn mask_passwords(sql: &[u8]) -> Option<Vec<u8>> {
    let Some(tokens) = std::str::from_utf8(sql)
        .ok()
        .and_then(|t| pg_query::scan(t).ok())
        .map(|r| r.tokens)
    else {
        return Some(
            b"<not recorded: jitgate could not scan this refused statement for passwords>".to_vec(),
        );
    };
    let password = Token::Password as i32;
    let constants = [Token::Sconst as i32, Token::Usconst as i32];
    let mut out: Option<Vec<u8>> = None;
    let mut at = 0;
    for pair in tokens.windows(2) {
        if pair[0].token != password || !constants.contains(&pair[1].token) {
            continue;
        }
        let (Ok(start), Ok(end)) = (usize::try_from(pair[1].start), usize::try_from(pair[1].end))
        else {
            continue;
        };
        if start < at || end > sql.len() {
            continue;
        }
        let buf = out.get_or_insert_with(|| Vec::with_capacity(sql.len()));
        buf.extend_from_slice(&sql[at..start]);
        buf.extend_from_slice(REDACTED);
        at = end;
    }
    if let Some(buf) = out.as_mut() {
        buf.extend_from_slice(&sql[at..]);
    }
    out
}
