//! SentencePiece BPE as GGUF files carry it (`tokenizer.ggml.model = llama`: Gemma,
//! Phi-3, Llama 2): a vocabulary with a score per piece and no merge list. Text is split
//! into characters, spaces written as `▁`, and the adjacent pair whose joined piece is
//! in the vocabulary with the highest score is merged, again and again (the leftmost
//! pair on a tie); what no piece covers falls back to `<0xXX>` byte tokens. This is
//! llama.cpp's `llm_tokenizer_spm`. The `tokenizers` crate has no model for it: its BPE
//! needs a merge list, and its Unigram picks pieces by likelihood, a different split.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// The word-boundary mark SentencePiece writes for a space.
pub const SPACE: &str = "\u{2581}";

pub struct Spm {
    ids: HashMap<String, u32>,
    scores: Vec<f32>,
    /// `<0xXX>` tokens by byte value.
    byte_tokens: Vec<Option<u32>>,
    unknown: Option<u32>,
    add_space_prefix: bool,
}

/// A candidate merge of two adjacent symbols.
#[derive(Debug)]
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    /// Bytes of the joined text, to notice symbols changed since it was queued.
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// The max-heap's top is the highest score, then the leftmost.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

/// A span of the text being merged, linked to its neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Spm {
    pub fn new(
        tokens: &[String],
        scores: Vec<f32>,
        unknown: Option<u32>,
        add_space_prefix: bool,
    ) -> Self {
        let mut byte_tokens = vec![None; 256];
        let mut ids = HashMap::with_capacity(tokens.len());
        for (id, t) in tokens.iter().enumerate() {
            if let Some(hex) = t.strip_prefix("<0x").and_then(|h| h.strip_suffix('>')) {
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    byte_tokens[b as usize] = Some(id as u32);
                }
            }
            // The first id of a duplicated piece wins, as in llama.cpp's map.
            ids.entry(t.clone()).or_insert(id as u32);
        }
        Self {
            ids,
            scores,
            byte_tokens,
            unknown,
            add_space_prefix,
        }
    }

    /// The bytes a token stands for: `▁` as a space, `<0xXX>` as its byte.
    pub fn piece_bytes(piece: &str) -> Vec<u8> {
        if let Some(hex) = piece.strip_prefix("<0x").and_then(|h| h.strip_suffix('>')) {
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                return vec![b];
            }
        }
        piece.replace(SPACE, " ").into_bytes()
    }

    /// Ids of a stretch of plain text (no special tokens in it). `first` says whether
    /// it starts the whole input, where the space prefix goes when the file asks.
    pub fn encode(&self, text: &str, first: bool, out: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let mut escaped = String::with_capacity(text.len() + 3);
        if self.add_space_prefix && first {
            escaped.push_str(SPACE);
        }
        escaped.push_str(&text.replace(' ', SPACE));
        let text = escaped.as_str();

        let mut symbols: Vec<Symbol> = Vec::new();
        for (start, c) in text.char_indices() {
            let i = symbols.len();
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }
        let mut queue = BinaryHeap::new();
        let try_add = |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], left: usize| {
            let Some(right) = symbols[left].next else {
                return;
            };
            let (l, r) = (symbols[left], symbols[right]);
            let joined = &text[l.start..r.start + r.len];
            if let Some(&id) = self.ids.get(joined) {
                queue.push(Bigram {
                    left,
                    right,
                    score: self.scores.get(id as usize).copied().unwrap_or(0.0),
                    len: joined.len(),
                });
            }
        };
        for i in 0..symbols.len().saturating_sub(1) {
            try_add(&mut queue, &symbols, i);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            // Stale: one side was merged away, or has grown since it was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len || l.next != Some(b.right) {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.left].next = r.next;
            symbols[b.right].len = 0;
            if let Some(n) = r.next {
                symbols[n].prev = Some(b.left);
            }
            if let Some(p) = l.prev {
                try_add(&mut queue, &symbols, p);
            }
            try_add(&mut queue, &symbols, b.left);
        }
        let mut at = Some(0);
        while let Some(i) = at {
            let s = symbols[i];
            let piece = &text[s.start..s.start + s.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        if let Some(id) = self.byte_tokens[b as usize].or(self.unknown) {
                            out.push(id);
                        }
                    }
                }
            }
            at = s.next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: bytes for fallback, pieces with scores favouring "▁the".
    fn toy() -> Spm {
        let mut tokens: Vec<String> = vec!["<unk>".into()];
        tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        let pieces = [
            ("▁", -1.0),
            ("t", -2.0),
            ("h", -2.0),
            ("e", -2.0),
            ("th", -3.0),
            ("he", -1.5),
            ("▁t", -4.0),
            ("▁the", -0.5),
            ("the", -5.0),
        ];
        let mut scores = vec![0.0; tokens.len()];
        for (p, s) in pieces {
            tokens.push(p.into());
            scores.push(s);
        }
        Spm::new(&tokens, scores, Some(0), false)
    }

    fn pieces(spm: &Spm, text: &str) -> Vec<String> {
        let mut ids = Vec::new();
        spm.encode(text, true, &mut ids);
        let by_id: HashMap<u32, &String> = spm.ids.iter().map(|(k, v)| (*v, k)).collect();
        ids.iter().map(|id| by_id[id].clone()).collect()
    }

    #[test]
    fn the_best_scoring_merges_win_and_unknown_bytes_fall_back() {
        let spm = toy();
        // "he" (-1.5) merges before "th" (-3); "t"+"he" = "the" (-5); then "▁"+"the"
        // = "▁the" (-0.5).
        assert_eq!(pieces(&spm, " the"), vec!["▁the"]);
        assert_eq!(pieces(&spm, "the"), vec!["the"]);
        // "é" is no piece: its two UTF-8 bytes.
        assert_eq!(pieces(&spm, "é"), vec!["<0xC3>", "<0xA9>"]);
        assert_eq!(Spm::piece_bytes("▁the"), b" the");
        assert_eq!(Spm::piece_bytes("<0x0A>"), b"\n");
    }
}
