//! The server's Ed25519 key: webhook signatures (`Webhook-Signature: t=…,kid=…,ed25519=…`
//! over `<t>.<body>`), the JWK Set receivers verify them with, and the wake tokens.
//!
//! The key's 32-byte seed is kept in the subscription store (created once, atomically, by
//! whichever host gets there first), so signatures and tokens stay valid across restarts and
//! every `serve --redis` host signs with the same key. The `kid` is `ds_` and the key's
//! RFC 7638 JWK thumbprint, stable for the key's life.
//!
//! A wake token (the webhook's `callback_token`, a claim's `token`) is
//! `<generation>.<base64url Ed25519 signature>` of a text naming the subscription, its
//! per-creation nonce and the generation: any host can check it without storing it, it is
//! worthless for another subscription or a re-created one, and a token of an old generation
//! still verifies — so the server can answer `FENCED` (stale) rather than `TOKEN_INVALID`.
//! The signed text starts with a letter, a webhook signature's with the timestamp's digits,
//! so one can never stand for the other.

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

pub use crate::base64::{base64url, base64url_decode};
use crate::store::StoreError;

/// Length of the key's seed.
pub const SEED_BYTES: usize = 32;

/// The server's signing key.
pub struct Signer {
    key: SigningKey,
    public: VerifyingKey,
    kid: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the seed.
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

impl Signer {
    /// The key of `seed`.
    pub fn from_seed(seed: &[u8; SEED_BYTES]) -> Signer {
        let key = SigningKey::from_bytes(seed);
        let public = key.verifying_key();
        let x = base64url(public.as_bytes());
        // RFC 7638: SHA-256 of the required members in lexicographic order, no whitespace.
        let thumbprint = Sha256::digest(format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#));
        Signer {
            key,
            public,
            kid: format!("ds_{}", base64url(&thumbprint)),
        }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWK Set (`GET …/__ds/jwks.json`).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "kid": self.kid,
                "use": "sig",
                "alg": "EdDSA",
                "x": base64url(self.public.as_bytes()),
            }]
        })
    }

    /// The `Webhook-Signature` value of `body` sent at `unix_secs`.
    pub fn webhook_signature(&self, body: &[u8], unix_secs: u64) -> String {
        let mut signed = format!("{unix_secs}.").into_bytes();
        signed.extend_from_slice(body);
        let signature = self.key.sign(&signed);
        format!(
            "t={unix_secs},kid={},ed25519={}",
            self.kid,
            base64url(&signature.to_bytes())
        )
    }

    /// The wake token of `generation` of subscription `id` (created with `nonce`).
    pub fn token(&self, id: &str, nonce: &str, generation: u64) -> String {
        let signature = self.key.sign(token_text(id, nonce, generation).as_bytes());
        format!("{generation}.{}", base64url(&signature.to_bytes()))
    }

    /// The generation `token` was minted for, if it is a genuine token of subscription `id`
    /// (created with `nonce`).
    pub fn check_token(&self, token: &str, id: &str, nonce: &str) -> Option<u64> {
        let (generation, signature) = token.split_once('.')?;
        let generation: u64 = generation.parse().ok()?;
        let bytes: [u8; 64] = base64url_decode(signature)?.try_into().ok()?;
        let signature = Signature::from_bytes(&bytes);
        self.public
            .verify(token_text(id, nonce, generation).as_bytes(), &signature)
            .ok()?;
        Some(generation)
    }
}

/// Whether `token` has a wake token's shape (`<generation>.<64-byte signature>`): anything
/// else is refused without reading a subscription.
pub fn token_shaped(token: &str) -> bool {
    token
        .split_once('.')
        .is_some_and(|(generation, signature)| {
            generation.parse::<u64>().is_ok()
                && base64url_decode(signature).is_some_and(|bytes| bytes.len() == 64)
        })
}

fn token_text(id: &str, nonce: &str, generation: u64) -> String {
    format!("liveresults subscription wake token\n{id}\n{nonce}\n{generation}")
}

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| StoreError::Backend(format!("no randomness from the OS: {e}")))?;
    Ok(bytes)
}

/// A random identifier: `prefix` and 16 random bytes, base64url.
pub fn random_id(prefix: &str) -> Result<String, StoreError> {
    Ok(format!("{prefix}{}", base64url(&random_bytes::<16>()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_for_their_subscription() {
        let signer = Signer::from_seed(&[7; SEED_BYTES]);
        let token = signer.token("sub", "n1", 3);
        assert_eq!(signer.check_token(&token, "sub", "n1"), Some(3));
        assert_eq!(signer.check_token(&token, "sub", "n2"), None);
        assert_eq!(signer.check_token(&token, "other", "n1"), None);
        let forged = token.replacen("3.", "4.", 1);
        assert_eq!(signer.check_token(&forged, "sub", "n1"), None);
        assert_eq!(signer.check_token("garbage", "sub", "n1"), None);
        assert!(token_shaped(&token) && token_shaped(&forged));
        assert!(!token_shaped("garbage") && !token_shaped("1.AAAA") && !token_shaped("x.AAAA"));
        let other = Signer::from_seed(&[8; SEED_BYTES]);
        assert_eq!(other.check_token(&token, "sub", "n1"), None);
        assert!(signer.kid().starts_with("ds_"));
    }

    #[test]
    fn base64url_round_trips() {
        for len in 0..10 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 250) as u8).collect();
            let text = base64url(&bytes);
            assert!(!text.contains('=') && !text.contains('+') && !text.contains('/'));
            assert_eq!(base64url_decode(&text), Some(bytes));
        }
        assert_eq!(base64url(b"\xfb\xff"), "-_8");
        assert_eq!(base64url_decode("a"), None);
    }
}
