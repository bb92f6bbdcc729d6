//! `icestream schemas`: the registry from the command line, over its REST API (so it
//! works against any broker, and against Confluent's registry too).

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

async fn call(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request
        .header(reqwest::header::ACCEPT, CONTENT_TYPE)
        .send()
        .await
        .context("schema registry unreachable")?;
    let status = response.status();
    let body: Value = response.json().await.context("schema registry answer")?;
    if !status.is_success() {
        bail!(
            "{} (error code {})",
            body["message"].as_str().unwrap_or("request failed"),
            body["error_code"]
        );
    }
    Ok(body)
}

fn schema_body(file: &std::path::Path, schema_type: &str) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(json!({"schema": text, "schemaType": schema_type}))
}

/// Every subject with its latest version and schema id.
pub async fn list(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let subjects = call(client.get(format!("{url}/subjects"))).await?;
    println!("{:<48} {:>8} {:>10}", "SUBJECT", "VERSION", "SCHEMA ID");
    for s in subjects.as_array().into_iter().flatten() {
        let Some(subject) = s.as_str() else { continue };
        let latest = call(client.get(format!("{url}/subjects/{subject}/versions/latest"))).await?;
        println!(
            "{subject:<48} {:>8} {:>10}",
            latest["version"], latest["id"]
        );
    }
    Ok(())
}

/// A subject's version (default: the latest), its id and schema.
pub async fn show(url: &str, subject: &str, version: Option<i32>) -> anyhow::Result<()> {
    let version = version.map_or("latest".to_string(), |v| v.to_string());
    let v =
        call(reqwest::Client::new().get(format!("{url}/subjects/{subject}/versions/{version}")))
            .await?;
    println!(
        "subject: {subject}\nversion: {}\nid: {}",
        v["version"], v["id"]
    );
    let schema = v["schema"].as_str().unwrap_or_default();
    match serde_json::from_str::<Value>(schema) {
        Ok(parsed) => println!("{}", serde_json::to_string_pretty(&parsed)?),
        Err(_) => println!("{schema}"),
    }
    Ok(())
}

/// Whether the schema in `file` may be registered under `subject`; fails if not.
pub async fn check(
    url: &str,
    subject: &str,
    file: &std::path::Path,
    schema_type: &str,
) -> anyhow::Result<()> {
    let r = call(
        reqwest::Client::new()
            .post(format!(
                "{url}/compatibility/subjects/{subject}/versions?verbose=true"
            ))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(schema_body(file, schema_type)?.to_string()),
    )
    .await?;
    if r["is_compatible"].as_bool() == Some(true) {
        println!("compatible");
        return Ok(());
    }
    for m in r["messages"].as_array().into_iter().flatten() {
        println!("{}", m.as_str().unwrap_or_default());
    }
    bail!("not compatible with {subject}")
}

/// Registers the schema in `file` under `subject`; prints its id.
pub async fn register(
    url: &str,
    subject: &str,
    file: &std::path::Path,
    schema_type: &str,
) -> anyhow::Result<()> {
    let r = call(
        reqwest::Client::new()
            .post(format!("{url}/subjects/{subject}/versions"))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(schema_body(file, schema_type)?.to_string()),
    )
    .await?;
    println!("{}", r["id"]);
    Ok(())
}
