//! The Grafana dashboard stays valid JSON and charts every `damper_*` metric.

use serde_json::Value;

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(e)) = m.get("expr") {
                out.push(e.clone());
            }
            m.values().for_each(|v| exprs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn dashboard_charts_every_damper_metric() {
    let text = include_str!("../grafana/damper.json");
    let dashboard: Value = serde_json::from_str(text).expect("valid JSON");
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    for name in damper_core::metrics::ALL {
        assert!(
            all.iter().any(|e| e.contains(name)),
            "no panel queries {name}"
        );
    }
    // Every query is scoped by the `name` template variable.
    for e in &all {
        assert!(e.contains("name=~\"$name\""), "unscoped query: {e}");
    }
}
