//! Throwaway certificates for the test servers.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A private CA and one server certificate it signed, all PEM.
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The CA certificate clients should trust.
    pub ca_pem: String,
    /// The server certificate (SAN: the DNS names given, nothing else).
    pub cert_pem: String,
    /// The server's PKCS#8 private key.
    pub key_pem: String,
}

/// Generates a fresh CA and a server certificate for `dns_names`.
///
/// The servers use `&["localhost"]`: the SAN deliberately holds no IP address,
/// so a client that verifies the host name (verify-full) succeeds for
/// `localhost` and fails for `127.0.0.1`, which the dialer's TLS tests rely on.
/// A new CA per server means no test can pass by trusting some other CA.
pub fn generate(dns_names: &[&str]) -> Result<TestCerts, String> {
    let err = |what: &str, e: rcgen::Error| format!("certificate generation ({what}): {e}");

    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| err("CA params", e))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "dialpool testkit CA");
    ca.distinguished_name = dn;
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(|e| err("CA key", e))?;
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| err("CA cert", e))?;
    let issuer = Issuer::new(ca, ca_key);

    let names: Vec<String> = dns_names.iter().map(|s| s.to_string()).collect();
    let mut leaf = CertificateParams::new(names).map_err(|e| err("server params", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "dialpool testkit server");
    leaf.distinguished_name = dn;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().map_err(|e| err("server key", e))?;
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .map_err(|e| err("server cert", e))?;

    Ok(TestCerts {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}
