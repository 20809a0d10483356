//! TLS against a real server: `ssl = on` with a certificate made here (rcgen: a CA and a
//! server certificate for 127.0.0.1 signed by it), `pg_hba.conf` admitting TCP clients only
//! over TLS (`hostssl`).

use std::path::{Path, PathBuf};

use liveresults_core::testing::commit_at;
use liveresults_core::{LiveResultsWriter, RowMutation, StoreError};
use liveresults_postgres::testing::{unique_schema, PgServer};
use liveresults_postgres::{PgStore, PgStoreOptions};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA: its certificate (PEM), the certificate and its key.
fn ca(name: &str) -> (String, rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), cert, key)
}

struct Setup {
    server: PgServer,
    dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Setup {
        let (ca_pem, ca_cert, ca_key) = ca("liveresults test CA");
        let (wrong_pem, _, _) = ca("some other CA");
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "liveresults test server");
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        let server = PgServer::start_tls(&cert.pem(), &key.serialize_pem());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
        std::fs::write(dir.path().join("wrong.pem"), wrong_pem).unwrap();
        Setup { server, dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The server's URL with `params` (the password is one no error may show).
    fn url(&self, params: &str) -> String {
        format!(
            "postgres://postgres:hunter2secret@127.0.0.1:{}/postgres?{params}",
            self.server.port()
        )
    }
}

fn options() -> PgStoreOptions {
    PgStoreOptions::new().schema(unique_schema()).pool_size(2)
}

/// Whether the store's pooled connection is encrypted, by the server's own account.
async fn encrypted(store: &PgStore) -> bool {
    let client = store.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// A refused connection: permanent, the password not in the message.
fn refused(result: Result<PgStore, StoreError>) -> String {
    let err = result.expect_err("the connection must be refused");
    let text = err.to_string();
    assert!(!err.is_transient(), "a refusal is permanent: {text}");
    assert!(
        !text.contains("hunter2secret"),
        "the password leaked: {text}"
    );
    text
}

fn url_path(path: &Path) -> String {
    path.display().to_string().replace('%', "%25")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_right_ca_commits_plain_and_wrong_ca_are_refused() {
    let setup = Setup::start();

    // sslmode=require, the CA from the URL: TLS, and a commit goes through.
    let url = setup.url(&format!(
        "sslmode=require&sslrootcert={}",
        url_path(&setup.file("ca.pem"))
    ));
    let store = PgStore::connect(&url, options()).await.unwrap();
    assert!(encrypted(&store).await);
    commit_at(&store, "q", 1, &[RowMutation::upsert(1, b"row")]).await;
    assert_eq!(store.row_count("q").await.unwrap(), 1);
    store.close().await.unwrap();

    // The CA from the options instead.
    let store = PgStore::connect(
        &setup.url("sslmode=require"),
        options().tls_ca_file(setup.file("ca.pem")),
    )
    .await
    .unwrap();
    assert!(encrypted(&store).await);
    store.close().await.unwrap();

    // Plain text: the server admits TCP clients only over TLS.
    let text = refused(PgStore::connect(&setup.url("sslmode=disable"), options()).await);
    assert!(
        text.contains("pg_hba.conf") && text.contains("no encryption"),
        "{text}"
    );

    // A CA that did not sign the server's certificate.
    let url = setup.url(&format!(
        "sslmode=require&sslrootcert={}",
        url_path(&setup.file("wrong.pem"))
    ));
    let text = refused(PgStore::connect(&url, options()).await);
    assert!(
        text.contains("TLS") && text.contains("certificate") && text.contains("UnknownIssuer"),
        "{text}"
    );

    // require without a CA file checks the system's roots, which do not hold the test CA.
    let text = refused(PgStore::connect(&setup.url("sslmode=require"), options()).await);
    assert!(text.contains("certificate"), "{text}");

    // A CA file that does not exist is named.
    let text = refused(
        PgStore::connect(
            &setup.url("sslmode=require"),
            options().tls_ca_file(setup.file("missing.pem")),
        )
        .await,
    );
    assert!(text.contains("missing.pem"), "{text}");

    // prefer without a CA: encrypted, the certificate unverified (libpq's prefer).
    let store = PgStore::connect(&setup.url("sslmode=prefer"), options())
        .await
        .unwrap();
    assert!(encrypted(&store).await);
    store.close().await.unwrap();
}
