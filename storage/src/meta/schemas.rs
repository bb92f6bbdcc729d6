//! Schema registry state: schemas by global id, the id of each distinct schema (by
//! fingerprint, so registering the same schema under any subject gives the same id), the
//! versions of each subject, and the compatibility and mode settings (global and per
//! subject). Every broker serves the registry from here, so all of them answer the same.
//!
//! Registration is one metadata transaction that checks the subject has not changed
//! since the caller checked compatibility against it (its latest version), so two
//! brokers registering concurrently cannot both skip the other's version.

use serde::{Deserialize, Serialize};

use super::keys;
use super::values::{decode_i64, encode_i64};
use super::{MetaError, MetaStore, Result};
use crate::kv::{prefix_end, KvStoreExt, KvTxn};

/// A schema that references another subject's version (Confluent's `references`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReference {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

/// A registered schema, as stored under its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSchema {
    /// `AVRO`, `JSON` or `PROTOBUF`.
    pub schema_type: String,
    /// The schema text as registered (canonical form for Avro).
    pub schema: String,
    #[serde(default)]
    pub references: Vec<SchemaReference>,
}

/// One version of a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectVersion {
    pub version: i32,
    pub id: i32,
    /// Soft-deleted: hidden unless asked for, still resolvable by id.
    pub deleted: bool,
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// A new version of the subject.
    New { id: i32, version: i32 },
    /// The subject already has this schema (not deleted): its version.
    Existing { id: i32, version: i32 },
    /// The subject changed since the caller looked: check again.
    Changed,
}

/// What an import (a registration with the id and version given) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// Stored (or already there, identical).
    Done,
    /// The id holds a different schema.
    IdTaken,
    /// The subject's version holds a different schema id.
    VersionTaken { id: i32 },
}

const SCHEMA_ID_COUNTER: &str = "schema_id";

fn corrupt(what: &'static str, e: impl std::fmt::Display) -> MetaError {
    MetaError::Corrupt {
        what,
        reason: e.to_string(),
    }
}

async fn versions_in(tx: &mut dyn KvTxn, subject: &str) -> Result<Vec<SubjectVersion>> {
    let prefix = keys::subject_versions(subject);
    let rows = tx
        .get_range(&prefix, &prefix_end(&prefix), 0, false)
        .await?;
    rows.iter()
        .map(|(_, v)| serde_json::from_slice(v).map_err(|e| corrupt("subject version", e)))
        .collect()
}

impl MetaStore {
    pub async fn schema_by_id(&self, id: i32) -> Result<Option<StoredSchema>> {
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    tx.get(&keys::schema(id))
                        .await?
                        .map(|v| serde_json::from_slice(&v).map_err(|e| corrupt("schema", e)))
                        .transpose()
                })
            })
            .await
    }

    /// The versions of a subject (soft-deleted ones included), oldest first.
    pub async fn subject_versions(&self, subject: &str) -> Result<Vec<SubjectVersion>> {
        let subject = subject.to_owned();
        self.kv
            .read(|tx| {
                let subject = subject.clone();
                Box::pin(async move { versions_in(tx, &subject).await })
            })
            .await
    }

    /// Every subject with its versions.
    pub async fn subjects(&self) -> Result<Vec<(String, Vec<SubjectVersion>)>> {
        self.kv
            .read(|tx| {
                Box::pin(async move {
                    let prefix = keys::all_subject_versions();
                    let rows = tx
                        .get_range(&prefix, &prefix_end(&prefix), 0, false)
                        .await?;
                    let mut out: Vec<(String, Vec<SubjectVersion>)> = Vec::new();
                    for (k, v) in &rows {
                        let Some(subject) = keys::subject_of_version(k) else {
                            continue;
                        };
                        let version: SubjectVersion =
                            serde_json::from_slice(v).map_err(|e| corrupt("subject version", e))?;
                        match out.last_mut() {
                            Some((s, versions)) if *s == subject => versions.push(version),
                            _ => out.push((subject, vec![version])),
                        }
                    }
                    Ok(out)
                })
            })
            .await
    }

    /// Registers `schema` (identified by `fingerprint`) under `subject`, if the subject's
    /// latest version is still `latest` (`None`: no versions).
    pub async fn register_schema(
        &self,
        subject: &str,
        schema: &StoredSchema,
        fingerprint: &[u8],
        latest: Option<i32>,
    ) -> Result<Registered> {
        let subject = subject.to_owned();
        let schema = schema.clone();
        let fingerprint = fingerprint.to_vec();
        self.kv
            .transact(|tx| {
                let (subject, schema, fingerprint) =
                    (subject.clone(), schema.clone(), fingerprint.clone());
                Box::pin(async move {
                    let versions = versions_in(tx, &subject).await?;
                    let fp_key = keys::schema_fingerprint(&fingerprint);
                    let known = match tx.get(&fp_key).await? {
                        Some(v) => Some(decode_i64(&v, "schema fingerprint")? as i32),
                        None => None,
                    };
                    if let Some(id) = known {
                        if let Some(v) = versions.iter().find(|v| v.id == id && !v.deleted) {
                            return Ok(Registered::Existing {
                                id,
                                version: v.version,
                            });
                        }
                    }
                    if versions
                        .iter()
                        .rev()
                        .find(|v| !v.deleted)
                        .map(|v| v.version)
                        != latest
                    {
                        return Ok(Registered::Changed);
                    }
                    let id = match known {
                        Some(id) => id,
                        None => {
                            let counter = keys::counter(SCHEMA_ID_COUNTER);
                            let id = match tx.get(&counter).await? {
                                Some(v) => decode_i64(&v, "schema id counter")?,
                                None => 1,
                            };
                            tx.set(&counter, &encode_i64(id + 1));
                            let id = i32::try_from(id).map_err(|e| corrupt("schema id", e))?;
                            let value =
                                serde_json::to_vec(&schema).map_err(|e| corrupt("schema", e))?;
                            tx.set(&keys::schema(id), &value);
                            tx.set(&fp_key, &encode_i64(i64::from(id)));
                            id
                        }
                    };
                    let version = versions.last().map_or(1, |v| v.version + 1);
                    let entry = SubjectVersion {
                        version,
                        id,
                        deleted: false,
                    };
                    let value =
                        serde_json::to_vec(&entry).map_err(|e| corrupt("subject version", e))?;
                    tx.set(&keys::subject_version(&subject, version), &value);
                    Ok(Registered::New { id, version })
                })
            })
            .await
    }

    /// Imports `schema` under the global `id` as `version` of `subject` (the registry's
    /// IMPORT mode, for moving schemas from another registry with their ids); later ids
    /// assigned by registration come after it.
    pub async fn import_schema(
        &self,
        subject: &str,
        schema: &StoredSchema,
        fingerprint: &[u8],
        id: i32,
        version: i32,
    ) -> Result<Imported> {
        let subject = subject.to_owned();
        let schema = schema.clone();
        let fingerprint = fingerprint.to_vec();
        self.kv
            .transact(|tx| {
                let (subject, schema, fingerprint) =
                    (subject.clone(), schema.clone(), fingerprint.clone());
                Box::pin(async move {
                    let version_key = keys::subject_version(&subject, version);
                    let version_there: Option<SubjectVersion> = match tx.get(&version_key).await? {
                        Some(v) => Some(
                            serde_json::from_slice(&v)
                                .map_err(|e| corrupt("subject version", e))?,
                        ),
                        None => None,
                    };
                    if let Some(there) = version_there.filter(|v| v.id != id) {
                        return Ok(Imported::VersionTaken { id: there.id });
                    }
                    let key = keys::schema(id);
                    match tx.get(&key).await? {
                        Some(v) => {
                            let there: StoredSchema =
                                serde_json::from_slice(&v).map_err(|e| corrupt("schema", e))?;
                            if there != schema {
                                return Ok(Imported::IdTaken);
                            }
                        }
                        None => {
                            let value =
                                serde_json::to_vec(&schema).map_err(|e| corrupt("schema", e))?;
                            tx.set(&key, &value);
                            // The first id of a schema stays the one registration answers.
                            let fp_key = keys::schema_fingerprint(&fingerprint);
                            if tx.get(&fp_key).await?.is_none() {
                                tx.set(&fp_key, &encode_i64(i64::from(id)));
                            }
                        }
                    }
                    let counter = keys::counter(SCHEMA_ID_COUNTER);
                    let next = match tx.get(&counter).await? {
                        Some(v) => decode_i64(&v, "schema id counter")?,
                        None => 1,
                    };
                    if next <= i64::from(id) {
                        tx.set(&counter, &encode_i64(i64::from(id) + 1));
                    }
                    if version_there.is_some_and(|v| !v.deleted) {
                        return Ok(Imported::Done);
                    }
                    let entry = SubjectVersion {
                        version,
                        id,
                        deleted: false,
                    };
                    let value =
                        serde_json::to_vec(&entry).map_err(|e| corrupt("subject version", e))?;
                    tx.set(&version_key, &value);
                    Ok(Imported::Done)
                })
            })
            .await
    }

    /// Soft-deletes (`permanent: false`) or removes a version; `false` if it is not there.
    pub async fn delete_subject_version(
        &self,
        subject: &str,
        version: i32,
        permanent: bool,
    ) -> Result<bool> {
        let subject = subject.to_owned();
        self.kv
            .transact(|tx| {
                let subject = subject.clone();
                Box::pin(async move {
                    let key = keys::subject_version(&subject, version);
                    let Some(v) = tx.get(&key).await? else {
                        return Ok(false);
                    };
                    let mut entry: SubjectVersion =
                        serde_json::from_slice(&v).map_err(|e| corrupt("subject version", e))?;
                    if permanent {
                        tx.clear(&key);
                    } else {
                        entry.deleted = true;
                        let value = serde_json::to_vec(&entry)
                            .map_err(|e| corrupt("subject version", e))?;
                        tx.set(&key, &value);
                    }
                    Ok(true)
                })
            })
            .await
    }

    /// A registry setting (`kind`: `config` or `mode`) of a subject, or the global one
    /// for `None`.
    pub async fn registry_setting(
        &self,
        kind: RegistrySetting,
        subject: Option<&str>,
    ) -> Result<Option<String>> {
        let key = keys::registry_setting(kind.tag(), subject.unwrap_or(""));
        self.kv
            .read(|tx| {
                let key = key.clone();
                Box::pin(async move {
                    Ok(tx
                        .get(&key)
                        .await?
                        .map(|v| String::from_utf8_lossy(&v).into_owned()))
                })
            })
            .await
    }

    /// Sets (or with `None` removes) a registry setting.
    pub async fn set_registry_setting(
        &self,
        kind: RegistrySetting,
        subject: Option<&str>,
        value: Option<&str>,
    ) -> Result<()> {
        let key = keys::registry_setting(kind.tag(), subject.unwrap_or(""));
        let value = value.map(str::to_owned);
        self.kv
            .transact(|tx| {
                let (key, value) = (key.clone(), value.clone());
                Box::pin(async move {
                    match value {
                        Some(v) => tx.set(&key, v.as_bytes()),
                        None => tx.clear(&key),
                    }
                    Ok(())
                })
            })
            .await
    }
}

/// The registry's settings, global or per subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrySetting {
    /// The compatibility level.
    Compatibility,
    /// The mode (READWRITE, READONLY, IMPORT).
    Mode,
}

impl RegistrySetting {
    fn tag(self) -> u8 {
        match self {
            RegistrySetting::Compatibility => b'c',
            RegistrySetting::Mode => b'm',
        }
    }
}
