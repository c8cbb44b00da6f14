use words::first_word;

#[test]
fn words() {
    assert_eq!(first_word("  hello world"), "hello");
    assert_eq!(first_word(""), "");
    assert_eq!(first_word("   "), "");
}
