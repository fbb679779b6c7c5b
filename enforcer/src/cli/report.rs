//! `enforcer report`: the compliance report by site, from a Prometheus server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use crate::report::{self, Options, ReportError};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example: enforcer report --prometheus http://127.0.0.1:9090 --since 30d --out compliance.html --csv compliance.csv"
)]
pub struct ReportArgs {
    /// The Prometheus server that scrapes the gateways (http:// or https://).
    #[arg(long, value_name = "URL")]
    pub prometheus: String,
    /// The period, ending now: 30m, 12h, 7d, 2w, 1h30m (as Prometheus writes durations).
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    pub since: String,
    /// The HTML report to write.
    #[arg(long, value_name = "FILE.html", default_value = "report.html")]
    pub out: PathBuf,
    /// Also write the table as CSV.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
}

pub fn execute(args: &ReportArgs) -> Result<ExitCode, ReportError> {
    let options = Options {
        prometheus: args.prometheus.clone(),
        since: report::duration::parse(&args.since)?,
        since_text: args.since.clone(),
        out: args.out.clone(),
        csv: args.csv.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ReportError::Runtime(source.to_string()))?;
    let outcome = runtime.block_on(report::run(&options, SystemTime::now()))?;
    println!(
        "wrote {} ({} rows from {} series){}",
        options.out.display(),
        outcome.rows,
        outcome.series,
        options
            .csv
            .as_ref()
            .map(|p| format!(" and {}", p.display()))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}
