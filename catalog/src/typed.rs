//! Typed columns: a topic whose value subject (`<topic>-value`) has an Avro record schema
//! gets the record's fields as Iceberg columns next to the Kafka columns, and a new
//! schema version in the registry becomes a new Iceberg schema.
//!
//! Field ids are kept by name: a column (or nested field, list element, map key or value)
//! that existed keeps its id, so old data files read through the new schema, with nulls
//! for added fields; a changed type is taken where Iceberg allows the promotion (int to
//! long, float to double, wider decimal) and otherwise keeps the column as it was.
//! A top-level field whose name clashes with a Kafka column is prefixed `value_`.

use std::collections::HashMap;

use apache_avro::schema::{RecordField, Schema as Avro, UnionSchema};
use iceberg::spec::{
    ListType, MapType, NestedField, NestedFieldRef, PrimitiveType, Schema, StructType, Type,
};
use iceberg::table::Table;
use iceberg::{Catalog, TableCommit, TableRequirement, TableUpdate};

use crate::CatalogError;

/// Table property: the registry id of the Avro schema the table's columns come from.
pub const PROP_VALUE_SCHEMA_ID: &str = "icestream.value-schema-id";
/// The Kafka columns; a typed column of the same name is prefixed `value_`.
pub const KAFKA_COLUMNS: &[&str] = &[
    "partition",
    "offset",
    "timestamp",
    "key",
    "value",
    "headers",
];

/// The table column a top-level record field becomes.
pub fn column_name(field: &str) -> String {
    if KAFKA_COLUMNS.contains(&field) {
        format!("value_{field}")
    } else {
        field.to_string()
    }
}

struct Ids<'a> {
    current: &'a Schema,
    next: i32,
}

impl Ids<'_> {
    /// The id of the field at `path` in the current schema if it has the same kind of
    /// type, else a new one.
    fn id(&mut self, path: &str, ty: &Type) -> i32 {
        if let Some(f) = self.current.field_by_name(path) {
            if same_kind(&f.field_type, ty) {
                return f.id;
            }
        }
        self.next += 1;
        self.next
    }
}

fn same_kind(old: &Type, new: &Type) -> bool {
    match (old, new) {
        (Type::Primitive(a), Type::Primitive(b)) => a == b || promotable(a, b),
        (Type::Struct(_), Type::Struct(_))
        | (Type::List(_), Type::List(_))
        | (Type::Map(_), Type::Map(_)) => true,
        _ => false,
    }
}

fn promotable(old: &PrimitiveType, new: &PrimitiveType) -> bool {
    match (old, new) {
        (PrimitiveType::Int, PrimitiveType::Long)
        | (PrimitiveType::Float, PrimitiveType::Double) => true,
        (
            PrimitiveType::Decimal {
                precision: p1,
                scale: s1,
            },
            PrimitiveType::Decimal {
                precision: p2,
                scale: s2,
            },
        ) => s1 == s2 && p2 >= p1,
        _ => false,
    }
}

/// The Iceberg type of an Avro schema (`None`: no column for it — null, unions of several
/// types, unresolved references). `path` names the field for id reuse.
fn convert(
    avro: &Avro,
    path: &str,
    ids: &mut Ids<'_>,
    names: &HashMap<String, Avro>,
) -> Option<Type> {
    let p = |t| Some(Type::Primitive(t));
    match avro {
        Avro::Boolean => p(PrimitiveType::Boolean),
        Avro::Int => p(PrimitiveType::Int),
        Avro::Long => p(PrimitiveType::Long),
        Avro::Float => p(PrimitiveType::Float),
        Avro::Double => p(PrimitiveType::Double),
        Avro::Bytes => p(PrimitiveType::Binary),
        Avro::String | Avro::Enum(_) => p(PrimitiveType::String),
        Avro::Fixed(f) => p(PrimitiveType::Fixed(f.size as u64)),
        Avro::Uuid => p(PrimitiveType::Uuid),
        Avro::Date => p(PrimitiveType::Date),
        Avro::TimeMillis | Avro::TimeMicros => p(PrimitiveType::Time),
        Avro::TimestampMillis | Avro::TimestampMicros => p(PrimitiveType::Timestamptz),
        Avro::LocalTimestampMillis | Avro::LocalTimestampMicros => p(PrimitiveType::Timestamp),
        Avro::TimestampNanos => p(PrimitiveType::TimestamptzNs),
        Avro::LocalTimestampNanos => p(PrimitiveType::TimestampNs),
        Avro::Decimal(d) if d.precision <= 38 => p(PrimitiveType::Decimal {
            precision: d.precision as u32,
            scale: d.scale as u32,
        }),
        Avro::Union(u) => single_branch(u).and_then(|s| convert(s, path, ids, names)),
        Avro::Record(r) => {
            let fields = record_fields(&r.fields, path, ids, names, false);
            Some(Type::Struct(StructType::new(fields)))
        }
        Avro::Array(a) => {
            let element_path = format!("{path}.element");
            let ty = convert(&a.items, &element_path, ids, names)?;
            let id = ids.id(&element_path, &ty);
            Some(Type::List(ListType::new(
                NestedField::list_element(id, ty, false).into(),
            )))
        }
        Avro::Map(m) => {
            let key_path = format!("{path}.key");
            let value_path = format!("{path}.value");
            let key_type = Type::Primitive(PrimitiveType::String);
            let key_id = ids.id(&key_path, &key_type);
            let ty = convert(&m.types, &value_path, ids, names)?;
            let value_id = ids.id(&value_path, &ty);
            Some(Type::Map(MapType::new(
                NestedField::map_key_element(key_id, key_type).into(),
                NestedField::map_value_element(value_id, ty, false).into(),
            )))
        }
        Avro::Ref { name } => names
            .get(&name.fullname(None))
            .and_then(|s| convert(s, path, ids, names)),
        _ => None,
    }
}

/// The one non-null branch of a union, if it has exactly one.
fn single_branch(u: &UnionSchema) -> Option<&Avro> {
    let mut branches = u.variants().iter().filter(|s| !matches!(s, Avro::Null));
    let one = branches.next()?;
    branches.next().is_none().then_some(one)
}

fn record_fields(
    fields: &[RecordField],
    prefix: &str,
    ids: &mut Ids<'_>,
    names: &HashMap<String, Avro>,
    top: bool,
) -> Vec<NestedFieldRef> {
    let mut out = Vec::with_capacity(fields.len());
    for f in fields {
        let name = if top {
            column_name(&f.name)
        } else {
            f.name.clone()
        };
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let Some(ty) = convert(&f.schema, &path, ids, names) else {
            continue;
        };
        let id = ids.id(&path, &ty);
        out.push(NestedField::optional(id, &name, ty).into());
    }
    out
}

/// Named types defined anywhere in `schema`, for references to them.
fn collect_names(schema: &Avro, out: &mut HashMap<String, Avro>) {
    match schema {
        Avro::Record(r) => {
            out.insert(r.name.fullname(None), schema.clone());
            for f in &r.fields {
                collect_names(&f.schema, out);
            }
        }
        Avro::Enum(e) => {
            out.insert(e.name.fullname(None), schema.clone());
        }
        Avro::Fixed(f) => {
            out.insert(f.name.fullname(None), schema.clone());
        }
        Avro::Array(a) => collect_names(&a.items, out),
        Avro::Map(m) => collect_names(&m.types, out),
        Avro::Union(u) => u.variants().iter().for_each(|v| collect_names(v, out)),
        _ => {}
    }
}

/// The table schema for `value_schema`: the Kafka columns of `current`, then one column
/// per field of the Avro record (and any typed column the new schema no longer has, so
/// old files stay readable). `None` if the value schema is not a record.
pub fn typed_schema(
    current: &Schema,
    last_column_id: i32,
    value_schema: &Avro,
) -> Result<Option<Schema>, CatalogError> {
    let Avro::Record(record) = value_schema else {
        return Ok(None);
    };
    let mut names = HashMap::new();
    collect_names(value_schema, &mut names);
    let mut ids = Ids {
        current,
        next: last_column_id.max(current.highest_field_id()),
    };
    let typed = record_fields(&record.fields, "", &mut ids, &names, true);
    let mut fields: Vec<NestedFieldRef> = current
        .as_struct()
        .fields()
        .iter()
        .filter(|f| KAFKA_COLUMNS.contains(&f.name.as_str()))
        .cloned()
        .collect();
    // Columns keep their places: the existing typed columns (as the new schema defines
    // them, or as they were if it dropped them: old files still hold their data), then
    // the new ones in the schema's order.
    for f in current.as_struct().fields() {
        if KAFKA_COLUMNS.contains(&f.name.as_str()) {
            continue;
        }
        match typed.iter().find(|t| t.name == f.name) {
            Some(t) => fields.push(t.clone()),
            None => fields.push(f.clone()),
        }
    }
    for t in typed {
        if !fields.iter().any(|f| f.name == t.name) {
            fields.push(t);
        }
    }
    Ok(Some(
        Schema::builder()
            .with_schema_id(current.schema_id() + 1)
            .with_identifier_field_ids(current.identifier_field_ids())
            .with_fields(fields)
            .build()?,
    ))
}

/// Moves the table to `schema` (from the registry's schema `value_schema_id`), unless
/// someone changed its schema meanwhile (the commit requires the current schema).
pub async fn evolve(
    catalog: &dyn Catalog,
    table: &Table,
    schema: Schema,
    value_schema_id: i32,
) -> Result<Table, CatalogError> {
    let metadata = table.metadata();
    let mut updates = Vec::new();
    if schema.as_struct() != metadata.current_schema().as_struct() {
        updates.push(TableUpdate::AddSchema { schema });
        updates.push(TableUpdate::SetCurrentSchema { schema_id: -1 });
    }
    updates.push(TableUpdate::SetProperties {
        updates: HashMap::from([(
            PROP_VALUE_SCHEMA_ID.to_string(),
            value_schema_id.to_string(),
        )]),
    });
    let commit = TableCommit::builder()
        .ident(table.identifier().clone())
        .requirements(vec![
            TableRequirement::UuidMatch {
                uuid: metadata.uuid(),
            },
            TableRequirement::CurrentSchemaIdMatch {
                current_schema_id: metadata.current_schema_id(),
            },
        ])
        .updates(updates)
        .build();
    Ok(catalog.update_table(commit).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avro(fields: &str) -> Avro {
        Avro::parse_str(&format!(
            r#"{{"type": "record", "name": "R", "fields": [{fields}]}}"#
        ))
        .expect("avro")
    }

    #[test]
    fn columns_keep_their_ids_across_versions() {
        let base = crate::table::topic_schema().expect("base");
        let v1 = avro(
            r#"{"name": "id", "type": "int"},
               {"name": "offset", "type": "string"},
               {"name": "tags", "type": {"type": "array", "items": "string"}},
               {"name": "c", "type": {"type": "record", "name": "C",
                                      "fields": [{"name": "n", "type": "string"}]}}"#,
        );
        let s1 = typed_schema(&base, 9, &v1).expect("v1").expect("record");
        let names: Vec<&str> = s1
            .as_struct()
            .fields()
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "partition",
                "offset",
                "timestamp",
                "key",
                "value",
                "headers",
                "id",
                "value_offset",
                "tags",
                "c"
            ]
        );
        let id_of = |s: &Schema, path: &str| s.field_by_name(path).map(|f| f.id);
        // The Kafka columns keep 1..=9; typed fields get new ids above.
        assert_eq!(id_of(&s1, "offset"), Some(2));
        assert!(id_of(&s1, "id").expect("id") > 9);

        // v2: `id` promoted to long, `tags` dropped, a nested field and a column added.
        let v2 = avro(
            r#"{"name": "id", "type": "long"},
               {"name": "offset", "type": "string"},
               {"name": "c", "type": {"type": "record", "name": "C",
                                      "fields": [{"name": "n", "type": "string"},
                                                 {"name": "m", "type": ["null", "int"]}]}},
               {"name": "added", "type": ["null", "double"], "default": null}"#,
        );
        let s2 = typed_schema(&s1, s1.highest_field_id(), &v2)
            .expect("v2")
            .expect("record");
        for path in ["id", "value_offset", "c", "c.n", "tags", "tags.element"] {
            assert_eq!(id_of(&s2, path), id_of(&s1, path), "{path}");
        }
        assert_eq!(
            s2.field_by_name("id").map(|f| f.field_type.to_string()),
            Some("long".to_string())
        );
        let fresh = [id_of(&s2, "c.m"), id_of(&s2, "added")];
        assert!(fresh
            .iter()
            .all(|id| id.expect("new") > s1.highest_field_id()));

        // A type change Iceberg cannot promote gets a new column id.
        let v3 = avro(r#"{"name": "id", "type": "string"}"#);
        let s3 = typed_schema(&s2, s2.highest_field_id(), &v3)
            .expect("v3")
            .expect("record");
        assert!(id_of(&s3, "id").expect("id") > s2.highest_field_id());
        // Not a record: no typed columns.
        assert!(typed_schema(&base, 9, &Avro::String)
            .expect("string")
            .is_none());
    }
}
