pub mod parser;

use parser::parse_line;

pub fn parse_all(text: &str) -> Vec<(String, u32)> {
    text.lines().filter_map(parse_line).collect()
}
