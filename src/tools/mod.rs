//! The agent's tools: path confinement to the repository (`workspace`), reading, listing
//! and searching files (`files`), and edits as reviewable, atomic, undoable proposals
//! (`edit`), and shell commands, sandboxed where the OS allows (`shell`).

pub mod edit;
pub mod files;
pub mod shell;
pub mod workspace;
