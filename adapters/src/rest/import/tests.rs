use super::*;
use serde_json::json;

use crate::rest::multipart::FilePart;
use crate::rest::plan::Answer;

fn data(name: &str) -> String {
    let path = format!(
        "{}/../tests/data/openapi/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn all(namespace: &str) -> Selection<'_> {
    Selection {
        namespace,
        ..Selection::default()
    }
}

fn find<'a>(imported: &'a Imported, id: &str) -> &'a Operation {
    imported
        .operations
        .iter()
        .find(|op| op.function.as_str() == id)
        .unwrap_or_else(|| panic!("{id} imported"))
}

fn input_of(op: &Operation) -> serde_json::Value {
    op.capability
        .definition()
        .input_schema
        .as_ref()
        .unwrap()
        .value()
        .clone()
}

#[test]
fn the_petstore_3_0_document_becomes_one_capability_per_operation() {
    let imported = import(&data("petstore-3.0.yaml"), &all("petstore")).unwrap();
    assert_eq!(imported.revision, "3.0.4");
    assert_eq!(imported.operations.len(), 19, "{:?}", imported.skipped);
    let get = find(&imported, "petstore::get_pet_by_id");
    let definition = get.capability.definition();
    assert_eq!(definition.version.to_string(), imported.version.to_string());
    assert_eq!(get.route, "GET /pet/{petId}");
    assert_eq!(
        get.plan.params[0].location,
        super::super::plan::Location::Path
    );
    let input = definition.input_schema.as_ref().unwrap().value();
    assert_eq!(input["required"], json!(["petId"]));
    assert_eq!(input["properties"]["petId"]["type"], "integer");
    let output = definition.output_schema.as_ref().unwrap().value();
    assert_eq!(output["$ref"], "#/$defs/Pet");
    assert!(output["$defs"]["Category"].is_object(), "{output}");
    let annotations = &definition.annotations;
    assert_eq!(annotations.read_only_hint, Some(true));
    assert_eq!(annotations.idempotent_hint, Some(true));
    let delete = find(&imported, "petstore::delete_pet")
        .capability
        .definition();
    assert_eq!(delete.annotations.destructive_hint, Some(true));
    let add = find(&imported, "petstore::add_pet");
    assert_eq!(
        add.plan.body,
        Some(Body {
            media: BodyMedia::Json("application/json".into())
        })
    );
    let add_input = input_of(add);
    assert_eq!(add_input["required"], json!(["body"]));
    // Path-level and operation parameters, header parameters included.
    let delete_plan = &find(&imported, "petstore::delete_pet").plan;
    let names: Vec<&str> = delete_plan.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["api_key", "petId"]);
    // Input validates as the upstream expects.
    let capability = &get.capability;
    assert!(
        capability
            .validate_input(&json!({"petId": 7}).into())
            .is_ok()
    );
    assert!(
        capability
            .validate_input(&json!({"petId": "seven"}).into())
            .is_err()
    );
    assert!(
        capability
            .validate_input(&json!({"petId": 7, "extra": 1}).into())
            .is_err()
    );
}

#[test]
fn the_petstore_3_1_document_imports_too() {
    let imported = import(&data("petstore-3.1.yaml"), &all("pets31")).unwrap();
    assert!(imported.revision.starts_with("3.1"));
    assert!(
        imported.operations.len() >= 5,
        "{}",
        imported.operations.len()
    );
    let get = find(&imported, "pets31::get_pet_by_id");
    assert!(
        get.capability
            .validate_input(&json!({"petId": 5}).into())
            .is_ok()
    );
    assert!(
        get.capability
            .validate_input(&json!({"petId": 10}).into())
            .is_err(),
        "exclusiveMaximum"
    );
}

#[test]
fn a_large_real_document_imports_every_supported_operation() {
    let text = data("discord-10.json");
    let started = std::time::Instant::now();
    let imported = import(&text, &all("discord")).unwrap();
    let took = started.elapsed();
    assert_eq!(imported.version, Version::new(10, 0, 0));
    // 242 operations, every one imported: the three whose bodies are only
    // multipart/form-data among them.
    assert_eq!(imported.operations.len(), 242, "{:?}", imported.skipped);
    assert!(imported.skipped.is_empty(), "{:?}", imported.skipped);
    let upload = find(&imported, "discord::upload_application_attachment");
    assert_eq!(
        upload.plan.body,
        Some(Body {
            media: BodyMedia::Multipart(vec![FilePart {
                name: "file".into(),
                content_type: "application/octet-stream".into()
            }])
        })
    );
    let input = input_of(upload);
    assert_eq!(
        input["properties"]["body"]["properties"]["file"]["contentEncoding"], "base64",
        "{input}"
    );
    let names: Vec<&str> = imported
        .operations
        .iter()
        .map(|o| o.function.as_str())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "deterministic order");
    for op in &imported.operations {
        assert!(
            op.capability.tool_name().len() <= 64,
            "{}",
            op.capability.tool_name()
        );
    }
    // A hang guard only; the import time is a benchmark (docs/benchmarks.md).
    assert!(took < std::time::Duration::from_secs(60), "{took:?}");
}

#[test]
fn include_and_exclude_pick_operations_by_any_of_their_names() {
    let text = data("petstore-3.0.yaml");
    let include = [
        "getPetById".to_owned(),
        "petstore::delete_*".to_owned(),
        "POST /pet".to_owned(),
    ];
    let exclude = ["deleteOrder".to_owned()];
    let imported = import(
        &text,
        &Selection {
            namespace: "petstore",
            include: &include,
            exclude: &exclude,
            owner: Some("pets-team"),
        },
    )
    .unwrap();
    let names: Vec<&str> = imported
        .operations
        .iter()
        .map(|o| o.function.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "petstore::add_pet",
            "petstore::delete_pet",
            "petstore::delete_user",
            "petstore::get_pet_by_id"
        ]
    );
    let owner = imported.operations[0]
        .capability
        .definition()
        .owner
        .clone()
        .unwrap();
    assert_eq!(owner.team.as_deref(), Some("pets-team"));
    let unmatched = ["getPetByName".to_owned()];
    let error = import(
        &text,
        &Selection {
            namespace: "petstore",
            include: &unmatched,
            ..Selection::default()
        },
    )
    .err()
    .unwrap();
    assert!(
        error
            .to_string()
            .contains("--include getPetByName matches no operation"),
        "{error}"
    );
}

fn minimal(paths: &str, components: &str) -> String {
    format!(
        r#"{{"openapi": "3.1.0", "info": {{"title": "t", "version": "1.2"}}, "paths": {paths}, "components": {components}}}"#
    )
}

#[test]
fn bad_documents_are_refused_whole_with_what_was_wrong() {
    let op = r#"{"get": {"operationId": "getThing", "responses": {"200": {"description": "ok"}}}}"#;
    let cases = [
        (
            minimal(&format!(r#"{{"/a": {op}, "/b": {op}}}"#), "{}"),
            "both become function ns::get_thing",
        ),
        (
            minimal(
                r##"{"/a": {"get": {"operationId": "a", "parameters": [{"$ref": "#/components/parameters/p"}], "responses": {}}}}"##,
                r##"{"parameters": {"p": {"$ref": "#/components/parameters/q"}, "q": {"$ref": "#/components/parameters/p"}}}"##,
            ),
            "cycle",
        ),
        (
            minimal(
                r##"{"/a": {"get": {"operationId": "a", "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/A"}}}}}}}}"##,
                r##"{"schemas": {"A": {"$ref": "#/components/schemas/B"}, "B": {"$ref": "#/components/schemas/A"}}}"##,
            ),
            "cycle",
        ),
        (
            minimal(
                r#"{"/a": {"get": {"operationId": "a", "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "https://evil.example/s.json"}}}}}}}}"#,
                "{}",
            ),
            "never fetches",
        ),
        (
            minimal(
                r#"{"/a/{id}": {"get": {"operationId": "a", "responses": {}}}}"#,
                "{}",
            ),
            "'{id}' is not declared",
        ),
        (minimal("{}", "{}"), "no paths"),
    ];
    for (text, expected) in cases {
        let error = import(&text, &all("ns"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains(expected),
            "expected '{expected}' in: {error}"
        );
    }
    let error = import(
        &minimal(&format!(r#"{{"/a": {op}}}"#), "{}"),
        &all("capgate"),
    )
    .err()
    .unwrap();
    assert!(error.to_string().contains("reserved"), "{error}");
    let error = import(
        &minimal(&format!(r#"{{"/a": {op}}}"#), "{}"),
        &all("Bad Name"),
    )
    .err()
    .unwrap();
    assert!(matches!(error, ImportError::Namespace { .. }), "{error}");
}

#[test]
fn a_huge_description_is_refused_as_an_oversized_document_or_cut() {
    let huge = "x".repeat(10 * 1024 * 1024);
    let text = format!(
        r#"{{"openapi": "3.1.0", "info": {{"title": "t", "version": "1", "description": "{huge}"}}, "paths": {{}}}}"#
    );
    let error = import(&text, &all("ns")).err().unwrap();
    assert!(error.to_string().contains("over the limit"), "{error}");
    let long = "y".repeat(100 * 1024);
    let text = minimal(
        &format!(
            r#"{{"/a": {{"get": {{"operationId": "a", "description": "{long}", "responses": {{}}}}}}}}"#
        ),
        "{}",
    );
    let imported = import(&text, &all("ns")).unwrap();
    let description = imported.operations[0]
        .capability
        .definition()
        .description
        .clone()
        .unwrap();
    assert!(
        description.len() <= MAX_DESCRIPTION_BYTES,
        "{}",
        description.len()
    );
}

#[test]
fn a_document_with_more_operations_than_a_service_may_have_is_refused() {
    let paths: serde_json::Map<String, Value> = (0..=MAX_OPERATIONS)
        .map(|n| {
            (
                format!("/r{n}"),
                json!({"get": {"operationId": format!("op{n}"), "responses": {}}}),
            )
        })
        .collect();
    let text = json!({"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": paths})
        .to_string();
    let error = import(&text, &all("ns")).err().unwrap();
    assert!(matches!(error, ImportError::TooMany), "{error}");
    assert!(error.to_string().contains("--include"), "{error}");
}

#[test]
fn names_and_versions_follow_documented_rules() {
    assert_eq!(snake_case("getPetById"), "get_pet_by_id");
    assert_eq!(snake_case("HTTPServer-list"), "http_server_list");
    assert_eq!(snake_case("list guild/members"), "list_guild_members");
    assert_eq!(snake_case("2fa_enable"), "op_2fa_enable");
    assert_eq!(snake_case("__"), "op");
    assert_eq!(
        function_name("ns", None, &Method::GET, "/pets/{petId}/photos"),
        "ns::get_pets_pet_id_photos"
    );
    let long = function_name("ns", Some(&"a".repeat(100)), &Method::GET, "/");
    assert!(long.len() - "ns::".len() + "ns__".len() <= 64, "{long}");
    assert_ne!(
        long,
        function_name("ns", Some(&"a".repeat(101)), &Method::GET, "/")
    );
    assert_eq!(api_version("1.0.27"), (Version::new(1, 0, 27), true));
    assert_eq!(api_version("10"), (Version::new(10, 0, 0), true));
    assert_eq!(api_version("v2.1"), (Version::new(2, 1, 0), true));
    assert_eq!(
        api_version("2023-10-16"),
        (Version::new(2023, 10, 16), true)
    );
    assert_eq!(api_version("1.0.0-beta.1").0.pre.as_str(), "beta.1");
    assert_eq!(api_version("latest"), (Version::new(1, 0, 0), false));
}

/// A document of one operation whose request body is `content`, with a
/// shared `Upload` schema.
fn body_document(content: serde_json::Value) -> String {
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Files", "version": "1.0.0"},
        "paths": {"/files": {"post": {
            "operationId": "send",
            "requestBody": {"required": true, "content": content},
            "responses": {"200": {"description": "ok"}}
        }}},
        "components": {"schemas": {
            "Upload": {"type": "object", "required": ["picture"], "properties": {
                "title": {"type": "string"},
                "picture": {"type": "string", "format": "binary", "description": "The picture"}
            }},
            "Blob": {"type": "string", "contentMediaType": "application/pdf"},
            "Meta": {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}
        }}
    })
    .to_string()
}

fn send(content: serde_json::Value) -> Operation {
    let imported = import(&body_document(content), &all("files")).unwrap();
    assert!(imported.skipped.is_empty(), "{:?}", imported.skipped);
    imported.operations.into_iter().next().unwrap()
}

fn body_schema(op: &Operation) -> serde_json::Value {
    input_of(op)["properties"]["body"].clone()
}

#[test]
fn multipart_bodies_take_their_files_as_base64_wherever_the_schema_declares_them() {
    // Through a $ref: the shared schema is taken inline with its file
    // rewritten, its other fields as they were; `encoding` names the type.
    let op = send(json!({"multipart/form-data": {
        "schema": {"$ref": "#/components/schemas/Upload"},
        "encoding": {"picture": {"contentType": "image/png, image/jpeg"}}
    }}));
    assert_eq!(
        op.plan.body.as_ref().unwrap().media,
        BodyMedia::Multipart(vec![FilePart {
            name: "picture".into(),
            content_type: "image/png".into()
        }])
    );
    let body = body_schema(&op);
    assert_eq!(body["properties"]["title"], json!({"type": "string"}));
    assert_eq!(
        body["properties"]["picture"],
        json!({"type": "string", "contentEncoding": "base64",
               "description": "The picture (the file's bytes, base64-encoded)"})
    );
    assert_eq!(body["required"], json!(["picture"]));
    assert!(
        op.capability
            .validate_input(&json!({"body": {"picture": "iVBORw0KGgo="}}).into())
            .is_ok()
    );
    assert!(
        op.capability
            .validate_input(&json!({"body": {"title": "no picture"}}).into())
            .is_err()
    );

    // In allOf branches, as arrays, and by 3.1's contentMediaType through a
    // $ref; a field that is not a file is left alone.
    let op = send(json!({"multipart/form-data": {"schema": {"allOf": [
        {"$ref": "#/components/schemas/Meta"},
        {"type": "object", "properties": {
            "pages": {"type": "array", "items": {"$ref": "#/components/schemas/Blob"}},
            "cover": {"type": "string", "contentEncoding": "binary"}
        }}
    ]}}}));
    assert_eq!(
        op.plan.body.as_ref().unwrap().media,
        BodyMedia::Multipart(vec![
            FilePart {
                name: "cover".into(),
                content_type: "application/octet-stream".into()
            },
            FilePart {
                name: "pages".into(),
                content_type: "application/pdf".into()
            },
        ])
    );
    let body = body_schema(&op);
    assert_eq!(
        body["allOf"][0]["$ref"], "#/$defs/Meta",
        "no file in it: kept as a reference"
    );
    let branch = &body["allOf"][1]["properties"];
    assert_eq!(branch["pages"]["type"], "array");
    assert_eq!(branch["pages"]["items"]["contentEncoding"], "base64");
    assert_eq!(
        branch["pages"]["items"]["contentMediaType"],
        "application/pdf"
    );
    assert_eq!(branch["cover"]["contentEncoding"], "base64");
}

#[test]
fn a_body_of_bytes_is_taken_as_base64_and_text_as_text() {
    for (content, bytes) in [
        (
            json!({"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}),
            true,
        ),
        (json!({"application/octet-stream": {}}), true),
        (json!({"image/png": {"schema": {}}}), true),
        (
            json!({"application/pdf": {"schema": {"$ref": "#/components/schemas/Blob"}}}),
            true,
        ),
        (json!({"text/plain": {"schema": {"type": "string"}}}), false),
        (json!({"text/csv": {}}), false),
        (
            json!({"application/xml": {"schema": {"type": "object"}}}),
            false,
        ),
    ] {
        let op = send(content.clone());
        let Some(Body {
            media: BodyMedia::Raw { binary, .. },
        }) = op.plan.body.clone()
        else {
            panic!("{content}: {:?}", op.plan.body)
        };
        assert_eq!(binary, bytes, "{content}");
        let schema = body_schema(&op);
        assert_eq!(schema["type"], "string", "{content}");
        let encoding = schema.get("contentEncoding").and_then(|e| e.as_str());
        assert_eq!(encoding, bytes.then_some("base64"), "{content}");
    }
    // Multipart kinds other than form-data are still not imported: a
    // document of nothing else is refused, saying why.
    let Err(refused) = import(
        &body_document(json!({"multipart/mixed": {"schema": {"type": "object"}}})),
        &all("files"),
    ) else {
        panic!("an import of nothing importable is refused")
    };
    assert!(
        refused
            .to_string()
            .contains("multipart kinds other than form-data"),
        "{refused}"
    );
}

#[test]
fn a_self_referencing_multipart_schema_is_walked_within_bounds() {
    // allOf branches that refer back to their own schema, ten to a level:
    // the walk looking for files stops at its bounds (without them it
    // would visit 10^8 schemas: the hang guard below).
    let branches: Vec<serde_json::Value> = (0..10)
        .map(|_| json!({"$ref": "#/components/schemas/Loop"}))
        .collect();
    let mut document: serde_json::Value = serde_json::from_str(&body_document(
        json!({"multipart/form-data": {"schema": {"$ref": "#/components/schemas/Loop"}}}),
    ))
    .unwrap();
    document["components"]["schemas"]["Loop"] = json!({"allOf": branches});
    let started = std::time::Instant::now();
    let outcome = import(&document.to_string(), &all("files"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "a hang guard"
    );
    // A recursive schema is kept as a definition (as any is): the import
    // succeeds, with no file found and the body still the reference.
    let imported = outcome.unwrap_or_else(|e| panic!("imported: {e}"));
    let op = &imported.operations[0];
    assert_eq!(
        op.plan.body.as_ref().unwrap().media,
        BodyMedia::Multipart(vec![])
    );
    assert_eq!(
        body_schema(op)["$ref"],
        "#/$defs/Loop",
        "{}",
        body_schema(op)
    );
}

#[test]
fn operations_that_answer_files_declare_mcp_content_results() {
    let document = |content: serde_json::Value| {
        json!({
            "openapi": "3.0.3",
            "info": {"title": "Files", "version": "1.0.0"},
            "paths": {"/report": {"get": {
                "operationId": "report",
                "responses": {"200": {"description": "ok", "content": content}}
            }}}
        })
        .to_string()
    };
    for (content, files) in [
        (json!({"application/pdf": {}}), true),
        (json!({"image/png": {}, "image/jpeg": {}}), true),
        (
            json!({"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}),
            true,
        ),
        (
            json!({"application/json": {"schema": {"type": "object"}}, "image/png": {}}),
            false,
        ),
        (json!({"text/plain": {"schema": {"type": "string"}}}), false),
        (json!({"application/xml": {}}), false),
        (json!({}), false),
    ] {
        let imported = import(&document(content.clone()), &all("files")).unwrap();
        let op = &imported.operations[0];
        let expected = if files { Answer::Content } else { Answer::Json };
        assert_eq!(op.plan.answer, expected, "{content}");
        let declared = op.capability.definition().mcp.result;
        let mode = if files {
            capgate_catalog::definition::ResultMode::Content
        } else {
            capgate_catalog::definition::ResultMode::Json
        };
        assert_eq!(declared, mode, "{content}");
    }
}
