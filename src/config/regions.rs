//! `[regions]`: a fleet over a global table, one region per replica
//! (docs/multi-region.md, "Home regions").

use serde::Deserialize;

use super::ConfigError;

/// `[regions]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegionsConfig {
    /// Every region, in the same order on every node; this node's is
    /// `relay.region`. A token issued here names its place in this list as
    /// its home. Empty: one region, tokens name no home.
    pub names: Vec<String>,
    /// How long a miss waits for a session's home replica before answering
    /// 503 (ms).
    pub home_timeout_ms: u64,
    /// The other regions' replicas: where a node reads a session homed
    /// there that its own replica does not hold yet.
    pub replica: Vec<ReplicaConfig>,
}

impl Default for RegionsConfig {
    fn default() -> Self {
        RegionsConfig {
            names: Vec::new(),
            home_timeout_ms: 1000,
            replica: Vec::new(),
        }
    }
}

/// One `[[regions.replica]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// The region's name, as in `regions.names`.
    pub name: String,
    /// Its DynamoDB endpoint: `"aws"` (the SDK's regional endpoint for
    /// `region`) or a URL.
    pub endpoint: String,
    /// The table's name there (a global table's replicas share one).
    pub table: String,
    /// The AWS region (signing region for a URL endpoint).
    pub region: String,
}

fn bad(key: &str, why: String) -> Result<(), ConfigError> {
    Err(ConfigError(format!("invalid configuration: `{key}` {why}")))
}

impl RegionsConfig {
    /// The checks the types cannot express; `own` is `relay.region`.
    pub fn validate(&self, own: &str) -> Result<(), ConfigError> {
        if self.names.is_empty() {
            if !self.replica.is_empty() {
                return bad("regions.replica", "needs `regions.names`".into());
            }
            return Ok(());
        }
        if self.names.len() > crate::token::MAX_REGIONS {
            return bad("regions.names", "names at most 128 regions".into());
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.names.iter().find(|n| !seen.insert(n.as_str())) {
            return bad("regions.names", format!("names `{dup}` twice"));
        }
        if !self.names.iter().any(|n| n == own) {
            return bad(
                "regions.names",
                format!("must name this node's region (`relay.region` = `{own}`)"),
            );
        }
        if !(50..=30_000).contains(&self.home_timeout_ms) {
            return bad("regions.home_timeout_ms", "must be 50-30000".into());
        }
        for (i, r) in self.replica.iter().enumerate() {
            if !self.names.contains(&r.name) || r.name == own {
                return bad(
                    &format!("regions.replica[{i}].name"),
                    "must be another region of `regions.names`".into(),
                );
            }
            if r.endpoint != "aws" && !r.endpoint.starts_with("http") {
                return bad(
                    &format!("regions.replica[{i}].endpoint"),
                    "must be \"aws\" or an http(s) URL".into(),
                );
            }
        }
        Ok(())
    }

    /// This node's place in `names` (`None`: one region).
    pub fn place(&self, own: &str) -> Option<u8> {
        self.names
            .iter()
            .position(|n| n == own)
            .and_then(|i| u8::try_from(i).ok())
    }
}
