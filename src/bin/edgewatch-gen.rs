//! Packaging helper, not part of the shipped binary: writes `edgewatch`'s man pages (OUT/man/*.1)
//! and bash/zsh/fish completions (OUT/completions/) from its clap definition (src/cli.rs).
//! cross/deb.sh and cross/install.sh run it; it lives apart so the generators stay out of
//! `edgewatch` (cross/README.md, "Binary size"). Usage: `edgewatch-gen --out DIR`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};

#[allow(dead_code)] // only the definition is used here, never the parsed values
#[path = "../cli.rs"]
mod cli;

#[derive(Parser)]
#[command(
    name = "edgewatch-gen",
    version,
    about = "Write edgewatch's man pages and shell completions"
)]
struct Args {
    /// Output directory (man pages in OUT/man, completions in OUT/completions).
    #[arg(long)]
    out: PathBuf,
}

fn generate(out: &Path) -> anyhow::Result<()> {
    let man = out.join("man");
    let comp = out.join("completions");
    for d in [&man, &comp] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    clap_mangen::generate_to(cli::Cli::command(), &man)
        .with_context(|| format!("cannot write man pages to {}", man.display()))?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cli::Cli::command(), "edgewatch", &comp)
            .with_context(|| format!("cannot write {shell} completions to {}", comp.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match generate(&args.out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
