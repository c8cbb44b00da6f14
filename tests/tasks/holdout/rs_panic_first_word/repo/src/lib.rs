/// The first word of a line.
pub fn first_word(line: &str) -> &str {
    let words: Vec<&str> = line.split_whitespace().collect();
    words[0]
}
