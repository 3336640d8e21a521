//! fsm-runner: drives a model through plan → execute → verify on an untrusted repository,
//! running every command it does not trust under confinement.
//!
//! Modules follow the data flow: `cli` → `pipeline` (with its `verify` stages) / `plan` /
//! `policy` → `sandbox` → `repo` / `artifacts`. See `docs/architecture.md`.

pub mod actions;
pub mod artifacts;
pub mod cli;
pub mod edit;
pub mod envfile;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod repo;
pub mod sandbox;
pub mod yaml;
