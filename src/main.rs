//! The `streamgate` binary: arguments → configuration → its [`server::Parts`] → telemetry →
//! [`server::run`]; and two subcommands that do not serve: `check-config` (which builds the
//! parts as serving would, and stops there) and `probe` (the image's health check).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use streamgate::config::{Config, LogFormat, parse_duration};
use streamgate::server::{self, Parts};
use streamgate::{probe, runtime, telemetry};

/// mimalloc instead of the system allocator: a call allocates and frees a few hundred small
/// blocks (headers, spans, protobuf messages), and glibc's malloc and free were ~17% of the
/// instructions of a GetProvider call (docs/PERFORMANCE.md). Built without transparent huge
/// pages (`no_thp`): with them, mimalloc's 2 MiB-aligned segments made the idle RSS 30 MiB
/// instead of 19.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A provider-neutral gRPC gateway for the lifecycle of video streams.
///
/// With no arguments it serves on 127.0.0.1:50051 with one `local` provider and an embedded
/// SQLite store under ./data/.
#[derive(Parser)]
#[command(name = "streamgate", version)]
struct Args {
    /// The TOML configuration file (default: $STREAMGATE_CONFIG, else the embedded default).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The address to serve on (overrides [server] listen and $STREAMGATE_LISTEN).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The log format (overrides [telemetry] log_format and $STREAMGATE_LOG_FORMAT).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Loads and validates a configuration file, then exits.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Asks a running gateway's grpc.health.v1 whether it is serving (plaintext); exits 0 when
    /// it is SERVING, 1 otherwise. Loads no configuration.
    Probe {
        /// The gateway's gRPC address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051")]
        addr: SocketAddr,
        /// The service to ask about; empty: the server as a whole.
        #[arg(long, default_value = "")]
        service: String,
        /// How long to wait for the answer, connecting included.
        #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
        timeout: Duration,
    },
}

async fn run_probe(addr: SocketAddr, service: &str, bound: Duration) -> ExitCode {
    match probe::check(addr, service, bound).await {
        Ok(status) => {
            println!("{}", status.as_str_name());
            if status == probe::ServingStatus::Serving {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("streamgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration the arguments and `env` name, and its parts, or why it cannot be served.
fn load(args: &Args, env: &HashMap<String, String>) -> Result<(Config, Parts), String> {
    let path = match &args.command {
        Some(Command::CheckConfig { file }) => Some(file.as_path()),
        Some(Command::Probe { .. }) | None => args.config.as_deref(),
    };
    let mut config = Config::load(path, env).map_err(|e| e.to_string())?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(format) = args.log_format {
        config.telemetry.log_format = format;
    }
    config.validate().map_err(|e| e.to_string())?;
    let parts = Parts::build(&config).map_err(|e| e.to_string())?;
    Ok((config, parts))
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Probe {
        addr,
        service,
        timeout,
    }) = &args.command
    {
        return on_runtime(1, run_probe(*addr, service, *timeout));
    }
    let env: HashMap<String, String> = std::env::vars().collect();
    let (config, parts) = match load(&args, &env) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("streamgate: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::CheckConfig { file }) = &args.command {
        println!(
            "{}: ok ({} provider instance(s): {})",
            file.display(),
            config.providers.len(),
            config
                .providers
                .iter()
                .map(|p| format!("{} ({})", p.id, p.kind))
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::SUCCESS;
    }
    on_runtime(config.server.worker_threads, serve(config, parts))
}

/// Runs `work` on a runtime of `workers` workers ([`runtime::build`]).
fn on_runtime(workers: usize, work: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match runtime::build(workers) {
        Ok(runtime) => runtime.block_on(work),
        Err(e) => {
            eprintln!("streamgate: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, parts: Parts) -> ExitCode {
    let _logs = match telemetry::init(&config.telemetry) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("streamgate: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.server.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("streamgate: cannot listen on {}: {e}", config.server.listen);
            return ExitCode::FAILURE;
        }
    };
    match server::run(listener, parts, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamgate: {e}");
            ExitCode::FAILURE
        }
    }
}
