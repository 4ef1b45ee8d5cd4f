//! The metadata database: one redb file, `<root>/holdfastd.redb`.
//!
//! - table `meta`: `schema_version` (u32; this build writes
//!   [`SCHEMA_VERSION`] and refuses a newer one);
//! - table `containers`: name → the prost-encoded
//!   [`holdfast_api::v1::Container`] (declared spec, observed state,
//!   creation time, log folder);
//! - table `checkpoints`: (container, checkpoint) → the prost-encoded
//!   [`holdfast_api::v1::Checkpoint`] (where its images are, when it was
//!   taken, its size and CRIU flags); a container's are removed with it.
//!
//! Each [`Store::put`] and [`Store::delete`] is one redb write transaction
//! committed with immediate durability: a `kill -9` at any moment leaves
//! either the old or the new record.
//!
//! A record that cannot be decoded, or whose spec is not valid, is not an
//! error: [`Store::load_all`] returns it as [`Loaded::Quarantined`], and it
//! stays in the database untouched until deleted.
//!
//! redb is synchronous and calls may wait for an fsync or for another
//! writer: async callers run them with `tokio::task::spawn_blocking` (the
//! store is `Send + Sync`; share it in an `Arc`).

use std::path::{Path, PathBuf};

use holdfast_api::v1::{Checkpoint, Container};
use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tracing::debug;

use crate::error::{Error, Result};
use crate::validate::{validate_name, validate_spec_fields};

/// The database's file name in holdfastd's root.
pub const DB_FILE: &str = "holdfastd.redb";
/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
const CHECKPOINTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("checkpoints");
const SCHEMA_KEY: &str = "schema_version";

/// One record as loaded.
// Built once per record at start-up and moved into the manager's map:
// boxing the common variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    /// A record that decoded and whose spec is valid.
    Ok(Container),
    /// A record that could not be used: kept as is, listed, removable.
    Quarantined {
        /// Its key.
        name: String,
        /// Why it is quarantined.
        reason: String,
        /// The size of its stored value in bytes.
        raw_len: usize,
    },
}

impl Loaded {
    /// The record's name (its key).
    pub fn name(&self) -> &str {
        match self {
            Loaded::Ok(c) => c.spec.as_ref().map_or("", |s| s.name.as_str()),
            Loaded::Quarantined { name, .. } => name,
        }
    }
}

/// holdfastd's metadata database.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the database in holdfastd's root:
    /// `<root>/`[`DB_FILE`]. Creates `root` if needed.
    pub fn open_in_root(root: &Path) -> Result<Store> {
        std::fs::create_dir_all(root).map_err(|e| Error::io("create", root, e))?;
        Store::open(&root.join(DB_FILE))
    }

    /// Opens (or creates) the database file at `path`, writing the schema
    /// version into a new one and refusing one written by a newer
    /// holdfastd ([`Error::SchemaTooNew`]).
    pub fn open(path: &Path) -> Result<Store> {
        let db =
            Database::create(path).map_err(|e| Error::db(format!("open {}", path.display()), e))?;
        let store = Store {
            db,
            path: path.to_owned(),
        };
        store.check_schema()?;
        debug!(path = %path.display(), "metadata database open");
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A write transaction whose commit returns only once it is on disk
    /// (redb's default, stated here because the store's guarantee rests
    /// on it).
    fn begin_write(&self, op: &dyn Fn() -> String) -> Result<redb::WriteTransaction> {
        let mut tx = self.db.begin_write().map_err(|e| Error::db(op(), e))?;
        tx.set_durability(Durability::Immediate)
            .map_err(|e| Error::db(op(), e))?;
        Ok(tx)
    }

    fn check_schema(&self) -> Result<()> {
        let op = "check schema version";
        let tx = self.begin_write(&|| op.to_owned())?;
        let found = {
            let mut meta = tx.open_table(META).map_err(|e| Error::db(op, e))?;
            let found = meta
                .get(SCHEMA_KEY)
                .map_err(|e| Error::db(op, e))?
                .map(|v| v.value());
            if found.is_none() {
                meta.insert(SCHEMA_KEY, SCHEMA_VERSION)
                    .map_err(|e| Error::db(op, e))?;
            }
            // Create the tables so that readers find them.
            tx.open_table(CONTAINERS).map_err(|e| Error::db(op, e))?;
            tx.open_table(CHECKPOINTS).map_err(|e| Error::db(op, e))?;
            found
        };
        match found {
            Some(v) if v > SCHEMA_VERSION => Err(Error::SchemaTooNew {
                path: self.path.clone(),
                found: v,
                supported: SCHEMA_VERSION,
            }),
            Some(0) => Err(Error::Internal(format!(
                "database {}: invalid schema version 0",
                self.path.display()
            ))),
            _ => tx.commit().map_err(|e| Error::db(op, e)),
        }
    }

    /// Writes a container's record (inserting or replacing it) in one
    /// durable transaction. Its key is the spec's name, which must be valid.
    pub fn put(&self, container: &Container) -> Result<()> {
        let name = container
            .spec
            .as_ref()
            .map(|s| s.name.as_str())
            .ok_or_else(|| Error::invalid("spec", "a container record needs a spec"))?;
        validate_name(name)?;
        let op = || format!("put {name:?}");
        let bytes = container.encode_to_vec();
        let tx = self.begin_write(&op)?;
        {
            let mut table = tx.open_table(CONTAINERS).map_err(|e| Error::db(op(), e))?;
            table
                .insert(name, bytes.as_slice())
                .map_err(|e| Error::db(op(), e))?;
        }
        tx.commit().map_err(|e| Error::db(op(), e))?;
        debug!(container = name, bytes = bytes.len(), "record written");
        Ok(())
    }

    /// Reads one record: `None` if there is none by that name.
    pub fn get(&self, name: &str) -> Result<Option<Loaded>> {
        let op = || format!("get {name:?}");
        let tx = self.db.begin_read().map_err(|e| Error::db(op(), e))?;
        let table = tx.open_table(CONTAINERS).map_err(|e| Error::db(op(), e))?;
        let value = table.get(name).map_err(|e| Error::db(op(), e))?;
        Ok(value.map(|v| decode(name, v.value())))
    }

    /// Removes a record (also a quarantined one) in one durable
    /// transaction; `false` if there was none.
    pub fn delete(&self, name: &str) -> Result<bool> {
        let op = || format!("delete {name:?}");
        let tx = self.begin_write(&op)?;
        let existed = {
            let mut table = tx.open_table(CONTAINERS).map_err(|e| Error::db(op(), e))?;
            let old = table.remove(name).map_err(|e| Error::db(op(), e))?;
            old.is_some()
        };
        tx.commit().map_err(|e| Error::db(op(), e))?;
        debug!(container = name, existed, "record deleted");
        Ok(existed)
    }

    /// The names (keys) of every record, in order; phase 1 of start-up
    /// reads them one by one.
    pub fn names(&self) -> Result<Vec<String>> {
        let op = "list record names";
        let tx = self.db.begin_read().map_err(|e| Error::db(op, e))?;
        let table = tx.open_table(CONTAINERS).map_err(|e| Error::db(op, e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| Error::db(op, e))? {
            let (key, _) = entry.map_err(|e| Error::db(op, e))?;
            out.push(key.value().to_owned());
        }
        Ok(out)
    }

    /// Reads every record, by name; the ones that cannot be used come back
    /// quarantined (and are logged), not as errors.
    pub fn load_all(&self) -> Result<Vec<Loaded>> {
        let op = "load records";
        let tx = self.db.begin_read().map_err(|e| Error::db(op, e))?;
        let table = tx.open_table(CONTAINERS).map_err(|e| Error::db(op, e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| Error::db(op, e))? {
            let (key, value) = entry.map_err(|e| Error::db(op, e))?;
            let loaded = decode(key.value(), value.value());
            if let Loaded::Quarantined {
                name,
                reason,
                raw_len,
            } = &loaded
            {
                debug!(container = %name, %reason, raw_len, "record quarantined");
            }
            out.push(loaded);
        }
        Ok(out)
    }
}

impl Store {
    /// Writes a checkpoint's record (inserting or replacing it) in one
    /// durable transaction; its container and name must be valid.
    pub fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()> {
        let (container, name) = (checkpoint.container.as_str(), checkpoint.name.as_str());
        validate_name(container)?;
        crate::validate::validate_checkpoint_name(name)?;
        let op = || format!("put checkpoint {name:?} of {container:?}");
        let bytes = checkpoint.encode_to_vec();
        let tx = self.begin_write(&op)?;
        {
            let mut table = tx.open_table(CHECKPOINTS).map_err(|e| Error::db(op(), e))?;
            table
                .insert((container, name), bytes.as_slice())
                .map_err(|e| Error::db(op(), e))?;
        }
        tx.commit().map_err(|e| Error::db(op(), e))?;
        debug!(container, checkpoint = name, "checkpoint record written");
        Ok(())
    }

    /// One checkpoint of a container: `None` if there is none by that name.
    pub fn get_checkpoint(&self, container: &str, name: &str) -> Result<Option<Checkpoint>> {
        let op = || format!("get checkpoint {name:?} of {container:?}");
        let tx = self.db.begin_read().map_err(|e| Error::db(op(), e))?;
        let table = tx.open_table(CHECKPOINTS).map_err(|e| Error::db(op(), e))?;
        let value = table
            .get((container, name))
            .map_err(|e| Error::db(op(), e))?;
        value
            .map(|v| decode_checkpoint(container, name, v.value()))
            .transpose()
    }

    /// A container's checkpoints, by name.
    pub fn checkpoints(&self, container: &str) -> Result<Vec<Checkpoint>> {
        let op = || format!("list checkpoints of {container:?}");
        let tx = self.db.begin_read().map_err(|e| Error::db(op(), e))?;
        let table = tx.open_table(CHECKPOINTS).map_err(|e| Error::db(op(), e))?;
        let mut out = Vec::new();
        for entry in table
            .range((container, "")..)
            .map_err(|e| Error::db(op(), e))?
        {
            let (key, value) = entry.map_err(|e| Error::db(op(), e))?;
            let (c, name) = key.value();
            if c != container {
                break;
            }
            out.push(decode_checkpoint(c, name, value.value())?);
        }
        Ok(out)
    }

    /// Removes a checkpoint's record in one durable transaction; `false`
    /// if there was none.
    pub fn delete_checkpoint(&self, container: &str, name: &str) -> Result<bool> {
        let op = || format!("delete checkpoint {name:?} of {container:?}");
        let tx = self.begin_write(&op)?;
        let existed = {
            let mut table = tx.open_table(CHECKPOINTS).map_err(|e| Error::db(op(), e))?;
            let old = table
                .remove((container, name))
                .map_err(|e| Error::db(op(), e))?;
            old.is_some()
        };
        tx.commit().map_err(|e| Error::db(op(), e))?;
        debug!(
            container,
            checkpoint = name,
            existed,
            "checkpoint record deleted"
        );
        Ok(existed)
    }
}

/// Decodes one stored checkpoint record.
fn decode_checkpoint(container: &str, name: &str, raw: &[u8]) -> Result<Checkpoint> {
    Checkpoint::decode(raw).map_err(|e| {
        Error::Internal(format!(
            "database: checkpoint {name:?} of {container:?} cannot be decoded: {e}"
        ))
    })
}

/// Decodes and checks one stored value.
fn decode(name: &str, raw: &[u8]) -> Loaded {
    let quarantine = |reason: String| Loaded::Quarantined {
        name: name.to_owned(),
        reason,
        raw_len: raw.len(),
    };
    let container = match Container::decode(raw) {
        Ok(c) => c,
        Err(e) => return quarantine(format!("cannot decode the record: {e}")),
    };
    let Some(spec) = &container.spec else {
        return quarantine("the record has no spec".to_owned());
    };
    if spec.name != name {
        return quarantine(format!(
            "the record's spec names {:?}, not its key",
            spec.name
        ));
    }
    if let Err(e) = validate_spec_fields(spec) {
        return quarantine(format!("invalid spec: {e}"));
    }
    Loaded::Ok(container)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
