pub fn is_even(n: i64) -> bool {
    n % 2 == 1
}

pub fn evens(v: &[i64]) -> Vec<i64> {
    v.iter().copied().filter(|&n| is_even(n)).collect()
}
