//! Runs the real PostgreSQL (`$PG_BIN`, `PATH` or `/usr/lib/postgresql/*/bin`): these tests
//! fail, never skip, when it is missing.

use std::net::TcpStream;
use std::time::Duration;

use actormesh_testkit::Postgres;

fn postgres() -> Postgres {
    Postgres::start().expect("the PostgreSQL tests need a real PostgreSQL")
}

fn connects(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok()
}

#[test]
fn starts_ready_on_a_loopback_port() {
    let pg = postgres();
    assert!(pg.is_ready());
    assert!(connects(pg.port()), "no TCP connection to {}", pg.port());
    assert_eq!(
        pg.conninfo(),
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            pg.port()
        )
    );
    assert!(pg.data_dir().starts_with(pg.dir()));
    assert!(pg.data_dir().join("PG_VERSION").is_file());
    assert!(pg.log_path().starts_with(pg.dir()));
    assert!(pg.bin_dir().join("initdb").is_file());
    // The Unix socket is in the directory too (`-k`).
    let socket = pg.dir().join(format!(".s.PGSQL.{}", pg.port()));
    assert!(socket.exists(), "{} is missing", socket.display());
}

#[test]
fn restart_keeps_the_port_and_the_cluster() {
    let mut pg = postgres();
    let port = pg.port();
    let conninfo = pg.conninfo();

    pg.stop();
    assert!(!pg.is_ready());
    assert!(!connects(port), "postgres still listens on {port}");
    assert!(
        pg.data_dir().join("PG_VERSION").is_file(),
        "stop keeps the cluster"
    );
    pg.start_again().unwrap();
    assert!(pg.is_ready());
    assert_eq!(pg.port(), port);

    pg.restart().unwrap();
    assert!(pg.is_ready());
    assert!(connects(port));
    assert_eq!(pg.conninfo(), conninfo);
    // Three starts, one log.
    let log = std::fs::read_to_string(pg.log_path()).unwrap();
    assert_eq!(
        log.matches("ready to accept connections").count(),
        3,
        "{log}"
    );
}

#[test]
fn start_again_while_running_is_an_error() {
    let mut pg = postgres();
    let err = pg.start_again().unwrap_err();
    assert!(err.to_string().contains("already running"), "{err}");
    assert!(pg.is_ready());
}

#[test]
fn drop_stops_postgres_and_removes_the_dir() {
    let pg = postgres();
    let dir = pg.dir().to_path_buf();
    let port = pg.port();
    assert!(dir.is_dir());
    drop(pg);
    assert!(!dir.exists(), "{} was left behind", dir.display());
    assert!(!connects(port), "postgres still listens on {port}");
}

#[test]
fn instances_are_independent() {
    let a = postgres();
    let b = postgres();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    drop(a);
    assert!(b.is_ready());
}
