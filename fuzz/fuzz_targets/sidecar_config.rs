//! The sidecar's configuration parsing: its flags and environment (clap and
//! `Config::new`), and the contract's text syntaxes the webhook writes and
//! the sidecar reads (`HEARTBEAT_APP_HEALTH`, `KAFKA_*` names, program-id
//! templates and keys). None may panic on any text; where there is a
//! render, what parses renders to what parses back the same.
//!
//! Input: a mode byte and text, so seeds stay readable:
//!   `a<value>`                       HEARTBEAT_APP_HEALTH
//!   `s<json>`                        a monitor's appHealth
//!   `t<template>\n<container>\n<monitor>`   a programId template
//!   `k<key>`                         a Kafka message key
//!   `e<name>`                        an env name (KAFKA_* or not)
//!   `c<arg>\n<arg>..\n\n<NAME=VALUE>\n..`   the sidecar's argv, then its env
//! Any other first byte runs the one-line parsers on the whole input.
#![no_main]

use clap::Parser;
use heartbeat_crds::monitor::AppHealth;
use heartbeat_crds::program_id::{
    TemplateVars, key_for, program_id_from_key, render, render_with_env_refs,
};
use heartbeat_crds::sidecar_contract::{
    MAX_INTERVAL_SECS, SidecarAppHealth, env, kafka_env_for_property, kafka_property_for_env,
    validate_program_id, validate_topic,
};
use heartbeat_sidecar::config::{Args, Config, PropertyProblem, kafka_properties_from_env};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        b'a' => app_health(&String::from_utf8_lossy(rest)),
        b's' => app_health_spec(rest),
        b't' => template(&String::from_utf8_lossy(rest)),
        b'k' => key(rest),
        b'e' => env_name(&String::from_utf8_lossy(rest)),
        b'c' => command_line(&String::from_utf8_lossy(rest)),
        _ => {
            let text = String::from_utf8_lossy(data);
            app_health(&text);
            key(data);
            env_name(&text);
        }
    }
});

fn app_health(value: &str) {
    let Ok(h) = SidecarAppHealth::parse(value) else {
        return;
    };
    let rendered = h.render();
    assert_eq!(
        SidecarAppHealth::parse(&rendered).ok().as_ref(),
        Some(&h),
        "{value:?} parses, renders as {rendered:?}, which parses to another value"
    );
    assert!(rendered.starts_with(h.mode()));
}

/// What the webhook renders from a monitor is what the sidecar parses.
fn app_health_spec(json: &[u8]) {
    let Ok(spec) = serde_json::from_slice::<AppHealth>(json) else {
        return;
    };
    let Ok(h) = SidecarAppHealth::from_spec(&spec) else {
        return;
    };
    let rendered = h.render();
    assert_eq!(
        SidecarAppHealth::parse(&rendered).ok().as_ref(),
        Some(&h),
        "appHealth {spec:?} renders as {rendered:?}, which the sidecar reads otherwise"
    );
}

fn template(text: &str) {
    let mut lines = text.splitn(3, '\n');
    let (template, container, monitor) = (
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
    );
    // The values the webhook checks a template with, so both renders must agree.
    let vars = TemplateVars {
        namespace: "namespace",
        pod: "pod",
        container,
        monitor,
        node: "node",
    };
    let plain = render(template, &vars);
    if let Ok(id) = &plain {
        validate_program_id(id).expect("a rendered program id is valid");
        assert_eq!(
            program_id_from_key(key_for(id).as_bytes()).ok(),
            Some(id.as_str())
        );
    }
    let with_refs = render_with_env_refs(template, container, monitor);
    assert_eq!(
        with_refs.is_ok(),
        plain.is_ok(),
        "the two renders disagree on {template:?}"
    );
    if let (Ok(refs), Ok(id)) = (&with_refs, &plain) {
        // The kubelet's expansion with those values gives the plain render.
        let expanded = refs
            .replace(&format!("$({})", env::POD_NAMESPACE), "namespace")
            .replace(&format!("$({})", env::POD_NAME), "pod")
            .replace(&format!("$({})", env::NODE_NAME), "node");
        assert_eq!(&expanded, id);
    }
}

fn key(bytes: &[u8]) {
    if let Ok(id) = program_id_from_key(bytes) {
        assert_eq!(key_for(id).as_bytes(), bytes);
    }
}

fn env_name(name: &str) {
    if let Some(property) = kafka_property_for_env(name) {
        // The name the webhook writes for it maps back to it (or, for a
        // name shaped like a service link, to nothing, never to another).
        let back = kafka_property_for_env(&kafka_env_for_property(&property));
        assert!(
            back.is_none() || back.as_deref() == Some(property.as_str()),
            "{name:?} -> {property:?} -> {back:?}"
        );
    }
}

/// Stands in for librdkafka's verdict: a few known properties, one checked.
fn check_property(name: &str, value: &str) -> Result<(), PropertyProblem> {
    const KNOWN: &[&str] = &[
        "bootstrap.servers",
        "acks",
        "client.id",
        "linger.ms",
        "sasl.password",
    ];
    if !KNOWN.contains(&name) {
        return Err(PropertyProblem::Unknown);
    }
    if name == "acks" && value != "all" && value.parse::<i32>().is_err() {
        return Err(PropertyProblem::Invalid(
            "expected an integer or all".into(),
        ));
    }
    Ok(())
}

fn command_line(text: &str) {
    let (argv, envs) = text.split_once("\n\n").unwrap_or((text, ""));
    let argv =
        std::iter::once("heartbeat-sidecar").chain(argv.split('\n').filter(|a| !a.is_empty()));
    let envs: Vec<(String, String)> = envs
        .split('\n')
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let _ = kafka_properties_from_env(envs.clone());
    let args = match Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            // Rendering the message must not panic either (it names the field).
            let _ = e.to_string();
            return;
        }
    };
    validate_topic(&args.topic).expect("an accepted topic is valid");
    validate_program_id(&args.program_id).expect("an accepted program id is valid");
    assert!((1..=MAX_INTERVAL_SECS).contains(&args.interval_secs));
    app_health(&args.app_health.render());
    match Config::new(args, envs, check_property) {
        Ok(c) => {
            let servers = c
                .kafka
                .get("bootstrap.servers")
                .expect("bootstrap.servers is set");
            assert!(!servers.trim().is_empty());
            for (k, v) in &c.kafka {
                assert!(
                    check_property(k, v).is_ok(),
                    "{k}={v:?} kept though refused"
                );
            }
            assert!(
                c.ignored_env
                    .iter()
                    .all(|n| n.starts_with(env::KAFKA_PREFIX))
            );
            assert!(!c.interval().is_zero());
        }
        Err(e) => {
            assert_eq!(e.exit_code(), 2, "{e}");
            let _ = e.to_string();
        }
    }
}
