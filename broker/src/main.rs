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
    /// Topics: list (with how much is not in the table yet), describe, create, delete.
    Topics {
        /// A broker to talk to.
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// SASL users (SCRAM credentials in the metadata store): add, list, delete. Works on
    /// the metadata store of the settings given (stop an embedded-store broker first, or
    /// use AlterUserScramCredentials through a running one).
    Users {
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(subcommand)]
        command: UsersCommand,
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
enum TopicsCommand {
    /// Every topic: partitions, end offsets, offsets not yet in the table.
    List,
    /// A topic's partitions (start, end, last offset in the table) and its own configs.
    Describe { topic: String },
    /// Creates a topic.
    Create {
        topic: String,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// A topic config, `key=value` (repeatable), e.g. `retention.ms=86400000`.
        #[arg(long = "config")]
        configs: Vec<String>,
    },
    /// Deletes a topic (its records, and its table's rows, are gone).
    Delete { topic: String },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Adds a user (or sets a new password), with credentials for both SCRAM mechanisms
    /// unless --mechanism; PLAIN checks passwords against them.
    Add {
        user: String,
        /// The password (or ICESTREAM_USER_PASSWORD).
        #[arg(long, env = "ICESTREAM_USER_PASSWORD", hide_env_values = true)]
        password: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512 (default: both).
        #[arg(long)]
        mechanism: Option<String>,
        #[arg(long, default_value_t = 4096)]
        iterations: u32,
    },
    /// Every user and its mechanisms.
    List,
    /// Removes a user's credentials (one mechanism with --mechanism).
    Delete {
        user: String,
        #[arg(long)]
        mechanism: Option<String>,
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
    let tuned = icestream_storage::memory::tune_allocator();
    let cli = Cli::parse();
    // Colours only on a terminal: logs written to a file or a pipe stay plain text.
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if tuned {
        tracing::debug!(
            mmap_threshold = icestream_storage::memory::MMAP_THRESHOLD,
            trim_threshold = icestream_storage::memory::TRIM_THRESHOLD,
            "malloc tuned for round-sized buffers"
        );
    }
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
        Command::Topics { bootstrap, command } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(topics(&bootstrap, command))
        }
        Command::Schemas { registry, command } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(schemas(registry.trim_end_matches('/'), command))
        }
        Command::Users { settings, command } => {
            let settings = settings.load()?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(users(settings, command))
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

async fn topics(bootstrap: &str, command: TopicsCommand) -> anyhow::Result<()> {
    use icestream::topics_cli;
    match command {
        TopicsCommand::List => topics_cli::list(bootstrap).await,
        TopicsCommand::Describe { topic } => topics_cli::describe(bootstrap, &topic).await,
        TopicsCommand::Create {
            topic,
            partitions,
            configs,
        } => {
            let configs = topics_cli::parse_configs(&configs)?;
            topics_cli::create(bootstrap, &topic, partitions, &configs).await
        }
        TopicsCommand::Delete { topic } => topics_cli::delete(bootstrap, &topic).await,
    }
}

async fn groups(bootstrap: &str, command: GroupsCommand) -> anyhow::Result<()> {
    use icestream::groups_cli::{self, ResetTo};
    match command {
        GroupsCommand::List => groups_cli::list(bootstrap).await,
        GroupsCommand::Describe { group, topic } => {
            groups_cli::describe(bootstrap, &group, &topic).await
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
                (_, _, _, Some(t)) => ResetTo::Timestamp(groups_cli::parse_time(&t)?),
                _ => anyhow::bail!(
                    "give one of --to-earliest, --to-latest, --to-offset, --to-datetime"
                ),
            };
            groups_cli::reset(bootstrap, &group, &topic, to, execute)
                .await
                .map(|_| ())
        }
    }
}

async fn users(settings: Settings, command: UsersCommand) -> anyhow::Result<()> {
    use icestream::security::scram::{self, Mechanism};
    use std::sync::Arc;
    std::fs::create_dir_all(&settings.data_dir)?;
    let kv = icestream_storage::kv::open(&settings.metadata, &settings.data_dir)
        .await
        .context("opening the metadata store (an embedded store is locked while a broker runs)")?;
    let meta = icestream_storage::MetaStore::new(kv, Arc::new(icestream_storage::SystemClock));
    let mechanisms = |m: Option<String>| -> anyhow::Result<Vec<Mechanism>> {
        match m {
            None => Ok(Mechanism::ALL.to_vec()),
            Some(name) => Ok(vec![Mechanism::from_name(&name).with_context(|| {
                format!("unknown mechanism {name:?} (SCRAM-SHA-256 or SCRAM-SHA-512)")
            })?]),
        }
    };
    match command {
        UsersCommand::Add {
            user,
            password,
            mechanism,
            iterations,
        } => {
            anyhow::ensure!(!user.is_empty(), "the user name must not be empty");
            anyhow::ensure!(!password.is_empty(), "the password must not be empty");
            anyhow::ensure!(
                (scram::MIN_ITERATIONS..=scram::MAX_ITERATIONS).contains(&iterations),
                "iterations must be between {} and {}",
                scram::MIN_ITERATIONS,
                scram::MAX_ITERATIONS
            );
            for m in mechanisms(mechanism)? {
                let credential = scram::credential(m, &password, iterations);
                meta.set_scram_credential(&user, m.name(), &credential)
                    .await?;
                println!("{user}: {} credential set", m.name());
            }
        }
        UsersCommand::List => {
            for (user, mechanism, iterations) in meta.scram_users().await? {
                println!("{user}\t{mechanism}\titerations={iterations}");
            }
        }
        UsersCommand::Delete { user, mechanism } => {
            let mut any = false;
            for m in mechanisms(mechanism)? {
                any |= meta.delete_scram_credential(&user, m.name()).await?;
            }
            anyhow::ensure!(any, "user {user:?} has no such credentials");
            println!("{user}: deleted");
        }
    }
    Ok(())
}

async fn compactor(settings: Settings) -> anyhow::Result<()> {
    use std::sync::Arc;
    std::fs::create_dir_all(&settings.data_dir)?;
    let kv = icestream_storage::kv::open(&settings.metadata, &settings.data_dir).await?;
    let meta = icestream_storage::MetaStore::new(kv, Arc::new(icestream_storage::SystemClock));
    let objects = icestream_storage::Objects::open(&settings.object_store_url())?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let holder = format!("compactor-{}", uuid::Uuid::new_v4().simple());
    // The WAL the rounds release is collected here too: a standalone compactor beside
    // brokers with `compaction=false` leaves no segment behind.
    let gc = tokio::spawn(icestream_compactor::wal_gc::run(
        meta.clone(),
        objects.clone(),
        std::time::Duration::from_millis(settings.segment_grace_ms),
        std::time::Duration::from_millis(settings.gc_interval_ms),
        shutdown.clone(),
    ));
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
    gc.await?;
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
