//! Avro schemas for the registry: parsing (with references), the stored form, and
//! Avro's schema-resolution rules as the compatibility check (`apache-avro`).

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;

/// Checks that `text` is a valid Avro schema, resolving named types from `references`
/// (the referenced schemas' texts), and returns the text the registry stores for it:
/// compacted (object keys sorted, no whitespace), so equal texts are the same schema.
pub fn parse(text: &str, references: &[String]) -> Result<String, String> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("Invalid schema: {e}"))?;
    let compact = serde_json::to_string(&json).map_err(|e| e.to_string())?;
    if references.is_empty() {
        Schema::parse_str(&compact).map(drop)
    } else {
        Schema::parse_str_with_list(&compact, references).map(drop)
    }
    .map_err(|e| format!("Invalid schema {compact}: {e}"))?;
    Ok(compact)
}

/// A schema's text and the texts of the schemas it references.
pub type Text<'a> = (&'a str, &'a [String]);

/// Whether data written with `writer` can be read with `reader`; the reason if not.
///
/// `apache-avro`'s checker leaves decimals out ("inconclusive"), so they are checked here
/// as the Avro specification resolves them (the same precision and scale) and replaced
/// by their underlying type for the rest of the check.
pub fn can_read(writer: Text<'_>, reader: Text<'_>) -> Result<(), String> {
    let (w, w_decimals) = without_decimals(writer)?;
    let (r, r_decimals) = without_decimals(reader)?;
    for (path, w) in &w_decimals {
        if let Some(r) = r_decimals.get(path) {
            if r != w {
                return Err(format!(
                    "decimal {path}: precision and scale {w:?} written, {r:?} read"
                ));
            }
        }
    }
    SchemaCompatibility::can_read(&w, &r).map_err(|e| e.to_string())
}

type Decimals = std::collections::HashMap<String, (u64, u64)>;

fn without_decimals((text, references): Text<'_>) -> Result<(Schema, Decimals), String> {
    let strip = |text: &str, decimals: &mut Decimals| -> Result<String, String> {
        let mut json: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        strip_decimals(&mut json, "", decimals);
        Ok(json.to_string())
    };
    let mut decimals = Decimals::new();
    let main = strip(text, &mut decimals)?;
    let mut others = Vec::with_capacity(references.len());
    for r in references {
        others.push(strip(r, &mut Decimals::new())?);
    }
    let schema = if others.is_empty() {
        Schema::parse_str(&main)
    } else {
        Schema::parse_str_with_list(&main, &others).map(|(s, _)| s)
    }
    .map_err(|e| e.to_string())?;
    Ok((schema, decimals))
}

/// Replaces decimal logical types by their underlying type, noting each one's precision
/// and scale by the path of record fields leading to it.
fn strip_decimals(json: &mut serde_json::Value, path: &str, out: &mut Decimals) {
    use serde_json::Value;
    match json {
        Value::Object(m) => {
            if m.get("logicalType").and_then(Value::as_str) == Some("decimal") {
                let n = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
                out.insert(path.to_string(), (n("precision"), n("scale")));
                m.remove("logicalType");
                m.remove("precision");
                m.remove("scale");
            }
            if let Some(Value::Array(fields)) = m.get_mut("fields") {
                for f in fields {
                    let name = f
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    if let Some(t) = f.get_mut("type") {
                        strip_decimals(t, &format!("{path}.{name}"), out);
                    }
                }
            }
            for key in ["items", "values", "type"] {
                if let Some(v) = m.get_mut(key) {
                    if !v.is_string() {
                        strip_decimals(v, path, out);
                    }
                }
            }
        }
        Value::Array(branches) => {
            for b in branches {
                strip_decimals(b, path, out);
            }
        }
        _ => {}
    }
}
