//! `mesh-sidecar iptables`: the capture rules put in force in the current network namespace,
//! as Istio's `istio-iptables` (and Linkerd's `proxy-init`) do in a pod's init step. The
//! flags are istio-iptables' where it has them (its short forms too).

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use mesh_core::cidr::Cidr;

use super::rules::{CaptureRules, Family, PROXY_PORTS, Set, cleanup};

/// `mesh-sidecar iptables`'s flags.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "cli", derive(clap::Parser))]
#[cfg_attr(feature = "cli", command(name = "mesh-sidecar iptables", version))]
pub struct IptablesArgs {
    /// The outbound capture port, where every captured outbound TCP connection goes.
    #[cfg_attr(feature = "cli", arg(long, short = 'p', visible_alias = "envoy-port", default_value_t = 15001))]
    pub outbound_port: u16,

    /// The inbound capture port, where every captured inbound TCP connection goes.
    #[cfg_attr(
        feature = "cli",
        arg(long, short = 'z', visible_alias = "inbound-capture-port", default_value_t = 15006)
    )]
    pub inbound_port: u16,

    /// The DNS proxy's port (`--capture-dns`).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = 15053))]
    pub dns_port: u16,

    /// The proxy's user IDs (comma-separated): their connections are never captured.
    #[cfg_attr(feature = "cli", arg(long, short = 'u', value_delimiter = ',', default_value = "1337"))]
    pub proxy_uid: Vec<u32>,

    /// The proxy's group IDs (comma-separated).
    #[cfg_attr(feature = "cli", arg(long, short = 'g', value_delimiter = ',', default_value = "1337"))]
    pub proxy_gid: Vec<u32>,

    /// Inbound ports to capture: `*` (every one but the excluded) or a comma-separated list;
    /// empty: none.
    #[cfg_attr(feature = "cli", arg(long, short = 'b', default_value = "*", value_name = "PORTS"))]
    pub include_inbound_ports: String,

    /// Inbound ports never captured (with `*`), besides the proxy's own (15008, 15020,
    /// 15021, 15090) and `--admin-port`.
    #[cfg_attr(feature = "cli", arg(long, short = 'd', default_value = "", value_name = "PORTS"))]
    pub exclude_inbound_ports: String,

    /// The sidecar's admin port, never captured inbound.
    #[cfg_attr(feature = "cli", arg(long, value_name = "PORT"))]
    pub admin_port: Option<u16>,

    /// Outbound destinations to capture: `*` or comma-separated CIDRs (IPv4 and IPv6);
    /// empty: none.
    #[cfg_attr(feature = "cli", arg(long, short = 'i', default_value = "*", value_name = "CIDRS"))]
    pub include_outbound_ip_ranges: String,

    /// Outbound destinations never captured (comma-separated CIDRs).
    #[cfg_attr(feature = "cli", arg(long, short = 'x', default_value = "", value_name = "CIDRS"))]
    pub exclude_outbound_ip_ranges: String,

    /// Outbound ports never captured (comma-separated).
    #[cfg_attr(feature = "cli", arg(long, short = 'o', default_value = "", value_name = "PORTS"))]
    pub exclude_outbound_ports: String,

    /// Send DNS (UDP and TCP port 53) to the DNS proxy at `--dns-port`, but the proxy's own.
    #[cfg_attr(feature = "cli", arg(long))]
    pub capture_dns: bool,

    /// Print the rules (`iptables-restore` input, IPv4 then IPv6) instead of applying them.
    #[cfg_attr(feature = "cli", arg(long, short = 'n'))]
    pub dry_run: bool,

    /// Remove every rule and chain these flags would make, and nothing else.
    #[cfg_attr(feature = "cli", arg(long))]
    pub cleanup: bool,
}

/// A flag value that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCapture {
    /// Not a port number.
    #[error("--{flag}: {value:?} is not a port number")]
    Port {
        /// The flag.
        flag: &'static str,
        /// The value.
        value: String,
    },
    /// Not an address or CIDR.
    #[error("--{flag}: {value:?} is not an IP address or CIDR")]
    Cidr {
        /// The flag.
        flag: &'static str,
        /// The value.
        value: String,
    },
}

/// Why the rules could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A flag value that does not parse.
    #[error(transparent)]
    Invalid(#[from] InvalidCapture),
    /// `iptables-save`/`iptables-restore` could not be run, or refused the rules.
    #[error("{command}: {message}")]
    Command {
        /// The command.
        command: &'static str,
        /// Its error output, or why it did not start.
        message: String,
    },
}

fn port_list(flag: &'static str, s: &str) -> Result<Vec<u16>, InvalidCapture> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().map_err(|_| InvalidCapture::Port { flag, value: p.to_string() }))
        .collect()
}

fn cidr_list(flag: &'static str, s: &str) -> Result<Vec<Cidr>, InvalidCapture> {
    s.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| Cidr::parse(c).ok_or_else(|| InvalidCapture::Cidr { flag, value: c.to_string() }))
        .collect()
}

impl IptablesArgs {
    /// The rules these flags ask for.
    pub fn rules(&self) -> Result<CaptureRules, InvalidCapture> {
        let include_inbound_ports = match self.include_inbound_ports.trim() {
            "*" => Set::All,
            list => Set::Only(port_list("include-inbound-ports", list)?),
        };
        let include_outbound_ranges = match self.include_outbound_ip_ranges.trim() {
            "*" => Set::All,
            list => Set::Only(cidr_list("include-outbound-ip-ranges", list)?),
        };
        let mut exclude_inbound_ports = PROXY_PORTS.to_vec();
        exclude_inbound_ports.extend(self.admin_port);
        for p in port_list("exclude-inbound-ports", &self.exclude_inbound_ports)? {
            if !exclude_inbound_ports.contains(&p) {
                exclude_inbound_ports.push(p);
            }
        }
        Ok(CaptureRules {
            outbound_port: self.outbound_port,
            inbound_port: self.inbound_port,
            dns_port: self.dns_port,
            proxy_uids: self.proxy_uid.clone(),
            proxy_gids: self.proxy_gid.clone(),
            include_inbound_ports,
            exclude_inbound_ports,
            include_outbound_ranges,
            exclude_outbound_ranges: cidr_list("exclude-outbound-ip-ranges", &self.exclude_outbound_ip_ranges)?,
            exclude_outbound_ports: port_list("exclude-outbound-ports", &self.exclude_outbound_ports)?,
            capture_dns: self.capture_dns,
        })
    }

    /// Do what the flags say: print, clean up, or put the rules in force (removing ours
    /// first, so running it twice leaves one set). What was done, for the log.
    pub fn run(&self) -> Result<String, CaptureError> {
        let rules = self.rules()?;
        if self.dry_run {
            let mut out = String::new();
            for family in families() {
                out.push_str(&format!("# {}\n{}", family.commands().0, rules.render(family)));
            }
            return Ok(out);
        }
        let mut done = Vec::new();
        for family in families() {
            let (restore, save) = family.commands();
            let saved = run(save, &[], None)?;
            let remove = cleanup(&saved);
            if !remove.is_empty() {
                run(restore, &["--noflush"], Some(&remove))?;
                done.push(format!("{restore}: removed the mesh's rules"));
            }
            if !self.cleanup {
                run(restore, &["--noflush"], Some(&rules.render(family)))?;
                done.push(format!("{restore}: the capture rules are in force"));
            }
        }
        Ok(done.join("\n"))
    }
}

/// IPv4, and IPv6 where the kernel has it.
fn families() -> Vec<Family> {
    let mut f = vec![Family::V4];
    if Path::new("/proc/net/if_inet6").exists() {
        f.push(Family::V6);
    }
    f
}

/// Run `command` with `args`, `input` on its stdin; its stdout.
fn run(command: &'static str, args: &[&str], input: Option<&str>) -> Result<String, CaptureError> {
    let fail = |message: String| CaptureError::Command { command, message };
    let mut child = Command::new(command)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run it ({e}); install iptables (Debian: apt-get install iptables)")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let mut message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if message.contains("Permission denied") || message.contains("Operation not permitted") {
            message.push_str(" (this needs CAP_NET_ADMIN in the network namespace: run it as root, or as an init container with NET_ADMIN and NET_RAW)");
        }
        return Err(fail(message));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `mesh-sidecar iptables ARGS...` (`args` without the program name and the subcommand).
#[cfg(feature = "cli")]
pub fn main(args: impl IntoIterator<Item = String>) -> std::process::ExitCode {
    use std::process::ExitCode;

    use clap::Parser;

    let argv = std::iter::once("mesh-sidecar iptables".to_string()).chain(args);
    let args = match IptablesArgs::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match args.run() {
        Ok(done) => {
            if !done.is_empty() {
                println!("{done}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mesh-sidecar iptables: {e}");
            ExitCode::from(1)
        }
    }
}
