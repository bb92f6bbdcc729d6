//! The `icestream` command.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use icestream::{Server, Settings};

#[derive(Parser)]
#[command(
    name = "icestream",
    version,
    about = "A Kafka-compatible broker whose log is an Apache Iceberg table"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Default)]
struct SettingsArgs {
    /// TOML settings file (also ICESTREAM_CONFIG).
    #[arg(long, env = "ICESTREAM_CONFIG")]
    config: Option<PathBuf>,
    /// Kafka listener address.
    #[arg(long)]
    listen: Option<String>,
    /// host:port advertised to clients.
    #[arg(long)]
    advertised_listener: Option<String>,
    /// Data directory for embedded state.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Object store URL (file://, s3://, memory://).
    #[arg(long)]
    object_store: Option<String>,
    /// Metadata store URL (embedded, postgres://, fdb://).
    #[arg(long)]
    metadata: Option<String>,
    /// Any setting, as key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker.
    Serve(SettingsArgs),
    /// Run only the compactor (fold WAL segments into the topic tables), e.g. on its own
    /// machine next to brokers started with `--set compaction=false`.
    Compactor(SettingsArgs),
    /// Print the effective settings (after file, environment and flags) as TOML.
    Settings(SettingsArgs),
    /// Consumer groups: list, describe, reset offsets (replay).
    Groups {
        /// A broker to talk to.
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[command(subcommand)]
        command: GroupsCommand,
    },
    /// The schema registry: list subjects, show a schema, check or register one.
    Schemas {
        /// The registry's URL (a broker's `schema_registry_listen`).
        #[arg(long, default_value = "http://127.0.0.1:8081")]
        registry: String,
        #[command(subcommand)]
        command: SchemasCommand,
    },
}

#[derive(Subcommand)]
enum SchemasCommand {
    /// Every subject with its latest version and schema id.
    List,
    /// A subject's schema (the latest version unless --version).
    Show {
        subject: String,
        #[arg(long)]
        version: Option<i32>,
    },
    /// Whether a schema file may be registered under a subject (exit status 1 if not).
    Check {
        subject: String,
        /// The schema file (e.g. an .avsc).
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value = "AVRO")]
        schema_type: String,
    },
    /// Registers a schema file under a subject; prints its id.
    Register {
        subject: String,
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value = "AVRO")]
        schema_type: String,
    },
}

#[derive(Subcommand)]
enum GroupsCommand {
    /// Every group and its state.
    List,
    /// A group's state and committed offsets (and lag) on a topic.
    Describe {
        #[arg(long)]
        group: String,
        #[arg(long)]
        topic: String,
    },
    /// Moves a group's offsets on a topic (the group must have no active members).
    Reset {
        #[arg(long)]
        group: String,
        #[arg(long)]
        topic: String,
        #[arg(long, group = "target")]
        to_earliest: bool,
        #[arg(long, group = "target")]
        to_latest: bool,
        #[arg(long, group = "target")]
        to_offset: Option<i64>,
        /// Milliseconds since the epoch or `YYYY-MM-DDTHH:MM:SS[.mmm]Z`.
        #[arg(long, group = "target")]
        to_datetime: Option<String>,
        /// Commit the new offsets (without it, only print them).
        #[arg(long)]
        execute: bool,
    },
}

impl SettingsArgs {
    fn load(&self) -> anyhow::Result<Settings> {
        let mut overrides: Vec<(String, String)> = Vec::new();
        let mut flag = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                overrides.push((k.to_string(), v));
            }
        };
        flag("listen", self.listen.clone());
        flag("advertised_listener", self.advertised_listener.clone());
        flag(
            "data_dir",
            self.data_dir.as_ref().map(|p| p.display().to_string()),
        );
        flag("object_store", self.object_store.clone());
        flag("metadata", self.metadata.clone());
        for kv in &self.set {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--set {kv:?}: expected KEY=VALUE"))?;
            overrides.push((k.trim().to_string(), v.trim().to_string()));
        }
        Ok(Settings::load(
            self.config.as_deref(),
            std::env::vars(),
            &overrides,
        )?)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Settings(args) => {
            let settings = args.load()?;
            print!("{}", toml::to_string(&settings)?);
            Ok(())
        }
        Command::Groups { bootstrap, command } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(groups(&bootstrap, command))
        }
        Command::Schemas { registry, command } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(schemas(registry.trim_end_matches('/'), command))
        }
        Command::Compactor(args) => {
            let settings = args.load()?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(compactor(settings))
        }
        Command::Serve(args) => {
            let settings = args.load()?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve(settings))
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let server = Server::start(settings).await?;
    let stopped = server.token();
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down"),
        _ = stopped.cancelled() => {}
    }
    server.shutdown().await;
    Ok(())
}

async fn schemas(url: &str, command: SchemasCommand) -> anyhow::Result<()> {
    use icestream::registry::cli;
    match command {
        SchemasCommand::List => cli::list(url).await,
        SchemasCommand::Show { subject, version } => cli::show(url, &subject, version).await,
        SchemasCommand::Check {
            subject,
            file,
            schema_type,
        } => cli::check(url, &subject, &file, &schema_type).await,
        SchemasCommand::Register {
            subject,
            file,
            schema_type,
        } => cli::register(url, &subject, &file, &schema_type).await,
    }
}

async fn groups(bootstrap: &str, command: GroupsCommand) -> anyhow::Result<()> {
    use icestream::admin::{self, ResetTo};
    match command {
        GroupsCommand::List => admin::list(bootstrap).await,
        GroupsCommand::Describe { group, topic } => {
            admin::describe(bootstrap, &group, &topic).await
        }
        GroupsCommand::Reset {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            to_datetime,
            execute,
        } => {
            let to = match (to_earliest, to_latest, to_offset, to_datetime) {
                (true, _, _, _) => ResetTo::Earliest,
                (_, true, _, _) => ResetTo::Latest,
                (_, _, Some(o), _) => ResetTo::Offset(o),
                (_, _, _, Some(t)) => ResetTo::Timestamp(admin::parse_time(&t)?),
                _ => anyhow::bail!(
                    "give one of --to-earliest, --to-latest, --to-offset, --to-datetime"
                ),
            };
            admin::reset(bootstrap, &group, &topic, to, execute)
                .await
                .map(|_| ())
        }
    }
}

async fn compactor(settings: Settings) -> anyhow::Result<()> {
    use std::sync::Arc;
    std::fs::create_dir_all(&settings.data_dir)?;
    let kv = icestream_storage::kv::open(&settings.metadata, &settings.data_dir).await?;
    let meta = icestream_storage::MetaStore::new(kv, Arc::new(icestream_storage::SystemClock));
    let objects = icestream_storage::Objects::open(&settings.object_store_url())?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let holder = format!("compactor-{}", uuid::Uuid::new_v4().simple());
    let task = tokio::spawn(icestream::compaction::run(
        settings,
        meta,
        objects,
        None,
        holder,
        shutdown.clone(),
    ));
    shutdown_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    task.await?;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
