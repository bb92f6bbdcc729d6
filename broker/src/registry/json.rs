//! JSON Schema for the registry: validation against the JSON Schema meta-schemas and
//! compilation (`jsonschema`), the stored form, and compatibility as set inclusion: a
//! reader accepts every document its writer accepts (types, properties, `required`,
//! `additionalProperties`, enums, bounds, array items, `anyOf`/`oneOf` branches; other
//! keywords must stay as they were).

use serde_json::{Map, Value};

/// Checks `text` is a valid JSON Schema and returns the text the registry stores
/// (compacted, object keys sorted).
pub fn parse(text: &str, references: &[String]) -> Result<String, String> {
    if !references.is_empty() {
        return Err("Invalid schema: references are not supported for JSON schemas".into());
    }
    let json: Value = serde_json::from_str(text).map_err(|e| format!("Invalid schema: {e}"))?;
    if !json.is_object() && !json.is_boolean() {
        return Err("Invalid schema: a JSON schema is an object or a boolean".into());
    }
    jsonschema::meta::validate(&json).map_err(|e| format!("Invalid schema: {e}"))?;
    jsonschema::validator_for(&json).map_err(|e| format!("Invalid schema: {e}"))?;
    serde_json::to_string(&json).map_err(|e| e.to_string())
}

/// Whether every document valid under `writer` is valid under `reader`; the reasons if
/// not.
pub fn can_read(writer: &str, reader: &str) -> Result<(), String> {
    let w: Value = serde_json::from_str(writer).map_err(|e| e.to_string())?;
    let r: Value = serde_json::from_str(reader).map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    check(&w, &r, "#", &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Keywords [`check`] reasons about; any other keyword must be equal on both sides.
const UNDERSTOOD: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "anyOf",
    "oneOf",
    "format",
    // Annotations: no effect on which documents are valid.
    "$schema",
    "$id",
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
];

fn accepts_everything(s: &Value) -> bool {
    match s {
        Value::Bool(b) => *b,
        Value::Object(m) => m.keys().all(|k| {
            matches!(
                k.as_str(),
                "$schema" | "$id" | "title" | "description" | "default" | "examples" | "$comment"
            )
        }),
        _ => false,
    }
}

fn types(s: &Map<String, Value>) -> Option<Vec<String>> {
    match s.get("type")? {
        Value::String(t) => Some(vec![t.clone()]),
        Value::Array(ts) => Some(
            ts.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect(),
        ),
        _ => None,
    }
}

fn allows(types: &[String], t: &str) -> bool {
    types
        .iter()
        .any(|x| x == t || (x == "number" && t == "integer"))
}

fn number(s: &Map<String, Value>, key: &str) -> Option<f64> {
    s.get(key).and_then(Value::as_f64)
}

/// `reader` accepts everything `writer` does (reasons appended otherwise).
fn check(writer: &Value, reader: &Value, path: &str, out: &mut Vec<String>) {
    if accepts_everything(reader) || writer == reader || *writer == Value::Bool(false) {
        return;
    }
    let (Value::Object(w), Value::Object(r)) = (writer, reader) else {
        out.push(format!("{path}: the reader accepts less than the writer"));
        return;
    };
    // Keywords this check does not reason about must not change.
    for key in w.keys().chain(r.keys()) {
        if !UNDERSTOOD.contains(&key.as_str()) && w.get(key) != r.get(key) {
            out.push(format!("{path}: keyword {key} changed"));
            return;
        }
    }
    if let (Some(wt), Some(rt)) = (types(w), types(r)) {
        for t in &wt {
            if !allows(&rt, t) {
                out.push(format!("{path}: type {t} is no longer allowed"));
            }
        }
    } else if types(r).is_some() {
        out.push(format!(
            "{path}: the reader restricts the type, the writer does not"
        ));
    }
    // Enums and constants: the reader's set must hold the writer's.
    if let Some(Value::Array(re)) = r.get("enum") {
        match w.get("enum") {
            Some(Value::Array(we)) => {
                for v in we {
                    if !re.contains(v) {
                        out.push(format!("{path}: enum value {v} removed"));
                    }
                }
            }
            _ => out.push(format!("{path}: the reader adds an enum")),
        }
    }
    if r.get("const").is_some() && r.get("const") != w.get("const") {
        out.push(format!("{path}: const changed"));
    }
    if r.get("format").is_some() && r.get("format") != w.get("format") {
        out.push(format!("{path}: format changed"));
    }
    // Bounds may only widen.
    for key in ["minimum", "exclusiveMinimum", "minLength", "minItems"] {
        if let Some(rv) = number(r, key) {
            if number(w, key).is_none_or(|wv| rv > wv) {
                out.push(format!("{path}: {key} raised"));
            }
        }
    }
    for key in ["maximum", "exclusiveMaximum", "maxLength", "maxItems"] {
        if let Some(rv) = number(r, key) {
            if number(w, key).is_none_or(|wv| rv < wv) {
                out.push(format!("{path}: {key} lowered"));
            }
        }
    }
    check_object(w, r, path, out);
    match (w.get("items"), r.get("items")) {
        (Some(wi), Some(ri)) => check(wi, ri, &format!("{path}/items"), out),
        (None, Some(ri)) if !accepts_everything(ri) => {
            out.push(format!("{path}: the reader restricts array items"));
        }
        _ => {}
    }
    for key in ["anyOf", "oneOf"] {
        let (wb, rb) = (w.get(key), r.get(key));
        if wb == rb {
            continue;
        }
        let Some(Value::Array(rb)) = rb else {
            continue;
        };
        let wb: Vec<Value> = match wb {
            Some(Value::Array(wb)) => wb.clone(),
            _ => vec![writer.clone()],
        };
        for (i, branch) in wb.iter().enumerate() {
            let fits = rb.iter().any(|candidate| {
                let mut problems = Vec::new();
                check(branch, candidate, path, &mut problems);
                problems.is_empty()
            });
            if !fits {
                out.push(format!("{path}/{key}/{i}: no reader branch accepts it"));
            }
        }
    }
}

fn check_object(w: &Map<String, Value>, r: &Map<String, Value>, path: &str, out: &mut Vec<String>) {
    let empty = Map::new();
    let wp = w
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let rp = r
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let w_extra = w
        .get("additionalProperties")
        .cloned()
        .unwrap_or(Value::Bool(true));
    let r_extra = r
        .get("additionalProperties")
        .cloned()
        .unwrap_or(Value::Bool(true));
    // Required properties: the reader may require only what the writer did.
    let required = |m: &Map<String, Value>| -> Vec<String> {
        m.get("required")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let w_required = required(w);
    for name in required(r) {
        if !w_required.contains(&name) {
            out.push(format!("{path}: property {name} is now required"));
        }
    }
    for (name, ws) in wp {
        let p = format!("{path}/properties/{name}");
        match rp.get(name) {
            Some(rs) => check(ws, rs, &p, out),
            // Removed: the reader takes it as an additional property.
            None => check(ws, &r_extra, &p, out),
        }
    }
    for (name, rs) in rp {
        if !wp.contains_key(name) {
            // Added: what the writer let in as an additional property must fit.
            check(&w_extra, rs, &format!("{path}/properties/{name}"), out);
        }
    }
    check(
        &w_extra,
        &r_extra,
        &format!("{path}/additionalProperties"),
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(w: &str, r: &str) -> bool {
        can_read(w, r).is_ok()
    }

    #[test]
    fn compatibility_is_set_inclusion() {
        let closed = r#"{"type": "object", "additionalProperties": false,
                         "properties": {"a": {"type": "integer"}}}"#;
        let closed_plus = r#"{"type": "object", "additionalProperties": false,
                              "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}}"#;
        let open = r#"{"type": "object", "properties": {"a": {"type": "integer"}}}"#;
        let open_plus = r#"{"type": "object",
                            "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}}"#;
        // A property added to a closed schema: old documents never had it.
        assert!(ok(closed, closed_plus));
        // Added to an open schema: old documents may have had it with any value.
        assert!(!ok(open, open_plus));
        // Removed from a closed reader: the writer's documents carry it.
        assert!(!ok(closed_plus, closed));
        assert!(ok(open_plus, open));
        // Types widen, never narrow; integer is a number.
        let number = r#"{"type": "object", "additionalProperties": false,
                         "properties": {"a": {"type": "number"}}}"#;
        assert!(ok(closed, number));
        assert!(!ok(number, closed));
        // Required, enums and bounds.
        let required = r#"{"type": "object", "required": ["a"],
                           "properties": {"a": {"type": "integer"}}}"#;
        assert!(ok(required, open));
        assert!(!ok(open, required));
        assert!(ok(r#"{"enum": [1, 2]}"#, r#"{"enum": [1, 2, 3]}"#));
        assert!(!ok(r#"{"enum": [1, 2, 3]}"#, r#"{"enum": [1, 2]}"#));
        assert!(ok(r#"{"maxLength": 5}"#, r#"{"maxLength": 9}"#));
        assert!(!ok(r#"{"maxLength": 9}"#, r#"{"maxLength": 5}"#));
        assert!(ok(
            r#"{"type": "string"}"#,
            r#"{"anyOf": [{"type": "string"}, {"type": "null"}]}"#
        ));
        assert!(!ok(r#"{"type": "string"}"#, r#"{"pattern": "^a"}"#));
        assert!(parse(r#"{"type": 12}"#, &[]).is_err());
        assert!(parse(r#"{"type": "object"}"#, &[]).is_ok());
    }
}
