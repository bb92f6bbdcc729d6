//! Avro schemas for the registry: parsing (with references), the stored form, and
//! Avro's schema-resolution rules as the compatibility check (`apache-avro`).

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;

/// A parsed Avro schema and the text the registry stores for it.
pub struct AvroSchema {
    pub schema: Schema,
    /// The registered text, compacted (object keys sorted, no whitespace): equal texts
    /// are the same schema.
    pub text: String,
}

/// Parses `text`, resolving named types from `references` (the referenced schemas'
/// texts).
pub fn parse(text: &str, references: &[String]) -> Result<AvroSchema, String> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("Invalid schema: {e}"))?;
    let compact = serde_json::to_string(&json).map_err(|e| e.to_string())?;
    let schema = if references.is_empty() {
        Schema::parse_str(&compact)
    } else {
        Schema::parse_str_with_list(&compact, references).map(|(s, _)| s)
    }
    .map_err(|e| format!("Invalid schema {compact}: {e}"))?;
    Ok(AvroSchema {
        schema,
        text: compact,
    })
}

/// Whether data written with `writer` can be read with `reader`; the reason if not.
pub fn can_read(writer: &Schema, reader: &Schema) -> Result<(), String> {
    SchemaCompatibility::can_read(writer, reader).map_err(|e| e.to_string())
}
