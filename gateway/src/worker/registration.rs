//! A `registerfunction` frame as a catalog [`Draft`].

use capgate_catalog::Draft;
use capgate_protocol::RegisterFunction;

/// capgate's optional fields may sit at the top level (capgate SDKs) or in
/// `metadata` (iii SDKs, which can send nothing else); the top level wins.
pub fn draft_from_frame(frame: RegisterFunction) -> Draft {
    Draft {
        id: frame.id,
        version: frame.version.map(serde_json::Value::String),
        title: frame.title.map(serde_json::Value::String),
        description: frame.description,
        input_schema: frame.request_format,
        output_schema: frame.response_format,
        annotations: frame.annotations,
        owner: frame.owner,
        permissions: frame.permissions,
        tags: frame.tags,
        timeout_ms: frame.timeout_ms,
        deprecation: frame.deprecation,
        mcp: frame.mcp,
        metadata: frame.metadata.unwrap_or_default(),
    }
    .with_fields_from_metadata()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn top_level_fields_win_over_metadata() {
        let frame: RegisterFunction = serde_json::from_value(json!({
            "id": "a::b", "version": "2.0.0",
            "metadata": {"version": "1.0.0", "tags": ["x"]}
        }))
        .unwrap();
        let capability = draft_from_frame(frame).build().unwrap();
        assert_eq!(capability.version().to_string(), "2.0.0");
        assert_eq!(capability.definition().tags, vec!["x".to_owned()]);
    }
}
