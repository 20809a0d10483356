//! Base64 (RFC 4648), in one place for its two uses: standard base64 (`+` `/`, padded) for
//! the SSE data events of binary streams (the protocol's §5.8), and unpadded base64url (§5)
//! for the subscription API's JWKs, signatures and tokens.

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Appends the text of `bytes` in `alphabet` to `out`, padded with `=` or not.
fn encode(bytes: &[u8], alphabet: &[u8; 64], pad: bool, out: &mut Vec<u8>) {
    out.reserve(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // A chunk of k bytes carries k + 1 sextets; the rest of its 4 characters is padding.
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize]);
            } else if pad {
                out.push(b'=');
            }
        }
    }
}

/// Appends the standard base64 text of `bytes` to `out`.
pub fn encode_into(bytes: &[u8], out: &mut Vec<u8>) {
    encode(bytes, STANDARD, true, out);
}

/// Unpadded base64url, as JWKs, signature headers and tokens want it.
pub fn base64url(bytes: &[u8]) -> String {
    let mut out = Vec::new();
    encode(bytes, URL, false, &mut out);
    // Only alphabet bytes were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Decodes unpadded base64url; `None` on any other character or an impossible length.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = URL.iter().position(|&a| a == c)?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (bits < 6 && acc == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standard(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        encode_into(bytes, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("Hello", "SGVsbG8="),
        ] {
            assert_eq!(standard(input.as_bytes()), expected);
        }
        assert_eq!(standard(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn base64url_round_trips_unpadded() {
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xff, 0xfe, 0xfd]), "__79");
        for n in 0..40u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64url_decode(&base64url(&bytes)), Some(bytes));
        }
        assert_eq!(
            base64url_decode("Zm9vYg=="),
            None,
            "padding is not base64url here"
        );
        assert_eq!(base64url_decode("Z"), None, "impossible length");
    }
}
