//! TLS on the PostgreSQL backend's connections, against real servers: a throwaway server that
//! serves TLS with a certificate for `localhost` only (issued by a CA the `openssl` CLI makes
//! for the test), refuses plaintext TCP (`hostssl` only) and authenticates with SCRAM, and a
//! plaintext one. Each mode of `[backend] tls` connects where it should, fails where it should
//! with the reason in the error, and never falls back to plaintext where it needs TLS.
#![cfg(feature = "postgres")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tollgate::backend::TlsMode;
use tollgate::backend::kill::{KillChange, KillScope, KillSwitchStore};
use tollgate::backend::postgres::kill::PgKillSwitch;
use tollgate::backend::postgres::throwaway::{ThrowawayError, ThrowawayOptions, ThrowawayPostgres};
use tollgate::backend::postgres::{BackendError, PgBackend};

/// The superuser's password on the TLS server (SCRAM over TLS, with channel binding).
const PASSWORD: &str = "tls-test-secret";

/// A CA, a server certificate it issued for `localhost` (no IP address), and a second CA that
/// issued nothing the servers present; all made by the `openssl` CLI.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    cert_pem: String,
    key_pem: String,
}

fn openssl(openssl: &Path, dir: &Path, args: &[&str]) {
    let out = Command::new(openssl)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_ca(bin: &Path, dir: &Path, name: &str) {
    openssl(
        bin,
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=tollgate test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

fn pki() -> Option<Pki> {
    let bin = common::external_tool(&["openssl"])?;
    let dir = common::tempdir::temp_dir("fleet-tls", "pki");
    let d = dir.path();
    make_ca(&bin, d, "ca");
    make_ca(&bin, d, "other-ca");
    openssl(
        &bin,
        d,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &bin,
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
    Some(Pki {
        ca: d.join("ca.crt"),
        other_ca: d.join("other-ca.crt"),
        cert_pem: std::fs::read_to_string(d.join("server.crt")).unwrap(),
        key_pem: std::fs::read_to_string(d.join("server.key")).unwrap(),
        _dir: dir,
    })
}

struct Fixture {
    pki: Pki,
    /// TLS only (`hostssl`), SCRAM, certificate for `localhost`.
    tls: ThrowawayPostgres,
    /// No TLS at all, `trust`.
    plain: ThrowawayPostgres,
    /// TLS offered (the same certificate), plaintext allowed, `trust`.
    mixed: ThrowawayPostgres,
}

/// The servers, started once per test binary; `None` (skip) without `openssl` or PostgreSQL's
/// binaries, unless CI requires them (`TOLLGATE_CI=1`, `TOLLGATE_REQUIRE_PG=1`).
fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let pki = pki()?;
            let tls = ThrowawayOptions::new()
                .tls(pki.cert_pem.clone(), pki.key_pem.clone())
                .tls_only()
                .password(PASSWORD);
            let mixed = ThrowawayOptions::new().tls(pki.cert_pem.clone(), pki.key_pem.clone());
            let started = ThrowawayPostgres::start_with(&tls).and_then(|tls| {
                Ok((
                    tls,
                    ThrowawayPostgres::start()?,
                    ThrowawayPostgres::start_with(&mixed)?,
                ))
            });
            match started {
                Ok((tls, plain, mixed)) => Some(Fixture {
                    pki,
                    tls,
                    plain,
                    mixed,
                }),
                Err(ThrowawayError::NotInstalled)
                    if std::env::var_os("TOLLGATE_REQUIRE_PG").is_none_or(|v| v != "1") =>
                {
                    eprintln!("PostgreSQL not found, skipping");
                    None
                }
                Err(e) => panic!("starting the test servers: {e}"),
            }
        })
        .as_ref()
}

impl Fixture {
    /// The TLS server reached by the name its certificate carries (`localhost`, at 127.0.0.1).
    fn by_name(&self) -> String {
        format!(
            "host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname=postgres \
             password={PASSWORD}",
            self.tls.port()
        )
    }

    /// The TLS server reached by its address, which its certificate does not carry.
    fn by_address(&self) -> String {
        self.tls.url()
    }
}

/// A backend at `url` on a fresh schema, in `mode` (with `root_cert`).
fn backend(url: &str, mode: TlsMode, root_cert: Option<&Path>) -> PgBackend {
    static N: AtomicU32 = AtomicU32::new(0);
    let schema = format!(
        "tls_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    PgBackend::from_url(url, &schema, Duration::from_secs(10))
        .unwrap()
        .tls(mode, root_cert)
        .unwrap()
}

/// Whether the server sees this connection as TLS (`pg_stat_ssl`).
fn encrypted(client: &mut postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0)
}

/// The error of connecting, as the operator reads it.
fn refused(b: &PgBackend) -> String {
    match b.connect() {
        Ok(_) => panic!("{b:?} connected"),
        Err(e @ BackendError::Connect(_)) => e.to_string(),
        Err(e) => panic!("not a connection error: {e}"),
    }
}

#[test]
fn verify_full_with_the_right_ca_connects_encrypted_and_the_kill_switch_round_trips() {
    let Some(f) = fixture() else { return };
    let b = backend(&f.by_name(), TlsMode::VerifyFull, Some(&f.pki.ca));
    assert_eq!(b.tls_mode(), TlsMode::VerifyFull);
    assert!(encrypted(&mut b.connect().unwrap()));
    // One host throws the switch, another (its own connections) reads it.
    let operator = PgKillSwitch::open(b.clone()).unwrap();
    let worker: Arc<dyn KillSwitchStore> = Arc::new(PgKillSwitch::open(b).unwrap());
    operator
        .apply(&KillChange::suspend(KillScope::Agent("bot".into()), "alice").reason("tls"))
        .unwrap();
    let state = worker.load().unwrap();
    assert!(
        state.get(&KillScope::Agent("bot".into())).is_some(),
        "{state:?}"
    );
    operator
        .apply(&KillChange::resume(KillScope::Agent("bot".into()), "alice"))
        .unwrap();
    assert!(
        worker
            .load()
            .unwrap()
            .get(&KillScope::Agent("bot".into()))
            .is_none()
    );
}

#[test]
fn scram_channel_binding_works_over_verified_tls() {
    let Some(f) = fixture() else { return };
    // `channel_binding=require`: SCRAM-SHA-256-PLUS, bound to the server's certificate (the
    // adapter's `tls-server-end-point` hash must match the server's).
    let url = format!("{} channel_binding=require", f.by_name());
    let b = backend(&url, TlsMode::VerifyFull, Some(&f.pki.ca));
    assert!(encrypted(&mut b.connect().unwrap()));
    // And the password is checked (the server is not `trust`).
    let wrong = f.by_name().replace(PASSWORD, "wrong");
    let e = refused(&backend(&wrong, TlsMode::VerifyFull, Some(&f.pki.ca)));
    assert!(e.contains("password authentication failed"), "{e}");
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let Some(f) = fixture() else { return };
    for mode in [TlsMode::VerifyFull, TlsMode::VerifyCa, TlsMode::Require] {
        let e = refused(&backend(&f.by_name(), mode, Some(&f.pki.other_ca)));
        assert!(
            e.contains("TLS handshake") && e.contains("invalid peer certificate: UnknownIssuer"),
            "{mode}: {e}"
        );
    }
}

#[test]
fn verify_full_refuses_a_certificate_for_another_host_name_and_verify_ca_does_not_check_it() {
    let Some(f) = fixture() else { return };
    // The certificate names `localhost`, not 127.0.0.1.
    let e = refused(&backend(
        &f.by_address(),
        TlsMode::VerifyFull,
        Some(&f.pki.ca),
    ));
    assert!(e.contains("invalid peer certificate"), "{e}");
    assert!(e.contains("127.0.0.1") && e.contains("localhost"), "{e}");
    let b = backend(&f.by_address(), TlsMode::VerifyCa, Some(&f.pki.ca));
    assert!(encrypted(&mut b.connect().unwrap()));
}

#[test]
fn modes_that_need_tls_refuse_a_server_without_it() {
    let Some(f) = fixture() else { return };
    for (mode, root) in [
        (TlsMode::VerifyFull, Some(f.pki.ca.as_path())),
        (TlsMode::VerifyFull, None),
        (TlsMode::VerifyCa, Some(f.pki.ca.as_path())),
        (TlsMode::Require, None),
    ] {
        let e = refused(&backend(&f.plain.url(), mode, root));
        assert!(e.contains("server does not support TLS"), "{mode}: {e}");
    }
}

#[test]
fn require_without_a_root_certificate_encrypts_without_checking_the_certificate() {
    let Some(f) = fixture() else { return };
    // Reached by address (not the certificate's name), no CA given: libpq's `require`.
    let b = backend(&f.by_address(), TlsMode::Require, None);
    assert!(encrypted(&mut b.connect().unwrap()));
}

#[test]
fn a_tls_only_server_refuses_plaintext() {
    let Some(f) = fixture() else { return };
    let e = refused(&backend(&f.by_name(), TlsMode::Disable, None));
    assert!(e.contains("no pg_hba.conf entry"), "{e}");
    assert!(e.contains("no encryption"), "{e}");
}

#[test]
fn prefer_uses_tls_when_offered_and_plaintext_otherwise() {
    let Some(f) = fixture() else { return };
    // The connection string's default, with nothing in the document: `prefer`.
    let b = PgBackend::from_url(&f.by_address(), "tls_prefer", Duration::from_secs(10)).unwrap();
    assert_eq!(b.tls_mode(), TlsMode::Prefer);
    assert!(encrypted(&mut b.connect().unwrap()));
    let b = backend(&f.plain.url(), TlsMode::Prefer, None);
    assert!(!encrypted(&mut b.connect().unwrap()));
}

/// A connection string naming only `hostaddr` gives TLS no server name: `prefer` connects in
/// plaintext (as before TLS was supported) where the server allows it, and fails closed where
/// it does not; a mode that requires TLS refuses the string up front, saying to add `host=`.
#[test]
fn an_address_without_a_host_name_is_plaintext_under_prefer_and_refused_where_tls_is_required() {
    let Some(f) = fixture() else { return };
    let addr_only = |port: u16, password: &str| {
        format!("hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres password={password}")
    };
    let plain = backend(&addr_only(f.plain.port(), "x"), TlsMode::Prefer, None);
    assert!(!encrypted(&mut plain.connect().unwrap()));
    // A server that offers TLS: no handshake is attempted without a name.
    let mixed = backend(&addr_only(f.mixed.port(), "x"), TlsMode::Prefer, None);
    assert!(!encrypted(&mut mixed.connect().unwrap()));
    // With the name, the same server is reached over TLS.
    let named = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname=postgres",
        f.mixed.port()
    );
    assert!(encrypted(
        &mut backend(&named, TlsMode::Prefer, None).connect().unwrap()
    ));
    let tls_only = backend(&addr_only(f.tls.port(), PASSWORD), TlsMode::Prefer, None);
    assert!(
        tls_only.connect().is_err(),
        "the TLS-only server refuses plaintext"
    );
    for mode in [TlsMode::Require, TlsMode::VerifyCa, TlsMode::VerifyFull] {
        let root = (mode != TlsMode::Require).then_some(f.pki.ca.as_path());
        let e = PgBackend::from_url(
            &addr_only(f.tls.port(), PASSWORD),
            "s",
            Duration::from_secs(5),
        )
        .unwrap()
        .tls(mode, root)
        .unwrap_err();
        assert!(
            matches!(&e, BackendError::Tls { key: "backend.tls", reason } if reason.contains("host=")),
            "{mode}: {e}"
        );
        assert!(!e.to_string().contains(PASSWORD), "{e}");
    }
}

#[test]
fn a_connection_string_that_requires_tls_is_not_weakened() {
    let Some(f) = fixture() else { return };
    let url = format!("{} sslmode=require", f.plain.url());
    for mode in [TlsMode::Disable, TlsMode::Prefer] {
        let b = backend(&url, mode, None);
        assert_eq!(b.tls_mode(), TlsMode::Require);
        let e = refused(&b);
        assert!(e.contains("server does not support TLS"), "{mode}: {e}");
    }
}

/// Run by [`verify_full_without_a_root_certificate_uses_the_operating_system_store`] in a child
/// process whose `SSL_CERT_FILE` names the test CA.
#[test]
fn child_os_store() {
    let Ok(url) = std::env::var("TOLLGATE_TLS_CHILD_URL") else {
        return;
    };
    let b = PgBackend::from_url(&url, "tls_os_store", Duration::from_secs(10))
        .unwrap()
        .tls(TlsMode::VerifyFull, None)
        .unwrap();
    match b.connect() {
        Ok(mut c) => println!("CHILD connected encrypted={}", encrypted(&mut c)),
        Err(e) => println!("CHILD refused: {e}"),
    }
}

#[test]
fn verify_full_without_a_root_certificate_uses_the_operating_system_store() {
    let Some(f) = fixture() else { return };
    let child = |cert_file: &Path| {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_os_store",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TOLLGATE_TLS_CHILD_URL", f.by_name())
            // rustls-platform-verifier reads the store through rustls-native-certs on Linux,
            // which takes these instead of the system's when they are set.
            .env("SSL_CERT_FILE", cert_file)
            .env_remove("SSL_CERT_DIR")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}");
        // The harness prints `test child_os_store ... ` on the same line.
        let at = text
            .find("CHILD ")
            .unwrap_or_else(|| panic!("no report: {text}"));
        text[at..].lines().next().unwrap_or_default().to_owned()
    };
    assert_eq!(child(&f.pki.ca), "CHILD connected encrypted=true");
    let refused = child(&f.pki.other_ca);
    assert!(
        refused.contains("CHILD refused") && refused.contains("invalid peer certificate"),
        "{refused}"
    );
}

/// The document's `[backend] tls` and `tls_root_cert`, end to end: the operator CLI reads them
/// and throws the kill switch over verified TLS; with the wrong CA it refuses to act.
#[cfg(feature = "cli")]
#[test]
fn the_operator_cli_follows_the_document_s_tls() {
    let Some(f) = fixture() else { return };
    let dir = common::tempdir::temp_dir("fleet-tls", "cli");
    let schema = format!("tls_cli_{}", std::process::id());
    let policy = |ca: &Path| {
        let path = dir.path().join("policy.toml");
        std::fs::write(
            &path,
            format!(
                r#"
[policy]
name = "fleet"
owner = "ops"
purpose = "test"
scope = "test"
liability_owner = "ops"
review_cadence = "90d"
data_handling = "none"

[tools.read]
effect = "read"

[roles.worker]
tools = ["read"]

[backend]
kind = "postgres"
url_env = "TG_FLEET_TLS_URL"
schema = "{schema}"
tls = "verify-full"
tls_root_cert = {ca:?}
"#
            ),
        )
        .unwrap();
        path
    };
    let cli = |policy: &Path| {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["kill", "suspend", "--agent", "bot", "--by", "alice"])
            .args(["--reason", "incident", "--policy"])
            .arg(policy)
            .env("TG_FLEET_TLS_URL", f.by_name())
            .output()
            .unwrap()
    };
    let watcher = PgKillSwitch::open(
        PgBackend::from_url(&f.by_name(), &schema, Duration::from_secs(10))
            .unwrap()
            .tls(TlsMode::VerifyFull, Some(&f.pki.ca))
            .unwrap(),
    )
    .unwrap();

    let o = cli(&policy(&f.pki.other_ca));
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("invalid peer certificate: UnknownIssuer"),
        "{text}"
    );
    assert_eq!(watcher.load().unwrap().revision, 0);

    let o = cli(&policy(&f.pki.ca));
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let state = watcher.load().unwrap();
    assert!(
        state.get(&KillScope::Agent("bot".into())).is_some(),
        "{state:?}"
    );
}
