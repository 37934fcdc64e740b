//! `dndm completions SHELL` and `dndm man [COMMAND]`: shell completions and manual pages,
//! generated at run time from the same clap definitions that parse the arguments, so they
//! cannot drift from the binary that prints them.
//!
//! ```sh
//! dndm completions bash > /etc/bash_completion.d/dndm
//! dndm completions zsh > "${fpath[1]}/_dndm"
//! dndm completions fish > ~/.config/fish/completions/dndm.fish
//! dndm man | man -l -                      # or: dndm man > /usr/local/share/man/man1/dndm.1
//! dndm man node > dndm-node.1
//! ```

use std::io::Write as _;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::Cli;

/// Arguments of `dndm completions`.
#[derive(Debug, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Arguments of `dndm man`.
#[derive(Debug, clap::Args)]
pub(crate) struct ManArgs {
    /// The subcommand whose page to print (`dndm-node(1)`...); the main page `dndm(1)` if
    /// none.
    #[arg(value_name = "COMMAND")]
    command: Option<String>,
}

/// Prints the completion script for `args.shell` on standard output.
///
/// # Errors
/// When standard output cannot be written.
pub(crate) fn completions(args: &CompletionsArgs) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "dndm", &mut script);
    print(&script)
}

/// Prints the manual page (roff) of `dndm` or of one of its subcommands on standard output.
///
/// # Errors
/// When the subcommand does not exist or standard output cannot be written.
pub(crate) fn man(args: &ManArgs) -> anyhow::Result<()> {
    let mut command = Cli::command()
        .disable_help_subcommand(true)
        .propagate_version(true);
    // Fills in what the pages show: display names (`dndm-node`), the version of subcommands.
    command.build();
    let page = match &args.command {
        None => command,
        Some(name) => command.find_subcommand(name).cloned().with_context(|| {
            let known: Vec<&str> = command.get_subcommands().map(|c| c.get_name()).collect();
            format!("no command {name:?}; the commands are {}", known.join(", "))
        })?,
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut roff)
        .context("cannot render the manual page")?;
    print(&roff)
}

/// Writes `bytes` to standard output. The generators panic when their writer fails, so they
/// write to memory and a closed pipe (`dndm man | head`) is reported here instead.
fn print(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}
