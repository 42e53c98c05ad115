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
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;
use crate::layout::StackLayout;
use crate::process::run_checked;

/// Where `ip netns` keeps its named namespaces.
pub const NETNS_DIR: &str = "/run/netns";
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
    /// The bridge's MAC address, fixed (see [`create`]): locally
    /// administered, unicast, one per stack.
    pub fn bridge_mac(&self) -> String {
        format!("02:68:62:00:00:{:02x}", self.index)
    }
    /// Whether `addr` lies in what this stack made: its /30 or its pod network.
    pub fn owns(&self, addr: Ipv4Addr) -> bool {
        let [a, b, c, d] = addr.octets();
        (a, b, c, d & !3) == (10, 191, self.index, 0) || (a, b) == (10, 192 + self.index)
    }
    /// The namespace's path (what `setns` and `nsenter` take).
    pub fn netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(self.netns())
    }
    /// The arguments that run a program in the stack namespace's network:
    /// `nsenter <these> program args...`.
    pub fn nsenter_args(&self) -> [String; 2] {
        [
            format!("--net={}", self.netns_path().display()),
            "--".to_string(),
        ]
    }
    /// `nsenter` into the stack namespace's network, then `program`.
    pub fn enter(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(self.nsenter_args()).arg(program);
        cmd
    }

    /// The namespace's identity (its nsfs inode), while it exists.
    fn identity(&self) -> Option<u64> {
        std::fs::metadata(self.netns_path()).ok().map(|m| m.ino())
    }

    /// The stack network recorded in `layout`, if that very namespace
    /// still exists: a record left from before a reboot, or of a namespace
    /// deleted by hand, names a number another stack may own now.
    pub fn read(layout: &StackLayout) -> Option<StackNet> {
        let text = std::fs::read_to_string(layout.net_file()).ok()?;
        let (index, ino) = parse_record(&text)?;
        let net = StackNet { index };
        (net.identity() == Some(ino)).then_some(net)
    }
}

/// `<index> <inode>` as written to the `net` file.
fn parse_record(text: &str) -> Option<(u8, u64)> {
    let mut parts = text.split_whitespace();
    let index = parts.next()?.parse().ok().filter(|i| *i < MAX_STACKS)?;
    let ino = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((index, ino))
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

/// Refuses to go on without root: namespaces, links and routes need it.
pub fn require_root() -> Result<(), Error> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    Err(Error::Usage(
        "the stack runs in network namespaces of its own: run e2e/stack as root".into(),
    ))
}

/// The host's IPv4 routes and addresses, as `a.b.c.d/len` (a bare address
/// is a /32).
fn host_networks() -> Result<Vec<(Ipv4Addr, u8)>, Error> {
    let routes = ip(&["-4", "-o", "route", "show", "table", "all"])?;
    let addrs = ip(&["-4", "-o", "addr", "show"])?;
    let mut nets = Vec::new();
    for word in routes
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .chain(addrs.lines().filter_map(|l| {
            let mut w = l.split_whitespace();
            w.position(|t| t == "inet")?;
            w.next()
        }))
    {
        let (addr, len) = word.split_once('/').unwrap_or((word, "32"));
        if let (Ok(addr), Ok(len)) = (addr.parse(), len.parse()) {
            nets.push((addr, len));
        }
    }
    Ok(nets)
}

/// Whether two networks share an address.
fn overlaps((a, alen): (Ipv4Addr, u8), (b, blen): (Ipv4Addr, u8)) -> bool {
    let len = alen.min(blen).min(32);
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    u32::from(a) & mask == u32::from(b) & mask
}

impl StackNet {
    /// The networks this stack would add to the host.
    fn networks(&self) -> [(Ipv4Addr, u8); 2] {
        [
            (Ipv4Addr::new(10, 191, self.index, 0), 30),
            (self.pod_network(), POD_PREFIX_LEN),
        ]
    }
}

/// Allocates a free stack number (an `ip netns add` that succeeds is the
/// lock; a number whose addresses the host already routes is passed over),
/// records it in `layout`, and builds the network.
pub fn create(layout: &StackLayout) -> Result<StackNet, Error> {
    require_root()?;
    let host = host_networks()?;
    let mut net = None;
    for index in 0..MAX_STACKS {
        let candidate = StackNet { index };
        let clash = candidate
            .networks()
            .iter()
            .any(|ours| host.iter().any(|theirs| overlaps(*ours, *theirs)));
        if clash || netns_exists(&candidate.netns()) {
            continue;
        }
        match ip(&["netns", "add", &candidate.netns()]) {
            Ok(_) => {
                net = Some(candidate);
                break;
            }
            // Taken by a stack starting at the same moment.
            Err(Error::Command { output, .. }) if output.contains("File exists") => continue,
            Err(e) => return Err(e),
        }
    }
    let net = net.ok_or_else(|| {
        Error::Usage(format!(
            "no free stack network: all {MAX_STACKS} are in use or overlap the host's routes"
        ))
    })?;
    let file = layout.net_file();
    let ino = net.identity().unwrap_or_default();
    std::fs::write(&file, format!("{} {ino}", net.index)).map_err(|e| Error::io(&file, e))?;
    if let Err(e) = build(&net) {
        let _ = destroy(&net);
        let _ = std::fs::remove_file(&file);
        return Err(e);
    }
    Ok(net)
}

fn build(net: &StackNet) -> Result<(), Error> {
    let ns = net.netns();
    let (host_link, gw) = (net.host_link(), net.pod_gateway());
    // Our number is ours (the namespace is the lock), so a link of this
    // name can only be a crashed stack's of the same number.
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
    // A fixed address: a bridge left to itself takes the lowest address of
    // its ports and changes it when that pod goes, and pods that cached the
    // old one as their gateway's lose their replies to the node (probes time
    // out) while TCP traffic keeps confirming the stale entry.
    in_ns(
        net,
        &[
            "link",
            "add",
            BRIDGE,
            "address",
            &net.bridge_mac(),
            "type",
            "bridge",
        ],
    )?;
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

/// Kills every process in namespace `name` (whatever its process group:
/// escaped children and probes too), waiting up to a few seconds.
fn kill_everything_in(name: &str) {
    for _ in 0..50 {
        let Ok(pids) = ip(&["netns", "pids", name]) else {
            return;
        };
        let pids: Vec<i32> = pids
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Deletes namespace `name` after killing what runs in it (a namespace
/// outlives its name while a process holds it).
pub fn remove_namespace(name: &str) {
    if netns_exists(name) {
        kill_everything_in(name);
        let _ = ip(&["netns", "del", name]);
    }
}

/// Deletes the namespaces whose names start with `prefix` (see [`remove_namespace`]).
pub fn remove_namespaces_with_prefix(prefix: &str) {
    for ns in list_netns() {
        if ns.starts_with(prefix) {
            remove_namespace(&ns);
        }
    }
}

/// Removes every pod namespace of the stack, then the stack namespace (its
/// links, the bridge and the host route go with it); an error names what
/// is left.
pub fn destroy(net: &StackNet) -> Result<(), Error> {
    remove_namespaces_with_prefix(&net.pod_netns_prefix());
    remove_namespace(&net.netns());
    // Normally gone with its peer; removed by name if a crash left it.
    let _ = ip(&["link", "del", &net.host_link()]);
    let left: Vec<String> = list_netns()
        .into_iter()
        .filter(|n| *n == net.netns() || n.starts_with(&net.pod_netns_prefix()))
        .collect();
    if left.is_empty() {
        return Ok(());
    }
    Err(Error::Command {
        what: format!("removing the network of stack {}", net.index),
        output: format!("namespaces still there: {}", left.join(" ")),
    })
}

/// The named network namespaces on this machine.
pub fn list_netns() -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Whether the namespace exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
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
    fn overlap_is_by_the_shorter_prefix_and_records_parse_strictly() {
        let net = |s: &str, l| (s.parse::<Ipv4Addr>().expect("ip"), l);
        assert!(overlaps(net("10.192.0.0", 16), net("10.0.0.0", 8)));
        assert!(overlaps(net("10.192.0.0", 16), net("10.192.3.4", 32)));
        assert!(!overlaps(net("10.192.0.0", 16), net("10.193.0.0", 16)));
        assert!(
            overlaps(net("10.191.3.0", 30), net("0.0.0.0", 0)),
            "a default route overlaps all"
        );
        assert_eq!(parse_record("3 4026532288"), Some((3, 4026532288)));
        for bad in ["3", "x 1", "3 1 2", "99 1"] {
            assert_eq!(parse_record(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_bridge_mac_is_unicast_locally_administered_and_per_stack() {
        let mac = StackNet { index: 3 }.bridge_mac();
        let first = u8::from_str_radix(&mac[..2], 16).expect("hex");
        assert_eq!(first & 1, 0, "unicast: {mac}");
        assert_eq!(first & 2, 2, "locally administered: {mac}");
        assert_ne!(mac, StackNet { index: 4 }.bridge_mac());
    }

    #[test]
    fn the_host_link_name_fits_the_kernels_fifteen_characters() {
        let net = StackNet {
            index: MAX_STACKS - 1,
        };
        assert!(net.host_link().len() <= 15);
    }
}
