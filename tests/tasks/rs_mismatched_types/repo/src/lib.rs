/// Words in a text, split on whitespace.
pub fn word_count(text: &str) -> usize {
    let n: i32 = text.split_whitespace().count() as i32;
    n
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts() {
        assert_eq!(super::word_count("a b  c"), 3);
    }
}
