//! `kubectl-ferrolb`: parses the command line and hands it to [`ferrolb_cli::run`]; the exit
//! status says whether anything is broken (0 fine, 1 a check found an error, 2 the command
//! itself failed).

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = ferrolb_cli::args::Cli::parse();
    match ferrolb_cli::run::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("kubectl ferrolb: {e:#}");
            std::process::exit(2);
        }
    }
}
