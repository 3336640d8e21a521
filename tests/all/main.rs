//! Integration tests: the real binary, real subprocesses, real git repositories in temp dirs.

mod support;

mod actions;
mod cli;
mod hostile;
mod plugins;
mod run;
mod verify;
