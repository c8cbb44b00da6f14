//! The tokenizer, built from the GGUF's own `tokenizer.ggml.*` metadata.
//!
//! candle's `TokenizerFromGguf` handles `pre = qwen2` but gives `smollm` GPT-2 defaults,
//! which split digits and spaces differently from llama.cpp; and it applies Qwen's NFC
//! normalizer, which llama.cpp does not. So the pipeline per `pre` lives here, matched
//! against llama.cpp's ids in `../shared/reference/tokenizer-*.json`.

use std::collections::HashSet;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::tokenizer::SplitDelimiterBehavior;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use aho_corasick::{AhoCorasick, MatchKind};

use super::gguf::{value_as_u64, GgufFile};
use super::spm::Spm;
use super::EngineError;

/// llama.cpp's `LLAMA_VOCAB_PRE_TYPE_QWEN2` split.
const QWEN2_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// llama.cpp's `LLAMA_VOCAB_PRE_TYPE_LLAMA3` split (also used by the `smaug-bpe` files).
const LLAMA3_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types (`tokenizer.ggml.token_type`), as llama.cpp numbers them.
const TOKEN_TYPE_CONTROL: u64 = 3;
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

/// Texts of control tokens that end a generation, as llama.cpp recognises them
/// beside the file's own `eos_token_id`.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<EOT>",
    "<|eom_id|>",
    "</s>",
];

/// How text becomes ids: byte-level BPE with merges (`gpt2`: Qwen, SmolLM, Llama 3),
/// or SentencePiece BPE by scores (`llama`: Gemma, Phi-3), split around special tokens.
enum Splitter {
    Bpe(Box<Tokenizer>),
    Spm {
        spm: Box<Spm>,
        /// Control and user-defined tokens, matched whole in the text, longest first.
        specials: AhoCorasick,
        special_ids: Vec<u32>,
    },
}

/// The tokenizer plus what generation needs from the vocabulary.
pub struct Vocab {
    splitter: Splitter,
    /// Raw bytes of each token, for streaming text that stays valid UTF-8 across tokens.
    token_bytes: Vec<Vec<u8>>,
    /// End-of-generation ids.
    pub eog: HashSet<u32>,
    pub eos: Option<u32>,
    pub bos: Option<u32>,
    pub add_bos: bool,
    /// Control tokens (never produced by tokenizing plain text without specials).
    pub control: HashSet<u32>,
}

/// GPT-2's byte-to-unicode table: printable bytes map to themselves, the rest to
/// code points from 256 up, in byte order.
fn byte_level_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            let c = char::from_u32(next).unwrap();
            next += 1;
            c
        };
    }
    table
}

fn string_array(gguf: &GgufFile, key: &str) -> Result<Vec<String>, EngineError> {
    match gguf.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.to_string()
                    .cloned()
                    .map_err(|_| EngineError::BadModel(format!("{key} holds a non-string")))
            })
            .collect(),
        _ => Err(EngineError::BadModel(format!(
            "{}: no {key} in metadata; this GGUF file carries no tokenizer",
            gguf.path.display()
        ))),
    }
}

fn split(pattern: &str) -> Result<PreTokenizerWrapper, EngineError> {
    Split::new(
        SplitPattern::Regex(pattern.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map(Into::into)
    .map_err(|e| EngineError::BadModel(format!("tokenizer regex: {e}")))
}

/// The pre-tokenizer for a `tokenizer.ggml.pre` value.
fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper, EngineError> {
    // Byte-level mapping after the split; the split already isolated the pieces.
    let bytes_only = ByteLevel::new(false, false, false);
    Ok(match pre {
        "qwen2" => Sequence::new(vec![split(QWEN2_SPLIT)?, bytes_only.into()]).into(),
        "llama3" | "llama-bpe" | "smaug-bpe" => {
            Sequence::new(vec![split(LLAMA3_SPLIT)?, bytes_only.into()]).into()
        }
        // smollm: digits one by one, then GPT-2's split (ByteLevel's own regex).
        "smollm" => Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, false, true).into(),
        ])
        .into(),
        // "gpt2", "default" and the rest: GPT-2's split.
        _ => ByteLevel::new(false, false, true).into(),
    })
}

/// The file's token types, normal (1) where it gives none.
fn token_types(gguf: &GgufFile, n: usize) -> Vec<u64> {
    match gguf.get("tokenizer.ggml.token_type") {
        Some(Value::Array(items)) => items.iter().map(|v| value_as_u64(v).unwrap_or(1)).collect(),
        _ => vec![1; n],
    }
}

/// End-of-generation ids: the file's EOS and EOT, and the control tokens llama.cpp
/// treats as ending a turn.
fn end_of_generation(gguf: &GgufFile, tokens: &[String], control: &HashSet<u32>) -> HashSet<u32> {
    let mut eog: HashSet<u32> = gguf
        .get_u32("tokenizer.ggml.eos_token_id")
        .into_iter()
        .collect();
    if let Some(eot) = gguf.get_u32("tokenizer.ggml.eot_token_id") {
        eog.insert(eot);
    }
    for &id in control {
        if EOG_TEXTS.contains(&tokens[id as usize].as_str()) {
            eog.insert(id);
        }
    }
    eog
}

impl Vocab {
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, EngineError> {
        match gguf.get_str("tokenizer.ggml.model").unwrap_or("") {
            "gpt2" => Self::byte_level_bpe(gguf),
            "llama" => Self::sentencepiece(gguf),
            model => Err(EngineError::Unsupported(format!(
                "{}: tokenizer model `{model}` is not supported (lcode reads `gpt2` byte-level BPE and `llama` SentencePiece); pick a model with either",
                gguf.path.display()
            ))),
        }
    }

    /// SentencePiece BPE (`tokenizer.ggml.model = llama`), scored pieces, byte fallback.
    fn sentencepiece(gguf: &GgufFile) -> Result<Self, EngineError> {
        let tokens = string_array(gguf, "tokenizer.ggml.tokens")?;
        let scores: Vec<f32> = match gguf.get("tokenizer.ggml.scores") {
            Some(Value::Array(items)) => items.iter().map(|v| v.to_f32().unwrap_or(0.0)).collect(),
            _ => vec![0.0; tokens.len()],
        };
        let types = token_types(gguf, tokens.len());
        let mut control = HashSet::new();
        let mut special_texts = Vec::new();
        let mut special_ids = Vec::new();
        let mut token_bytes = Vec::with_capacity(tokens.len());
        for (id, (text, ty)) in tokens.iter().zip(types.iter()).enumerate() {
            let special = *ty == TOKEN_TYPE_CONTROL || *ty == TOKEN_TYPE_USER_DEFINED;
            if *ty == TOKEN_TYPE_CONTROL {
                control.insert(id as u32);
            }
            if special && !text.is_empty() {
                special_texts.push(text.clone());
                special_ids.push(id as u32);
            }
            token_bytes.push(if special {
                text.as_bytes().to_vec()
            } else {
                Spm::piece_bytes(text)
            });
        }
        let specials = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&special_texts)
            .map_err(|e| EngineError::BadModel(format!("tokenizer: {e}")))?;
        let spm = Spm::new(
            &tokens,
            scores,
            gguf.get_u32("tokenizer.ggml.unknown_token_id"),
            gguf.get_bool("tokenizer.ggml.add_space_prefix")
                .unwrap_or(true),
        );
        Ok(Self {
            splitter: Splitter::Spm {
                spm: Box::new(spm),
                specials,
                special_ids,
            },
            token_bytes,
            eog: end_of_generation(gguf, &tokens, &control),
            eos: gguf.get_u32("tokenizer.ggml.eos_token_id"),
            bos: gguf.get_u32("tokenizer.ggml.bos_token_id"),
            add_bos: gguf
                .get_bool("tokenizer.ggml.add_bos_token")
                .unwrap_or(true),
            control,
        })
    }

    /// Byte-level BPE with merges (`tokenizer.ggml.model = gpt2`).
    fn byte_level_bpe(gguf: &GgufFile) -> Result<Self, EngineError> {
        let tokens = string_array(gguf, "tokenizer.ggml.tokens")?;
        let merges = string_array(gguf, "tokenizer.ggml.merges")?;
        let types = token_types(gguf, tokens.len());
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges = merges
            .iter()
            .filter_map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| EngineError::BadModel(format!("tokenizer: {e}")))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let pre = gguf.get_str("tokenizer.ggml.pre").unwrap_or("gpt2");
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
        tokenizer.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));

        // Control and user-defined tokens are matched whole in the text, as llama.cpp
        // does when it parses specials.
        let mut added = Vec::new();
        let mut control = HashSet::new();
        for (id, (text, ty)) in tokens.iter().zip(types.iter()).enumerate() {
            if *ty == TOKEN_TYPE_CONTROL || *ty == TOKEN_TYPE_USER_DEFINED {
                added.push(AddedToken::from(text.clone(), *ty == TOKEN_TYPE_CONTROL));
                if *ty == TOKEN_TYPE_CONTROL {
                    control.insert(id as u32);
                }
            }
        }
        tokenizer
            .add_special_tokens(added)
            .map_err(|e| EngineError::BadModel(format!("tokenizer: {e}")))?;

        let chars = byte_level_chars();
        let mut char_to_byte = std::collections::HashMap::new();
        for (b, c) in chars.iter().enumerate() {
            char_to_byte.insert(*c, b as u8);
        }
        let token_bytes = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| {
                if control.contains(&(id as u32)) || types.get(id) == Some(&TOKEN_TYPE_USER_DEFINED)
                {
                    t.as_bytes().to_vec()
                } else {
                    t.chars()
                        .map(|c| char_to_byte.get(&c).copied())
                        .collect::<Option<Vec<u8>>>()
                        .unwrap_or_else(|| t.as_bytes().to_vec())
                }
            })
            .collect();

        Ok(Self {
            splitter: Splitter::Bpe(Box::new(tokenizer)),
            token_bytes,
            eog: end_of_generation(gguf, &tokens, &control),
            eos: gguf.get_u32("tokenizer.ggml.eos_token_id"),
            bos: gguf.get_u32("tokenizer.ggml.bos_token_id"),
            add_bos: gguf
                .get_bool("tokenizer.ggml.add_bos_token")
                .unwrap_or(false),
            control,
        })
    }

    /// A vocabulary of the 256 bytes plus ChatML's markers, no merges: one token per
    /// byte. The scripted engine uses it, so that its text goes through the same
    /// streaming and counting code as a real model's.
    pub fn byte_level() -> Self {
        let chars = byte_level_chars();
        let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        tokens.push("<|im_start|>".into());
        tokens.push("<|im_end|>".into());
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, vec![])
            .build()
            .expect("byte vocab");
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, false, true)));
        tokenizer.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
        tokenizer
            .add_special_tokens([
                AddedToken::from("<|im_start|>", true),
                AddedToken::from("<|im_end|>", true),
            ])
            .expect("two plain tokens");
        let mut token_bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        token_bytes.push(b"<|im_start|>".to_vec());
        token_bytes.push(b"<|im_end|>".to_vec());
        Self {
            splitter: Splitter::Bpe(Box::new(tokenizer)),
            token_bytes,
            eog: HashSet::from([257]),
            eos: Some(257),
            bos: None,
            add_bos: false,
            control: HashSet::from([256, 257]),
        }
    }

    pub fn len(&self) -> usize {
        self.token_bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.token_bytes.is_empty()
    }

    /// Token ids of `text`, specials recognised, BOS added only where the file asks
    /// (and not twice: chat templates that write it themselves start with it).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let mut ids = Vec::new();
        if self.add_bos {
            let bos_text = self.bos.map(|b| self.token_bytes(b));
            if !bos_text.is_some_and(|t| !t.is_empty() && text.as_bytes().starts_with(t)) {
                ids.extend(self.bos);
            }
        }
        if text.is_empty() {
            return Ok(ids);
        }
        match &self.splitter {
            Splitter::Bpe(tokenizer) => {
                let enc = tokenizer
                    .encode_fast(text, false)
                    .map_err(|e| EngineError::Request(format!("tokenize: {e}")))?;
                ids.extend_from_slice(enc.get_ids());
            }
            Splitter::Spm {
                spm,
                specials,
                special_ids,
            } => {
                let mut at = 0;
                for m in specials.find_iter(text) {
                    spm.encode(&text[at..m.start()], at == 0, &mut ids);
                    ids.push(special_ids[m.pattern().as_usize()]);
                    at = m.end();
                }
                spm.encode(&text[at..], at == 0, &mut ids);
            }
        }
        Ok(ids)
    }

    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Text of a token sequence (lossy where it ends inside a UTF-8 character).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| self.token_bytes(id).to_vec())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn token_text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.token_bytes(id)).into_owned()
    }
}

/// Turns a stream of token bytes into text deltas that are always whole UTF-8
/// characters: a character split across tokens is held until its last byte arrives.
#[derive(Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid_up_to = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) => match e.error_len() {
                // Invalid bytes that no continuation can fix: emit them replaced.
                Some(_) => self.pending.len(),
                None => e.valid_up_to(),
            },
        };
        let out: Vec<u8> = self.pending.drain(..valid_up_to).collect();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Whatever is left at the end of a generation.
    pub fn finish(&mut self) -> String {
        let out = std::mem::take(&mut self.pending);
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_is_a_bijection() {
        let chars = byte_level_chars();
        let set: HashSet<char> = chars.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(chars[b'a' as usize], 'a');
        assert_eq!(chars[b' ' as usize], 'Ġ');
        assert_eq!(chars[b'\n' as usize], 'Ċ');
    }

    #[test]
    fn byte_level_vocab_round_trips_text() {
        let v = Vocab::byte_level();
        let ids = v.encode("héllo <|im_end|>").unwrap();
        assert_eq!(ids.len(), "héllo ".len() + 1);
        assert_eq!(*ids.last().unwrap(), 257);
        assert_eq!(v.decode(&ids), "héllo <|im_end|>");
    }

    #[test]
    fn utf8_stream_holds_split_characters() {
        let mut s = Utf8Stream::default();
        let euro = "€".as_bytes();
        assert_eq!(s.push(&euro[..1]), "");
        assert_eq!(s.push(&euro[1..2]), "");
        assert_eq!(s.push(&[euro[2], b'x']), "€x");
        assert_eq!(s.push(&[0xF0, 0x9F]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    #[test]
    fn utf8_stream_passes_invalid_bytes_replaced() {
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(&[0xFF, b'a']), "\u{FFFD}a");
    }
}
