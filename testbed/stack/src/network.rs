//! The stack's own network: a network namespace per stack holding the
//! control plane, Kafka and a bridge for the pod network, reached from the
//! host through one veth pair and a host route to the pod network. The
//! namespace has no default route, so nothing leaves it; the only traffic is
//! from the host into it (and within it).
//!
//! Stack `n` (0..[`MAX_STACKS`]) owns, and `down` removes:
//! - netns `hbs<n>` (named, so it is the allocation lock too) and every pod
//!   netns `hbs<n>-*` the process node made;
//! - host link `hbs<n>h` (10.191.n.1/30) paired with `transit0` in the
//!   namespace (10.191.n.2/30, the stack-side address);
//! - bridge `hbbr0` in the namespace with the pod gateway 10.(192+n).0.1/16;
//! - the host route 10.(192+n).0.0/16 via 10.191.n.2 (gone with the link).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use crate::Error;
use crate::layout::StackLayout;
use crate::process::run_checked;

/// How many stacks may run side by side.
pub const MAX_STACKS: u8 = 60;
/// The bridge that carries the pod network, inside the stack namespace.
pub const BRIDGE: &str = "hbbr0";
/// The stack end of the host-stack veth pair, inside the stack namespace.
pub const TRANSIT_LINK: &str = "transit0";
/// Prefix length of the pod network.
pub const POD_PREFIX_LEN: u8 = 16;

/// The addresses and names of stack number `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackNet {
    pub index: u8,
}

impl StackNet {
    /// The stack's network namespace.
    pub fn netns(&self) -> String {
        format!("hbs{}", self.index)
    }
    /// Prefix of the pod network namespaces of this stack.
    pub fn pod_netns_prefix(&self) -> String {
        format!("hbs{}-", self.index)
    }
    /// The host end of the veth pair.
    pub fn host_link(&self) -> String {
        format!("hbs{}h", self.index)
    }
    /// The host side of the /30.
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 191, self.index, 1)
    }
    /// The stack side of the /30: where the control plane and Kafka listen.
    pub fn stack_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 191, self.index, 2)
    }
    /// The pod network's first address (with [`POD_PREFIX_LEN`]).
    pub fn pod_network(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 192 + self.index, 0, 0)
    }
    /// The pod network in CIDR notation.
    pub fn pod_cidr(&self) -> String {
        format!("{}/{POD_PREFIX_LEN}", self.pod_network())
    }
    /// The bridge's address: the pods' gateway.
    pub fn pod_gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 192 + self.index, 0, 1)
    }
    /// Whether `addr` lies in what this stack made: its /30 or its pod network.
    pub fn owns(&self, addr: Ipv4Addr) -> bool {
        let [a, b, c, d] = addr.octets();
        (a, b, c, d & !3) == (10, 191, self.index, 0) || (a, b) == (10, 192 + self.index)
    }
    /// `nsenter` into the stack namespace's network, then `program`.
    pub fn enter(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// The stack recorded in `layout` (its `net` file), if any.
    pub fn read(layout: &StackLayout) -> Option<StackNet> {
        let text = std::fs::read_to_string(layout.net_file()).ok()?;
        let index = text.trim().parse().ok().filter(|i| *i < MAX_STACKS)?;
        Some(StackNet { index })
    }
}

fn ip(args: &[&str]) -> Result<String, Error> {
    run_checked(
        Command::new("ip").args(args),
        format!("ip {}", args.join(" ")),
    )
}

fn in_ns(net: &StackNet, args: &[&str]) -> Result<String, Error> {
    let ns = net.netns();
    let mut full = vec!["-n", ns.as_str()];
    full.extend_from_slice(args);
    ip(&full)
}

/// Allocates a free stack number (an `ip netns add` that succeeds is the
/// lock), records it in `layout`, and builds the network.
pub fn create(layout: &StackLayout) -> Result<StackNet, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Usage(
            "the stack runs in network namespaces of its own: run e2e/stack as root".into(),
        ));
    }
    let net = (0..MAX_STACKS)
        .map(|index| StackNet { index })
        .find(|net| ip(&["netns", "add", &net.netns()]).is_ok())
        .ok_or_else(|| Error::Usage(format!("all {MAX_STACKS} stack networks are in use")))?;
    let file = layout.net_file();
    std::fs::write(&file, net.index.to_string()).map_err(|e| Error::io(&file, e))?;
    if let Err(e) = build(&net) {
        destroy(&net);
        let _ = std::fs::remove_file(&file);
        return Err(e);
    }
    Ok(net)
}

fn build(net: &StackNet) -> Result<(), Error> {
    let ns = net.netns();
    let (host_link, gw) = (net.host_link(), net.pod_gateway());
    // A link of that name left by someone else would take our route.
    let _ = ip(&["link", "del", &host_link]);
    ip(&[
        "link",
        "add",
        &host_link,
        "type",
        "veth",
        "peer",
        "name",
        TRANSIT_LINK,
        "netns",
        &ns,
    ])?;
    ip(&[
        "addr",
        "add",
        &format!("{}/30", net.host_addr()),
        "dev",
        &host_link,
    ])?;
    ip(&["link", "set", &host_link, "up"])?;
    in_ns(net, &["link", "set", "lo", "up"])?;
    in_ns(
        net,
        &[
            "addr",
            "add",
            &format!("{}/30", net.stack_addr()),
            "dev",
            TRANSIT_LINK,
        ],
    )?;
    in_ns(net, &["link", "set", TRANSIT_LINK, "up"])?;
    in_ns(net, &["link", "add", BRIDGE, "type", "bridge"])?;
    in_ns(
        net,
        &[
            "addr",
            "add",
            &format!("{gw}/{POD_PREFIX_LEN}"),
            "dev",
            BRIDGE,
        ],
    )?;
    in_ns(net, &["link", "set", BRIDGE, "up"])?;
    // Host <-> pods goes through the namespace: it routes, the host does not.
    run_checked(
        net.enter("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]),
        "enabling forwarding in the stack namespace",
    )?;
    ip(&[
        "route",
        "add",
        &net.pod_cidr(),
        "via",
        &net.stack_addr().to_string(),
        "dev",
        &host_link,
    ])?;
    Ok(())
}

/// Removes every pod namespace of the stack, then the stack namespace (its
/// links, the bridge and the host route go with it).
pub fn destroy(net: &StackNet) {
    for ns in list_netns() {
        if ns.starts_with(&net.pod_netns_prefix()) {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
    let _ = ip(&["netns", "del", &net.netns()]);
    // Normally gone with its peer; removed by name if a crash left it.
    let _ = ip(&["link", "del", &net.host_link()]);
}

/// The named network namespaces on this machine.
pub fn list_netns() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Whether the namespace exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_index_and_stay_inside_the_stack() {
        let net = StackNet { index: 3 };
        assert_eq!(net.netns(), "hbs3");
        assert_eq!(net.host_addr(), Ipv4Addr::new(10, 191, 3, 1));
        assert_eq!(net.stack_addr(), Ipv4Addr::new(10, 191, 3, 2));
        assert_eq!(net.pod_cidr(), "10.195.0.0/16");
        assert_eq!(net.pod_gateway(), Ipv4Addr::new(10, 195, 0, 1));
        for own in [
            net.host_addr(),
            net.stack_addr(),
            net.pod_gateway(),
            Ipv4Addr::new(10, 195, 7, 9),
        ] {
            assert!(net.owns(own), "{own}");
        }
        for other in [
            Ipv4Addr::new(10, 191, 3, 5),
            Ipv4Addr::new(10, 191, 4, 2),
            Ipv4Addr::new(10, 196, 0, 1),
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(192, 0, 2, 1),
        ] {
            assert!(!net.owns(other), "{other}");
        }
    }

    #[test]
    fn the_host_link_name_fits_the_kernels_fifteen_characters() {
        let net = StackNet {
            index: MAX_STACKS - 1,
        };
        assert!(net.host_link().len() <= 15);
    }
}
