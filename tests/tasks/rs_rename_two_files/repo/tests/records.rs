use records::parse_all;

#[test]
fn parses() {
    assert_eq!(parse_all("ana, 30\nbad\nbo,4"), vec![("ana".into(), 30), ("bo".into(), 4)]);
}
