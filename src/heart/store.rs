//! The instance store: one record file per instance.
//!
//! `DATA_DIR/store/ID.json` holds one instance's record. A change writes
//! that one file and nothing else (`fsutil::write_atomic`: `ID.json.new`,
//! fsync, rename, fsync the directory), so the cost of a change does not
//! grow with the number of instances, and a crash at any instant leaves
//! each record either as it was or as it became, never torn. A change is
//! durable before [`Store::put`] or [`Store::remove`] returns, and the
//! heart answers no request before that; when the write fails, the caller
//! keeps its previous record in memory and answers an error.
//!
//! At start-up [`Store::open`] reads every record; a file that cannot be
//! read or parsed stops the heart with an error naming it (it never starts
//! without a record it could not read). Temporary `*.json.new` files are
//! what a crash during a write leaves: the rename never happened, so the
//! record file (or its absence) is the truth, and they are removed.
//!
//! Migration: a data directory of the previous version has a whole
//! `catalog.json` instead. On first start its records are written into
//! `store.new/`, which is synced and renamed to `store/` in one step; only
//! then is `catalog.json` renamed to `catalog.json.migrated`. A crash
//! before the rename leaves `store.new/`, which the next start discards
//! and rebuilds; a crash after it leaves `store/` and `catalog.json`
//! both, and `store/` wins.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::protocol::InstanceId;

/// A record the store can hold: serialisable, with its key inside.
pub(crate) trait Keyed: Serialize + DeserializeOwned {
    /// The instance the record belongs to.
    fn key(&self) -> &InstanceId;
}

/// The directory of record files.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
}

/// The file name suffix of a record.
const SUFFIX: &str = ".json";

impl Store {
    /// Opens the store in `dir` and reads every record, migrating the
    /// `legacy` catalog (`catalog.json`) of the previous version first.
    ///
    /// # Errors
    ///
    /// A record (or the catalog being migrated) cannot be read or parsed,
    /// or the store directory cannot be created or listed.
    pub(crate) fn open<R: Keyed>(dir: &Path, legacy: &Path) -> Result<(Store, Vec<R>)> {
        let dir = dir.to_path_buf();
        let staging = fsutil::temp_path(&dir);
        let catalog = legacy;
        if !dir.is_dir() {
            if staging.exists() {
                fs::remove_dir_all(&staging)
                    .map_err(|e| Error::io("remove unfinished migration", &staging, e))?;
            }
            fsutil::create_dir_all(&staging, 0o700)?;
            if catalog.exists() {
                for record in read_catalog::<R>(catalog)? {
                    write_record(&staging, &record)?;
                }
            }
            fsutil::sync_dir(&staging)?;
            fs::rename(&staging, &dir).map_err(|e| Error::io("rename into", &dir, e))?;
            fsutil::sync_parent(&dir)?;
        }
        if catalog.exists() {
            let mut aside = catalog.as_os_str().to_os_string();
            aside.push(".migrated");
            let aside = PathBuf::from(aside);
            fs::rename(catalog, &aside).map_err(|e| Error::io("rename", catalog, e))?;
            fsutil::sync_parent(&aside)?;
        }
        let store = Store { dir };
        let records = store.read_all()?;
        Ok((store, records))
    }

    /// Writes `record`, atomically and durably.
    ///
    /// # Errors
    ///
    /// The record file cannot be written; nothing changed on disk.
    pub(crate) fn put<R: Keyed>(&self, record: &R) -> Result<()> {
        write_record(&self.dir, record)
    }

    /// Removes the record of `id`, durably; a record already gone is fine.
    ///
    /// # Errors
    ///
    /// The file cannot be removed, or the removal cannot be synced.
    pub(crate) fn remove(&self, id: &InstanceId) -> Result<()> {
        let path = self.path(id);
        fsutil::remove_if_exists(&path)?;
        fsutil::sync_parent(&path)
    }

    fn path(&self, id: &InstanceId) -> PathBuf {
        self.dir.join(format!("{id}{SUFFIX}"))
    }

    /// Every record, in id order; leftover temporary files are removed.
    fn read_all<R: Keyed>(&self) -> Result<Vec<R>> {
        let entries = fs::read_dir(&self.dir).map_err(|e| Error::io("list", &self.dir, e))?;
        let mut records = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &self.dir, e))?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(Error::invalid(format!(
                    "unexpected file {} in the store",
                    path.display()
                )));
            };
            if name.ends_with(".new") {
                fsutil::remove_if_exists(&path)?;
                continue;
            }
            let id = name
                .strip_suffix(SUFFIX)
                .and_then(|stem| stem.parse::<InstanceId>().ok())
                .ok_or_else(|| {
                    Error::invalid(format!("unexpected file {} in the store", path.display()))
                })?;
            let record: R = read_record(&path)?;
            if record.key() != &id {
                return Err(Error::invalid(format!(
                    "invalid record {}: it holds instance {}",
                    path.display(),
                    record.key()
                )));
            }
            records.insert(id, record);
        }
        Ok(records.into_values().collect())
    }
}

fn write_record<R: Keyed>(dir: &Path, record: &R) -> Result<()> {
    let path = dir.join(format!("{}{SUFFIX}", record.key()));
    let bytes = serde_json::to_vec(record)
        .map_err(|e| Error::json(format!("record {}", path.display()), e))?;
    fsutil::write_atomic(&path, &bytes, 0o600)
}

fn read_record<R: Keyed>(path: &Path) -> Result<R> {
    let bytes = fs::read(path).map_err(|e| Error::io("read record", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::json(format!("record {}", path.display()), e))
}

/// The records of a `catalog.json` of the previous version.
fn read_catalog<R: Keyed>(path: &Path) -> Result<Vec<R>> {
    #[derive(Deserialize)]
    #[serde(bound = "R: DeserializeOwned")]
    struct Catalog<R> {
        #[serde(default)]
        instances: BTreeMap<String, R>,
    }
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read catalog", path, e)),
    };
    let catalog: Catalog<R> = serde_json::from_str(&text)
        .map_err(|e| Error::json(format!("catalog {}", path.display()), e))?;
    let mut records = Vec::with_capacity(catalog.instances.len());
    for (id, record) in catalog.instances {
        if record.key().as_str() != id {
            return Err(Error::invalid(format!(
                "invalid catalog {}: instance {id:?} holds the record of {}",
                path.display(),
                record.key()
            )));
        }
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Rec {
        instance_id: InstanceId,
        n: u32,
    }

    impl Keyed for Rec {
        fn key(&self) -> &InstanceId {
            &self.instance_id
        }
    }

    fn open(data: &Path) -> Result<(Store, Vec<Rec>)> {
        Store::open(&data.join("store"), &data.join("catalog.json"))
    }

    fn rec(id: &str, n: u32) -> Rec {
        Rec {
            instance_id: id.parse().unwrap(),
            n,
        }
    }

    use crate::fsutil::Scratch;

    #[test]
    fn records_survive_a_reopen_and_removals_too() {
        let data = Scratch::new("store-reopen");
        let (store, records) = open(&data.0).unwrap();
        assert!(records.is_empty());
        store.put(&rec("b", 1)).unwrap();
        store.put(&rec("a", 2)).unwrap();
        store.put(&rec("b", 3)).unwrap();
        store.remove(&"a".parse().unwrap()).unwrap();
        store.remove(&"never".parse().unwrap()).unwrap();
        let (_, records) = open(&data.0).unwrap();
        assert_eq!(records, vec![rec("b", 3)]);
        let mode = fs::metadata(store.dir.join("b.json")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
    }

    #[test]
    fn a_torn_write_is_discarded_and_a_bad_record_is_fatal_naming_it() {
        let data = Scratch::new("store-torn");
        let (store, _) = open(&data.0).unwrap();
        store.put(&rec("a", 1)).unwrap();
        fs::write(
            store.dir.join("a.json.new"),
            "{\"instance_id\": \"a\", \"n\"",
        )
        .unwrap();
        let (_, records) = open(&data.0).unwrap();
        assert_eq!(records, vec![rec("a", 1)]);
        assert!(!store.dir.join("a.json.new").exists());

        let bad = store.dir.join("c.json");
        fs::write(&bad, "not json").unwrap();
        let err = open(&data.0).unwrap_err().to_string();
        assert!(err.contains(&bad.display().to_string()), "{err}");
        fs::write(&bad, serde_json::to_vec(&rec("d", 1)).unwrap()).unwrap();
        let err = open(&data.0).unwrap_err().to_string();
        assert!(err.contains("holds instance d"), "{err}");
    }

    #[test]
    fn a_catalog_is_migrated_once_and_set_aside() {
        let data = Scratch::new("store-migrate");
        let catalog = serde_json::json!({
            "format": 1,
            "instances": {"a": {"instance_id": "a", "n": 1}, "b": {"instance_id": "b", "n": 2}}
        });
        fs::write(data.0.join("catalog.json"), catalog.to_string()).unwrap();
        // A migration that crashed before its rename left this behind.
        fs::create_dir_all(data.0.join("store.new")).unwrap();
        fs::write(data.0.join("store.new/zzz.json"), "junk").unwrap();
        let (store, records) = open(&data.0).unwrap();
        assert_eq!(records, vec![rec("a", 1), rec("b", 2)]);
        assert!(!data.0.join("catalog.json").exists());
        assert!(data.0.join("catalog.json.migrated").exists());
        assert!(!data.0.join("store.new").exists());
        // Later changes are the store's; a catalog that reappears (a crash
        // after the rename of store.new) does not override them.
        store.put(&rec("a", 5)).unwrap();
        fs::write(data.0.join("catalog.json"), catalog.to_string()).unwrap();
        let (_, records) = open(&data.0).unwrap();
        assert_eq!(records, vec![rec("a", 5), rec("b", 2)]);
    }

    #[test]
    fn an_unreadable_catalog_stops_the_migration_naming_it() {
        let data = Scratch::new("store-badcat");
        let catalog = data.0.join("catalog.json");
        fs::write(&catalog, "{").unwrap();
        let err = open(&data.0).unwrap_err().to_string();
        assert!(err.contains(&catalog.display().to_string()), "{err}");
        assert!(catalog.exists());
        assert!(!data.0.join("store").exists());
    }
}
