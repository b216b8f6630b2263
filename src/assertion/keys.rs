//! The Ed25519 keys behind the identity assertion: the signing key (read
//! from `gateway.signing_key`, or generated once into `data_dir`), the
//! keys published beside it for rotation, and the JWK Set they make.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::EncodingKey;

/// The file a generated signing key is kept in, under `data_dir`.
pub const GENERATED_KEY_FILE: &str = "gateway-ed25519.pem";

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32-byte
/// key follows it.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The signing key: what signs, and the `kid` its assertions name.
pub struct SigningKey {
    /// The key in the form the JWT library signs with.
    pub encoding: EncodingKey,
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// The public half, as published.
    pub jwk: Jwk,
}

/// The signing key named by `configured`, or the one generated into
/// `data_dir` (created, mode 0600, on first start).
pub fn signing_key(configured: Option<&Path>, data_dir: &Path) -> anyhow::Result<SigningKey> {
    let path = match configured {
        Some(path) => path.to_owned(),
        None => generated_key(data_dir)?,
    };
    let pem = std::fs::read(&path)
        .with_context(|| format!("reading `gateway.signing_key` {}", path.display()))?;
    let der = pem_block(&pem, "PRIVATE KEY")
        .with_context(|| format!("`gateway.signing_key` {}", path.display()))?;
    let pair = Ed25519KeyPair::from_pkcs8(&der).map_err(|e| {
        anyhow::anyhow!(
            "`gateway.signing_key` {}: not an Ed25519 PKCS#8 key ({e})",
            path.display()
        )
    })?;
    let jwk = public_jwk(pair.public_key().as_ref());
    Ok(SigningKey {
        encoding: EncodingKey::from_ed_der(&der),
        kid: jwk.common.key_id.clone().unwrap_or_default(),
        jwk,
    })
}

/// The generated key's path, generating it if it is not there yet. Written
/// to a temporary file (0600) renamed into place, so a crash never leaves a
/// half-written key and two nodes on one `data_dir` agree on the result.
fn generated_key(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join(GENERATED_KEY_FILE);
    if path.exists() {
        return Ok(path);
    }
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("generating the gateway signing key"))?;
    let pem = to_pem(pkcs8.as_ref(), "PRIVATE KEY");
    let mut tmp = tempfile::NamedTempFile::new_in(data_dir).with_context(|| {
        format!(
            "writing the gateway signing key into {}",
            data_dir.display()
        )
    })?;
    // NamedTempFile is created 0600 on Unix.
    tmp.write_all(pem.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(&path)
        .or_else(|e| {
            if path.exists() {
                Ok(e.file.into_file())
            } else {
                Err(e.error)
            }
        })
        .with_context(|| format!("keeping the gateway signing key at {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated the gateway signing key");
    Ok(path)
}

/// The public JWK of one of `gateway.published_keys`: a PKCS#8 private key
/// or an SPKI public key, PEM.
pub fn published_key(path: &Path) -> anyhow::Result<Jwk> {
    let pem = std::fs::read(path)
        .with_context(|| format!("reading `gateway.published_keys` {}", path.display()))?;
    let public = if let Ok(der) = pem_block(&pem, "PRIVATE KEY") {
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|e| anyhow::anyhow!("{}: not an Ed25519 PKCS#8 key ({e})", path.display()))?;
        pair.public_key().as_ref().to_vec()
    } else {
        let der = pem_block(&pem, "PUBLIC KEY")
            .with_context(|| format!("`gateway.published_keys` {}", path.display()))?;
        match der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
            Some(key) if key.len() == 32 => key.to_vec(),
            _ => bail!("{}: not an Ed25519 public key", path.display()),
        }
    };
    Ok(public_jwk(&public))
}

/// The JWK of an Ed25519 public key, its `kid` the RFC 7638 thumbprint.
fn public_jwk(public: &[u8]) -> Jwk {
    let mut jwk = Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            ..CommonParameters::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x: URL_SAFE_NO_PAD.encode(public),
        }),
    };
    jwk.common.key_id = Some(jwk.thumbprint(ThumbprintHash::SHA256));
    jwk
}

/// The JWK Set: the signing key first, then the published ones (a key
/// listed twice is published once).
pub fn jwk_set(signing: &Jwk, published: &[Jwk]) -> JwkSet {
    let mut keys = vec![signing.clone()];
    for jwk in published {
        if !keys.iter().any(|k| k.common.key_id == jwk.common.key_id) {
            keys.push(jwk.clone());
        }
    }
    JwkSet { keys }
}

/// The DER inside the PEM block labelled `label`.
fn pem_block(pem: &[u8], label: &str) -> anyhow::Result<Vec<u8>> {
    let text = std::str::from_utf8(pem).context("not a PEM file")?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let Some(start) = text.find(&begin) else {
        bail!("no `{begin}` block");
    };
    let body = &text[start + begin.len()..];
    let Some(stop) = body.find(&end) else {
        bail!("no `{end}` line");
    };
    let b64: String = body[..stop].split_whitespace().collect();
    STANDARD.decode(b64).context("the PEM body is not base64")
}

fn to_pem(der: &[u8], label: &str) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_kept_across_restarts_and_private_to_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let first = signing_key(None, dir.path()).unwrap();
        let second = signing_key(None, dir.path()).unwrap();
        assert_eq!(first.kid, second.kid);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(GENERATED_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        }
    }

    #[test]
    fn a_published_private_key_publishes_its_public_half() {
        let dir = tempfile::tempdir().unwrap();
        let signing = signing_key(None, dir.path()).unwrap();
        let again = published_key(&dir.path().join(GENERATED_KEY_FILE)).unwrap();
        assert_eq!(again.common.key_id.as_deref(), Some(signing.kid.as_str()));
        let set = jwk_set(&signing.jwk, &[again]);
        assert_eq!(set.keys.len(), 1);
    }

    #[test]
    fn an_spki_public_key_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let signing = signing_key(None, dir.path()).unwrap();
        let AlgorithmParameters::OctetKeyPair(okp) = &signing.jwk.algorithm else {
            panic!("not an OKP key");
        };
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend(URL_SAFE_NO_PAD.decode(&okp.x).unwrap());
        let path = dir.path().join("pub.pem");
        std::fs::write(&path, to_pem(&der, "PUBLIC KEY")).unwrap();
        let jwk = published_key(&path).unwrap();
        assert_eq!(jwk.common.key_id.as_deref(), Some(signing.kid.as_str()));
    }

    #[test]
    fn a_key_that_is_not_ed25519_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.pem");
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = signing_key(Some(&path), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("junk.pem"), "{err}");
        assert!(published_key(&dir.path().join("missing.pem")).is_err());
    }
}
