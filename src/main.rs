//! The `mnist-cnn` command: see `mnist-cnn --help`.

use clap::Parser;

fn main() {
    let cli = mnist_cnn::cli::Cli::parse();
    if let Err(e) = mnist_cnn::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
