//! The agent's tools: path confinement to the repository (`workspace`), reading, listing
//! and searching files (`files`), and edits as reviewable, atomic, undoable proposals
//! (`edit`). The shell tool and the repo map come with the agent issue.

pub mod edit;
pub mod files;
pub mod workspace;
