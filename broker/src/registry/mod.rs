//! The schema registry, Confluent-compatible: subjects and their versions, schemas by
//! global id (the same schema gets the same id under every subject), compatibility
//! levels checked on registration, modes, soft and hard deletes. The state is in the
//! metadata store (`icestream_storage::meta::schemas`), so every broker serves the same
//! registry; `http` serves it at `schema_registry_listen`.
//!
//! Schema types: Avro (with references; Avro's resolution rules), JSON Schema (set
//! inclusion) and Protobuf (`.proto` source or serialized descriptors, with references
//! as imports; Confluent's wire-compatibility rules).

mod avro;
pub mod cli;
pub mod http;
mod json;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use icestream_storage::meta::{
    Imported, Registered, RegistrySetting, SchemaReference, StoredSchema, SubjectVersion,
};
use icestream_storage::{MetaError, MetaStore};
use sha2::{Digest, Sha256};

/// An error as the registry's clients expect it: Confluent's error code (the HTTP status
/// is its first three digits) and a message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} (error code {code})")]
pub struct RegistryError {
    pub code: u32,
    pub message: String,
}

impl RegistryError {
    fn new(code: u32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> u16 {
        let status = if self.code >= 10_000 {
            self.code / 100
        } else {
            self.code
        };
        u16::try_from(status).unwrap_or(500)
    }

    fn subject_not_found(subject: &str) -> Self {
        Self::new(40401, format!("Subject '{subject}' not found."))
    }

    fn version_not_found(version: i32) -> Self {
        Self::new(40402, format!("Version {version} not found."))
    }

    fn schema_not_found() -> Self {
        Self::new(40403, "Schema not found")
    }

    pub fn invalid_schema(message: impl Into<String>) -> Self {
        Self::new(42201, message)
    }

    pub fn invalid_version(version: &str) -> Self {
        Self::new(
            42202,
            format!(
                "The specified version '{version}' is not a valid version id. Allowed values \
                 are between [1, 2^31-1] and the string \"latest\""
            ),
        )
    }

    fn store(e: &MetaError) -> Self {
        tracing::warn!(error = %e, "schema registry: metadata store");
        Self::new(50001, format!("Error in the backend data store: {e}"))
    }
}

type Result<T> = std::result::Result<T, RegistryError>;

/// Compatibility levels.
const LEVELS: &[&str] = &[
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
];
const DEFAULT_LEVEL: &str = "BACKWARD";
const MODES: &[&str] = &["READWRITE", "READONLY", "READONLY_OVERRIDE", "IMPORT"];
const DEFAULT_MODE: &str = "READWRITE";
/// The schema types served.
pub(crate) const SCHEMA_TYPES: &[&str] = &["JSON", "PROTOBUF", "AVRO"];
/// How long produce-side validation trusts its view of a subject's schema ids.
const IDS_TTL: Duration = Duration::from_secs(5);

/// A schema as a client gives it.
#[derive(Debug, Clone, Default)]
pub struct SchemaInput {
    pub schema: String,
    /// `AVRO` when absent.
    pub schema_type: Option<String>,
    pub references: Vec<SchemaReference>,
    /// The global id to register under (IMPORT mode only).
    pub id: Option<i32>,
    /// The subject version to register as (IMPORT mode; otherwise only the next one).
    pub version: Option<i32>,
}

/// Which version of a subject: a number or the latest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    Latest,
    Number(i32),
}

impl VersionRef {
    pub fn parse(s: &str) -> Result<Self> {
        if s == "latest" {
            return Ok(VersionRef::Latest);
        }
        match s.parse::<i32>() {
            Ok(-1) => Ok(VersionRef::Latest),
            Ok(n) if n >= 1 => Ok(VersionRef::Number(n)),
            _ => Err(RegistryError::invalid_version(s)),
        }
    }
}

/// A parsed schema, ready to store and compare.
struct Parsed {
    stored: StoredSchema,
    /// The texts of the schemas it references.
    references: Vec<String>,
    /// Protobuf: the compiled schema.
    proto: Option<icestream_compactor::proto::Compiled>,
    fingerprint: Vec<u8>,
}

pub struct Registry {
    meta: MetaStore,
    /// Schema ids registered under each subject, for Produce validation.
    ids: std::sync::Mutex<HashMap<String, (Instant, HashSet<i32>)>>,
}

impl Registry {
    pub fn new(meta: MetaStore) -> Self {
        Self {
            meta,
            ids: std::sync::Mutex::new(HashMap::new()),
        }
    }

    async fn versions_of(&self, subject: &str) -> Result<Vec<SubjectVersion>> {
        self.meta
            .subject_versions(subject)
            .await
            .map_err(|e| RegistryError::store(&e))
    }

    pub async fn schema(&self, id: i32) -> Result<StoredSchema> {
        self.meta
            .schema_by_id(id)
            .await
            .map_err(|e| RegistryError::store(&e))?
            .ok_or_else(RegistryError::schema_not_found)
    }

    async fn parse(&self, input: &SchemaInput) -> Result<Parsed> {
        let schema_type = input
            .schema_type
            .clone()
            .unwrap_or_else(|| "AVRO".into())
            .to_ascii_uppercase();
        if !SCHEMA_TYPES.contains(&schema_type.as_str()) {
            return Err(RegistryError::invalid_schema(format!(
                "Invalid schema type {schema_type}: this registry serves {SCHEMA_TYPES:?}"
            )));
        }
        let mut texts = Vec::with_capacity(input.references.len());
        let mut named = Vec::with_capacity(input.references.len());
        for r in &input.references {
            let (_, referenced) = self
                .version(&r.subject, VersionRef::Number(r.version), true)
                .await
                .map_err(|e| {
                    RegistryError::invalid_schema(format!(
                        "Invalid schema reference {} ({} version {}): {}",
                        r.name, r.subject, r.version, e.message
                    ))
                })?;
            named.push((r.name.clone(), referenced.schema.clone()));
            texts.push(referenced.schema);
        }
        let mut proto = None;
        let text = match schema_type.as_str() {
            "JSON" => json::parse(&input.schema, &texts),
            "PROTOBUF" => icestream_compactor::proto::compile(&input.schema, &named)
                .map(|compiled| {
                    proto = Some(compiled);
                    input.schema.trim().to_string()
                })
                .map_err(|e| format!("Invalid schema: {e}")),
            _ => avro::parse(&input.schema, &texts),
        }
        .map_err(RegistryError::invalid_schema)?;
        let stored = StoredSchema {
            schema_type,
            schema: text,
            references: input.references.clone(),
        };
        let mut hash = Sha256::new();
        hash.update(stored.schema_type.as_bytes());
        hash.update([0]);
        hash.update(stored.schema.as_bytes());
        for r in &stored.references {
            hash.update([0]);
            hash.update(format!("{}\u{0}{}\u{0}{}", r.name, r.subject, r.version).as_bytes());
        }
        Ok(Parsed {
            stored,
            references: texts,
            proto,
            fingerprint: hash.finalize().to_vec(),
        })
    }

    async fn parse_stored(&self, stored: &StoredSchema) -> Result<Parsed> {
        self.parse(&SchemaInput {
            schema: stored.schema.clone(),
            schema_type: Some(stored.schema_type.clone()),
            references: stored.references.clone(),
            ..SchemaInput::default()
        })
        .await
    }

    async fn setting(
        &self,
        kind: RegistrySetting,
        subject: Option<&str>,
    ) -> Result<Option<String>> {
        self.meta
            .registry_setting(kind, subject)
            .await
            .map_err(|e| RegistryError::store(&e))
    }

    /// The compatibility level in force for `subject`.
    async fn level(&self, subject: &str) -> Result<String> {
        if let Some(level) = self
            .setting(RegistrySetting::Compatibility, Some(subject))
            .await?
        {
            return Ok(level);
        }
        Ok(self
            .setting(RegistrySetting::Compatibility, None)
            .await?
            .unwrap_or_else(|| DEFAULT_LEVEL.into()))
    }

    /// The subject's mode, once it may be written: read-only subjects are refused.
    async fn check_writable(&self, subject: &str) -> Result<String> {
        let mode = match self.setting(RegistrySetting::Mode, Some(subject)).await? {
            Some(m) => m,
            None => self
                .setting(RegistrySetting::Mode, None)
                .await?
                .unwrap_or_else(|| DEFAULT_MODE.into()),
        };
        if mode.starts_with("READONLY") {
            return Err(RegistryError::new(
                42205,
                format!("Subject {subject} is in read-only mode"),
            ));
        }
        Ok(mode)
    }

    /// The reasons `new` may not follow `versions` of the subject under `level` (empty:
    /// compatible). Versions are the live ones, oldest first.
    async fn incompatibilities(
        &self,
        new: &Parsed,
        versions: &[SubjectVersion],
        level: &str,
    ) -> Result<Vec<String>> {
        if level == "NONE" || versions.is_empty() {
            return Ok(Vec::new());
        }
        let against: &[SubjectVersion] = if level.ends_with("_TRANSITIVE") {
            versions
        } else {
            &versions[versions.len() - 1..]
        };
        let backward = level.starts_with("BACKWARD") || level.starts_with("FULL");
        let forward = level.starts_with("FORWARD") || level.starts_with("FULL");
        let mut messages = Vec::new();
        for v in against.iter().rev() {
            let old = self.schema(v.id).await?;
            if old.schema_type != new.stored.schema_type {
                messages.push(format!(
                    "Incompatible because of different schema type (version {})",
                    v.version
                ));
                continue;
            }
            let old = self.parse_stored(&old).await?;
            let kind = new.stored.schema_type.clone();
            let can_read = |w: &Parsed, r: &Parsed| match (kind.as_str(), &w.proto, &r.proto) {
                ("JSON", ..) => json::can_read(&w.stored.schema, &r.stored.schema),
                ("PROTOBUF", Some(wp), Some(rp)) => icestream_compactor::proto::can_read(wp, rp),
                _ => avro::can_read(
                    (w.stored.schema.as_str(), w.references.as_slice()),
                    (r.stored.schema.as_str(), r.references.as_slice()),
                ),
            };
            let (old, new) = (&old, new);
            if backward {
                if let Err(e) = can_read(old, new) {
                    messages.push(format!(
                        "{{oldSchemaVersion: {}, compatibility: '{level}', reader can not read \
                         data written with version {}: {e}}}",
                        v.version, v.version
                    ));
                }
            }
            if forward {
                if let Err(e) = can_read(new, old) {
                    messages.push(format!(
                        "{{oldSchemaVersion: {}, compatibility: '{level}', version {} can not \
                         read data written with the new schema: {e}}}",
                        v.version, v.version
                    ));
                }
            }
        }
        Ok(messages)
    }

    /// Registers a schema under a subject (idempotent): its global id.
    pub async fn register(&self, subject: &str, input: &SchemaInput) -> Result<i32> {
        check_subject(subject)?;
        let mode = self.check_writable(subject).await?;
        let parsed = self.parse(input).await?;
        if mode == "IMPORT" {
            return self.import(subject, input, &parsed).await;
        }
        if input.id.is_some() {
            return Err(RegistryError::new(
                42205,
                format!("Subject {subject} is not in import mode: a schema id cannot be given"),
            ));
        }
        for _ in 0..8 {
            let versions = self.versions_of(subject).await?;
            let live: Vec<SubjectVersion> =
                versions.iter().copied().filter(|v| !v.deleted).collect();
            let latest = live.last().map(|v| v.version);
            // The same schema already there needs no check.
            for v in &live {
                if self.schema(v.id).await? == parsed.stored {
                    return Ok(v.id);
                }
            }
            if let Some(version) = input.version {
                let next = versions.last().map_or(1, |v| v.version + 1);
                if version != next {
                    return Err(RegistryError::new(
                        42202,
                        format!(
                            "Version {version} is not one more than the subject's latest \
                             version ({})",
                            next - 1
                        ),
                    ));
                }
            }
            let level = self.level(subject).await?;
            let messages = self.incompatibilities(&parsed, &live, &level).await?;
            if !messages.is_empty() {
                return Err(RegistryError::new(
                    409,
                    format!(
                        "Schema being registered is incompatible with an earlier schema for \
                         subject \"{subject}\", details: [{}]",
                        messages.join(", ")
                    ),
                ));
            }
            match self
                .meta
                .register_schema(subject, &parsed.stored, &parsed.fingerprint, latest)
                .await
                .map_err(|e| RegistryError::store(&e))?
            {
                Registered::New { id, version } => {
                    tracing::info!(subject, id, version, "schema registered");
                    self.forget(subject);
                    return Ok(id);
                }
                Registered::Existing { id, .. } => return Ok(id),
                Registered::Changed => continue,
            }
        }
        Err(RegistryError::new(
            50002,
            "The subject kept changing while the schema was being registered",
        ))
    }

    /// IMPORT mode: the schema under the id and version given, without compatibility
    /// checks (the schemas come from another registry, as they were there).
    async fn import(&self, subject: &str, input: &SchemaInput, parsed: &Parsed) -> Result<i32> {
        let Some(id) = input.id.filter(|id| *id > 0) else {
            return Err(RegistryError::new(
                42205,
                format!("Subject {subject} is in import mode: a schema id (above 0) is required"),
            ));
        };
        let version = match input.version {
            Some(v) if v >= 1 => v,
            Some(v) => return Err(RegistryError::invalid_version(&v.to_string())),
            None => self
                .versions_of(subject)
                .await?
                .last()
                .map_or(1, |v| v.version + 1),
        };
        match self
            .meta
            .import_schema(subject, &parsed.stored, &parsed.fingerprint, id, version)
            .await
            .map_err(|e| RegistryError::store(&e))?
        {
            Imported::Done => {
                tracing::info!(subject, id, version, "schema imported");
                self.forget(subject);
                Ok(id)
            }
            Imported::IdTaken => Err(RegistryError::new(
                42207,
                format!("Overwrite new schema with id {id} is not permitted."),
            )),
            Imported::VersionTaken { id: other } => Err(RegistryError::new(
                42207,
                format!(
                    "Version {version} of subject {subject} already holds schema id {other}, \
                     not {id}"
                ),
            )),
        }
    }

    /// The live version of `subject` holding this schema.
    pub async fn lookup(
        &self,
        subject: &str,
        input: &SchemaInput,
        deleted: bool,
    ) -> Result<(SubjectVersion, StoredSchema)> {
        let versions = self.versions_of(subject).await?;
        if versions.iter().all(|v| v.deleted && !deleted) {
            return Err(RegistryError::subject_not_found(subject));
        }
        let parsed = self.parse(input).await?;
        for v in versions.iter().rev().filter(|v| deleted || !v.deleted) {
            let stored = self.schema(v.id).await?;
            if stored == parsed.stored {
                return Ok((*v, stored));
            }
        }
        Err(RegistryError::schema_not_found())
    }

    /// Subjects with a live version (or any version, with `deleted`), sorted.
    pub async fn subjects(&self, deleted: bool, prefix: &str) -> Result<Vec<String>> {
        let all = self
            .meta
            .subjects()
            .await
            .map_err(|e| RegistryError::store(&e))?;
        let mut out: Vec<String> = all
            .into_iter()
            .filter(|(s, versions)| {
                s.starts_with(prefix) && versions.iter().any(|v| deleted || !v.deleted)
            })
            .map(|(s, _)| s)
            .collect();
        out.sort();
        Ok(out)
    }

    pub async fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<i32>> {
        let versions: Vec<i32> = self
            .versions_of(subject)
            .await?
            .into_iter()
            .filter(|v| deleted || !v.deleted)
            .map(|v| v.version)
            .collect();
        if versions.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        Ok(versions)
    }

    pub async fn version(
        &self,
        subject: &str,
        version: VersionRef,
        deleted: bool,
    ) -> Result<(SubjectVersion, StoredSchema)> {
        let versions = self.versions_of(subject).await?;
        if !versions.iter().any(|v| deleted || !v.deleted) {
            return Err(RegistryError::subject_not_found(subject));
        }
        let found = match version {
            VersionRef::Latest => versions.iter().rev().find(|v| deleted || !v.deleted),
            VersionRef::Number(n) => versions
                .iter()
                .find(|v| v.version == n && (deleted || !v.deleted)),
        };
        let v = *found.ok_or_else(|| {
            RegistryError::version_not_found(match version {
                VersionRef::Latest => -1,
                VersionRef::Number(n) => n,
            })
        })?;
        Ok((v, self.schema(v.id).await?))
    }

    /// A stored schema's text in the format asked for: Protobuf schemas as `serialized`
    /// (a base64 `FileDescriptorProto`) when asked, otherwise as registered.
    pub async fn render(&self, stored: &StoredSchema, format: Option<&str>) -> Result<String> {
        if stored.schema_type != "PROTOBUF"
            || format != Some("serialized")
            || icestream_compactor::proto::descriptor_from_base64(&stored.schema).is_some()
        {
            return Ok(stored.schema.clone());
        }
        let parsed = self.parse_stored(stored).await?;
        parsed
            .proto
            .as_ref()
            .and_then(icestream_compactor::proto::Compiled::serialized)
            .ok_or_else(|| RegistryError::invalid_schema("the schema does not compile"))
    }

    /// The subjects and versions holding schema `id`.
    pub async fn usages(&self, id: i32) -> Result<Vec<(String, i32)>> {
        self.schema(id).await?;
        let all = self
            .meta
            .subjects()
            .await
            .map_err(|e| RegistryError::store(&e))?;
        Ok(all
            .into_iter()
            .flat_map(|(s, versions)| {
                versions
                    .into_iter()
                    .filter(|v| v.id == id && !v.deleted)
                    .map(move |v| (s.clone(), v.version))
            })
            .collect())
    }

    /// The ids of the live schemas that reference `subject`'s version.
    pub async fn referenced_by(&self, subject: &str, version: VersionRef) -> Result<Vec<i32>> {
        let (v, _) = self.version(subject, version, false).await?;
        let all = self
            .meta
            .subjects()
            .await
            .map_err(|e| RegistryError::store(&e))?;
        let mut ids: Vec<i32> = all
            .into_iter()
            .flat_map(|(_, versions)| versions.into_iter().filter(|v| !v.deleted).map(|v| v.id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::new();
        for id in ids {
            let s = self.schema(id).await?;
            if s.references
                .iter()
                .any(|r| r.subject == subject && r.version == v.version)
            {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Deletes a subject: soft (its versions hidden) or, after that, permanent.
    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<i32>> {
        self.check_writable(subject).await?;
        let versions = self.versions_of(subject).await?;
        if versions.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        let live: Vec<&SubjectVersion> = versions.iter().filter(|v| !v.deleted).collect();
        if permanent && !live.is_empty() {
            return Err(RegistryError::new(
                40405,
                format!(
                    "Subject '{subject}' was not deleted first before being permanently deleted"
                ),
            ));
        }
        if !permanent && live.is_empty() {
            return Err(RegistryError::new(
                40404,
                format!(
                    "Subject '{subject}' was soft deleted.Set permanent=true to delete permanently"
                ),
            ));
        }
        let targets: Vec<i32> = if permanent {
            versions.iter().map(|v| v.version).collect()
        } else {
            live.iter().map(|v| v.version).collect()
        };
        for v in &targets {
            self.meta
                .delete_subject_version(subject, *v, permanent)
                .await
                .map_err(|e| RegistryError::store(&e))?;
        }
        if permanent {
            for kind in [RegistrySetting::Compatibility, RegistrySetting::Mode] {
                self.meta
                    .set_registry_setting(kind, Some(subject), None)
                    .await
                    .map_err(|e| RegistryError::store(&e))?;
            }
        }
        self.forget(subject);
        Ok(targets)
    }

    pub async fn delete_version(
        &self,
        subject: &str,
        version: VersionRef,
        permanent: bool,
    ) -> Result<i32> {
        self.check_writable(subject).await?;
        let (v, _) = self.version(subject, version, permanent).await?;
        if permanent && !v.deleted {
            return Err(RegistryError::new(
                40407,
                format!(
                    "Subject '{subject}' Version {} was not deleted first before being \
                     permanently deleted",
                    v.version
                ),
            ));
        }
        self.meta
            .delete_subject_version(subject, v.version, permanent)
            .await
            .map_err(|e| RegistryError::store(&e))?;
        self.forget(subject);
        Ok(v.version)
    }

    /// The compatibility test endpoint: the reasons `input` may not be registered under
    /// `subject` against one version (or, `None`, those its level names).
    pub async fn test_compatibility(
        &self,
        subject: &str,
        input: &SchemaInput,
        against: Option<VersionRef>,
    ) -> Result<Vec<String>> {
        let parsed = self.parse(input).await?;
        let level = self.level(subject).await?;
        let live: Vec<SubjectVersion> = self
            .versions_of(subject)
            .await?
            .into_iter()
            .filter(|v| !v.deleted)
            .collect();
        let Some(against) = against else {
            return self.incompatibilities(&parsed, &live, &level).await;
        };
        if live.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        let (v, _) = self.version(subject, against, false).await?;
        // One version: the level's direction, without its transitivity.
        let level = level.trim_end_matches("_TRANSITIVE").to_string();
        self.incompatibilities(&parsed, &[v], &level).await
    }

    /// The compatibility level of a subject (`None`: the global one); with
    /// `default_to_global`, a subject without its own gets the global one.
    pub async fn config(&self, subject: Option<&str>, default_to_global: bool) -> Result<String> {
        match subject {
            None => Ok(self
                .setting(RegistrySetting::Compatibility, None)
                .await?
                .unwrap_or_else(|| DEFAULT_LEVEL.into())),
            Some(s) => match self
                .setting(RegistrySetting::Compatibility, Some(s))
                .await?
            {
                Some(level) => Ok(level),
                None if default_to_global => self.level(s).await,
                None => Err(RegistryError::new(
                    40408,
                    format!("Subject '{s}' does not have subject-level compatibility configured"),
                )),
            },
        }
    }

    pub async fn set_config(&self, subject: Option<&str>, level: &str) -> Result<String> {
        let level = level.to_ascii_uppercase();
        if !LEVELS.contains(&level.as_str()) {
            return Err(RegistryError::new(
                42203,
                format!("Invalid compatibility level. Valid values are {LEVELS:?}"),
            ));
        }
        self.meta
            .set_registry_setting(RegistrySetting::Compatibility, subject, Some(&level))
            .await
            .map_err(|e| RegistryError::store(&e))?;
        Ok(level)
    }

    /// Removes a compatibility level; the one it had.
    pub async fn delete_config(&self, subject: Option<&str>) -> Result<String> {
        let previous = self.config(subject, true).await?;
        self.meta
            .set_registry_setting(RegistrySetting::Compatibility, subject, None)
            .await
            .map_err(|e| RegistryError::store(&e))?;
        Ok(previous)
    }

    pub async fn mode(&self, subject: Option<&str>, default_to_global: bool) -> Result<String> {
        match self.setting(RegistrySetting::Mode, subject).await? {
            Some(m) => Ok(m),
            None if subject.is_some() && !default_to_global => Err(RegistryError::new(
                40409,
                format!(
                    "Subject '{}' does not have subject-level mode configured",
                    subject.unwrap_or_default()
                ),
            )),
            None => Ok(self
                .setting(RegistrySetting::Mode, None)
                .await?
                .unwrap_or_else(|| DEFAULT_MODE.into())),
        }
    }

    /// Sets (or with `None` removes) a mode. IMPORT is refused while the subject (or, for
    /// the global mode, the registry) has schemas, unless `force`d: importing next to
    /// schemas registered here could give one id two meanings.
    pub async fn set_mode(
        &self,
        subject: Option<&str>,
        mode: Option<&str>,
        force: bool,
    ) -> Result<String> {
        let previous = self.mode(subject, true).await?;
        if let Some(m) = mode {
            if !MODES.contains(&m) {
                return Err(RegistryError::new(
                    42204,
                    format!("Invalid mode. Valid values are {MODES:?}"),
                ));
            }
            if m == "IMPORT" && previous != "IMPORT" && !force {
                let empty = match subject {
                    Some(s) => self.versions_of(s).await?.is_empty(),
                    None => self
                        .meta
                        .subjects()
                        .await
                        .map_err(|e| RegistryError::store(&e))?
                        .is_empty(),
                };
                if !empty {
                    return Err(RegistryError::new(
                        42205,
                        "Cannot import since found existing subjects",
                    ));
                }
            }
        }
        self.meta
            .set_registry_setting(RegistrySetting::Mode, subject, mode)
            .await
            .map_err(|e| RegistryError::store(&e))?;
        Ok(mode.map_or(previous, str::to_string))
    }

    fn forget(&self, subject: &str) {
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(subject);
    }

    /// Whether schema `id` is a live version of `subject` (for Produce validation; a
    /// few seconds' cache, reread when an id is not in it).
    pub async fn subject_has_id(&self, subject: &str, id: i32) -> Result<bool> {
        {
            let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, set)) = ids.get(subject) {
                if at.elapsed() < IDS_TTL && set.contains(&id) {
                    return Ok(true);
                }
            }
        }
        let set: HashSet<i32> = self
            .versions_of(subject)
            .await?
            .into_iter()
            .filter(|v| !v.deleted)
            .map(|v| v.id)
            .collect();
        let found = set.contains(&id);
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.len() > 10_000 {
            ids.clear();
        }
        ids.insert(subject.to_string(), (Instant::now(), set));
        Ok(found)
    }
}

fn check_subject(subject: &str) -> Result<()> {
    if subject.is_empty() || subject.len() > 4096 || subject.chars().any(char::is_control) {
        return Err(RegistryError::new(
            42208,
            format!("The specified subject {subject:?} is not a valid subject name"),
        ));
    }
    Ok(())
}
