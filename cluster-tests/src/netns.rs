//! Network namespaces for partition tests: a namespace with a veth pair to the host that a
//! test can cut, and a forwarder that lets processes inside reach the testkit's etcd (which
//! listens on loopback only). Needs root and `ip` (iproute2).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command as StdCommand;

/// Runs `ip` with `args`; its stdout, or its stderr as the error.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let output = StdCommand::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Why this machine cannot run the partition scenario, if it cannot.
pub fn partition_unsupported() -> Option<String> {
    match StdCommand::new("id").arg("-u").output() {
        Ok(out) if String::from_utf8_lossy(&out.stdout).trim() == "0" => {}
        Ok(out) => {
            return Some(format!(
                "not root (uid {}); network namespaces need root",
                String::from_utf8_lossy(&out.stdout).trim()
            ))
        }
        Err(e) => return Some(format!("cannot run `id -u`: {e}")),
    }
    match StdCommand::new("ip").args(["netns", "list"]).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("`ip` (iproute2) is not available: {e}")),
    }
}

/// Which names and addresses a test's namespaces use, so that two test files running at the
/// same time never collide.
#[derive(Debug, Clone, Copy)]
pub struct NetnsPlan {
    /// The namespace name's prefix (the test process's pid follows).
    pub prefix: &'static str,
    /// Two letters starting the veth interfaces' names.
    pub tag: &'static str,
    /// The second octet of the 10.x.y.0/24 subnets.
    pub subnet: u8,
}

/// A network namespace with a veth pair to the host, deleted on drop.
#[derive(Debug)]
pub struct Partition {
    ns: String,
    host_if: String,
    /// The host's address on the pair.
    pub host_ip: Ipv4Addr,
    /// The namespace's address on the pair.
    pub ns_ip: Ipv4Addr,
}

impl Partition {
    /// Makes a namespace after `plan` (and removes those left by dead runs of the plan).
    pub fn create(plan: NetnsPlan) -> Result<Partition, String> {
        remove_stale_namespaces(plan.prefix);
        let subnet = plan.subnet;
        let tag = plan.tag;
        let pid = std::process::id();
        // A /24 no interface of this machine uses yet (another run may hold one).
        let addrs = ip(&["-o", "-4", "addr", "show"])?;
        let octet = (0..50u32)
            .map(|i| 20 + (pid + i) % 200)
            .find(|o| !addrs.contains(&format!("10.{subnet}.{o}.")))
            .ok_or(format!("no free 10.{subnet}.x.0/24 subnet"))?;
        let octet = u8::try_from(octet).map_err(|e| e.to_string())?;
        let partition = Partition {
            ns: format!("{}{pid}", plan.prefix),
            host_if: format!("{tag}h{pid}"),
            host_ip: Ipv4Addr::new(10, subnet, octet, 1),
            ns_ip: Ipv4Addr::new(10, subnet, octet, 2),
        };
        // From here on, drop cleans up whatever was made.
        let ns = partition.ns.as_str();
        let ns_if = format!("{tag}n{pid}");
        let host = format!("{}/24", partition.host_ip);
        let inside = format!("{}/24", partition.ns_ip);
        ip(&["netns", "add", ns])?;
        ip(&[
            "link",
            "add",
            &partition.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", ns])?;
        ip(&["addr", "add", &host, "dev", &partition.host_if])?;
        ip(&["link", "set", &partition.host_if, "up"])?;
        ip(&["-n", ns, "addr", "add", &inside, "dev", &ns_if])?;
        ip(&["-n", ns, "link", "set", &ns_if, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(partition)
    }

    /// The namespace's name (run a process in it with `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.ns
    }

    /// Cuts the link between the namespace and the host.
    pub fn cut(&self) -> Result<(), String> {
        ip(&["link", "set", &self.host_if, "down"]).map(|_| ())
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        // Deleting the namespace destroys the veth pair with it; the host end once more in
        // case the pair was made but not moved.
        let _ = ip(&["netns", "delete", &self.ns]);
        let _ = ip(&["link", "delete", &self.host_if]);
    }
}

/// Deletes namespaces left by runs of this test whose process is gone (e.g. killed).
fn remove_stale_namespaces(prefix: &str) {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name.strip_prefix(prefix) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "delete", name]);
        }
    }
}

/// Forwards TCP connections on `listen` to etcd on 127.0.0.1:`port` (the testkit's etcd only
/// listens on loopback, which a namespace cannot reach). Runs until the test's runtime ends.
pub async fn forward_to_etcd(listen: SocketAddr, port: u16) -> Result<SocketAddr, String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    actix_rt::spawn(async move {
        for _ in 0..10_000 {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            actix_rt::spawn(async move {
                let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok(addr)
}

/// The namespace of a partition test after `plan`, or `None` (with the reason printed) on a
/// machine that cannot make one: no `ip`, not root, or namespaces forbidden.
pub fn partition_or_skip(plan: NetnsPlan) -> Option<Partition> {
    if let Some(reason) = partition_unsupported() {
        eprintln!("partition test not run: {reason}");
        return None;
    }
    match Partition::create(plan) {
        Ok(p) => Some(p),
        Err(e) if e.contains("Operation not permitted") => {
            eprintln!("partition test not run: this machine forbids network namespaces: {e}");
            None
        }
        Err(e) => panic!("cannot set up the network namespace: {e}"),
    }
}
