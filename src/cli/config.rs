//! The TOML configuration file and the policy / key-column flags.
//!
//! ```toml
//! [defaults]
//! policy = "strict"            # strict | auto-reset | auto-skip-gap
//! key_columns = ["id"]         # default: the whole row
//!
//! [queries.orders]
//! key_columns = ["order_id"]
//! policy = "auto-reset"
//! ```
//!
//! Unknown keys are errors naming the file, line and column: a typo must not silently fall
//! back to a default policy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use liveresults::core::signature::KeyColumns;
use liveresults::runtime::{QueryConfig, RecoveryPolicy, RuntimeConfig};
use serde::Deserialize;

use super::CliResult;

/// Gap handling, as spelled on the command line and in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Stop the query on a sequence gap.
    Strict,
    /// Clear the query and ask upstream to re-bootstrap.
    AutoReset,
    /// Log the gap and carry on.
    AutoSkipGap,
}

impl From<Policy> for RecoveryPolicy {
    fn from(p: Policy) -> Self {
        match p {
            Policy::Strict => RecoveryPolicy::Strict,
            Policy::AutoReset => RecoveryPolicy::AutoReset,
            Policy::AutoSkipGap => RecoveryPolicy::AutoSkipGap,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Section,
    #[serde(default)]
    queries: BTreeMap<String, Section>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    policy: Option<Policy>,
    key_columns: Option<Vec<String>>,
}

/// The options shared by every subcommand that runs the pipeline.
#[derive(Debug, clap::Args)]
pub struct PipelineArgs {
    /// TOML file with default and per-query policies and key columns.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Default recovery policy (overrides the file's [defaults]).
    #[arg(long, value_enum)]
    pub policy: Option<Policy>,
    /// Default key columns, comma-separated (overrides the file's [defaults]; default: the
    /// whole row).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub key_columns: Option<Vec<String>>,
}

fn query_config(section: &Section, base: &QueryConfig) -> QueryConfig {
    QueryConfig {
        key_columns: match &section.key_columns {
            Some(cols) if !cols.is_empty() => KeyColumns::Columns(cols.clone()),
            Some(_) => KeyColumns::WholeRow,
            None => base.key_columns.clone(),
        },
        policy: section.policy.map_or(base.policy, Into::into),
    }
}

fn read_file(path: &Path) -> CliResult<File> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))
}

/// The runtime configuration from the file (if any) and the flags (which win).
pub fn runtime_config(args: &PipelineArgs) -> CliResult<RuntimeConfig> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => File::default(),
    };
    let mut defaults = file.defaults.clone();
    if let Some(policy) = args.policy {
        defaults.policy = Some(policy);
    }
    if let Some(cols) = &args.key_columns {
        defaults.key_columns = Some(cols.clone());
    }
    let default_query = query_config(&defaults, &QueryConfig::default());
    let mut config = RuntimeConfig::new().default_query(default_query.clone());
    for (id, section) in &file.queries {
        config = config.query(id.clone(), query_config(section, &default_query));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_name_the_line() {
        let err = toml::from_str::<File>("[defaults]\npolicy = \"strict\"\npolcy = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("polcy"), "{err}");
        let file: File = toml::from_str(
            "[defaults]\npolicy = \"auto-reset\"\n[queries.q]\nkey_columns = [\"id\"]\n",
        )
        .unwrap();
        let base = query_config(&file.defaults, &QueryConfig::default());
        assert_eq!(base.policy, RecoveryPolicy::AutoReset);
        let q = query_config(&file.queries["q"], &base);
        assert_eq!(q.key_columns, KeyColumns::Columns(vec!["id".into()]));
        assert_eq!(q.policy, RecoveryPolicy::AutoReset);
    }
}
