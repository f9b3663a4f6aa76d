//! Certificates made at test time: a private CA and a server certificate it signs, written to PEM files in
//! a fresh directory, so that TLS is tested on loopback end to end without any file in the repository.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// PEM files of one test PKI. The directory is removed on drop.
pub struct TestPki {
    dir: PathBuf,
    /// The CA certificate, to trust (`--upstream-ca`).
    pub ca: PathBuf,
    /// A server certificate chain for the names given (`--tls-cert`).
    pub cert: PathBuf,
    /// Its private key (`--tls-key`).
    pub key: PathBuf,
    /// A second CA's certificate, which signed nothing: trusting it must not make the server trusted.
    pub other_ca: PathBuf,
}

impl TestPki {
    /// A CA, and a server certificate for `names` (DNS names or IP addresses) signed by it.
    pub fn new(names: &[&str]) -> TestPki {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tokenpipe-test-pki-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the PKI directory");
        let ca = ca("tokenpipe test CA");
        let other = ca_pem("an unrelated CA");
        let key = KeyPair::generate().expect("server key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).expect("server certificate parameters");
        let cert = params
            .signed_by(&key, &ca)
            .expect("sign the server certificate");
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write a PEM file");
            path
        };
        TestPki {
            ca: write("ca.pem", ca.pem()),
            cert: write("cert.pem", cert.pem()),
            key: write("key.pem", key.serialize_pem()),
            other_ca: write("other-ca.pem", other),
            dir,
        }
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate().expect("CA key");
    CertifiedIssuer::self_signed(params, key).expect("self-sign the CA")
}

fn ca_pem(name: &str) -> String {
    ca(name).pem()
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
