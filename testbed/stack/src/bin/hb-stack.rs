//! hb-stack: the local stack's supervisor behind `e2e/stack` (which
//! installs the tools itself and hands every other command to this).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use heartbeat_testbed::components::{Component, Tools};
use heartbeat_testbed::layout::{StackLayout, default_stack_dir};
use heartbeat_testbed::network;
use heartbeat_testbed::supervisor::{Grants, Stack, UpOptions, repo_dir};
use heartbeat_testbed::{Error, owner, say};

/// Runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler, the
/// process node and a KRaft Kafka broker in network namespaces of their own,
/// for tests and the demo.
#[derive(Parser, Debug)]
#[command(name = "e2e/stack", version, about)]
struct Args {
    /// The stack's state directory.
    #[arg(long, env = "HB_STACK_DIR", global = true)]
    stack_dir: Option<PathBuf>,
    /// Where `e2e/stack install` put the tools (`e2e/stack` sets it).
    #[arg(long, env = "HB_TOOLS_DIR")]
    tools_dir: PathBuf,
    /// The Kafka distribution (`e2e/stack` sets it from tools/versions.env).
    #[arg(long, env = "HB_KAFKA_HOME")]
    kafka_home: PathBuf,
    /// The components to run, space-separated (e.g. "kafka" for a private broker).
    #[arg(long, env = "HB_COMPONENTS", global = true, default_value = "")]
    components: String,
    /// Seconds each component gets to become healthy.
    #[arg(long, env = "HB_UP_TIMEOUT", global = true, default_value_t = 120)]
    up_timeout: u64,
    /// A prebuilt process node (otherwise target/{debug,release}, or built).
    #[arg(long, env = "HB_PROCESS_NODE_BIN", global = true)]
    process_node_bin: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start everything and wait until healthy (an up stack is kept).
    Up {
        /// Start from an empty cluster and broker.
        #[arg(long)]
        fresh: bool,
        /// Stop the stack once this process exits.
        #[arg(long, value_name = "PID")]
        stop_when_exits: Option<i32>,
    },
    /// Stop exactly what `up` started.
    Down,
    /// Show what runs (exit 1 when something is stopped).
    Status,
    /// Print export lines: eval "$(e2e/stack env)".
    Env,
    /// Take a component away (for outage tests).
    Stop { component: Stoppable },
    /// Bring it back on the same port.
    Start { component: Stoppable },
    /// Create a Kafka topic (auto-creation is off).
    CreateTopic {
        name: String,
        #[arg(default_value_t = 1)]
        partitions: u32,
    },
    /// A SASL_SCRAM principal on the broker's SASL_SSL listener, with ACLs;
    /// prints the path of its client properties (kcat -F FILE).
    KafkaPrincipal {
        name: String,
        /// A topic it may write (Write); repeatable.
        #[arg(long)]
        write: Vec<String>,
        /// A topic it may read (Read, Describe, DescribeConfigs); repeatable.
        #[arg(long)]
        read: Vec<String>,
        /// A consumer group it may join (Read); repeatable.
        #[arg(long)]
        group: Vec<String>,
    },
    /// Load the chart's alert rules for a release into the stack's Prometheus
    /// (rendered by helm template; prints the rule file).
    AlertRules {
        release: String,
        namespace: String,
        /// A chart value (e.g. prometheusRule.staleFor=10s); repeatable.
        #[arg(long)]
        set: Vec<String>,
        /// Take the release's rules out instead.
        #[arg(long, conflicts_with = "print")]
        remove: bool,
        /// Only print the rule file (for promtool; needs no stack).
        #[arg(long)]
        print: bool,
    },
    /// Run CMD in the stack's network namespace (what the API server must call).
    Exec {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// Print the pid (and process group) of a pod's running container.
    ContainerPid {
        namespace: String,
        pod: String,
        container: String,
    },
    /// Stop the stack when its owner exits (started by `up --stop-when-exits`).
    #[command(hide = true)]
    WatchOwner,
}

/// What `stop` and `start` take away and bring back.
#[derive(ValueEnum, Debug, Clone, Copy)]
enum Stoppable {
    Kafka,
    /// kube-apiserver (the other components and clients reconnect).
    Apiserver,
}

impl Stoppable {
    fn component(self) -> Component {
        match self {
            Stoppable::Kafka => Component::Kafka,
            Stoppable::Apiserver => Component::KubeApiserver,
        }
    }
}

fn run(args: Args) -> Result<ExitCode, Error> {
    let stack = Stack {
        layout: StackLayout::new(args.stack_dir.unwrap_or_else(default_stack_dir)),
        tools: Tools {
            kafka_home: args.kafka_home,
            dir: args.tools_dir,
            repo: repo_dir(),
            process_node_bin: args.process_node_bin,
        },
        components: Component::parse_list(&args.components)?,
        up_timeout: Duration::from_secs(args.up_timeout),
    };
    // What changes the stack needs root, and never interleaves on one stack.
    let _lock = match &args.command {
        Cmd::Up { .. } | Cmd::Down | Cmd::Stop { .. } | Cmd::Start { .. } => {
            network::require_root()?;
            Some(owner::lock(&stack.layout)?)
        }
        Cmd::Exec { .. } => {
            network::require_root()?;
            None
        }
        _ => None,
    };
    match args.command {
        Cmd::Up {
            fresh,
            stop_when_exits,
        } => stack.up(&UpOptions {
            fresh,
            owner: stop_when_exits,
        })?,
        Cmd::Down => stack.down(),
        Cmd::Status => {
            if !stack.status() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Cmd::Env => print!("{}", stack.env()?),
        Cmd::Stop { component } => stack.stop_component(component.component())?,
        Cmd::Start { component } => stack.start_component(component.component())?,
        Cmd::CreateTopic { name, partitions } => stack.create_topic(&name, partitions)?,
        Cmd::KafkaPrincipal {
            name,
            write,
            read,
            group,
        } => {
            let grants = Grants {
                write,
                read,
                groups: group,
            };
            println!("{}", stack.kafka_principal(&name, &grants)?.display());
        }
        Cmd::AlertRules {
            release,
            namespace,
            set,
            remove,
            print,
        } => {
            if print {
                print!("{}", stack.render_alert_rules(&release, &namespace, &set)?);
            } else {
                println!(
                    "{}",
                    stack
                        .alert_rules(&release, &namespace, &set, remove)?
                        .display()
                );
            }
        }
        // Only returns when the exec failed.
        Cmd::Exec { cmd } => return Err(stack.exec(&cmd)),
        Cmd::ContainerPid {
            namespace,
            pod,
            container,
        } => println!("{}", stack.container_pid(&namespace, &pod, &container)?),
        Cmd::WatchOwner => loop {
            owner::wait_until_owner_gone(&stack.layout);
            let _lock = owner::lock(&stack.layout)?;
            // Handed on while this waited for the lock: keep watching.
            if owner::owner_alive(&stack.layout) {
                continue;
            }
            say("owner gone: stopping the stack");
            stack.down();
            break;
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            say(format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Args::command().debug_assert();
    }
}
