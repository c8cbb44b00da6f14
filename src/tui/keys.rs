//! Key bindings: named actions bound to key specs (`ctrl-t`, `alt-1`, `f1`, `y`), with
//! defaults built in; `keys.toml` in the config dir patches only the actions it names.

use std::collections::BTreeMap;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Actions a key can be bound to, with their default keys, in the order help lists them.
pub const DEFAULTS: &[(&str, &str, &str)] = &[
    (
        "cycle_tier",
        "ctrl-t",
        "cycle the model tier tiny → fast → quality",
    ),
    ("tier_tiny", "alt-1", "switch to the tiny tier"),
    ("tier_fast", "alt-2", "switch to the fast tier"),
    ("tier_quality", "alt-3", "switch to the quality tier"),
    (
        "help",
        "f1",
        "show the key bindings (also ? on an empty prompt)",
    ),
    (
        "focus_diff",
        "tab",
        "move focus between the prompt and the diff",
    ),
    ("next_hunk", "j", "diff: next hunk"),
    ("prev_hunk", "k", "diff: previous hunk"),
    ("next_file", "n", "diff: next file"),
    ("prev_file", "p", "diff: previous file"),
    ("accept_hunk", "y", "diff: accept the hunk"),
    ("reject_hunk", "x", "diff: reject the hunk"),
    ("accept_all", "shift-a", "diff: accept every hunk"),
    ("reject_all", "shift-r", "diff: reject every hunk"),
    ("apply", "enter", "diff: apply the accepted hunks"),
    ("undo", "u", "diff: undo the last applied change"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub code: KeyCode,
    pub mods: KeyModifiers,
}

impl KeySpec {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut mods = KeyModifiers::NONE;
        let lower = s.trim().to_lowercase();
        let mut parts: Vec<&str> = lower.split('-').collect();
        // `-` itself as the key: a trailing empty part.
        let key = match parts.pop() {
            Some("") => "-".to_string(),
            Some(k) => k.to_string(),
            None => return Err("empty key".into()),
        };
        for m in parts.into_iter().filter(|p| !p.is_empty()) {
            mods |= match m {
                "ctrl" | "c" => KeyModifiers::CONTROL,
                "alt" | "a" | "meta" | "m" => KeyModifiers::ALT,
                "shift" | "s" => KeyModifiers::SHIFT,
                _ => {
                    return Err(format!(
                        "unknown modifier `{m}` in `{s}`; use ctrl, alt or shift"
                    ))
                }
            };
        }
        let code = match key.as_str() {
            "enter" | "return" => KeyCode::Enter,
            "esc" | "escape" => KeyCode::Esc,
            "tab" => KeyCode::Tab,
            "backspace" => KeyCode::Backspace,
            "space" => KeyCode::Char(' '),
            "up" => KeyCode::Up,
            "down" => KeyCode::Down,
            "left" => KeyCode::Left,
            "right" => KeyCode::Right,
            "pageup" => KeyCode::PageUp,
            "pagedown" => KeyCode::PageDown,
            "home" => KeyCode::Home,
            "end" => KeyCode::End,
            f if f.starts_with('f') && f.len() > 1 && f[1..].parse::<u8>().is_ok() => {
                KeyCode::F(f[1..].parse().expect("checked"))
            }
            c if c.chars().count() == 1 => {
                let ch = c.chars().next().expect("one char");
                if mods.contains(KeyModifiers::SHIFT) && ch.is_ascii_alphabetic() {
                    KeyCode::Char(ch.to_ascii_uppercase())
                } else {
                    KeyCode::Char(ch)
                }
            }
            _ => {
                return Err(format!(
                    "unknown key `{s}`; e.g. ctrl-t, alt-1, f1, enter, y"
                ))
            }
        };
        Ok(Self { code, mods })
    }

    /// Does a key event match? Shift is implied by an upper-case letter, since terminals
    /// differ in whether they report it.
    pub fn matches(&self, ev: &KeyEvent) -> bool {
        let strip = |m: KeyModifiers, code: KeyCode| match code {
            KeyCode::Char(c) if c.is_ascii_uppercase() => m - KeyModifiers::SHIFT,
            _ => m,
        };
        self.code == ev.code && strip(self.mods, self.code) == strip(ev.modifiers, ev.code)
    }
}

#[derive(Debug, Clone)]
pub struct Keys {
    bound: BTreeMap<String, (KeySpec, String)>,
}

impl Keys {
    pub fn defaults() -> Self {
        let bound = DEFAULTS
            .iter()
            .map(|(a, k, _)| {
                (
                    a.to_string(),
                    (KeySpec::parse(k).expect("valid default"), k.to_string()),
                )
            })
            .collect();
        Self { bound }
    }

    /// Defaults patched by the config's `[keys]` table, then by `keys.toml` in the config
    /// dir (each a table of action = "key").
    pub fn load(from_config: Option<&BTreeMap<String, String>>) -> Result<Self, String> {
        let mut keys = Self::defaults();
        if let Some(table) = from_config {
            keys.patch(table, &crate::config::Config::path().display().to_string())?;
        }
        let path = crate::config::config_dir().join("keys.toml");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(keys);
        };
        let table: BTreeMap<String, String> = toml::from_str(&text).map_err(|e| {
            format!(
                "{}: {}; fix or remove the file",
                path.display(),
                e.message()
            )
        })?;
        keys.patch(&table, &path.display().to_string())?;
        Ok(keys)
    }

    fn patch(&mut self, table: &BTreeMap<String, String>, origin: &str) -> Result<(), String> {
        for (action, key) in table {
            if !self.bound.contains_key(action) {
                return Err(format!(
                    "{origin}: no action `{action}`; the actions are {}",
                    DEFAULTS.iter().map(|d| d.0).collect::<Vec<_>>().join(", ")
                ));
            }
            let spec = KeySpec::parse(key).map_err(|e| format!("{origin}: {e}"))?;
            self.bound.insert(action.clone(), (spec, key.clone()));
        }
        Ok(())
    }

    pub fn is(&self, action: &str, ev: &KeyEvent) -> bool {
        self.bound.get(action).is_some_and(|(k, _)| k.matches(ev))
    }

    /// The key bound to an action, as written (for help).
    pub fn key(&self, action: &str) -> &str {
        self.bound
            .get(action)
            .map(|(_, s)| s.as_str())
            .unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_match() {
        let k = KeySpec::parse("ctrl-t").unwrap();
        assert!(k.matches(&KeyEvent::new(KeyCode::Char('t'), KeyModifiers::CONTROL)));
        assert!(!k.matches(&KeyEvent::new(KeyCode::Char('t'), KeyModifiers::NONE)));
        let a = KeySpec::parse("shift-a").unwrap();
        assert!(a.matches(&KeyEvent::new(KeyCode::Char('A'), KeyModifiers::SHIFT)));
        assert!(a.matches(&KeyEvent::new(KeyCode::Char('A'), KeyModifiers::NONE)));
        assert_eq!(KeySpec::parse("f1").unwrap().code, KeyCode::F(1));
        assert!(KeySpec::parse("hyper-x").is_err());
        let mut keys = Keys::defaults();
        assert!(keys.is(
            "tier_fast",
            &KeyEvent::new(KeyCode::Char('2'), KeyModifiers::ALT)
        ));
        let table = BTreeMap::from([("tier_fast".to_string(), "f6".to_string())]);
        keys.patch(&table, "test").unwrap();
        assert!(keys.is(
            "tier_fast",
            &KeyEvent::new(KeyCode::F(6), KeyModifiers::NONE)
        ));
        assert!(keys.is(
            "cycle_tier",
            &KeyEvent::new(KeyCode::Char('t'), KeyModifiers::CONTROL)
        ));
        let bad = BTreeMap::from([("fly".to_string(), "f6".to_string())]);
        assert!(keys
            .patch(&bad, "test")
            .unwrap_err()
            .contains("no action `fly`"));
    }
}
