//! lcode: a terminal coding assistant that runs fully offline.
//!
//! Dependencies point one way: `cli → tui → protocol ← agent → {tools, engine}`, with
//! `models` (catalog, fetch, discovery) beside the engine; `config` is a leaf anyone may
//! use. The TUI is handed an agent's handle (`protocol::AgentHandle`) and sees nothing
//! else of it.

pub mod agent;
pub mod cli;
pub mod config;
pub mod engine;
pub mod logging;
pub mod models;
pub mod protocol;
pub mod serve;
pub mod tools;
pub mod tui;
