//! The differential test's parts, one job per module: generate sequences, send them and
//! read the answers, read the server log and the audit log, compare, shrink, report;
//! and collect jitgate's own complaints.

pub mod auditlog;
pub mod compare;
pub mod complaints;
pub mod exchange;
pub mod gen;
pub mod msg;
pub mod pools;
pub mod report;
pub mod rules;
pub mod runner;
pub mod sequence;
pub mod serverlog;
pub mod settings;
pub mod setup;
pub mod shrink;
pub mod stmt;
pub mod tail;
