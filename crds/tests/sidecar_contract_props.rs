//! Property tests of the sidecar contract: every appHealth value the webhook
//! can render parses back to itself, the parser never panics, and every
//! librdkafka property name survives the trip through its `KAFKA_*` env name.

use heartbeat_crds::SidecarAppHealth;
use heartbeat_crds::monitor::{AppHealth, AppHealthMode, FileHealth, HttpHealth, PingHealth};
use heartbeat_crds::sidecar_contract::{MaxAge, kafka_env_for_property, kafka_property_for_env};
use proptest::prelude::*;

fn max_age() -> impl Strategy<Value = MaxAge> {
    (MaxAge::MIN_SECS..=MaxAge::MAX_SECS).prop_map(|s| MaxAge::from_secs(s).expect("in range"))
}

fn app_health() -> impl Strategy<Value = SidecarAppHealth> {
    prop_oneof![
        Just(SidecarAppHealth::None),
        ("/[A-Za-z0-9:._ /-]{0,40}", max_age())
            .prop_map(|(path, max_age)| SidecarAppHealth::File { path, max_age }),
        max_age().prop_map(|max_age| SidecarAppHealth::Ping { max_age }),
        "http://[!-~]{1,60}".prop_map(|url| SidecarAppHealth::Http { url }),
    ]
}

/// `appHealth` specs the API server admits (schema bounds and CEL rules).
fn admitted_spec() -> impl Strategy<Value = AppHealth> {
    let secs = MaxAge::MIN_SECS..=MaxAge::MAX_SECS;
    prop_oneof![
        Just(AppHealth::default()),
        ("/[A-Za-z0-9._/-]{0,40}", secs.clone()).prop_map(|(path, max_age_seconds)| AppHealth {
            mode: AppHealthMode::File,
            file: Some(FileHealth {
                path,
                max_age_seconds
            }),
            ..AppHealth::default()
        }),
        proptest::option::of(secs).prop_map(|s| AppHealth {
            mode: AppHealthMode::Ping,
            ping: s.map(|max_age_seconds| PingHealth { max_age_seconds }),
            ..AppHealth::default()
        }),
        (1u16..=u16::MAX, "/[!-~]{0,40}").prop_map(|(port, path)| AppHealth {
            mode: AppHealthMode::Http,
            http: Some(HttpHealth { port, path }),
            ..AppHealth::default()
        }),
    ]
}

/// librdkafka-style names: lower-case dotted components, none of them the
/// `port`/`service.host`/`service.port` shapes of Kubernetes service links.
fn kafka_property() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,8}(\\.[a-z][a-z0-9]{0,8}){0,4}".prop_filter("service-link shape", |p| {
        !p.split('.').any(|c| c == "port")
            && !p.contains("service.host")
            && !p.contains("service.port")
    })
}

proptest! {
    #[test]
    fn rendered_app_health_parses_back_to_itself(value in app_health()) {
        prop_assert_eq!(SidecarAppHealth::parse(&value.render()), Ok(value));
    }

    #[test]
    fn every_admitted_spec_renders_a_value_the_sidecar_accepts(spec in admitted_spec()) {
        let value = SidecarAppHealth::from_spec(&spec).expect("admitted spec converts");
        prop_assert_eq!(SidecarAppHealth::parse(&value.render()), Ok(value));
    }

    #[test]
    fn app_health_parser_never_panics(text in "\\PC{0,60}") {
        let _ = SidecarAppHealth::parse(&text);
    }

    #[test]
    fn kafka_property_round_trips_through_its_env_name(property in kafka_property()) {
        let name = kafka_env_for_property(&property);
        prop_assert_eq!(kafka_property_for_env(&name), Some(property.clone()));
        let verbatim = format!("KAFKA_{property}");
        prop_assert_eq!(kafka_property_for_env(&verbatim), Some(property));
    }
}
