use capgate_catalog::{Catalog, Draft, ProviderId};
use serde_json::json;
fn rss() -> u64 {
    let t = std::fs::read_to_string("/proc/self/status").unwrap();
    t.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap()
}
fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let before = rss();
    let catalog = Catalog::in_memory();
    let mut keep = Vec::new();
    for n in 0..10_000 {
        let schema = json!({"type": "object","properties": {"name": {"type": "string", "maxLength": 64}, "count": {"type": "integer", "minimum": 0}},"required": ["name"],"additionalProperties": false});
        let d = Draft {
            id: format!("bench::fn_{n:05}"),
            version: Some(json!("1.0.0")),
            description: Some(format!(
                "Benchmark function number {n}: greets someone by name, a given number of times."
            )),
            input_schema: if mode == "noschema" {
                None
            } else {
                Some(schema)
            },
            ..Default::default()
        };
        let c = d.build().unwrap();
        if mode == "validators" {
            keep.push(c);
            continue;
        }
        catalog.register(c, ProviderId(1)).unwrap();
    }
    println!("{mode}: {} KiB for 10k", rss() - before);
}
