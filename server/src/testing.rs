//! Test support: a throw-away PostgreSQL cluster for the PostgreSQL backend's tests, and a
//! throw-away `nats-server` for the tests of several instances ([`NatsServer`]).
//!
//! Not for production use; public so the integration tests in `tests/` can start one too.
//!
//! [`PgCluster::start`] runs Debian's `initdb` and `pg_ctl` (found in `QPQ_PG_BIN`, then in
//! `/usr/lib/postgresql/<version>/bin`, then on `PATH`) in a new temp directory, listening only
//! on a Unix socket in that directory, so clusters of parallel test processes never meet.
//! When the process is root the cluster runs as the `postgres` user (PostgreSQL refuses to run
//! as root). A small shell keeps the cluster: when the test process exits, however it exits,
//! its stdin closes and the shell stops the cluster and removes the directory.
//!
//! Every user logs in without a password over the socket, except the role
//! `qpq_password_user` (a test may create it), which must give its password: the tests of
//! refused credentials use it.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The server's settings (after `-k <socket dir>`): socket only, room for parallel tests,
/// and `fsync` on, so a commit means what it means in production.
const SERVER_OPTIONS: &str = "-c listen_addresses= -c max_connections=400 -c fsync=on";

/// A running throw-away PostgreSQL cluster.
pub struct PgCluster {
    /// The cluster's directory: `data/` and the socket.
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    /// The keeper shell; closing its stdin stops the cluster.
    keeper: Mutex<Option<(Child, ChildStdin)>>,
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster").field("dir", &self.dir).finish()
    }
}

/// Where the PostgreSQL server binaries are, if anywhere.
pub fn pg_bin() -> Option<PathBuf> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) = std::env::var_os("QPQ_PG_BIN").map(PathBuf::from) {
        return has(&d).then_some(d);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| has(d))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

impl PgCluster {
    /// Starts a new cluster (blocking: `initdb` takes about a second). `Err` says why not,
    /// e.g. that the binaries are missing.
    pub fn start() -> Result<Self, String> {
        let bin = pg_bin().ok_or_else(|| {
            "PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's `postgresql` \
             or set QPQ_PG_BIN"
                .to_string()
        })?;
        let as_postgres = is_root();
        let script = format!(
            r#"set -e
dir=$(mktemp -d /tmp/qpq-pg.XXXXXX)
"{bin}/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || {{ cat "$dir/initdb.log" >&2; exit 1; }}
sed -i '1i local all qpq_password_user scram-sha-256' "$dir/data/pg_hba.conf"
"{bin}/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "-k $dir {options}" start >/dev/null
echo "$dir"
set +e
read -r _
"{bin}/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1
rm -rf "$dir"
"#,
            bin = bin.display(),
            options = SERVER_OPTIONS,
        );
        let mut cmd = if as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run the PostgreSQL keeper shell: {e}"))?;
        let stdin = child.stdin.take().ok_or("keeper without stdin")?;
        let stdout = child.stdout.take().ok_or("keeper without stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("keeper shell: {e}"))?;
        let dir = PathBuf::from(line.trim());
        if line.trim().is_empty() {
            let status = child.wait().map_err(|e| e.to_string())?;
            return Err(format!("the PostgreSQL cluster did not start ({status})"));
        }
        Ok(Self {
            dir,
            bin,
            as_postgres,
            keeper: Mutex::new(Some((child, stdin))),
        })
    }

    /// The one cluster of this test process, started on first use.
    pub fn shared() -> Result<&'static PgCluster, String> {
        static SHARED: OnceLock<Result<PgCluster, String>> = OnceLock::new();
        SHARED
            .get_or_init(PgCluster::start)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The connection string of database `db` (key-value form, over the socket).
    pub fn url(&self, db: &str) -> String {
        format!("host={} user=postgres dbname={db}", self.dir.display())
    }

    /// The same as a `postgres://` URL (the socket directory percent-encoded as the host).
    pub fn postgres_url(&self, db: &str) -> String {
        let host: String = self
            .dir
            .display()
            .to_string()
            .bytes()
            .map(|b| match b {
                b'/' => "%2F".to_string(),
                b => (b as char).to_string(),
            })
            .collect();
        format!("postgres://postgres@{host}/{db}")
    }

    /// Creates a new, empty database and answers its name (blocking: runs `createdb`).
    pub fn create_database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = self.client_tool("createdb", &[&name]);
        assert!(
            out.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        name
    }

    /// Creates a new database as a copy of `from` and answers its name. Connections to
    /// `from` are ended first: its server must be stopped.
    pub fn copy_database(&self, from: &str) -> String {
        let name = self.create_database();
        assert!(self.client_tool("dropdb", &[&name]).status.success());
        // A stopped in-process server's pool may still hold idle connections for a moment.
        let terminate = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{from}'"
        );
        let _ = self.client_tool("psql", &["-d", "postgres", "-qAt", "-c", &terminate]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let out = self.client_tool("createdb", &["-T", from, &name]);
            if out.status.success() {
                return name;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "createdb -T {from}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The database name in a URL made by [`postgres_url`](Self::postgres_url).
    pub fn database_of(url: &str) -> &str {
        url.rsplit('/').next().unwrap_or(url)
    }

    /// Runs one of PostgreSQL's client programs against this cluster as `postgres`.
    fn client_tool(&self, program: &str, args: &[&str]) -> std::process::Output {
        Command::new(self.bin.join(program))
            .arg("-h")
            .arg(&self.dir)
            .args(["-U", "postgres"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"))
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.dir.join("data");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            Command::new(&pg_ctl)
        };
        let out = cmd
            .arg("-D")
            .arg(&data)
            .args(args)
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Stops the cluster at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop_immediate(&self) -> Result<(), String> {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"])
    }

    /// Starts the cluster again after [`stop_immediate`](Self::stop_immediate).
    pub fn restart(&self) -> Result<(), String> {
        let log = self.dir.join("log");
        let opts = format!("-k {} {SERVER_OPTIONS}", self.dir.display());
        self.pg_ctl(&["-l", &log.display().to_string(), "-w", "-o", &opts, "start"])
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some((mut child, mut stdin)) = self.keeper.lock().ok().and_then(|mut k| k.take()) {
            let _ = stdin.write_all(b"\n");
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// A throw-away `nats-server` for the instance-bus tests, on a free loopback port.
///
/// The binary is found in `QPQ_NATS_BIN`, then on `PATH`, then as Debian installs it. As with
/// [`PgCluster`], a keeper shell holds the server: it stops when the test process exits,
/// however it exits. [`NatsServer::stop`] and [`NatsServer::start_again`] take it away and
/// bring it back on the same port (a NATS outage).
pub struct NatsServer {
    port: u16,
    keeper: Mutex<(Child, ChildStdin, BufReader<std::process::ChildStdout>)>,
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("port", &self.port)
            .finish()
    }
}

fn nats_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("QPQ_NATS_BIN") {
        return Some(PathBuf::from(bin));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

impl NatsServer {
    /// Starts a server; `Err` says what is missing.
    pub fn start() -> Result<Self, String> {
        let bin = nats_bin().ok_or_else(|| {
            "nats-server not found; install Debian's `nats-server` or set QPQ_NATS_BIN".to_string()
        })?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let script = format!(
            r#"log=$(mktemp /tmp/qpq-nats.XXXXXX)
up() {{ "{bin}" -a 127.0.0.1 -p {port} >>"$log" 2>&1 & pid=$!; }}
up
while read -r cmd; do
  case "$cmd" in
    stop) kill "$pid"; wait "$pid" 2>/dev/null ;;
    start) up ;;
  esac
  echo done
done
kill "$pid" 2>/dev/null
rm -f "$log"
"#,
            bin = bin.display(),
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run the nats-server keeper shell: {e}"))?;
        let stdin = child.stdin.take().ok_or("keeper without stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("keeper without stdout")?);
        let server = Self {
            port,
            keeper: Mutex::new((child, stdin, stdout)),
        };
        server.wait_listening()?;
        Ok(server)
    }

    /// The URL instances connect to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn command(&self, cmd: &str) -> Result<(), String> {
        let mut keeper = self.keeper.lock().unwrap_or_else(|p| p.into_inner());
        let (_, stdin, stdout) = &mut *keeper;
        writeln!(stdin, "{cmd}").map_err(|e| format!("keeper shell: {e}"))?;
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .map_err(|e| format!("keeper shell: {e}"))?;
        Ok(())
    }

    fn wait_listening(&self) -> Result<(), String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if std::time::Instant::now() > deadline {
                return Err(format!("nats-server did not listen on port {}", self.port));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the server (clients see it gone) until [`NatsServer::start_again`].
    pub fn stop(&self) -> Result<(), String> {
        self.command("stop")
    }

    /// Starts the server again on the same port and waits until it listens.
    pub fn start_again(&self) -> Result<(), String> {
        self.command("start")?;
        self.wait_listening()
    }
}
