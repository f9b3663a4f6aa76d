//! The TLS-upstream scenario's test PKI, made at start: a private CA and a certificate for `localhost`
//! signed by it, written as PEM files into a temporary directory removed at the end.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

pub struct Pki {
    dir: PathBuf,
    /// The CA certificate: the relay's `--upstream-ca`.
    pub ca: PathBuf,
    /// The mock's `--tls-cert` and `--tls-key`.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// A fresh CA and a `localhost` certificate (ECDSA P-256, rcgen's default) in `dir`.
    pub fn new(dir: &Path) -> Result<Pki, String> {
        let fail = |e: &dyn std::fmt::Display| format!("test PKI: {e}");
        std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail(&e))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tokenpipe-bench test CA");
        let ca_key = KeyPair::generate().map_err(|e| fail(&e))?;
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|e| fail(&e))?;
        let key = KeyPair::generate().map_err(|e| fail(&e))?;
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .and_then(|params| params.signed_by(&key, &ca))
            .map_err(|e| fail(&e))?;
        let write = |name: &str, pem: String| -> Result<PathBuf, String> {
            let path = dir.join(name);
            std::fs::write(&path, pem).map_err(|e| fail(&e))?;
            Ok(path)
        };
        Ok(Pki {
            ca: write("ca.pem", ca.pem())?,
            cert: write("cert.pem", cert.pem())?,
            key: write("key.pem", key.serialize_pem())?,
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
