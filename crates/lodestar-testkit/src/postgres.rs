//! A throwaway PostgreSQL cluster for the tests and benchmarks: `initdb` and `pg_ctl` from the machine's
//! PostgreSQL binaries, in a temporary directory, on a free port of 127.0.0.1, with password
//! (SCRAM) authentication, TLS with a certificate authority of its own (or none, for a second
//! cluster with `ssl = off`), and every statement logged.
//!
//! The tests of one run share a cluster while any of them holds it (each test makes its own
//! database); when the last one lets go, the server is stopped and its directory removed, even
//! if tests failed. A cluster left behind by a killed run is removed by the next one.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tempfile::TempDir;

/// The role the tests and the connector log in as: the cluster's bootstrap superuser, whose
/// password `initdb` reads from a file, so that no statement in the server log carries it.
pub const USER: &str = "lodestar_app";
pub const PASSWORD: &str = "app-pw-d41c9a7e";
/// A prefix of the cluster directories, to find those left by a killed run.
const DIR_PREFIX: &str = "lodestar-pg-";

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    dir: TempDir,
    bin: PathBuf,
    pub port: u16,
    /// Whether server commands run as the `postgres` user (PostgreSQL refuses root).
    as_postgres: bool,
}

/// The cluster, started if no test holds one. It offers TLS with a certificate for
/// `localhost` and `127.0.0.1` signed by its own certificate authority ([`Cluster::ca_file`]).
pub fn cluster() -> Arc<Cluster> {
    static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    shared(&SHARED, Tls::On)
}

/// A second cluster, with `ssl = off`, started if no test holds one.
pub fn cluster_without_tls() -> Arc<Cluster> {
    static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    shared(&SHARED, Tls::Off)
}

fn shared(slot: &Mutex<Weak<Cluster>>, tls: Tls) -> Arc<Cluster> {
    let mut shared = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cluster) = shared.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(Cluster::start(tls));
    *shared = Arc::downgrade(&cluster);
    cluster
}

/// Whether a cluster offers TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    On,
    Off,
}

/// A database of its own for one test, owned by [`USER`].
#[derive(Debug)]
pub struct Database {
    pub cluster: Arc<Cluster>,
    pub name: String,
}

impl Database {
    /// A new, empty database named after `label`, on the shared cluster.
    pub fn new(label: &str) -> Database {
        Database::new_on(cluster(), label)
    }

    /// A new, empty database named after `label`, on `cluster`.
    pub fn new_on(cluster: Arc<Cluster>, label: &str) -> Database {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{label}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        cluster.psql("postgres", &format!("CREATE DATABASE {name}"));
        Database { cluster, name }
    }

    /// Runs SQL on the database; panics with the output if it fails.
    pub fn run(&self, sql: &str) -> String {
        self.cluster.psql(&self.name, sql)
    }

    /// `psql` logged in to this database.
    pub fn psql_command(&self) -> Command {
        self.cluster.psql_command(&self.name)
    }

    /// A connection URL for the connector, with the password.
    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{}",
            self.cluster.port, self.name
        )
    }

    /// The server's whole log.
    pub fn cluster_log(&self) -> PathBuf {
        self.cluster.log_file()
    }

    /// The server log lines of sessions on this database.
    pub fn log(&self) -> Vec<String> {
        let marker = format!(" db={} ", self.name);
        let text = fs_err::read_to_string(self.cluster.log_file()).unwrap_or_default();
        // A statement's DETAIL line (its parameters) follows it with the same prefix.
        text.lines()
            .filter(|l| l.contains(&marker))
            .map(str::to_string)
            .collect()
    }
}

impl Cluster {
    fn start(tls: Tls) -> Cluster {
        remove_abandoned();
        let bin = postgres_bin();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .expect("cannot create a directory for PostgreSQL");
        fs_err::write(dir.path().join("owner"), std::process::id().to_string()).unwrap();
        fs_err::write(dir.path().join("pwfile"), PASSWORD).unwrap();
        let data = dir.path().join("data");
        let mut cluster = Cluster {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        if as_postgres {
            cluster.chown_to_postgres(cluster.dir.path());
        }
        cluster.server_command("initdb", |cmd| {
            cmd.arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    USER,
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ])
                .arg(format!(
                    "--pwfile={}",
                    cluster.dir.path().join("pwfile").display()
                ));
        });
        let ssl = match tls {
            Tls::On => {
                cluster.make_certificate(&data);
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
            }
            Tls::Off => "ssl = off\n",
        };
        let settings = format!(
            "\n# Lodestar tests\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 32MB\n\
             max_connections = 200\nlc_messages = 'C'\nlog_statement = 'all'\n\
             log_line_prefix = '%m [%p] db=%d app=%a '\n{ssl}",
            cluster.dir.path().display()
        );
        let conf = data.join("postgresql.conf");
        let mut text = fs_err::read_to_string(&conf).unwrap();
        text.push_str(&settings);
        fs_err::write(&conf, text).unwrap();

        // Another process may take the port between choosing it and binding it: try again.
        let mut last_error = String::new();
        for _ in 0..5 {
            cluster.port = free_port();
            match cluster.pg_ctl_start(&data) {
                Ok(()) => return cluster,
                Err(e) => last_error = e,
            }
        }
        panic!("PostgreSQL did not start:\n{last_error}");
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// `pg_ctl start`, its output in a file: the server it starts inherits nothing we wait on.
    fn pg_ctl_start(&self, data: &Path) -> Result<(), String> {
        let out_file = self.dir.path().join("pg_ctl.out");
        let out = fs_err::File::create(&out_file).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = self.server(&self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(data)
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60"])
            .arg("-o")
            .arg(format!("-p {}", self.port))
            .arg("start")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.into_parts().0))
            .stderr(Stdio::from(err.into_parts().0));
        let status = cmd
            .status()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl start: {status}\n{}\n{}",
                fs_err::read_to_string(&out_file).unwrap_or_default(),
                fs_err::read_to_string(self.log_file()).unwrap_or_default()
            ))
        }
    }

    /// A command of the server's binaries, as the `postgres` user when running as root.
    fn server(&self, program: &Path) -> Command {
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }

    fn server_command(&self, name: &str, args: impl FnOnce(&mut Command)) {
        let mut cmd = self.server(&self.bin.join(name));
        args(&mut cmd);
        let output = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        assert!(
            output.status.success(),
            "{name} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The PEM file of the certificate authority that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A certificate authority (its PEM file in the cluster's directory) and the server's
    /// certificate for `localhost` and `127.0.0.1` signed by it, so the server offers TLS that
    /// a client can verify.
    fn make_certificate(&self, data: &Path) {
        let dir = self.dir.path();
        let ca_key = dir.join("ca.key");
        make_ca(&ca_key, &self.ca_file(), "Lodestar test CA");
        let csr = dir.join("server.csr");
        openssl(|cmd| {
            cmd.args(["req", "-new", "-nodes", "-subj", "/CN=localhost"])
                .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
                .arg("-keyout")
                .arg(data.join("server.key"))
                .arg("-out")
                .arg(&csr);
        });
        let extensions = dir.join("server.ext");
        fs_err::write(
            &extensions,
            "subjectAltName = DNS:localhost, IP:127.0.0.1\nbasicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        openssl(|cmd| {
            cmd.args(["x509", "-req", "-days", "2", "-set_serial", "2"])
                .arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(self.ca_file())
                .arg("-CAkey")
                .arg(&ca_key)
                .arg("-extfile")
                .arg(&extensions)
                .arg("-out")
                .arg(data.join("server.crt"));
        });
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs_err::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        if self.as_postgres {
            self.chown_to_postgres(&data.join("server.key"));
            self.chown_to_postgres(&data.join("server.crt"));
        }
    }

    fn chown_to_postgres(&self, path: &Path) {
        let id = |flag: &str| -> u32 {
            let out = Command::new("id")
                .args([flag, "postgres"])
                .output()
                .expect("cannot run id");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("running as root needs a `postgres` user to run the server as")
        };
        #[cfg(unix)]
        std::os::unix::fs::chown(path, Some(id("-u")), Some(id("-g"))).unwrap();
        #[cfg(not(unix))]
        let _ = (path, id);
    }

    /// `psql` logged in to `db` as [`USER`], without TLS, reading no `.psqlrc`.
    pub fn psql_command(&self, db: &str) -> Command {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args(["-X", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", USER, "-d", db])
            .env("PGPASSWORD", PASSWORD)
            .env("PGSSLMODE", "disable")
            .env_remove("PGHOST")
            .env_remove("PGOPTIONS");
        cmd
    }

    /// Runs SQL on `db` (a script, from standard input); panics with the output if it fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut child = self
            .psql_command(db)
            .args(["-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run psql");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("piped");
            stdin
                .write_all(sql.as_bytes())
                .expect("psql reads its script");
        }
        let output = child.wait_with_output().expect("psql runs");
        assert!(
            output.status.success(),
            "psql failed on `{}`:\n{}",
            sql.chars().take(500).collect::<String>(),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.port != 0 {
            let mut cmd = self.server(&self.bin.join("pg_ctl"));
            let _ = cmd
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // The TempDir removes the directory.
    }
}

/// A certificate authority unrelated to any cluster's: its PEM certificate at `cert` (its key
/// beside it), for tests of a client that must refuse a server it does not sign for.
pub fn other_ca(cert: &Path) {
    make_ca(&cert.with_extension("key"), cert, "Some other CA");
}

fn make_ca(key: &Path, cert: &Path, name: &str) {
    openssl(|cmd| {
        cmd.args(["req", "-x509", "-nodes", "-days", "2", "-subj"])
            .arg(format!("/CN={name}"))
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(key)
            .arg("-out")
            .arg(cert);
    });
}

/// Runs the `openssl` command line; panics with its output if it fails.
fn openssl(args: impl FnOnce(&mut Command)) {
    let mut cmd = Command::new("openssl");
    args(&mut cmd);
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .expect("cannot run openssl to make the test server's TLS certificates");
    assert!(
        output.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The directory of `initdb`, `pg_ctl` and `psql`: `LODESTAR_PG_BIN`, `pg_config --bindir`, or
/// the newest `/usr/lib/postgresql/*/bin` (Debian's layout).
pub fn postgres_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("LODESTAR_PG_BIN") {
        return PathBuf::from(dir);
    }
    let has_initdb = |dir: &Path| dir.join("initdb").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_initdb(&dir) {
            return dir;
        }
    }
    let mut found: Vec<(u32, PathBuf)> = fs_err::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    has_initdb(&bin).then_some((version, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().map(|(_, dir)| dir).expect(
        "no PostgreSQL server binaries (initdb) found: install them (`apt-get install postgresql`) or set LODESTAR_PG_BIN",
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// Stops and removes clusters whose test run is gone (killed before it could clean up).
fn remove_abandoned() {
    let Ok(entries) = fs_err::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        let Some(pid) = is_ours
            .then(|| fs_err::read_to_string(path.join("owner")).ok())
            .flatten()
        else {
            continue;
        };
        let alive = Path::new("/proc").join(pid.trim()).exists();
        if alive || !Path::new("/proc/self").exists() {
            continue;
        }
        let bin = postgres_bin();
        let mut cmd = if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(bin.join("pg_ctl"));
            cmd
        } else {
            Command::new(bin.join("pg_ctl"))
        };
        let _ = cmd
            .arg("-D")
            .arg(path.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = fs_err::remove_dir_all(&path);
    }
}
