//! The command line describes itself: every subcommand, positional
//! argument and flag has help text, and `--help` lists the environment
//! variables the binary reads (secrets are only read from there). No
//! database: this is what `clap` makes of the definitions.

use clap::CommandFactory;
use ledgerflow_worker::cli::Cli;

fn undescribed(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    let path = format!("{path} {}", cmd.get_name());
    if cmd.get_about().is_none() && cmd.get_long_about().is_none() {
        out.push(format!("{path} (the command itself)"));
    }
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version") || arg.is_global_set() && path != " ledgerflow" {
            continue;
        }
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            out.push(format!("{path} <{id}>"));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() != "help" {
            undescribed(sub, &path, out);
        }
    }
}

#[test]
fn every_command_argument_and_flag_is_described() {
    let mut missing = Vec::new();
    undescribed(&Cli::command(), "", &mut missing);
    assert!(
        missing.is_empty(),
        "without help text:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn help_lists_the_environment_variables() {
    let help = Cli::command().render_long_help().to_string();
    for var in [
        "DATABASE_URL",
        "LEDGERFLOW_SECRET_KEY",
        "LEDGERFLOW_XERO_CLIENT_ID",
        "LEDGERFLOW_XERO_CLIENT_SECRET",
        "LEDGERFLOW_XERO_WEBHOOK_KEY",
        "LEDGERFLOW_SHOPIFY_WEBHOOK_SECRET",
        "LEDGERFLOW_SHOPIFY_API_VERSION",
        "LEDGERFLOW_QUICKBOOKS_WEBHOOK_VERIFIER",
        "LEDGERFLOW_REFRESH_TOKEN",
        "LEDGERFLOW_ACCESS_TOKEN",
        "LEDGERFLOW_LOG",
    ] {
        assert!(help.contains(var), "{var} missing from --help:\n{help}");
    }
}
