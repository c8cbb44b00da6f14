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

#[cfg(test)]
mod tests {
    use super::*;

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
