//! lcode: a terminal coding assistant that runs fully offline.
//!
//! Dependencies point one way: `main (CLI) → tui → protocol ← agent → {tools, engine}`;
//! `config` is a leaf anyone may use.

pub mod agent;
pub mod config;
pub mod engine;
pub mod exec;
pub mod logging;
pub mod protocol;
pub mod tools;
pub mod tui;
