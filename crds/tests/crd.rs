//! The committed CRD YAML matches the Rust types, and carries the API surface the brief names.

use heartbeat_crds::monitor::crd_yaml;

const COMMITTED: &str = include_str!("../heartbeatmonitors.yaml");

#[test]
fn committed_crd_yaml_matches_the_rust_types() {
    let generated = crd_yaml().expect("CRD renders");
    assert!(
        generated == COMMITTED,
        "crds/heartbeatmonitors.yaml is out of date with the Rust types.\n\
         Regenerate it with:\n    cargo run -p heartbeat-crds --bin crdgen > crds/heartbeatmonitors.yaml"
    );
}

/// Helm installs the CRD from the chart's own `crds/`: it must be this one.
#[test]
fn the_charts_crd_is_the_generated_one() {
    let chart = include_str!("../../charts/heartbeat-operator/crds/heartbeatmonitors.yaml");
    assert!(
        chart == COMMITTED,
        "charts/heartbeat-operator/crds/heartbeatmonitors.yaml differs from crds/heartbeatmonitors.yaml.\n\
         Copy it:\n    cp crds/heartbeatmonitors.yaml charts/heartbeat-operator/crds/"
    );
}

fn crd() -> serde_yaml::Value {
    serde_yaml::from_str(COMMITTED).expect("committed CRD is YAML")
}

#[test]
fn crd_is_namespaced_with_short_name_hbm_and_status_subresource() {
    let crd = crd();
    let spec = &crd["spec"];
    assert_eq!(spec["group"], "heartbeat.dev");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(spec["names"]["plural"], "heartbeatmonitors");
    assert_eq!(spec["names"]["shortNames"][0], "hbm");
    let version = &spec["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_mapping());
}

#[test]
fn printer_columns_are_the_ones_kubectl_get_shows() {
    let crd = crd();
    let cols = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_sequence()
        .expect("printer columns")
        .clone();
    let names: Vec<(String, i64)> = cols
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["priority"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    let want = [
        ("Topic", 0),
        ("Interval", 0),
        ("Expected", 0),
        ("Up", 0),
        ("Stale", 0),
        ("Last Beat", 0),
        ("Age", 0),
        ("Ready", 1),
        ("Healthy", 1),
    ];
    let want: Vec<(String, i64)> = want.iter().map(|(n, p)| (n.to_string(), *p)).collect();
    assert_eq!(names, want);
}

#[test]
fn schema_carries_bounds_patterns_and_cel_rules() {
    let crd = crd();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let props = &spec["properties"];
    assert_eq!(props["intervalSeconds"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(props["intervalSeconds"]["maximum"].as_f64(), Some(86400.0));
    assert_eq!(props["missedBeatsTolerated"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(props["graceSeconds"]["minimum"].as_f64(), Some(0.0));
    assert_eq!(props["topic"]["pattern"], "^[a-zA-Z0-9._-]{1,249}$");
    let modes = props["appHealth"]["properties"]["mode"]["enum"]
        .as_sequence()
        .expect("mode enum")
        .clone();
    assert_eq!(modes.len(), 4);
    let rules = |v: &serde_yaml::Value| -> Vec<String> {
        v["x-kubernetes-validations"]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .map(|r| r["rule"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let app_rules = rules(&props["appHealth"]);
    assert!(
        app_rules
            .iter()
            .any(|r| r.contains("self.mode != 'File' || has(self.file)"))
    );
    assert!(app_rules.iter().any(|r| r.contains("has(self.http)")));
    assert!(
        rules(&props["producer"])
            .iter()
            .any(|r| r.contains("'linger.ms'"))
    );
    assert!(rules(spec).iter().any(|r| r.contains("has(self.selector)")));
    assert!(props["clock"]["properties"]["source"]["enum"].is_sequence());
    assert!(props["maintenanceWindows"]["items"]["properties"]["timeZone"].is_mapping());
    assert!(props["suspend"].is_mapping());
}

#[test]
fn every_spec_field_has_a_description_for_kubectl_explain() {
    let crd = crd();
    let props = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for (name, prop) in props.as_mapping().expect("spec properties") {
        assert!(
            prop["description"].as_str().is_some_and(|d| !d.is_empty()),
            "spec.{} has no description",
            name.as_str().unwrap_or_default()
        );
    }
}

/// `kubectl explain heartbeatmonitor.spec` (and `.status`) shows a
/// description for every field, nested ones included.
#[test]
fn every_spec_and_status_field_has_a_description() {
    fn walk(schema: &serde_yaml::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = schema["properties"].as_mapping() {
            for (k, v) in props {
                let p = format!("{path}.{}", k.as_str().unwrap_or("?"));
                if v["description"].as_str().is_none_or(str::is_empty) {
                    missing.push(p.clone());
                }
                walk(v, &p, missing);
                walk(&v["items"], &format!("{p}[]"), missing);
            }
        }
        walk_extra(schema, path, missing);
    }
    fn walk_extra(schema: &serde_yaml::Value, path: &str, missing: &mut Vec<String>) {
        if schema["additionalProperties"].is_mapping() {
            walk(
                &schema["additionalProperties"],
                &format!("{path}{{}}"),
                missing,
            );
        }
    }
    let crd = crd();
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
    let mut missing = Vec::new();
    for part in ["spec", "status"] {
        walk(&root[part], part, &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}
