//! A throw-away MariaDB server (Debian's `mariadb-server`, installed by `scripts/setup`), one
//! per test binary, on a free port with its own data folder; each test gets its own database
//! and user (`fresh_database`).

use std::path::PathBuf;
use std::process::Command as StdCommand;
use std::sync::OnceLock;
use std::time::Duration;

use ehr_share::stack::ManagedChild;

/// The running server.
pub struct MariaDb {
    pub port: u16,
    _child: ManagedChild,
}

static SERVER: OnceLock<MariaDb> = OnceLock::new();

fn program(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = PathBuf::from(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: run scripts/setup (it installs Debian's mariadb-server)");
}

/// Removes data folders of earlier test runs whose process is gone.
fn sweep_stale(base: &std::path::Path) {
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("ehr-test-mariadb-")
            && let Ok(pid) = pid.parse::<u32>()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The server (started once per test binary).
pub fn server() -> &'static MariaDb {
    SERVER.get_or_init(|| {
        std::thread::spawn(|| super::RT.block_on(start()))
            .join()
            .expect("mariadb fixture thread")
    })
}

async fn start() -> MariaDb {
    let base = std::env::temp_dir();
    sweep_stale(&base);
    let dir = base.join(format!("ehr-test-mariadb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    // MariaDB refuses to run as root unless told to (`--user=root`); /proc/self is owned by our uid.
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    let mut install = StdCommand::new(program("mariadb-install-db"));
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args([
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--innodb-log-file-size=4M",
        ]);
    if root {
        install.arg("--user=root");
    }
    let out = install.output().expect("mariadb-install-db");
    assert!(
        out.status.success(),
        "mariadb-install-db failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = super::quiet_port();
    let mut cmd = tokio::process::Command::new(program("mariadbd"));
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", dir.join("sock").display()))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .arg(format!("--port={port}"))
        .args([
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--innodb-log-file-size=4M",
            "--innodb-buffer-pool-size=32M",
            "--skip-log-bin",
        ]);
    if root {
        cmd.arg("--user=root");
    }
    let mut child = ManagedChild::spawn("mariadb", cmd, false).unwrap();
    child
        .wait_healthy(Duration::from_secs(60), || async move {
            StdCommand::new(program("mariadb"))
                .args(["--no-defaults", "-h127.0.0.1", "-uroot"])
                .arg(format!("-P{port}"))
                .args(["-e", "SELECT 1"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .await
        .unwrap_or_else(|e| panic!("MariaDB did not start: {e}"));
    eprintln!(
        "[fixture] MariaDB on 127.0.0.1:{port} (data {})",
        data.display()
    );
    MariaDb {
        port,
        _child: child,
    }
}

/// A new, empty database with its own user and password, as a deployment would have it;
/// returns its `mysql://` URL.
pub fn fresh_database() -> String {
    let s = server();
    let id = rand_core::RngCore::next_u32(&mut rand_core::OsRng);
    let (db, user, pw) = (
        format!("ehr_{id:08x}"),
        format!("ehr_{id:08x}"),
        format!("pw-{id:x}"),
    );
    let sql = format!(
        "CREATE DATABASE {db}; CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{pw}'; \
         GRANT CREATE, ALTER, INDEX, SELECT, INSERT, UPDATE, DELETE ON {db}.* TO '{user}'@'127.0.0.1';"
    );
    let out = StdCommand::new(program("mariadb"))
        .args(["--no-defaults", "-h127.0.0.1", "-uroot"])
        .arg(format!("-P{}", s.port))
        .args(["-e", &sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "creating database: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("mysql://{user}:{pw}@127.0.0.1:{}/{db}", s.port)
}
