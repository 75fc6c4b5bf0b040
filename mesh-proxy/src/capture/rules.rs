//! The capture rules as data: what `mesh-sidecar iptables` puts in a pod's network
//! namespace, rendered as `iptables-restore` input for IPv4 and IPv6 alike. Istio's
//! `istio-iptables` semantics (its golden files are the reference), under chain names of our
//! own so that `--cleanup` removes exactly ours:
//!
//! | ours | Istio's | what |
//! |---|---|---|
//! | `MESH_INBOUND` | `ISTIO_INBOUND` | `PREROUTING`'s TCP: excluded ports return, the rest to `MESH_IN_REDIRECT` |
//! | `MESH_IN_REDIRECT` | `ISTIO_IN_REDIRECT` | REDIRECT to the inbound capture port (15006) |
//! | `MESH_OUTPUT` | `ISTIO_OUTPUT` | `OUTPUT`'s TCP: the proxy's own and loopback return, the rest to `MESH_REDIRECT` |
//! | `MESH_REDIRECT` | `ISTIO_REDIRECT` | REDIRECT to the outbound capture port (15001) |
//! | `MESH_OUTPUT_DNS` | `ISTIO_OUTPUT_DNS` | UDP 53 to the DNS proxy (15053); in `raw`, the conntrack zones |
//! | `MESH_INBOUND_DNS` | (`ISTIO_INBOUND` in `raw`) | replies from upstream resolvers into the proxy's zone |

use std::{fmt::Write, net::IpAddr};

use mesh_core::cidr::Cidr;

/// The address family a rule set is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `iptables`.
    V4,
    /// `ip6tables`.
    V6,
}

impl Family {
    /// The restore and save commands.
    pub fn commands(self) -> (&'static str, &'static str) {
        match self {
            Self::V4 => ("iptables-restore", "iptables-save"),
            Self::V6 => ("ip6tables-restore", "ip6tables-save"),
        }
    }

    /// Loopback, and the source the proxy's inbound hop to the app uses (never captured).
    fn addresses(self) -> (&'static str, &'static str) {
        match self {
            Self::V4 => ("127.0.0.1/32", "127.0.0.6/32"),
            Self::V6 => ("::1/128", "::6/128"),
        }
    }

    fn holds(self, ip: IpAddr) -> bool {
        ip.is_ipv4() == (self == Self::V4)
    }
}

/// Which ports or addresses: every one, or a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Set<T> {
    /// `*`.
    All,
    /// These (empty: none).
    Only(Vec<T>),
}

impl<T> Default for Set<T> {
    fn default() -> Self {
        Self::Only(Vec::new())
    }
}

/// What to capture, validated once: the flags of `mesh-sidecar iptables`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureRules {
    /// Where outbound connections go (15001).
    pub outbound_port: u16,
    /// Where inbound connections go (15006).
    pub inbound_port: u16,
    /// The DNS proxy's port (15053).
    pub dns_port: u16,
    /// The proxy's user IDs: their connections are never captured (1337).
    pub proxy_uids: Vec<u32>,
    /// The proxy's group IDs (1337).
    pub proxy_gids: Vec<u32>,
    /// Inbound ports captured (`*` by default).
    pub include_inbound_ports: Set<u16>,
    /// Inbound ports never captured with `*`: the proxy's own (15008, 15020, 15021, 15090,
    /// the admin port) and `--exclude-inbound-ports`.
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destinations captured (`*` by default).
    pub include_outbound_ranges: Set<Cidr>,
    /// Outbound destinations never captured.
    pub exclude_outbound_ranges: Vec<Cidr>,
    /// Outbound ports never captured.
    pub exclude_outbound_ports: Vec<u16>,
    /// Send DNS (UDP and TCP 53) to the DNS proxy.
    pub capture_dns: bool,
}

/// Ports the proxy itself serves: never captured inbound (Istio's 15008 tunnel, 15020
/// merged metrics, 15021 health, 15090 Envoy's Prometheus).
pub const PROXY_PORTS: [u16; 4] = [15008, 15020, 15021, 15090];

/// The tunnel port, never redirected back in from loopback.
const TUNNEL_PORT: u16 = 15008;

impl Default for CaptureRules {
    fn default() -> Self {
        Self {
            outbound_port: 15001,
            inbound_port: 15006,
            dns_port: 15053,
            proxy_uids: vec![1337],
            proxy_gids: vec![1337],
            include_inbound_ports: Set::All,
            exclude_inbound_ports: PROXY_PORTS.to_vec(),
            include_outbound_ranges: Set::All,
            exclude_outbound_ranges: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            capture_dns: false,
        }
    }
}

/// Every chain this module makes, in each table.
pub const CHAINS: &[(&str, &[&str])] = &[
    ("nat", &["MESH_INBOUND", "MESH_REDIRECT", "MESH_IN_REDIRECT", "MESH_OUTPUT", "MESH_OUTPUT_DNS"]),
    ("raw", &["MESH_OUTPUT_DNS", "MESH_INBOUND_DNS"]),
];

fn ports(p: &[u16]) -> String {
    p.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

impl CaptureRules {
    /// The `iptables-restore --noflush` input for `family`: the `nat` table, and `raw` when
    /// DNS is captured. Empty when nothing is captured.
    pub fn render(&self, family: Family) -> String {
        let mut nat = Vec::new();
        let mut raw = Vec::new();
        self.nat(family, &mut nat);
        if self.capture_dns {
            self.raw(&mut raw);
        }
        let mut out = String::new();
        for (table, rules) in [("nat", nat), ("raw", raw)] {
            if rules.is_empty() {
                continue;
            }
            let _ = writeln!(out, "*{table}");
            for chain in chains_used(table, &rules) {
                let _ = writeln!(out, ":{chain} - [0:0]");
            }
            for r in rules {
                let _ = writeln!(out, "{r}");
            }
            let _ = writeln!(out, "COMMIT");
        }
        out
    }

    fn nat(&self, family: Family, out: &mut Vec<String>) {
        let (lo_addr, passthrough) = family.addresses();
        let inbound = !matches!(&self.include_inbound_ports, Set::Only(p) if p.is_empty());
        let outbound_ranges: Set<Cidr> = match &self.include_outbound_ranges {
            Set::All => Set::All,
            Set::Only(r) => Set::Only(r.iter().copied().filter(|c| family.holds(c.addr())).collect()),
        };
        let excluded_ranges: Vec<Cidr> =
            self.exclude_outbound_ranges.iter().copied().filter(|c| family.holds(c.addr())).collect();
        out.push(format!("-A MESH_INBOUND -p tcp --dport {TUNNEL_PORT} -j RETURN"));
        out.push(format!("-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports {}", self.outbound_port));
        out.push(format!("-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}", self.inbound_port));

        // Inbound: every TCP port but the excluded ones, or the listed ones.
        if inbound {
            out.push("-A PREROUTING -p tcp -j MESH_INBOUND".into());
            match &self.include_inbound_ports {
                Set::All => {
                    for p in self.exclude_inbound_ports.iter().filter(|p| **p != TUNNEL_PORT) {
                        out.push(format!("-A MESH_INBOUND -p tcp --dport {p} -j RETURN"));
                    }
                    out.push("-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT".into());
                }
                Set::Only(list) => {
                    for p in list {
                        out.push(format!("-A MESH_INBOUND -p tcp --dport {p} -j MESH_IN_REDIRECT"));
                    }
                }
            }
        }

        // Outbound.
        out.push("-A OUTPUT -p tcp -j MESH_OUTPUT".into());
        if !self.exclude_outbound_ports.is_empty() {
            out.push(format!(
                "-A MESH_OUTPUT -p tcp -m multiport --dports {} -j RETURN",
                ports(&self.exclude_outbound_ports)
            ));
        }
        // The proxy's inbound hop to the app.
        out.push(format!("-A MESH_OUTPUT -o lo -s {passthrough} -j RETURN"));
        // From the proxy over loopback to an address that is not 127.0.0.1 (the pod's own
        // address, a VIP the app called that the proxy resolved to this pod): back in
        // through the inbound capture. Other loopback traffic is the app talking to itself.
        // DNS over TCP to a loopback resolver is still captured when DNS is.
        let not_tunnel = if self.capture_dns {
            format!("-p tcp -m multiport ! --dports 53,{TUNNEL_PORT}")
        } else {
            format!("-p tcp ! --dport {TUNNEL_PORT}")
        };
        let lo_other = if self.capture_dns { "-p tcp ! --dport 53 " } else { "" };
        for (kind, ids) in [("--uid-owner", &self.proxy_uids), ("--gid-owner", &self.proxy_gids)] {
            for id in ids {
                out.push(format!(
                    "-A MESH_OUTPUT -o lo ! -d {lo_addr} {not_tunnel} -m owner {kind} {id} -j MESH_IN_REDIRECT"
                ));
                out.push(format!("-A MESH_OUTPUT -o lo {lo_other}-m owner ! {kind} {id} -j RETURN"));
                out.push(format!("-A MESH_OUTPUT -m owner {kind} {id} -j RETURN"));
            }
        }
        if self.capture_dns {
            out.push(format!("-A MESH_OUTPUT -p tcp --dport 53 -j REDIRECT --to-ports {}", self.dns_port));
        }
        out.push(format!("-A MESH_OUTPUT -d {lo_addr} -j RETURN"));
        for c in &excluded_ranges {
            out.push(format!("-A MESH_OUTPUT -d {c} -j RETURN"));
        }
        match &outbound_ranges {
            Set::All => out.push("-A MESH_OUTPUT -j MESH_REDIRECT".into()),
            Set::Only(ranges) if ranges.is_empty() => {}
            Set::Only(ranges) => {
                for c in ranges {
                    out.push(format!("-A MESH_OUTPUT -d {c} -j MESH_REDIRECT"));
                }
                out.push("-A MESH_OUTPUT -j RETURN".into());
            }
        }

        // DNS over UDP: everything but the proxy's own queries to the DNS proxy.
        if self.capture_dns {
            out.push("-A OUTPUT -p udp --dport 53 -j MESH_OUTPUT_DNS".into());
            for (kind, ids) in [("--uid-owner", &self.proxy_uids), ("--gid-owner", &self.proxy_gids)] {
                for id in ids {
                    out.push(format!("-A MESH_OUTPUT_DNS -p udp --dport 53 -m owner {kind} {id} -j RETURN"));
                }
            }
            out.push(format!("-A MESH_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-ports {}", self.dns_port));
        }
    }

    /// Conntrack zones, as Istio sets them: the proxy's queries to upstream resolvers and
    /// their replies in zone 1, the app's queries and the proxy's answers in zone 2, so an
    /// app query and a proxy query with one 5-tuple are never taken for each other.
    fn raw(&self, out: &mut Vec<String>) {
        out.push("-A OUTPUT -p udp -j MESH_OUTPUT_DNS".into());
        for (kind, ids) in [("--uid-owner", &self.proxy_uids), ("--gid-owner", &self.proxy_gids)] {
            for id in ids {
                out.push(format!("-A MESH_OUTPUT_DNS -p udp --dport 53 -m owner {kind} {id} -j CT --zone 1"));
                out.push(format!(
                    "-A MESH_OUTPUT_DNS -p udp --sport {} -m owner {kind} {id} -j CT --zone 2",
                    self.dns_port
                ));
            }
        }
        out.push("-A MESH_OUTPUT_DNS -p udp --dport 53 -j CT --zone 2".into());
        out.push("-A PREROUTING -p udp -j MESH_INBOUND_DNS".into());
        out.push("-A MESH_INBOUND_DNS -p udp --sport 53 -j CT --zone 1".into());
    }
}

/// The chains of `table` that `rules` use, in [`CHAINS`] order.
fn chains_used<'a>(table: &str, rules: &[String]) -> Vec<&'a str> {
    let ours = CHAINS.iter().find(|(t, _)| *t == table).map_or(&[][..], |(_, c)| *c);
    ours.iter()
        .copied()
        .filter(|c| rules.iter().any(|r| r.contains(&format!(" {c} ")) || r.ends_with(&format!(" {c}"))))
        .collect()
}

/// The `iptables-restore --noflush` input that removes every rule and chain of ours that
/// `saved` (`iptables-save` output) holds, and nothing else: the jumps from the built-in
/// chains first, then our chains flushed, then deleted. Empty when there is nothing of ours.
pub fn cleanup(saved: &str) -> String {
    let mut out = String::new();
    let mut table: Option<&str> = None;
    let mut deletes: Vec<String> = Vec::new();
    let mut chains: Vec<&str> = Vec::new();
    let ours = |name: &str, table: &str| CHAINS.iter().any(|(t, chains)| *t == table && chains.contains(&name));
    let flush = |out: &mut String, table: &str, deletes: &mut Vec<String>, chains: &mut Vec<&str>| {
        if deletes.is_empty() && chains.is_empty() {
            return;
        }
        let _ = writeln!(out, "*{table}");
        for d in deletes.drain(..) {
            let _ = writeln!(out, "{d}");
        }
        for c in chains.iter() {
            let _ = writeln!(out, "-F {c}");
        }
        for c in chains.drain(..) {
            let _ = writeln!(out, "-X {c}");
        }
        let _ = writeln!(out, "COMMIT");
    };
    for line in saved.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = Some(t.trim());
            continue;
        }
        let Some(t) = table else { continue };
        if line.trim() == "COMMIT" {
            flush(&mut out, t, &mut deletes, &mut chains);
            table = None;
        } else if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or("");
            if ours(name, t) {
                chains.push(name);
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split_whitespace().next().unwrap_or("");
            let target = rule.split_whitespace().skip_while(|w| *w != "-j").nth(1).unwrap_or("");
            // A jump into one of ours from a chain that is not ours.
            if !ours(chain, t) && ours(target, t) {
                deletes.push(format!("-D {rule}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<&str> {
        s.lines().collect()
    }

    #[test]
    fn the_default_captures_every_tcp_connection_both_ways() {
        let v4 = CaptureRules::default().render(Family::V4);
        assert_eq!(
            lines(&v4),
            [
                "*nat",
                ":MESH_INBOUND - [0:0]",
                ":MESH_REDIRECT - [0:0]",
                ":MESH_IN_REDIRECT - [0:0]",
                ":MESH_OUTPUT - [0:0]",
                "-A MESH_INBOUND -p tcp --dport 15008 -j RETURN",
                "-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
                "-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
                "-A PREROUTING -p tcp -j MESH_INBOUND",
                "-A MESH_INBOUND -p tcp --dport 15020 -j RETURN",
                "-A MESH_INBOUND -p tcp --dport 15021 -j RETURN",
                "-A MESH_INBOUND -p tcp --dport 15090 -j RETURN",
                "-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT",
                "-A OUTPUT -p tcp -j MESH_OUTPUT",
                "-A MESH_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
                "-A MESH_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j MESH_IN_REDIRECT",
                "-A MESH_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
                "-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN",
                "-A MESH_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j MESH_IN_REDIRECT",
                "-A MESH_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
                "-A MESH_OUTPUT -m owner --gid-owner 1337 -j RETURN",
                "-A MESH_OUTPUT -d 127.0.0.1/32 -j RETURN",
                "-A MESH_OUTPUT -j MESH_REDIRECT",
                "COMMIT",
            ]
        );
        let v6 = CaptureRules::default().render(Family::V6);
        assert!(v6.contains("-A MESH_OUTPUT -o lo -s ::6/128 -j RETURN"), "{v6}");
        assert!(v6.contains("-A MESH_OUTPUT -d ::1/128 -j RETURN"), "{v6}");
        assert!(!v6.contains("127.0.0"), "{v6}");
    }

    #[test]
    fn ranges_ports_and_dns() {
        let rules = CaptureRules {
            include_inbound_ports: Set::Only(vec![9080, 9443]),
            include_outbound_ranges: Set::Only(vec![
                Cidr::parse("10.96.0.0/12").unwrap(),
                Cidr::parse("fd00::/8").unwrap(),
            ]),
            exclude_outbound_ranges: vec![Cidr::parse("10.96.0.10/32").unwrap()],
            exclude_outbound_ports: vec![5432, 6379],
            capture_dns: true,
            ..CaptureRules::default()
        };
        let v4 = rules.render(Family::V4);
        for want in [
            "-A MESH_INBOUND -p tcp --dport 9080 -j MESH_IN_REDIRECT",
            "-A MESH_INBOUND -p tcp --dport 9443 -j MESH_IN_REDIRECT",
            "-A MESH_OUTPUT -p tcp -m multiport --dports 5432,6379 -j RETURN",
            "-A MESH_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m multiport ! --dports 53,15008 -m owner --uid-owner 1337 -j MESH_IN_REDIRECT",
            "-A MESH_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --uid-owner 1337 -j RETURN",
            "-A MESH_OUTPUT -p tcp --dport 53 -j REDIRECT --to-ports 15053",
            "-A MESH_OUTPUT -d 10.96.0.10/32 -j RETURN",
            "-A MESH_OUTPUT -d 10.96.0.0/12 -j MESH_REDIRECT",
            "-A MESH_OUTPUT -j RETURN",
            "-A OUTPUT -p udp --dport 53 -j MESH_OUTPUT_DNS",
            "-A MESH_OUTPUT_DNS -p udp --dport 53 -m owner --uid-owner 1337 -j RETURN",
            "-A MESH_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-ports 15053",
            "*raw",
            ":MESH_INBOUND_DNS - [0:0]",
            "-A MESH_OUTPUT_DNS -p udp --sport 15053 -m owner --gid-owner 1337 -j CT --zone 2",
            "-A MESH_INBOUND_DNS -p udp --sport 53 -j CT --zone 1",
        ] {
            assert!(lines(&v4).contains(&want), "missing {want:?} in\n{v4}");
        }
        // Inbound by list: the exclusions do not apply; no `*` catch-all.
        assert!(!v4.contains("--dport 15020"), "{v4}");
        assert!(!v4.contains("-A MESH_OUTPUT -j MESH_REDIRECT"), "{v4}");
        // Each family keeps its own ranges.
        assert!(!v4.contains("fd00::/8"), "{v4}");
        let v6 = rules.render(Family::V6);
        assert!(lines(&v6).contains(&"-A MESH_OUTPUT -d fd00::/8 -j MESH_REDIRECT"), "{v6}");
        assert!(!v6.contains("10.96"), "{v6}");
    }

    #[test]
    fn nothing_included_captures_nothing_but_the_chains() {
        let rules = CaptureRules {
            include_inbound_ports: Set::Only(vec![]),
            include_outbound_ranges: Set::Only(vec![]),
            ..CaptureRules::default()
        };
        let v4 = rules.render(Family::V4);
        assert!(!v4.contains("PREROUTING") && !v4.contains("-j MESH_REDIRECT"), "{v4}");
    }

    #[test]
    fn cleanup_removes_exactly_ours() {
        // As iptables-save prints it, with a rule and a chain that are not ours.
        let saved = "# Generated by iptables-save v1.8.9
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:MESH_OUTPUT_DNS - [0:0]
-A OUTPUT -p udp -j MESH_OUTPUT_DNS
-A MESH_OUTPUT_DNS -p udp -m udp --dport 53 -j CT --zone 2
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE_THING - [0:0]
:MESH_OUTPUT - [0:0]
:MESH_REDIRECT - [0:0]
-A PREROUTING -j KUBE_THING
-A OUTPUT -p tcp -j MESH_OUTPUT
-A MESH_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A MESH_OUTPUT -j MESH_REDIRECT
-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
";
        assert_eq!(
            lines(&cleanup(saved)),
            [
                "*raw",
                "-D OUTPUT -p udp -j MESH_OUTPUT_DNS",
                "-F MESH_OUTPUT_DNS",
                "-X MESH_OUTPUT_DNS",
                "COMMIT",
                "*nat",
                "-D OUTPUT -p tcp -j MESH_OUTPUT",
                "-F MESH_OUTPUT",
                "-F MESH_REDIRECT",
                "-X MESH_OUTPUT",
                "-X MESH_REDIRECT",
                "COMMIT",
            ]
        );
        assert_eq!(cleanup("*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j KUBE_THING\nCOMMIT\n"), "");
    }

    #[test]
    fn every_chain_a_rule_names_is_declared() {
        let rules = CaptureRules { capture_dns: true, ..CaptureRules::default() };
        for family in [Family::V4, Family::V6] {
            let text = rules.render(family);
            let mut table = "";
            let mut declared: Vec<&str> = Vec::new();
            for l in text.lines() {
                if let Some(t) = l.strip_prefix('*') {
                    (table, declared) = (t, Vec::new());
                } else if let Some(c) = l.strip_prefix(':') {
                    declared.push(c.split_whitespace().next().unwrap());
                } else if let Some(r) = l.strip_prefix("-A ") {
                    let words: Vec<&str> = r.split_whitespace().collect();
                    let target = words.iter().skip_while(|w| **w != "-j").nth(1).copied().unwrap();
                    for c in [words[0], target].into_iter().filter(|c| c.starts_with("MESH_")) {
                        assert!(declared.contains(&c), "{table}: {c} used undeclared in\n{text}");
                    }
                }
            }
        }
    }
}
