//! jitgate root library
