//! [`Subscriptions`]: the subscription API's operations over the [`SubscriptionStore`].
//!
//! Every change is [`Subscriptions::update`]: read the record, decide, write it back only if
//! it is still what was read (else read again and decide again). A decision that fails (a
//! fenced ack, a busy claim) writes nothing, so a refused request never moves a cursor.
//! Records are also cached in memory for the delivery task's scan; requests always read the
//! store, so on a shared store a host never answers from a stale copy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::error::SubscriptionError as E;
use super::signing::{random_bytes, random_id, Signer};
use super::store::{MemorySubscriptionStore, SubscriptionStore};
use super::wire::WakeRequest;
use super::{has_pending, Config, Kind, Link, Record, StreamView, SubscriptionLimits, Wake};
use crate::engine::{backoff, Engine, MAX_ATTEMPTS};
use crate::meta::StreamMeta;
use crate::offset::parse_position;
use crate::store::StoreError;
use crate::time::now_ms;

/// Names of streams written since the delivery task last looked, at most this many (beyond,
/// it re-scans every stream instead).
const MAX_TOUCHED: usize = 10_000;

/// Streams written since the delivery task last looked.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    pub(crate) names: BTreeSet<String>,
    /// Re-scan every stream (at start, and after an overflow).
    pub(crate) all: bool,
}

/// A successful claim.
#[derive(Debug)]
pub struct Claimed {
    /// The wake claimed.
    pub record: Record,
    /// The claim's token.
    pub token: String,
}

/// The subscription service of one [`crate::Streams`].
pub struct Subscriptions {
    pub(crate) store: Arc<dyn SubscriptionStore>,
    pub(crate) engine: Arc<Engine>,
    pub(crate) signer: Signer,
    pub(crate) limits: SubscriptionLimits,
    /// Every record this host knows (complete on a single-writer store; refreshed every
    /// second from a shared one).
    pub(crate) cache: Mutex<HashMap<String, Arc<Record>>>,
    pub(crate) touched: Mutex<Touched>,
    /// Wakes the delivery task.
    pub(crate) wakeup: Notify,
    /// Webhook wakes being delivered by this host: `(id, generation)`.
    pub(crate) in_flight: Mutex<super::in_flight::InFlight>,
    /// Subscriptions whose refused pattern match was logged (see [`Self::note_link_cap`]).
    pub(crate) link_cap_warned: Mutex<BTreeSet<String>>,
    pub(crate) client: reqwest::Client,
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriptions")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Subscriptions {
    /// Loads the subscriptions and the signing key of `engine`'s store and starts the
    /// delivery task (it ends at `stop`).
    pub async fn open(
        engine: Arc<Engine>,
        limits: SubscriptionLimits,
        stop: CancellationToken,
    ) -> Result<Arc<Subscriptions>, StoreError> {
        let store = (engine.store.subscriptions())
            .unwrap_or_else(|| Arc::new(MemorySubscriptionStore::default()));
        let seed = store.signing_seed(random_bytes()?).await?;
        let client = super::webhook_client::webhook_client(limits.allow_dev_webhooks)?;
        let subscriptions = Arc::new(Subscriptions {
            store,
            engine,
            signer: Signer::from_seed(&seed),
            limits,
            cache: Mutex::default(),
            touched: Mutex::new(Touched {
                names: BTreeSet::new(),
                all: true,
            }),
            wakeup: Notify::new(),
            in_flight: Mutex::default(),
            link_cap_warned: Mutex::default(),
            client,
        });
        subscriptions.reload().await?;
        super::delivery::spawn(Arc::downgrade(&subscriptions), stop);
        Ok(subscriptions)
    }

    /// Replaces the cache with the store's records.
    pub(crate) async fn reload(&self) -> Result<(), StoreError> {
        let mut fresh = HashMap::new();
        for (id, bytes) in self.store.load_all().await? {
            match Record::decode(&bytes) {
                Ok(record) => {
                    fresh.insert(id, Arc::new(record));
                }
                Err(e) => tracing::error!(subscription = id, error = %e, "unreadable subscription"),
            }
        }
        *lock(&self.cache) = fresh;
        Ok(())
    }

    /// The signing key.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Tells the delivery task that stream `name` was written (created, appended, closed).
    pub fn touched(&self, name: &str) {
        {
            let mut touched = lock(&self.touched);
            if touched.names.len() < MAX_TOUCHED {
                touched.names.insert(name.to_owned());
            } else {
                touched.all = true;
            }
        }
        self.wakeup.notify_one();
    }

    /// The meta of stream `name` as this host sees it, unless deleted.
    pub(crate) fn meta(&self, name: &str) -> Option<Arc<StreamMeta>> {
        (self.engine.slot(name)?.meta()).filter(|m| !m.soft_deleted)
    }

    pub(crate) fn view(&self, name: &str) -> StreamView {
        self.meta(name).map(|m| (m.id, m.tail))
    }

    fn remember(&self, record: &Record) {
        lock(&self.cache).insert(record.id.clone(), Arc::new(record.clone()));
    }

    /// Reads, changes with `f` and writes back subscription `id`, again from the read while
    /// another writer beats it. `f` failing writes nothing.
    pub(crate) async fn update<T>(
        &self,
        id: &str,
        mut f: impl FnMut(&mut Record, u64) -> Result<T, E>,
    ) -> Result<(T, Record), E> {
        for attempt in 0..MAX_ATTEMPTS {
            let Some(bytes) = self.store.load(id).await? else {
                lock(&self.cache).remove(id);
                return Err(E::NotFound(id.to_owned()));
            };
            let mut record = Record::decode(&bytes)?;
            let out = f(&mut record, now_ms())?;
            let new = record.encode();
            if new != bytes && !self.store.swap(id, Some(&bytes), Some(&new)).await? {
                backoff(attempt).await;
                continue;
            }
            self.remember(&record);
            return Ok((out, record));
        }
        Err(E::Contended(id.to_owned()))
    }

    /// A new link to `name`: at its tail (nothing old is pending), or at its beginning when
    /// `from_start`.
    pub(crate) fn new_link(&self, name: &str, explicit: bool, from_start: bool) -> Link {
        let view = self.view(name);
        Link {
            explicit,
            glob: !explicit,
            acked: if from_start {
                None
            } else {
                Some(view.map_or(0, |v| v.1))
            },
            stream_id: view.map(|v| v.0),
        }
    }

    /// Creates subscription `id` (`Ok(true)`), or re-confirms it when it exists with the same
    /// configuration (`Ok(false)`).
    pub async fn create(
        &self,
        id: &str,
        config: Config,
        base_url: &str,
    ) -> Result<(bool, Record), E> {
        for attempt in 0..MAX_ATTEMPTS {
            if let Some(bytes) = self.store.load(id).await? {
                let record = Record::decode(&bytes)?;
                self.remember(&record);
                return if record.config == config {
                    Ok((false, record))
                } else {
                    Err(E::Exists(id.to_owned()))
                };
            }
            let count = lock(&self.cache).len();
            if count >= self.limits.max_subscriptions {
                tracing::warn!(
                    subscription = id,
                    count,
                    "subscription create refused: too many"
                );
                return Err(E::TooManySubscriptions(self.limits.max_subscriptions));
            }
            let mut links = BTreeMap::new();
            for name in &config.streams {
                links.insert(name.clone(), self.new_link(name, true, false));
            }
            if let Some(pattern) = &config.pattern {
                for slot in self.engine.all_slots() {
                    let name = &slot.name;
                    if !self.may_glob_link(&config, name) || self.meta(name).is_none() {
                        continue;
                    }
                    match links.get_mut(name) {
                        Some(link) => link.glob = true,
                        None if super::input::glob_match(pattern, name) => {
                            links.insert(name.clone(), self.new_link(name, false, false));
                        }
                        None => {}
                    }
                    if links.len() > self.limits.max_streams_per_subscription {
                        return Err(E::TooManyStreams(self.limits.max_streams_per_subscription));
                    }
                }
            }
            if links.len() > self.limits.max_streams_per_subscription {
                return Err(E::TooManyStreams(self.limits.max_streams_per_subscription));
            }
            self.check_total_links(id, links.len())?;
            let record = Record {
                v: super::RECORD_VERSION,
                id: id.to_owned(),
                config: config.clone(),
                created_ms: now_ms(),
                base_url: base_url.to_owned(),
                nonce: random_id("")?,
                links,
                generation: 0,
                wake: None,
                failures: 0,
                next_attempt_ms: None,
            };
            if self.store.swap(id, None, Some(&record.encode())).await? {
                self.remember(&record);
                tracing::info!(
                    subscription = id,
                    kind = config.kind.name(),
                    "subscription created"
                );
                self.wakeup.notify_one();
                return Ok((true, record));
            }
            backoff(attempt).await;
        }
        Err(E::Contended(id.to_owned()))
    }

    /// Whether `config`'s pattern may link stream `name` (not its own wake stream, which
    /// would wake itself forever, nor a control path).
    pub(crate) fn may_glob_link(&self, config: &Config, name: &str) -> bool {
        config
            .pattern
            .as_deref()
            .is_some_and(|p| super::input::glob_match(p, name))
            && config.wake_stream.as_deref() != Some(name)
            && name.split('/').next() != Some("__ds")
    }

    /// The stored record of `id`.
    pub async fn get(&self, id: &str) -> Result<Record, E> {
        let bytes = self
            .store
            .load(id)
            .await?
            .ok_or_else(|| E::NotFound(id.to_owned()))?;
        let record = Record::decode(&bytes)?;
        self.remember(&record);
        Ok(record)
    }

    /// Deletes `id` (idempotent): its wake in flight is fenced, since every callback, ack
    /// and release reads the record first.
    pub async fn delete(&self, id: &str) -> Result<(), E> {
        for attempt in 0..MAX_ATTEMPTS {
            let Some(bytes) = self.store.load(id).await? else {
                lock(&self.cache).remove(id);
                return Ok(());
            };
            if self.store.swap(id, Some(&bytes), None).await? {
                lock(&self.cache).remove(id);
                lock(&self.link_cap_warned).remove(id);
                tracing::info!(subscription = id, "subscription deleted");
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(E::Contended(id.to_owned()))
    }

    /// Links `paths` explicitly (already linked ones keep their cursor).
    pub async fn add_streams(&self, id: &str, paths: &[String]) -> Result<(), E> {
        let max = self.limits.max_streams_per_subscription;
        self.update(id, |record, _| {
            if let Some(wake) = &record.config.wake_stream {
                super::input::own_wake_stream(wake, paths)?;
            }
            let before = record.links.len();
            for path in paths {
                match record.links.get_mut(path) {
                    Some(link) => link.explicit = true,
                    None => {
                        record
                            .links
                            .insert(path.clone(), self.new_link(path, true, false));
                    }
                }
            }
            if record.links.len() > max {
                return Err(E::TooManyStreams(max));
            }
            if record.links.len() > before {
                self.check_total_links(id, record.links.len())?;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Removes the explicit link to `path` (a glob link stays).
    pub async fn remove_stream(&self, id: &str, path: &str) -> Result<(), E> {
        self.update(id, |record, _| {
            if let Some(link) = record.links.get_mut(path) {
                link.explicit = false;
                if !link.glob {
                    record.links.remove(path);
                }
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// The generation `token` was minted for, if it is a genuine token of `record`.
    fn authenticate(&self, record: &Record, token: &str) -> Result<u64, E> {
        (self.signer.check_token(token, &record.id, &record.nonce)).ok_or(E::TokenInvalid)
    }

    /// Checks the wake a request with a token of `generation` names against the current one.
    fn fence(
        &self,
        record: &Record,
        generation: u64,
        request: &WakeRequest,
        now: u64,
    ) -> Result<(), E> {
        let wake = record.wake.as_ref().ok_or(E::Fenced)?;
        let current = generation == record.generation
            && request.generation == Some(record.generation)
            && request.wake_id.as_deref() == Some(wake.id.as_str())
            && wake.lease_until_ms.is_none_or(|until| now < until);
        if current {
            Ok(())
        } else {
            Err(E::Fenced)
        }
    }

    /// Applies acks: all are checked first, so a bad one applies none.
    fn apply_acks(&self, record: &mut Record, acks: &[(String, String)]) -> Result<(), E> {
        let mut checked = Vec::with_capacity(acks.len());
        for (stream, offset) in acks {
            let bad = |why: &str| E::InvalidOffset(format!("ack of {stream:?}: {why}"));
            let link = record
                .links
                .get(stream)
                .ok_or_else(|| bad("not a stream of the subscription"))?;
            if offset == "-1" {
                return Err(bad("the offset must not be -1"));
            }
            let position =
                parse_position(offset).map_err(|_| bad("not an offset of this server"))?;
            if link.acked.is_some_and(|acked| position < acked) {
                return Err(bad("the offset is before the acknowledged one"));
            }
            if position > self.view(stream).map_or(0, |v| v.1) {
                return Err(bad("the offset is beyond the stream's tail"));
            }
            checked.push((stream, position));
        }
        for (stream, position) in checked {
            if let Some(link) = record.links.get_mut(stream) {
                link.acked = Some(position);
            }
        }
        Ok(())
    }

    /// Whether any linked stream has data past its cursor.
    pub(crate) fn pending(&self, record: &Record) -> Option<String> {
        (record.links.iter())
            .find(|(name, link)| has_pending(link, self.view(name)))
            .map(|(name, _)| name.clone())
    }

    /// Issues the next wake if work is pending (`Ok(true)`); the delivery task delivers it.
    pub(crate) fn next_wake(&self, record: &mut Record, now: u64) -> Result<bool, E> {
        let Some(trigger) = self.pending(record) else {
            return Ok(false);
        };
        record.generation = (record.generation.checked_add(1))
            .ok_or_else(|| E::Invalid("the wake generation is exhausted".into()))?;
        let snapshot = (record.links.keys())
            .filter_map(|name| Some((name.clone(), self.view(name)?.1)))
            .collect();
        let webhook = record.config.kind == Kind::Webhook;
        record.wake = Some(Wake {
            id: random_id("w_")?,
            snapshot,
            trigger,
            holder: None,
            lease_until_ms: webhook.then(|| now.saturating_add(record.config.lease_ttl_ms)),
            announced: false,
        });
        Ok(true)
    }

    /// Ends the current wake (acks applied) and issues the next if work is pending.
    fn finish_wake(&self, record: &mut Record, now: u64) -> Result<bool, E> {
        record.wake = None;
        self.next_wake(record, now)
    }

    /// `POST …/callback` (webhook) and `POST …/ack` (pull-wake): acks, a lease extension,
    /// and with `done` the end of the wake. `Ok(next_wake)`.
    ///
    /// An offset beyond this host's view of a stream's tail may be one another host sees
    /// already (the worker read it there): on a shared store those streams are re-read and
    /// the ack decided again before it is refused.
    pub async fn ack(
        &self,
        id: &str,
        kind: Kind,
        token: &str,
        request: &WakeRequest,
    ) -> Result<bool, E> {
        let attempt = || {
            self.token_route(id, token, |record, generation, now| {
                if record.config.kind != kind {
                    return Err(E::WrongKind(kind.name()));
                }
                self.fence(record, generation, request, now)?;
                self.apply_acks(record, &request.acks)?;
                if request.done {
                    return self.finish_wake(record, now);
                }
                let ttl = record.config.lease_ttl_ms;
                if let Some(wake) = record.wake.as_mut() {
                    wake.lease_until_ms = Some(now.saturating_add(ttl));
                }
                Ok(false)
            })
        };
        let (next, record) = match attempt().await {
            Err(E::InvalidOffset(_)) if self.engine.shared => {
                for (stream, offset) in &request.acks {
                    let tail = self.view(stream).map_or(0, |v| v.1);
                    if parse_position(offset).is_ok_and(|position| position > tail) {
                        self.engine.refresh(stream).await?;
                    }
                }
                attempt().await?
            }
            result => result?,
        };
        if next {
            self.mark_issued(&record);
        }
        Ok(next)
    }

    /// `POST …/release`: ends the claim without acks.
    pub async fn release(&self, id: &str, token: &str, request: &WakeRequest) -> Result<(), E> {
        let (next, record) = self
            .token_route(id, token, |record, generation, now| {
                if record.config.kind != Kind::PullWake {
                    return Err(E::WrongKind("pull-wake"));
                }
                self.fence(record, generation, request, now)?;
                self.finish_wake(record, now)
            })
            .await?;
        if next {
            self.mark_issued(&record);
        }
        Ok(())
    }

    /// [`Self::update`] for a route authenticated by a wake token alone: `f` gets the token's
    /// generation. Without a genuine token of the subscription the answer is
    /// [`E::TokenInvalid`] whether it exists, is of another kind or the token is forged, so
    /// such requests cannot tell which subscriptions exist; a token that is not even shaped
    /// like one is refused before anything is read.
    async fn token_route<T>(
        &self,
        id: &str,
        token: &str,
        mut f: impl FnMut(&mut Record, u64, u64) -> Result<T, E>,
    ) -> Result<(T, Record), E> {
        if !super::signing::token_shaped(token) {
            return Err(E::TokenInvalid);
        }
        let result = self
            .update(id, |record, now| {
                let generation = self.authenticate(record, token)?;
                f(record, generation, now)
            })
            .await;
        result.map_err(|e| match e {
            E::NotFound(_) => E::TokenInvalid,
            e => e,
        })
    }

    /// `POST …/claim`: takes the pending wake (issuing one if work is pending and none is).
    pub async fn claim(&self, id: &str, worker: &str) -> Result<Claimed, E> {
        let (token, record) = self
            .update(id, |record, now| {
                if record.config.kind != Kind::PullWake {
                    return Err(E::WrongKind("pull-wake"));
                }
                if record
                    .wake
                    .as_ref()
                    .and_then(|w| w.lease_until_ms)
                    .is_some_and(|u| u <= now)
                {
                    record.wake = None;
                }
                if let Some(holder) = record.wake.as_ref().and_then(|w| w.holder.clone()) {
                    return Err(E::AlreadyClaimed {
                        holder,
                        generation: record.generation,
                    });
                }
                if record.wake.is_none() {
                    // The claimer learns of the wake from the answer: no event needed.
                    if !self.next_wake(record, now)? {
                        return Err(E::NoPendingWork);
                    }
                    if let Some(wake) = record.wake.as_mut() {
                        wake.announced = true;
                    }
                } else if self.pending(record).is_none() {
                    return Err(E::NoPendingWork);
                }
                let ttl = record.config.lease_ttl_ms;
                if let Some(wake) = record.wake.as_mut() {
                    wake.holder = Some(worker.to_owned());
                    wake.lease_until_ms = Some(now.saturating_add(ttl));
                }
                Ok(self
                    .signer
                    .token(&record.id, &record.nonce, record.generation))
            })
            .await?;
        Ok(Claimed { record, token })
    }
}
