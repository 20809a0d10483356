//! The subscription API's JSON: what wake requests carry in, and how subscriptions and their
//! streams are shown (GET, claims, webhook bodies).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::error::SubscriptionError as E;
use super::manager::Subscriptions;
use super::{offset_text, Record};
use crate::offset::format_offset;

/// The body of a callback, ack or release.
#[derive(Debug, Default)]
pub struct WakeRequest {
    /// `wake_id`.
    pub wake_id: Option<String>,
    /// `generation`.
    pub generation: Option<u64>,
    /// `acks`: stream and offset.
    pub acks: Vec<(String, String)>,
    /// `done: true`.
    pub done: bool,
}

impl WakeRequest {
    /// Parses a body; anything malformed is `INVALID_REQUEST`.
    pub fn parse(body: &[u8]) -> Result<WakeRequest, E> {
        let invalid = |why: &str| E::Invalid(why.to_owned());
        let body: Value = if body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(body).map_err(|_| invalid("invalid JSON body"))?
        };
        let mut acks = Vec::new();
        if let Some(list) = body.get("acks").filter(|v| !v.is_null()) {
            for ack in list
                .as_array()
                .ok_or_else(|| invalid("acks must be an array"))?
            {
                let stream = (ack.get("stream").or_else(|| ack.get("path")))
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("each ack needs a stream"))?;
                let offset = (ack.get("offset").and_then(Value::as_str))
                    .ok_or_else(|| invalid("each ack needs an offset"))?;
                acks.push((stream.trim_matches('/').to_owned(), offset.to_owned()));
            }
        }
        Ok(WakeRequest {
            wake_id: body
                .get("wake_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
            generation: body.get("generation").and_then(Value::as_u64),
            acks,
            done: body.get("done").and_then(Value::as_bool) == Some(true),
        })
    }
}

impl Subscriptions {
    /// The linked streams as the protocol shows them; `tails` overrides the live tails (a
    /// wake's snapshot).
    pub fn stream_infos(
        &self,
        record: &Record,
        tails: Option<&BTreeMap<String, u64>>,
    ) -> Vec<Value> {
        (record.links.iter())
            .map(|(name, link)| {
                let tail = match tails {
                    Some(tails) => tails.get(name).copied(),
                    None => self.view(name).map(|v| v.1),
                };
                json!({
                    "path": name,
                    "link_type": if link.explicit { "explicit" } else { "glob" },
                    "acked_offset": offset_text(link.acked),
                    "tail_offset": format_offset(tail.unwrap_or(0)),
                    "has_pending": tail.is_some_and(|t| t > link.acked.unwrap_or(0)),
                })
            })
            .collect()
    }

    /// A subscription as `GET` shows it; `base_url` is where the request came in.
    pub fn describe(&self, record: &Record, base_url: &str) -> Value {
        let streams: Vec<Value> = (record.links.iter())
            .map(|(name, link)| {
                json!({
                    "path": name,
                    "link_type": if link.explicit { "explicit" } else { "glob" },
                    "acked_offset": offset_text(link.acked),
                })
            })
            .collect();
        let config = &record.config;
        json!({
            "id": record.id,
            "subscription_id": record.id,
            "type": config.kind.name(),
            "pattern": config.pattern,
            "streams": streams,
            "webhook": config.webhook_url.as_ref().map(|url| json!({
                "url": url,
                "signing": {
                    "alg": "ed25519",
                    "kid": self.signer.kid(),
                    "jwks_url": format!("{base_url}/v1/stream/__ds/jwks.json"),
                },
            })),
            "wake_stream": config.wake_stream,
            "lease_ttl_ms": config.lease_ttl_ms,
            "created_at": crate::time::format_rfc3339(record.created_ms),
            "status": record.status(),
            "description": config.description,
        })
    }
}
