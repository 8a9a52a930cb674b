//! Makes a development CA and node certificates for link TLS, with no `openssl` commands:
//!
//! ```text
//! cargo run -p actormesh-examples --bin dev_certs -- <dir> <cluster> <node id>...
//! ```
//!
//! writes `<dir>/ca.pem` and, for each node, `<dir>/<node>.pem` and `<dir>/<node>.key` (0600),
//! ready for `LinkTls::from_files`. Each run makes a new CA: give every node of a cluster
//! certificates from the same run (or keep the CA and add nodes with `actormesh::DevCa` in
//! code). For production, issue node certificates from your own CA, each naming its node id
//! as a DNS subject alternative name.

use std::path::PathBuf;
use std::process::ExitCode;

use actormesh::DevCa;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, cluster, nodes @ ..] = args.as_slice() else {
        eprintln!("usage: dev_certs <dir> <cluster> <node id>...");
        return ExitCode::from(2);
    };
    if nodes.is_empty() {
        eprintln!("usage: dev_certs <dir> <cluster> <node id>... (at least one node id)");
        return ExitCode::from(2);
    }
    let dir = PathBuf::from(dir);
    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let made = DevCa::new(cluster).and_then(|ca| ca.write(&dir, &nodes));
    match made {
        Ok(()) => {
            println!(
                "wrote {}/ca.pem and a certificate and key for {} node(s): {}",
                dir.display(),
                nodes.len(),
                nodes.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dev_certs: {e}");
            ExitCode::FAILURE
        }
    }
}
