//! The Postgres wire protocol as pure functions over bytes: no I/O here.
