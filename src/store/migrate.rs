//! Export and import of every stored object as JSON lines (`{"key":…,"object":…}`), so
//! moving to a new on-disk format or another backend is a migration: export with the
//! old binary, import with the new one.

use super::backend::EventType;
use super::key::Key;
use super::objects::{internal, Objects};
use api::status::ApiError;
use serde_json::{json, Value};
use std::io::{BufRead, Write};

/// Errors of an export or import.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("Reading or writing the dump failed")]
    Io(#[from] std::io::Error),
    #[error("Line {line} of the dump is not a stored object")]
    Format { line: usize },
    #[error("The store refused the import: {0}")]
    Store(#[from] ApiError),
}

/// Objects per import transaction.
const IMPORT_BATCH: usize = 500;

impl Objects {
    /// Writes every object, in key order; returns how many.
    pub fn export(&self, out: &mut dyn Write) -> Result<u64, MigrateError> {
        let backend = &*self.inner.backend;
        let mut start: Option<String> = None;
        let mut n = 0;
        loop {
            let chunk = backend
                .scan("/", start.as_deref(), 1000)
                .map_err(internal)?;
            let done = chunk.len() < 1000;
            for (key, bytes) in chunk {
                let object: Value = serde_json::from_slice(&bytes).map_err(internal)?;
                serde_json::to_writer(&mut *out, &json!({"key": key, "object": object}))
                    .map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
                start = Some(key);
                n += 1;
            }
            if done {
                break;
            }
        }
        out.flush()?;
        Ok(n)
    }

    /// Reads a dump written by [`Objects::export`] into this store. Each object is
    /// written at a new revision (replacing one with the same key), with its indexes, and
    /// the import is durable when this returns. Returns how many objects were imported.
    pub async fn import(&self, input: impl BufRead) -> Result<u64, MigrateError> {
        let mut batch: Vec<(Key, Value)> = Vec::new();
        let mut n = 0;
        for (i, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let bad = || MigrateError::Format { line: i + 1 };
            let mut entry: Value = serde_json::from_str(&line).map_err(|_| bad())?;
            let key = entry
                .get("key")
                .and_then(Value::as_str)
                .and_then(Key::decode)
                .ok_or_else(bad)?;
            let object = entry
                .get_mut("object")
                .map(Value::take)
                .filter(Value::is_object);
            batch.push((key, object.ok_or_else(bad)?));
            if batch.len() >= IMPORT_BATCH {
                n += self.import_batch(std::mem::take(&mut batch)).await?;
            }
        }
        n += self.import_batch(batch).await?;
        Ok(n)
    }

    async fn import_batch(&self, batch: Vec<(Key, Value)>) -> Result<u64, MigrateError> {
        let n = batch.len() as u64;
        let ((), ack) = self.write(false, |tx| {
            for (key, object) in batch {
                let event = if tx.read(&key)?.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                tx.put(&key, object, event)?;
            }
            Ok(())
        })?;
        if let Some(ack) = ack {
            ack.wait().await?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::{opts, store, vm, VM};
    use crate::store::ListOptions;

    #[tokio::test]
    async fn export_then_import_into_a_fresh_store() {
        let (old, _d1) = store();
        for i in 0..3 {
            old.create(&VM, Some("default"), vm(&format!("vm{i}")), &opts())
                .await
                .expect("create");
        }
        let mut dump = Vec::new();
        assert_eq!(
            old.export(&mut dump).expect("export"),
            4,
            "3 VMs and the default namespace"
        );
        let (new, _d2) = store();
        assert_eq!(new.import(dump.as_slice()).await.expect("import"), 4);
        let a = old
            .list(&VM, None, &ListOptions::default())
            .expect("list")
            .items;
        let b = new
            .list(&VM, None, &ListOptions::default())
            .expect("list")
            .items;
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x["metadata"]["uid"], y["metadata"]["uid"]);
            assert_eq!(x["spec"], y["spec"]);
        }
        // Indexes were rebuilt: the uid index finds the imported objects.
        let uid = b[0]["metadata"]["uid"].as_str().expect("uid").to_string();
        let found = new.write(true, |tx| tx.key_of_uid(&uid)).expect("read").0;
        assert_eq!(
            found.as_deref(),
            Some("/kubevirt.io/virtualmachines/default/vm0")
        );
        assert!(matches!(
            new.import(&b"{\"key\": 1}\n"[..]).await,
            Err(super::MigrateError::Format { line: 1 })
        ));
    }
}
