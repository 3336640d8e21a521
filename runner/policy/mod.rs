//! What untrusted work may do: the compat command rules, and the grants of the policy file.
//!
//! Owns: plain data and decisions, no I/O beyond reading the policy file. The sandbox and the
//! verification stages ask it; it never runs anything itself.

pub mod rules;
