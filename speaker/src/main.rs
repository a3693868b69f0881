//! `ferrolb-speaker`: see the library for how it works.

use clap::Parser;

#[tokio::main]
async fn main() {
    let args = ferrolb_speaker::config::Args::parse();
    if let Err(e) = ferrolb_speaker::run::run(args).await {
        eprintln!("ferrolb-speaker: {e:#}");
        std::process::exit(1);
    }
}
