//! `darter-operator`. Today it carries the CRDs (`darter-operator crds`); the
//! controllers, scheduler and manager arrive with their issues.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "darter-operator", version, about = "Darter operator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the CRDs as YAML (`darter-operator crds | kubectl apply -f -`), or
    /// write one file per CRD into a directory.
    Crds {
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Crds { write } => {
            let crds = darter_crds::all_crd_yaml().context("cannot render CRDs")?;
            match write {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    for (name, yaml) in crds {
                        let path = dir.join(name);
                        std::fs::write(&path, yaml)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                    }
                }
                None => {
                    for (_, yaml) in crds {
                        print!("---\n{yaml}");
                    }
                }
            }
        }
    }
    Ok(())
}
