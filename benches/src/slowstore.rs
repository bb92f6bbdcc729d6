//! Serves icestream (as `icestream serve` does) over a local object store whose PUTs of
//! WAL segments answer `--put-delay-ms` later, as a remote object store does: the
//! latency benchmark's slow store (`benches/latency.sh`).
//!
//!   slowstore --listen 127.0.0.1:9092 --data-dir /tmp/slow --put-delay-ms 20 [--set k=v]

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use icestream::{Components, Server, Settings};
use icestream_storage::faults::{FaultyObjectStore, ObjectFaults};
use icestream_storage::Objects;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: String,
    #[arg(long)]
    data_dir: PathBuf,
    /// Latency added to every WAL segment PUT.
    #[arg(long, default_value_t = 20)]
    put_delay_ms: u64,
    /// Settings as `key=value`, as `icestream serve --set` takes them.
    #[arg(long = "set")]
    set: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut overrides = vec![
        ("listen".to_string(), args.listen.clone()),
        ("data_dir".to_string(), args.data_dir.display().to_string()),
        ("admin_listen".to_string(), String::new()),
        ("schema_registry_listen".to_string(), String::new()),
    ];
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv:?}: expected key=value"))?;
        overrides.push((k.to_string(), v.to_string()));
    }
    let settings = Settings::load(None, std::iter::empty(), &overrides)?;
    std::fs::create_dir_all(&settings.data_dir)?;
    let objects = Objects::open(&settings.object_store_url())?;
    let store = Arc::new(FaultyObjectStore {
        inner: objects.store.clone(),
        faults: Arc::new(ObjectFaults {
            key_filter: "wal/".into(),
            put_delay_ms: AtomicU64::new(args.put_delay_ms),
            ..ObjectFaults::default()
        }),
    });
    let server = Server::start_with(
        settings,
        Components {
            kv: None,
            objects: Some(objects.with_store(store)),
            clock: None,
        },
    )
    .await?;
    eprintln!(
        "serving on {} with WAL PUTs delayed by {} ms",
        args.listen, args.put_delay_ms
    );
    let stopped = server.token();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = stopped.cancelled() => {}
    }
    server.shutdown().await;
    Ok(())
}
