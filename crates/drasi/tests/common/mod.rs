//! What the tests with a real drasi-lib share: the two queries, a seeded Order workload, and
//! the comparison of our rows with Drasi's own snapshot.
#![allow(dead_code)] // each test binary uses its own part

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use drasi_lib::queries::output_state::SnapshotStream;
use drasi_lib::{DrasiLib, Query};
use drasi_source_application::{
    ApplicationSource, ApplicationSourceConfig, ApplicationSourceHandle, PropertyMapBuilder,
};
use liveresults_core::codec::row::decode_row;
use liveresults_core::row::Value;
use liveresults_core::ResultStore;
use liveresults_drasi::LiveResultsReaction;

pub const SOURCE: &str = "orders";
pub const BIG: &str = "big";
pub const SPENT: &str = "spent";
pub const QUERIES: [&str; 2] = [BIG, SPENT];
pub const BIG_QUERY: &str =
    "MATCH (o:Order) WHERE o.total > 100 RETURN o.id AS id, o.total AS total";
pub const SPENT_QUERY: &str =
    "MATCH (o:Order) RETURN o.customer AS customer, sum(o.total) AS spent";

/// Routes logs through the test harness (shown for failing tests only), at `warn` unless
/// `RUST_LOG` says otherwise. Must come before `DrasiLib::build()`, which otherwise installs a
/// subscriber writing every component event to the process's stdout.
pub fn quiet_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Fails when a subscriber is already installed (an earlier test did it): fine.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(filter)
        .try_init();
}

/// A drasi-lib with the application source, both queries and `reaction`, started.
pub async fn start_drasi(
    reaction: impl drasi_lib::Reaction + 'static,
) -> anyhow::Result<(DrasiLib, ApplicationSourceHandle)> {
    let config = ApplicationSourceConfig {
        properties: HashMap::new(),
        durability: None,
    };
    let (source, handle) = ApplicationSource::new(SOURCE, config)?;
    quiet_logs();
    let core = DrasiLib::builder()
        .with_id("liveresults-test")
        .with_source(source)
        .with_query(
            Query::cypher(BIG)
                .query(BIG_QUERY)
                .from_source(SOURCE)
                .build(),
        )
        .with_query(
            Query::cypher(SPENT)
                .query(SPENT_QUERY)
                .from_source(SOURCE)
                .build(),
        )
        .with_reaction(reaction)
        .build()
        .await?;
    core.start().await?;
    Ok((core, handle))
}

/// Drasi's own current rows of `query`, keyed by signature, and its `as_of_sequence`.
pub async fn drasi_rows(
    core: &DrasiLib,
    query: &str,
) -> anyhow::Result<(u64, BTreeMap<u64, Value>)> {
    let instance = core
        .query_manager()
        .get_query_instance(query)
        .await
        .map_err(anyhow::Error::msg)?;
    let snapshot = instance.fetch_snapshot().await?;
    let as_of = snapshot.as_of_sequence;
    let rows = SnapshotStream::from_snapshot(snapshot)
        .collect_keyed_vec()
        .await;
    Ok((
        as_of,
        rows.into_iter().map(|(k, v)| (k, Value::from(v))).collect(),
    ))
}

/// Our rows of `query`, keyed by signature, and our exact row count.
pub async fn our_rows(
    store: &dyn ResultStore,
    query: &str,
) -> anyhow::Result<(u64, BTreeMap<u64, Value>)> {
    let count = store.query_info(query).await?.row_count;
    let rows = store.snapshot(query, 4096).await?.collect_rows().await?;
    let mut map = BTreeMap::new();
    for (signature, bytes) in rows {
        map.insert(signature, decode_row(&bytes)?);
    }
    Ok((count, map))
}

/// Where one comparison stood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converged {
    /// Drasi's `as_of_sequence` per query.
    pub as_of: Vec<u64>,
    /// Rows per query.
    pub rows: Vec<u64>,
}

/// Waits until, for every query, our rows keyed by signature equal Drasi's snapshot and our
/// row count equals its row count, twice in a row with Drasi's sequences unchanged (so Drasi
/// had nothing left in flight). Fails with the differences after `timeout`.
pub async fn wait_converged(
    core: &DrasiLib,
    store: &dyn ResultStore,
    reaction: &LiveResultsReaction,
    timeout: Duration,
) -> anyhow::Result<Converged> {
    let deadline = Instant::now() + timeout;
    let mut previous: Option<Converged> = None;
    loop {
        reaction.settle().await;
        let mut state = Converged {
            as_of: Vec::new(),
            rows: Vec::new(),
        };
        let mut differences = Vec::new();
        for query in QUERIES {
            let (as_of, theirs) = drasi_rows(core, query).await?;
            let (count, ours) = our_rows(store, query).await?;
            state.as_of.push(as_of);
            state.rows.push(theirs.len() as u64);
            if theirs != ours || count != theirs.len() as u64 {
                let missing = theirs.keys().filter(|k| !ours.contains_key(k)).count();
                let extra = ours.keys().filter(|k| !theirs.contains_key(k)).count();
                let differing = theirs
                    .iter()
                    .filter(|(k, v)| ours.get(k).is_some_and(|o| o != *v))
                    .map(|(k, v)| format!("{k}: drasi {v:?} ours {:?}", ours.get(k)))
                    .take(3)
                    .collect::<Vec<_>>();
                differences.push(format!(
                    "{query} at drasi seq {as_of}: drasi {} rows, ours {} rows (row_count {count}), \
                     {missing} missing, {extra} extra, differing e.g. {differing:?}",
                    theirs.len(),
                    ours.len()
                ));
            }
        }
        if differences.is_empty() {
            if previous.as_ref() == Some(&state) {
                return Ok(state);
            }
            // Equal, but Drasi moved since the last look (or this is the first): look again,
            // within the same deadline, so a state that matches but never settles still ends.
            if Instant::now() > deadline {
                anyhow::bail!(
                    "rows match but Drasi never settled in {timeout:?}: before {previous:?}, now {state:?}"
                );
            }
            previous = Some(state);
        } else {
            previous = None;
            if Instant::now() > deadline {
                anyhow::bail!("not converged: {}", differences.join("; "));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One change the driver pushes into the application source.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Insert {
        id: String,
        customer: String,
        total: f64,
    },
    Update {
        id: String,
        customer: String,
        total: f64,
    },
    Delete {
        id: String,
    },
}

/// A seeded random Order workload; it is the system of record (the application source keeps
/// nothing), so it can push its current nodes again after a restart.
#[derive(Debug, Clone)]
pub struct Workload {
    state: u64,
    next_id: u64,
    /// id -> (customer, total)
    pub live: BTreeMap<String, (String, f64)>,
}

impl Workload {
    pub fn new(seed: u64) -> Self {
        Workload {
            state: seed,
            next_id: 0,
            live: BTreeMap::new(),
        }
    }

    /// SplitMix64: deterministic, no dependency.
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Totals in steps of 0.5 below 250: sums of them are exact in floating point, and about
    /// 60% cross the `> 100` threshold.
    fn total(&mut self) -> f64 {
        self.below(500) as f64 / 2.0
    }

    fn customer(&mut self) -> String {
        format!("c{}", self.below(12))
    }

    /// The next change, applied to the model.
    pub fn next_op(&mut self) -> Op {
        let roll = self.below(100);
        if self.live.len() < 30 || roll < 35 {
            let id = format!("o{}", self.next_id);
            self.next_id += 1;
            let (customer, total) = (self.customer(), self.total());
            self.live.insert(id.clone(), (customer.clone(), total));
            return Op::Insert {
                id,
                customer,
                total,
            };
        }
        let index = self.below(self.live.len() as u64) as usize;
        let Some(id) = self.live.keys().nth(index).cloned() else {
            unreachable!("index below len");
        };
        if roll < 85 {
            let customer = match (self.below(5), self.live.get(&id)) {
                (0, _) | (_, None) => self.customer(),
                (_, Some((c, _))) => c.clone(),
            };
            let total = self.total();
            self.live.insert(id.clone(), (customer.clone(), total));
            Op::Update {
                id,
                customer,
                total,
            }
        } else {
            self.live.remove(&id);
            Op::Delete { id }
        }
    }
}

fn properties(id: &str, customer: &str, total: f64) -> drasi_core::models::ElementPropertyMap {
    PropertyMapBuilder::new()
        .with_string("id", id)
        .with_string("customer", customer)
        .with_float("total", total)
        .build()
}

/// Pushes one change into the application source.
pub async fn push(handle: &ApplicationSourceHandle, op: &Op) -> anyhow::Result<()> {
    match op {
        Op::Insert {
            id,
            customer,
            total,
        } => {
            handle
                .send_node_insert(id.as_str(), vec!["Order"], properties(id, customer, *total))
                .await
        }
        Op::Update {
            id,
            customer,
            total,
        } => {
            handle
                .send_node_update(id.as_str(), vec!["Order"], properties(id, customer, *total))
                .await
        }
        Op::Delete { id } => handle.send_delete(id.as_str(), vec!["Order"]).await,
    }
}

/// Pushes every live node again, as inserts (what a driver does after the host restarted).
pub async fn push_all(handle: &ApplicationSourceHandle, workload: &Workload) -> anyhow::Result<()> {
    for (id, (customer, total)) in &workload.live {
        push(
            handle,
            &Op::Insert {
                id: id.clone(),
                customer: customer.clone(),
                total: *total,
            },
        )
        .await?;
    }
    Ok(())
}
