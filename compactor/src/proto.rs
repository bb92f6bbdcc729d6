//! Protobuf schemas as the registry holds them: `.proto` source or a base64 serialized
//! `FileDescriptorProto` (what Confluent's serializers register), with references as
//! imports, compiled with `protox` into a `prost-reflect` descriptor pool; the message a
//! value names (Confluent's message indexes), and messages as Avro schemas and values,
//! so that the table columns and the decoding of Protobuf topics are the Avro ones.

use std::collections::{HashMap, HashSet};

use apache_avro::schema::Schema as Avro;
use apache_avro::types::Value;
use base64::Engine as _;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage as _, Value as Proto,
};
use prost_types::FileDescriptorProto;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use serde_json::json;

/// The file name a `.proto` source without one compiles under.
const MAIN_FILE: &str = "schema.proto";

/// The descriptor in a base64 schema text, if it is one.
pub fn descriptor_from_base64(text: &str) -> Option<FileDescriptorProto> {
    let t = text.trim();
    if t.is_empty() || t.contains(|c: char| c.is_whitespace() || c == '{' || c == ';') {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(t).ok()?;
    FileDescriptorProto::decode(bytes.as_slice()).ok()
}

fn file(name: &str, text: &str) -> Result<File, protox::Error> {
    match descriptor_from_base64(text) {
        Some(mut fdp) => {
            fdp.name = Some(name.to_string());
            Ok(File::from_file_descriptor_proto(fdp))
        }
        None => File::from_source(name, text),
    }
}

struct Sources(HashMap<String, String>);

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.get(name) {
            Some(text) => file(name, text),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// A compiled schema: its pool and the name of its own file in it.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub pool: DescriptorPool,
    pub file: String,
}

impl Compiled {
    /// The message Confluent's message indexes name (`[0]`: the file's first message).
    pub fn message(&self, indexes: &[i64]) -> Option<MessageDescriptor> {
        let file = self.pool.get_file_by_name(&self.file)?;
        let (first, rest) = indexes.split_first()?;
        let mut msg = file.messages().nth(usize::try_from(*first).ok()?)?;
        for i in rest {
            let next = msg.child_messages().nth(usize::try_from(*i).ok()?)?;
            msg = next;
        }
        Some(msg)
    }

    /// The schema's own file, serialized and base64-encoded (Confluent's `serialized`
    /// format).
    pub fn serialized(&self) -> Option<String> {
        let file = self.pool.get_file_by_name(&self.file)?;
        Some(
            base64::engine::general_purpose::STANDARD
                .encode(file.file_descriptor_proto().encode_to_vec()),
        )
    }
}

/// Compiles a schema text with its references (import name → text).
pub fn compile(text: &str, references: &[(String, String)]) -> Result<Compiled, String> {
    let main = descriptor_from_base64(text)
        .and_then(|f| f.name)
        .unwrap_or_else(|| MAIN_FILE.to_string());
    let mut sources: HashMap<String, String> = references.iter().cloned().collect();
    sources.insert(main.clone(), text.to_string());
    let mut chain = ChainFileResolver::new();
    chain.add(Sources(sources));
    chain.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.include_imports(true);
    compiler.open_file(&main).map_err(|e| e.to_string())?;
    Ok(Compiled {
        pool: compiler.descriptor_pool(),
        file: main,
    })
}

/// Whether data written with `writer` can be read with `reader` (Confluent's rules for
/// Protobuf): no message of the writer's file is removed, and a field number keeps a
/// compatible kind (the wire-compatible groups of scalars, the same message or enum) and
/// its cardinality.
pub fn can_read(writer: &Compiled, reader: &Compiled) -> Result<(), String> {
    let Some(file) = writer.pool.get_file_by_name(&writer.file) else {
        return Ok(());
    };
    let mut problems = Vec::new();
    let mut pending: Vec<MessageDescriptor> = file.messages().collect();
    while let Some(w) = pending.pop() {
        pending.extend(w.child_messages().filter(|m| !m.is_map_entry()));
        let Some(r) = reader.pool.get_message_by_name(w.full_name()) else {
            problems.push(format!("message {} removed", w.full_name()));
            continue;
        };
        for wf in w.fields() {
            let Some(rf) = r.get_field(wf.number()) else {
                continue;
            };
            if wf.is_list() != rf.is_list() || wf.is_map() != rf.is_map() {
                problems.push(format!(
                    "{}.{}: cardinality changed",
                    w.full_name(),
                    wf.name()
                ));
            } else if !compatible_kinds(&wf.kind(), &rf.kind()) {
                problems.push(format!(
                    "{}.{}: type changed from {:?} to {:?}",
                    w.full_name(),
                    wf.name(),
                    kind_name(&wf.kind()),
                    kind_name(&rf.kind())
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn kind_name(k: &Kind) -> String {
    match k {
        Kind::Message(m) => m.full_name().to_string(),
        Kind::Enum(e) => e.full_name().to_string(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn compatible_kinds(w: &Kind, r: &Kind) -> bool {
    let group = |k: &Kind| match k {
        Kind::Int32 | Kind::Uint32 | Kind::Int64 | Kind::Uint64 | Kind::Bool => 1,
        Kind::Sint32 | Kind::Sint64 => 2,
        Kind::Fixed32 | Kind::Sfixed32 => 3,
        Kind::Fixed64 | Kind::Sfixed64 => 4,
        Kind::String | Kind::Bytes => 5,
        Kind::Float => 6,
        Kind::Double => 7,
        Kind::Message(_) => 8,
        Kind::Enum(_) => 9,
    };
    match (w, r) {
        (Kind::Message(a), Kind::Message(b)) => a.full_name() == b.full_name(),
        (Kind::Enum(a), Kind::Enum(b)) => a.full_name() == b.full_name(),
        _ => group(w) == group(r),
    }
}

/// Confluent's message indexes after the schema id: a zigzag varint count, then as many
/// indexes (a count of 0 means `[0]`); the indexes and the message bytes.
pub fn split_indexes(mut data: &[u8]) -> Option<(Vec<i64>, &[u8])> {
    fn varint(data: &mut &[u8]) -> Option<i64> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = data.split_first()?;
            *data = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        None
    }
    let count = varint(&mut data)?;
    if count == 0 {
        return Some((vec![0], data));
    }
    if !(0..=64).contains(&count) {
        return None;
    }
    let mut indexes = Vec::with_capacity(count as usize);
    for _ in 0..count {
        indexes.push(varint(&mut data)?);
    }
    Some((indexes, data))
}

/// The Avro record schema of a message, for columns (every field optional; recursive
/// fields left out).
pub fn message_to_avro(msg: &MessageDescriptor) -> Option<Avro> {
    let mut defined = HashSet::new();
    let mut stack = Vec::new();
    let record = message_json(msg, &mut defined, &mut stack)?;
    Avro::parse_str(&record.to_string()).ok()
}

const TIMESTAMP: &str = "google.protobuf.Timestamp";

fn message_json(
    msg: &MessageDescriptor,
    defined: &mut HashSet<String>,
    stack: &mut Vec<String>,
) -> Option<serde_json::Value> {
    let name = msg.full_name().to_string();
    if stack.contains(&name) {
        return None;
    }
    if defined.contains(&name) {
        return Some(json!(name));
    }
    defined.insert(name.clone());
    stack.push(name.clone());
    let mut fields = Vec::new();
    for f in msg.fields() {
        if let Some(t) = field_json(&f, defined, stack) {
            fields.push(json!({"name": f.name(), "type": ["null", t], "default": null}));
        }
    }
    stack.pop();
    Some(json!({"type": "record", "name": name, "fields": fields}))
}

fn kind_json(
    kind: &Kind,
    defined: &mut HashSet<String>,
    stack: &mut Vec<String>,
) -> Option<serde_json::Value> {
    Some(match kind {
        Kind::Double => json!("double"),
        Kind::Float => json!("float"),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!("int"),
        Kind::Int64
        | Kind::Sint64
        | Kind::Sfixed64
        | Kind::Uint32
        | Kind::Uint64
        | Kind::Fixed32
        | Kind::Fixed64 => json!("long"),
        Kind::Bool => json!("boolean"),
        Kind::String | Kind::Enum(_) => json!("string"),
        Kind::Bytes => json!("bytes"),
        Kind::Message(m) if m.full_name() == TIMESTAMP => {
            json!({"type": "long", "logicalType": "timestamp-micros"})
        }
        Kind::Message(m) => message_json(m, defined, stack)?,
    })
}

fn field_json(
    f: &FieldDescriptor,
    defined: &mut HashSet<String>,
    stack: &mut Vec<String>,
) -> Option<serde_json::Value> {
    if f.is_map() {
        let Kind::Message(entry) = f.kind() else {
            return None;
        };
        let value = kind_json(&entry.map_entry_value_field().kind(), defined, stack)?;
        return Some(json!({"type": "map", "values": ["null", value]}));
    }
    let base = kind_json(&f.kind(), defined, stack)?;
    if f.is_list() {
        Some(json!({"type": "array", "items": ["null", base]}))
    } else {
        Some(base)
    }
}

/// A decoded message as a value of its Avro schema.
pub fn message_to_value(msg: &DynamicMessage, schema: &Avro) -> Option<Value> {
    let Avro::Record(r) = schema else {
        return None;
    };
    let desc = msg.descriptor();
    let fields = r
        .fields
        .iter()
        .map(|f| {
            let v = desc
                .get_field_by_name(&f.name)
                .filter(|fd| !fd.supports_presence() || msg.has_field(fd))
                .and_then(|fd| to_value(&msg.get_field(&fd), &fd.kind(), &f.schema))
                .unwrap_or(Value::Union(0, Box::new(Value::Null)));
            (f.name.clone(), v)
        })
        .collect();
    Some(Value::Record(fields))
}

fn to_value(v: &Proto, kind: &Kind, schema: &Avro) -> Option<Value> {
    match schema {
        Avro::Union(u) => {
            let (i, branch) = u
                .variants()
                .iter()
                .enumerate()
                .find(|(_, s)| !matches!(s, Avro::Null))?;
            Some(match to_value(v, kind, branch) {
                Some(inner) => Value::Union(i as u32, Box::new(inner)),
                None => Value::Union(0, Box::new(Value::Null)),
            })
        }
        Avro::Array(a) => match v {
            Proto::List(items) => Some(Value::Array(
                items
                    .iter()
                    .map(|item| to_value(item, kind, &a.items).unwrap_or(Value::Null))
                    .collect(),
            )),
            _ => None,
        },
        Avro::Map(m) => {
            let (Proto::Map(entries), Kind::Message(entry)) = (v, kind) else {
                return None;
            };
            let value_kind = entry.map_entry_value_field().kind();
            Some(Value::Map(
                entries
                    .iter()
                    .map(|(k, val)| {
                        let key = match k {
                            MapKey::String(s) => s.clone(),
                            MapKey::Bool(b) => b.to_string(),
                            MapKey::I32(n) => n.to_string(),
                            MapKey::I64(n) => n.to_string(),
                            MapKey::U32(n) => n.to_string(),
                            MapKey::U64(n) => n.to_string(),
                        };
                        (
                            key,
                            to_value(val, &value_kind, &m.types).unwrap_or(Value::Null),
                        )
                    })
                    .collect(),
            ))
        }
        Avro::Record(_) => match v {
            Proto::Message(m) => message_to_value(m, schema),
            _ => None,
        },
        Avro::TimestampMicros => match v {
            Proto::Message(m) => {
                let desc = m.descriptor();
                let get = |name: &str| {
                    desc.get_field_by_name(name)
                        .map(|fd| m.get_field(&fd).into_owned())
                };
                let seconds = match get("seconds")? {
                    Proto::I64(s) => s,
                    _ => return None,
                };
                let nanos = match get("nanos")? {
                    Proto::I32(n) => i64::from(n),
                    _ => return None,
                };
                Some(Value::TimestampMicros(
                    seconds.checked_mul(1_000_000)? + nanos / 1000,
                ))
            }
            _ => None,
        },
        Avro::String => match (v, kind) {
            (Proto::String(s), _) => Some(Value::String(s.clone())),
            (Proto::EnumNumber(n), Kind::Enum(e)) => Some(Value::String(
                e.get_value(*n)
                    .map_or_else(|| n.to_string(), |ev| ev.name().to_string()),
            )),
            _ => None,
        },
        Avro::Bytes => match v {
            Proto::Bytes(b) => Some(Value::Bytes(b.to_vec())),
            _ => None,
        },
        Avro::Boolean => v.as_bool().map(Value::Boolean),
        Avro::Int => v.as_i32().map(Value::Int),
        Avro::Long => match v {
            Proto::I64(n) => Some(Value::Long(*n)),
            Proto::U32(n) => Some(Value::Long(i64::from(*n))),
            Proto::U64(n) => i64::try_from(*n).ok().map(Value::Long),
            Proto::I32(n) => Some(Value::Long(i64::from(*n))),
            _ => None,
        },
        Avro::Float => v.as_f32().map(Value::Float),
        Avro::Double => v.as_f64().map(Value::Double),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"syntax = "proto3"; package t;
        message A { int32 n = 1; string s = 2; message B { bool x = 1; } B b = 3; }
        message C { repeated int64 v = 1; }"#;

    #[test]
    fn compiles_checks_and_finds_messages() {
        let v1 = compile(V1, &[]).expect("v1");
        assert_eq!(
            v1.message(&[0]).map(|m| m.full_name().to_string()),
            Some("t.A".into())
        );
        assert_eq!(
            v1.message(&[1]).map(|m| m.full_name().to_string()),
            Some("t.C".into())
        );
        assert_eq!(
            v1.message(&[0, 0]).map(|m| m.full_name().to_string()),
            Some("t.A.B".into())
        );
        // The serialized form compiles back to the same messages.
        let again = compile(&v1.serialized().expect("serialized"), &[]).expect("base64");
        assert!(again.message(&[1]).is_some());
        // int32 -> int64 is wire compatible; int32 -> string is not; removing C is not.
        let widened = V1.replace("int32 n = 1", "int64 n = 1");
        assert!(can_read(&v1, &compile(&widened, &[]).expect("widened")).is_ok());
        let changed = V1.replace("int32 n = 1", "string n = 1");
        assert!(can_read(&v1, &compile(&changed, &[]).expect("changed")).is_err());
        let removed = V1.replace("message C { repeated int64 v = 1; }", "");
        assert!(can_read(&v1, &compile(&removed, &[]).expect("removed")).is_err());
        assert!(compile("syntax = 'proto3'; message {", &[]).is_err());
        // Message indexes: [0] as one zero byte, else a count and the indexes (zigzag).
        assert_eq!(split_indexes(&[0, 9]), Some((vec![0], &[9u8][..])));
        assert_eq!(split_indexes(&[4, 2, 0, 7]), Some((vec![1, 0], &[7u8][..])));
        // Columns: A as a record with its nested message.
        let avro = message_to_avro(&v1.message(&[0]).expect("A")).expect("avro");
        let Avro::Record(r) = avro else {
            panic!("record")
        };
        assert_eq!(
            r.fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            ["n", "s", "b"]
        );
    }
}
