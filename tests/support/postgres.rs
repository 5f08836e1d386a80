//! A throwaway PostgreSQL server for the tests, started by the test itself: `initdb` into a
//! temporary directory and `pg_ctl start` on a free loopback port. As root, the server runs as
//! the `postgres` user (PostgreSQL refuses to run as root). Outages: [`Postgres::stop`], then
//! [`Postgres::start_again`]; [`Postgres::restart`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// A running PostgreSQL cluster, stopped on drop.
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    as_root: bool,
    port: u16,
    // The server's options (port, socket directory, TLS), for each start.
    options: String,
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().expect(
        "PostgreSQL server binaries not found under /usr/lib/postgresql: apt-get install postgresql",
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Postgres {
    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = command.args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn data(&self) -> &Path {
        self.dir.path()
    }

    /// Starts a new cluster.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a new cluster that accepts TCP connections over TLS only, with `server` (a
    /// certificate for 127.0.0.1) as its certificate.
    pub fn start_tls(server: &super::pki::Pair) -> Self {
        Self::start_with(Some(server))
    }

    fn start_with(tls: Option<&super::pki::Pair>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("streamgate-pg")
            .tempdir()
            .unwrap();
        let as_root = is_root();
        if as_root {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let port = super::free_port();
        let mut pg = Postgres {
            dir,
            bin: bin_dir(),
            as_root,
            port,
            options: String::new(),
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        };
        let data = pg.data().display().to_string();
        pg.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        let mut options = format!("-p {port} -h 127.0.0.1 -k {data} -F");
        if let Some(pair) = tls {
            // Into the data directory, owned by the server's user, the key private to it.
            let (cert, key) = (pg.data().join("server.crt"), pg.data().join("server.key"));
            std::fs::copy(&pair.cert, &cert).unwrap();
            std::fs::copy(&pair.key, &key).unwrap();
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            std::fs::write(
                pg.data().join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
            if as_root {
                let status = Command::new("chown")
                    .args(["postgres:postgres"])
                    .args([&cert, &key, &pg.data().join("pg_hba.conf")])
                    .status()
                    .unwrap();
                assert!(status.success());
            }
            options += " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key";
        }
        pg.options = options;
        pg.start_again();
        pg
    }

    /// `127.0.0.1:PORT`, where the server listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The URL of the same database through `addr` (e.g. a [`super::faultproxy::FaultProxy`]).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        format!("postgres://postgres@{addr}/postgres")
    }

    /// Stops the server at once (`-m immediate`), as a crash or an outage would: its clients'
    /// connections drop and new ones are refused.
    pub fn stop(&self) {
        let data = self.data().display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }

    /// Starts the server (again, after [`Postgres::stop`]) and waits until it accepts
    /// connections.
    pub fn start_again(&self) {
        self.pg_ctl(&["-w", "start"]);
    }

    /// `pg_ctl restart`: a fast shutdown (every session is ended, its transaction rolled back),
    /// then a start; returns once the server accepts connections again.
    pub fn restart(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "restart"]);
    }

    /// `pg_ctl` on this cluster, with the server's options and log, then `args`.
    fn pg_ctl(&self, args: &[&str]) {
        let data = self.data().display().to_string();
        let log = format!("{data}/log");
        let mut all = vec!["-D", &data, "-o", &self.options, "-l", &log];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let program = self.bin.join("pg_ctl");
        let mut command = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "stop"])
            .output();
    }
}
