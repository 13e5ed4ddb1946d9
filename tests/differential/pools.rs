//! What the generator draws from: statement and portal names (including non-ASCII and
//! invalid UTF-8 bytes), SQL texts (valid, failing at parse, plan or run time, empty,
//! several statements), and parameter values. Every SQL text carries a distinct
//! `/*qN*/` tag so a mismatch report points at one statement.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

/// Statement names: the unnamed one most often; `s\u{fffd}` is valid UTF-8 that a lossy
/// decoder would confuse with the invalid `s\xff`, which the server refuses (22021).
pub const STATEMENTS: &[&[u8]] = &[
    b"",
    b"",
    b"s1",
    b"s2",
    "s\u{e9}".as_bytes(),
    "s\u{fffd}".as_bytes(),
    b"s\xff",
];

/// Portal names, on the same pattern as [`STATEMENTS`].
pub const PORTALS: &[&[u8]] = &[
    b"",
    b"",
    b"p1",
    b"p2",
    "p\u{e9}".as_bytes(),
    "p\u{fffd}".as_bytes(),
    b"p\xff",
];

/// Names the server accepts: the terminator closes these.
pub fn valid_names(pool: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = pool
        .iter()
        .filter(|n| std::str::from_utf8(n).is_ok())
        .map(|n| n.to_vec())
        .collect();
    names.dedup();
    names
}

/// Picks a name: the first five entries (plain ASCII and unnamed) most of the time.
pub fn name(rng: &mut StdRng, pool: &[&[u8]]) -> Vec<u8> {
    let i = if rng.gen_bool(0.85) {
        rng.gen_range(0..4)
    } else {
        rng.gen_range(0..pool.len())
    };
    pool[i].to_vec()
}

/// The type of a statement parameter, as the generator binds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `text`: the server logs exactly the bytes sent.
    Text,
    /// `int4`: sent as canonical text or as 4 binary bytes; the server logs the number.
    Int4,
}

/// A statement for Parse: its SQL and the parameters it takes.
#[derive(Clone, Debug)]
pub struct Template {
    pub sql: String,
    pub params: Vec<Kind>,
}

impl Template {
    fn new(sql: String, params: &[Kind]) -> Template {
        Template {
            sql,
            params: params.to_vec(),
        }
    }
}

/// SQL for a Parse message (tag `n`).
pub fn extended(rng: &mut StdRng, n: u64) -> Template {
    use Kind::{Int4, Text};
    let q = format!("/*q{n}*/");
    match rng.gen_range(0..28) {
        0..=3 => Template::new(format!("SELECT {n} {q}"), &[]),
        // Refused by jitgate's guard: the server prepares and runs its substitute.
        26 => Template::new(
            format!("SELECT set_config('role', $1::text, false) {q}"),
            &[Text],
        ),
        27 => Template::new(format!("GRANT pg_read_all_data TO CURRENT_USER {q}"), &[]),
        4..=7 => Template::new(
            format!("SELECT generate_series(1, {}) {q}", rng.gen_range(1..6)),
            &[],
        ),
        8..=10 => Template::new(format!("SELECT $1::text {q}"), &[Text]),
        11..=12 => Template::new(format!("SELECT $1::int4 {q}"), &[Int4]),
        13..=14 => Template::new(format!("SELECT $1::text, $2::int4 {q}"), &[Text, Int4]),
        15..=16 => Template::new(format!("INSERT INTO t VALUES ($1) {q}"), &[Text]),
        // Not folded at plan time: fails in Execute.
        17 => Template::new(format!("SELECT 1 / (random() * 0)::int {q}"), &[]),
        18 => Template::new(format!("SELECT * FROM no_such_table {q}"), &[]),
        19 => Template::new(format!("SELEC {n} {q}"), &[]),
        20 => Template::new(["", " ", &q, ";"].choose(rng).unwrap().to_string(), &[]),
        21 => Template::new(format!("SELECT {n}; SELECT 2 {q}"), &[]),
        22 => Template::new(format!("BEGIN {q}"), &[]),
        23 => Template::new(format!("COMMIT {q}"), &[]),
        24 => Template::new(format!("ROLLBACK {q}"), &[]),
        _ => Template::new(format!("SELECT 1 / 0 {q}"), &[]),
    }
}

/// SQL for a simple Query message (tag `n`).
pub fn simple(rng: &mut StdRng, n: u64) -> String {
    let q = format!("/*q{n}*/");
    match rng.gen_range(0..22) {
        0..=3 => format!("SELECT {n} {q}"),
        // Refused by jitgate's guard (a whole multi-statement text, too).
        20 => format!("ALTER ROLE CURRENT_USER SET work_mem = '1MB' {q}"),
        21 => {
            format!("INSERT INTO t VALUES ('v{n}'); SELECT set_config('role', 'none', false) {q}")
        }
        4..=5 => format!("SELECT generate_series(1, {}) {q}", rng.gen_range(1..6)),
        6..=7 => format!("INSERT INTO t VALUES ('v{n}') {q}"),
        8 => format!("SELECT 1 / 0 {q}"),
        9 => format!("SELECT * FROM no_such_table {q}"),
        10 => format!("SELEC {n} {q}"),
        11 => ["", " ", &q, ";"].choose(rng).unwrap().to_string(),
        12 => format!("SELECT {n}; SELECT 2 {q}"),
        13 => format!("SELECT {n}; SELECT 1 / 0; SELECT 3 {q}"),
        14 => format!("SELECT {n}; SELEC 2 {q}"),
        15 => format!("SELECT {n}\n\t, 2 {q}"),
        16 => format!("BEGIN {q}"),
        17 => format!("COMMIT {q}"),
        18 => format!("ROLLBACK {q}"),
        _ => format!("SELECT '{n}\u{e9}''s' {q}"),
    }
}

/// A text parameter value: quotes, backslashes, tabs and newlines (which the server
/// log escapes and continues on tab-led lines), non-ASCII.
pub fn text_value(rng: &mut StdRng) -> Vec<u8> {
    const VALUES: &[&str] = &[
        "",
        "a",
        "it's",
        "''",
        "back\\slash",
        "tab\there",
        "new\nline",
        "new\n\tline",
        "\u{e9}t\u{e9} \u{4e2d}",
        "NULL",
        "$1",
        "semi;colon",
        ", $2 = 'x'",
    ];
    VALUES.choose(rng).unwrap().as_bytes().to_vec()
}

/// An int4 value.
pub fn int4(rng: &mut StdRng) -> i32 {
    match rng.gen_range(0..10) {
        0 => i32::MIN,
        1 => i32::MAX,
        _ => rng.gen_range(-1000..1000),
    }
}
