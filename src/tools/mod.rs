//! The agent's tools: path confinement to the repository (`workspace`), reading, listing
//! and searching files (`files`), and edits as reviewable, atomic, undoable proposals
//! (`edit`), shell commands, sandboxed where the OS allows (`shell`), and a tree-sitter
//! outline of the repository (`repomap`).

pub mod edit;
pub mod files;
pub mod repomap;
pub mod shell;
pub mod workspace;
