//! `dndm keygen`: create an identity file (ed25519, mode 0600) or show an existing one's PeerId.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use dndm::Keypair;

/// Arguments of `dndm keygen`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The identity file (node.identity_file in a node's config). Never overwritten.
    #[arg(long, value_name = "FILE", default_value = "dndm.key")]
    out: PathBuf,
    /// Print the PeerId of the existing file instead of creating one.
    #[arg(long)]
    show: bool,
}

/// Runs `dndm keygen`: prints the PeerId on standard output.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let path = &args.out;
    if args.show {
        let keypair = Keypair::load(path).context("cannot show the identity")?;
        println!("{}", keypair.peer_id());
        return Ok(());
    }
    if path.exists() {
        bail!(
            "{} already exists; it is never overwritten (use --show to print its PeerId)",
            path.display()
        );
    }
    let keypair = Keypair::generate().context("cannot generate an identity")?;
    keypair.save(path).context("cannot save the identity")?;
    eprintln!("keygen: wrote {} (mode 0600)", path.display());
    println!("{}", keypair.peer_id());
    Ok(())
}
