//! Admin changes: traffic weights and rollback, each recorded in an append-only audit log
//! (who, what, before, after, when) before it is answered.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::inference::ModelRegistry;

/// Audit entries kept in memory for `GET /admin/audit`.
const KEPT_ENTRIES: usize = 1_000;

/// Previous weight sets kept per model for rollbacks.
const KEPT_WEIGHT_SETS: usize = 32;

/// Why an admin change was refused.
#[derive(Debug)]
pub enum AdminError {
    /// No such model (404).
    NotFound,
    /// The change is invalid (400) or impossible (409).
    Invalid(u16, String),
    /// The audit log could not be written: nothing was changed (500).
    Audit(String),
}

/// The audit log file cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open audit log {}: {source}", path.display())]
pub struct AuditLogError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// The audit log and the weight history.
pub struct Admin {
    file: Option<Mutex<std::fs::File>>,
    entries: Mutex<VecDeque<Value>>,
    history: Mutex<HashMap<String, Vec<Vec<u32>>>>,
}

impl Admin {
    /// Opens (creating, appending to) the audit log file, if one is configured.
    pub fn new(audit_log: Option<PathBuf>) -> Result<Admin, AuditLogError> {
        let file = match audit_log {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|source| AuditLogError { path, source })?,
            )),
            None => None,
        };
        Ok(Admin {
            file,
            entries: Mutex::new(VecDeque::new()),
            history: Mutex::new(HashMap::new()),
        })
    }

    /// Recent audit entries, oldest first.
    pub fn entries(&self) -> Vec<Value> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Sets a model's weights by version name; versions not named get 0.
    pub fn set_weights(
        &self,
        registry: &ModelRegistry,
        who: &str,
        model: &str,
        weights: &BTreeMap<String, u32>,
    ) -> Result<Value, AdminError> {
        let m = registry.get(model).ok_or(AdminError::NotFound)?;
        let names: Vec<&str> = m.router.versions.iter().map(|v| &*v.version).collect();
        if let Some(unknown) = weights.keys().find(|k| !names.contains(&k.as_str())) {
            return Err(AdminError::Invalid(
                400,
                format!("model {model} has no version {unknown:?} (versions: {names:?})"),
            ));
        }
        let new: Vec<u32> = names
            .iter()
            .map(|n| weights.get(*n).copied().unwrap_or(0))
            .collect();
        if new.iter().all(|w| *w == 0) {
            return Err(AdminError::Invalid(
                400,
                "at least one weight must be above 0".into(),
            ));
        }
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let before = m.router.weights();
        self.audit(
            who,
            "set_weights",
            json!({ "model": model }),
            named(&names, &before),
            named(&names, &new),
        )?;
        m.router
            .set_weights(new.clone())
            .map_err(|e| AdminError::Invalid(400, e.to_string()))?;
        let stack = history.entry(model.to_string()).or_default();
        stack.push(before);
        if stack.len() > KEPT_WEIGHT_SETS {
            stack.remove(0);
        }
        Ok(named(&names, &new))
    }

    /// Restores a model's previous weights.
    pub fn rollback(
        &self,
        registry: &ModelRegistry,
        who: &str,
        model: &str,
    ) -> Result<Value, AdminError> {
        let m = registry.get(model).ok_or(AdminError::NotFound)?;
        let names: Vec<&str> = m.router.versions.iter().map(|v| &*v.version).collect();
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let previous = history
            .get_mut(model)
            .and_then(|s| s.last().cloned())
            .ok_or_else(|| {
                AdminError::Invalid(409, format!("model {model} has no earlier weights"))
            })?;
        let before = m.router.weights();
        self.audit(
            who,
            "rollback",
            json!({ "model": model }),
            named(&names, &before),
            named(&names, &previous),
        )?;
        m.router
            .set_weights(previous.clone())
            .map_err(|e| AdminError::Invalid(409, e.to_string()))?;
        if let Some(stack) = history.get_mut(model) {
            stack.pop();
        }
        Ok(named(&names, &previous))
    }

    /// Replaces the replicas of a model's version (already checked against the allow-list).
    pub fn set_replicas(
        &self,
        registry: &ModelRegistry,
        who: &str,
        model: &str,
        version: &str,
        replicas: &[String],
        max_in_flight: usize,
    ) -> Result<Value, AdminError> {
        let m = registry.get(model).ok_or(AdminError::NotFound)?;
        let client = m
            .router
            .versions
            .iter()
            .find(|v| &*v.version == version)
            .ok_or(AdminError::NotFound)?;
        let _order = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let before: Vec<String> = client
            .balancer
            .replicas()
            .iter()
            .map(|r| r.address.to_string())
            .collect();
        if before
            .iter()
            .any(|a| a == crate::inference::registry::IN_PROCESS)
        {
            return Err(AdminError::Invalid(
                409,
                format!("{model}/{version} runs in process: it has no replicas to change"),
            ));
        }
        self.audit(
            who,
            "set_replicas",
            json!({ "model": model, "version": version }),
            json!(before),
            json!(replicas),
        )?;
        client.set_replicas(replicas, max_in_flight);
        Ok(json!(replicas))
    }

    /// Pauses or resumes a pipeline. Returns whether it is paused now.
    pub fn set_paused(
        &self,
        pipelines: &crate::runtime::StatusBoard,
        who: &str,
        pipeline: &str,
        paused: bool,
    ) -> Result<bool, AdminError> {
        // Serialised so the audited "before" is the state this change replaced.
        let _order = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if !pipelines.snapshot().contains_key(pipeline) {
            return Err(AdminError::NotFound);
        }
        let before = pipelines.is_paused(pipeline);
        self.audit(
            who,
            if paused { "pause" } else { "resume" },
            json!({ "pipeline": pipeline }),
            json!({ "paused": before }),
            json!({ "paused": paused }),
        )?;
        pipelines
            .set_paused(pipeline, paused)
            .ok_or(AdminError::NotFound)?;
        Ok(paused)
    }

    /// Writes the entry (and syncs it) before the change takes effect: a change that cannot
    /// be audited is not made. `target` names what changed (`{"model": ...}`).
    pub(crate) fn audit(
        &self,
        who: &str,
        action: &str,
        target: Value,
        before: Value,
        after: Value,
    ) -> Result<(), AdminError> {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut entry = json!({
            "at_ms": at,
            "who": who,
            "action": action,
        });
        if let (Value::Object(entry), Value::Object(target)) = (&mut entry, target) {
            entry.extend(target);
        }
        entry["before"] = before;
        entry["after"] = after;
        if let Some(file) = &self.file {
            let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
            let mut line = entry.to_string();
            line.push('\n');
            file.write_all(line.as_bytes())
                .and_then(|()| file.sync_data())
                .map_err(|e| AdminError::Audit(format!("cannot write the audit log: {e}")))?;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.push_back(entry);
        if entries.len() > KEPT_ENTRIES {
            entries.pop_front();
        }
        Ok(())
    }
}

fn named(names: &[&str], weights: &[u32]) -> Value {
    Value::Object(
        names
            .iter()
            .zip(weights)
            .map(|(n, w)| (n.to_string(), json!(w)))
            .collect(),
    )
}
