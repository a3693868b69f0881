//! `ferrolb-controller`: see the library for how it works.

use clap::Parser;

#[tokio::main]
async fn main() {
    let args = ferrolb_controller::config::Args::parse();
    if let Err(e) = ferrolb_controller::run::run(args).await {
        eprintln!("ferrolb-controller: {e:#}");
        std::process::exit(1);
    }
}
