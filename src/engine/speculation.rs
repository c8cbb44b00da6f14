//! Prompt-lookup speculation: draft the next tokens by finding the latest earlier
//! occurrence of the sequence's last n-gram and proposing what followed it. An agent's
//! whole-file and whole-function edits copy most of their text from the context, so
//! these drafts are usually right; the engine verifies them in one batched forward and
//! keeps only the tokens greedy decoding would have picked, so the output is unchanged.

/// N-gram lengths tried, longest first: a longer match predicts better.
const NGRAMS: [usize; 3] = [4, 3, 2];

/// Up to `max` tokens that followed the latest earlier occurrence of the last n-gram of
/// `history` (empty when there is none).
pub fn prompt_lookup(history: &[u32], max: usize) -> Vec<u32> {
    if max == 0 {
        return Vec::new();
    }
    for n in NGRAMS {
        if history.len() <= n {
            continue;
        }
        let tail = &history[history.len() - n..];
        // Latest match first, not counting the tail itself.
        let last_start = history.len() - n;
        for start in (0..last_start).rev() {
            if &history[start..start + n] == tail {
                let from = start + n;
                let to = (from + max).min(history.len());
                if to > from {
                    return history[from..to].to_vec();
                }
            }
        }
    }
    Vec::new()
}

/// How many tokens to draft next: verifying a draft of k costs one batched forward of
/// k + 1 rows, about one decode step for k <= 2 (the weights are read once either way)
/// and more beyond, as the rows' arithmetic takes over. So the window starts small,
/// doubles while drafts are taken whole (text being copied), and falls back to just
/// past what was accepted when one is cut short (text being written).
#[derive(Debug, Clone, Copy)]
pub struct DraftWindow {
    len: usize,
    max: usize,
}

impl DraftWindow {
    pub const START: usize = 2;

    pub fn new(max: usize) -> Self {
        Self {
            len: Self::START.min(max),
            max,
        }
    }

    /// Tokens to draft next (at least one).
    pub fn size(&self) -> usize {
        self.len
    }

    /// After verifying `drafted` tokens of which the first `accepted` were right.
    pub fn update(&mut self, drafted: usize, accepted: usize) {
        self.len = if accepted == drafted {
            (self.len * 2).min(self.max)
        } else {
            (accepted + 1).min(self.max)
        }
        .max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_grows_while_drafts_hold_and_shrinks_when_cut() {
        let mut w = DraftWindow::new(8);
        assert_eq!(w.size(), 2);
        w.update(2, 2);
        assert_eq!(w.size(), 4);
        w.update(4, 4);
        w.update(8, 8);
        assert_eq!(w.size(), 8, "capped");
        w.update(8, 3);
        assert_eq!(w.size(), 4);
        w.update(4, 0);
        assert_eq!(w.size(), 1);
        w.update(1, 1);
        assert_eq!(w.size(), 2);
    }

    #[test]
    fn drafts_what_followed_the_latest_match() {
        // ... 1 2 3 4 5 6 ... 1 2 3 → 4 5 6
        let h = [9, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3];
        assert_eq!(prompt_lookup(&h, 3), vec![4, 5, 6]);
        // The latest occurrence wins.
        let h = [1, 2, 7, 1, 2, 8, 1, 2];
        assert_eq!(prompt_lookup(&h, 1), vec![8]);
        // No earlier occurrence: no draft.
        assert!(prompt_lookup(&[1, 2, 3, 4], 4).is_empty());
        assert!(prompt_lookup(&[1, 2, 1, 2], 0).is_empty());
    }
}
