//! `audit`: verify and query a tollgate audit directory. (Under construction.)

fn main() {
    eprintln!("audit: not yet implemented");
    std::process::exit(2);
}
