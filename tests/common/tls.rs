//! TLS for the tests: a CA of a test's own with certificates it signs (rcgen), and a
//! PostgreSQL server of the test's own (`initdb` + `pg_ctl` as user postgres) whose files are
//! removed when it is dropped.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A CA whose certificate and the ones it signs are PEM files in `dir` (readable by the
/// broker's and the database's own users: it is a test's).
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    /// The CA's certificate.
    pub cert: PathBuf,
}

/// A certificate and its key, PEM files.
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// A new CA named `name`, its files in `dir` (made readable by all).
    pub fn new(dir: &Path, name: &str) -> Self {
        std::fs::create_dir_all(dir).expect("the CA's folder");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("the CA's certificate");
        let cert = dir.join(format!("{name}.pem"));
        write(&cert, &issuer.pem());
        Self {
            issuer,
            dir: dir.to_path_buf(),
            cert,
        }
    }

    /// A certificate for `names` (DNS names; none for a client), signed by this CA, in files
    /// `<file>.pem` and `<file>.key`.
    pub fn sign(&self, file: &str, names: &[&str]) -> Pair {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, file);
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let pair = Pair {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        write(&pair.cert, &cert.pem());
        write(&pair.key, &key.serialize_pem());
        pair
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}

/// A PostgreSQL server of the test's own on 127.0.0.1 (and ::1 where there is one) at `port`,
/// its data in a temp dir user postgres may enter; stopped and removed when dropped.
pub struct PgServer {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PgServer {
    /// `ssl`: TLS with the `server` pair (its certificate names the host), and `hostssl`
    /// lines only in pg_hba.conf: a password (scram) and a client certificate signed by
    /// `client_ca` (`clientcert=verify-ca`); without, plain `host` lines, trusted.
    pub fn start(port: u16, ssl: Option<(&Pair, &Path)>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("the data folder");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        chown_postgres(&data);
        as_postgres(&[
            "initdb",
            "-D",
            &data.display().to_string(),
            "-A",
            "trust",
            "-U",
            "postgres",
        ]);
        let mut conf = format!(
            "port = {port}\nlisten_addresses = 'localhost'\nunix_socket_directories = '{}'\n",
            data.display()
        );
        let hba = match ssl {
            Some((pair, client_ca)) => {
                for (from, to) in [
                    (pair.cert.as_path(), "server.crt"),
                    (pair.key.as_path(), "server.key"),
                    (client_ca, "client_ca.crt"),
                ] {
                    let dest = data.join(to);
                    std::fs::copy(from, &dest).expect("copy the server's TLS files");
                    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600))
                        .expect("chmod");
                    chown_postgres(&dest);
                }
                conf.push_str(
                    "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'client_ca.crt'\n",
                );
                "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-ca\nhostssl all all ::1/128 scram-sha-256 clientcert=verify-ca\n"
            }
            None => {
                "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
            }
        };
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(data.join("pg_hba.conf"), hba).expect("pg_hba.conf");
        chown_postgres(&data.join("pg_hba.conf"));
        // In the data folder: only user postgres may write there, and into nothing else here.
        let log = data.join("pg.log").display().to_string();
        as_postgres(&[
            "pg_ctl",
            "-D",
            &data.display().to_string(),
            "-l",
            &log,
            "-w",
            "-t",
            "60",
            "start",
        ]);
        Self { dir, port }
    }

    /// Runs `sql` as the superuser, over the server's unix socket.
    pub fn psql(&self, sql: &str) {
        let out = Command::new("psql")
            .args(["-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-c", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--", &pg_program("pg_ctl")])
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// A PostgreSQL server program: Debian keeps them in /usr/lib/postgresql/VERSION/bin, out of
/// PATH (the newest version there), elsewhere they are on PATH.
fn pg_program(name: &str) -> String {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let path = e.path().join("bin").join(name);
            path.exists().then_some((version, path))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map_or_else(|| name.to_string(), |(_, p)| p.display().to_string())
}

fn as_postgres(args: &[&str]) {
    let (program, rest) = args.split_first().expect("a program");
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--", &pg_program(program)])
        .args(rest)
        .output()
        .expect("runuser");
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chown_postgres(path: &Path) {
    let status = Command::new("chown")
        .arg("postgres:postgres")
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success(), "chown {}", path.display());
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("postgresql.conf");
    file.write_all(text.as_bytes()).expect("append");
}
