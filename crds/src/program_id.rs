//! Program ids: rendering the monitor's `programId` template for one pod, and
//! the key rule `<program_id>_heartbeat` shared with OpenMSIStream.

use crate::Error;
use crate::sidecar_contract::{MAX_NAME_LEN, validate_program_id};

/// Suffix OpenMSIStream appends to a program id to form a heartbeat key.
pub const KEY_SUFFIX: &str = "_heartbeat";
/// The template used when a monitor does not set one.
pub const DEFAULT_TEMPLATE: &str = "{namespace}.{pod}";

/// Values for the placeholders of one pod's program id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateVars<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
    pub monitor: &'a str,
    pub node: &'a str,
}

impl TemplateVars<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "namespace" => Some(self.namespace),
            "pod" => Some(self.pod),
            "container" => Some(self.container),
            "monitor" => Some(self.monitor),
            "node" => Some(self.node),
            _ => None,
        }
    }
}

/// Replaces each `{placeholder}` of `template` with its value in `vars`.
fn fill(template: &str, vars: &TemplateVars<'_>) -> Result<String, Error> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or(Error::UnclosedPlaceholder)?;
        let name = &after[..close];
        let value = vars
            .get(name)
            .ok_or_else(|| Error::UnknownPlaceholder(name.to_string()))?;
        out.push_str(value);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders `template` with `vars`; the result must be a valid program id
/// (see [`validate_program_id`]).
pub fn render(template: &str, vars: &TemplateVars<'_>) -> Result<String, Error> {
    let out = fill(template, vars)?;
    validate_program_id(&out)?;
    Ok(out)
}

/// Renders `template` for injection into a pod that may have no name yet
/// (pods of a Deployment get theirs after admission): `{namespace}`, `{pod}`
/// and `{node}` become the Kubernetes env references `$(POD_NAMESPACE)`,
/// `$(POD_NAME)` and `$(NODE_NAME)`, which the kubelet expands from the
/// downward-API env declared before it; `{container}` and `{monitor}` are
/// known at admission and written as they are. The template is checked by
/// rendering it as a pod would, so an invalid one is refused here.
pub fn render_with_env_refs(
    template: &str,
    container: &str,
    monitor: &str,
) -> Result<String, Error> {
    use crate::sidecar_contract::{env, env_ref};
    render(
        template,
        &TemplateVars {
            namespace: "namespace",
            pod: "pod",
            container,
            monitor,
            node: "node",
        },
    )?;
    let (namespace, pod, node) = (
        env_ref(env::POD_NAMESPACE),
        env_ref(env::POD_NAME),
        env_ref(env::NODE_NAME),
    );
    fill(
        template,
        &TemplateVars {
            namespace: &namespace,
            pod: &pod,
            container,
            monitor,
            node: &node,
        },
    )
}

/// The Kafka message key for a program id.
pub fn key_for(program_id: &str) -> String {
    format!("{program_id}{KEY_SUFFIX}")
}

/// The program id a heartbeat key names. Keys come from any producer on the
/// topic (OpenMSIStream programs choose their own ids), so only the suffix,
/// a non-empty id and the absence of control characters are required.
pub fn program_id_from_key(key: &[u8]) -> Result<&str, Error> {
    let key = std::str::from_utf8(key).map_err(|_| Error::NotUtf8 { part: "key" })?;
    match key.strip_suffix(KEY_SUFFIX) {
        Some(id)
            if !id.is_empty() && id.len() <= MAX_NAME_LEN && !id.chars().any(char::is_control) =>
        {
            Ok(id)
        }
        _ => Err(Error::BadKey(key.chars().take(300).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injection_renders_pod_fields_as_env_references_and_checks_the_rest() {
        assert_eq!(
            render_with_env_refs("{namespace}.{pod}", "app", "ingest"),
            Ok("$(POD_NAMESPACE).$(POD_NAME)".to_string())
        );
        assert_eq!(
            render_with_env_refs("{monitor}-{container}@{node}", "app", "ingest").map_err(|_| ()),
            Err(()),
            "@ is not allowed in a program id"
        );
        assert_eq!(
            render_with_env_refs("{monitor}-{container}-{node}", "app", "ingest"),
            Ok("ingest-app-$(NODE_NAME)".to_string())
        );
        assert!(render_with_env_refs("{nope}", "app", "m").is_err());
        assert!(render_with_env_refs("{pod", "app", "m").is_err());
    }

    fn vars() -> TemplateVars<'static> {
        TemplateVars {
            namespace: "data",
            pod: "ingest-7d9f-abc",
            container: "app",
            monitor: "ingest",
            node: "node-1",
        }
    }

    #[test]
    fn default_template_renders_namespace_dot_pod() {
        assert_eq!(
            render(DEFAULT_TEMPLATE, &vars()).as_deref(),
            Ok("data.ingest-7d9f-abc")
        );
    }

    #[test]
    fn every_placeholder_is_substituted() {
        let got = render("{monitor}_{namespace}-{pod}.{container}.{node}", &vars());
        assert_eq!(got.as_deref(), Ok("ingest_data-ingest-7d9f-abc.app.node-1"));
    }

    #[test]
    fn literal_template_without_placeholders_is_kept() {
        assert_eq!(render("fixed-id", &vars()).as_deref(), Ok("fixed-id"));
    }

    #[test]
    fn unknown_placeholder_is_an_error() {
        assert_eq!(
            render("{namespace}.{uid}", &vars()),
            Err(Error::UnknownPlaceholder("uid".into()))
        );
    }

    #[test]
    fn unclosed_placeholder_is_an_error() {
        assert_eq!(
            render("{namespace", &vars()),
            Err(Error::UnclosedPlaceholder)
        );
    }

    #[test]
    fn empty_result_is_an_error() {
        let empty = TemplateVars { node: "", ..vars() };
        assert_eq!(
            render("{node}", &empty),
            Err(Error::InvalidProgramId(String::new()))
        );
    }

    #[test]
    fn characters_outside_the_allowed_set_are_an_error() {
        assert!(matches!(
            render("{namespace}/{pod}", &vars()),
            Err(Error::InvalidProgramId(_))
        ));
        assert!(matches!(
            render("a b", &vars()),
            Err(Error::InvalidProgramId(_))
        ));
    }

    #[test]
    fn over_long_result_is_an_error() {
        let long = "x".repeat(250);
        assert!(matches!(
            render(&long, &vars()),
            Err(Error::InvalidProgramId(_))
        ));
        assert!(render(&"x".repeat(249), &vars()).is_ok());
    }

    #[test]
    fn key_round_trips_through_program_id_from_key() {
        let key = key_for("data.ingest-1");
        assert_eq!(key, "data.ingest-1_heartbeat");
        assert_eq!(program_id_from_key(key.as_bytes()), Ok("data.ingest-1"));
    }

    #[test]
    fn keys_without_suffix_or_id_are_rejected() {
        assert!(matches!(
            program_id_from_key(b"data.ingest"),
            Err(Error::BadKey(_))
        ));
        assert!(matches!(
            program_id_from_key(b"_heartbeat"),
            Err(Error::BadKey(_))
        ));
        assert!(matches!(
            program_id_from_key(b"a\nb_heartbeat"),
            Err(Error::BadKey(_))
        ));
        assert_eq!(
            program_id_from_key(&[0xff, 0xfe]),
            Err(Error::NotUtf8 { part: "key" })
        );
    }

    #[test]
    fn external_ids_with_other_characters_are_accepted_from_keys() {
        assert_eq!(
            program_id_from_key("lab uploader #1_heartbeat".as_bytes()),
            Ok("lab uploader #1")
        );
    }
}
