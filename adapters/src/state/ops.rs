//! iii's `state::update` operations, applied to a JSON value.
//!
//! Each is tagged by `type`: `set {path, value}`, `merge {path?, value}`,
//! `increment {path, by}`, `decrement {path, by}`, `append {path?, value}`
//! and `remove {path}`. A path is one key (`"count"`) or a list of keys
//! (`["totals", "eur"]`); none (or `[]`) is the value itself. Missing
//! objects along a path are created; a path through something that is not
//! an object is refused, naming where.

use capgate_catalog::schema::json_type;
use serde::Deserialize;
use serde_json::{Map, Number, Value};

/// Most operations in one update.
pub const MAX_OPS: usize = 100;

/// A path into a value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Path {
    #[default]
    #[serde(skip)]
    Root,
    Key(String),
    Keys(Vec<String>),
}

impl Path {
    fn keys(&self) -> &[String] {
        match self {
            Self::Root => &[],
            Self::Key(key) => std::slice::from_ref(key),
            Self::Keys(keys) => keys,
        }
    }
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum UpdateOp {
    Set {
        #[serde(default)]
        path: Path,
        value: Value,
    },
    Merge {
        #[serde(default)]
        path: Path,
        value: Value,
    },
    Increment {
        path: Path,
        by: Number,
    },
    Decrement {
        path: Path,
        by: Number,
    },
    Append {
        #[serde(default)]
        path: Path,
        value: Value,
    },
    Remove {
        path: Path,
    },
}

/// Applies `ops` in order to `value` (`Null` when there is none).
pub fn apply(mut value: Value, ops: &[UpdateOp]) -> Result<Value, String> {
    if ops.len() > MAX_OPS {
        return Err(format!(
            "{} operations in one update; send at most {MAX_OPS}",
            ops.len()
        ));
    }
    for (index, op) in ops.iter().enumerate() {
        apply_one(&mut value, op).map_err(|why| format!("operation {index}: {why}"))?;
    }
    Ok(value)
}

fn apply_one(value: &mut Value, op: &UpdateOp) -> Result<(), String> {
    match op {
        UpdateOp::Set { path, value: new } => *slot(value, path.keys())? = new.clone(),
        UpdateOp::Merge { path, value: new } => {
            let Value::Object(fields) = new else {
                return Err("merge takes an object as its value".into());
            };
            let target = slot(value, path.keys())?;
            if target.is_null() {
                *target = Value::Object(Map::new());
            }
            let Value::Object(existing) = target else {
                return Err(format!(
                    "cannot merge into {}, which is {}",
                    shown(path),
                    json_type(target)
                ));
            };
            existing.extend(fields.clone());
        }
        UpdateOp::Increment { path, by } => add(slot(value, path.keys())?, by, false, path)?,
        UpdateOp::Decrement { path, by } => add(slot(value, path.keys())?, by, true, path)?,
        UpdateOp::Append { path, value: new } => {
            let target = slot(value, path.keys())?;
            match (&mut *target, new) {
                (Value::Null, _) => *target = Value::Array(vec![new.clone()]),
                (Value::Array(items), _) => items.push(new.clone()),
                (Value::String(text), Value::String(more)) => text.push_str(more),
                (other, _) => {
                    return Err(format!(
                        "cannot append to {}, which is {} (append adds to an array, or text to a string)",
                        shown(path),
                        json_type(other)
                    ));
                }
            }
        }
        UpdateOp::Remove { path } => {
            let keys = path.keys();
            let Some((last, parents)) = keys.split_last() else {
                *value = Value::Null;
                return Ok(());
            };
            if let Some(Value::Object(parent)) = existing(value, parents) {
                parent.remove(last);
            }
        }
    }
    Ok(())
}

/// The place `keys` names, creating objects on the way.
fn slot<'a>(value: &'a mut Value, keys: &[String]) -> Result<&'a mut Value, String> {
    let mut here = value;
    for (depth, key) in keys.iter().enumerate() {
        if here.is_null() {
            *here = Value::Object(Map::new());
        }
        let described = json_type(here);
        let Value::Object(fields) = here else {
            return Err(format!(
                "the path goes through {}, which is {described}, not an object",
                shown_keys(&keys[..depth])
            ));
        };
        here = fields.entry(key.clone()).or_insert(Value::Null);
    }
    Ok(here)
}

fn existing<'a>(value: &'a mut Value, keys: &[String]) -> Option<&'a mut Value> {
    keys.iter()
        .try_fold(value, |here, key| here.as_object_mut()?.get_mut(key))
}

fn add(target: &mut Value, by: &Number, subtract: bool, path: &Path) -> Result<(), String> {
    let current = match target {
        Value::Null => Number::from(0),
        Value::Number(n) => n.clone(),
        other => {
            return Err(format!(
                "cannot add to {}, which is {}, not a number",
                shown(path),
                json_type(other)
            ));
        }
    };
    let sum = match (current.as_i64(), by.as_i64()) {
        (Some(a), Some(b)) => {
            let b = if subtract { b.checked_neg() } else { Some(b) };
            b.and_then(|b| a.checked_add(b)).map(Number::from)
        }
        _ => None,
    };
    let sum = match sum {
        Some(sum) => sum,
        None => {
            let (a, b) = (current.as_f64().unwrap_or(0.0), by.as_f64().unwrap_or(0.0));
            Number::from_f64(if subtract { a - b } else { a + b })
                .ok_or_else(|| format!("the sum at {} is not a finite number", shown(path)))?
        }
    };
    *target = Value::Number(sum);
    Ok(())
}

fn shown(path: &Path) -> String {
    shown_keys(path.keys())
}

fn shown_keys(keys: &[String]) -> String {
    if keys.is_empty() {
        "the value".into()
    } else {
        format!("'{}'", keys.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ops(value: Value) -> Vec<UpdateOp> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn each_operation_as_iii_names_it() {
        let updated = apply(
            json!({"count": 1, "tags": ["a"], "name": "ab", "old": true}),
            &ops(json!([
                {"type": "increment", "path": "count", "by": 4},
                {"type": "decrement", "path": "count", "by": 2},
                {"type": "append", "path": "tags", "value": "b"},
                {"type": "append", "path": "name", "value": "c"},
                {"type": "set", "path": ["totals", "eur"], "value": 10},
                {"type": "merge", "path": "totals", "value": {"usd": 3}},
                {"type": "merge", "value": {"merged": 1}},
                {"type": "increment", "path": "fresh", "by": 1.5},
                {"type": "remove", "path": "old"},
                {"type": "remove", "path": ["not", "there"]}
            ])),
        )
        .unwrap();
        assert_eq!(
            updated,
            json!({"count": 3, "tags": ["a", "b"], "name": "abc",
                   "totals": {"eur": 10, "usd": 3}, "merged": 1, "fresh": 1.5})
        );
        // From nothing: objects are created on the way.
        assert_eq!(
            apply(
                Value::Null,
                &ops(json!([{"type": "increment", "path": "n", "by": 1}]))
            )
            .unwrap(),
            json!({"n": 1})
        );
        assert_eq!(
            apply(Value::Null, &ops(json!([{"type": "append", "value": 1}]))).unwrap(),
            json!([1])
        );
        assert_eq!(
            apply(json!(5), &ops(json!([{"type": "set", "value": {"a": 1}}]))).unwrap(),
            json!({"a": 1})
        );
    }

    #[test]
    fn impossible_operations_say_where_and_why() {
        let refuse = |value: Value, op: Value| apply(value, &ops(json!([op]))).unwrap_err();
        assert!(
            refuse(
                json!({"a": 1}),
                json!({"type": "set", "path": ["a", "b"], "value": 1})
            )
            .contains("the path goes through 'a', which is a number")
        );
        assert!(
            refuse(
                json!({"a": "x"}),
                json!({"type": "increment", "path": "a", "by": 1})
            )
            .contains("cannot add to 'a', which is a string")
        );
        assert!(
            refuse(
                json!({"a": 1}),
                json!({"type": "append", "path": "a", "value": 1})
            )
            .contains("cannot append to 'a', which is a number")
        );
        assert!(
            refuse(json!({}), json!({"type": "merge", "value": 3}))
                .contains("merge takes an object")
        );
        let too_many: Vec<UpdateOp> = (0..=MAX_OPS)
            .map(|_| UpdateOp::Remove {
                path: Path::Key("a".into()),
            })
            .collect();
        assert!(
            apply(json!({}), &too_many)
                .unwrap_err()
                .contains("at most 100")
        );
        assert!(
            serde_json::from_value::<UpdateOp>(json!({"type": "multiply", "path": "a"})).is_err()
        );
        assert!(serde_json::from_value::<UpdateOp>(json!({"type": "set", "path": "a"})).is_err());
    }

    #[test]
    fn integer_overflow_becomes_a_float_sum() {
        let big = apply(
            json!({"n": i64::MAX}),
            &ops(json!([{"type": "increment", "path": "n", "by": 1}])),
        )
        .unwrap();
        assert_eq!(big["n"].as_f64(), Some(i64::MAX as f64 + 1.0));
    }
}
