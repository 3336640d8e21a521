//! fsm-runner: drives a model through plan → execute → verify on an untrusted repository,
//! running every command it does not trust under confinement.
//!
//! Modules follow the data flow: `cli` → `fsm` (the loop) → `pipeline` (with its `verify`
//! stages) / `plan` / `actions` / `policy` → `sandbox` / `edit` / `llm` → `repo` / `artifacts`. See `docs/architecture.md`.

pub mod actions;
pub mod artifacts;
pub mod cli;
pub mod edit;
pub mod envfile;
pub mod fsm;
pub mod llm;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod repo;
pub mod sandbox;
pub mod yaml;
