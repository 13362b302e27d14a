//! The `edgewatch` command line: `run` the appliance, `check` a config, `tail`, `replay`, `probe`
//! (definition in cli.rs). Errors reach the user here, with context (anyhow).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

mod cli;
use cli::{Cli, Command, LogFormat};

use edgewatch::config::{self, SourceConfig};

/// The config `run` and `check` use without `--config`, when it exists.
const SYSTEM_CONFIG: &str = "/etc/edgewatch/edgewatch.toml";
/// Otherwise the demo, built into the binary (an installed binary has no `config/` next to it).
const DEMO_CONFIG: &str = include_str!("../config/demo.toml");
const DEMO_NAME: &str = "config/demo.toml (built in)";

/// Which config a command reads: the one given, else the system one, else the built-in demo.
fn choose_config(
    given: Option<PathBuf>,
) -> (Result<config::Resolved, config::ConfigError>, String) {
    let (loaded, which) = choose_config_all(given);
    (loaded.map_err(|mut e| e.swap_remove(0)), which)
}

/// `choose_config` with every error the file has (`check`).
fn choose_config_all(
    given: Option<PathBuf>,
) -> (Result<config::Resolved, Vec<config::ConfigError>>, String) {
    let path = given.or_else(|| {
        let p = PathBuf::from(SYSTEM_CONFIG);
        p.exists().then_some(p)
    });
    match path {
        Some(p) => (config::load_file_all(&p), p.display().to_string()),
        None => (
            config::parse_str(DEMO_CONFIG, Path::new(DEMO_NAME)).map_err(|e| vec![e]),
            format!("{DEMO_NAME}: no --config given and no {SYSTEM_CONFIG}"),
        ),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => {
            let given = config.is_some();
            let (loaded, which) = choose_config_all(config);
            if !given {
                eprintln!("checking {which}");
            }
            match loaded {
                Ok(r) => {
                    print_summary(&r);
                    for w in edgewatch::config::plaintext_credentials(&r.config) {
                        eprintln!("warning: {w}");
                    }
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    for e in &errors {
                        eprintln!("error: {e}");
                    }
                    if errors.len() > 1 {
                        eprintln!("{} errors", errors.len());
                    }
                    ExitCode::FAILURE
                }
            }
        }
        Command::Tail {
            urls,
            topics,
            token,
            device,
            kind,
            count,
            color,
        } => {
            use std::io::IsTerminal;
            let color = match color.as_str() {
                "always" => true,
                "never" => false,
                _ => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            };
            let opts = edgewatch::tail::TailOptions {
                urls,
                topics,
                token,
                device,
                kind,
                color,
                count,
            };
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(edgewatch::tail::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Replay {
            config,
            template,
            out,
            inputs,
            threads,
            ignore_columns,
        } => {
            let opts = edgewatch::replay::Options {
                config,
                template,
                out,
                inputs,
                threads,
                ignore_columns,
            };
            match edgewatch::replay::run(&opts) {
                Ok(report) => {
                    print_replay(&report, &opts.out);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Probe {
            config,
            source,
            seconds,
            listen,
        } => {
            init_logging(cli.log_format);
            let (loaded, which) = choose_config(config);
            let resolved = match loaded {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let opts = edgewatch::probe::Options {
                source,
                seconds,
                listen,
            };
            probe(&resolved, &opts, &which)
        }
        Command::Run { config } => {
            init_logging(cli.log_format);
            let (loaded, which) = choose_config(config);
            let resolved = match loaded {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            tracing::info!(config = %which, version = env!("CARGO_PKG_VERSION"), "starting");
            match edgewatch::app::run(resolved) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `edgewatch probe`: samples to stdout, the rest to the log (stderr), a tally at the end.
fn probe(resolved: &config::Resolved, opts: &edgewatch::probe::Options, which: &str) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(config = %which, source = %opts.source, "probing (no analysis, nothing stored); samples on stdout as `ts device metric value`");
    let mut out = std::io::stdout();
    let stop = async {
        // Without a signal handler Ctrl-C would end the process before the tally.
        let _ = tokio::signal::ctrl_c().await;
    };
    match rt.block_on(edgewatch::probe::run(resolved, opts, &mut out, stop)) {
        Ok(t) => {
            tracing::info!(
                samples = t.samples,
                frames_accepted = t.frames_accepted,
                frames_rejected = t.frames_rejected,
                "probe done"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` as a level and/or `target=level` list (`debug`, `warn,edgewatch=debug`); unset or
/// unparsable: `info`. `Targets` rather than `EnvFilter`: no span/field directives, but no regex
/// engine in the binary either (about 0.5 MB of the aarch64 build, see cross/README.md).
fn log_filter() -> tracing_subscriber::filter::Targets {
    let info = || tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO);
    match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => v.parse().unwrap_or_else(|e| {
            eprintln!("edgewatch: RUST_LOG={v:?} ignored ({e}); logging at info");
            info()
        }),
        _ => info(),
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::prelude::*;
    let filter = log_filter();
    if format == LogFormat::Json {
        tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init();
        return;
    }
    // Under systemd (it sets JOURNAL_STREAM): structured journald entries, fields kept as fields.
    if format == LogFormat::Auto && std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(layer) => {
                tracing_subscriber::registry()
                    .with(filter)
                    .with(layer.with_syslog_identifier("edgewatch".into()))
                    .init();
                return;
            }
            Err(e) => eprintln!("edgewatch: journald unavailable ({e}); logging to stderr"),
        }
    }
    use std::io::IsTerminal;
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
}

fn print_summary(r: &config::Resolved) {
    let c = &r.config;
    println!("{}: ok", r.path.display());
    println!(
        "node {}  data {}  api {}",
        c.node_id,
        c.data_dir.display(),
        c.api.listen
    );
    if let Some(f) = &c.api.token_file {
        println!("api requires the token in {}", f.display());
    }
    println!(
        "summaries every {}  snapshots every {}  shards {}",
        c.summary_interval,
        c.persist_interval,
        edgewatch::app::shard_count(r)
    );
    println!("sources ({}):", c.sources.len());
    for s in &c.sources {
        match s {
            SourceConfig::Sim(sim) => println!(
                "  {:<16} sim  {} simulated devices, every {}",
                sim.id,
                sim.devices.len(),
                sim.interval
            ),
            SourceConfig::Tcp(t) => println!(
                "  {:<16} tcp  {} {}  format {:?}  max frame {} B",
                t.id,
                t.mode.name(),
                t.mode.address(),
                t.format,
                t.max_frame
            ),
            SourceConfig::Serial(x) => println!(
                "  {:<16} serial  {} {} baud  format {}{}",
                x.id,
                x.port().describe(),
                x.baud,
                x.format,
                x.device
                    .as_ref()
                    .map(|d| format!("  device {d}"))
                    .unwrap_or_default()
            ),
            SourceConfig::Modbus(m) => println!(
                "  {:<16} modbus  {}  {} devices, {} points, every {}",
                m.id,
                m.rtu_port()
                    .map(|p| format!("rtu {} {} baud", p.describe(), p.baud))
                    .or(m.connect.as_ref().map(|c| format!("tcp {c}")))
                    .unwrap_or_default(),
                m.devices.len(),
                m.devices.iter().map(|d| d.points.len()).sum::<usize>(),
                m.interval
            ),
            SourceConfig::Mqtt(m) => {
                let topics: Vec<&str> = m.subscriptions.iter().map(|s| s.topic.as_str()).collect();
                println!("  {:<16} mqtt {}  topics {}", m.id, m.url, topics.join(" "))
            }
            SourceConfig::Udp(u) => println!(
                "  {:<16} udp  {}  format {}  max datagram {} B",
                u.id, u.listen, u.format, u.max_datagram
            ),
            SourceConfig::Http(h) => println!(
                "  {:<16} http  {}  format {}  max body {} B",
                h.id,
                h.listen
                    .map(|a| format!("http://{a}{}", h.path))
                    .unwrap_or_else(|| "POST /api/ingest on the API listener".into()),
                h.format,
                h.max_body
            ),
            SourceConfig::Host(h) => println!(
                "  {:<16} host  device {}  every {}  {} {}",
                h.id,
                h.device.as_deref().unwrap_or_default(),
                h.interval,
                h.proc_root.display(),
                h.sys_root.display()
            ),
            SourceConfig::File(f) => println!(
                "  {:<16} file  {}  every {}{}",
                f.id,
                f.patterns().join(" "),
                f.interval,
                f.preset
                    .map(|p| format!("  preset {p:?}").to_lowercase())
                    .unwrap_or_default()
            ),
            SourceConfig::Exec(x) => println!(
                "  {:<16} exec  {}  {}  format {}",
                x.id,
                x.command.join(" "),
                x.interval
                    .map(|i| format!("every {i}, timeout {}", x.timeout))
                    .unwrap_or_else(|| "long-running".into()),
                x.format
            ),
        }
    }
    for k in &c.sinks {
        match k {
            config::SinkConfig::Mqtt(m) => println!(
                "sink {:<11} mqtt {}  alerts to {}",
                m.id, m.url, m.alert_topic
            ),
            config::SinkConfig::PrometheusRemoteWrite(r) => println!(
                "sink {:<11} prometheus_remote_write {}  summaries and alerts as series",
                r.id, r.url
            ),
            _ => println!("sink {:<11} {} {}", k.id(), k.kind(), k.url()),
        }
    }
    println!("devices ({}):", r.devices.len());
    for (id, d) in &r.devices {
        let metrics: Vec<String> = d
            .metrics
            .iter()
            .map(|(m, p)| {
                let dets: Vec<&str> = p.detectors.iter().map(|x| x.name.as_str()).collect();
                format!("{m}[{}]", dets.join(","))
            })
            .collect();
        let other: Vec<&str> = d
            .default
            .detectors
            .iter()
            .map(|x| x.name.as_str())
            .collect();
        println!(
            "  {:<16} {}  other metrics [{}]{}",
            id,
            metrics.join(" "),
            other.join(","),
            d.source
                .as_ref()
                .map(|s| format!("  from {s}"))
                .unwrap_or_default()
        );
    }
    match &r.unknown {
        None => println!("unknown devices: rejected and counted"),
        Some(p) => {
            let dets: Vec<&str> = p.detectors.iter().map(|x| x.name.as_str()).collect();
            println!(
                "unknown devices: registered, detectors [{}]",
                dets.join(",")
            );
        }
    }
}

fn print_replay(r: &edgewatch::replay::Report, out: &std::path::Path) {
    for f in &r.files {
        println!(
            "{:<64} {:>7} rows {:>5} alerts",
            f.relative.display(),
            f.rows,
            f.alerts
        );
    }
    let rows = r.rows();
    println!(
        "replayed {} files, {} rows in {:.2} s ({:.0} rows/s); {} alerts ({:.1} per 10,000 samples); results in {}",
        r.files.len(),
        rows,
        r.seconds,
        rows as f64 / r.seconds.max(1e-9),
        r.alerts(),
        r.alerts() as f64 * 10_000.0 / (rows.max(1) as f64),
        out.display()
    );
}
