//! The agent's tools. So far: path confinement to the repository (`workspace`) and
//! edits as reviewable, atomic, undoable proposals (`edit`). Read, list, search, shell
//! and the repo map come with the agent issue.

pub mod edit;
pub mod workspace;
