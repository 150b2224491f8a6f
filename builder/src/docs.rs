//! The profile's JSON Schema and the reference page generated from it
//! (`docs/profile.md`), so the documentation cannot drift from the parser.

use std::fmt::Write;

use serde_json::Value;

use crate::profile::Profile;

pub fn profile_schema() -> Value {
    let schema = schemars::schema_for!(Profile);
    let mut value = serde_json::to_value(&schema).unwrap_or(Value::Null);
    drop_unset_keys_from_defaults(&mut value);
    value
}

/// TOML has no null: an option that is not set is a key left out, so a
/// table's default lists only the keys that have a value.
fn drop_unset_keys_from_defaults(schema: &mut Value) {
    fn drop_nulls(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.retain(|_, v| !v.is_null());
                map.values_mut().for_each(drop_nulls);
            }
            Value::Array(items) => items.iter_mut().for_each(drop_nulls),
            _ => {}
        }
    }
    match schema {
        Value::Object(map) => {
            for (keyword, child) in map.iter_mut() {
                match keyword.as_str() {
                    "default" => drop_nulls(child),
                    // Maps of names to schemas: a key here may be a
                    // profile key named "default".
                    "properties" | "$defs" => child
                        .as_object_mut()
                        .into_iter()
                        .flat_map(|m| m.values_mut())
                        .for_each(drop_unset_keys_from_defaults),
                    _ => drop_unset_keys_from_defaults(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(drop_unset_keys_from_defaults),
        _ => {}
    }
}

fn resolve<'a>(root: &'a Value, v: &'a Value) -> &'a Value {
    match v
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        Some(name) => root.get("$defs").and_then(|d| d.get(name)).unwrap_or(v),
        None => v,
    }
}

/// The referenced definition behind `v`, looking through `anyOf: [X, null]` and arrays.
fn object_behind<'a>(root: &'a Value, v: &'a Value) -> Option<(&'a Value, bool)> {
    let v = resolve(root, v);
    if v.get("properties").is_some() {
        return Some((v, false));
    }
    if let Some(items) = v.get("items") {
        return object_behind(root, items).map(|(o, _)| (o, true));
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(alts) = v.get(key).and_then(Value::as_array) {
            if let Some(found) = alts.iter().find_map(|a| object_behind(root, a)) {
                return Some(found);
            }
        }
    }
    None
}

fn type_text(root: &Value, v: &Value) -> String {
    let r = resolve(root, v);
    if let Some(values) = r.get("enum").and_then(Value::as_array) {
        return values
            .iter()
            .filter_map(Value::as_str)
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    if let Some(alts) = r
        .get("oneOf")
        .or_else(|| r.get("anyOf"))
        .and_then(Value::as_array)
    {
        let parts: Vec<String> = alts
            .iter()
            .map(|a| type_text(root, a))
            .filter(|t| t != "null")
            .collect();
        if let Some(c) = r.get("const").and_then(Value::as_str) {
            return format!("\"{c}\"");
        }
        return parts.join(" \\| ");
    }
    if let Some(c) = r.get("const").and_then(Value::as_str) {
        return format!("\"{c}\"");
    }
    if r.get("title").is_some()
        && r.get("description")
            .and_then(Value::as_str)
            .is_some_and(|d| d.starts_with("A size"))
    {
        return "size".into();
    }
    match r.get("type") {
        Some(Value::String(t)) if t == "array" => format!(
            "list of {}",
            r.get("items")
                .map(|i| type_text(root, i))
                .unwrap_or_default()
        ),
        Some(Value::String(t)) if t == "object" => "table".into(),
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => {
            let types: Vec<&str> = ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect();
            match (types.as_slice(), r.get("items")) {
                (["array"], Some(items)) => format!("list of {}", type_text(root, items)),
                _ => types.join(" \\| "),
            }
        }
        _ if r
            .get("description")
            .and_then(Value::as_str)
            .is_some_and(|d| d.starts_with("A size")) =>
        {
            "size".into()
        }
        _ => "value".into(),
    }
}

/// `"value": what it means. …` for an enum whose values are documented,
/// looking through `anyOf: [X, null]`.
fn value_descriptions(root: &Value, v: &Value) -> Option<String> {
    let r = resolve(root, v);
    if let Some(alts) = r.get("anyOf").and_then(Value::as_array) {
        return alts.iter().find_map(|a| value_descriptions(root, a));
    }
    let values = r.get("oneOf")?.as_array()?;
    let described: Vec<String> = values
        .iter()
        .map(|alt| {
            let value = alt.get("const")?.as_str()?;
            let what = alt.get("description")?.as_str()?;
            let what = one_line(what);
            Some(format!("\"{value}\": {}.", what.trim_end_matches('.')))
        })
        .collect::<Option<_>>()?;
    Some(described.join(" "))
}

fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn section(out: &mut String, root: &Value, title: &str, obj: &Value, required: bool) {
    let _ = writeln!(out, "\n## `{title}`\n");
    if let Some(d) = obj.get("description").and_then(Value::as_str) {
        let _ = writeln!(out, "{}\n", one_line(d));
    }
    if required {
        let _ = writeln!(out, "Required.\n");
    }
    let _ = writeln!(
        out,
        "| key | type | default | description |\n|---|---|---|---|"
    );
    let props = obj.get("properties").and_then(Value::as_object);
    let req: Vec<&str> = obj
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut nested = Vec::new();
    for (key, prop) in props.into_iter().flatten() {
        let default = match prop.get("default") {
            Some(d) => format!("`{d}`"),
            None if req.contains(&key.as_str()) => "required".into(),
            None => "—".into(),
        };
        let mut desc = prop
            .get("description")
            .or_else(|| resolve(root, prop).get("description"))
            .and_then(Value::as_str)
            .map(one_line)
            .unwrap_or_default();
        if let Some(values) = value_descriptions(root, prop) {
            desc = format!("{desc} {values}").trim_start().to_owned();
        }
        let _ = writeln!(
            out,
            "| `{key}` | {} | {default} | {desc} |",
            type_text(root, prop)
        );
        if let Some((child, is_list)) = object_behind(root, prop) {
            let name = if is_list {
                format!("[[{title}.{key}]]")
            } else {
                format!("{title}.{key}")
            };
            nested.push((name.replace("[[[[", "[[").replace("]]]]", "]]"), child));
        }
    }
    for (name, child) in nested {
        section(
            out,
            root,
            name.trim_start_matches('[').trim_end_matches(']'),
            child,
            false,
        );
    }
}

/// Markdown reference of every profile key, generated from the schema.
pub fn profile_markdown() -> String {
    let root = profile_schema();
    let mut out = String::from(
        "# Profile reference\n\n\
         Generated from the profile schema by `imgforge schema --markdown`; do not edit\n\
         (a test fails when this file and the schema differ). Every profile is one TOML\n\
         file; unknown keys are errors. See `profiles/hypervisor.toml` for a complete\n\
         example and `imgforge schema` for the JSON Schema (for editors).\n",
    );
    let req: Vec<&str> = root
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (key, prop) in root
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Some((obj, is_list)) = object_behind(&root, prop) {
            let title = if is_list {
                format!("[[{key}]]")
            } else {
                format!("[{key}]")
            };
            let title = title
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            section(&mut out, &root, &title, obj, req.contains(&key.as_str()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_knows_every_reference_key() {
        let schema = profile_schema();
        let text = schema.to_string();
        for key in [
            "delete_bridges_on_start",
            "portgroups",
            "vlan_mode",
            "native-untagged",
            "ssh_authorized_keys",
            "min_size",
            "on_failure",
        ] {
            assert!(text.contains(key), "{key} missing from the schema");
        }
        assert_eq!(
            schema["additionalProperties"], false,
            "unknown keys are refused at the top level"
        );
    }

    #[test]
    fn docs_profile_md_is_generated_from_the_schema() {
        let committed = include_str!("../../docs/profile.md");
        assert!(
            committed == profile_markdown(),
            "docs/profile.md is out of date: run `target/release/imgforge schema --markdown > docs/profile.md`"
        );
    }
}
