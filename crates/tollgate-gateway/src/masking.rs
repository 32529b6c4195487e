//! Masking policy: the `[masking]` config section, the default pack, and the [`Masker`] that
//! picks, per caller and connection, which compiled [`Mask`] applies (or why values go out clear).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tollgate_core::{Identity, MaskDecision, Masker, TableColumn};
use tollgate_mask::{ColumnRule, CustomDetector, Kind, Mask, MaskSpec, Strategy};

use crate::GatewayError;

/// `[masking]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingSection {
    /// Mask results at all (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Include the default column rules (`secret-columns`, `pii-columns`; default true).
    #[serde(default = "yes")]
    pub default_rules: bool,
    /// Built-in detectors or default rules to leave out, by name.
    #[serde(default)]
    pub disable: Vec<String>,
    /// Strategy per built-in detector (`partial`, `redact`, `pseudonym`).
    #[serde(default)]
    pub strategies: BTreeMap<String, String>,
    /// Groups whose members see clear values on every connection (recorded per session).
    #[serde(default)]
    pub unmasked_groups: Vec<String>,
    /// Environment variable holding the pseudonym key.
    pub pseudonym_key_env: Option<String>,
    /// File holding the pseudonym key (default: `masking.key` in the data dir, generated).
    pub pseudonym_key_file: Option<PathBuf>,
    /// Custom regex detectors.
    #[serde(default)]
    pub custom: Vec<CustomSpec>,
    /// Column rules.
    #[serde(default)]
    pub columns: Vec<ColumnSpec>,
}

impl Default for MaskingSection {
    fn default() -> Self {
        Self {
            enabled: true,
            default_rules: true,
            disable: Vec::new(),
            strategies: BTreeMap::new(),
            unmasked_groups: Vec::new(),
            pseudonym_key_env: None,
            pseudonym_key_file: None,
            custom: Vec::new(),
            columns: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// `[[masking.custom]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomSpec {
    /// Name in records and redactions.
    pub name: String,
    /// Regular expression.
    pub pattern: String,
    /// Strategy (default `redact`).
    pub strategy: Option<String>,
    /// Connections it applies to (default: all).
    #[serde(default)]
    pub connections: Vec<String>,
    /// Groups that see these values clear.
    #[serde(default)]
    pub unmasked_groups: Vec<String>,
}

/// `[[masking.columns]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Name in records and redactions.
    pub name: String,
    /// Column-name patterns (`*` wildcard, case-insensitive).
    #[serde(default)]
    pub columns: Vec<String>,
    /// Source columns: `table.column`, `schema.table.column`, or `table.*`.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Strategy (default `redact`).
    pub strategy: Option<String>,
    /// Connections it applies to (default: all).
    #[serde(default)]
    pub connections: Vec<String>,
    /// Groups that see these columns clear.
    #[serde(default)]
    pub unmasked_groups: Vec<String>,
}

/// Where a rule or custom detector applies.
#[derive(Debug, Clone, Default)]
struct Scope {
    connections: Vec<String>,
    unmasked_groups: Vec<String>,
}

impl Scope {
    fn applies(&self, identity: &Identity, connection: &str) -> bool {
        (self.connections.is_empty() || self.connections.iter().any(|c| c == connection))
            && !self
                .unmasked_groups
                .iter()
                .any(|g| identity.groups.contains(g))
    }
}

/// Per-connection masking switches (from `[[connections]]`).
#[derive(Debug, Clone, Default)]
pub struct ConnectionMasking {
    /// Whether results on this connection are masked.
    pub enabled: bool,
    /// Groups that see clear values on this connection.
    pub unmasked_groups: Vec<String>,
}

/// Validated masking settings; the pseudonym key is read when the gateway starts.
#[derive(Debug, Clone)]
pub struct MaskingSettings {
    enabled: bool,
    unmasked_groups: Vec<String>,
    detectors: Vec<(Kind, Strategy)>,
    custom: Vec<(CustomDetector, Scope)>,
    columns: Vec<(ColumnRule, Scope)>,
    key_env: Option<String>,
    key_file: Option<PathBuf>,
}

/// The default column rules.
fn default_rules() -> Vec<(ColumnRule, Scope)> {
    let rule = |name: &str, columns: &[&str], strategy| {
        (
            ColumnRule {
                name: name.into(),
                columns: columns.iter().map(|c| c.to_string()).collect(),
                tables: Vec::new(),
                strategy,
            },
            Scope::default(),
        )
    };
    vec![
        rule(
            "secret-columns",
            &[
                "*password*",
                "*passwd*",
                "*secret*",
                "*token*",
                "*api_key*",
                "apikey",
                "*private_key*",
                "cvv",
                "cvc",
                "cvv2",
            ],
            Strategy::Redact,
        ),
        rule(
            "pii-columns",
            &[
                "email",
                "*_email",
                "email_address",
                "ssn",
                "*_ssn",
                "social_security*",
                "tax_id",
                "national_id",
                "passport*",
                "phone",
                "*_phone",
                "phone_number",
                "mobile",
                "*card_number*",
                "cc_number",
                "iban",
                "date_of_birth",
                "dob",
                "birth_date",
                "birthdate",
            ],
            Strategy::Partial,
        ),
    ]
}

impl MaskingSettings {
    /// Validates the section; `err(key, message)` builds errors naming the key.
    pub fn from_section(
        s: MaskingSection,
        connections: &[String],
        err: &dyn Fn(&str, String) -> GatewayError,
    ) -> Result<Self, GatewayError> {
        let strategy = |key: &str, v: &Option<String>| match v {
            None => Ok(Strategy::Redact),
            Some(name) => Strategy::from_name(name).ok_or_else(|| {
                err(
                    key,
                    format!("expected \"partial\", \"redact\" or \"pseudonym\", got {name:?}"),
                )
            }),
        };
        let check_connections = |key: &str, list: &[String]| {
            for c in list {
                if !connections.contains(c) {
                    return Err(err(key, format!("no connection is named {c:?}")));
                }
            }
            Ok(())
        };
        let mut columns = if s.default_rules {
            default_rules()
        } else {
            Vec::new()
        };
        let default_names: Vec<String> = columns.iter().map(|(r, _)| r.name.clone()).collect();
        for name in &s.disable {
            if Kind::from_name(name).is_none() && !default_names.contains(name) {
                return Err(err(
                    "masking.disable",
                    format!(
                        "{name:?} is neither a built-in detector ({}) nor a default rule ({})",
                        Kind::ALL.map(Kind::name).join(", "),
                        default_names.join(", ")
                    ),
                ));
            }
        }
        columns.retain(|(r, _)| !s.disable.contains(&r.name));
        let mut detectors = Vec::new();
        for kind in Kind::ALL {
            if !s.disable.iter().any(|d| d == kind.name()) {
                detectors.push((kind, Strategy::default_for(kind)));
            }
        }
        for (name, value) in &s.strategies {
            let key = format!("masking.strategies.{name}");
            let Some(kind) = Kind::from_name(name) else {
                return Err(err(
                    &key,
                    format!(
                        "not a built-in detector; expected one of {}",
                        Kind::ALL.map(Kind::name).join(", ")
                    ),
                ));
            };
            let st = strategy(&key, &Some(value.clone()))?;
            for d in detectors.iter_mut().filter(|d| d.0 == kind) {
                d.1 = st;
            }
        }
        let mut custom = Vec::new();
        for (i, c) in s.custom.into_iter().enumerate() {
            let key = |k: &str| format!("masking.custom[{i}].{k}");
            if c.name.is_empty() {
                return Err(err(&key("name"), "must not be empty".into()));
            }
            check_connections(&key("connections"), &c.connections)?;
            custom.push((
                CustomDetector {
                    name: c.name,
                    pattern: c.pattern,
                    strategy: strategy(&key("strategy"), &c.strategy)?,
                },
                Scope {
                    connections: c.connections,
                    unmasked_groups: c.unmasked_groups,
                },
            ));
        }
        for (i, c) in s.columns.into_iter().enumerate() {
            let key = |k: &str| format!("masking.columns[{i}].{k}");
            if c.name.is_empty() {
                return Err(err(&key("name"), "must not be empty".into()));
            }
            if c.columns.is_empty() && c.tables.is_empty() {
                return Err(err(
                    &key("columns"),
                    "name at least one column pattern or table column".into(),
                ));
            }
            check_connections(&key("connections"), &c.connections)?;
            let mut tables = Vec::new();
            for t in &c.tables {
                let parts: Vec<&str> = t.split('.').collect();
                let (schema, table, column) = match parts.as_slice() {
                    [table, column] => (None, *table, *column),
                    [schema, table, column] => (Some(schema.to_string()), *table, *column),
                    _ => {
                        return Err(err(
                            &key("tables"),
                            format!("expected table.column or schema.table.column, got {t:?}"),
                        ));
                    }
                };
                if table.is_empty() || column.is_empty() {
                    return Err(err(&key("tables"), format!("empty name in {t:?}")));
                }
                tables.push(TableColumn {
                    schema,
                    table: table.to_string(),
                    column: column.to_string(),
                });
            }
            columns.push((
                ColumnRule {
                    name: c.name,
                    columns: c.columns,
                    tables,
                    strategy: strategy(&key("strategy"), &c.strategy)?,
                },
                Scope {
                    connections: c.connections,
                    unmasked_groups: c.unmasked_groups,
                },
            ));
        }
        let settings = Self {
            enabled: s.enabled,
            unmasked_groups: s.unmasked_groups,
            detectors,
            custom,
            columns,
            key_env: s.pseudonym_key_env,
            key_file: s.pseudonym_key_file,
        };
        if settings.key_env.is_some() && settings.key_file.is_some() {
            return Err(err(
                "masking.pseudonym_key_env",
                "set pseudonym_key_env or pseudonym_key_file, not both".into(),
            ));
        }
        // Compile everything once now, so a bad pattern or a name clash fails at load.
        Mask::new(&settings.spec(Vec::new(), |_| true, |_| true))
            .map_err(|e| err("masking", e.to_string()))?;
        Ok(settings)
    }

    fn spec(
        &self,
        key: Vec<u8>,
        custom_on: impl Fn(&Scope) -> bool,
        column_on: impl Fn(&Scope) -> bool,
    ) -> MaskSpec {
        MaskSpec {
            detectors: self.detectors.clone(),
            custom: self
                .custom
                .iter()
                .filter(|(_, s)| custom_on(s))
                .map(|(c, _)| c.clone())
                .collect(),
            column_rules: self
                .columns
                .iter()
                .filter(|(_, s)| column_on(s))
                .map(|(c, _)| c.clone())
                .collect(),
            pseudonym_key: key,
        }
    }
}

/// A connection and which custom detectors and column rules are in force.
type MaskKey = (String, Vec<bool>);

/// The gateway's [`Masker`].
pub struct MaskPolicy {
    settings: MaskingSettings,
    connections: HashMap<String, ConnectionMasking>,
    key: Vec<u8>,
    /// Compiled masks by connection and the custom/column entries in force.
    cache: Mutex<HashMap<MaskKey, Arc<Mask>>>,
}

impl MaskPolicy {
    /// Reads the pseudonym key (generating `masking.key` in the data dir when none is
    /// configured, sealed under the master key when there is one) and builds the policy.
    pub fn new(
        settings: MaskingSettings,
        connections: HashMap<String, ConnectionMasking>,
        data_dir: &Path,
        encryption: Option<&crate::config::Encryption>,
    ) -> Result<Self, GatewayError> {
        let key = match (&settings.key_env, &settings.key_file) {
            (Some(var), _) => std::env::var(var)
                .map_err(|_| {
                    GatewayError::Invalid(format!(
                        "masking.pseudonym_key_env: environment variable {var} is not set"
                    ))
                })?
                .into_bytes(),
            (None, Some(path)) => std::fs::read(path).map_err(|e| {
                GatewayError::Invalid(format!(
                    "masking.pseudonym_key_file: cannot read {}: {e}",
                    path.display()
                ))
            })?,
            (None, None) => crate::material::pseudonym_key(data_dir, encryption)?,
        };
        if key.len() < 16 {
            return Err(GatewayError::Invalid(
                "masking: the pseudonym key must be at least 16 bytes".into(),
            ));
        }
        Ok(Self {
            settings,
            connections,
            key,
            cache: Mutex::new(HashMap::new()),
        })
    }
}

impl Masker for MaskPolicy {
    fn session(&self, identity: &Identity, connection: &str) -> MaskDecision {
        if !self.settings.enabled {
            return MaskDecision::Clear("masking is off".into());
        }
        let conn = self.connections.get(connection);
        if conn.is_some_and(|c| !c.enabled) {
            return MaskDecision::Clear(format!("masking is off for connection {connection}"));
        }
        let unmasked = self
            .settings
            .unmasked_groups
            .iter()
            .chain(conn.map(|c| c.unmasked_groups.iter()).into_iter().flatten())
            .find(|g| identity.groups.contains(g));
        if let Some(group) = unmasked {
            return MaskDecision::Clear(format!("member of unmasked group {group}"));
        }
        let flags: Vec<bool> = self
            .settings
            .custom
            .iter()
            .map(|(_, s)| s.applies(identity, connection))
            .chain(
                self.settings
                    .columns
                    .iter()
                    .map(|(_, s)| s.applies(identity, connection)),
            )
            .collect();
        let cache_key = (connection.to_string(), flags);
        if let Ok(cache) = self.cache.lock()
            && let Some(mask) = cache.get(&cache_key)
        {
            return MaskDecision::Masked(Arc::clone(mask) as _);
        }
        let spec = self.settings.spec(
            self.key.clone(),
            |s| s.applies(identity, connection),
            |s| s.applies(identity, connection),
        );
        match Mask::new(&spec) {
            Ok(mask) => {
                let mask = Arc::new(mask);
                if let Ok(mut cache) = self.cache.lock() {
                    cache.insert(cache_key, Arc::clone(&mask));
                }
                MaskDecision::Masked(mask)
            }
            // Validated at load; should it fail anyway, mask with the built-in detectors only.
            Err(e) => {
                tracing::error!(error = %e, "masking spec failed to compile");
                let fallback = self.settings.spec(self.key.clone(), |_| false, |_| false);
                match Mask::new(&fallback) {
                    Ok(mask) => MaskDecision::Masked(Arc::new(mask)),
                    Err(_) => MaskDecision::Masked(Arc::new(BlockAll)),
                }
            }
        }
    }
}

/// Last resort when no mask can be built: every value is withheld.
struct BlockAll;

impl tollgate_core::SessionMask for BlockAll {
    fn table_columns(&self) -> &[TableColumn] {
        &[]
    }
    fn column(&self, _: &str, _: Option<usize>) -> tollgate_core::ColumnMask {
        tollgate_core::ColumnMask::Rule(0)
    }
    fn mask(
        &self,
        _: tollgate_core::ColumnMask,
        _: &[u8],
        out: &mut Vec<u8>,
        tally: &mut tollgate_core::MaskTally,
    ) -> bool {
        out.extend_from_slice(b"[REDACTED]");
        tally.bump(0);
        true
    }
    fn counter_names(&self) -> &[String] {
        &[]
    }
}
