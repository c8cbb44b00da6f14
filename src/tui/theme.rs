//! Themes: `themes/*.toml` with semantic names, built in; a file of the same name in
//! the user's config dir (`themes/NAME.toml`) patches only the keys it sets. `NO_COLOR`
//! drops every colour and keeps bold, italic and reverse, so the app stays usable.

use std::str::FromStr;

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

/// A theme file: every key optional, so a user file can patch a built-in theme.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: Option<String>,
    code: Option<String>,
    user: Option<String>,
    assistant: Option<String>,
    tool: Option<String>,
    diff_added: Option<String>,
    diff_removed: Option<String>,
    diff_added_bg: Option<String>,
    diff_removed_bg: Option<String>,
    border: Option<String>,
    focus: Option<String>,
    status: Option<String>,
    warning: Option<String>,
    error: Option<String>,
    muted: Option<String>,
}

impl ThemeFile {
    fn patch(&mut self, other: ThemeFile) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        take!(
            name,
            code,
            user,
            assistant,
            tool,
            diff_added,
            diff_removed,
            diff_added_bg,
            diff_removed_bg,
            border,
            focus,
            status,
            warning,
            error,
            muted
        );
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub name: String,
    /// The syntect theme for code.
    pub code: String,
    pub color: bool,
    pub user: Style,
    pub assistant: Style,
    pub tool: Style,
    pub diff_added: Style,
    pub diff_removed: Style,
    /// The background of an added or removed line in the diff, under the code's own
    /// syntax colours.
    pub diff_added_line: Style,
    pub diff_removed_line: Style,
    pub border: Style,
    pub focus: Style,
    pub status: Style,
    pub warning: Style,
    pub error: Style,
    pub muted: Style,
}

const BUILT_IN: &[(&str, &str)] = &[
    ("dark", include_str!("../../themes/dark.toml")),
    ("light", include_str!("../../themes/light.toml")),
];

pub fn names() -> Vec<&'static str> {
    BUILT_IN.iter().map(|(n, _)| *n).collect()
}

fn parse_color(s: &str) -> Result<Color, String> {
    Color::from_str(&s.replace('_', "")).map_err(|_| {
        format!("`{s}` is not a colour; use a name (red, light_blue), #rrggbb or 0-255")
    })
}

impl Theme {
    /// The theme called `name`, patched by the user's file of that name, coloured unless
    /// `no_color`.
    pub fn load(name: &str, no_color: bool) -> Result<Self, String> {
        let user_path = crate::config::config_dir()
            .join("themes")
            .join(format!("{name}.toml"));
        let user = std::fs::read_to_string(&user_path).ok();
        let base = BUILT_IN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
        if base.is_none() && user.is_none() {
            return Err(format!(
                "no theme named `{name}`; the themes are {} (or add {})",
                names().join(", "),
                user_path.display()
            ));
        }
        let mut file: ThemeFile = toml::from_str(base.unwrap_or(BUILT_IN[0].1))
            .map_err(|e| format!("built-in theme {name}: {e}"))?;
        if let Some(text) = user {
            let patch: ThemeFile = toml::from_str(&text).map_err(|e| {
                format!(
                    "{}: {}; fix or remove the file",
                    user_path.display(),
                    e.message()
                )
            })?;
            file.patch(patch);
        }
        Self::from_file(file, !no_color)
    }

    fn from_file(f: ThemeFile, color: bool) -> Result<Self, String> {
        let style = |c: &Option<String>| -> Result<Style, String> {
            match c {
                Some(c) if color => Ok(Style::default().fg(parse_color(c)?)),
                _ => Ok(Style::default()),
            }
        };
        let background = |c: &Option<String>| -> Result<Style, String> {
            match c {
                Some(c) if color => Ok(Style::default().bg(parse_color(c)?)),
                _ => Ok(Style::default()),
            }
        };
        Ok(Self {
            name: f.name.clone().unwrap_or_default(),
            code: f.code.clone().unwrap_or_else(|| "base16-ocean.dark".into()),
            color,
            user: style(&f.user)?.add_modifier(Modifier::BOLD),
            assistant: style(&f.assistant)?,
            tool: style(&f.tool)?,
            diff_added: style(&f.diff_added)?,
            diff_removed: style(&f.diff_removed)?,
            diff_added_line: background(&f.diff_added_bg)?,
            diff_removed_line: background(&f.diff_removed_bg)?,
            border: style(&f.border)?,
            focus: style(&f.focus)?.add_modifier(Modifier::BOLD),
            status: style(&f.status)?,
            warning: style(&f.warning)?.add_modifier(Modifier::BOLD),
            error: style(&f.error)?.add_modifier(Modifier::BOLD),
            muted: style(&f.muted)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_themes_load_and_no_color_drops_colours() {
        for name in names() {
            let t = Theme::load(name, false).unwrap();
            assert!(t.diff_added.fg.is_some(), "{name}");
            let plain = Theme::load(name, true).unwrap();
            assert_eq!(plain.diff_added.fg, None);
            assert!(plain.user.add_modifier.contains(Modifier::BOLD));
        }
        assert!(Theme::load("nope", false)
            .unwrap_err()
            .contains("dark, light"));
    }

    #[test]
    fn a_user_file_patches_only_its_keys() {
        let mut f: ThemeFile = toml::from_str(BUILT_IN[0].1).unwrap();
        f.patch(toml::from_str("user = \"#ff0000\"").unwrap());
        let t = Theme::from_file(f, true).unwrap();
        assert_eq!(t.user.fg, Some(Color::Rgb(255, 0, 0)));
        assert_eq!(t.diff_added.fg, Some(Color::Green));
    }
}
