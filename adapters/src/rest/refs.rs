//! Local `$ref`s of an OpenAPI document, resolved without recursion and
//! without ever leaving the document: a reference to another file or a URL
//! is refused, never fetched, and a chain of references that comes back to
//! itself is refused.
//!
//! Schemas keep recursive data structures (a tree whose nodes hold nodes):
//! each `#/components/schemas/NAME` a tool's schema reaches is copied into
//! that schema's `$defs` and referenced there, so validation follows the
//! recursion while the schema stays finite.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Most references followed in one chain (`A → B → …`) before it is called a cycle.
const MAX_CHAIN: usize = 64;
/// Most schemas inlined inside one another through non-component references.
const MAX_INLINE_DEPTH: usize = 32;
const COMPONENT_SCHEMAS: &str = "#/components/schemas/";

/// A `$ref` that cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error(
        "$ref '{target}' points outside the document; capgate never fetches other files or URLs: bundle the document first (e.g. redocly bundle)"
    )]
    External { target: String },
    #[error("$ref '{target}' points at nothing in the document")]
    Unresolved { target: String },
    #[error("$ref '{target}' is part of a cycle of references ({chain}); the document is refused")]
    Cyclic { target: String, chain: String },
}

/// Follows `value`'s `$ref` chain (Parameter, Request Body, Response
/// Objects) to the object it ends at.
pub fn follow<'a>(raw: &'a Value, value: &'a Value) -> Result<&'a Value, RefError> {
    let mut current = value;
    let mut seen: Vec<&str> = Vec::new();
    while let Some(target) = current.get("$ref").and_then(Value::as_str) {
        if seen.contains(&target) || seen.len() >= MAX_CHAIN {
            return Err(RefError::Cyclic {
                target: target.to_owned(),
                chain: chain(&seen, target),
            });
        }
        seen.push(target);
        current = lookup(raw, target)?;
    }
    Ok(current)
}

fn chain(seen: &[&str], last: &str) -> String {
    seen.iter()
        .copied()
        .chain(std::iter::once(last))
        .collect::<Vec<_>>()
        .join(" → ")
}

/// The value a local reference (`#/a/b`) points at.
pub fn lookup<'a>(raw: &'a Value, target: &str) -> Result<&'a Value, RefError> {
    let Some(pointer) = target.strip_prefix('#') else {
        return Err(RefError::External {
            target: target.to_owned(),
        });
    };
    let pointer = percent_encoding::percent_decode_str(pointer).decode_utf8_lossy();
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(RefError::Unresolved {
            target: target.to_owned(),
        });
    }
    raw.pointer(&pointer).ok_or_else(|| RefError::Unresolved {
        target: target.to_owned(),
    })
}

/// Collects the component schemas that tools' schemas reach, for their `$defs`.
pub struct Defs<'a> {
    raw: &'a Value,
    /// `$id` of a component schema → its name (3.1 schemas may be
    /// referenced by their `$id`, and `$id#anchor` for a part of one).
    ids: BTreeMap<String, String>,
    /// Component name → its schema with references rewritten.
    found: BTreeMap<String, Value>,
}

impl<'a> Defs<'a> {
    pub fn new(raw: &'a Value) -> Self {
        let ids = raw
            .pointer("/components/schemas")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(name, schema)| {
                let id = schema.get("$id")?.as_str()?;
                Some((id.to_owned(), name.clone()))
            })
            .collect();
        Self {
            raw,
            ids,
            found: BTreeMap::new(),
        }
    }

    /// `schema` with every local reference rewritten: component schemas to
    /// `#/$defs/NAME` (collected here), anything else inlined.
    pub fn rewrite(&mut self, schema: &Value) -> Result<Value, RefError> {
        let mut pending = Vec::new();
        let walker = Walker {
            raw: self.raw,
            ids: &self.ids,
        };
        let rewritten = walker.rewrite(schema, &mut pending, 0, &mut Vec::new())?;
        while let Some(name) = pending.pop() {
            if self.found.contains_key(&name) {
                continue;
            }
            let target = format!("{COMPONENT_SCHEMAS}{}", escape(&name));
            let component = lookup(self.raw, &target)?;
            // Reserve the name first: a schema that refers to itself is
            // recursion, not a new entry.
            self.found.insert(name.clone(), Value::Null);
            let body = walker.rewrite(component, &mut pending, 0, &mut Vec::new())?;
            self.found.insert(name, body);
        }
        Ok(rewritten)
    }

    /// The `$defs` that `roots` reach (the collection is shared by all the
    /// schemas of an import; each tool gets only what its own schema needs).
    pub fn for_roots(&self, roots: &[&Value]) -> Result<Map<String, Value>, RefError> {
        let mut needed = Map::new();
        let mut pending: Vec<String> = Vec::new();
        for root in roots {
            referenced(root, &mut pending);
        }
        while let Some(name) = pending.pop() {
            if needed.contains_key(&name) {
                continue;
            }
            let Some(body) = self.found.get(&name) else {
                continue;
            };
            referenced(body, &mut pending);
            needed.insert(name, body.clone());
        }
        check_bare_cycles(&needed)?;
        Ok(needed)
    }
}

/// Component names referenced (`#/$defs/NAME`) anywhere in `value`.
fn referenced(value: &Value, names: &mut Vec<String>) {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(fields) => {
                if let Some(Value::String(target)) = fields.get("$ref")
                    && let Some(name) = target.strip_prefix("#/$defs/")
                {
                    names.push(unescape(name));
                }
                stack.extend(fields.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
}

/// A definition that is nothing but a reference, in a ring of such
/// definitions, describes no value at all: refused.
fn check_bare_cycles(defs: &Map<String, Value>) -> Result<(), RefError> {
    let bare = |name: &str| {
        defs.get(name)
            .and_then(|body| body.get("$ref"))
            .and_then(Value::as_str)
            .and_then(|target| target.strip_prefix("#/$defs/"))
            .map(unescape)
    };
    for start in defs.keys() {
        let mut seen = vec![start.clone()];
        let mut current = start.clone();
        while let Some(next) = bare(&current) {
            if seen.contains(&next) {
                let targets: Vec<String> = seen
                    .iter()
                    .map(|n| format!("{COMPONENT_SCHEMAS}{n}"))
                    .collect();
                let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
                let target = format!("{COMPONENT_SCHEMAS}{next}");
                return Err(RefError::Cyclic {
                    chain: chain(&refs, &target),
                    target,
                });
            }
            seen.push(next.clone());
            current = next;
        }
    }
    Ok(())
}

/// Rewrites references of one schema tree.
struct Walker<'a> {
    raw: &'a Value,
    ids: &'a BTreeMap<String, String>,
}

/// Where a reference leads.
enum Target<'a> {
    /// A whole component schema, by name.
    Component(String),
    /// Any other schema of the document, copied in place.
    Inline(&'a Value),
}

/// Keywords that would move the base URI or dialect of a copied schema
/// (its `$ref`s are rewritten to the tool schema's own `$defs`).
const DROPPED: [&str; 3] = ["$id", "$schema", "$vocabulary"];

impl<'a> Walker<'a> {
    fn target(&self, target: &str) -> Result<Target<'a>, RefError> {
        if let Some(name) = target
            .strip_prefix(COMPONENT_SCHEMAS)
            .filter(|name| !name.contains('/'))
        {
            let name = unescape(&percent_encoding::percent_decode_str(name).decode_utf8_lossy());
            lookup(self.raw, target)?;
            return Ok(Target::Component(name));
        }
        if target.starts_with('#') {
            return lookup(self.raw, target).map(Target::Inline);
        }
        // A 3.1 reference by a component's `$id`: `ID`, `ID#/pointer`, `ID#anchor`.
        let (id, fragment) = target.split_once('#').unwrap_or((target, ""));
        let Some(name) = self.ids.get(id) else {
            return Err(RefError::External {
                target: target.to_owned(),
            });
        };
        let component = lookup(self.raw, &format!("{COMPONENT_SCHEMAS}{}", escape(name)))?;
        if fragment.is_empty() {
            return Ok(Target::Component(name.clone()));
        }
        let unresolved = || RefError::Unresolved {
            target: target.to_owned(),
        };
        if fragment.starts_with('/') {
            return component
                .pointer(fragment)
                .map(Target::Inline)
                .ok_or_else(unresolved);
        }
        find_anchor(component, fragment)
            .map(Target::Inline)
            .ok_or_else(unresolved)
    }

    fn rewrite(
        &self,
        value: &Value,
        pending: &mut Vec<String>,
        depth: usize,
        inlining: &mut Vec<String>,
    ) -> Result<Value, RefError> {
        match value {
            Value::Object(fields) => {
                let mut out = Map::with_capacity(fields.len());
                for (key, field) in fields {
                    if DROPPED.contains(&key.as_str()) {
                        continue;
                    }
                    if key == "$ref" && !field.is_string() {
                        // Seen in published documents (an unquoted `#` in YAML
                        // starts a comment): the keyword says nothing.
                        tracing::warn!(%field, "a $ref that is not a string is ignored");
                        continue;
                    }
                    match (key.as_str(), field) {
                        ("$ref", Value::String(target)) => match self.target(target)? {
                            Target::Component(name) => {
                                out.insert(
                                    key.clone(),
                                    Value::String(format!("#/$defs/{}", escape(&name))),
                                );
                                pending.push(name);
                            }
                            Target::Inline(resolved) => {
                                if inlining.contains(target) || depth >= MAX_INLINE_DEPTH {
                                    let seen: Vec<&str> =
                                        inlining.iter().map(String::as_str).collect();
                                    return Err(RefError::Cyclic {
                                        target: target.clone(),
                                        chain: chain(&seen, target),
                                    });
                                }
                                inlining.push(target.clone());
                                let inlined =
                                    self.rewrite(resolved, pending, depth + 1, inlining)?;
                                inlining.pop();
                                match inlined {
                                    Value::Object(inner) => {
                                        for (k, v) in inner {
                                            out.entry(k).or_insert(v);
                                        }
                                    }
                                    other => return Ok(other),
                                }
                            }
                        },
                        _ => {
                            out.insert(
                                key.clone(),
                                self.rewrite(field, pending, depth + 1, inlining)?,
                            );
                        }
                    }
                }
                Ok(Value::Object(out))
            }
            Value::Array(items) => items
                .iter()
                .map(|item| self.rewrite(item, pending, depth + 1, inlining))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            other => Ok(other.clone()),
        }
    }
}

/// The subschema of `schema` that declares `$anchor: anchor`.
fn find_anchor<'v>(schema: &'v Value, anchor: &str) -> Option<&'v Value> {
    let mut stack = vec![schema];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(fields) => {
                if fields.get("$anchor").and_then(Value::as_str) == Some(anchor) {
                    return Some(value);
                }
                stack.extend(fields.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    None
}

/// A name as one JSON Pointer segment.
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({"components": {
            "schemas": {
                "Node": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}, "tag": {"$ref": "#/components/schemas/Tag"}}},
                "Tag": {"type": "string"},
                "A": {"$ref": "#/components/schemas/B"},
                "B": {"$ref": "#/components/schemas/A"},
                "Remote": {"$ref": "https://example.com/schemas.json#/Pet"},
                "Deep": {"properties": {"x": {"$ref": "#/components/schemas/Node/properties/tag"}}}
            },
            "parameters": {
                "p": {"$ref": "#/components/parameters/q"},
                "q": {"$ref": "#/components/parameters/p"},
                "limit": {"name": "limit", "in": "query"}
            }
        }})
    }

    #[test]
    fn recursive_schemas_are_kept_as_defs() {
        let raw = doc();
        let mut defs = Defs::new(&raw);
        let schema = defs
            .rewrite(&json!({"$ref": "#/components/schemas/Node"}))
            .unwrap();
        assert_eq!(schema, json!({"$ref": "#/$defs/Node"}));
        let needed = defs.for_roots(&[&schema]).unwrap();
        assert_eq!(needed.keys().collect::<Vec<_>>(), ["Node", "Tag"]);
        assert_eq!(
            needed["Node"]["properties"]["children"]["items"],
            json!({"$ref": "#/$defs/Node"})
        );
        let mut root = json!({"properties": {"n": schema}});
        root["$defs"] = Value::Object(needed);
        let validator = jsonschema::validator_for(&root).unwrap();
        assert!(validator.is_valid(&json!({"n": {"children": [{"children": [], "tag": "x"}]}})));
        assert!(!validator.is_valid(&json!({"n": {"children": [{"tag": 5}]}})));
    }

    #[test]
    fn a_ring_of_bare_references_is_refused() {
        let raw = doc();
        let mut defs = Defs::new(&raw);
        let schema = defs
            .rewrite(&json!({"$ref": "#/components/schemas/A"}))
            .unwrap();
        let error = defs.for_roots(&[&schema]).unwrap_err();
        assert!(matches!(error, RefError::Cyclic { .. }), "{error}");
        assert!(error.to_string().contains("cycle"), "{error}");
        let error = follow(&raw, &json!({"$ref": "#/components/parameters/p"})).unwrap_err();
        assert!(matches!(error, RefError::Cyclic { .. }), "{error}");
    }

    #[test]
    fn external_and_dangling_references_are_refused_and_never_fetched() {
        let raw = doc();
        let mut defs = Defs::new(&raw);
        let error = defs
            .rewrite(&json!({"$ref": "#/components/schemas/Remote"}))
            .unwrap_err();
        assert!(matches!(error, RefError::External { .. }), "{error}");
        let error = defs
            .rewrite(&json!({"$ref": "#/components/schemas/Missing"}))
            .unwrap_err();
        assert!(matches!(error, RefError::Unresolved { .. }), "{error}");
        let error = follow(&raw, &json!({"$ref": "other.yaml#/x"})).unwrap_err();
        assert!(matches!(error, RefError::External { .. }), "{error}");
    }

    #[test]
    fn references_by_id_and_anchor_resolve_within_the_document() {
        let raw = json!({"components": {"schemas": {
            "Pet": {"$schema": "https://json-schema.org/draft/2020-12/schema", "properties": {
                "details": {"$ref": "/schemas/details"},
                "detailsId": {"$ref": "/schemas/details#details_id"}
            }},
            "Details": {"$id": "/schemas/details", "properties": {
                "id": {"type": "integer", "$anchor": "details_id"},
                "pet": {"$ref": "#/components/schemas/Pet"}
            }}
        }}});
        let mut defs = Defs::new(&raw);
        let schema = defs
            .rewrite(&json!({"$ref": "#/components/schemas/Pet"}))
            .unwrap();
        let needed = defs.for_roots(&[&schema]).unwrap();
        assert_eq!(
            needed["Pet"]["properties"]["details"],
            json!({"$ref": "#/$defs/Details"})
        );
        assert_eq!(needed["Pet"]["properties"]["detailsId"]["type"], "integer");
        assert!(
            needed["Details"].get("$id").is_none(),
            "a copied $id would move the base URI"
        );
        let mut root = schema.clone();
        root["$defs"] = Value::Object(needed);
        let validator = jsonschema::validator_for(&root).unwrap();
        assert!(validator.is_valid(&json!({"details": {"id": 1, "pet": {}}})));
        assert!(!validator.is_valid(&json!({"details": {"id": "x"}})));
    }

    #[test]
    fn other_local_pointers_are_inlined() {
        let raw = doc();
        let mut defs = Defs::new(&raw);
        let schema = defs
            .rewrite(&json!({"$ref": "#/components/schemas/Deep"}))
            .unwrap();
        let needed = defs.for_roots(&[&schema]).unwrap();
        assert_eq!(
            needed["Deep"]["properties"]["x"],
            json!({"$ref": "#/$defs/Tag"})
        );
        let reference = json!({"$ref": "#/components/parameters/limit"});
        let followed = follow(&raw, &reference).unwrap();
        assert_eq!(followed["name"], "limit");
    }
}
