//! The `edgewatch` command line's definition (clap), apart from what the commands do (main.rs), so
//! the packaging helper `edgewatch-gen` (src/bin/edgewatch-gen.rs) builds man pages and completions from it.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "edgewatch",
    version,
    about = "Edge sensor collector: rolling statistics, anomaly alerts, live stream"
)]
pub struct Cli {
    /// Log format of `run`: auto (the journal under systemd, else text), text, or json (one JSON
    /// object per line on stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the appliance.
    Run {
        /// Config file (TOML) [default: /etc/edgewatch/edgewatch.toml when it exists, else the
        /// built-in demo config]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and print what it sets up, or every error it finds.
    Check {
        /// Config file (TOML) [default: /etc/edgewatch/edgewatch.toml when it exists, else the
        /// built-in demo config]
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Follow an appliance's live stream: one line per alert or summary.
    Tail {
        /// Appliances, e.g. ws://raspberrypi.local:8080 (the /ws path is added when missing), and/or
        /// MQTT brokers their MQTT sinks publish to, e.g. mqtt://broker:1883; several are followed
        /// at once, each line then starting with the node's name.
        #[arg(required = true, num_args = 1..)]
        urls: Vec<String>,
        /// MQTT topic to follow on brokers (repeatable; default: the MQTT sink's alert, summary
        /// and status topics of every node).
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Bearer token, when the appliance's API requires one (or set EDGEWATCH_TOKEN).
        #[arg(long, env = "EDGEWATCH_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Only this device.
        #[arg(long)]
        device: Option<String>,
        /// Only this kind of event.
        #[arg(long = "type", value_parser = ["alert", "summary"])]
        kind: Option<String>,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Colours: auto (on a terminal), always, never.
        #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"])]
        color: String,
    },
    /// Run the analysis over CSV files of `timestamp,value` rows (no network) and write each
    /// row's anomaly score and firing flag under OUT_DIR, at the same relative paths.
    Replay {
        /// Config file; without it, the default detector set.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Template of the config to analyse with (default: the unknown-device template).
        #[arg(long)]
        template: Option<String>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// CSV files, or directories searched for `*.csv`.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Worker threads (0 = one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Columns of a multi-column file that are not metrics (labels), comma-separated.
        #[arg(long, value_delimiter = ',')]
        ignore_columns: Vec<String>,
    },
    /// Run one source of the config alone and print every sample it decodes (`ts device metric
    /// value`, one per line), with bad frames and their reasons in the log: no analysis, no
    /// store. To see what a sensor sends before describing its devices.
    Probe {
        /// Config file (TOML) [default: /etc/edgewatch/edgewatch.toml when it exists, else the
        /// built-in demo config]
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The `id` of the source to run.
        #[arg(long)]
        source: String,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
        /// A TCP server source listens here instead (the service may hold the configured port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
}
