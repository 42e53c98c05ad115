//! Each pod's network, the way the CNI bridge plugin makes it: a network
//! namespace of the pod's own (its own `127.0.0.1`), joined to the stack's
//! bridge by a veth pair, with an address from the pod network and a
//! default route through the bridge. The node runs in the stack's network
//! namespace, so the bridge and the pods' veth ends are local to it.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use heartbeat_testbed::network::{NETNS_DIR, remove_namespace, remove_namespaces_with_prefix};

/// How pods are networked on this node (from the stack).
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The pod network's first address; pods get addresses after the gateway.
    pub network: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The bridge's address: every pod's default route.
    pub gateway: Ipv4Addr,
    /// The bridge pods are joined to.
    pub bridge: String,
    /// Prefix of the pods' namespace names (unique to the stack).
    pub netns_prefix: String,
}

impl NetConfig {
    /// Parses `--pod-cidr` (`a.b.c.d/len`).
    pub fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u8), String> {
        let (addr, len) = cidr
            .split_once('/')
            .ok_or_else(|| format!("{cidr:?} is not a.b.c.d/len"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|e| format!("{cidr:?}: {e}"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| (8..=30).contains(l))
            .ok_or_else(|| format!("{cidr:?}: prefix length must be 8..30"))?;
        Ok((addr, len))
    }

    /// How many pod addresses the network holds (network, gateway and
    /// broadcast addresses excluded).
    fn capacity(&self) -> u32 {
        (1u32 << (32 - u32::from(self.prefix_len))).saturating_sub(3)
    }

    /// The address of pod slot `slot` (0-based).
    pub fn address(&self, slot: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 2 + slot)
    }
}

/// Hands out pod slots (address and link names), reusing freed ones.
#[derive(Debug, Default)]
pub struct Slots {
    used: BTreeSet<u32>,
}

impl Slots {
    /// The lowest free slot, if the network has one left.
    pub fn take(&mut self, cfg: &NetConfig) -> Option<u32> {
        let slot = (0..cfg.capacity()).find(|s| !self.used.contains(s))?;
        self.used.insert(slot);
        Some(slot)
    }

    /// Gives a slot back.
    pub fn free(&mut self, slot: u32) {
        self.used.remove(&slot);
    }
}

/// A pod's network as made on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    /// The namespace's name (`ip netns`).
    pub netns: String,
    /// The node-side end of the veth pair, on the bridge.
    pub host_link: String,
    /// The pod's IP.
    pub ip: Ipv4Addr,
    /// The slot it came from.
    pub slot: u32,
}

impl PodNetwork {
    /// The names and address of `slot`.
    pub fn plan(cfg: &NetConfig, slot: u32) -> PodNetwork {
        PodNetwork {
            netns: format!("{}p{slot}", cfg.netns_prefix),
            host_link: format!("vp{slot}"),
            ip: cfg.address(slot),
            slot,
        }
    }

    /// The pod's MAC address, made from its IP as the CNI bridge plugin
    /// does (`0a:58:` and the four octets): a freed address is reused by
    /// the next pod, and with a new random MAC the node's neighbour entry
    /// for it (reachable for up to 45 s) would send the pod's first
    /// probes and connections to the gone pod's link, so they time out.
    pub fn mac(&self) -> String {
        let [a, b, c, d] = self.ip.octets();
        format!("0a:58:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
    }

    /// The path `setns` takes.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.netns)
    }

    /// Makes the namespace and joins it to the bridge.
    pub fn create(&self, cfg: &NetConfig) -> Result<(), String> {
        // Left by a node that was killed: start clean.
        remove_namespace(&self.netns);
        let _ = ip(&["link", "del", &self.host_link]);
        let cidr = format!("{}/{}", self.ip, cfg.prefix_len);
        let gw = cfg.gateway.to_string();
        let ns = self.netns.as_str();
        let mac = self.mac();
        let steps: [&[&str]; 7] = [
            &["netns", "add", ns],
            &[
                "link",
                "add",
                &self.host_link,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "address",
                &mac,
                "netns",
                ns,
            ],
            &["link", "set", &self.host_link, "master", &cfg.bridge, "up"],
            &["-n", ns, "link", "set", "lo", "up"],
            &["-n", ns, "addr", "add", &cidr, "dev", "eth0"],
            &["-n", ns, "link", "set", "eth0", "up"],
            &["-n", ns, "route", "add", "default", "via", &gw],
        ];
        for args in steps {
            if let Err(e) = ip(args) {
                self.remove();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Removes the namespace, after killing what still runs in it (its end
    /// of the veth pair goes with it, and so does the node's end).
    pub fn remove(&self) {
        remove_namespace(&self.netns);
        let _ = ip(&["link", "del", &self.host_link]);
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Removes pod namespaces with `prefix` a previous run left behind.
pub fn remove_leftovers(prefix: &str) {
    remove_namespaces_with_prefix(prefix);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NetConfig {
        NetConfig {
            network: Ipv4Addr::new(10, 194, 0, 0),
            prefix_len: 16,
            gateway: Ipv4Addr::new(10, 194, 0, 1),
            bridge: "hbbr0".into(),
            netns_prefix: "hbs2-".into(),
        }
    }

    #[test]
    fn slots_map_to_addresses_after_the_gateway_and_are_reused() {
        let cfg = cfg();
        let mut slots = Slots::default();
        let a = slots.take(&cfg).expect("a");
        let b = slots.take(&cfg).expect("b");
        assert_eq!(cfg.address(a), Ipv4Addr::new(10, 194, 0, 2));
        assert_eq!(cfg.address(b), Ipv4Addr::new(10, 194, 0, 3));
        assert_eq!(cfg.address(300), Ipv4Addr::new(10, 194, 1, 46));
        slots.free(a);
        assert_eq!(slots.take(&cfg), Some(a));
        let pod = PodNetwork::plan(&cfg, 65530);
        assert_eq!(pod.netns, "hbs2-p65530");
        assert!(pod.host_link.len() <= 15, "{}", pod.host_link);
    }

    #[test]
    fn a_pods_mac_is_unicast_locally_administered_and_follows_its_address() {
        let cfg = cfg();
        let pod = PodNetwork::plan(&cfg, 300);
        assert_eq!(pod.mac(), "0a:58:0a:c2:01:2e");
        let first = u8::from_str_radix(&pod.mac()[..2], 16).expect("hex");
        assert_eq!(first & 1, 0, "unicast");
        assert_eq!(first & 2, 2, "locally administered");
        // The next pod in the slot gets the same one; another slot another.
        assert_eq!(PodNetwork::plan(&cfg, 300).mac(), pod.mac());
        assert_ne!(PodNetwork::plan(&cfg, 301).mac(), pod.mac());
    }

    #[test]
    fn a_small_network_runs_out_instead_of_overflowing() {
        let mut cfg = cfg();
        cfg.prefix_len = 30;
        let mut slots = Slots::default();
        assert!(slots.take(&cfg).is_some());
        assert_eq!(slots.take(&cfg), None);
    }

    #[test]
    fn cidrs_parse_with_sane_prefixes_only() {
        assert_eq!(
            NetConfig::parse_cidr("10.192.0.0/16"),
            Ok((Ipv4Addr::new(10, 192, 0, 0), 16))
        );
        for bad in ["10.192.0.0", "10.192.0.0/33", "10.192.0.0/2", "x/16"] {
            assert!(NetConfig::parse_cidr(bad).is_err(), "{bad}");
        }
    }
}
