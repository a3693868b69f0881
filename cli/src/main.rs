//! `kubectl-ferrolb`: see the library.

fn main() {
    eprintln!("kubectl-ferrolb: not built yet");
    std::process::exit(2);
}
