use parity::{evens, is_even};

#[test]
fn even_numbers() {
    assert!(is_even(4));
    assert!(!is_even(7));
    assert!(is_even(-2));
}

#[test]
fn filters() {
    assert_eq!(evens(&[1, 2, 3, 4]), vec![2, 4]);
}
