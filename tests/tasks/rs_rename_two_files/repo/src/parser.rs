/// "name,age" -> (name, age)
pub fn parse_line(line: &str) -> Option<(String, u32)> {
    let (name, age) = line.split_once(',')?;
    Some((name.trim().to_string(), age.trim().parse().ok()?))
}
