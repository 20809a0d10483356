//! The delivery task: links streams that newly match a pattern, expires leases, issues wakes
//! for pending work and delivers them — a signed webhook `POST`, or a wake event appended to
//! the pull-wake subscription's wake stream.
//!
//! It runs when a stream is written through this host ([`Subscriptions::touched`]), when a
//! request issued a wake, and every [`TICK`] (lease expiry, retry schedules, changes made on
//! other hosts). Every change it makes is a compare-and-swap of the record, like a request's,
//! so hosts sharing a Redis store never issue two wakes for one generation; only the host
//! that issued a webhook wake delivers it (after a crash the lease expires and the next wake
//! is delivered), while any host may append a pull-wake's event (a duplicate names the same
//! generation, and claims are fenced).
//!
//! A failed webhook delivery ends its wake and schedules the next one with exponential
//! backoff (1 s doubling to 60 s, ±20 % jitter, never past 60 s); the schedule is in the
//! record, so a restart honours it. The status reads `failed` until a delivery succeeds.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::error::SubscriptionError;
use super::manager::{lock, Subscriptions};
use super::signing::random_bytes;
use super::{Kind, Record};
use crate::append::AppendRequest;
use crate::error::StreamError;
use crate::time::now_ms;

/// Interval of the scan for expired leases, due retries and other hosts' changes.
pub const TICK: Duration = Duration::from_millis(250);
/// How often a shared store's records are re-read into the cache.
const REFRESH: Duration = Duration::from_secs(1);
/// Longest webhook request.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of a webhook response read (for its `done`).
const MAX_RESPONSE_BYTES: usize = 64 << 10;
const MAX_RETRY_DELAY_MS: u64 = 60_000;

/// Starts the task; it ends at `stop` or when the service is dropped.
pub(crate) fn spawn(subscriptions: Weak<Subscriptions>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refreshed = Instant::now();
        loop {
            let Some(subs) = subscriptions.upgrade() else {
                return;
            };
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
                () = subs.wakeup.notified() => {}
            }
            if subs.engine.shared && refreshed.elapsed() >= REFRESH {
                refreshed = Instant::now();
                if let Err(e) = subs.reload().await {
                    tracing::warn!(error = %e, "reloading subscriptions failed; retrying");
                }
            }
            subs.pass().await;
        }
    });
}

/// The delay before the next webhook attempt after `failures` failures in a row.
pub fn retry_delay_ms(failures: u32) -> u64 {
    let base = (1000u64 << failures.saturating_sub(1).min(6)).min(MAX_RETRY_DELAY_MS);
    let random = random_bytes::<1>().map_or(128, |b| i64::from(b[0]));
    let jitter = (base as i64 / 5) * (random - 128) / 128;
    base.saturating_add_signed(jitter).min(MAX_RETRY_DELAY_MS)
}

impl Subscriptions {
    /// One pass: new pattern matches, then every subscription's state.
    async fn pass(self: &Arc<Self>) {
        let touched = std::mem::take(&mut *lock(&self.touched));
        self.discover(touched.names, touched.all).await;
        let records: Vec<Arc<Record>> = lock(&self.cache).values().cloned().collect();
        // Wakes issued here for subscriptions since deleted (or moved on) are not delivered.
        let generations = (records.iter())
            .map(|r| (r.id.as_str(), r.generation))
            .collect();
        super::in_flight::prune(&mut lock(&self.in_flight), &generations);
        for record in records {
            // One subscription's step at a time: other tasks run between them.
            tokio::task::yield_now().await;
            match self.step(&record).await {
                Err(SubscriptionError::NotFound(_)) => {
                    lock(&self.in_flight).retain(|(id, _)| *id != record.id);
                }
                Err(e) => {
                    tracing::warn!(subscription = record.id, error = %e, "subscription step failed");
                }
                Ok(()) => {}
            }
        }
    }

    /// Links streams among `names` (every stream when `all`) that match a pattern and are not
    /// linked yet: from their beginning when created after the subscription (the append that
    /// revealed them is pending), else at their tail.
    async fn discover(&self, names: std::collections::BTreeSet<String>, all: bool) {
        let records: Vec<Arc<Record>> = (lock(&self.cache).values())
            .filter(|r| r.config.pattern.is_some())
            .cloned()
            .collect();
        if records.is_empty() {
            return;
        }
        let names: Vec<String> = if all {
            self.engine
                .all_slots()
                .iter()
                .map(|s| s.name.clone())
                .collect()
        } else {
            names.into_iter().collect()
        };
        let (max, total) = (
            self.limits.max_streams_per_subscription,
            self.limits.max_total_links,
        );
        for record in records {
            let mut new: Vec<&String> = Vec::new();
            for (i, n) in names.iter().enumerate() {
                // Up to 100,000 names per pattern: other tasks run every few hundred matches.
                if i % 256 == 255 {
                    tokio::task::yield_now().await;
                }
                if !record.links.contains_key(n)
                    && self.may_glob_link(&record.config, n)
                    && self.meta(n).is_some()
                {
                    new.push(n);
                }
            }
            if new.is_empty() {
                continue;
            }
            let elsewhere = self.links_elsewhere(&record.id);
            let full = |r: &Record| {
                r.links.len() >= max || elsewhere.saturating_add(r.links.len()) >= total
            };
            if full(&record) {
                self.refresh_glob_links(&record).await;
            }
            let linked = self.update(&record.id, |r, now| {
                for name in &new {
                    if r.links.contains_key(*name) {
                        continue;
                    }
                    if full(r) {
                        self.drop_dead_glob_links(r, now);
                    }
                    if full(r) {
                        return Ok(Some((*name).clone()));
                    }
                    let from_start = self
                        .meta(name)
                        .is_some_and(|m| m.created_ms >= r.created_ms);
                    r.links
                        .insert((*name).clone(), self.new_link(name, false, from_start));
                }
                Ok(None)
            });
            match linked.await {
                Ok((refused, _)) => self.note_link_cap(&record.id, refused.as_deref()),
                Err(e) => {
                    tracing::warn!(subscription = record.id, error = %e, "linking matched streams failed");
                }
            }
        }
    }

    /// Brings one subscription up to date (stream ids, lease, next wake) and delivers its
    /// wake if that is due here.
    async fn step(self: &Arc<Self>, cached: &Arc<Record>) -> Result<(), SubscriptionError> {
        let now = now_ms();
        let mut probe = Record::clone(cached);
        self.advance(&mut probe, now)?;
        let mut record = Record::clone(cached);
        if probe != record {
            let (issued, committed) = self
                .update(&cached.id, |r, now| self.advance(r, now))
                .await?;
            if issued {
                self.mark_issued(&committed);
            }
            record = committed;
        }
        let Some(wake) = record.wake.as_ref().filter(|w| !w.announced) else {
            return Ok(());
        };
        match record.config.kind {
            Kind::Webhook => {
                let ours = lock(&self.in_flight).remove(&(record.id.clone(), record.generation));
                if ours && wake.lease_until_ms.is_some_and(|u| now < u) {
                    tokio::spawn(Arc::clone(self).deliver(record));
                }
            }
            Kind::PullWake => self.announce(&record).await?,
        }
        Ok(())
    }

    /// The state changes due at `now`; `Ok(true)` when a wake was issued.
    fn advance(&self, record: &mut Record, now: u64) -> Result<bool, SubscriptionError> {
        for (name, link) in &mut record.links {
            if let Some((id, _)) = self.view(name) {
                // Ids only grow: a newer one is the stream deleted and created again (all of
                // it unprocessed); an older one is a lagging view, never a reason to reset.
                if link.stream_id.is_some_and(|old| old < id) {
                    link.acked = None;
                }
                if link.stream_id.is_none_or(|old| old < id) {
                    link.stream_id = Some(id);
                }
            }
        }
        let expired =
            (record.wake.as_ref()).is_some_and(|w| w.lease_until_ms.is_some_and(|u| u <= now));
        if expired {
            tracing::info!(
                subscription = record.id,
                generation = record.generation,
                "wake lease expired"
            );
            record.wake = None;
        }
        let due = record.config.kind == Kind::PullWake
            || record.next_attempt_ms.is_none_or(|at| at <= now);
        if record.wake.is_none() && due {
            return self.next_wake(record, now);
        }
        Ok(false)
    }

    /// Notes that this host issued `record`'s current webhook wake: it delivers it.
    pub(crate) fn mark_issued(&self, record: &Record) {
        if record.config.kind == Kind::Webhook && record.wake.is_some() {
            lock(&self.in_flight).insert((record.id.clone(), record.generation));
        }
        self.wakeup.notify_one();
    }

    /// Appends the pull-wake event of `record`'s wake to its wake stream, then marks the
    /// wake announced. A missing or refusing wake stream is logged and not retried (workers
    /// can still claim); a store failure is retried at the next pass.
    async fn announce(&self, record: &Record) -> Result<(), SubscriptionError> {
        let (Some(stream), Some(wake)) = (&record.config.wake_stream, &record.wake) else {
            return Ok(());
        };
        let event = json!({
            "type": "wake",
            "subscription_id": record.id,
            "stream": wake.trigger,
            "generation": record.generation,
            "ts": now_ms(),
        });
        let request = AppendRequest {
            body: Bytes::from(event.to_string()),
            content_type: Some("application/json".to_owned()),
            ..AppendRequest::default()
        };
        match self.engine.append(stream, request).await {
            Ok(_) => self.touched(stream),
            Err(e @ (StreamError::Store(_) | StreamError::ShuttingDown)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(subscription = record.id, stream, error = %e, "wake event not appended");
            }
        }
        let (generation, wake_id) = (record.generation, wake.id.clone());
        self.update(&record.id, |r, _| {
            if r.generation == generation {
                if let Some(w) = r.wake.as_mut().filter(|w| w.id == wake_id) {
                    w.announced = true;
                }
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// POSTs `record`'s wake to its webhook and records the outcome.
    async fn deliver(self: Arc<Self>, record: Record) {
        let (Some(wake), Some(url)) = (record.wake.clone(), record.config.webhook_url.clone())
        else {
            return;
        };
        let id = record.id.clone();
        let body = json!({
            "subscription_id": id,
            "wake_id": wake.id,
            "generation": record.generation,
            "streams": self.stream_infos(&record, Some(&wake.snapshot)),
            "callback_url": format!("{}/v1/stream/__ds/subscriptions/{id}/callback", record.base_url),
            "callback_token": self.signer.token(&id, &record.nonce, record.generation),
        })
        .to_string();
        let outcome = self.post(&url, body).await;
        if let Err(e) = &outcome {
            tracing::warn!(subscription = id, generation = record.generation, error = %e, "webhook delivery failed; retrying later");
        }
        let generation = record.generation;
        let result = self
            .update(&id, |r, now| {
                if r.generation != generation || r.wake.as_ref().is_none_or(|w| w.id != wake.id) {
                    return Ok(false);
                }
                match &outcome {
                    Ok(done) => {
                        r.failures = 0;
                        r.next_attempt_ms = None;
                        if !done {
                            if let Some(w) = r.wake.as_mut() {
                                w.announced = true;
                            }
                            return Ok(false);
                        }
                        for (name, tail) in &wake.snapshot {
                            if let Some(link) = r.links.get_mut(name) {
                                link.acked = Some(link.acked.map_or(*tail, |a| a.max(*tail)));
                            }
                        }
                        r.wake = None;
                        self.next_wake(r, now)
                    }
                    Err(_) => {
                        r.wake = None;
                        r.failures = r.failures.saturating_add(1);
                        r.next_attempt_ms = Some(now.saturating_add(retry_delay_ms(r.failures)));
                        Ok(false)
                    }
                }
            })
            .await;
        match result {
            Ok((true, committed)) => self.mark_issued(&committed),
            Ok((false, _)) | Err(SubscriptionError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(subscription = id, error = %e, "recording a webhook delivery failed");
            }
        }
    }

    /// The POST itself: `Ok(done)` on a 2xx answer.
    ///
    /// The URL is checked again with today's rules (a record stored before a rule was added,
    /// or by a server started with `--allow-dev-webhooks`, must not reach an address the
    /// rules now refuse), and errors leave the URL out: its query may hold a secret.
    async fn post(&self, url: &str, body: String) -> Result<bool, String> {
        super::input::webhook_url(url, self.limits.allow_dev_webhooks)
            .map_err(|e| format!("the webhook URL is not allowed: {e}"))?;
        let unix_secs = now_ms() / 1000;
        let signature = self.signer.webhook_signature(body.as_bytes(), unix_secs);
        let mut response = (self.client.post(url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-signature", signature)
            .timeout(WEBHOOK_TIMEOUT)
            .body(body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !response.status().is_success() {
            return Err(format!("the webhook answered {}", response.status()));
        }
        let mut answer = Vec::new();
        while let Some(chunk) = (response.chunk().await).map_err(|e| e.without_url().to_string())? {
            if answer.len().saturating_add(chunk.len()) > MAX_RESPONSE_BYTES {
                return Ok(false);
            }
            answer.extend_from_slice(&chunk);
        }
        let answer: Option<Value> = serde_json::from_slice(&answer).ok();
        Ok(answer.and_then(|v| v.get("done")?.as_bool()) == Some(true))
    }
}
