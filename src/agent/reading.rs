//! What the model reads: files (whole or a range, remembered as seen so that an edit of
//! a file changed since can be refused), searches and listings, each with its `action`
//! and `action_result` events; and the repairs small models need for the paths they
//! write (doubled prefixes, bare names, the instructions' example path).

use super::{context, forced, Agent};
use crate::protocol::Event;
use crate::tools::{files, repomap};

/// Budgets, in bytes of text, for what goes back to the model.
const READ_BUDGET: usize = 12_000;
const SEARCH_LIMIT: usize = 40;
const LIST_LIMIT: usize = 200;

impl Agent {
    /// Read a file (or a range of its lines) for the model; the text for the model.
    pub(super) fn read_action(&mut self, path: &str, range: Option<(usize, usize)>) -> String {
        // A small model asks again for a file it was just shown: say so rather than
        // paste it twice, and start its next reply writing that file.
        let fixed = self.fix_path(path);
        if range.is_none() && self.shown_unchanged(&fixed) {
            self.force_prefix = Some(forced::whole_file_start(&fixed));
            return format!(
                "{fixed} is already shown above and has not changed. Write the whole new {fixed} now."
            );
        }
        self.tool("read", path, |me| {
            me.show_file(path, range)
                .map(|block| (block, format!("read {path}")))
        })
    }

    /// Search the repository for a pattern; the matches for the model.
    pub(super) fn search_action(&mut self, pattern: &str) -> String {
        self.tool("search", pattern, |me| {
            let (found, more) = files::search(&me.opts.workspace, pattern, SEARCH_LIMIT)
                .map_err(|e| e.to_string())?;
            let mut s = format!("SEARCH {pattern}: {} matches\n", found.len() + more);
            for m in &found {
                s.push_str(&format!("{}:{}: {}\n", m.path, m.line, m.text.trim()));
            }
            if more > 0 {
                s.push_str(&format!(
                    "[{more} more matches not shown; search for something narrower]\n"
                ));
            }
            Ok((s, format!("{} matches", found.len() + more)))
        })
    }

    /// List the files of a folder (the whole repository by default); the list for the
    /// model.
    pub(super) fn list_action(&mut self, dir: Option<&str>) -> String {
        let shown = dir.unwrap_or(".").to_string();
        self.tool("list", &shown, |me| {
            let (list, more) =
                files::list(&me.opts.workspace, dir, LIST_LIMIT).map_err(|e| e.to_string())?;
            let mut s = format!(
                "LIST {shown}: {} files\n{}\n",
                list.len() + more,
                list.join("\n")
            );
            if more > 0 {
                s.push_str(&format!("[{more} more files; list a subfolder]\n"));
            }
            Ok((s, format!("{} files", list.len() + more)))
        })
    }

    pub(super) fn repo_files(&self) -> Vec<String> {
        files::list(&self.opts.workspace, None, 20_000)
            .map(|(f, _)| f)
            .unwrap_or_default()
    }

    /// Show a file to the model: its text in the edit format, remembered as seen.
    pub(super) fn show_file(
        &mut self,
        path: &str,
        range: Option<(usize, usize)>,
    ) -> Result<String, String> {
        let r = files::read(&self.opts.workspace, path, range, READ_BUDGET)
            .map_err(|e| e.to_string())?;
        if range.is_none() && r.note.is_none() {
            if let Ok(abs) = self.opts.workspace.resolve(&r.path) {
                if let Ok(bytes) = std::fs::read(abs) {
                    self.seen.insert(r.path.clone(), bytes);
                }
            }
        }
        self.shown_order.retain(|p| p != &r.path);
        self.shown_order.push(r.path.clone());
        let label = match range {
            Some(_) => format!(
                "{} (lines {}-{} of {})",
                r.path,
                r.first_line,
                r.first_line + r.text.lines().count().saturating_sub(1),
                r.total_lines
            ),
            None => r.path.clone(),
        };
        Ok(context::file_block(&label, &r.text, r.note.as_deref()))
    }

    /// Was `path` shown to the model, and is it on disk still as the model saw it?
    pub(super) fn shown_unchanged(&self, path: &str) -> bool {
        self.seen.get(path).is_some_and(|saw| {
            let now = self
                .opts
                .workspace
                .resolve(path)
                .ok()
                .and_then(|a| std::fs::read(a).ok());
            now.as_ref() == Some(saw)
        })
    }

    /// The repository path a model's path means: itself, or the one existing file it
    /// names by a doubled prefix or a bare file name.
    pub(super) fn fix_path(&self, path: &str) -> String {
        if self.opts.workspace.resolve(path).is_ok_and(|a| a.exists()) {
            return path.to_string();
        }
        let files = self.repo_files();
        let parts: Vec<&str> = path.split('/').collect();
        for take in (1..parts.len().max(1) + 1).rev() {
            let tail = parts[parts.len() - take.min(parts.len())..].join("/");
            let hits: Vec<&String> = files
                .iter()
                .filter(|f| *f == &tail || f.ends_with(&format!("/{tail}")))
                .collect();
            if hits.len() == 1 {
                return hits[0].clone();
            }
            if hits.len() > 1 {
                break;
            }
        }
        path.to_string()
    }

    /// The file a block without a path is for: the most recently shown file whose
    /// extension fits the block's language (code before tests), else the repository file
    /// that defines most of what the block defines, else a shown test file.
    pub(super) fn infer_target(&self, lang: &str, block: &str) -> Option<String> {
        let fits = |p: &str| {
            let ext = p.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
            lang.is_empty()
                || ext == lang
                || matches!(
                    (lang, ext),
                    ("python", "py")
                        | ("rust", "rs")
                        | ("javascript" | "js" | "jsx", "js" | "jsx" | "mjs" | "cjs")
                        | ("typescript" | "ts" | "tsx", "ts" | "tsx")
                        | ("go" | "golang", "go")
                        | ("c" | "cpp" | "c++", "c" | "h" | "cc" | "cpp" | "hpp")
                        | ("java", "java")
                        | ("ruby", "rb")
                        | ("markdown", "md")
                        | ("yaml", "yml" | "yaml")
                )
        };
        // Code before tests: a test shown for its expectations is not the likely target.
        let shown = |tests: bool| {
            self.shown_order
                .iter()
                .rev()
                .find(|p| fits(p) && forced::is_test_file(p) == tests)
                .cloned()
        };
        shown(false)
            .or_else(|| self.file_defining(block, &fits))
            .or_else(|| shown(true))
    }

    /// The repository file of a fitting language sharing the most definition names
    /// with `block` (parsed as each candidate's language).
    fn file_defining(&self, block: &str, fits: &dyn Fn(&str) -> bool) -> Option<String> {
        repomap::scan(&self.opts.workspace)
            .into_iter()
            .filter(|f| fits(&f.path))
            .filter_map(|f| {
                let names: std::collections::HashSet<String> = repomap::symbols(&f.path, block)?
                    .into_iter()
                    .map(|s| s.name)
                    .collect();
                let shared = f.symbols.iter().filter(|s| names.contains(&s.name)).count();
                (shared > 0).then_some((shared, f.path))
            })
            .max_by_key(|(shared, _)| *shared)
            .map(|(_, path)| path)
    }

    /// Whether `path` is only the instructions' example: named in the system prompt,
    /// absent from the repository and from the user's messages.
    pub(super) fn is_example_path(&self, path: &str) -> bool {
        self.system.contains(&format!("\n{path}\n"))
            && !self.opts.workspace.resolve(path).is_ok_and(|a| a.exists())
            && !self
                .messages
                .iter()
                .any(|m| m.role == "user" && m.content.contains(path))
    }

    /// Run a read-only tool with its `action` and `action_result` events; the text for
    /// the model (the output, or what went wrong).
    pub(super) fn tool(
        &mut self,
        name: &str,
        detail: &str,
        run: impl FnOnce(&mut Self) -> Result<(String, String), String>,
    ) -> String {
        let id = self.id();
        self.emit(Event::Action {
            id,
            name: name.into(),
            detail: detail.into(),
        });
        match run(self) {
            Ok((text, summary)) => {
                self.emit(Event::ActionResult {
                    id,
                    ok: true,
                    summary,
                });
                text
            }
            Err(e) => {
                self.emit(Event::ActionResult {
                    id,
                    ok: false,
                    summary: e.clone(),
                });
                format!("{} {detail} failed: {e}", name.to_uppercase())
            }
        }
    }
}
