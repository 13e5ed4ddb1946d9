//! The seeded generator of random frontend message sequences: simple and extended
//! queries (Parse/Bind/Describe/Execute with and without a row limit, Close, Sync,
//! Flush), explicit transactions so named portals outlive a Sync, function calls, COPY
//! in both directions with Sync, Flush, CopyFail and stray messages inside COPY, and the
//! error cases of each (unknown or duplicate names, bad parameters, failing SQL).
//!
//! It keeps a rough memory of what it parsed and bound in the current sequence so that
//! most Binds and Executes refer to something, but it never predicts what the server
//! will do: the server decides, and the test compares the audit with its log.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::msg::{Msg, Target};
use super::pools::{self, Kind, Template, PORTALS, STATEMENTS};
use super::sequence::Sequence;

/// Most actions in one sequence.
const MAX_ACTIONS: usize = 8;

/// Makes sequence after sequence from one seed.
pub struct Generator {
    rng: StdRng,
    /// Next `/*qN*/` tag.
    counter: u64,
    /// OID of `abs(int4)`, called with FunctionCall.
    abs_oid: u32,
    /// Statements parsed in the current sequence, with their parameter kinds.
    parsed: Vec<(Vec<u8>, Template)>,
    /// Portals bound in the current sequence.
    bound: Vec<Vec<u8>>,
}

impl Generator {
    pub fn new(seed: u64, abs_oid: u32) -> Generator {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            counter: 0,
            abs_oid,
            parsed: Vec::new(),
            bound: Vec::new(),
        }
    }

    fn tag(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// The next sequence.
    pub fn sequence(&mut self) -> Sequence {
        self.parsed.clear();
        self.bound.clear();
        let mut msgs = Vec::new();
        if self.rng.gen_bool(0.25) {
            let n = self.tag();
            msgs.push(Msg::Query(format!("BEGIN /*q{n}*/")));
        }
        let actions = self.rng.gen_range(1..=MAX_ACTIONS);
        for _ in 0..actions {
            self.action(&mut msgs);
        }
        let pieces = if self.rng.gen_bool(0.5) {
            1
        } else {
            self.rng.gen_range(2..=6)
        };
        Sequence {
            msgs,
            pieces,
            cut_seed: self.rng.gen(),
        }
    }

    fn action(&mut self, out: &mut Vec<Msg>) {
        match self.rng.gen_range(0..40) {
            0..=5 => {
                let n = self.tag();
                out.push(Msg::Query(pools::simple(&mut self.rng, n)));
            }
            6..=15 => self.extended_flow(out),
            16..=17 => self.parse(out),
            18..=19 => self.bind(out),
            20..=21 => self.execute(out),
            22 => {
                let target = self.target();
                let name = self.name_for(target);
                out.push(Msg::Describe(target, name));
            }
            23..=24 => {
                let target = self.target();
                let name = self.name_for(target);
                out.push(Msg::Close(target, name));
            }
            25..=27 => out.push(Msg::Sync),
            28 => out.push(Msg::Flush),
            29..=30 => out.push(self.function_call()),
            31..=32 => self.copy_in(out),
            33 => self.copy_out(out),
            34..=35 => self.transaction(out),
            _ => self.sql_names(out),
        }
    }

    fn target(&mut self) -> Target {
        if self.rng.gen_bool(0.5) {
            Target::Statement
        } else {
            Target::Portal
        }
    }

    /// A name of the kind `target`: one used in this sequence most of the time.
    fn name_for(&mut self, target: Target) -> Vec<u8> {
        let used: Vec<Vec<u8>> = match target {
            Target::Statement => self.parsed.iter().map(|(n, _)| n.clone()).collect(),
            Target::Portal => self.bound.clone(),
        };
        match used.choose(&mut self.rng) {
            Some(name) if self.rng.gen_bool(0.7) => name.clone(),
            _ => pools::name(
                &mut self.rng,
                match target {
                    Target::Statement => STATEMENTS,
                    Target::Portal => PORTALS,
                },
            ),
        }
    }

    /// Parse [Bind [Describe] Execute…] [Sync | Flush].
    fn extended_flow(&mut self, out: &mut Vec<Msg>) {
        self.parse(out);
        if self.rng.gen_bool(0.9) {
            self.bind(out);
        }
        if self.rng.gen_bool(0.15) {
            let target = self.target();
            let name = self.name_for(target);
            out.push(Msg::Describe(target, name));
        }
        for _ in 0..self.rng.gen_range(1..=3) {
            self.execute(out);
        }
        match self.rng.gen_range(0..10) {
            0..=5 => out.push(Msg::Sync),
            6 => out.push(Msg::Flush),
            _ => {}
        }
    }

    fn parse(&mut self, out: &mut Vec<Msg>) {
        let name = pools::name(&mut self.rng, STATEMENTS);
        let n = self.tag();
        let template = pools::extended(&mut self.rng, n);
        let mut types = Vec::new();
        if self.rng.gen_bool(0.4) {
            let declared = self.rng.gen_range(0..=template.params.len());
            for kind in &template.params[..declared] {
                types.push(match kind {
                    Kind::Text => *[0, 25].choose(&mut self.rng).unwrap(),
                    Kind::Int4 => 23,
                });
            }
        }
        out.push(Msg::Parse {
            name: name.clone(),
            sql: template.sql.clone(),
            types,
        });
        self.parsed.push((name, template));
    }

    fn bind(&mut self, out: &mut Vec<Msg>) {
        let (statement, kinds) = match self.parsed.last() {
            Some((name, t)) if self.rng.gen_bool(0.8) => (name.clone(), t.params.clone()),
            _ => {
                let name = self.name_for(Target::Statement);
                let kinds = self
                    .parsed
                    .iter()
                    .rev()
                    .find(|(n, _)| *n == name)
                    .map(|(_, t)| t.params.clone())
                    .unwrap_or_default();
                (name, kinds)
            }
        };
        let mut kinds = kinds;
        if self.rng.gen_bool(0.05) {
            // Wrong parameter count: the server refuses the Bind.
            if kinds.pop().is_none() {
                kinds.push(Kind::Text);
            }
        }
        let mut params = Vec::new();
        let mut binary = Vec::new();
        for kind in &kinds {
            let (value, is_binary) = self.value(*kind);
            params.push(value);
            binary.push(is_binary);
        }
        let formats = if binary.iter().any(|b| *b) {
            if binary.iter().all(|b| *b) && self.rng.gen_bool(0.5) {
                vec![1]
            } else {
                binary.iter().map(|b| i16::from(*b)).collect()
            }
        } else {
            match self.rng.gen_range(0..4) {
                0 => vec![0],
                1 => vec![0; params.len()],
                _ => Vec::new(),
            }
        };
        let result_formats = if self.rng.gen_bool(0.1) {
            vec![1]
        } else {
            Vec::new()
        };
        let portal = pools::name(&mut self.rng, PORTALS);
        out.push(Msg::Bind {
            portal: portal.clone(),
            statement,
            formats,
            params,
            result_formats,
        });
        self.bound.push(portal);
    }

    /// A parameter value of `kind` and whether it is sent in binary.
    fn value(&mut self, kind: Kind) -> (Option<Vec<u8>>, bool) {
        if self.rng.gen_bool(0.1) {
            return (None, false);
        }
        match kind {
            Kind::Text => (Some(pools::text_value(&mut self.rng)), false),
            Kind::Int4 => match self.rng.gen_range(0..20) {
                0 => (Some(b"x1".to_vec()), false), // invalid int4 text: 22P02 at Bind
                1 => (Some(vec![0, 0, 7]), true),   // short binary int4: refused at Bind
                2..=9 => (
                    Some(pools::int4(&mut self.rng).to_be_bytes().to_vec()),
                    true,
                ),
                _ => (
                    Some(pools::int4(&mut self.rng).to_string().into_bytes()),
                    false,
                ),
            },
        }
    }

    fn execute(&mut self, out: &mut Vec<Msg>) {
        let portal = match self.bound.last() {
            Some(p) if self.rng.gen_bool(0.8) => p.clone(),
            _ => self.name_for(Target::Portal),
        };
        let max_rows = if self.rng.gen_bool(0.35) {
            self.rng.gen_range(1..=3)
        } else {
            0
        };
        out.push(Msg::Execute { portal, max_rows });
    }

    fn function_call(&mut self) -> Msg {
        let n = self.rng.gen_range(-1000..1000i32);
        let (oid, formats, args) = match self.rng.gen_range(0..11) {
            // set_config('role', …): refused by jitgate's guard (the server runs a
            // substitute Query in its place).
            10 => (
                2078,
                vec![],
                vec![
                    Some(b"role".to_vec()),
                    Some(b"none".to_vec()),
                    Some(b"false".to_vec()),
                ],
            ),
            0..=2 => (self.abs_oid, vec![], vec![Some(n.to_string().into_bytes())]),
            3 => (
                self.abs_oid,
                vec![0],
                vec![Some(n.to_string().into_bytes())],
            ),
            4..=5 => (self.abs_oid, vec![1], vec![Some(n.to_be_bytes().to_vec())]),
            6 => (self.abs_oid, vec![], vec![None]),
            7 => (self.abs_oid, vec![], vec![]), // wrong argument count: 08P01
            8 => (self.abs_oid, vec![], vec![Some(b"x".to_vec())]), // 22P02
            _ => (u32::MAX - 1, vec![], vec![Some(b"1".to_vec())]), // no such function
        };
        Msg::FunctionCall { oid, formats, args }
    }

    /// A COPY FROM STDIN started by a simple or an extended query, with CopyData, Sync
    /// and Flush inside, ended by CopyDone, CopyFail, nothing, or a message that does
    /// not belong in COPY.
    fn copy_in(&mut self, out: &mut Vec<Msg>) {
        let n = self.tag();
        let extended = match self.rng.gen_range(0..10) {
            0..=4 => {
                out.push(Msg::Query(format!("COPY t FROM STDIN /*q{n}*/")));
                false
            }
            5 => {
                out.push(Msg::Query(format!(
                    "SELECT {n}; COPY t FROM STDIN; SELECT 2 /*q{n}*/"
                )));
                false
            }
            _ => {
                let name = pools::name(&mut self.rng, STATEMENTS);
                let portal = pools::name(&mut self.rng, PORTALS);
                out.push(Msg::Parse {
                    name: name.clone(),
                    sql: format!("COPY t FROM STDIN /*q{n}*/"),
                    types: vec![],
                });
                out.push(Msg::Bind {
                    portal: portal.clone(),
                    statement: name,
                    formats: vec![],
                    params: vec![],
                    result_formats: vec![],
                });
                out.push(Msg::Execute {
                    portal,
                    max_rows: 0,
                });
                true
            }
        };
        for i in 0..self.rng.gen_range(0..=4) {
            out.push(match self.rng.gen_range(0..10) {
                0..=5 => Msg::CopyData(format!("row {n}.{i}\n").into_bytes()),
                6 => Msg::CopyData(b"two\tcolumns\n".to_vec()), // 22P04 in COPY
                7..=8 => Msg::Sync,
                _ => Msg::Flush,
            });
        }
        match self.rng.gen_range(0..20) {
            0..=10 => out.push(Msg::CopyDone),
            11..=14 => out.push(Msg::CopyFail(format!("stop {n}"))),
            15..=16 => {}
            // Not allowed in COPY: the server ends the connection.
            17 => {
                let m = self.tag();
                out.push(Msg::Query(format!("SELECT {m} /*q{m}*/")));
            }
            18 => self.parse(out),
            _ => self.execute(out),
        }
        if extended && self.rng.gen_bool(0.7) {
            out.push(Msg::Sync);
        }
    }

    /// COPY TO STDOUT by a simple or an extended query.
    fn copy_out(&mut self, out: &mut Vec<Msg>) {
        let n = self.tag();
        let sql = if self.rng.gen_bool(0.5) {
            format!("COPY (SELECT generate_series(1, 3)) TO STDOUT /*q{n}*/")
        } else {
            format!("COPY t TO STDOUT /*q{n}*/")
        };
        if self.rng.gen_bool(0.5) {
            out.push(Msg::Query(sql));
        } else {
            out.push(Msg::Parse {
                name: vec![],
                sql,
                types: vec![],
            });
            out.push(Msg::Bind {
                portal: vec![],
                statement: vec![],
                formats: vec![],
                params: vec![],
                result_formats: vec![],
            });
            out.push(Msg::Execute {
                portal: vec![],
                max_rows: 0,
            });
            out.push(Msg::Sync);
        }
    }

    /// SQL that defines or drops the names the protocol runs under — `PREPARE`,
    /// `DECLARE [WITH HOLD]`, `DEALLOCATE [ALL]`, `CLOSE [ALL]`, `DISCARD ALL`, alone or
    /// several in one Query — sent as a simple Query or run by Execute, with names shared
    /// with Parse and Bind; the names are then bound and executed through the protocol.
    fn sql_names(&mut self, out: &mut Vec<Msg>) {
        let n = self.tag();
        let q = format!("/*q{n}*/");
        let statement = ["s1", "s2"].choose(&mut self.rng).unwrap().to_string();
        let portal = ["p1", "p2"].choose(&mut self.rng).unwrap().to_string();
        let (inner, params) = match self.rng.gen_range(0..4) {
            0 => (format!("SELECT {n}"), vec![]),
            1 => ("SELECT $1::text".to_string(), vec![Kind::Text]),
            2 => ("INSERT INTO t VALUES ($1)".to_string(), vec![Kind::Text]),
            _ => ("SELECT generate_series(1, 4)".to_string(), vec![]),
        };
        let hold = if self.rng.gen_bool(0.5) {
            " WITH HOLD"
        } else {
            ""
        };
        let (sql, defines) = match self.rng.gen_range(0..12) {
            0..=2 => (format!("PREPARE {statement} AS {inner} {q}"), Some(true)),
            3..=5 => (
                format!("DECLARE {portal} CURSOR{hold} FOR SELECT generate_series(1, 5) {q}"),
                Some(false),
            ),
            6 => (format!("DEALLOCATE {statement} {q}"), None),
            7 => (format!("CLOSE {portal} {q}"), None),
            8 => (
                ["DEALLOCATE ALL", "CLOSE ALL", "DISCARD ALL"]
                    .choose(&mut self.rng)
                    .map(|w| format!("{w} {q}"))
                    .unwrap(),
                None,
            ),
            9 => (
                format!("DEALLOCATE {statement}; PREPARE {statement} AS {inner} {q}"),
                Some(true),
            ),
            10 => (
                format!("CLOSE {portal}; DECLARE {portal} CURSOR{hold} FOR SELECT {n} {q}"),
                Some(false),
            ),
            _ => (format!("PREPARE {statement} AS SELEC {n} {q}"), Some(true)),
        };
        if self.rng.gen_bool(0.7) {
            out.push(Msg::Query(sql));
        } else {
            // Run by Execute: a Parse holds one statement (the server refuses more).
            self.unnamed_extended(out, sql, 0.6);
        }
        match defines {
            Some(true) => {
                let template = Template { sql: inner, params };
                self.parsed.push((statement.into_bytes(), template));
                if self.rng.gen_bool(0.6) {
                    self.bind(out);
                    self.execute(out);
                }
            }
            Some(false) => {
                self.bound.push(portal.into_bytes());
                if self.rng.gen_bool(0.6) {
                    self.execute(out);
                }
            }
            None => {}
        }
    }

    /// BEGIN, COMMIT, ROLLBACK or a savepoint (ROLLBACK TO keeps the portals made before
    /// the savepoint and has the tag ROLLBACK), simple or extended.
    fn transaction(&mut self, out: &mut Vec<Msg>) {
        let n = self.tag();
        let word = [
            "BEGIN",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "SAVEPOINT sp",
            "ROLLBACK TO sp",
            "RELEASE sp",
        ]
        .choose(&mut self.rng)
        .unwrap();
        let sql = format!("{word} /*q{n}*/");
        if self.rng.gen_bool(0.6) {
            out.push(Msg::Query(sql));
            return;
        }
        self.unnamed_extended(out, sql, 0.7);
    }

    /// `sql` run through the unnamed statement and portal: Parse, Bind, Execute, and a
    /// Sync with probability `sync`.
    fn unnamed_extended(&mut self, out: &mut Vec<Msg>, sql: String, sync: f64) {
        out.push(Msg::Parse {
            name: vec![],
            sql,
            types: vec![],
        });
        out.push(Msg::Bind {
            portal: vec![],
            statement: vec![],
            formats: vec![],
            params: vec![],
            result_formats: vec![],
        });
        out.push(Msg::Execute {
            portal: vec![],
            max_rows: 0,
        });
        if self.rng.gen_bool(sync) {
            out.push(Msg::Sync);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(m: &Msg) -> &'static str {
        match m {
            Msg::Query(_) => "Query",
            Msg::Parse { .. } => "Parse",
            Msg::Bind { .. } => "Bind",
            Msg::Describe(..) => "Describe",
            Msg::Execute { max_rows: 0, .. } => "Execute",
            Msg::Execute { .. } => "Execute with max_rows",
            Msg::Close(Target::Statement, _) => "Close statement",
            Msg::Close(Target::Portal, _) => "Close portal",
            Msg::Sync => "Sync",
            Msg::Flush => "Flush",
            Msg::FunctionCall { .. } => "FunctionCall",
            Msg::CopyData(_) => "CopyData",
            Msg::CopyDone => "CopyDone",
            Msg::CopyFail(_) => "CopyFail",
        }
    }

    /// The same seed gives the same sequences, and a few hundred of them use every
    /// kind of message, split and pipelined writes, and non-UTF-8 names.
    #[test]
    fn deterministic_and_covering() {
        let a: Vec<Sequence> = {
            let mut g = Generator::new(7, 1397);
            (0..300).map(|_| g.sequence()).collect()
        };
        let mut g = Generator::new(7, 1397);
        assert!(a.iter().all(|s| *s == g.sequence()));
        let kinds: std::collections::BTreeSet<&str> =
            a.iter().flat_map(|s| s.msgs.iter().map(kind)).collect();
        assert_eq!(kinds.len(), 14, "{kinds:?}");
        assert!(a.iter().any(|s| s.pieces == 1) && a.iter().any(|s| s.pieces > 1));
        let bad_name = a.iter().flat_map(|s| &s.msgs).any(|m| match m {
            Msg::Parse { name, .. } => std::str::from_utf8(name).is_err(),
            _ => false,
        });
        assert!(bad_name, "some statement name is not UTF-8");
    }
}
