//! The README's options table is generated from the option specs; this keeps
//! the two from drifting apart.

#[test]
fn readme_options_table_matches_the_code() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let begin = readme.find("<!-- options:begin").expect("begin marker");
    let body_start = begin + readme[begin..].find('\n').expect("marker line") + 1;
    let end = readme.find("<!-- options:end -->").expect("end marker");
    let table = &readme[body_start..end];
    assert_eq!(
        table,
        dialpool::config::options_markdown(),
        "README's options table is stale: cargo run -p dialpool --example options_table"
    );
}
