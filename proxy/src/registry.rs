//! Live sessions registry.
