//! The token signing key: from configuration (PEM, EC P-256 or RSA), or an ES256 key
//! generated on first start and kept under `<data_dir>/auth/`.

use std::io::Write;
use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::pkcs1::DecodeRsaPrivateKey;

use super::AuthError;

/// File name of the generated key inside `<data_dir>/auth/`.
pub const GENERATED_KEY_FILE: &str = "signing-key.pem";

/// A private key with its public half, algorithm and key id.
pub struct SigningKey {
    pub algorithm: Algorithm,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
    /// RFC 7638 thumbprint of the public key: every replica sharing the key agrees on it.
    pub kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn key_error(message: impl std::fmt::Display) -> AuthError {
    AuthError::Key(message.to_string())
}

impl SigningKey {
    /// Parses a PEM private key: EC P-256 (PKCS#8 or SEC1) → ES256, RSA (PKCS#8 or
    /// PKCS#1) → RS256.
    pub fn from_pem(pem: &str) -> Result<SigningKey, AuthError> {
        if let Ok(secret) =
            p256::SecretKey::from_pkcs8_pem(pem).or_else(|_| p256::SecretKey::from_sec1_pem(pem))
        {
            return Self::from_p256(&secret);
        }
        let rsa = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| {
                key_error("not a PEM EC P-256 or RSA private key (PKCS#8, SEC1 or PKCS#1)")
            })?;
        let private = rsa.to_pkcs8_pem(LineEnding::LF).map_err(key_error)?;
        let public = rsa
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(key_error)?;
        Self::assemble(
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(private.as_bytes()).map_err(key_error)?,
            DecodingKey::from_rsa_pem(public.as_bytes()).map_err(key_error)?,
        )
    }

    fn from_p256(secret: &p256::SecretKey) -> Result<SigningKey, AuthError> {
        let private = secret.to_pkcs8_pem(LineEnding::LF).map_err(key_error)?;
        let public = secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(key_error)?;
        Self::assemble(
            Algorithm::ES256,
            EncodingKey::from_ec_pem(private.as_bytes()).map_err(key_error)?,
            DecodingKey::from_ec_pem(public.as_bytes()).map_err(key_error)?,
        )
    }

    fn assemble(
        algorithm: Algorithm,
        encoding: EncodingKey,
        decoding: DecodingKey,
    ) -> Result<SigningKey, AuthError> {
        let kid = Jwk::from_encoding_key(&encoding, algorithm)
            .and_then(|jwk| jwk.thumbprint(ThumbprintHash::SHA256))
            .map_err(key_error)?;
        Ok(SigningKey {
            algorithm,
            encoding,
            decoding,
            kid,
        })
    }

    /// The configured key (inline PEM or a file), else the one generated under `data_dir`
    /// (created on first use, readable only by its owner).
    pub fn load(
        inline: Option<&str>,
        file: Option<&Path>,
        data_dir: &Path,
    ) -> Result<SigningKey, AuthError> {
        if let Some(pem) = inline {
            return Self::from_pem(pem).map_err(|e| key_error(format!("auth.signing_key: {e}")));
        }
        if let Some(file) = file {
            let pem = std::fs::read_to_string(file)
                .map_err(|e| key_error(format!("auth.signing_key_file {}: {e}", file.display())))?;
            return Self::from_pem(&pem)
                .map_err(|e| key_error(format!("auth.signing_key_file {}: {e}", file.display())));
        }
        let path = generated_key_path(data_dir);
        match std::fs::read_to_string(&path) {
            Ok(pem) => {
                Self::from_pem(&pem).map_err(|e| key_error(format!("{}: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::generate(&path),
            Err(e) => Err(key_error(format!("{}: {e}", path.display()))),
        }
    }

    /// A new ES256 key written to `path` with mode 0600. When another process created the
    /// file first, that key is used, so replicas starting together on one data directory
    /// agree.
    fn generate(path: &Path) -> Result<SigningKey, AuthError> {
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let pem = secret.to_pkcs8_pem(LineEnding::LF).map_err(key_error)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        crate::durable::create_dir_all(dir)
            .map_err(|e| key_error(format!("creating {}: {e}", dir.display())))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut file) => {
                file.write_all(pem.as_bytes())
                    .and_then(|()| file.sync_all())
                    .and_then(|()| crate::durable::sync_parent(path))
                    .map_err(|e| key_error(format!("writing {}: {e}", path.display())))?;
                tracing::info!(event = "signing_key_generated", path = %path.display());
                Self::from_p256(&secret)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let pem = std::fs::read_to_string(path)
                    .map_err(|e| key_error(format!("{}: {e}", path.display())))?;
                Self::from_pem(&pem)
            }
            Err(e) => Err(key_error(format!("creating {}: {e}", path.display()))),
        }
    }
}

pub fn generated_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("auth").join(GENERATED_KEY_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let first = SigningKey::load(None, None, dir.path()).unwrap();
        assert_eq!(first.algorithm, Algorithm::ES256);
        let path = generated_key_path(dir.path());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = SigningKey::load(None, None, dir.path()).unwrap();
        assert_eq!(first.kid, again.kid, "the stored key is reused");
        let pem = std::fs::read_to_string(&path).unwrap();
        let inline = SigningKey::load(Some(&pem), None, Path::new("/nonexistent")).unwrap();
        assert_eq!(inline.kid, first.kid, "kid derives from the key alone");
        let other = SigningKey::load(None, None, tempfile::tempdir().unwrap().path()).unwrap();
        assert_ne!(other.kid, first.kid);
    }

    #[test]
    fn loads_rsa_keys() {
        let rsa = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
        let pem = rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_pem(&rsa, LineEnding::LF).unwrap();
        let key = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(key.algorithm, Algorithm::RS256);
    }

    #[test]
    fn refuses_garbage() {
        let err = SigningKey::load(Some("not a key"), None, Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("auth.signing_key"), "{err}");
    }
}
