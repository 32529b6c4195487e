//! Users' SSH public keys, registered to an identity for `publickey` sign-in: parsing,
//! the algorithms the gateway verifies, and fingerprints.

use russh::keys::ssh_key::{Algorithm, EcdsaCurve, HashAlg, PublicKey};

/// Longest public key line accepted.
const MAX_LINE: usize = 16 * 1024;

/// A user's public key, checked: one the gateway can verify a signature of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKey {
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The algorithm name (`ssh-ed25519`, `ecdsa-sha2-nistp256`, …).
    pub algorithm: String,
    /// The key as an OpenSSH line without its comment (`ssh-ed25519 AAAA…`).
    pub line: String,
    /// The line's comment, possibly empty.
    pub comment: String,
}

/// The fingerprint the gateway files a key under: SHA-256, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Whether sign-in accepts keys of this algorithm: Ed25519 and ECDSA on P-256 or P-384. RSA is
/// not verified by the gateway's SSH build; DSA, P-521 and security-key types are not offered.
pub fn supported(algorithm: &Algorithm) -> bool {
    matches!(
        algorithm,
        Algorithm::Ed25519
            | Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256 | EcdsaCurve::NistP384
            }
    )
}

/// Parses one OpenSSH public key line (`ssh-ed25519 AAAA… comment`) and checks that sign-in
/// can use it. The error is a sentence for the caller.
pub fn parse_user_key(line: &str) -> Result<UserKey, String> {
    let line = line.trim();
    if line.is_empty() {
        return Err("expected an OpenSSH public key line (ssh-ed25519 AAAA… name)".into());
    }
    if line.len() > MAX_LINE || line.lines().count() != 1 {
        return Err(
            "expected one OpenSSH public key line, e.g. the content of ~/.ssh/id_ed25519.pub"
                .into(),
        );
    }
    let key = PublicKey::from_openssh(line)
        .map_err(|e| format!("not an OpenSSH public key line (ssh-ed25519 AAAA… name): {e}"))?;
    let algorithm = key.algorithm();
    if !supported(&algorithm) {
        let why = match algorithm {
            Algorithm::Rsa { .. } => "RSA keys are not accepted by this gateway",
            Algorithm::Dsa => "DSA keys are not accepted",
            _ => "this key type is not accepted",
        };
        return Err(format!(
            "{why} ({}): use an ssh-ed25519 key (ssh-keygen -t ed25519), or ecdsa-sha2-nistp256 / nistp384",
            algorithm.as_str()
        ));
    }
    let mut bare = PublicKey::new(key.key_data().clone(), "");
    bare.set_comment("");
    let encoded = bare
        .to_openssh()
        .map_err(|e| format!("the key cannot be encoded: {e}"))?;
    Ok(UserKey {
        fingerprint: fingerprint(&key),
        algorithm: algorithm.as_str().to_string(),
        line: encoded.trim().to_string(),
        comment: key.comment().as_str_lossy().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHfumePnvGoriYd0cCMx45tYpdMoPim1CfHaC/6TVJye alice@laptop";

    #[test]
    fn ed25519_lines_parse_with_a_fingerprint() {
        let k = parse_user_key(ED25519).unwrap();
        assert!(k.fingerprint.starts_with("SHA256:"), "{}", k.fingerprint);
        assert_eq!(k.algorithm, "ssh-ed25519");
        assert_eq!(k.comment, "alice@laptop");
        assert!(k.line.starts_with("ssh-ed25519 AAAA") && !k.line.contains("alice"));
        assert_eq!(parse_user_key(&k.line).unwrap().fingerprint, k.fingerprint);
    }

    #[test]
    fn malformed_and_unsupported_keys_are_refused() {
        assert!(parse_user_key("").is_err());
        assert!(parse_user_key("ssh-ed25519 notbase64").is_err());
        assert!(parse_user_key(&format!("{ED25519}\n{ED25519}")).is_err());
        let rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCqan9UoBCj5/r0gVISbA1JbWaksXvMtJMELalap99YbKoCAe+oIegzpLhSvIBuBEOOtlkafigqAgTxHIJomv1f0UBBJPjE1Hp/36FIj99jt8sbL8EmFGI6iWKJSsu4V6KfYsJgMWsNB4URxhPxl1jC3JLFn+V9hzim1k7Z0WnZPw== old";
        let e = parse_user_key(rsa).unwrap_err();
        assert!(e.contains("RSA keys are not accepted"), "{e}");
    }
}
