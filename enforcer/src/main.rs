use std::process::ExitCode;

use clap::Parser;
use enforcer::cli::{Cli, Command, LogFormat};
use enforcer::settings::ConfigFile;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        // The error alone, in the operator's words (not a debug dump with a backtrace).
        Err(error) => {
            eprintln!("enforcer: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let socket = cli.socket_path();
    enforcer::logging::init(log_format(&cli));
    match cli.command {
        Command::GenerateAssets(args) => {
            enforcer::cli::assets::execute(&args).map_err(anyhow::Error::from)
        }
        Command::Check(args) => Ok(enforcer::cli::check::execute(&args)),
        Command::Resolve(args) => Ok(enforcer::cli::resolve::execute(&args)),
        Command::Run(args) => {
            enforcer::cli::run::execute(*args, cli.socket).map_err(anyhow::Error::from)
        }
        Command::Detach(args) => enforcer::cli::detach::execute(&args).map_err(anyhow::Error::from),
        Command::Status(args) => Ok(enforcer::cli::status::execute(&socket, &args)),
        Command::Reload => Ok(enforcer::cli::reload::execute(&socket)),
        Command::Explain(args) => Ok(enforcer::cli::explain::execute(&socket, &args)),
        Command::Plan(args) => Ok(enforcer::cli::plan::execute(&socket, &args)),
        Command::Collateral(args) => Ok(enforcer::cli::collateral::execute(&socket, &args)),
        Command::Report(args) => enforcer::cli::report::execute(&args).map_err(anyhow::Error::from),
        Command::Rules(command) => Ok(enforcer::cli::rules::execute(&socket, command)),
        Command::History(args) => Ok(enforcer::cli::history::execute(&socket, &args)),
        Command::Rollback(args) => Ok(enforcer::cli::rollback::execute(&socket, &args)),
        Command::Feeds(command) => Ok(enforcer::cli::feeds::execute(&socket, command)),
        Command::Top(args) => Ok(enforcer::cli::top::execute(&socket, &args)),
        Command::Bundle(command) => enforcer::cli::bundle::execute(command)
            .map(|()| ExitCode::SUCCESS)
            .map_err(anyhow::Error::from),
    }
}

/// `--log-format`, else the daemon's config file's `log-format`, else text.
fn log_format(cli: &Cli) -> LogFormat {
    if let Some(format) = cli.log_format {
        return format;
    }
    match &cli.command {
        Command::Run(args) => args
            .config
            .as_deref()
            .and_then(|path| ConfigFile::load(path).ok())
            .and_then(|config| config.log_format)
            .unwrap_or_default(),
        _ => LogFormat::default(),
    }
}
