use stack::Stack;

#[test]
fn peek_sees_the_top_without_taking_it() {
    let mut s = Stack::default();
    assert_eq!(s.peek(), None);
    s.push(1);
    s.push(2);
    assert_eq!(s.peek(), Some(&2));
    assert_eq!(s.len(), 2);
    assert_eq!(s.pop(), Some(2));
}
