//! The gateway's own host key: an Ed25519 key in the OpenSSH private key format.

use russh::keys::ssh_key::{LineEnding, PrivateKey, private::Ed25519Keypair};

use crate::SshError;

/// A new Ed25519 host key, as OpenSSH private key text (the caller stores it privately).
pub fn generate_host_key() -> Result<Vec<u8>, SshError> {
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| SshError::Key("cannot generate the SSH host key".into()))?;
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    seed.fill(0);
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| SshError::Key(format!("cannot encode the SSH host key: {e}")))?;
    Ok(text.as_bytes().to_vec())
}

/// Reads a host key written by [`generate_host_key`] (or any unencrypted OpenSSH key).
pub fn parse_host_key(bytes: &[u8]) -> Result<PrivateKey, SshError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| SshError::Key("the SSH host key is not OpenSSH key text".into()))?;
    russh::keys::decode_secret_key(text, None)
        .map_err(|e| SshError::Key(format!("the SSH host key cannot be read: {e}")))
}

/// The public half as an OpenSSH line (`ssh-ed25519 AAAA…`), for clients to pin.
pub fn public_line(key: &PrivateKey) -> String {
    key.public_key().to_openssh().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_reads_back() {
        let text = generate_host_key().unwrap();
        assert!(String::from_utf8_lossy(&text).starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        let key = parse_host_key(&text).unwrap();
        assert!(public_line(&key).starts_with("ssh-ed25519 AAAA"));
        assert_ne!(
            public_line(&parse_host_key(&generate_host_key().unwrap()).unwrap()),
            public_line(&key)
        );
        assert!(parse_host_key(b"not a key").is_err());
    }
}
