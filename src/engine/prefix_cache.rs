//! The prefix cache: KV caches of earlier requests, kept so that a request whose prompt
//! starts with a cached sequence prefills only the rest. Several sequences at once (the
//! agent's conversation and a side query do not evict each other), of several models (a
//! tier switch keeps each model's), bounded by a byte budget with least-recently-used
//! eviction. For one user with a handful of conversations, a longest-common-prefix scan
//! over the entries is all the indexing needed.

use super::kv_cache::KvCache;

struct Entry {
    model: String,
    cache: KvCache,
    last_used: u64,
}

pub struct PrefixCache {
    entries: Vec<Entry>,
    budget_bytes: u64,
    clock: u64,
}

/// Length of the common prefix of two token sequences.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixCache {
    pub fn new(budget_bytes: u64) -> Self {
        Self {
            entries: Vec::new(),
            budget_bytes,
            clock: 0,
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.cache.bytes()).sum()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Prompt tokens the best cached sequence of `model` would supply.
    pub fn longest(&self, model: &str, prompt: &[u32]) -> usize {
        let limit = prompt.len().saturating_sub(1);
        self.entries
            .iter()
            .filter(|e| e.model == model)
            .map(|e| common_prefix(&e.cache.tokens, prompt).min(limit))
            .max()
            .unwrap_or(0)
    }

    /// A cache for `prompt` on `model` whose tokens are a prefix of the prompt, so that
    /// only `prompt[cache.len()..]` needs a forward pass. At least one prompt token is
    /// always left to evaluate, since its logits choose the first new token.
    ///
    /// A cached sequence that the prompt extends is taken out and extended in place; one
    /// that diverges from the prompt is copied up to the divergence and stays cached
    /// for whoever comes back to it.
    pub fn checkout(
        &mut self,
        model: &str,
        prompt: &[u32],
        fresh: impl FnOnce() -> KvCache,
    ) -> candle_core::Result<KvCache> {
        let limit = prompt.len().saturating_sub(1);
        let best = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.model == model)
            .map(|(i, e)| {
                (
                    i,
                    common_prefix(&e.cache.tokens, prompt).min(limit),
                    e.last_used,
                )
            })
            .filter(|&(_, n, _)| n > 0)
            .max_by_key(|&(_, n, used)| (n, used));
        let Some((i, reused, _)) = best else {
            return Ok(fresh());
        };
        if self.entries[i].cache.len() == reused {
            return Ok(self.entries.swap_remove(i).cache);
        }
        self.clock += 1;
        self.entries[i].last_used = self.clock;
        self.entries[i].cache.fork(reused)
    }

    /// Keep `cache` for later requests, then evict the least recently used entries
    /// beyond the budget (the one just returned is kept even if alone over budget).
    pub fn checkin(&mut self, model: &str, cache: KvCache) {
        if cache.is_empty() {
            return;
        }
        self.clock += 1;
        // An entry that is a prefix of the returned sequence is now redundant.
        self.entries.retain(|e| {
            !(e.model == model
                && e.cache.len() <= cache.len()
                && common_prefix(&e.cache.tokens, &cache.tokens) == e.cache.len())
        });
        self.entries.push(Entry {
            model: model.to_string(),
            cache,
            last_used: self.clock,
        });
        while self.bytes() > self.budget_bytes && self.entries.len() > 1 {
            let lru = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
                .expect("non-empty");
            self.entries.swap_remove(lru);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with(tokens: &[u32]) -> KvCache {
        let mut c = KvCache::new(1, 1, 2, 4096);
        c.reserve(tokens.len()).unwrap();
        c.tokens = tokens.to_vec();
        c
    }

    fn fresh() -> KvCache {
        KvCache::new(1, 1, 2, 4096)
    }

    #[test]
    fn common_prefix_counts_equal_leading_tokens() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
    }

    #[test]
    fn an_extended_prompt_reuses_the_cached_sequence() {
        let mut pc = PrefixCache::new(u64::MAX);
        pc.checkin("m", cache_with(&[1, 2, 3]));
        let c = pc.checkout("m", &[1, 2, 3, 4, 5], fresh).unwrap();
        assert_eq!(c.tokens, vec![1, 2, 3]);
        assert!(pc.is_empty(), "taken out to be extended in place");
    }

    #[test]
    fn the_same_prompt_leaves_one_token_to_evaluate() {
        let mut pc = PrefixCache::new(u64::MAX);
        pc.checkin("m", cache_with(&[1, 2, 3]));
        let c = pc.checkout("m", &[1, 2, 3], fresh).unwrap();
        assert_eq!(c.tokens, vec![1, 2]);
        assert_eq!(pc.len(), 1, "a diverging use forks and keeps the original");
    }

    #[test]
    fn a_diverging_prompt_forks_and_keeps_the_original() {
        let mut pc = PrefixCache::new(u64::MAX);
        pc.checkin("m", cache_with(&[1, 2, 3, 4]));
        let c = pc.checkout("m", &[1, 2, 9], fresh).unwrap();
        assert_eq!(c.tokens, vec![1, 2]);
        assert_eq!(pc.len(), 1);
        let side = pc.checkout("m", &[1, 2, 3, 4, 7], fresh).unwrap();
        assert_eq!(side.tokens, vec![1, 2, 3, 4]);
    }

    #[test]
    fn models_do_not_share_entries() {
        let mut pc = PrefixCache::new(u64::MAX);
        pc.checkin("a", cache_with(&[1, 2, 3]));
        assert!(pc.checkout("b", &[1, 2, 3, 4], fresh).unwrap().is_empty());
        pc.checkin("b", cache_with(&[1, 2, 3, 4]));
        assert_eq!(pc.len(), 2);
    }

    #[test]
    fn no_match_gives_a_fresh_cache() {
        let mut pc = PrefixCache::new(u64::MAX);
        pc.checkin("m", cache_with(&[5, 6]));
        assert!(pc.checkout("m", &[1, 2], fresh).unwrap().is_empty());
    }

    #[test]
    fn the_budget_evicts_least_recently_used() {
        let one = cache_with(&[1]).bytes();
        let mut pc = PrefixCache::new(2 * one);
        pc.checkin("m", cache_with(&[1]));
        pc.checkin("m", cache_with(&[2]));
        // touch [1] so that [2] is the oldest
        let c = pc.checkout("m", &[1, 5], fresh).unwrap();
        pc.checkin("m", c);
        pc.checkin("m", cache_with(&[3]));
        assert_eq!(pc.len(), 2);
        assert!(pc.checkout("m", &[2, 0], fresh).unwrap().is_empty());
        assert_eq!(pc.checkout("m", &[3, 0], fresh).unwrap().tokens, vec![3]);
    }

    #[test]
    fn a_prefix_entry_is_replaced_by_its_extension() {
        let mut pc = PrefixCache::new(u64::MAX);
        pc.checkin("m", cache_with(&[1, 2]));
        pc.checkin("m", cache_with(&[1, 2, 3]));
        assert_eq!(pc.len(), 1);
    }
}
