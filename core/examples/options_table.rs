fn main() {
    print!("{}", dialpool::config::options_markdown());
}
