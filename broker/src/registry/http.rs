//! The registry's REST API, as Confluent Schema Registry serves it (paths, query
//! parameters, bodies, `application/vnd.schemaregistry.v1+json`, error bodies with
//! `error_code` and `message`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use icestream_storage::meta::{SchemaReference, StoredSchema, SubjectVersion};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Registry, RegistryError, SchemaInput, VersionRef};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type Params = Query<HashMap<String, String>>;
type Shared = State<Arc<Registry>>;

pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    security: Arc<crate::security::Security>,
    shutdown: CancellationToken,
) {
    // With HTTP authentication on, every request needs a user's password (HTTP basic),
    // as Confluent's registry with basic authentication.
    let app = router(registry).layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let security = security.clone();
            async move {
                let authorization = request
                    .headers()
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                match security.http(authorization).await {
                    crate::security::HttpAuth::Allowed(_) => next.run(request).await,
                    crate::security::HttpAuth::Denied => (
                        StatusCode::UNAUTHORIZED,
                        [
                            (header::WWW_AUTHENTICATE, "Basic realm=\"icestream\""),
                            (header::CONTENT_TYPE, CONTENT_TYPE),
                        ],
                        json!({"error_code": 401, "message": "Unauthorized"}).to_string(),
                    )
                        .into_response(),
                }
            }
        },
    ));
    crate::http_serve::serve(
        "schema registry",
        listener,
        app,
        crate::http_serve::Limits {
            max_connections: 256,
            ..Default::default()
        },
        shutdown,
    )
    .await;
}

pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/", get(|| async { reply(Ok(json!({}))) }))
        .route(
            "/schemas/types",
            get(|| async { reply(Ok(json!(super::SCHEMA_TYPES))) }),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(raw_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatibility_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility_one),
        )
        .route(
            "/config",
            get(global_config)
                .put(put_global_config)
                .delete(delete_global_config),
        )
        .route(
            "/config/{subject}",
            get(subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route("/mode", get(global_mode).put(put_global_mode))
        .route(
            "/mode/{subject}",
            get(subject_mode)
                .put(put_subject_mode)
                .delete(delete_subject_mode),
        )
        .fallback(|| async {
            reply(Err(RegistryError {
                code: 404,
                message: "HTTP 404 Not Found".into(),
            }))
        })
        .with_state(registry)
}

fn reply(result: Result<Value, RegistryError>) -> Response {
    let (status, body) = match result {
        Ok(v) => (StatusCode::OK, v),
        Err(e) => (
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            json!({"error_code": e.code, "message": e.message}),
        ),
    };
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

fn raw(result: Result<String, RegistryError>) -> Response {
    match result {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => reply(Err(e)),
    }
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn parse_id(id: &str) -> Result<i32, RegistryError> {
    id.parse().map_err(|_| RegistryError {
        code: 40403,
        message: "Schema not found".into(),
    })
}

/// A schema in responses (its text rendered as asked): `schemaType` only when not Avro,
/// `references` when any.
fn schema_fields(stored: &StoredSchema, text: String, into: &mut serde_json::Map<String, Value>) {
    into.insert("schema".into(), json!(text));
    if stored.schema_type != "AVRO" {
        into.insert("schemaType".into(), json!(stored.schema_type));
    }
    if !stored.references.is_empty() {
        into.insert("references".into(), json!(stored.references));
    }
}

fn version_body(subject: &str, v: &SubjectVersion, stored: &StoredSchema, text: String) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("subject".into(), json!(subject));
    m.insert("version".into(), json!(v.version));
    m.insert("id".into(), json!(v.id));
    schema_fields(stored, text, &mut m);
    Value::Object(m)
}

fn format(q: &HashMap<String, String>) -> Option<&str> {
    q.get("format").map(String::as_str)
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<SchemaReference>>,
    #[serde(default)]
    id: Option<i32>,
    #[serde(default)]
    version: Option<i32>,
}

fn schema_input(body: &Bytes) -> Result<SchemaInput, RegistryError> {
    let b: SchemaBody = serde_json::from_slice(body).map_err(|e| RegistryError {
        code: 42201,
        message: format!("Invalid request body: {e}"),
    })?;
    Ok(SchemaInput {
        schema: b.schema,
        schema_type: b.schema_type,
        references: b.references.unwrap_or_default(),
        id: b.id,
        version: b.version,
    })
}

async fn schema_by_id(State(r): Shared, Path(id): Path<String>, Query(q): Params) -> Response {
    let result = async {
        let stored = r.schema(parse_id(&id)?).await?;
        let text = r.render(&stored, format(&q)).await?;
        let mut m = serde_json::Map::new();
        schema_fields(&stored, text, &mut m);
        Ok(Value::Object(m))
    }
    .await;
    reply(result)
}

async fn raw_schema_by_id(State(r): Shared, Path(id): Path<String>, Query(q): Params) -> Response {
    raw(async {
        let stored = r.schema(parse_id(&id)?).await?;
        r.render(&stored, format(&q)).await
    }
    .await)
}

async fn subjects_of_id(State(r): Shared, Path(id): Path<String>) -> Response {
    let result = async {
        let mut subjects: Vec<String> = r
            .usages(parse_id(&id)?)
            .await?
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        subjects.dedup();
        Ok(json!(subjects))
    }
    .await;
    reply(result)
}

async fn versions_of_id(State(r): Shared, Path(id): Path<String>) -> Response {
    let result = async {
        let usages = r.usages(parse_id(&id)?).await?;
        Ok(json!(usages
            .into_iter()
            .map(|(s, v)| json!({"subject": s, "version": v}))
            .collect::<Vec<_>>()))
    }
    .await;
    reply(result)
}

async fn subjects(State(r): Shared, Query(q): Params) -> Response {
    let prefix = q.get("subjectPrefix").map_or("", String::as_str);
    reply(
        r.subjects(flag(&q, "deleted"), prefix)
            .await
            .map(|s| json!(s)),
    )
}

async fn versions(State(r): Shared, Path(subject): Path<String>, Query(q): Params) -> Response {
    reply(
        r.versions(&subject, flag(&q, "deleted"))
            .await
            .map(|v| json!(v)),
    )
}

async fn register(State(r): Shared, Path(subject): Path<String>, body: Bytes) -> Response {
    let result = async {
        let input = schema_input(&body)?;
        let id = r.register(&subject, &input).await?;
        Ok(json!({ "id": id }))
    }
    .await;
    reply(result)
}

async fn lookup(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let result = async {
        let input = schema_input(&body)?;
        let (v, stored) = r.lookup(&subject, &input, flag(&q, "deleted")).await?;
        let text = r.render(&stored, format(&q)).await?;
        Ok(version_body(&subject, &v, &stored, text))
    }
    .await;
    reply(result)
}

async fn delete_subject(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(q): Params,
) -> Response {
    reply(
        r.delete_subject(&subject, flag(&q, "permanent"))
            .await
            .map(|v| json!(v)),
    )
}

async fn version(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> Response {
    let result = async {
        let (v, stored) = r
            .version(&subject, VersionRef::parse(&version)?, flag(&q, "deleted"))
            .await?;
        let text = r.render(&stored, format(&q)).await?;
        Ok(version_body(&subject, &v, &stored, text))
    }
    .await;
    reply(result)
}

async fn raw_version(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> Response {
    let result = async {
        let (_, stored) = r
            .version(&subject, VersionRef::parse(&version)?, flag(&q, "deleted"))
            .await?;
        r.render(&stored, format(&q)).await
    }
    .await;
    raw(result)
}

async fn referenced_by(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
) -> Response {
    let result = async {
        let ids = r
            .referenced_by(&subject, VersionRef::parse(&version)?)
            .await?;
        Ok(json!(ids))
    }
    .await;
    reply(result)
}

async fn delete_version(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> Response {
    let result = async {
        let v = r
            .delete_version(
                &subject,
                VersionRef::parse(&version)?,
                flag(&q, "permanent"),
            )
            .await?;
        Ok(json!(v))
    }
    .await;
    reply(result)
}

fn compatibility_body(messages: Vec<String>, verbose: bool) -> Value {
    if verbose {
        json!({"is_compatible": messages.is_empty(), "messages": messages})
    } else {
        json!({"is_compatible": messages.is_empty()})
    }
}

async fn compatibility_all(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let result = async {
        let input = schema_input(&body)?;
        let messages = r.test_compatibility(&subject, &input, None).await?;
        Ok(compatibility_body(messages, flag(&q, "verbose")))
    }
    .await;
    reply(result)
}

async fn compatibility_one(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let result = async {
        let input = schema_input(&body)?;
        let against = VersionRef::parse(&version)?;
        let messages = r
            .test_compatibility(&subject, &input, Some(against))
            .await?;
        Ok(compatibility_body(messages, flag(&q, "verbose")))
    }
    .await;
    reply(result)
}

#[derive(Deserialize)]
struct ConfigBody {
    compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
}

async fn put_config(r: &Registry, subject: Option<&str>, body: &Bytes) -> Response {
    let result = async {
        let b: ConfigBody = serde_json::from_slice(body).map_err(|e| RegistryError {
            code: 42203,
            message: format!("Invalid compatibility level: {e}"),
        })?;
        let level = b
            .compatibility
            .or(b.compatibility_level)
            .ok_or_else(|| RegistryError {
                code: 42203,
                message: "Invalid compatibility level: none given".into(),
            })?;
        let level = r.set_config(subject, &level).await?;
        Ok(json!({ "compatibility": level }))
    }
    .await;
    reply(result)
}

async fn global_config(State(r): Shared) -> Response {
    reply(
        r.config(None, true)
            .await
            .map(|l| json!({ "compatibilityLevel": l })),
    )
}

async fn put_global_config(State(r): Shared, body: Bytes) -> Response {
    put_config(&r, None, &body).await
}

async fn delete_global_config(State(r): Shared) -> Response {
    reply(
        r.delete_config(None)
            .await
            .map(|l| json!({ "compatibilityLevel": l })),
    )
}

async fn subject_config(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(q): Params,
) -> Response {
    reply(
        r.config(Some(&subject), flag(&q, "defaultToGlobal"))
            .await
            .map(|l| json!({ "compatibilityLevel": l })),
    )
}

async fn put_subject_config(
    State(r): Shared,
    Path(subject): Path<String>,
    body: Bytes,
) -> Response {
    put_config(&r, Some(&subject), &body).await
}

async fn delete_subject_config(State(r): Shared, Path(subject): Path<String>) -> Response {
    reply(
        r.delete_config(Some(&subject))
            .await
            .map(|l| json!({ "compatibilityLevel": l })),
    )
}

#[derive(Deserialize)]
struct ModeBody {
    mode: String,
}

async fn put_mode(r: &Registry, subject: Option<&str>, force: bool, body: &Bytes) -> Response {
    let result = async {
        let b: ModeBody = serde_json::from_slice(body).map_err(|e| RegistryError {
            code: 42204,
            message: format!("Invalid mode: {e}"),
        })?;
        let mode = r
            .set_mode(subject, Some(&b.mode.to_ascii_uppercase()), force)
            .await?;
        Ok(json!({ "mode": mode }))
    }
    .await;
    reply(result)
}

async fn global_mode(State(r): Shared) -> Response {
    reply(r.mode(None, true).await.map(|m| json!({ "mode": m })))
}

async fn put_global_mode(State(r): Shared, Query(q): Params, body: Bytes) -> Response {
    put_mode(&r, None, flag(&q, "force"), &body).await
}

async fn subject_mode(State(r): Shared, Path(subject): Path<String>, Query(q): Params) -> Response {
    reply(
        r.mode(Some(&subject), flag(&q, "defaultToGlobal"))
            .await
            .map(|m| json!({ "mode": m })),
    )
}

async fn put_subject_mode(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(q): Params,
    body: Bytes,
) -> Response {
    put_mode(&r, Some(&subject), flag(&q, "force"), &body).await
}

async fn delete_subject_mode(State(r): Shared, Path(subject): Path<String>) -> Response {
    reply(
        r.set_mode(Some(&subject), None, false)
            .await
            .map(|m| json!({ "mode": m })),
    )
}
